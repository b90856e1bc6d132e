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
executable), as ARCHITECTURE.md requires of runs. The interface and the fingerprint are in
:mod:`qa._model_base`, the torch adapter in :mod:`qa._torch_adapter`; all are imported from
here.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from qa._model_base import ModelAdapter, ModelFingerprint
from qa._torch_adapter import TorchAdapter
from qa.errors import ProtocolError, QAInputError
from qa.hashing import sha256_path
from qa.io import read_image, write_nifti
from qa.volume import Volume, describe_grid_difference

__all__ = ["ModelFingerprint", "ModelAdapter", "PrecomputedAdapter", "TorchAdapter",
           "CommandAdapter", "load_adapter"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0
_STDERR_LINES = 20


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


