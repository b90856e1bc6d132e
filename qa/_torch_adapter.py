"""The ``torch`` model adapter (see :mod:`qa.models` for the adapters and the I/O convention).

A TorchScript archive, or an importable ``entrypoint`` building an ``nn.Module`` whose
``state_dict`` is read with ``torch.load(..., weights_only=True)``. A full Python pickle is
refused unless the person running QA trusts it (``qa run --trust-model``), and the fingerprint
records that it was trusted. The device is chosen at run time (``auto``: CUDA when present).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qa._model_base import ModelAdapter, ModelFingerprint, _first_line
from qa.errors import ProtocolError
from qa.hashing import sha256_path
from qa.volume import Volume

__all__ = ["TorchAdapter"]

logger = logging.getLogger(__name__)


class TorchAdapter(ModelAdapter):
    """A torch model: TorchScript archive, or ``entrypoint`` + ``state_dict`` weights.

    The model is loaded at construction (errors show before any case runs), evaluated in
    ``eval()`` mode under ``torch.inference_mode()``. ``device="auto"`` picks ``"cuda"`` when
    ``torch.cuda.is_available()`` in the running process, else ``"cpu"``. The adapter pickles
    without the loaded module (for worker processes) and reloads it on first use.
    """

    adapter = "torch"

    def __init__(self, path: str | Path, *, entrypoint: str | None = None, device: str = "auto",
                 num_threads: int | None = None, trust_model: bool = False,
                 **common: Any) -> None:
        super().__init__(**common)
        self.path = Path(path)
        self.entrypoint = entrypoint
        self.num_threads = num_threads
        self.trust_model = trust_model
        self._unpickled = False
        self.device = _torch_device(device)
        if not self.path.is_file():
            raise ProtocolError(
                f"model weights {self.path} not found; check model.path (relative paths start "
                "from the protocol's folder) or copy the weights there.",
                path=str(self.path), field="model.path")
        self._sha256 = sha256_path(self.path)
        self._module: Any = self._load()

    def fingerprint(self) -> ModelFingerprint:
        import torch

        details = {"path": str(self.path), "format": "state_dict" if self.entrypoint
                   else "torchscript", "torch_version": torch.__version__}
        if self.entrypoint:
            details["entrypoint"] = self.entrypoint
        if self._unpickled:  # audit trail: arbitrary code was allowed to run
            details["format"] = "pickle (loaded with --trust-model)"
        return ModelFingerprint(self.name, self.version, self.adapter, self._sha256,
                                self.device, details)

    def predict_labels(self, image: Volume, *, case_id: str) -> Volume:
        """Label map: a (1, 1, Z, Y, X) output of labels, or (1, C, Z, Y, X) per-label scores
        (logits or probabilities of labels 0 .. C-1) whose argmax over C is the label."""
        return self.predict(image, case_id=case_id, label_map=True)

    def predict(self, image: Volume, *, case_id: str, label_map: bool = False) -> Volume:
        import torch

        array = np.asarray(image.array, dtype=np.float32)
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise self._error(f"the input image has {bad} NaN or infinite voxels; the model "
                              "needs finite values: repair or re-export the input image.",
                              case_id)
        if self._module is None:
            self._module = self._load()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        expected = (1, 1, *array.shape)
        try:
            with torch.inference_mode():
                out = self._module(torch.from_numpy(array).reshape(expected).to(self.device))
        except RuntimeError as exc:
            raise self._error(f"failed on an input of shape {expected}: {exc}", case_id) from exc
        if not isinstance(out, torch.Tensor):
            raise self._error(f"returned {type(out).__name__}, expected a tensor of shape "
                              f"{expected} (see the I/O convention in qa.models).", case_id)
        shape = tuple(out.shape)
        scores = (label_map and len(shape) == 5 and shape[0] == 1 and shape[1] > 1
                  and shape[2:] == expected[2:])
        if shape != expected and not scores:
            raise self._error(f"returned shape {shape} for input shape {expected}; the output "
                              "must be (1, 1, Z, Y, X) on the input grid"
                              + (" (or (1, C, Z, Y, X) label scores for a label map)."
                                 if label_map else "."), case_id)
        result = out.detach().to("cpu", torch.float32).numpy()[0]
        bad = int(result.size - np.count_nonzero(np.isfinite(result)))
        if bad:
            raise self._error(f"produced {bad} NaN or infinite voxels on this input.", case_id)
        # scores: the label of a voxel is its highest-scoring channel
        result = result.argmax(axis=0).astype(np.int16) if scores else result[0].copy()
        return self._output(image, result)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_module"] = None
        return state

    def _load(self) -> Any:
        import torch

        if self.entrypoint:
            module = _build_from_entrypoint(self.entrypoint)
            try:
                state = self._load_weights()
                module.load_state_dict(state)
            except ProtocolError:
                raise
            except Exception as exc:  # unpickling, key or shape mismatch: all name the file
                raise ProtocolError(
                    f"cannot load weights into {self.entrypoint}: {_first_line(exc)}; save them "
                    "with torch.save(model.state_dict(), path) from the same architecture.",
                    path=str(self.path), field="model.path") from exc
            module = module.to(self.device)
        else:
            try:
                with warnings.catch_warnings():  # deprecated in torch >= 2.10, still supported
                    warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*",
                                            category=DeprecationWarning)
                    module = torch.jit.load(str(self.path), map_location=self.device)
            except Exception as exc:
                if _is_pickle(self.path):
                    module = self._load_trusted_module()
                    module.eval()
                    return module
                raise ProtocolError(
                    f"not a TorchScript archive ({_first_line(exc)}); save the model with "
                    "torch.jit.script(model).save(path), or give model.entrypoint "
                    "('module:callable') to load a state_dict.",
                    path=str(self.path), field="model.path") from exc
        module.eval()
        logger.info("loaded model %s %s from %s on %s", self.name, self.version, self.path,
                    self.device)
        return module

    def _load_weights(self) -> Any:
        """The state_dict, with ``weights_only=True`` unless the user trusts the file."""
        import pickle

        import torch

        try:
            return torch.load(self.path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only load failed" not in str(exc).lower():
                raise
        loaded = self._unpickle()
        return loaded.state_dict() if isinstance(loaded, torch.nn.Module) else loaded

    def _load_trusted_module(self) -> Any:
        """A whole ``nn.Module`` saved with ``torch.save(model)`` (only with trust)."""
        import torch

        loaded = self._unpickle()
        if not isinstance(loaded, torch.nn.Module):
            raise ProtocolError(f"the pickle holds a {type(loaded).__name__}, not a "
                                "torch.nn.Module; save the model with torch.jit.script(model)"
                                ".save(path)", path=str(self.path), field="model.path")
        return loaded.to(self.device)

    def _unpickle(self) -> Any:
        """Full unpickling: refused unless ``trust_model`` (it can run arbitrary code)."""
        import torch

        if not self.trust_model:
            raise ProtocolError(
                "this model file is a full Python pickle (torch.save of a whole model or of "
                "arbitrary objects), and loading it can run arbitrary code on this machine, so "
                "it is refused: convert it to TorchScript (torch.jit.script(model).save(path)) "
                "or to a state_dict with model.entrypoint, or, if you trust its source, run "
                "again with `qa run --trust-model`", path=str(self.path), field="model.path")
        logger.warning("loading %s with full unpickling (--trust-model): it may run arbitrary "
                       "code", self.path)
        try:
            loaded = torch.load(self.path, map_location=self.device, weights_only=False)
        except Exception as exc:
            raise ProtocolError(f"cannot unpickle the model file ({_first_line(exc)}); save "
                                "it again with torch.save or as TorchScript",
                                path=str(self.path), field="model.path") from exc
        self._unpickled = True
        return loaded


def _torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ProtocolError(
            f"model.device is 'cuda' but torch {torch.__version__} sees no CUDA device; set "
            "model.device to 'auto' or 'cpu', or run on a machine with a GPU.",
            field="model.device")
    if device not in ("cpu", "cuda"):
        raise ProtocolError(f"model.device must be 'auto', 'cpu' or 'cuda', got {device!r}.",
                            field="model.device")
    return device


def _build_from_entrypoint(entrypoint: str) -> Any:
    import torch

    module_name, _, attr_path = entrypoint.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            target = getattr(target, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProtocolError(
            f"cannot import model.entrypoint {entrypoint!r} ({_first_line(exc)}); install the "
            "package that provides it or add its folder to PYTHONPATH.",
            field="model.entrypoint") from exc
    try:
        module = target()
    except Exception as exc:
        raise ProtocolError(f"calling model.entrypoint {entrypoint!r} failed: "
                            f"{_first_line(exc)}.", field="model.entrypoint") from exc
    if not isinstance(module, torch.nn.Module):
        raise ProtocolError(f"model.entrypoint {entrypoint!r} returned "
                            f"{type(module).__name__}, expected a torch.nn.Module.",
                            field="model.entrypoint")
    return module


def _is_pickle(path: Path) -> bool:
    """True for a ``torch.save`` file (zip archive holding ``data.pkl``, or a bare pickle)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("/data.pkl") or name == "data.pkl"
                           for name in archive.namelist())
        with path.open("rb") as handle:
            return handle.read(1) == b"\x80"  # pickle protocol >= 2 opcode PROTO
    except (OSError, zipfile.BadZipFile):
        return False
