"""ONNX export and ONNX Runtime parity: dynamic batch, shared dynamic dims, detection of a mismatch, CUDA parity."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from zoo_core import Model, TensorSpec, ZooError, check_parity, export_onnx, get_model, get_spec
from zoo_core.onnx_export import dynamic_shapes
from zoo_core.parity import CUDA, cuda_unavailable_reason


@pytest.fixture(scope="module")
def softmax_onnx(tmp_path_factory):
    spec = get_spec("softmax")
    model = get_model("softmax", preset="tiny").eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    info = export_onnx(model, path, *spec.io("tiny"))
    return model, path, info


def test_the_graph_takes_any_batch_size(softmax_onnx):
    model, path, info = softmax_onnx
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch_size in (1, 5, 17):
        X = torch.rand(batch_size, 1, 28, 28)
        (logits,) = session.run(None, {"X": X.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(X).numpy(), atol=1e-5, rtol=1e-4)
    assert info["inputs"][0]["shape"] == ["batch", 1, 28, 28]


def test_parity_detects_a_model_that_drifted(softmax_onnx):
    model, path, _ = softmax_onnx
    X = (torch.rand(4, 1, 28, 28),)
    assert check_parity(model, path, X).passed
    drifted = get_model("softmax", preset="tiny").eval()
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.net[1].bias.add_(1e-2)
    result = check_parity(drifted, path, X)
    assert not result.passed and result.max_abs_err == pytest.approx(1e-2, rel=1e-3)
    assert "FAILED" in str(result) and result.batch_size == 4


def test_named_dimensions_are_shared_across_inputs():
    specs = [TensorSpec.parse("src: int64[batch, seq]"), TensorSpec.parse("tgt: int64[batch, 7]")]
    first, second = dynamic_shapes(specs)
    assert first[0] is second[0] and set(first) == {0, 1} and set(second) == {0}
    assert str(first[1]) != str(first[0])


class DataDependent(Model):
    """Control flow on tensor values: torch.export cannot trace it; the error must say so in one line."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(3, 2)

    def forward(self, X):
        if X.sum() > 0:
            return self.linear(X)
        return -self.linear(X)

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 3),)


def test_an_export_failure_is_one_clear_error(tmp_path):
    with pytest.raises(ZooError, match="ONNX export of DataDependent failed") as info:
        export_onnx(DataDependent(), tmp_path / "m.onnx", [TensorSpec.parse("X: float32[batch, 3]")],
                    [TensorSpec.parse("y: float32[batch, 2]")])
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())  # no partial file


@pytest.mark.gpu
def test_cuda_parity(softmax_onnx):
    """PyTorch on CUDA vs ONNX Runtime's CUDA provider, TF32 off, CPU fallback disabled."""
    reason = cuda_unavailable_reason()
    if reason:
        pytest.skip(reason)
    model, path, _ = softmax_onnx
    torch.manual_seed(0)
    result = check_parity(model, path, model.example_inputs(5), provider=CUDA)
    assert result.provider == CUDA and result.passed, str(result)
    model.cpu()


def test_the_torchscript_fallback_exports_with_the_same_names_and_dynamic_dims(tmp_path):
    """The legacy exporter, for a spec that says why it needs it (onnx_exporter="torchscript", onnx_reason=...)."""
    spec = get_spec("softmax")
    model = get_model("softmax", preset="tiny").eval()
    info = export_onnx(model, tmp_path / "model.onnx", *spec.io("tiny"), exporter="torchscript")
    assert info["exporter"] == "torchscript"
    assert info["inputs"] == [{"name": "X", "dtype": "float32", "shape": ["batch", 1, 28, 28]}]
    assert info["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]
    assert check_parity(model, tmp_path / "model.onnx", (torch.rand(5, 1, 28, 28),)).passed


def test_the_python_api_exports_once_the_exporter_is_loaded(tmp_path):
    """The README's "From Python": ``zoo_core.train`` then ``zoo_core.export`` in one process. `zoo_core.export` is
    the workflow (`zoo_core.workflows.export`) even once the exporter's module has been imported, as training and
    `export_onnx` import it: when that module was ``zoo_core/export.py``, its import rebound the package's
    ``export`` to the module, and the README's last line raised "'module' object is not callable"."""
    import zoo_core
    import zoo_core.onnx_export  # noqa: F401

    run = zoo_core.train("softmax", preset="tiny", epochs=1, out=tmp_path, log=lambda line: None)
    files = zoo_core.export("softmax", run=str(run), out=tmp_path, log=lambda line: None)
    assert (run / "model.onnx") in files
