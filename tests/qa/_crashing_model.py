"""Test double of a model that kills its process on one input (a segfault or the OOM killer).

``build()`` returns a torch module that copies its input, except that it ends the process at
once (``os._exit``, no cleanup, as a crash would) for an image whose maximum exceeds
:data:`CRASH_ABOVE`: in ``tests/cohort_builders`` that is only the case with the largest
offset (bone block at 700 HU + offset).
"""

from __future__ import annotations

import os

import torch

#: Inputs whose maximum is above this value (HU) end the process.
CRASH_ABOVE = 790.0


class CopyOrCrash(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.max()) > CRASH_ABOVE:
            os._exit(70)
        return x * self.scale


def build() -> CopyOrCrash:
    return CopyOrCrash()
