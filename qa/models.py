"""Model adapters: run the model under QA on one case's input image, and fingerprint it.

The protocol's ``model.adapter`` picks how the model runs:

``precomputed``
    The outputs already exist (a vendor exported them); the runner reads the output role from
    the case table and nothing runs here.
``torch``
    A TorchScript archive (``path``), or an importable ``entrypoint`` (``"module:callable"``)
    that builds an ``nn.Module`` whose weights (``state_dict``) are loaded from ``path`` with
    ``torch.load(..., weights_only=True)`` (no arbitrary code from the weights file). A full
    Python pickle (``torch.save(model)``, or weights holding arbitrary objects) can run any
    code when it is loaded: it is refused unless the person running QA passes
    ``trust_model=True`` (``qa run --trust-model``), which the fingerprint records.
``command``
    An external program (vendor CLI, container wrapper): the input is written as NIfTI, the
    command runs without a shell with ``{input}`` and ``{output}`` replaced by file paths, and
    the output NIfTI is read back.

Model I/O convention (torch)
----------------------------
Input: a float32 tensor ``(N=1, C=1, Z, Y, X)`` holding the input image in its own units
(MR arbitrary units, CBCT HU ...), indexed like :class:`qa.Volume` arrays (``z, y, x``).
Output: a tensor ``(1, 1, Z, Y, X)`` in the output's units (HU for a synthetic CT) on the
same grid. A model whose output role is a structure set (``kind: structures`` with
``labels``, e.g. auto-contouring) returns its label map: ``(1, 1, Z, Y, X)`` whole-number
labels, or ``(1, C, Z, Y, X)`` scores of labels 0 .. C-1 (the label is the argmax).
Any normalisation belongs inside the model. The adapter returns the output as a
Volume on the input's grid (spacing, origin, direction) whose metadata names the model.

Every run records :meth:`ModelAdapter.fingerprint` (name, version, SHA-256 of the weights or
executable), as ARCHITECTURE.md requires of runs.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import shutil
import subprocess
import tempfile
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import ProtocolError, QAInputError
from qa.hashing import sha256_path
from qa.io import read_image, write_nifti
from qa.volume import Volume, describe_grid_difference

__all__ = ["ModelFingerprint", "ModelAdapter", "PrecomputedAdapter", "TorchAdapter",
           "CommandAdapter", "load_adapter"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
#: Input metadata copied onto a model's output: acquisition facts, not provenance.
#: Not the modality (an sCT made from an MR is not an MR) nor the kernel (a DL
#: reconstruction replaces it).
_CARRIED_METADATA = ("ctdivol_mgy", "kvp", "exposure_mas", "slice_thickness_mm",
                     "pixel_spacing_mm", "frame_of_reference_uid")
_STDERR_LINES = 20


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


def load_adapter(spec: Any, base_dir: str | Path, *, num_threads: int | None = None,
                 timeout_s: float | None = None, trust_model: bool = False) -> ModelAdapter:
    """Build the adapter described by a protocol's ``model`` section.

    Parameters
    ----------
    spec : object
        Any object with the attributes of ``qa.protocol.ModelSpec``: ``name``, ``version``,
        ``adapter`` (``"precomputed"``, ``"torch"``, ``"command"``), ``path``, ``entrypoint``,
        ``command``, ``input``, ``output``, ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``).
        Missing attributes take their defaults.
    base_dir : str or Path
        Folder against which relative ``path`` values resolve (the protocol's folder); also
        the working directory of a command.
    num_threads : int, optional
        Torch intra-op threads for this process (give 1-2 per worker when the runner uses
        several processes, to avoid oversubscribing the cores); None leaves torch's default.
    timeout_s : float, optional
        Command time limit per case in s (default 600; ``spec.timeout_s`` if present).
    trust_model : bool
        Allow a torch model file that needs full unpickling (arbitrary code) to load; only
        from the command line (``qa run --trust-model``), never from the protocol.

    Raises
    ------
    ProtocolError
        Unknown adapter, missing weights/executable, unloadable model, CUDA unavailable.
    """
    base_dir = Path(base_dir)
    kind = getattr(spec, "adapter", None)
    common = {"name": str(getattr(spec, "name", None) or "model"),
              "version": str(getattr(spec, "version", None) or ""),
              "input_role": getattr(spec, "input", None),
              "output_role": str(getattr(spec, "output", None) or "output")}
    raw_path = getattr(spec, "path", None)
    path = None if raw_path in (None, "") else _resolve(raw_path, base_dir)
    if kind == "precomputed":
        return PrecomputedAdapter(path=path, **common)
    if kind == "torch":
        if path is None:
            raise ProtocolError("adapter torch needs model.path: the TorchScript file, or the "
                                "state_dict weights when model.entrypoint is given.",
                                field="model.path")
        return TorchAdapter(path, entrypoint=getattr(spec, "entrypoint", None),
                            device=str(getattr(spec, "device", None) or "auto"),
                            num_threads=num_threads, trust_model=trust_model, **common)
    if kind == "command":
        if timeout_s is None:
            timeout_s = float(getattr(spec, "timeout_s", None) or DEFAULT_TIMEOUT_S)
        return CommandAdapter(str(getattr(spec, "command", None) or ""), base_dir=base_dir,
                              path=path, timeout_s=timeout_s, **common)
    raise ProtocolError(f"unknown model adapter {kind!r}; use 'precomputed', 'torch' or "
                        "'command'.", field="model.adapter")


class PrecomputedAdapter(ModelAdapter):
    """Outputs already in the case table: nothing runs; fingerprints ``path`` if given."""

    needs_input = False
    adapter = "precomputed"

    def __init__(self, *, path: Path | None = None, **common: Any) -> None:
        super().__init__(**common)
        if path is not None and not path.exists():
            raise ProtocolError(f"model.path {path} does not exist; give the model's weights "
                                "or release folder to fingerprint, or remove model.path.",
                                path=str(path), field="model.path")
        self.path = path
        self._sha256 = None if path is None else sha256_path(path)

    def fingerprint(self) -> ModelFingerprint:
        details = {} if self.path is None else {"path": str(self.path)}
        return ModelFingerprint(self.name, self.version, self.adapter, self._sha256, "none",
                                details)

    def predict(self, image: Volume, *, case_id: str) -> Volume:
        raise RuntimeError(f"the precomputed adapter runs nothing (case {case_id!r}): read "
                           f"role {self.output_role!r} from the case table instead.")


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


class CommandAdapter(ModelAdapter):
    """An external program run once per case on NIfTI files (no shell).

    ``command`` is split with :func:`shlex.split`; in each argument ``{input}`` and
    ``{output}`` become the paths of the input NIfTI (written here) and of the output NIfTI
    the program must write. It runs in ``base_dir`` with ``timeout_s``; the output must lie
    on the input's grid (no resampling is done).
    """

    adapter = "command"

    def __init__(self, command: str, *, base_dir: str | Path, path: Path | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, **common: Any) -> None:
        super().__init__(**common)
        self.command = command
        self.base_dir = Path(base_dir)
        self.timeout_s = float(timeout_s)
        try:
            self._args = shlex.split(command)
        except ValueError as exc:
            raise ProtocolError(f"cannot split model.command {command!r}: {exc}.",
                                field="model.command") from exc
        for placeholder in ("{input}", "{output}"):
            if not any(placeholder in arg for arg in self._args[1:]):
                raise ProtocolError(
                    f"model.command {command!r} lacks the placeholder {placeholder}; write "
                    "e.g. 'vendor-tool --in {input} --out {output}'.", field="model.command")
        self.executable = path if path is not None else _find_executable(self._args[0],
                                                                         self.base_dir)
        if not self.executable.exists():
            raise ProtocolError(f"model.path {self.executable} does not exist; give the "
                                "tool's executable.", path=str(self.executable),
                                field="model.path")
        self._sha256 = sha256_path(self.executable)
        self._argument_sha256 = {arg: sha256_path(self.base_dir / arg) for arg in self._args[1:]
                                 if "{" not in arg and (self.base_dir / arg).is_file()}

    def fingerprint(self) -> ModelFingerprint:
        details = {"command": self.command, "executable": str(self.executable),
                   "timeout_s": self.timeout_s, "argument_sha256": dict(self._argument_sha256)}
        return ModelFingerprint(self.name, self.version, self.adapter, self._sha256,
                                "external", details)

    def predict(self, image: Volume, *, case_id: str) -> Volume:
        with tempfile.TemporaryDirectory(prefix="qa-model-") as tmp:
            input_path, output_path = Path(tmp) / "input.nii.gz", Path(tmp) / "output.nii.gz"
            write_nifti(image, input_path)
            args = [arg.replace("{input}", str(input_path)).replace("{output}", str(output_path))
                    for arg in self._args]
            try:
                done = subprocess.run(args, cwd=self.base_dir, capture_output=True, text=True,
                                      errors="replace", timeout=self.timeout_s,
                                      stdin=subprocess.DEVNULL, check=False)
            except subprocess.TimeoutExpired as exc:
                raise self._error(f"command did not finish within {self.timeout_s:g} s; raise "
                                  "the time limit or check the tool.", case_id) from exc
            except OSError as exc:
                raise self._error(f"cannot start {args[0]!r}: {exc}; check model.command.",
                                  case_id) from exc
            logger.debug("model command for case %s: stdout %s", case_id, done.stdout[-2000:])
            if done.returncode != 0:
                lines = [line.strip() for line in done.stderr.strip().splitlines()
                         if line.strip()][-_STDERR_LINES:]
                tail = " | ".join(lines)  # one line, like every stored error
                raise self._error(f"command exited with code {done.returncode}; last lines "
                                  f"of its stderr: {tail or '(empty)'}", case_id)
            if not output_path.is_file():
                raise self._error("command exited with code 0 but wrote no output file; it "
                                  "must write its result to the path given for {output}.",
                                  case_id)
            try:
                result = read_image(output_path)
            except QAInputError as exc:
                raise self._error(f"cannot read the output file it wrote ({exc.message}); the "
                                  "tool must write NIfTI to the {output} path.", case_id) from exc
        difference = describe_grid_difference(image, result)
        if difference:
            raise self._error(f"the output grid differs from the input grid ({difference}); "
                              "the tool must write its output on the input grid.", case_id)
        return self._output(image, result.array)


# -- helpers ---------------------------------------------------------------------------------
def _resolve(path: str | Path, base_dir: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base_dir / path


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


def _find_executable(program: str, base_dir: Path) -> Path:
    local = base_dir / program
    if ("/" in program or "\\" in program) and local.is_file():
        return local
    found = shutil.which(program)
    if found is None:
        raise ProtocolError(f"executable {program!r} of model.command not found on PATH; "
                            "install it, give its full path, or set model.path.",
                            field="model.command")
    return Path(found)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
