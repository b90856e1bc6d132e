"""The model adapter interface and the model fingerprint (see :mod:`qa.models`).

:class:`ModelAdapter` is what the engine calls to run the model under QA on one case;
:class:`ModelFingerprint` is what a run records of it (name, version, SHA-256, device). The
adapters themselves are in :mod:`qa.models` (precomputed, command) and
:mod:`qa._torch_adapter` (torch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qa.errors import QAInputError
from qa.volume import Volume

__all__ = ["ModelFingerprint", "ModelAdapter"]

#: Input metadata copied onto a model's output: acquisition facts, not provenance.
#: Not the modality (an sCT made from an MR is not an MR) nor the kernel (a DL
#: reconstruction replaces it).
_CARRIED_METADATA = ("ctdivol_mgy", "kvp", "exposure_mas", "slice_thickness_mm",
                     "pixel_spacing_mm", "frame_of_reference_uid")


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies the model of a run.

    ``sha256`` is the hex SHA-256 of the weights file (torch), of the executable (command) or of
    ``path`` when given (precomputed; a folder is hashed by names and contents), else None.
    ``device`` is where it ran (``"cpu"``, ``"cuda"``; ``"external"`` for a command,
    ``"none"`` for precomputed outputs). ``details`` holds JSON-serialisable extras.
    """

    name: str
    version: str
    adapter: str
    sha256: str | None
    device: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) for the store and the report."""
        return {"name": self.name, "version": self.version, "adapter": self.adapter,
                "sha256": self.sha256, "device": self.device, "details": dict(self.details)}


class ModelAdapter(ABC):
    """Runs one model on one case. ``needs_input`` is False when nothing runs (precomputed)."""

    needs_input: bool = True
    adapter: str = ""

    def __init__(self, *, name: str, version: str, input_role: str | None,
                 output_role: str) -> None:
        self.name = name
        self.version = version
        self.input_role = input_role
        self.output_role = output_role

    @abstractmethod
    def fingerprint(self) -> ModelFingerprint:
        """Name, version, SHA-256 and device of the model."""

    @abstractmethod
    def predict(self, image: Volume, *, case_id: str) -> Volume:
        """The model output for ``image`` (one case), on ``image``'s grid."""

    def predict_labels(self, image: Volume, *, case_id: str) -> Volume:
        """The model output as a label map (whole-number labels on ``image``'s grid), for an
        output role of kind ``structures`` split by ``roles.<output>.labels``."""
        return self.predict(image, case_id=case_id)

    def _output(self, image: Volume, array: np.ndarray) -> Volume:
        # The acquisition facts of the input still describe the output (a DL reconstruction
        # of a 1.7 mGy scan is a 1.7 mGy image); identifying data never was in metadata.
        meta = {key: image.metadata[key] for key in _CARRIED_METADATA if key in image.metadata}
        meta.update({"role": self.output_role, "model": self.name,
                     "model_version": self.version, "model_adapter": self.adapter,
                     "model_sha256": self.fingerprint().sha256})
        return Volume(array, image.spacing, image.origin, image.direction, meta)

    def _error(self, message: str, case_id: str) -> QAInputError:
        return QAInputError(f"model {self.name!r}: {message}", case_id=case_id,
                            role=self.input_role)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
