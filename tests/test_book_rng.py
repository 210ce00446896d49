"""``--rng book`` (zoo_core.book_rng): each piece draws what the book's code draws, in the same order (checked against
torch's own DataLoader, nn.LazyLinear and nn.GRU), and the trainer refuses what it cannot replay, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo_core import TensorLoader, Trainer, ZooError, get_data, get_model
from zoo_core.book_rng import dataloader_permutation, defer_init, dropout_mask


def test_an_epochs_permutation_is_the_dataloaders_and_leaves_the_stream_where_it_does():
    n, batch_size = 37, 8
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size, shuffle=True)
    torch.manual_seed(5)
    theirs = [torch.cat([b[0] for b in loader]) for _ in range(3)]  # a new iterator each epoch, as the book's fit
    after = torch.rand(3)
    torch.manual_seed(5)
    ours = [dataloader_permutation(n) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    assert not torch.equal(ours[0], ours[1])
    assert torch.equal(torch.rand(3), after)


def test_a_book_shuffled_loader_serves_the_dataloaders_batches():
    X, y = torch.randn(21, 3), torch.arange(21)
    torch.manual_seed(1)
    theirs = [list(DataLoader(TensorDataset(X, y), 4, shuffle=True)) for _ in range(2)]
    torch.manual_seed(1)
    loader = TensorLoader((X, y), 4, shuffle=True, book_shuffle=True)
    ours = [list(loader.iterate(epoch)) for epoch in range(2)]
    assert [len(e) for e in ours] == [len(e) for e in theirs] == [6, 6]
    for a, b in zip(sum(theirs, []), sum(ours, [])):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_deferred_linear_draws_what_a_lazy_linear_draws_at_its_first_forward():
    x = torch.randn(4, 6)
    torch.manual_seed(2)
    lazy = nn.LazyLinear(5)
    torch.rand(10)  # whatever is drawn between construction and the first forward pass
    y_lazy = lazy(x)
    torch.manual_seed(2)
    with torch.random.fork_rng():
        linear = nn.Linear(6, 5)  # built outside the stream: only the deferred init counts
    defer_init(linear)
    torch.rand(10)
    y = linear(x)
    assert torch.equal(linear.weight, lazy.weight) and torch.equal(linear.bias, lazy.bias)
    assert torch.equal(y, y_lazy)
    weight = linear.weight.clone()
    linear(x)  # once only
    assert torch.equal(linear.weight, weight)


def test_the_dropout_mask_is_the_one_nn_gru_applies_between_its_layers():
    gru = nn.GRU(5, 7, num_layers=2, dropout=0.3).train()
    layer0, layer1 = nn.GRU(5, 7), nn.GRU(7, 7)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer0, f"{name}_l0").copy_(getattr(gru, f"{name}_l0"))
            getattr(layer1, f"{name}_l0").copy_(getattr(gru, f"{name}_l1"))
    x = torch.randn(6, 4, 5)
    torch.manual_seed(3)
    expected, _ = gru(x)
    torch.manual_seed(3)
    h0, _ = layer0(x)
    out, _ = layer1(h0 * dropout_mask(tuple(h0.shape), 0.3))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.manual_seed(4)  # and a different mask really changes the result
    assert not torch.allclose(layer1(h0 * dropout_mask(tuple(h0.shape), 0.3))[0], expected)


@pytest.mark.parametrize("bad", [
    ({"name": "softmax"}, "cannot replay the book's random stream"),
    ({"name": "gru-lm", "compile": True}, "does not run with --compile"),
    ({"name": "gru-lm", "seed": None}, "needs a seed"),
])
def test_the_trainer_refuses_what_it_cannot_replay_in_one_line(bad):
    kwargs, message = bad
    name = kwargs.pop("name")
    trainer = Trainer(max_epochs=1, device="cpu", rng="book", progress=False, **kwargs)
    with pytest.raises(ZooError, match=message):
        trainer.fit(get_model(name, "tiny"), get_data(name, "tiny"))


def test_an_unknown_rng_is_refused():
    with pytest.raises(ZooError, match="rng must be zoo or book"):
        Trainer(rng="d2l")


def test_the_cli_refuses_a_model_that_cannot_replay_before_making_a_run(cli, tmp_path):
    result = cli("train", "softmax", "--preset", "tiny", "--rng", "book", "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "--rng book: softmax cannot replay" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_book_rng_run_records_it_and_cannot_resume(cli, tmp_path):
    out = str(tmp_path / "out")
    trained = cli("train", "gru-lm", "--preset", "tiny", "--rng", "book", "--seed", "3", "--out", out,
                  "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    run = trained.stdout.strip().splitlines()[-1]
    from zoo_core.artifacts import read_manifest

    assert read_manifest(Path(run))["trainer"]["rng"] == "book"
    resumed = cli("train", "gru-lm", "--resume", run, "--epochs", "3", "--out", out)
    assert resumed.returncode == 1 and "cannot resume" in resumed.stderr
    assert read_manifest(Path(run))["status"] == "completed"  # the refusal leaves the run as it was


@pytest.mark.parametrize("args, message", [
    (["gru-lm", "--compile"], "--rng book does not run with --compile"),
    (["seq2seq", "--set", "bidirectional=true"], "seq2seq with bidirectional=true cannot replay"),
])
def test_the_cli_refuses_what_cannot_replay_before_making_a_run(cli, tmp_path, args, message):
    result = cli("train", *args, "--preset", "tiny", "--rng", "book", "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_resume_with_an_rng_says_the_run_keeps_its_own(cli, tmp_path):
    result = cli("train", "gru-lm", "--resume", "some-run", "--rng", "zoo", "--out", str(tmp_path))
    assert result.returncode == 1 and "--resume keeps the run's own --rng" in result.stderr


def test_info_says_which_models_replay_the_books_stream(cli):
    assert "--rng book replays" in cli("info", "gru-lm").stdout
    assert "--rng book replays" not in cli("info", "lenet").stdout
