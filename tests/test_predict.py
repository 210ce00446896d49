"""`zoo predict` end to end on real runs (trained and exported in tmp folders), through the CLI: image classifiers
(the tiny `softmax`), and two small text models registered here (a character language model on the synthetic Time
Machine, a translator on the synthetic fra-eng pairs) until chapters 9 and 10's models land. PyTorch and ONNX
Runtime give the same answers; each bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from zoo_core import GraphSpec, Model, ModelSpec, Preset, plugins, workflows
from zoo_core.data.fashion_mnist import LABELS
from zoo_core.decoding import TorchRunner, beam_search, continue_prefixes, greedy
from zoo_core.predict import Predictions, load_image


def quiet(line: str) -> None:
    pass


# --- two small text models ------------------------------------------------------------------------------------------

class TinyLM(Model):
    """A tanh RNN language model: ``forward(X (batch, seq)) -> logits (batch, seq, V)`` over its ``step`` graph."""

    unit = "tokens"

    def __init__(self, vocab_size: int = 28, hidden: int = 8, lr: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(vocab_size, hidden)
        self.W = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def advance(self, tokens: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """The step graph: (tokens (batch,), h (batch, hidden)) -> (logits (batch, V), next h)."""
        h = torch.tanh(self.embedding(tokens) + self.W(h))
        return self.out(h), h

    def forward(self, X: Tensor) -> Tensor:
        h, outputs = torch.zeros(len(X), self.W.in_features), []
        for t in range(X.shape[1]):
            logits, h = self.advance(X[:, t], h)
            outputs.append(logits)
        return torch.stack(outputs, 1)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1))

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        return (torch.randint(0, self.out.out_features, (batch_size, 5)),)

    def graph_module(self, name: str) -> nn.Module:
        return _Bound(self, self.advance) if name == "step" else super().graph_module(name)

    def graph_inputs(self, name, dims):
        if name == "model":
            return super().graph_inputs(name, dims)
        return torch.randint(0, self.out.out_features, (dims["batch"],)), torch.randn(dims["batch"], self.W.in_features)


class TinyTranslator(Model):
    """An encoder (mean of the source embeddings) and a tanh RNN decoder that sees that context at every step."""

    unit = "tokens"

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, hidden: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.src_embedding = nn.Embedding(src_vocab_size, hidden)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, hidden)
        self.W = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, tgt_vocab_size)

    def encode(self, src: Tensor, src_valid_len: Tensor) -> tuple[Tensor, Tensor]:
        mask = (torch.arange(src.shape[1]) < src_valid_len[:, None]).float()
        context = (self.src_embedding(src) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return context, torch.tanh(context)

    def decode_step(self, tokens: Tensor, context: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.tgt_embedding(tokens) + self.W(h) + context)
        return self.out(h), h

    def forward(self, src: Tensor, tgt_in: Tensor, src_valid_len: Tensor) -> Tensor:
        context, h = self.encode(src, src_valid_len)
        outputs = []
        for t in range(tgt_in.shape[1]):
            logits, h = self.decode_step(tgt_in[:, t], context, h)
            outputs.append(logits)
        return torch.stack(outputs, 1)

    def loss(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        src = torch.randint(0, self.src_embedding.num_embeddings, (batch_size, 4))
        return src, torch.randint(0, self.out.out_features, (batch_size, 4)), torch.full((batch_size,), 4)

    def graph_module(self, name: str) -> nn.Module:
        return {"encoder": lambda: _Bound(self, self.encode), "decoder_step": lambda: _Bound(self, self.decode_step)
                }.get(name, lambda: super(TinyTranslator, self).graph_module(name))()

    def graph_inputs(self, name, dims):
        b, hidden = dims["batch"], self.W.in_features
        if name == "model":
            return super().graph_inputs(name, dims)
        if name == "encoder":
            return (torch.randint(0, self.src_embedding.num_embeddings, (b, dims["seq"])),
                    torch.randint(1, dims["seq"] + 1, (b,)))
        return torch.randint(0, self.out.out_features, (b,)), torch.randn(b, hidden), torch.randn(b, hidden)


class TinyAttentionTranslator(TinyTranslator):
    """`TinyTranslator` that can show its attention (what `zoo predict --attention` draws): each target position's
    softmax over the source embeddings' dot products with its own embedding, valid source tokens only."""

    def attention_maps(self, src: Tensor, src_valid_len: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        assert src.shape[1] == 6  # the padded source, as translated (TINY_PAIRS' num_steps)
        src = src[:, :int(src_valid_len[0])]  # this model attends to the valid tokens only
        scores = self.tgt_embedding(tgt_in[0]) @ self.src_embedding(src[0]).T  # (n, m)
        self_scores = self.src_embedding(src[0]) @ self.src_embedding(src[0]).T
        return {"decoder cross-attention": torch.softmax(scores, -1)[None].detach(),
                "encoder self-attention": torch.stack([torch.softmax(self_scores, -1)] * 2).detach()}


class _Bound(nn.Module):
    """A graph module whose forward is a method of the model (its signature is what torch.export reads)."""

    def __init__(self, model: nn.Module, method) -> None:
        super().__init__()
        self.model = model
        self.forward = method


TINY_TEXT = {"batch_size": 32, "num_steps": 8, "num_train": 256, "num_val": 64, "synthetic": True}
TINY_PAIRS = {"batch_size": 32, "num_steps": 6, "num_train": 128, "num_val": 32, "synthetic": True}


def text_specs() -> list[ModelSpec]:
    from zoo_core.data.fra_eng import FraEng

    pairs = FraEng(**TINY_PAIRS)
    src_v, tgt_v = len(pairs.src_vocab), len(pairs.tgt_vocab)
    lm_graphs = (GraphSpec("step", ["tokens: int64[batch]", "h: float32[batch, 8]"],
                           ["logits: float32[batch, 28]", "next_h: float32[batch, 8]"], role="step", state=("h",)),)
    mt_graphs = (
        GraphSpec("encoder", ["src: int64[batch, seq]", "src_valid_len: int64[batch]"],
                  ["context: float32[batch, 8]", "h: float32[batch, 8]"], role="encoder"),
        GraphSpec("decoder_step", ["tokens: int64[batch]", "context: float32[batch, 8]", "h: float32[batch, 8]"],
                  [f"logits: float32[batch, {tgt_v}]", "next_h: float32[batch, 8]"], role="step", state=("h",)))
    lm = ModelSpec("test-lm", f"{__name__}:TinyLM", 99, "99.1", "a tiny RNN language model", "language-modeling",
                   "time-machine", {p: Preset(model={"hidden": 8}, data=TINY_TEXT, train={"max_epochs": 1})
                                    for p in ("book", "tiny")},
                   ["X: int64[batch, seq]"], ["logits: float32[batch, seq, 28]"], graphs=lm_graphs)
    mt = ModelSpec("test-mt", f"{__name__}:TinyTranslator", 99, "99.2", "a tiny translator", "translation",
                   "fra-eng", {p: Preset(model={"hidden": 8}, data=TINY_PAIRS, train={"max_epochs": 1})
                               for p in ("book", "tiny")},
                   ["src: int64[batch, seq]", "tgt_in: int64[batch, seq]", "src_valid_len: int64[batch]"],
                   [f"logits: float32[batch, seq, {tgt_v}]"], graphs=mt_graphs)
    mt_attention = ModelSpec("test-mt-attn", f"{__name__}:TinyAttentionTranslator", 99, "99.3", "a tiny translator "
                             "with attention", "translation", "fra-eng", mt.presets, mt.inputs, mt.outputs,
                             graphs=mt_graphs)
    assert src_v > 10
    return [lm, mt, mt_attention]


def train(name: str, out, export: bool = True, max_steps: int = 2) -> str:
    run_dir = workflows.train(name, preset="tiny", max_steps=max_steps, out=out, device="cpu", log=quiet)
    if export:
        workflows.export(name, run=str(run_dir), out=out, log=quiet)
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of softmax, test-lm and test-mt, exported; and one softmax run without an export."""
    plugins.reset()
    registry = plugins.load().registry
    for spec in text_specs():
        registry.add_model(spec, "test-predict")
    out = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    made = {"softmax": train("softmax", out), "test-lm": train("test-lm", out, max_steps=20),
            "test-mt": train("test-mt", out, max_steps=30),
            "test-mt-attn": train("test-mt-attn", out, export=False, max_steps=2),
            "unexported": train("softmax", tmp_path_factory.mktemp("unexported"), export=False)}
    yield made
    plugins.reset()  # forget the test models


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from torchvision.io import encode_jpeg, write_png

    folder = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    grey = (torch.rand(1, 28, 28, generator=g) * 255).to(torch.uint8)
    write_png(grey, str(folder / "grey.png"))
    colour = (torch.rand(3, 40, 30, generator=g) * 255).to(torch.uint8)
    write_png(colour, str(folder / "colour.png"))
    (folder / "photo.jpg").write_bytes(encode_jpeg(colour, quality=95).numpy().tobytes())
    (folder / "notes.png").write_text("not an image\n")
    return {"grey": str(folder / "grey.png"), "colour": str(folder / "colour.png"), "jpeg": str(folder / "photo.jpg"),
            "text": str(folder / "notes.png"), "missing": str(folder / "nope.png"), "grey_pixels": grey}


def as_json(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- images -------------------------------------------------------------------------------------------------------------

def test_images_become_the_models_input(images):
    x = load_image(images["grey"], 1, (28, 28))
    assert x.dtype == torch.float32 and torch.equal(x, images["grey_pixels"].float() / 255)  # /255, as the data
    colour = load_image(images["colour"], 1, (28, 28))
    assert colour.shape == (1, 28, 28) and 0 <= colour.min() and colour.max() <= 1
    assert load_image(images["colour"], 3, (None, None)).shape == (3, 40, 30)
    assert load_image(images["grey"], 3, (56, 56)).shape == (3, 56, 56)  # grey to RGB, upscaled


def test_a_classifier_gives_its_top_5_classes_the_same_on_both_runtimes(runs, images, cli):
    inputs = [images["grey"], images["colour"], images["jpeg"]]
    got = as_json(cli("predict", "softmax", *inputs, "--run", runs["softmax"], "--json"))
    assert got["task"] == "classification" and got["runtime"] == "torch" and got["run"] == runs["softmax"]
    model = workflows.load_run_model(*workflows.finished_run("softmax", runs["softmax"], "unused")).eval()
    X = torch.stack([load_image(p, 1, (28, 28)) for p in inputs])
    with torch.no_grad():
        probs = model(X).softmax(-1)
    for result, p in zip(got["results"], probs):
        top = result["top"]
        assert len(top) == 5 and [c["index"] for c in top] == p.topk(5).indices.tolist()
        assert [c["label"] for c in top] == [LABELS[c["index"]] for c in top]
        assert [c["probability"] for c in top] == pytest.approx(p.topk(5).values.tolist(), abs=1e-6)
    onnx = as_json(cli("predict", "softmax", *inputs, "--run", runs["softmax"], "--json", "--runtime", "onnx"))
    for a, b in zip(got["results"], onnx["results"]):
        assert [c["label"] for c in a["top"]] == [c["label"] for c in b["top"]]
        assert [c["probability"] for c in a["top"]] == pytest.approx([c["probability"] for c in b["top"]], abs=1e-5)
    text = cli("predict", "softmax", images["grey"], "--run", runs["softmax"])
    lines = text.stdout.splitlines()
    assert lines[0] == images["grey"] and len(lines) == 6 and lines[1].strip().endswith(got["results"][0]["top"][0]["label"])


@pytest.mark.parametrize("args, fragments", [
    (["{text}"], ["cannot read image", "notes.png", "PNG, JPEG, WebP or GIF", "Unsupported image file"]),
    (["{missing}"], ["cannot read image", "nope.png", "No such file"]),
    ([""], ["empty input"]),
    (["{grey}", "--beam", "2"], ["--beam", "does not apply to a classification model"]),
    (["{grey}", "--num-preds", "5"], ["--num-preds", "classification"]),
    (["{grey}", "--beam", "0"], ["--beam", "0 is not in the range"]),
])
def test_bad_image_inputs_are_one_line(runs, images, cli, args, fragments):
    args = [a.format(**images) for a in args]
    cli("predict", "softmax", *args, "--run", runs["softmax"]).assert_one_line_error(*fragments)


def test_an_undecodable_image_gives_torchvisions_reason_without_its_source_path(runs, images, cli):
    result = cli("predict", "softmax", images["text"], "--run", runs["softmax"])
    result.assert_one_line_error("Unsupported image file")
    assert ".cpp" not in result.stderr and "For avif" not in result.stderr, result.stderr


def test_onnx_runtime_needs_an_export(runs, images, cli):
    result = cli("predict", "softmax", images["grey"], "--run", runs["unexported"], "--runtime", "onnx")
    result.assert_one_line_error("has no ONNX export", "zoo export softmax --onnx", "--runtime torch")
    assert cli("predict", "softmax", images["grey"], "--run", runs["unexported"]).returncode == 0


def test_a_damaged_file_is_refused(runs, images, cli, tmp_path):
    import shutil

    copy = tmp_path / "softmax" / "damaged"
    shutil.copytree(runs["softmax"], copy)
    (copy / "model.onnx").write_bytes(b"garbage")
    cli("predict", "softmax", images["grey"], "--run", str(copy), "--runtime", "onnx").assert_one_line_error(
        "is damaged", "model.onnx has sha256")


# --- language models ---------------------------------------------------------------------------------------------------

def test_a_language_model_continues_each_prefix_the_same_on_both_runtimes(runs, cli):
    prefixes = ["time traveller", "It has", "x"]
    got = as_json(cli("predict", "test-lm", *prefixes, "--run", runs["test-lm"], "--json"))
    assert got["task"] == "language-modeling" and got["beam"] == 1
    results = got["results"]
    assert [r["prefix"] for r in results] == ["time traveller", "it has", "x"]  # the training text's preprocessing
    assert all(len(r["continuation"]) == 20 and r["text"] == r["prefix"] + r["continuation"] for r in results)
    # what the decoding core gives on the run's model (the book's predict: warm up on the prefix, then greedy)
    spec, run_dir, manifest = workflows.finished_run("test-lm", runs["test-lm"], "unused")
    model = workflows.load_run_model(spec, run_dir, manifest)
    from zoo_core.text import Vocab

    vocab = Vocab.load(run_dir / "vocab.json")
    runner = TorchRunner(model, workflows.run_graphs(spec, manifest))
    expected = continue_prefixes(runner, [vocab[list(r["prefix"])] for r in results], 20)
    assert [r["tokens"] for r in results] == expected
    for beam in ("1", "3"):
        a = as_json(cli("predict", "test-lm", *prefixes, "--run", runs["test-lm"], "--json", "--beam", beam,
                        "--num-preds", "12"))
        b = as_json(cli("predict", "test-lm", *prefixes, "--run", runs["test-lm"], "--json", "--beam", beam,
                        "--num-preds", "12", "--runtime", "onnx"))
        assert [r["tokens"] for r in a["results"]] == [r["tokens"] for r in b["results"]]
        assert all(len(r["tokens"]) == 12 for r in a["results"])
    text = cli("predict", "test-lm", "time traveller", "--run", runs["test-lm"], "--num-preds", "5")
    assert text.stdout.splitlines() == [results[0]["prefix"] + results[0]["continuation"][:5]]
    assert not [line for line in text.stderr_lines if "note:" in line]  # read as typed: nothing to say


def test_a_prefix_changed_by_the_preprocessing_is_said_once(runs, cli):
    result = cli("predict", "test-lm", "It has", "time traveller", "Here, 12 o'clock", "--run", runs["test-lm"])
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3
    notes = [line for line in result.stderr_lines if "note:" in line]
    assert len(notes) == 1 and "2 prefixes read as the training text was preprocessed" in notes[0]
    assert "'It has' as 'it has'" in notes[0] and "\"Here, 12 o'clock\" as 'here o clock'" in notes[0]
    assert "preprocessed (the book's preprocessing: every run of non-letters" in notes[0]  # time-machine's, in a sentence


@pytest.mark.parametrize("args, fragments", [
    ([""], ["empty prefix"]),
    (["123 !!"], ["prefix '123 !!' is blank once preprocessed", "reads as ' '"]),
    (["it", "--reference", "il"], ["--reference", "does not apply to a language-modeling model"]),
    (["it", "--beam", "0"], ["--beam", "0 is not in the range"]),
    (["it", "--num-preds", "0"], ["--num-preds", "0 is not in the range"]),
])
def test_bad_prefixes_are_one_line(runs, cli, args, fragments):
    cli("predict", "test-lm", *args, "--run", runs["test-lm"]).assert_one_line_error(*fragments)


# --- translation ---------------------------------------------------------------------------------------------------------

SENTENCES = ["I go home.", "You see the cat!", "we run now ."]


def test_translation_is_the_same_on_both_runtimes_greedy_and_beam(runs, cli):
    spec, run_dir, manifest = workflows.finished_run("test-mt", runs["test-mt"], "unused")
    for beam in ("1", "2", "4"):
        a = as_json(cli("predict", "test-mt", *SENTENCES, "--run", runs["test-mt"], "--json", "--beam", beam))
        b = as_json(cli("predict", "test-mt", *SENTENCES, "--run", runs["test-mt"], "--json", "--beam", beam,
                        "--runtime", "onnx"))
        assert [r["translation"] for r in a["results"]] == [r["translation"] for r in b["results"]]
        assert a["beam"] == int(beam) and all(len(r["tokens"]) <= 6 for r in a["results"])
    # what the decoding core gives on the run's model, from the book's encoding of the sentences
    from zoo_core.data.fra_eng import FraEng
    from zoo_core.text import Vocab

    model = workflows.load_run_model(spec, run_dir, manifest)
    src_vocab, tgt_vocab = Vocab.load(run_dir / "src_vocab.json"), Vocab.load(run_dir / "tgt_vocab.json")
    src, valid = FraEng.encode_source(SENTENCES, src_vocab, 6)
    runner = TorchRunner(model, workflows.run_graphs(spec, manifest))
    first = torch.full((3,), tgt_vocab["<bos>"])
    expected = beam_search(runner, runner.start(src, valid), first, 6, 4, eos=tgt_vocab["<eos>"])
    assert [r["tokens"] for r in a["results"]] == expected
    greedy_expected = greedy(runner, runner.start(src, valid), first, 6, eos=tgt_vocab["<eos>"])
    got = as_json(cli("predict", "test-mt", *SENTENCES, "--run", runs["test-mt"], "--json"))
    assert [r["tokens"] for r in got["results"]] == greedy_expected


def test_a_reference_gives_the_books_bleu(runs, cli):
    got = as_json(cli("predict", "test-mt", *SENTENCES[:2], "--run", runs["test-mt"], "--json"))
    own = [r["translation"] for r in got["results"]]
    refs = [own[0] or "va !", "ne pas ne pas ne pas"]  # a tiny model may say nothing; an empty reference is refused
    scored = as_json(cli("predict", "test-mt", *SENTENCES[:2], "--run", runs["test-mt"], "--json",
                         "--reference", refs[0], "--reference", refs[1]))["results"]
    from zoo_core.seq_metrics import bleu

    assert scored[0]["bleu"] == (1.0 if own[0] else 0.0)
    assert scored[1]["bleu"] == pytest.approx(bleu(own[1].split(), refs[1].split(), k=2))
    assert scored[1]["reference"] == refs[1]
    text = cli("predict", "test-mt", SENTENCES[0], "--run", runs["test-mt"], "--reference", refs[0])
    assert text.stdout.strip() == f"{SENTENCES[0]} => {own[0]}  (bleu {scored[0]['bleu']:.3f})"
    cli("predict", "test-mt", *SENTENCES[:2], "--run", runs["test-mt"], "--reference", "x").assert_one_line_error(
        "1 references for 2 sentences")
    cli("predict", "test-mt", *SENTENCES[:2], "--run", runs["test-mt"], "--reference", "x", "--reference", " ",
        ).assert_one_line_error("empty --reference (number 2)")


def test_unknown_words_are_read_as_unk_and_said_once(runs, cli):
    result = cli("predict", "test-mt", "i see the zebra .", "the zebra and okapi !", "--run", runs["test-mt"])
    assert result.returncode == 0
    notes = [line for line in result.stderr_lines if "note:" in line]
    assert len(notes) == 1 and "4 words not in the run's vocabulary, read as <unk>" in notes[0]
    assert "'the', 'zebra', 'and', 'okapi'" in notes[0]
    assert len(result.stdout.splitlines()) == 2


def test_the_answering_run_is_named_on_stderr_and_a_tiny_one_flagged(runs, cli):
    """stdout keeps the answers only; stderr says which run gave them (the newest finished one by default), and
    warns that a tiny-preset run's answers are noise."""
    result = cli("predict", "test-mt", SENTENCES[0], "--run", runs["test-mt"])
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert result.stderr_lines == [f"zoo: using test-mt run {runs['test-mt']} (preset tiny, a size for tests: expect "
                                   "noise; `zoo train test-mt` trains the book's preset)"]
    assert as_json(cli("predict", "test-mt", SENTENCES[0], "--run", runs["test-mt"], "--json"))["preset"] == "tiny"
    book = Predictions("transformer", Path("artifacts/transformer/x"), "translation", "onnx", [], 4, "book")
    assert book.source() == "using transformer run artifacts/transformer/x"


@pytest.mark.parametrize("args, fragments", [
    (["   "], ["empty sentence"]),
    (["i go home and you see the cat now ."], ["has 11 tokens with <eos>", "more than the 6 (num_steps)",
                                               "shorten it"]),
    (["i " * 500 + "."], ["has 502 tokens with <eos>", "i i...' has"]),  # a long input is cut in the message
    (["i go", "--num-preds", "3"], ["--num-preds", "translation"]),
])
def test_bad_sentences_are_one_line(runs, cli, args, fragments):
    cli("predict", "test-mt", *args, "--run", runs["test-mt"]).assert_one_line_error(*fragments)


def test_a_sentence_of_exactly_num_steps_tokens_is_translated(runs, cli):
    got = as_json(cli("predict", "test-mt", "i go home now .", "--run", runs["test-mt"], "--json"))  # 5 + <eos>
    assert len(got["results"]) == 1


def test_a_model_of_another_task_is_one_line(runs, cli, tmp_path):
    run = train("linreg", tmp_path, export=False, max_steps=1)
    cli("predict", "linreg", "1", "--run", run).assert_one_line_error("does not handle regression models")


# --- attention heatmaps -----------------------------------------------------------------------------------------------

def test_attention_heatmaps_are_drawn_for_each_sentence(runs, cli, tmp_path):
    path = tmp_path / "heat.png"
    got = as_json(cli("predict", "test-mt-attn", *SENTENCES[:2], "--run", runs["test-mt-attn"], "--json",
                      "--attention", str(path)))
    files = [r["attention"] for r in got["results"]]
    assert files == [str(tmp_path / "heat-1.png"), str(tmp_path / "heat-2.png")]
    for f in files:
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    text = cli("predict", "test-mt-attn", SENTENCES[0], "--run", runs["test-mt-attn"], "--attention", str(path))
    assert text.stdout.splitlines()[1] == f"  attention heatmaps: {path}" and path.exists()


@pytest.mark.parametrize("model, args, fragments", [
    ("test-mt", ["--attention", "a.png"], ["test-mt has no attention to draw", "bahdanau, transformer"]),
    ("test-lm", ["--attention", "a.png"], ["--attention does not apply to a language-modeling model"]),
    ("test-mt-attn", ["--attention", "a.txt"], ["--attention a.txt: name an image file ending in .png"]),
    ("test-mt-attn", ["--attention", "no-such-folder/a.png"], ["the folder no-such-folder does not exist"]),
])
def test_bad_attention_requests_are_one_line(runs, cli, model, args, fragments):
    cli("predict", model, "i go .", "--run", runs[model], *args).assert_one_line_error(*fragments)


def test_an_option_the_model_cannot_take_is_refused_before_looking_for_a_run(cli, tmp_path):
    """No run of vit is needed to learn that it draws no attention heatmaps (else: "train one", a long training,
    then the refusal)."""
    cli("predict", "vit", "x.png", "--attention", "a.png", "--out", str(tmp_path)).assert_one_line_error(
        "--attention does not apply to a classification model")


def test_heatmaps_check_their_sizes_against_the_tokens(tmp_path):
    from zoo_core.attention_plot import axes_tokens, crop_source, save_heatmaps
    from zoo_core.errors import ZooError

    assert axes_tokens("decoder cross-attention, block 1", ["a", "b"], ["x"]) == (["x"], ["a", "b"])
    assert axes_tokens("encoder self-attention, block 1", ["a", "b"], ["x"]) == (["a", "b"], ["a", "b"])
    assert axes_tokens("decoder self-attention, block 1", ["a", "b"], ["x"]) == (["x"], ["x"])
    maps = {"encoder self-attention": torch.rand(2, 5, 5), "decoder cross-attention": torch.rand(2, 3, 5),
            "decoder self-attention": torch.rand(2, 5, 5), "bahdanau cross": torch.rand(1, 3, 2)}
    cropped = crop_source(maps, num_src=5, valid_len=2)
    assert {k: tuple(v.shape) for k, v in cropped.items()} == {
        "encoder self-attention": (2, 2, 2), "decoder cross-attention": (2, 3, 2),
        "decoder self-attention": (2, 5, 5), "bahdanau cross": (1, 3, 2)}
    assert torch.equal(cropped["decoder cross-attention"], maps["decoder cross-attention"][:, :, :2])
    with pytest.raises(ZooError, match=r"is \(2, 3\) \(queries, keys\), but there are 1 query and 2 key tokens"):
        save_heatmaps(tmp_path / "x.png", {"decoder cross-attention": torch.rand(1, 2, 3)}, ["a", "b"], ["x"])
    with pytest.raises(ZooError, match="no attention maps"):
        save_heatmaps(tmp_path / "x.png", {}, ["a"], ["x"])
    assert not list(tmp_path.iterdir())


def test_heatmaps_keep_every_label_inside_the_image(tmp_path):
    """Nothing is cut at the image's edges: the colour bars' labels ("1.00") and long tick labels ("<eos>") once
    ran past them (a fresh user's report); the outermost pixels are the white background all round."""
    import matplotlib.image

    from zoo_core.attention_plot import save_heatmaps

    maps = {f"encoder self-attention, block {i}": torch.rand(4, 3, 3).softmax(-1) for i in (1, 2)}
    maps["decoder cross-attention, block 1"] = torch.rand(4, 3, 3).softmax(-1)
    path = save_heatmaps(tmp_path / "maps.png", maps, ["go", ".", "<eos>"], ["<bos>", "va", "!"], title="weights")
    image = matplotlib.image.imread(path)[..., :3]
    for edge in (image[:, :3], image[:, -3:], image[:3], image[-3:]):
        assert edge.min() == 1.0


def test_a_model_refusing_its_input_is_one_line(runs, cli, monkeypatch):
    """A model's ValueError about its input (gpt-mini: more positions than its positional table) is the user's."""
    from zoo_core import decoding

    def too_long(self, tokens, state):
        raise ValueError("a sequence of 513 positions is longer than the positional encoding's table (512)")

    monkeypatch.setattr(decoding.TorchRunner, "step", too_long)
    cli("predict", "test-lm", "time", "--run", runs["test-lm"]).assert_one_line_error(
        "test-lm: a sequence of 513 positions is longer than the positional encoding's table (512)")
