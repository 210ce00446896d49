"""Blocks (d2l §6.1): MySequential, FixedHiddenMLP and its closed-form loop, NestMLP, chimera, Parallel, repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoo_builders import (
    MODES, FixedHiddenMLP, HalveUntilSmall, MySequential, NestMLP, Parallel, Repeat, UnknownModeError, chimera,
    halve_until_small_loop, repeat,
)
from zoo_core import Model, TensorSpec, ZooError, export_onnx


class ListSequential(nn.Module):
    """The mistake MySequential avoids: layers kept in a plain Python list."""

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self.layers = list(modules)

    def forward(self, X):
        for layer in self.layers:
            X = layer(X)
        return X


def test_a_python_list_hides_layers_and_my_sequential_does_not():
    torch.manual_seed(0)
    layers = [nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)]
    X = torch.rand(2, 20)
    hidden, mine = ListSequential(*layers), MySequential(*layers)
    assert torch.equal(hidden(X), mine(X))  # same computation...
    # ...but the list's parameters are invisible: no optimiser would train them, no checkpoint would save them
    assert list(hidden.parameters()) == [] and hidden.state_dict() == {}
    assert [n for n, _ in mine.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(mine.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert sum(p.numel() for p in mine.parameters()) == 20 * 256 + 256 + 256 * 10 + 10
    # .to() converts registered submodules only
    listed = ListSequential(nn.Linear(3, 3)).to(torch.float64)
    assert listed.layers[0].weight.dtype == torch.float32
    with pytest.raises(RuntimeError):  # float64 input, float32 weights left behind
        listed(torch.rand(1, 3, dtype=torch.float64))
    mine = MySequential(nn.Linear(3, 3)).to(torch.float64)
    assert next(mine.parameters()).dtype == torch.float64
    assert mine(torch.rand(1, 3, dtype=torch.float64)).dtype == torch.float64


def test_my_sequential_runs_in_order_and_runs_a_repeated_module_each_time():
    double, add_one = nn.Identity(), nn.Identity()
    double.forward, add_one.forward = (lambda x: 2 * x), (lambda x: x + 1)
    assert MySequential(double, add_one)(torch.tensor([1.0])).item() == 3.0
    assert MySequential(add_one, double)(torch.tensor([1.0])).item() == 4.0
    shared = nn.Linear(4, 4)
    X = torch.rand(2, 4)
    assert torch.equal(MySequential(shared, shared)(X), shared(shared(X)))  # not once: children() would dedupe


# --- FixedHiddenMLP and its loop -------------------------------------------------------------------------------------

def test_fixed_hidden_mlp_constant_weight_is_a_buffer_and_its_layer_is_used_twice():
    torch.manual_seed(0)
    net = FixedHiddenMLP()
    X = torch.rand(2, 20)
    out = net(X)
    assert out.shape == ()  # the book's X.sum()
    assert [n for n, _ in net.named_parameters()] == ["linear.weight", "linear.bias"]
    assert "rand_weight" in net.state_dict() and not net.rand_weight.requires_grad
    assert not any(k.startswith("shrink.") for k in net.state_dict())  # the loop's tables are not state
    out.backward()
    assert net.rand_weight.grad is None and net.linear.weight.grad is not None
    calls = []
    net.linear.register_forward_hook(lambda *args: calls.append(1))
    net(X)
    assert len(calls) == 2
    # what the book computes, step by step
    with torch.no_grad():
        h = net.linear(torch.relu(net.linear(X) @ net.rand_weight + 1))
        assert torch.equal(net(X), halve_until_small_loop(h).sum())
    saved = net.rand_weight.clone()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    assert torch.equal(net.rand_weight, saved)


def test_fixed_hidden_mlp_per_example_halves_each_row_alone():
    torch.manual_seed(0)
    net = FixedHiddenMLP(per_example=True)
    X = torch.rand(3, 20)
    out = net(X)
    assert out.shape == (3,)
    assert torch.allclose(net(X[1:2]), out[1:2])  # independent of the rest of the batch
    assert out.abs().max() <= 1


def _sums(*values: float) -> torch.Tensor:
    """Rows of 4 whose absolute sums are `values` (signs mixed)."""
    return torch.tensor([[0.5 * v, -0.25 * v, 0.125 * v, -0.125 * v] for v in values])


def _loop_count(row: torch.Tensor) -> int:
    n, s = 0, row.abs().sum()
    while s > 1:
        s, n = s / 2, n + 1
    return n


@pytest.mark.parametrize("per_example", [False, True])
def test_closed_form_is_the_literal_while_loop(per_example):
    shrink = HalveUntilSmall(per_example)
    # 0 halvings (s <= 1, s exactly 1), 1 (s just above 1, exactly 2), many, exact powers of two on both sides
    X = _sums(0.0, 0.3, 1.0, 1.0000001, 1.5, 2.0, 2.0000002, 3.9, 1024.0, 1025.0, 1e6, 3e30)
    if per_example:
        assert shrink.halvings(X).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 10, 11, 20, 102]
        assert [_loop_count(r) for r in X] == shrink.halvings(X).tolist()
    assert torch.equal(shrink(X), halve_until_small_loop(X, per_example))  # bit for bit
    torch.manual_seed(0)
    for scale in (1e-3, 1.0, 7.0, 1e3, 1e8):  # random inputs of many sizes
        X = torch.randn(5, 20) * scale
        assert torch.equal(shrink(X), halve_until_small_loop(X, per_example))


def test_the_loop_stops_where_the_book_says():
    out = HalveUntilSmall()(_sums(0.3, 123.0))  # whole tensor: s = 123.3
    assert 0.5 < out.abs().sum() <= 1
    assert HalveUntilSmall().halvings(_sums(0.3, 123.0)).item() == 7  # 123.3 / 2^7 = 0.96


class _BookFixedHidden(Model):
    """The book's FixedHiddenMLP (one number per batch) as a Model, to export it through the zoo's exporter."""

    def __init__(self) -> None:
        super().__init__()
        self.net = FixedHiddenMLP(20)

    def forward(self, X):
        return self.net(X)

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 20),)


def test_fixed_hidden_mlp_exports_to_onnx_with_loops_of_0_1_and_many_halvings(tmp_path):
    import onnxruntime

    torch.manual_seed(0)
    model = _BookFixedHidden().materialize()
    # linear = 0.025 I: s(t X) = 0.5 + 0.025^2 t sum(X @ R) for X >= 0, set exactly by t
    with torch.no_grad():
        model.net.linear.weight.copy_(0.025 * torch.eye(20))
        model.net.linear.bias.zero_()
    export_onnx(model, tmp_path / "fixed.onnx", [TensorSpec.parse("X: float32[batch, 20]")],
                [TensorSpec.parse("y: float32[]")])
    session = onnxruntime.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    X = torch.rand(1, 20)
    S = (X @ model.net.rand_weight).sum().item()
    counts = []
    for s_target in (0.5, 1.5, 5000.0):
        Xt = X * (s_target - 0.5) / (0.025**2 * S)
        with torch.no_grad():
            h = model.net.linear(torch.relu(model.net.linear(Xt) @ model.net.rand_weight + 1))
            expected = model(Xt).numpy()
        counts.append(_loop_count(h))
        (got,) = session.run(None, {"X": Xt.numpy()})
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    assert counts == [0, 1, 13]


# --- NestMLP, chimera, Parallel --------------------------------------------------------------------------------------

def test_nest_mlp_and_chimera():
    torch.manual_seed(0)
    X = torch.rand(2, 20)
    nest = NestMLP()
    assert nest(X).shape == (2, 16)
    assert [n for n, _ in nest.named_parameters()][::2] == ["net.0.weight", "net.2.weight", "linear.weight"]
    net = chimera()
    out = net(X)
    assert out.shape == ()  # the book's: one number
    assert out.abs() <= 1
    assert isinstance(net[0], NestMLP) and isinstance(net[2], FixedHiddenMLP)
    assert chimera(per_example=True)(X).shape == (2,)


def test_parallel_concatenates_on_dim_1():
    torch.manual_seed(0)
    net1 = nn.Sequential(nn.Linear(10, 12), nn.ReLU())
    net2 = nn.Sequential(nn.Linear(10, 24), nn.ReLU())
    X = torch.rand(2, 10)
    out = Parallel(net1, net2)(X)
    assert out.shape == (2, 36)
    assert torch.equal(out[:, :12], net1(X)) and torch.equal(out[:, 12:], net2(X))
    assert len(list(Parallel(net1, net2).parameters())) == 4


# --- repeat ----------------------------------------------------------------------------------------------------------

def _block():
    return nn.Sequential(nn.Linear(6, 6), nn.Tanh())


def test_repeat_gives_fresh_parameters_unless_tied():
    torch.manual_seed(0)
    fresh = repeat(_block, 3)
    assert isinstance(fresh, Repeat) and len(fresh.blocks) == 3
    assert len({id(b) for b in fresh.blocks}) == 3
    assert len(list(fresh.parameters())) == 6
    assert not torch.equal(fresh.blocks[0][0].weight, fresh.blocks[1][0].weight)
    made = []
    tied = repeat(lambda: made.append(1) or _block(), 3, tied=True)
    assert len(made) == 1 and len({id(b) for b in tied.blocks}) == 1
    assert len(list(tied.parameters())) == 2
    X = torch.rand(2, 6)
    b = tied.blocks[0]
    assert torch.equal(tied(X), b(b(b(X))))


@pytest.mark.parametrize("mode", MODES)
def test_repeat_modes(mode):
    torch.manual_seed(0)
    net = repeat(_block, 3, mode=mode)
    X = torch.rand(2, 6)
    b0, b1, b2 = net.blocks
    expected = {
        "sequential": lambda: b2(b1(b0(X))),
        "parallel-sum": lambda: b0(X) + b1(X) + b2(X),
        "parallel-concat": lambda: torch.cat([b0(X), b1(X), b2(X)], dim=1),
        "residual": lambda: (lambda h: (lambda h2: h2 + b2(h2))(h + b1(h)))(X + b0(X)),
    }[mode]()
    out = net(X)
    assert out.shape == ((2, 18) if mode == "parallel-concat" else (2, 6))
    assert torch.allclose(out, expected, atol=1e-6)


def test_repeat_rejects_unknown_modes_naming_the_valid_ones():
    with pytest.raises(UnknownModeError) as info:
        repeat(_block, 2, mode="zigzag")
    message = str(info.value)
    assert "zigzag" in message and all(m in message for m in MODES)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ZooError)
    with pytest.raises(ZooError, match="n >= 1"):
        repeat(_block, 0)
