"""Parameterised SQL only: no SQL text in the engine or the report is built from values.

Scans the source (not the frozen migrations, whose DDL names only constant tables and
triggers) for ``execute`` / ``exec_driver_sql`` / ``text`` calls whose SQL is an f-string, a
``%`` or ``+`` expression or a ``.format`` call. The one exception, the SQLite busy timeout
PRAGMA (PRAGMAs take no parameters), formats an ``int`` of a module constant.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {("qa/store/_engine.py", "PRAGMA busy_timeout")}


def _built_sql(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def _string_built_sql_calls() -> set[tuple[str, str]]:
    found = set()
    for folder in ("qa", "reports", "checks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("qa/migrations/versions/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and node.args
                        and isinstance(node.func, (ast.Attribute, ast.Name))
                        and getattr(node.func, "attr", getattr(node.func, "id", None))
                        in ("execute", "exec_driver_sql", "text")
                        and _built_sql(node.args[0])):
                    found.add((relative, ast.unparse(node.args[0])))
    return found


def test_sql_is_never_built_from_values():
    found = _string_built_sql_calls()
    unexpected = {(file, sql) for file, sql in found
                  if not any(file == f and marker in sql for f, marker in ALLOWED)}
    assert unexpected == set()
    assert len(found) == len(ALLOWED)  # the scan does see the one allowed PRAGMA
