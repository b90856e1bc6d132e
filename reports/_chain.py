"""The report's line on the store's integrity: the SHA-256 chain re-checked at rendering.

Reads :meth:`qa.store.Store.verify` (``qa verify``): intact or broken, and the first problems;
and :meth:`qa.store.Store.run_anchor`: the hash of the ledger entry that chained this run's
finish. The report prints that *run anchor*, not the store's head hash: the head moves with
every later write, the anchor never does, so the same run renders the same report however many
runs follow (issue 8: deterministic output) and ``qa verify --anchor HASH`` later proves the
store still holds this run's history. The status changes only if the store was tampered with.
Texts come from the ``chain.*`` catalog keys, the problem and note lines too: ``verify``
returns each as a code with its parameters (:class:`qa.store.ChainProblem`,
:class:`~qa.store._verify.ChainNote`), and their ``text(lookup)`` builds the line from this
language's catalog (``chain.problem.*``, ``chain.subject.*``, ``chain.part.*``,
``chain.note.*``). The parameters come from the store (table names, record ids, case ids) and
are escaped by the template (autoescape), like every other value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["chain_context", "MAX_PROBLEMS_SHOWN"]

MAX_PROBLEMS_SHOWN = 10


def chain_context(store: Any, run_id: int, fmt: Any) -> dict[str, Any] | None:
    """The chain status for the provenance table, or None for a store without a chain."""
    verify = getattr(store, "verify", None)
    if verify is None:
        return None
    result = verify()
    anchor = store.run_anchor(run_id) if hasattr(store, "run_anchor") else None

    def lookup(name: str, /, **values: Any) -> str:
        return fmt.t(f"chain.{name}", **values)

    n_problems = len(result.problems)
    problems = [_line(problem, lookup) for problem in result.problems[:MAX_PROBLEMS_SHOWN]]
    notes = [_line(note, lookup) for note in getattr(result, "note_items", None)
             or result.notes]
    if not result.ok:
        status = fmt.t("chain.broken", problems=n_problems)
    elif anchor is None:
        status = fmt.t("chain.intact_unanchored") if result.n_entries else fmt.t("chain.empty")
    else:
        status = fmt.t("chain.intact", seq=anchor["seq"])
    hidden = n_problems - MAX_PROBLEMS_SHOWN
    return {
        "ok": result.ok,
        "css": "level-ok" if result.ok else "level-action",
        "status": status,
        "head_label": fmt.t("chain.head"),
        "head_hash": anchor["hash"] if anchor else "",
        "problems": problems,
        "more": fmt.t("chain.more", count=hidden) if hidden > 0 else "",
        "notes": notes,
    }


def _line(item: Any, lookup: Callable[..., str]) -> str:
    """A problem's or a note's line in the report's language (its English text for an item
    without parameters: a plain string, or a store that does not structure them)."""
    text = getattr(item, "text", None)
    return text(lookup) if callable(text) else str(item)
