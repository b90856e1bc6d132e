"""Specification of the model adapters (qa.models).

Expected numbers are analytic (a model computing ``2x + 1`` must return exactly that), SHA-256
values come from :mod:`hashlib` on the file bytes, and the demo-model subgroup test computes
the body MAE with plain numpy.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import shlex
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qa.errors import ProtocolError, QAInputError
from qa.models import (
    CommandAdapter,
    PrecomputedAdapter,
    TorchAdapter,
    load_adapter,
)
from qa.volume import Volume, same_grid

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "mr2ct_demo.pt"


class AffineModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class DropsAxisModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=2)


def _script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


def _spec(**fields: object) -> SimpleNamespace:
    base = {"name": "test-model", "version": "1.0", "adapter": "torch", "path": None,
            "entrypoint": None, "command": None, "input": "mr", "output": "sct",
            "device": "cpu"}
    return SimpleNamespace(**{**base, **fields})


def _volume(shape: tuple[int, int, int] = (3, 5, 6)) -> Volume:
    angle = np.deg2rad(20)
    direction = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 7.0
    return Volume(array, (2.5, 1.5, 0.8), (-10.0, 4.0, 7.5), direction, {"modality": "MR"})


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- torch: TorchScript -----------------------------------------------------------------------
def test_torchscript_model_output_values_and_grid(tmp_path, torch_threads):
    _script(AffineModel(), tmp_path / "affine.pt")
    adapter = load_adapter(_spec(path="affine.pt"), tmp_path, num_threads=1)
    image = _volume()
    out = adapter.predict(image, case_id="C1")
    np.testing.assert_allclose(out.array, image.array * 2 + 1, rtol=1e-6)
    assert out.array.dtype == np.float32
    assert same_grid(out, image)
    assert out.metadata["model"] == "test-model" and out.metadata["role"] == "sct"
    assert "modality" not in out.metadata  # the input's MR metadata does not leak
    assert torch.get_num_threads() == 1
    assert adapter.needs_input and isinstance(adapter, TorchAdapter)


def test_acquisition_facts_of_the_input_describe_the_output(tmp_path, torch_threads):
    # a DL reconstruction of a 1.7 mGy scan is still a 1.7 mGy image
    _script(AffineModel(), tmp_path / "affine.pt")
    adapter = load_adapter(_spec(path="affine.pt"), tmp_path, num_threads=1)
    image = _volume()
    image = image.with_array(image.array, ctdivol_mgy=1.7, kvp=120.0,
                             convolution_kernel="B30f")
    out = adapter.predict(image, case_id="C1")
    assert out.metadata["ctdivol_mgy"] == 1.7 and out.metadata["kvp"] == 120.0
    assert "convolution_kernel" not in out.metadata and "modality" not in out.metadata


def test_fingerprint_sha256_is_that_of_the_weights_file(tmp_path):
    path = _script(AffineModel(), tmp_path / "affine.pt")
    fingerprint = load_adapter(_spec(path=str(path)), "/elsewhere").fingerprint()
    assert fingerprint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (fingerprint.name, fingerprint.version, fingerprint.adapter) == (
        "test-model", "1.0", "torch")
    assert fingerprint.device == "cpu"
    assert json.loads(json.dumps(fingerprint.to_dict()))["sha256"] == fingerprint.sha256


def test_auto_device_is_chosen_at_run_time(tmp_path):
    _script(AffineModel(), tmp_path / "affine.pt")
    adapter = load_adapter(_spec(path="affine.pt", device="auto"), tmp_path)
    assert adapter.fingerprint().device == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_a_gpu_is_a_clear_error(tmp_path):
    _script(AffineModel(), tmp_path / "affine.pt")
    with pytest.raises(ProtocolError, match="model.device is 'cuda' but torch .* sees no CUDA"):
        load_adapter(_spec(path="affine.pt", device="cuda"), tmp_path)


def test_adapter_survives_pickling_for_worker_processes(tmp_path):
    _script(AffineModel(), tmp_path / "affine.pt")
    adapter = pickle.loads(pickle.dumps(load_adapter(_spec(path="affine.pt"), tmp_path)))
    np.testing.assert_allclose(adapter.predict(_volume(), case_id="C1").array,
                               _volume().array * 2 + 1, rtol=1e-6)


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(QAInputError, match="model weights .*missing.pt not found") as info:
        load_adapter(_spec(path="missing.pt"), tmp_path)
    assert info.value.path == str(tmp_path / "missing.pt")
    assert info.value.field == "model.path"


def test_a_file_that_is_not_torchscript_is_rejected_with_advice(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ProtocolError, match="not a TorchScript archive.*entrypoint"):
        load_adapter(_spec(path="junk.pt"), tmp_path)


def test_wrong_output_shape_names_model_and_shapes(tmp_path):
    _script(DropsAxisModel(), tmp_path / "drops.pt")
    adapter = load_adapter(_spec(path="drops.pt"), tmp_path)
    with pytest.raises(QAInputError, match=r"model 'test-model': returned shape \(1, 1, 5, 6\) "
                                           r"for input shape \(1, 1, 3, 5, 6\)") as info:
        adapter.predict(_volume(), case_id="C7")
    assert info.value.case_id == "C7"


def test_nan_input_is_refused(tmp_path):
    _script(AffineModel(), tmp_path / "affine.pt")
    adapter = load_adapter(_spec(path="affine.pt"), tmp_path)
    image = _volume()
    array = image.array.copy()
    array[1, 2, 3] = np.nan
    with pytest.raises(QAInputError, match="1 NaN or infinite voxels") as info:
        adapter.predict(image.with_array(array), case_id="C2")
    assert "case 'C2'" in str(info.value) and info.value.role == "mr"


# -- torch: entrypoint + state_dict ------------------------------------------------------------
_VENDOR_MODULE = """
import torch

class Scale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.offset = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x * self.gain + self.offset

def build():
    return Scale()
"""


def test_entrypoint_builds_the_module_and_loads_a_state_dict(tmp_path, monkeypatch):
    (tmp_path / "vendor_scale_a.py").write_text(_VENDOR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({"gain": torch.tensor([3.0]), "offset": torch.tensor([-5.0])},
               tmp_path / "weights.pt")
    adapter = load_adapter(_spec(path="weights.pt", entrypoint="vendor_scale_a:build"),
                           tmp_path)
    image = _volume()
    np.testing.assert_allclose(adapter.predict(image, case_id="C1").array,
                               image.array * 3 - 5, rtol=1e-6)
    fingerprint = adapter.fingerprint()
    assert fingerprint.sha256 == hashlib.sha256((tmp_path / "weights.pt").read_bytes()).hexdigest()
    assert fingerprint.details["entrypoint"] == "vendor_scale_a:build"


def test_state_dict_of_another_architecture_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "vendor_scale_b.py").write_text(_VENDOR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({"gain": torch.tensor([3.0]), "bias": torch.tensor([1.0])}, tmp_path / "w.pt")
    with pytest.raises(ProtocolError, match="cannot load weights into vendor_scale_b:build"):
        load_adapter(_spec(path="w.pt", entrypoint="vendor_scale_b:build"), tmp_path)


def test_unimportable_entrypoint_says_what_to_do(tmp_path):
    torch.save({}, tmp_path / "w.pt")
    with pytest.raises(ProtocolError, match="cannot import model.entrypoint "
                                            "'no_such_vendor_pkg:build'.*PYTHONPATH"):
        load_adapter(_spec(path="w.pt", entrypoint="no_such_vendor_pkg:build"), tmp_path)


# -- command ----------------------------------------------------------------------------------
_VENDOR_TOOL = """
import sys
import SimpleITK as sitk
image = sitk.ReadImage(sys.argv[1])
out = sitk.Cast(image, sitk.sitkFloat32) * 2.0 + 1.0
if len(sys.argv) > 3:
    out.SetSpacing([s * 2 for s in out.GetSpacing()])
sitk.WriteImage(out, sys.argv[2])
"""


def _command(script: str, *extra: str) -> str:
    return " ".join([shlex.quote(sys.executable), script, "{input}", "{output}", *extra])


def test_command_adapter_runs_the_tool_and_keeps_the_grid(tmp_path):
    (tmp_path / "vendor.py").write_text(_VENDOR_TOOL)
    adapter = load_adapter(_spec(adapter="command", command=_command("vendor.py")), tmp_path)
    assert isinstance(adapter, CommandAdapter)
    image = _volume()
    out = adapter.predict(image, case_id="C1")
    np.testing.assert_allclose(out.array, image.array * 2 + 1, rtol=1e-6)
    assert same_grid(out, image)
    fingerprint = adapter.fingerprint()
    assert fingerprint.sha256 == hashlib.sha256(Path(sys.executable).read_bytes()).hexdigest()
    assert fingerprint.details["argument_sha256"]["vendor.py"] == hashlib.sha256(
        (tmp_path / "vendor.py").read_bytes()).hexdigest()


def test_failing_tool_reports_exit_code_and_stderr(tmp_path):
    (tmp_path / "fail.py").write_text(
        "import sys\nprint('loading weights', file=sys.stderr)\n"
        "print('licence expired for site 42', file=sys.stderr)\nsys.exit(3)\n")
    adapter = load_adapter(_spec(adapter="command", command=_command("fail.py")), tmp_path)
    with pytest.raises(QAInputError, match="exited with code 3") as info:
        adapter.predict(_volume(), case_id="C9")
    assert "licence expired for site 42" in str(info.value)
    assert info.value.case_id == "C9"


def test_tool_that_writes_nothing_or_changes_the_grid_is_an_error(tmp_path):
    (tmp_path / "quiet.py").write_text("pass\n")
    (tmp_path / "vendor.py").write_text(_VENDOR_TOOL)
    quiet = load_adapter(_spec(adapter="command", command=_command("quiet.py")), tmp_path)
    with pytest.raises(QAInputError, match="wrote no output file"):
        quiet.predict(_volume(), case_id="C1")
    (tmp_path / "junk.py").write_text(
        "import sys\nopen(sys.argv[2], 'wb').write(b'not an image')\n")
    junk = load_adapter(_spec(adapter="command", command=_command("junk.py")), tmp_path)
    with pytest.raises(QAInputError, match="cannot read the output file it wrote"):
        junk.predict(_volume(), case_id="C1")
    regrid = load_adapter(_spec(adapter="command", command=_command("vendor.py", "regrid")),
                          tmp_path)
    with pytest.raises(QAInputError, match=r"output grid differs .*spacing \(2.5, 1.5, 0.8\) "
                                           r"vs \(5.0, 3.0, 1.6"):
        regrid.predict(_volume(), case_id="C1")


def test_tool_over_its_time_limit_is_stopped(tmp_path):
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(30)\n")
    adapter = load_adapter(_spec(adapter="command", command=_command("slow.py")), tmp_path,
                           timeout_s=0.5)
    with pytest.raises(QAInputError, match="did not finish within 0.5 s"):
        adapter.predict(_volume(), case_id="C1")


def test_command_without_placeholders_or_executable_is_a_protocol_error(tmp_path):
    with pytest.raises(ProtocolError, match=r"lacks the placeholder \{output\}"):
        load_adapter(_spec(adapter="command", command="tool {input}"), tmp_path)
    with pytest.raises(ProtocolError, match="executable 'no-such-vendor-tool' .*not found"):
        load_adapter(_spec(adapter="command", command="no-such-vendor-tool {input} {output}"),
                     tmp_path)


# -- precomputed and dispatch -----------------------------------------------------------------
def test_precomputed_runs_nothing_and_fingerprints_the_given_path(tmp_path):
    adapter = load_adapter(SimpleNamespace(name="vendor", version="3", adapter="precomputed",
                                           output="sct"), tmp_path)
    assert isinstance(adapter, PrecomputedAdapter) and not adapter.needs_input
    assert adapter.fingerprint().sha256 is None
    with pytest.raises(RuntimeError, match="read role 'sct' from the case table"):
        adapter.predict(_volume(), case_id="C1")
    (tmp_path / "release.bin").write_bytes(b"vendor release 3")
    with_path = load_adapter(_spec(adapter="precomputed", path="release.bin"), tmp_path)
    assert with_path.fingerprint().sha256 == hashlib.sha256(b"vendor release 3").hexdigest()


def test_unknown_adapter_is_refused():
    with pytest.raises(ProtocolError, match="unknown model adapter 'onnx'"):
        load_adapter(_spec(adapter="onnx"), ".")


# -- the shipped demo model -------------------------------------------------------------------
def test_demo_model_runs_on_any_grid_size():
    from fixtures.cohort import CaseAttributes, synthesize_case

    case = synthesize_case(CaseAttributes("S", "M", 60, 23.0, "SiteA-Siemens"),
                           np.random.default_rng(0), shape=(6, 50, 66),
                           spacing_mm=(20.0, 7.7, 7.7))
    adapter = load_adapter(_spec(path=str(DEMO_WEIGHTS), name="mr2ct-demo"), ".")
    sct = adapter.predict(case.mr, case_id="S")
    assert same_grid(sct, case.mr) and np.isfinite(sct.array).all()


@pytest.mark.slow
def test_demo_model_is_worse_on_obese_patients_of_the_demo_cohort():
    """First 12 patients of the demo cohort (5 with BMI >= 30): body MAE with plain numpy."""
    from fixtures.cohort import iter_cases

    adapter = load_adapter(_spec(path=str(DEMO_WEIGHTS), name="mr2ct-demo"), ".")
    mae_hu: dict[str, list[float]] = {"normal": [], "obese": []}
    for case in itertools.islice(iter_cases(seed=20261127), 12):
        sct = adapter.predict(case.mr, case_id=case.attributes.case_id).array
        body = case.masks["body"].array > 0
        error = np.abs(sct[body] - case.ct.array[body].astype(np.float64))
        group = "obese" if case.attributes.bmi_kg_m2 >= 30 else "normal"
        mae_hu[group].append(float(error.mean()))
    assert len(mae_hu["obese"]) >= 3 and len(mae_hu["normal"]) >= 3
    normal, obese = np.mean(mae_hu["normal"]), np.mean(mae_hu["obese"])
    assert 20.0 < normal < 60.0
    assert obese > normal + 15.0
    assert min(mae_hu["obese"]) > max(mae_hu["normal"])
