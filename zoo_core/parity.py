"""Inference parity: PyTorch eager against ONNX Runtime on the same inputs, in eval mode.

On the CPU provider, against PyTorch on the CPU. On the CUDA provider, against PyTorch on CUDA with TF32 off on both
sides, and with ONNX Runtime's CPU fallback disabled, so the session fails rather than quietly running nodes on the
CPU; the session's providers are checked as well.

Errors: ``max_abs_err`` is max |ort - torch|; ``max_rel_err`` is max |ort - torch| / |torch| over the elements whose
magnitude exceeds ``atol`` (elsewhere a relative error means nothing). ``passed`` is numpy's ``allclose`` rule,
|ort - torch| <= atol + rtol * |torch| everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from zoo_core.devices import tf32
from zoo_core.errors import ZooError
from zoo_core.model import Model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class ParityResult:
    """The outcome of one parity check."""

    provider: str
    batch_size: int
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    top1_agreement: float | None = None
    dims: dict[str, int] | None = None  # the size of each symbolic dimension the check ran at


    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        top1 = f", top-1 agreement {self.top1_agreement:.4f}" if self.top1_agreement is not None else ""
        at = ", ".join(f"{k} {v}" for k, v in self.dims.items()) if self.dims else f"batch {self.batch_size}"
        return (f"{self.provider}: max abs err {self.max_abs_err:.3g}, max rel err {self.max_rel_err:.3g} "
                f"(passes if |ort - torch| <= atol + rtol * |torch| everywhere, atol {self.atol:g}, rtol {self.rtol:g}) "
                f"at {at}{top1}: "
                f"{'passed' if self.passed else 'FAILED'}")


def cuda_unavailable_reason() -> str | None:
    """Why a CUDA parity check cannot run here, or None if it can."""
    import onnxruntime

    if not torch.cuda.is_available():
        return "CUDA is not available to PyTorch"
    if CUDA not in onnxruntime.get_available_providers():
        return (f"ONNX Runtime {onnxruntime.__version__} has no {CUDA} (install onnxruntime-gpu instead of "
                f"onnxruntime: pip install 'zoo-core[gpu]')")
    return None


def _session(onnx_path: str | os.PathLike, provider: str):  # -> onnxruntime.InferenceSession
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if provider == CUDA:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers = [(CUDA, {"device_id": torch.cuda.current_device(), "use_tf32": 0})]
    else:
        providers = [provider]
    session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    if session.get_providers()[0] != provider:
        raise ZooError(f"ONNX Runtime did not run on {provider} (it chose {session.get_providers()})")
    return session


def check_parity(model: torch.nn.Module, onnx_path: str | os.PathLike, inputs: Sequence[Tensor], *,
                 atol: float = 1e-4, rtol: float = 1e-3, provider: str = CPU,
                 dims: dict[str, int] | None = None, input_names: Sequence[str] | None = None) -> ParityResult:
    """Run `model` (a model, or one of its graph modules) and the ONNX file on `inputs`, and compare every output.
    `dims` (the symbolic dimensions' sizes in `inputs`) is recorded in the result. With `input_names` (the graph's
    declared inputs, in order), inputs are fed by name, and one the exporter dropped as unused is left out."""
    device = torch.device("cuda") if provider == CUDA else torch.device("cpu")
    model = model.to(device).eval()
    with torch.no_grad(), tf32(False):
        expected = model(*(t.to(device) for t in inputs))
    expected = [expected] if isinstance(expected, Tensor) else list(expected)
    session = _session(onnx_path, provider)
    if input_names is None:
        feed = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    else:
        taken = {i.name for i in session.get_inputs()}
        feed = {n: t.detach().cpu().numpy() for n, t in zip(input_names, inputs) if n in taken}
    actual = session.run(None, feed)
    if len(actual) != len(expected):
        raise ZooError(f"the ONNX model has {len(actual)} outputs, PyTorch gives {len(expected)}")
    max_abs = max_rel = 0.0
    passed = True
    top1 = None
    for ort_out, torch_out in zip(actual, expected):
        ref = torch_out.detach().float().cpu().numpy()
        got = np.asarray(ort_out, dtype=np.float32)
        if got.shape != ref.shape:
            raise ZooError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
        err = np.abs(got - ref)
        max_abs = max(max_abs, float(err.max(initial=0.0)))
        big = np.abs(ref) > atol
        if big.any():
            max_rel = max(max_rel, float((err[big] / np.abs(ref[big])).max()))
        passed &= bool(np.all(err <= atol + rtol * np.abs(ref)))
        if top1 is None and ref.ndim >= 2 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating):
            top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
    return ParityResult(provider, len(inputs[0]), max_abs, max_rel, atol, rtol, passed, top1, dims)
