"""Custom layers (d2l §6.5): CenteredLayer, MyLinear, TensorReduction, FourierCoefficients (against torch.fft)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoo_builders import CenteredLayer, FourierCoefficients, MyLinear, TensorReduction
from zoo_core import Model, TensorSpec, export_onnx


def test_centered_layer_subtracts_the_mean():
    X = torch.tensor([[1.0, 2, 3, 4, 5]])
    assert torch.equal(CenteredLayer()(X), torch.tensor([[-2.0, -1, 0, 1, 2]]))  # the book's example
    torch.manual_seed(0)
    Y = nn.Sequential(nn.Linear(20, 128), CenteredLayer())(torch.rand(4, 20))
    assert abs(Y.mean().item()) < 1e-6
    Y = CenteredLayer(dim=-1)(torch.rand(4, 8) + torch.arange(4.0).unsqueeze(1))
    assert torch.allclose(Y.mean(-1), torch.zeros(4), atol=1e-6)
    assert list(CenteredLayer().parameters()) == []


def test_my_linear_computes_relu_affine_and_gradients_reach_its_parameters():
    torch.manual_seed(0)
    layer = MyLinear(5, 3)
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (3,)
    X = torch.rand(2, 5)
    assert torch.equal(layer(X), torch.relu(X @ layer.weight + layer.bias))
    plain = MyLinear(5, 3, relu=False)
    assert torch.equal(plain(X), X @ plain.weight + plain.bias)
    net = nn.Sequential(MyLinear(64, 8), MyLinear(8, 1, relu=False))
    net(torch.rand(2, 64)).sum().backward()
    for p in net.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the gradient is the true one: compare with autograd on the same expression written out
    W, b = layer.weight.detach().requires_grad_(), layer.bias.detach().requires_grad_()
    torch.relu(X @ W + b).square().sum().backward()
    layer.zero_grad()
    layer(X).square().sum().backward()
    assert torch.allclose(layer.weight.grad, W.grad) and torch.allclose(layer.bias.grad, b.grad)


def test_tensor_reduction_is_the_quadratic_form():
    torch.manual_seed(0)
    layer = TensorReduction(5, 3)
    X = torch.randn(4, 5)
    expected = torch.einsum("bi,bj,ijk->bk", X, X, layer.weight)
    assert torch.allclose(layer(X), expected, atol=1e-5)
    x = X[0]  # one output by the definition, y_k = sum_ij W_ijk x_i x_j
    y1 = sum(layer.weight[i, j, 1] * x[i] * x[j] for i in range(5) for j in range(5))
    assert torch.allclose(layer(X)[0, 1], y1, atol=1e-5)
    assert sum(p.numel() for p in layer.parameters()) == 5 * 5 * 3


@pytest.mark.parametrize("n", [1, 2, 7, 8, 20, 33])
def test_fourier_coefficients_are_rffts_as_real_and_imaginary_parts(n):
    torch.manual_seed(0)
    X = torch.randn(3, 4, n)
    ref = torch.fft.rfft(X.double())  # k = 0 .. n // 2
    for layer in (FourierCoefficients(), FourierCoefficients(n)):
        out = layer(X)
        assert out.shape == (3, 4, n // 2 + 1, 2)
        assert torch.allclose(torch.complex(out[..., 0].double(), out[..., 1].double()), ref, atol=1e-4 * n)
    assert list(FourierCoefficients(n).state_dict()) == []  # the DFT matrix is recomputed, not saved


def test_fourier_coefficients_with_a_length_reject_others():
    with pytest.raises(ValueError, match=r"n=8.*\(2, 9\)"):
        FourierCoefficients(8)(torch.rand(2, 9))


class _Fourier(Model):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.net = FourierCoefficients(n)

    def forward(self, X):
        return self.net(X)

    def example_inputs(self, batch_size=2):
        return (torch.randn(batch_size, self.n),)


def test_fourier_coefficients_export_to_onnx_and_match_rfft(tmp_path):
    import onnxruntime

    n = 9  # odd: no Nyquist coefficient
    export_onnx(_Fourier(n), tmp_path / "dft.onnx", [TensorSpec.parse(f"x: float32[batch, {n}]")],
                [TensorSpec.parse(f"X: float32[batch, {n // 2 + 1}, 2]")])
    session = onnxruntime.InferenceSession(str(tmp_path / "dft.onnx"), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    x = torch.randn(5, n)
    (got,) = session.run(None, {"x": x.numpy()})
    ref = torch.fft.rfft(x.double())
    np.testing.assert_allclose(got, torch.stack([ref.real, ref.imag], -1).numpy(), atol=1e-5)
