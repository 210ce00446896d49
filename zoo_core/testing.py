"""The zoo's pytest plugin: markers, helpers, and the contract test-suite every model plugin inherits.

Installed with zoo-core (entry point ``pytest11``), so any plugin's tests get it. To run the whole contract over
every model a distribution registers, subclass `ModelContract`::

    # tests/test_contract.py of a plugin
    from zoo_core.testing import ModelContract

    class TestContract(ModelContract):
        plugin = "zoo-mymodels"   # the distribution name; or list names in `models`

Markers: ``gpu`` (skipped where CUDA is missing, with that reason), ``data`` (needs a real dataset: use
`require_data`, which skips with the reason when it is absent), ``slow`` (minutes; not in the default run).

torch is imported inside the tests, not here: this module is loaded by every pytest run in the environment.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torch import Tensor

    from zoo_core.registry import GraphSpec

HEAVY_MODULES = ("torch", "torchvision", "torchaudio", "numpy", "pandas", "scipy", "sklearn", "matplotlib", "onnx",
                 "onnxruntime", "onnxscript", "PIL", "cv2", "tensorflow", "jax", "transformers")
"""Top-level modules that loading a plugin must not import: ``zoo list`` and ``zoo info`` stay well under a second."""

MARKERS = {
    "gpu": "needs CUDA; skipped where there is none",
    "data": "needs a real dataset (found through --data-dir/$ZOO_DATA); skipped with the reason when absent",
    "slow": "takes minutes; excluded from the default run (-m 'not slow')",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason=f"needs CUDA: torch {torch.__version__} sees no GPU here")
        for item in gpu_items:
            item.add_marker(skip)


def require_data(dataset: str, data_dir: str | None = None) -> Path | None:
    """The folder holding `dataset`'s real files, or skip the calling test saying which file is missing where.

    Never downloads. Synthetic datasets (no files) return None. A file with a wrong checksum fails, never skips.
    """
    from zoo_core import DataNotFoundError, get_data_spec
    from zoo_core.registry import data_class

    cls = data_class(get_data_spec(dataset))
    locate = getattr(cls, "locate", None)
    if locate is None:
        return None
    try:
        return locate(data_dir, download=False)
    except DataNotFoundError as e:
        pytest.skip(f"real data absent: {e}")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op torch thread inside the block, restored after it: `single_thread` for code that a
    function-scoped fixture cannot reach (a module-scoped fixture that trains a model once for its file's tests)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def single_thread() -> Any:
    """One intra-op torch thread for the test, restored after it.

    Tiny models split over threads cost more than they gain, and on a busy machine (more runnable threads than
    cores) OpenMP barriers wait on descheduled threads: a tiny GoogLeNet step took 3-5 s with 2 threads, 0.14 s with 1.
    """
    with one_thread():
        yield


# --- translation models ---------------------------------------------------------------------------------------------
# Checks that the encoder-decoder translation models (d2l §10.7 on: seq2seq, Bahdanau attention, the Transformer)
# share: they train on fra-eng batches ``(src, tgt_in, src_valid_len, tgt_out)``, generate through an ``encoder`` and
# a ``decoder_step`` graph that `zoo_core.decoding` drives on PyTorch or ONNX Runtime, and train through a fast
# ``packed_loss`` that must compute the forward pass's masked loss. Each model's tests call them with its own model,
# data and thresholds.

def train_preset(model_name: str, preset: str, *, max_epochs: int | None = None, rng: str = "zoo",
                 **data_options: Any) -> tuple[Any, Any, Any]:
    """`model_name`'s `preset` trained by the `Trainer` on the CPU with the preset's recipe (`max_epochs` replaces its
    epochs) and `rng` (``book``: the d2l reference's random stream replayed), on one thread, quietly: (the model in
    eval mode, its data, the `FitResult`).

    torch is seeded 0 before the model is built, so a module-scoped fixture gets the same model whichever tests ran
    before it. `data_options` go to `get_data`: a tiny preset trained for a few epochs on a couple of thousand
    synthetic pairs gives outputs far from uniform, which decoding tests need (among an untrained model's
    near-uniform outputs, which token wins is a matter of rounding).
    """
    import torch

    from zoo_core import Trainer, get_data, get_model, get_spec

    train = dict(get_spec(model_name).preset(preset).train)
    if max_epochs is not None:
        train["max_epochs"] = max_epochs
    with one_thread():
        torch.manual_seed(0)
        model, data = get_model(model_name, preset=preset), get_data(model_name, preset=preset, **data_options)
        result = Trainer(**train, device="cpu", rng=rng, progress=False, log=lambda line: None).fit(model, data)
    return model.eval(), data, result


def generation_graphs(model_name: str, preset: str = "tiny") -> list[GraphSpec]:
    """`model_name`'s graphs that generation runs (the encoder and step roles, which `zoo_core.decoding` drives), in
    its spec's order: those to export for ONNX Runtime."""
    from zoo_core import get_spec

    return [g for g in get_spec(model_name).graph_specs(preset) if g.role in ("encoder", "step")]


def export_graphs(model: Any, graphs: Iterable[GraphSpec], folder: Path) -> dict[str, Path]:
    """Each of `graphs` of `model` exported to ``folder/<name>.onnx``: {name: path}, as `zoo_core.decoding.OnnxRunner`
    takes them."""
    from zoo_core.onnx_export import export_graph

    files = {}
    for graph in graphs:
        export_graph(model, graph, folder / graph.file)
        files[graph.name] = folder / graph.file
    return files


def assert_parity_at_untraced_sizes(model: Any, graph: GraphSpec, path: Path, *, atol: float | None = None,
                                    rtol: float | None = None) -> None:
    """`graph` exported at `path` gives PyTorch's outputs on ONNX Runtime (within `atol` and `rtol`; by default
    `check_parity`'s) at `parity_dims`: a batch size and every other symbolic dimension unlike those export traced
    at, so that a size the trace fixed into the graph fails here rather than on a user's first other input."""
    from zoo_core import check_parity
    from zoo_core.onnx_export import parity_dims, trace_dims

    dims = parity_dims(graph)
    assert all(dims[d] != size for d, size in trace_dims(graph).items())
    tolerances = {name: tol for name, tol in (("atol", atol), ("rtol", rtol)) if tol is not None}
    result = check_parity(model.graph_module(graph.name), path, model.graph_inputs(graph.name, dims), dims=dims,
                          input_names=[t.name for t in graph.inputs], **tolerances)
    assert result.passed, f"{graph.file}: {result}"


def assert_predict_step_is_greedy(model: Any, graphs: Sequence[GraphSpec], src: Tensor, src_valid_len: Tensor, *,
                                  bos: int, num_steps: int) -> None:
    """The book's ``predict_step`` (the argmax fed back for `num_steps` steps, from `bos`) gives the tokens of
    `zoo_core.decoding.greedy` through the model's graphs when greedy does not stop at ``<eos>``: the graphs decode
    what the book's decoder does."""
    import torch

    from zoo_core.decoding import TorchRunner, greedy

    first = torch.full((len(src),), bos, dtype=torch.int64)
    book = model.predict_step((src, first[:, None], src_valid_len), num_steps=num_steps)
    runner = TorchRunner(model, graphs)
    assert greedy(runner, runner.start(src, src_valid_len), first, max_len=num_steps) == book.tolist()


def assert_onnx_search_equals_pytorch(model: Any, data: Any, graphs: Sequence[GraphSpec], files: Mapping[str, Path],
                                      *, beam_size: int) -> tuple[int, int]:
    """Greedy search (`beam_size` 1) or beam search gives the same tokens from the exported `files` on ONNX Runtime
    as from the model on PyTorch, for every validation sentence of `data`. One decoding loop drives both runtimes,
    so a difference is the graphs'.

    Returns (exact, sentences): how many of the PyTorch translations are their reference token for token, and of how
    many; how many a model must get right is its own test's to say.
    """
    import torch

    from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, greedy
    from zoo_core.text import BOS, EOS, PAD

    src, _, src_valid_len, tgt_out = data.splits()["val"]
    bos, eos, pad = (data.tgt_vocab[token] for token in (BOS, EOS, PAD))
    first = torch.full((len(src),), bos, dtype=torch.int64)
    found = []
    for runner in (TorchRunner(model, graphs), OnnxRunner(files, graphs)):
        state = runner.start(src, src_valid_len)
        found.append(greedy(runner, state, first, data.num_steps, eos=eos) if beam_size == 1 else
                     beam_search(runner, state, first, data.num_steps, beam_size, eos=eos))
    assert found[0] == found[1], f"beam size {beam_size}: ONNX Runtime's tokens are not PyTorch's"
    references = [[t for t in row if t not in (pad, eos)] for row in tgt_out.tolist()]
    return sum(tokens == reference for tokens, reference in zip(found[0], references)), len(references)


def assert_onnx_translation_equals_pytorch(model: Any, data: Any, graphs: Sequence[GraphSpec],
                                           files: Mapping[str, Path], sentences: Sequence[str], *,
                                           beam_size: int = 1) -> list[str]:
    """``translate`` gives the same words for raw `sentences` (the book's preprocessing) from the exported `files` on
    ONNX Runtime as on PyTorch; returns them."""
    from zoo_core.decoding import OnnxRunner, TorchRunner

    out = [model.translate(sentences, data.src_vocab, data.tgt_vocab, data.num_steps, beam_size, runner=runner)
           for runner in (TorchRunner(model, graphs), OnnxRunner(files, graphs))]
    assert out[0] == out[1], f"beam size {beam_size}: ONNX Runtime translates {out[1]}, PyTorch {out[0]}"
    return out[0]


def assert_translates_exactly(model: Any, data: Any, graphs: Sequence[GraphSpec], pairs: Mapping[str, str], *,
                              beam_size: int = 1) -> None:
    """Each English sentence of `pairs` translates to its French: BLEU (k=2) 1, the book's measure (d2l §10.7.6)."""
    from zoo_core.seq_metrics import bleu

    translations = model.translate(list(pairs), data.src_vocab, data.tgt_vocab, data.num_steps, beam_size,
                                   graphs=graphs)
    for (en, fr), pred in zip(pairs.items(), translations):
        assert bleu(pred, fr, k=2) == 1.0, f"{en} => {pred} (beam {beam_size})"


def padded_labels(batch_size: int, num_steps: int, vocab_size: int, pad: int) -> Tensor:
    """Random labels (batch_size, num_steps): each row's first 1 to num_steps (at random) any token but `pad`, the rest
    `pad`, so that a masked loss meets rows of every length."""
    import torch

    labels = torch.randint(0, vocab_size, (batch_size, num_steps))
    labels[labels == pad] = (pad + 1) % vocab_size
    lengths = torch.randint(1, num_steps + 1, (batch_size,))
    labels[torch.arange(num_steps)[None, :] >= lengths[:, None]] = pad
    return labels


def assert_same_loss_and_gradients(model: Any, loss: Callable[[], Tensor], reference: Callable[[], Tensor]) -> None:
    """`loss()` equals `reference()`, and so does the gradient of every parameter of `model`: within rtol 1e-5, atol
    1e-6 for the loss and rtol 1e-4, atol 1e-6 for each gradient, as float32 sums taken in another order (a fast
    training path's cuts, fusions and hand-written backward against the forward pass) differ."""
    import torch

    def value_and_gradients(f: Callable[[], Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        model.zero_grad()
        value = f()
        value.backward()
        return value.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    expected, expected_grads = value_and_gradients(reference)
    value, grads = value_and_gradients(loss)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def assert_packed_loss_under_bf16_as_close_as_autocast(model: Any, batch: Sequence[Tensor]) -> None:
    """Under CPU bf16 autocast, ``model.packed_loss(batch)`` (a translation model's hand-written training path) is
    as close to the forward pass's masked loss in float32 as the forward pass itself is under autocast: the loss
    within 1%, and the mean over parameters of each gradient's relative error at most 1.25 times the forward pass's
    under autocast, plus 0.01. bf16 keeps 8 bits of mantissa, so autocast's own gradients move by a few percent on
    average (small ones, such as the attention's W_q and W_k at init, by 20-30%); a lost mask, a wrong cast or a
    dropped gradient would be far off. The error must also exceed 0.001, far above float32's reorderings (1e-6):
    the path did compute in bf16 (else it brings no speed). `model` in eval mode (no dropout)."""
    import torch

    src, tgt_in, valid, tgt_out = batch

    def packed() -> Tensor:
        return model.packed_loss(batch)

    def forward() -> Tensor:
        return model.loss(model(src, tgt_in, valid), tgt_out)

    def value_and_gradients(f: Callable[[], Tensor], bf16: bool) -> tuple[Tensor, dict[str, Tensor]]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = f()
        value.backward()
        return value.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    expected, expected_grads = value_and_gradients(forward, bf16=False)
    errors = {}
    for name, f in (("forward", forward), ("path", packed)):
        value, grads = value_and_gradients(f, bf16=True)
        assert value.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads.values())
        torch.testing.assert_close(value, expected, rtol=1e-2, atol=0)
        errors[name] = sum(float((g - expected_grads[n]).norm() / expected_grads[n].norm())
                           for n, g in grads.items()) / len(grads)
    assert 0.001 < errors["path"] <= 1.25 * errors["forward"] + 0.01, errors


def assert_packed_loss_without_labels_is_zero(model: Any) -> None:
    """A batch whose labels are all ``<pad>`` has no token for the masked mean to average over: the packed loss is
    0 (not 0/0, NaN) and its backward pass runs."""
    import torch

    src, tgt_in, src_valid_len = model.example_inputs(3)
    loss = model.packed_loss((src, tgt_in, src_valid_len, torch.full(tgt_in.shape, model.tgt_pad)))
    loss.backward()
    assert loss.item() == 0.0


def assert_training_step_takes_the_packed_path(model: Any, batch: Sequence[Tensor],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A training step computes its loss once with ``packed_loss``, in float32 and under bf16 autocast (``zoo train
    --precision bf16``) alike: the training that runs is the one the tests holding the packed loss to the forward
    pass's loss check."""
    import torch

    calls: list[Sequence[Tensor]] = []
    monkeypatch.setattr(model, "packed_loss", lambda b: calls.append(b) or torch.tensor(0.0))
    model.training_step(batch)
    assert len(calls) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.training_step(batch)
    assert len(calls) == 2


# --- --rng book: replaying the book's run (zoo_core.book_rng) ---------------------------------------------------------

def book_fit(model: Any, loss: Callable[[Any, Sequence[Tensor]], Tensor], optimizer: Any,
             tensors: Sequence[Tensor], batch_size: int, epochs: int, clip: float = 1.0) -> None:
    """Train `model` as d2l 1.0.3's ``Trainer.fit`` does (without its validation pass), the oracle of the ``--rng
    book`` tests: each epoch a new iterator over ``DataLoader(TensorDataset(*tensors), batch_size, shuffle=True)``;
    each batch ``loss(model, batch)``, ``zero_grad``, ``backward``, the book's ``clip_gradients`` (scale every
    gradient by ``clip / norm`` when the global norm exceeds `clip`), ``step``."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*tensors), batch_size, shuffle=True)
    for _ in range(epochs):
        for batch in loader:
            value = loss(model, batch)
            optimizer.zero_grad()
            value.backward()
            params = [p for p in model.parameters() if p.requires_grad]
            norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))
            if norm > clip:
                for p in params:
                    p.grad[:] *= clip / norm
            optimizer.step()


def book_rnn_lm(rnn: Any, vocab_size: int) -> Any:
    """d2l's ``RNNLM`` (§9.6) around `rnn` (an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``), as printed: one-hot inputs and
    an ``nn.LazyLinear`` output layer; (batch, num_steps) token indices -> (batch, num_steps, vocab_size) logits."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RNNLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn
            self.linear = nn.LazyLinear(vocab_size)

        def forward(self, X: Tensor) -> Tensor:
            outputs, _ = self.rnn(F.one_hot(X.T, vocab_size).type(torch.float32))
            return self.linear(outputs).swapaxes(0, 1)

    return RNNLM()


def book_lm_loss(model: Any, batch: Sequence[Tensor]) -> Tensor:
    """The book's language-model loss (d2l ``Classifier.loss``): the mean cross-entropy over every position."""
    import torch.nn.functional as F

    X, Y = batch
    Y_hat = model(X)
    return F.cross_entropy(Y_hat.reshape(-1, Y_hat.shape[-1]), Y.reshape(-1))


def assert_rng_book_replays_the_book(name: str, book_model: Callable[[], Any],
                                     book_loss: Callable[[Any, Sequence[Tensor]], Tensor],
                                     book_optimizer: Callable[[Any], Any], *, seed: int = 7, epochs: int = 2,
                                     tol: float = 1e-4) -> None:
    """`name`'s tiny preset, trained by the `Trainer` with ``rng="book"`` for `epochs`, ends with the parameters the
    book's code ends with from ``torch.manual_seed(seed)``: `book_model()` (the book's model as printed, its
    parameters named as the zoo model's), `book_optimizer(model)` and `book_loss(model, batch)` trained by
    `book_fit` on the same training tensors. Equal within `tol` (rtol and atol: float sums in another order); and
    with ``rng="zoo"`` the zoo ends elsewhere (more than 100 times `tol` away), so the comparison can fail."""
    import torch

    from zoo_core import Trainer, get_data, get_model, get_spec

    preset = get_spec(name).preset("tiny")
    data = get_data(name, preset="tiny")
    torch.manual_seed(seed)
    book = book_model()
    book_fit(book, book_loss, book_optimizer(book), data.train_dataloader().tensors, data.batch_size, epochs,
             clip=preset.train.get("gradient_clip_val") or math.inf)
    expected = dict(book.named_parameters())
    ends = {}
    for rng in ("book", "zoo"):
        model = get_model(name, preset="tiny")
        Trainer(**{**preset.train, "max_epochs": epochs}, device="cpu", seed=seed, rng=rng, progress=False,
                log=lambda line: None).fit(model, data)
        ends[rng] = dict(model.named_parameters())
    assert ends["book"].keys() == expected.keys()
    for param_name, p in ends["book"].items():
        torch.testing.assert_close(p, expected[param_name], rtol=tol, atol=tol, msg=param_name)
    assert max((p - expected[n]).abs().max().item() for n, p in ends["zoo"].items()) > 100 * tol


# --- the contract ---------------------------------------------------------------------------------------------------

def _check_shapes(tensors: Sequence[Any], specs: Sequence[Any], batch_size: int, what: str) -> None:
    """Each tensor has its spec's dtype and shape: fixed dims equal, ``batch`` equal to `batch_size`, and every other
    named dimension the same size wherever it appears."""
    assert len(tensors) == len(specs), f"{what}: {len(tensors)} tensors, the spec declares {len(specs)}"
    named: dict[str, int] = {"batch": batch_size}
    for tensor, spec in zip(tensors, specs):
        assert str(tensor.dtype).removeprefix("torch.") == spec.dtype, f"{what} {spec.name}: dtype {tensor.dtype}"
        assert tensor.dim() == len(spec.shape), f"{what} {spec.name}: shape {tuple(tensor.shape)} vs {spec}"
        for size, dim in zip(tensor.shape, spec.shape):
            expected = named.setdefault(dim, size) if isinstance(dim, str) else dim
            assert size == expected, f"{what} {spec.name}: shape {tuple(tensor.shape)} does not fit {spec}"


def _as_tuple(out: Any) -> tuple:
    return (out,) if not isinstance(out, (tuple, list)) else tuple(out)


class ModelContract:
    """What every registered model must satisfy, run on its `tiny` preset (and the card check on `book`).

    Set `plugin` (a distribution name) to test all of its models, or `models` to list names.
    """

    plugin: str | None = None
    models: Sequence[str] | None = None
    preset: str = "tiny"

    @pytest.fixture(autouse=True)
    def _tiny_models_run_on_one_thread(self, single_thread: Any) -> None:
        """Every contract test runs with `single_thread` (tiny presets)."""

    def _names(self) -> list[str]:
        if self.models is not None:
            return list(self.models)
        from zoo_core import list_models

        return [spec.name for spec in list_models(plugin=self.plugin)]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "model_name" in metafunc.fixturenames:
            metafunc.parametrize("model_name", self._names())

    def _plugins(self) -> list[str]:
        """The distributions under test: `plugin`, or those that registered `models`."""
        if self.plugin is not None:
            return [self.plugin]
        from zoo_core import get_spec

        return sorted({get_spec(name).plugin for name in self._names()})

    def test_plugin_registers_models(self) -> None:
        """The plugin loaded (not broken, not missing) and registered models."""
        if self._names():
            return
        from zoo_core import plugins

        info = next((p for p in plugins.load().plugins if p.name == self.plugin), None)
        if info is None:
            pytest.fail(f"plugin {self.plugin!r} is not installed, or {plugins.ALLOWLIST_ENV} leaves it out "
                        f"(see `zoo plugins`)")
        if info.broken:
            pytest.fail(f"plugin {self.plugin!r} is installed but broken: {info.error} "
                        f"(`zoo --debug plugins` shows the traceback)")
        pytest.fail(f"plugin {self.plugin!r} loads but registers no model")

    def test_plugin_loads_without_heavy_imports(self) -> None:
        """Loading the plugin (its plugin module and its commands, as every ``zoo list`` does) imports no torch,
        numpy or other heavy library: they belong in the modules its builder strings name."""
        import os
        import subprocess
        import sys

        code = ("import sys, zoo_core.plugins as p, zoo_core.cli as c; p.load(); p.register_commands(c.cli); "
                "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
        for dist in self._plugins():
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "ZOO_PLUGINS": dist})
            assert proc.returncode == 0, proc.stderr
            heavy = sorted(set(proc.stdout.split()) & set(HEAVY_MODULES))
            assert not heavy, (f"loading plugin {dist} imports {', '.join(heavy)}: every `zoo list` pays for that "
                               f"(seconds); import them in the model modules the builder strings name, or inside "
                               f"command functions")

    def test_spec_is_complete(self, model_name: str) -> None:
        from zoo_core import get_data_spec, get_spec

        spec = get_spec(model_name)
        if self.plugin is not None:
            assert spec.plugin == self.plugin
        get_data_spec(spec.dataset)  # the dataset it trains on is registered
        from zoo_core import Trainer
        from zoo_core.hparams import accepted_arguments

        trainer_options = accepted_arguments(Trainer) or {}
        for preset_name, preset in spec.presets.items():
            assert preset.num_params is not None, f"preset {preset_name} does not declare num_params"
            unknown = set(preset.train) - set(trainer_options)
            assert not unknown, f"preset {preset_name}: {sorted(unknown)} are not Trainer options"
        assert spec.summary and spec.section.startswith(f"{spec.chapter}.")

    @pytest.mark.parametrize("preset_name", ["tiny", "book"])
    def test_card_matches_built_model(self, model_name: str, preset_name: str) -> None:
        """`zoo info`'s figures (parameter count, input and output specs, every graph's) are those of the built
        model."""
        import torch

        from zoo_core import get_model, get_spec
        from zoo_core.onnx_export import trace_dims

        spec = get_spec(model_name)
        model = get_model(model_name, preset=preset_name).eval()
        assert model.num_params() == spec.preset(preset_name).num_params
        inputs, outputs = spec.io(preset_name)
        for batch_size in (1, 3):
            xs = model.example_inputs(batch_size)
            _check_shapes(xs, inputs, batch_size, "input")
            with torch.no_grad():
                _check_shapes(_as_tuple(model(*xs)), outputs, batch_size, "output")
        # the other graphs (an encoder, a decoding step) as their specs declare them: export takes a graph's fixed
        # sizes from the built model (``--set`` may change them), so it cannot tell a wrong card; this test (and
        # `zoo info`'s warning) can
        for graph in spec.graph_specs(preset_name):
            if graph.name == "model":
                continue  # its specs are the card's inputs and outputs, checked above
            dims = trace_dims(graph)
            args = tuple(model.graph_inputs(graph.name, dims))
            what = f"preset {preset_name}, graph {graph.name}"
            _check_shapes(args, graph.inputs, dims.get("batch", 0), f"{what}: Model.graph_inputs gives input")
            with torch.no_grad():
                outs = _as_tuple(model.graph_module(graph.name).eval()(*args))
            _check_shapes(outs, graph.outputs, dims.get("batch", 0), f"{what}: output")

    def test_training_step_lowers_loss(self, model_name: str) -> None:
        """One optimiser step on a fixed batch lowers that batch's loss; steps return the declared metrics."""
        import torch

        from zoo_core import get_data, get_model

        torch.manual_seed(0)
        model = get_model(model_name, preset=self.preset).train()
        batch = get_data(model_name, preset=self.preset).example_batch()
        out = model.training_step(batch)
        assert set(out) == set(model.metrics)
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.values())

        def loss() -> float:
            torch.manual_seed(1)  # the same dropout masks before and after
            with torch.no_grad():
                return model.training_step(batch)["loss"].item()

        before = loss()
        optimizer = model.configure_optimizers()
        optimizer.zero_grad()
        torch.manual_seed(1)
        model.training_step(batch)["loss"].backward()
        optimizer.step()
        assert loss() < before

    def test_loss_is_a_mean_over_examples(self, model_name: str) -> None:
        """A batch's loss is the mean of its examples' losses (weighted by `Model.batch_weight`): a loss that
        broadcasts labels against outputs of another shape (labels ``(n,)`` against outputs ``(n, 1)`` give an
        ``(n, n)`` matrix of errors) mixes examples and fails here, although its training step still runs."""
        import torch

        from zoo_core import get_data, get_model

        torch.manual_seed(0)
        model = get_model(model_name, preset=self.preset).eval()
        batch = tuple(get_data(model_name, preset=self.preset).example_batch(4))
        n = len(batch[-1])
        if n < 2:
            pytest.skip(f"the data has {n} example: a loss over one example cannot mix examples")
        with torch.no_grad():
            whole = float(model.validation_step(batch)["loss"])
            total = weights = 0.0
            for i in range(n):
                one = tuple(t[i:i + 1] for t in batch)
                weight = float(model.batch_weight(one))
                if weight:  # an example with no target tokens has no loss of its own
                    total += weight * float(model.validation_step(one)["loss"])
                    weights += weight
            outputs = model(*batch[:-1])
        shapes = (f"outputs {tuple(outputs.shape)}" if isinstance(outputs, torch.Tensor) else "outputs") + (
            f", labels {tuple(batch[-1].shape)}")
        assert math.isclose(whole, total / weights, rel_tol=1e-4, abs_tol=1e-6), (
            f"the loss of a batch of {n} is {whole:.6g}, the mean of its examples' losses {total / weights:.6g} "
            f"({shapes}): does the loss broadcast labels against outputs of another shape?")

    def test_trains_with_the_trainer(self, model_name: str, tmp_path: Path) -> None:
        """A few steps through the shared Trainer: finite metrics, a checkpoint and metrics.jsonl."""
        import math

        from zoo_core import Trainer, get_data, get_model

        model = get_model(model_name, preset=self.preset)
        data = get_data(model_name, preset=self.preset)
        result = Trainer(max_epochs=3, max_steps=3, device="cpu", run_dir=tmp_path, progress=False,
                         log=lambda line: None).fit(model, data)
        assert result.steps == 3
        assert {f"val_{m}" for m in model.metrics} <= set(result.metrics)
        assert all(math.isfinite(v) for v in result.metrics.values())
        assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
        assert (tmp_path / "metrics.jsonl").is_file()

    def test_safetensors_roundtrip(self, model_name: str, tmp_path: Path) -> None:
        """Saved weights loaded into a fresh (and perturbed) build give identical outputs."""
        import torch

        from zoo_core import build_model, get_model, get_spec, load_weights, save_weights

        model = get_model(model_name, preset=self.preset).eval()
        save_weights(model, tmp_path / "model.safetensors")
        other = build_model(get_spec(model_name), json.loads(json.dumps(model.hparams))).eval()
        with torch.no_grad():
            for p in other.parameters():
                p.add_(1.0)
        load_weights(other, tmp_path / "model.safetensors")
        xs = model.example_inputs(3)
        with torch.no_grad():
            for a, b in zip(_as_tuple(model(*xs)), _as_tuple(other(*xs))):
                assert torch.equal(a, b)

    def test_state_dict_keys_stable(self, model_name: str) -> None:
        """Two builds (one from JSON-round-tripped hparams) have the same state-dict keys, shapes and dtypes."""
        from zoo_core import build_model, get_model, get_spec

        first = get_model(model_name, preset=self.preset)
        second = build_model(get_spec(model_name), json.loads(json.dumps(first.hparams)))

        def layout(model: Any) -> list:
            return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]

        assert layout(first) == layout(second)
        assert layout(first), "the model has an empty state dict"

    def test_onnx_export_and_parity(self, model_name: str, tmp_path: Path) -> None:
        """Every graph of the model (`ModelSpec.graphs`; by default its forward pass) exports, passes onnx.checker,
        keeps the spec's names and dynamic dimensions, and ONNX Runtime (CPU) matches PyTorch at sizes other than the
        traced ones (batch and sequence length)."""
        import torch

        from zoo_core import check_parity, get_model, get_spec
        from zoo_core.onnx_export import export_graph, parity_dims, trace_dims

        spec = get_spec(model_name)
        model = get_model(model_name, preset=self.preset)
        for graph in spec.graph_specs(self.preset):
            info = export_graph(model, graph, tmp_path / graph.file, exporter=spec.onnx_exporter)
            declared_inputs = [t for t in graph.inputs if t.name in {i["name"] for i in info["inputs"]}]
            assert [i["name"] for i in info["inputs"]] == [s.name for s in declared_inputs]  # unused ones may go
            assert [o["name"] for o in info["outputs"]] == [s.name for s in graph.outputs]
            for graph_io, declared in zip(info["inputs"] + info["outputs"], declared_inputs + list(graph.outputs)):
                dynamic = [isinstance(d, str) for d in graph_io["shape"]]
                assert dynamic == [isinstance(d, str) for d in declared.shape], f"{graph_io} vs {declared}"
            torch.manual_seed(0)
            dims = parity_dims(graph)
            assert all(dims[d] != size for d, size in trace_dims(graph).items())
            xs = model.graph_inputs(graph.name, dims)
            result = check_parity(model.graph_module(graph.name), tmp_path / graph.file, xs,
                                  atol=spec.parity.atol, rtol=spec.parity.rtol, dims=dims,
                                  input_names=[t.name for t in graph.inputs])
            assert result.passed, f"{graph.file}: {result}"

    def test_generation_on_onnx_runtime_matches_pytorch(self, model_name: str, tmp_path: Path) -> None:
        """A model with a step graph generates the same tokens, greedy and with beam search, from its exported graphs
        on ONNX Runtime as from PyTorch (the decoding loop of `zoo_core.decoding` drives both)."""
        import torch

        from zoo_core import get_model, get_spec
        from zoo_core.decoding import OnnxRunner, TorchRunner, beam_search, greedy
        from zoo_core.onnx_export import export_graph, parity_dims
        from zoo_core.predict import GENERATION_TASKS

        spec = get_spec(model_name)
        graphs = [g for g in spec.graph_specs(self.preset) if g.role in ("encoder", "step")]
        if not any(g.role == "step" for g in graphs):
            assert spec.task not in GENERATION_TASKS, (
                f"a {spec.task} model declares no step graph, so zoo predict cannot decode with it: declare its "
                f"graphs in the spec's presets (Preset(graphs=...), a graph of role 'step'; zoo_rnn.graphs.lm_graphs "
                f"builds a language model's)")
            pytest.skip("no step graph: the model does not generate")
        model = get_model(model_name, preset=self.preset).eval()
        files = {}
        for graph in graphs:
            export_graph(model, graph, tmp_path / graph.file, exporter=spec.onnx_exporter)
            files[graph.name] = tmp_path / graph.file
        runners = TorchRunner(model, graphs), OnnxRunner(files, graphs)
        torch.manual_seed(0)
        encoder = next((g for g in graphs if g.role == "encoder"), None)
        batch = 3
        inputs = model.graph_inputs(encoder.name, parity_dims(encoder)) if encoder is not None else ()
        vocab = runners[0].vocab_size or 2
        first = torch.randint(0, vocab, (batch,))
        for search in (lambda r, s: greedy(r, s, first, max_len=6),
                       lambda r, s: beam_search(r, s, first, max_len=6, beam_size=3)):
            torch_tokens, onnx_tokens = (
                search(r, r.start(*inputs) if inputs else r.start(batch_size=batch)) for r in runners)
            assert torch_tokens == onnx_tokens
