"""The report's line on the store's integrity: the SHA-256 chain re-checked at rendering.

Reads :meth:`qa.store.Store.verify` (``qa verify``): intact or broken, and the first problems;
and :meth:`qa.store.Store.run_anchor`: the hash of the ledger entry that chained this run's
finish. The report prints that *run anchor*, not the store's head hash: the head moves with
every later write, the anchor never does, so the same run renders the same report however many
runs follow (issue 8: deterministic output) and ``qa verify --anchor HASH`` later proves the
store still holds this run's history. The status changes only if the store was tampered with.
Texts come from the ``chain.*`` catalog keys; problem lines (which may quote case ids) are
escaped by the template.
"""

from __future__ import annotations

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
    problems = [str(problem) for problem in result.problems]
    if not result.ok:
        status = fmt.t("chain.broken", problems=len(problems))
    elif anchor is None:
        status = fmt.t("chain.intact_unanchored") if result.n_entries else fmt.t("chain.empty")
    else:
        status = fmt.t("chain.intact", seq=anchor["seq"])
    hidden = len(problems) - MAX_PROBLEMS_SHOWN
    return {
        "ok": result.ok,
        "css": "level-ok" if result.ok else "level-action",
        "status": status,
        "head_label": fmt.t("chain.head"),
        "head_hash": anchor["hash"] if anchor else "",
        "problems": problems[:MAX_PROBLEMS_SHOWN],
        "more": fmt.t("chain.more", count=hidden) if hidden > 0 else "",
        "notes": list(result.notes),
    }
