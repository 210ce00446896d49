"""Models with several graphs (GraphSpec), their export, and the trainer's token-weighted metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_core import GraphSpec, Model, TensorSpec, ZooError, check_parity
from zoo_core.data import DataModule
from zoo_core.onnx_export import export_graph, parity_dims, trace_dims
from zoo_core.metrics import MetricAccumulator
from zoo_core.trainer import Trainer

V, H = 7, 5
STEP = GraphSpec("step", ["tokens: int64[batch]", f"H: float32[batch, {H}]"],
                 [f"logits: float32[batch, {V}]", f"H_next: float32[batch, {H}]"], role="step", state=("H",))
FORWARD = GraphSpec("model", ["X: int64[batch, seq]"], [f"logits: float32[batch, seq, {V}]"])


class TinyLM(Model):
    """A GRU language model with a forward graph and a one-step graph (batch-major state)."""

    unit = "tokens"

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(V, H)
        self.rnn = nn.GRU(H, H, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, X):  # (batch, seq) -> (batch, seq, V)
        return self.head(self.rnn(self.embedding(X))[0])

    def loss(self, y_hat, y):
        return F.cross_entropy(y_hat.reshape(-1, V), y.reshape(-1))

    def epoch_metrics(self, means):
        return {**means, "ppl": math.exp(means["loss"])}

    def example_inputs(self, batch_size=2):
        return (torch.randint(0, V, (batch_size, 4)),)

    def graph_module(self, name):
        return _Step(self) if name == "step" else super().graph_module(name)

    def graph_inputs(self, name, dims):
        if name == "step":
            return torch.randint(0, V, (dims["batch"],)), torch.randn(dims["batch"], H)
        return (torch.randint(0, V, (dims["batch"], dims["seq"])),)


class _Step(nn.Module):
    def __init__(self, lm: TinyLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens, H):
        out, H_next = self.lm.rnn(self.lm.embedding(tokens)[:, None], H[None])
        return self.lm.head(out[:, 0]), H_next[0]


class LoopOverTime(TinyLM):
    """Steps through time in a Python loop: torch.export specialises the sequence length."""

    def forward(self, X):
        h = torch.zeros(X.shape[0], H)
        outputs = []
        for t in range(X.shape[1]):
            h = self.rnn.forward(self.embedding(X[:, t : t + 1]), h[None])[1][0]
            outputs.append(self.head(h))
        return torch.stack(outputs, 1)


def test_graph_spec_validates_roles_and_state():
    assert STEP.file == "step.onnx" and STEP.state == ("H",)
    assert STEP.to_json()["state"] == ["H"] and STEP.inputs[0] == TensorSpec.parse("tokens: int64[batch]")
    with pytest.raises(ValueError, match="first input must be 'tokens'"):
        GraphSpec("step", ["X: int64[batch]"], ["logits: float32[batch, 3]"], role="step")
    with pytest.raises(ValueError, match="not among its inputs"):
        GraphSpec("step", ["tokens: int64[batch]"], ["logits: float32[batch, 3]"], role="step", state=("H",))
    with pytest.raises(ValueError, match="only step graphs carry state"):
        GraphSpec("encoder", ["X: int64[batch]"], ["H: float32[batch, 3]"], role="encoder", state=("X",))
    with pytest.raises(ValueError, match="used twice"):
        GraphSpec("step", ["tokens: int64[batch]", "H: float32[batch, 3]"], ["logits: float32[batch, 3]",
                  "H: float32[batch, 3]"], role="step", state=("H",))
    with pytest.raises(ValueError, match="role must be one of"):
        GraphSpec("x", ["X: int64[batch]"], ["y: float32[batch]"], role="decoder")


def test_trace_and_parity_sizes_are_distinct_and_at_least_two():
    traced, checked = trace_dims(FORWARD), parity_dims(FORWARD)
    assert traced == {"batch": 2, "seq": 3} and checked == {"batch": 3, "seq": 7}
    assert all(v >= 2 for v in traced.values()) and all(checked[k] != traced[k] for k in traced)


def test_every_graph_exports_with_its_dynamic_dims_and_matches(tmp_path):
    torch.manual_seed(0)
    model = TinyLM().eval()
    for graph in (FORWARD, STEP):
        info = export_graph(model, graph, tmp_path / graph.file)
        assert info["trace_dims"] == trace_dims(graph)
        assert info["inputs"][0]["shape"][0] == "batch"
        dims = parity_dims(graph)
        result = check_parity(model.graph_module(graph.name), tmp_path / graph.file,
                              model.graph_inputs(graph.name, dims), dims=dims)
        assert result.passed and result.dims == dims, str(result)
    assert export_graph(model, FORWARD, tmp_path / "f.onnx")["outputs"][0]["shape"] == ["batch", "seq", V]


def test_a_dimension_the_export_fixed_is_an_error(tmp_path):
    with pytest.raises(ZooError, match="seq") as info:
        export_graph(LoopOverTime().eval(), FORWARD, tmp_path / "model.onnx")
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert not (tmp_path / "model.onnx").exists()


def test_metric_accumulator_weighs_by_device_tensors():
    acc = MetricAccumulator(["loss"], "cpu")
    acc.add({"loss": torch.tensor(2.0)}, torch.tensor(3))  # a batch of 3 non-pad tokens
    acc.add({"loss": torch.tensor(4.0)}, 1)
    assert acc.compute() == {"loss": pytest.approx((2 * 3 + 4) / 4)}
    assert acc.total_weight() == 4
    restored = MetricAccumulator(["loss"], "cpu")
    restored.load_state_dict(acc.state_dict())
    assert restored.compute() == acc.compute()


class _Tokens(DataModule):
    def __init__(self, batch_size: int = 8) -> None:
        self.save_hyperparameters()

    def load(self):
        g = torch.Generator().manual_seed(0)
        X = torch.randint(0, V, (40, 6), generator=g)
        return {"train": (X[:32], X[:32].roll(-1, 1)), "val": (X[32:], X[32:].roll(-1, 1))}


def test_trainer_reports_token_weighted_perplexity_and_tokens_per_second():
    model, data = TinyLM(), _Tokens()
    result = Trainer(max_epochs=2, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    # perplexity is exp of the epoch's token-weighted mean loss, for training and validation alike
    assert result.metrics["val_ppl"] == pytest.approx(math.exp(result.metrics["val_loss"]))
    assert result.metrics["train_ppl"] == pytest.approx(math.exp(result.metrics["train_loss"]))
    assert result.unit == "tokens" and result.units == 2 * 32 * 6
    assert result.history[-1]["tokens_per_s"] == pytest.approx(result.units_per_s, rel=1e-3)
