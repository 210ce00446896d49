"""Nadaraya-Watson attention pooling (d2l §11.2): kernels by hand, weights, leave-one-out, training, fit, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo_attention.nadaraya_watson import KERNELS, NadarayaWatson, NadarayaWatsonData, f, query_grid

pytestmark = pytest.mark.usefixtures("single_thread")

KEYS, VALUES = torch.tensor([0.0, 0.5, 2.0]), torch.tensor([1.0, 2.0, 4.0])


def on_three_points(kernel: str, **kwargs) -> NadarayaWatson:
    """The model with its training set replaced by three points, x = (0, 0.5, 2), y = (1, 2, 4)."""
    model = NadarayaWatson(kernel=kernel, num_train=3, **kwargs).eval()
    model.keys, model.values = KEYS.clone(), VALUES.clone()
    return model


@pytest.mark.parametrize("kernel, query, expected", [
    # gaussian, width 0.5: alpha = exp(-2 d^2) at d = 0.1, -0.4, -1.9
    ("gaussian", 0.1, (math.exp(-0.02) * 1 + math.exp(-0.32) * 2 + math.exp(-7.22) * 4)
     / (math.exp(-0.02) + math.exp(-0.32) + math.exp(-7.22))),
    ("boxcar", 0.1, (1 + 2) / 2),               # |d| < 1 for the keys 0 and 0.5 only
    ("boxcar", 1.6, 4.0),                       # only the key 2 (d = -0.4); 0.5 is 1.1 away
    ("constant", 0.1, (1 + 2 + 4) / 3),
    ("epanechikov", 0.1, (0.9 * 1 + 0.6 * 2) / (0.9 + 0.6)),   # 1 - |d|: 0.9, 0.6, 0
    ("epanechikov", 1.25, (0.25 * 2 + 0.25 * 4) / 0.5),       # 1 - |d|: 0 (d = 1.25), 0.25, 0.25
])
def test_kernel_matches_hand_computation(kernel: str, query: float, expected: float) -> None:
    y_hat = on_three_points(kernel)(torch.tensor([query]))
    assert y_hat.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_the_books_code_on_the_test_grid(kernel: str) -> None:
    """The book's ``watson_nadaraya`` and kernels, verbatim in torch, on its data and test grid."""
    book_kernels = {"gaussian": lambda x: torch.exp(-2 * x**2), "boxcar": lambda x: (torch.abs(x) < 1.0).float(),
                    "constant": lambda x: 1.0 + 0 * x,
                    "epanechikov": lambda x: torch.max(1 - torch.abs(x), torch.zeros_like(x))}
    model = NadarayaWatson(kernel=kernel).eval()
    x_train, y_train, x_test = model.keys, model.values, query_grid()
    dists = x_train.reshape((-1, 1)) - x_test.reshape((1, -1))
    k = book_kernels[kernel](dists)
    k = k / k.sum(0)
    assert torch.isfinite(k).all()  # every grid point has a key within distance 1 in this draw
    with torch.no_grad():
        assert torch.allclose(model(x_test), y_train @ k, atol=1e-5)
        assert torch.allclose(model.attention_weights(x_test), k.T, atol=1e-6)


def test_a_query_with_no_key_in_its_window_gets_uniform_weights() -> None:
    """The book's k / k.sum(0) is 0 / 0 there; here the weights are uniform (masked_softmax's convention)."""
    for kernel in ("boxcar", "epanechikov"):
        model = on_three_points(kernel)
        weights = model.attention_weights(torch.tensor([3.5]))  # 1.5 or more from every key
        assert torch.allclose(weights, torch.full((1, 3), 1 / 3))
        assert model(torch.tensor([3.5])).item() == pytest.approx(7 / 3)


def test_width_scales_the_distance() -> None:
    """A gaussian of width 1 is exp(-d^2 / 2): at q = 0, keys 0 and 1 (values 0 and 1) weigh 1 and exp(-1/2)."""
    model = NadarayaWatson(kernel="gaussian", width=1.0, num_train=2).eval()
    model.keys, model.values = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])
    q = torch.tensor([0.0])
    expected = math.exp(-0.5) / (1 + math.exp(-0.5))
    assert model(q).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_rows_sum_to_one(kernel: str) -> None:
    model = NadarayaWatson(kernel=kernel).eval()
    queries = torch.cat([query_grid(), torch.tensor([-20.0, 30.0]), model.keys])  # far ones and the keys
    for leave_one_out in (False, True):
        weights = model.attention_weights(queries, leave_one_out)
        assert weights.shape == (len(queries), 40)
        assert (weights >= 0).all() and torch.isfinite(weights).all()
        assert torch.allclose(weights.sum(-1), torch.ones(len(queries)), atol=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "epanechikov"])
def test_leave_one_out_excludes_the_diagonal(kernel: str) -> None:
    """Training queries (the keys) give their own key weight 0; the rest of the row is the full row renormalised,
    and the training loss is that of a hand-written loop that deletes each point before predicting it."""
    model = NadarayaWatson(kernel=kernel).eval()
    x, y = model.keys, model.values
    full, loo = model.attention_weights(x), model.attention_weights(x, leave_one_out=True)
    assert (loo.diagonal() == 0).all() and (full.diagonal() > 0).all()
    off = ~torch.eye(40, dtype=torch.bool)
    renormalised = full / (1 - full.diagonal()).unsqueeze(-1)
    assert torch.allclose(loo[off], renormalised[off], rtol=1e-4, atol=1e-7)

    by_hand = []
    for i in range(40):
        other = NadarayaWatson(kernel=kernel, num_train=39).eval()
        other.keys, other.values = torch.cat([x[:i], x[i + 1:]]), torch.cat([y[:i], y[i + 1:]])
        by_hand.append(other(x[i:i + 1]))
    expected = F.mse_loss(torch.cat(by_hand), y)
    assert model.training_step((x, y))["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert model(x).ne(torch.cat(by_hand)).any()  # without leave-one-out, each point sees its own label


def test_data_is_seeded_deterministic_and_the_model_pools_over_it() -> None:
    a, b = NadarayaWatsonData().splits(), NadarayaWatsonData().splits()
    assert all(torch.equal(s, t) for split in ("train", "val") for s, t in zip(a[split], b[split]))
    x, y = a["train"]
    assert x.shape == y.shape == (40,) and (x[1:] > x[:-1]).all() and 0 <= x.min() and x.max() <= 5
    assert torch.equal(a["val"][0], torch.arange(0, 5, 0.1)) and torch.equal(a["val"][1], f(a["val"][0]))
    other = NadarayaWatsonData(seed=1).splits()["train"][0]
    assert not torch.equal(other, x)
    model = NadarayaWatson(**NadarayaWatsonData().model_hparams())
    assert torch.equal(model.keys, x) and torch.equal(model.values, y)
    residual = y - f(x)  # noise N(0, 1): 40 draws
    assert 0.6 < residual.std().item() < 1.4


def test_gaussian_fits_f_on_the_validation_grid() -> None:
    """The book's gaussian (width 0.5) on the book's data, seed 0: validation MSE against the noise-free f is
    0.0957 (measured), 10x better than the constant kernel's mean of all labels (0.915); largest error 1.01, at the
    grid's edge, where a kernel estimate only sees keys on one side."""
    data = NadarayaWatsonData().splits()
    x_val, y_val = data["val"]
    errors = {}
    for kernel in KERNELS:
        with torch.no_grad():
            errors[kernel] = F.mse_loss(NadarayaWatson(kernel=kernel).eval()(x_val), y_val).item()
    assert errors["gaussian"] < 0.11
    assert errors["constant"] > 8 * errors["gaussian"]
    assert max(errors["boxcar"], errors["epanechikov"]) < 0.2
    with torch.no_grad():
        y_hat = NadarayaWatson().eval()(x_val)
    inner = (x_val > 0.5) & (x_val < 4.5)
    assert (y_hat - y_val)[inner].abs().max() < 0.6


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_trainable_width_loss_goes_down_through_the_trainer(seed: int) -> None:
    """The `trainable` preset through the zoo's Trainer: the leave-one-out loss falls every epoch, w moves from
    U(0, 1) to near the leave-one-out optimum (about 3), and the fit beats the book's fixed width on validation.
    Seed 3 draws w = 0.004, where the gradient nearly vanishes (the loss is even in w): 5 epochs leave it there."""
    from zoo_core import Trainer, get_data, get_model, get_spec

    torch.manual_seed(seed)
    model, data = get_model("nadaraya-watson", preset="trainable"), get_data("nadaraya-watson", preset="trainable")
    assert model.w.requires_grad and 0 < model.w.item() < 1
    epochs = get_spec("nadaraya-watson").preset("trainable").train["max_epochs"]
    result = Trainer(max_epochs=epochs, seed=seed, device="cpu", progress=False, log=lambda l: None).fit(model, data)
    losses = [record["train_loss"] for record in result.history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    with torch.no_grad():  # an epoch's train_loss is that before its step: the final loss comes after the last one
        final = model.training_step(data.splits()["train"])["loss"].item()
    assert final < min(losses) and final < 0.7 * losses[0]
    assert 1.8 < model.w.item() < 4.5
    assert result.metrics["val_loss"] < 0.11  # the fixed width 0.5 (w = 2): 0.0957


def test_fixed_kernels_train_nothing() -> None:
    """A fixed kernel's epoch measures the losses and changes no weight (its w is frozen)."""
    from zoo_core import Trainer, get_data, get_model

    model, data = get_model("nadaraya-watson", kernel="boxcar"), get_data("nadaraya-watson")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = Trainer(max_epochs=1, device="cpu", progress=False, log=lambda line: None).fit(model, data)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.metrics["val_loss"] == pytest.approx(0.1661, abs=1e-4)  # measured: boxcar, seed 0
    assert not model.w.requires_grad and model.num_params() == 1


def test_bad_hyper_parameters_are_clear_errors() -> None:
    from zoo_core import ZooError

    with pytest.raises(ZooError, match="unknown kernel 'triangle'"):
        NadarayaWatson(kernel="triangle")
    with pytest.raises(ZooError, match="gaussian"):
        NadarayaWatson(kernel="boxcar", trainable=True)
    with pytest.raises(ZooError, match="positive"):
        NadarayaWatson(width=0.0)


@pytest.mark.parametrize("kernel", ["boxcar", "constant", "epanechikov"])
def test_every_kernel_exports_with_onnx_runtime_parity(kernel: str, tmp_path) -> None:
    """The contract suite exports the tiny (trainable gaussian) preset; the other kernels export too."""
    from zoo_core import check_parity, get_spec
    from zoo_core.onnx_export import export_graph, parity_dims

    (graph,) = get_spec("nadaraya-watson").graph_specs("book")
    model = NadarayaWatson(kernel=kernel).eval()
    export_graph(model, graph, tmp_path / graph.file)
    dims = parity_dims(graph)
    torch.manual_seed(0)
    result = check_parity(model, tmp_path / graph.file, model.graph_inputs("model", dims), dims=dims)
    assert result.passed, result


def test_zoo_train_export_verify_with_set_kernel(tmp_path) -> None:
    """The zoo's workflow (`zoo train nadaraya-watson --set kernel=epanechikov --set seed=3`, `zoo export --onnx`,
    `zoo verify`): ``--set seed`` reaches the data and the model alike, so the run's keys are its training data."""
    import json

    from zoo_core import workflows
    from zoo_core.registry import get_spec

    quiet = lambda line: None  # noqa: E731
    run = workflows.train("nadaraya-watson", assignments=["kernel=epanechikov", "seed=3"], device="cpu",
                          out=tmp_path, log=quiet)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hparams"]["kernel"] == "epanechikov"
    assert manifest["hparams"]["seed"] == manifest["data"]["hparams"]["seed"] == 3
    model = workflows.load_run_model(get_spec("nadaraya-watson"), run, manifest)
    assert torch.equal(model.keys, NadarayaWatsonData(seed=3).splits()["train"][0])
    assert manifest["status"] == "completed" and manifest["metrics"]["val_loss"] < 0.2
    (onnx_file,) = workflows.export("nadaraya-watson", out=tmp_path, log=quiet)
    assert onnx_file.name == "model.onnx"
    assert workflows.verify("nadaraya-watson", out=tmp_path, log=quiet).passed
