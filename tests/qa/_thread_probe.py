"""A task the executor tests run in a pool worker (a module, so that spawned workers can
import it): which thread counts numba and torch use there."""

from __future__ import annotations

import os


def threads_seen(_: object = None) -> dict[str, object]:
    """numba's and torch's thread counts in this worker, both imported only now (after the
    pool's initialiser ran), torch's before and after the per-case cap of ``qa.executors``."""
    import numba
    import torch

    import qa.executors

    torch_on_import = torch.get_num_threads()
    qa.executors.cap_threads(qa.executors._POOL_THREADS)  # what _work does before each case
    return {"pid": os.getpid(), "numba": numba.get_num_threads(),
            "numba_pool": numba.config.NUMBA_NUM_THREADS,
            "torch_on_import": torch_on_import, "torch": torch.get_num_threads(),
            "pool_threads": qa.executors._POOL_THREADS}
