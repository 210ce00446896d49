"""`zoo predict`: a finished run answers new inputs, on PyTorch or on its exported ONNX graphs.

What a run is asked depends on its model's task (`ModelSpec.task`):

- ``classification`` of images: PNG, JPEG, WebP or GIF files, decoded by torchvision, converted to the channels and
  size of the model's input spec (``X: float32[batch, C, H, W]``; grey or RGB, a bilinear antialiased resize),
  pixels divided by 255 as the data module does (Fashion-MNIST's ``ToTensor``); the top-5 classes with their
  probabilities, named by the data class's ``labels``.
- ``language-modeling``: each prefix is continued (d2l §9.5.4's ``predict``): it goes through the training text's
  preprocessing and tokenisation (`TimeMachine.preprocess`: lower-case letters and spaces; so "Time" reads as
  "time", where the book would map "T" to ``<unk>``), the state warms up on it, then ``num_preds`` tokens follow,
  greedy by default (`zoo_core.decoding.continue_prefixes`). A prefix the preprocessing changes is said in a note;
  one it leaves blank (``"123 !!"``) is refused.
- ``translation``: each sentence is encoded as the book's ``build`` does (`FraEng.encode_source`) and translated
  greedily or with beam search, at most ``num_steps`` tokens (the data's); with references, the book's BLEU (k=2).
  A sentence longer than ``num_steps`` tokens (``<eos>`` included) is refused rather than cut: the book's ``build``
  would trim it, silently dropping its end and its ``<eos>``, and translate another sentence than the one given.
  With ``attention=FILE``, a model with attention (``attention_maps``, `zoo_core.attention_plot`) also draws the
  weights it gave each sentence and its translation (PyTorch, the run's weights), one image per sentence.

Words or characters outside the run's vocabulary are read as ``<unk>`` (the book's rule) and said once, in a note.
Every file read (weights, vocabularies, ONNX graphs) is checked against the sha256 the manifest records.
``runtime="onnx"`` uses the run's exported graphs (``zoo export NAME --onnx``) and gives the same answer.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_core.artifacts import check_hashes
from zoo_core.errors import ZooError
from zoo_core.registry import ModelSpec, data_class, get_data_spec, get_spec
from zoo_core.workflows import WEIGHTS, finished_run, load_run_model, run_graphs

TASKS = ("classification", "language-modeling", "translation")
GENERATION_TASKS = ("language-modeling", "translation")  # decoded through a step graph (`zoo_core.decoding`)
RUNTIMES = ("torch", "onnx")
TOP_K = 5
NUM_PREDS = 20  # the book's continuation length (d2l §9.5: ``predict('it has', 20, ...)``)
BLEU_K = 2      # the book's (d2l §10.7.6)

Note = Callable[[str], None]


def _stderr_note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


@dataclass
class Predictions:
    """What `predict` answers: one result (a dict) per input, in order, and the run that gave them."""

    model: str
    run_dir: Path
    task: str
    runtime: str
    results: list[dict[str, Any]]
    beam: int | None = None
    preset: str | None = None  # the preset the run trained

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "run": str(self.run_dir), "preset": self.preset, "task": self.task,
                "runtime": self.runtime, **({"beam": self.beam} if self.beam is not None else {}),
                "results": self.results}

    def source(self) -> str:
        """Which run answered, as ``zoo predict`` says it on stderr; a tiny-preset run is flagged, since its
        answers are noise (a size for contract tests, not for learning)."""
        line = f"using {self.model} run {self.run_dir}"
        if self.preset == "tiny":
            line += f" (preset tiny, a size for tests: expect noise; `zoo train {self.model}` trains the book's preset)"
        return line

    def lines(self) -> list[str]:
        """The results as ``zoo predict`` prints them."""
        out = []
        for r in self.results:
            if self.task == "classification":
                out.append(r["input"])
                out += [f"  {c['probability']:7.2%}  {c['label']}" for c in r["top"]]
            elif self.task == "language-modeling":
                out.append(r["text"])
            else:
                out.append(f"{r['input']} => {r['translation']}"
                           + (f"  (bleu {r['bleu']:.3f})" if "bleu" in r else ""))
                if "attention" in r:
                    out.append(f"  attention heatmaps: {r['attention']}")
        return out


class _Run:
    """A finished run and the files prediction reads from it, each checked against its recorded sha256."""

    def __init__(self, name: str, run: str | None, out: str | Path) -> None:
        self.spec, self.dir, self.manifest = finished_run(name, run, out)

    def path(self, rel: str) -> Path:
        record = self.manifest.get("files", {}).get(rel)
        problems = (check_hashes(self.dir, {"files": {rel: record}}) if record
                    else [f"{rel} is not among the files its manifest records"])
        if problems:
            raise ZooError(f"run {self.dir} is damaged: {'; '.join(problems)} (`zoo verify {self.spec.name}` "
                           f"checks every file)")
        return self.dir / rel

    def model(self) -> torch.nn.Module:
        self.path(WEIGHTS)
        return load_run_model(self.spec, self.dir, self.manifest)

    def onnx_files(self, names: Sequence[str]) -> dict[str, Path]:
        """The exported file of each graph in `names`; a run without them is a `ZooError` saying how to export."""
        exported = self.manifest.get("onnx")
        graphs = (exported.get("graphs") or {"model": exported}) if exported else {}  # schema 1: one model.onnx
        missing = [n for n in names if n not in graphs]
        if missing:
            what = "ONNX export" if not graphs else f"ONNX export of graph {', '.join(missing)}"
            raise ZooError(f"run {self.dir} has no {what}: run `zoo export {self.spec.name} --onnx --run "
                           f"{self.dir}` first, or predict with --runtime torch")
        return {n: self.path(graphs[n]["file"]) for n in names}

    def vocab(self, key: str) -> Any:
        from zoo_core.text import Vocab

        files = self.manifest.get("vocabs", {})
        if key not in files:
            raise ZooError(f"run {self.dir} has no {key} in its manifest (a run of a text model saves its "
                           f"vocabularies; this one may predate that: train it again)")
        return Vocab.load(self.path(files[key]))

    def data_class(self) -> type:
        return data_class(get_data_spec(self.spec.dataset))

    def data_hparam(self, key: str, default: Any = None) -> Any:
        return self.manifest.get("data", {}).get("hparams", {}).get(key, default)

    def runner(self, runtime: str, provider: str) -> Any:
        """A `zoo_core.decoding.Runner` of the run's encoder and step graphs."""
        from zoo_core import decoding

        model = self.model() if runtime == "torch" else None
        graphs = run_graphs(self.spec, self.manifest, model)  # the sizes of the model the run built
        try:
            if runtime == "torch":
                return decoding.TorchRunner(model, graphs)
            used = [g.name for g in graphs if g.role in ("encoder", "step")]
            return decoding.OnnxRunner(self.onnx_files(used), graphs, provider)
        except ValueError as e:  # the graphs do not make a generation model
            raise ZooError(f"{self.spec.name} cannot generate: {e}") from e


def _first_line(function: Callable[..., Any]) -> str:
    """The first line of `function`'s docstring, to go inside a sentence: "the book's preprocessing: ..."."""
    line = ((function.__doc__ or "").strip().splitlines() or [function.__name__])[0].rstrip(".")
    return line[:1].lower() + line[1:]


def _unknown_note(note: Note, unknown: Sequence[str], what: str) -> None:
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        note(f"{len(unknown)} {what} not in the run's vocabulary, read as <unk>: {shown}")


def _check_options(task: str, beam: int | None, num_preds: int | None, references: Sequence[str],
                   attention: Any = None) -> None:
    if beam is not None and beam < 1:
        raise ZooError(f"--beam must be at least 1, got {beam}")
    if num_preds is not None and num_preds < 1:
        raise ZooError(f"--num-preds must be at least 1, got {num_preds}")
    wrong = [opt for opt, given, tasks in (("--beam", beam is not None, GENERATION_TASKS),
                                          ("--num-preds", num_preds is not None, ("language-modeling",)),
                                          ("--reference", bool(references), ("translation",)),
                                          ("--attention", attention is not None, ("translation",)))
             if given and task not in tasks]
    if wrong:
        raise ZooError(f"{' and '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to a {task} model")


def predict(name: str, inputs: Sequence[str], *, run: str | None = None, out: str | Path = "artifacts",
            runtime: str = "torch", beam: int | None = None, num_preds: int | None = None,
            references: Sequence[str] = (), provider: str = "CPUExecutionProvider",
            attention: str | Path | None = None, note: Note = _stderr_note) -> Predictions:
    """Ask run `run` of model `name` (default: its newest finished run under `out`) about `inputs`.

    Args:
        inputs: image files (classification), prefixes (language models) or sentences (translation).
        runtime: ``torch`` (the weights) or ``onnx`` (the exported graphs, on ONNX Runtime's `provider`).
        beam: beam size for text (default 1: greedy).
        num_preds: tokens a language model adds to each prefix (default 20, the book's).
        references: one reference translation per input: adds the book's BLEU (k=2).
        attention: an image file (.png, .pdf, .svg, .jpg) for the attention heatmaps of a translation model with
            attention; with several sentences, ``stem-1.png``, ``stem-2.png``, ... Each result names its file.
        note: where remarks that are not errors go (words read as ``<unk>``); default stderr.

    Raises:
        ZooError: a bad input (empty, unreadable image, sentence too long), an option the task does not take, a
            missing export for ``runtime="onnx"``, a damaged run.
    """
    if runtime not in RUNTIMES:
        raise ZooError(f"unknown runtime {runtime!r} (torch or onnx)")
    if not inputs:
        raise ZooError("nothing to predict: give at least one input")
    task = get_spec(name).task  # an option the model cannot take is refused before looking for a run of it
    if task not in TASKS:
        raise ZooError(f"zoo predict does not handle {task} models like {name} (it handles {', '.join(TASKS)})")
    _check_options(task, beam, num_preds, references, attention)
    r = _Run(name, run, out)
    with torch.no_grad():
        if task == "classification":
            results = _classify(r, inputs, runtime, provider)
        else:
            try:
                if task == "language-modeling":
                    results = _continue(r, inputs, runtime, provider, beam or 1, num_preds or NUM_PREDS, note)
                else:
                    results = _translate(r, inputs, runtime, provider, beam or 1, references, note, attention)
            except ValueError as e:  # the model refusing this input, e.g. more positions than its positional table
                raise ZooError(f"{name}: {e}") from e
    return Predictions(name, r.dir, task, runtime, results, None if task == "classification" else beam or 1,
                       r.manifest.get("preset"))


# --- images -------------------------------------------------------------------------------------------------------------

def image_input_shape(spec: ModelSpec, preset: str) -> tuple[int, int | None, int | None]:
    """(channels, height, width) of an image model's input ``X: float32[batch, C, H, W]`` (None: any size)."""
    inputs, _ = spec.io(preset)
    shape = inputs[0].shape
    if len(inputs) != 1 or len(shape) != 4 or shape[1] not in (1, 3):
        raise ZooError(f"zoo predict reads images for models with one input [batch, 1 or 3, H, W]; {spec.name} "
                       f"takes {', '.join(map(str, inputs))}")
    return shape[1], *(d if isinstance(d, int) else None for d in shape[2:])


def load_image(path: str, channels: int, size: tuple[int | None, int | None]) -> Tensor:
    """Image file -> float32 (channels, H, W) in [0, 1]: decoded by torchvision (PNG, JPEG, ...) as grey or RGB,
    resized to `size` (bilinear, antialiased: photographs are larger than the model's input)."""
    from torchvision.io import ImageReadMode, decode_image

    if not path:
        raise ZooError("empty input: give an image file")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ZooError(f"cannot read image {path}: {e.strerror or e}") from None
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    try:
        image = decode_image(buffer, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:
        # torchvision's message starts with its C++ source location; its first sentence after that is the reason
        reason = re.sub(r"^.*?\.(?:cpp|cc|h):\d+,\s*", "", " ".join(str(e).split())).split(". ")[0].rstrip(".")
        raise ZooError(f"cannot read image {path}: not an image torchvision can decode (PNG, JPEG, WebP or GIF): "
                       f"{reason[:200]}") from None
    if image.dim() == 4:  # an animated image: its first frame
        image = image[0]
    x = image.float().div_(255)[None]
    target = (size[0] or x.shape[-2], size[1] or x.shape[-1])
    if tuple(x.shape[-2:]) != target:
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
    return x[0]


def _classify(r: _Run, paths: Sequence[str], runtime: str, provider: str) -> list[dict[str, Any]]:
    channels, height, width = image_input_shape(r.spec, r.manifest["preset"])
    X = torch.stack([load_image(p, channels, (height, width)) for p in paths])
    if runtime == "torch":
        logits = r.model()(X)
    else:
        from zoo_core.parity import _session

        session = _session(r.onnx_files(["model"])["model"], provider)
        logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: X.numpy()})[0])
    probs = logits.float().softmax(-1)
    labels = getattr(r.data_class(), "labels", None)
    if labels is None or len(labels) != probs.shape[-1]:
        labels = [str(i) for i in range(probs.shape[-1])]
    top_p, top_i = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)
    return [{"input": path, "top": [{"label": labels[i], "index": i, "probability": p}
                                    for p, i in zip(ps, idx)]}
            for path, ps, idx in zip(paths, top_p.tolist(), top_i.tolist())]


# --- text ---------------------------------------------------------------------------------------------------------------

def _text_method(cls: type, method: str, task: str) -> Callable[..., Any]:
    fn = getattr(cls, method, None)
    if fn is None:
        raise ZooError(f"dataset class {cls.__name__} has no {method}(): zoo predict needs it for {task}")
    return fn


def _continue(r: _Run, prefixes: Sequence[str], runtime: str, provider: str, beam: int, num_preds: int,
              note: Note) -> list[dict[str, Any]]:
    from zoo_core.decoding import continue_prefixes

    cls = r.data_class()
    preprocess = _text_method(cls, "preprocess", "language models")
    tokenize = _text_method(cls, "tokenize", "language models")
    token = r.data_hparam("token", "char")
    vocab = r.vocab("vocab")
    read, unknown, changed = [], [], []
    for prefix in prefixes:
        if not prefix:
            raise ZooError("empty prefix: a language model continues at least one character")
        text = preprocess(prefix)
        tokens = tokenize(text, token)
        if not tokens or not text.strip():  # blank: only what the preprocessing turns into spaces ("123 !!")
            raise ZooError(f"prefix {prefix!r} is blank once preprocessed as the training text was "
                           f"({_first_line(preprocess)}): it reads as {text!r}")
        if text != prefix:
            changed.append(f"{prefix!r} as {text!r}")
        unknown += [t for t in tokens if t not in vocab and t not in unknown]
        read.append(tokens)
    if changed:  # the continuation starts from what the model read, which the user should not have to guess
        note(f"{len(changed)} prefix{'es' * (len(changed) > 1)} read as the training text was preprocessed "
             f"({_first_line(preprocess)}): "
             + ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else ""))
    _unknown_note(note, unknown, "characters" if token == "char" else "words")
    found = continue_prefixes(r.runner(runtime, provider), [vocab[t] for t in read], num_preds, beam_size=beam)
    sep = "" if token == "char" else " "
    results = []
    for prefix, tokens, ids in zip(prefixes, read, found):
        head, tail = sep.join(tokens), sep.join(vocab.to_tokens(ids))
        results.append({"input": prefix, "prefix": head, "continuation": tail,
                        "text": head + (sep if tail else "") + tail, "tokens": ids})
    return results


def _translate(r: _Run, sentences: Sequence[str], runtime: str, provider: str, beam: int,
               references: Sequence[str], note: Note, attention: str | Path | None = None) -> list[dict[str, Any]]:
    from zoo_core.decoding import beam_search, greedy
    from zoo_core.seq_metrics import bleu
    from zoo_core.text import BOS, EOS

    if references and len(references) != len(sentences):
        raise ZooError(f"{len(references)} references for {len(sentences)} sentences: give one --reference per "
                       f"sentence, in order")
    cls = r.data_class()
    preprocess = _text_method(cls, "preprocess", "translation")
    encode_source = _text_method(cls, "encode_source", "translation")
    empty = [i + 1 for i, ref in enumerate(references) if not preprocess(ref).split()]
    if empty:  # its BLEU would be a silent 0
        raise ZooError(f"empty --reference (number {', '.join(map(str, empty))}): nothing to score against")
    num_steps = r.data_hparam("num_steps")
    if not isinstance(num_steps, int):
        raise ZooError(f"run {r.dir} records no num_steps for its data: cannot size the translation")
    model = _attention_model(r, attention) if attention is not None else None  # refused before any work
    src_vocab, tgt_vocab = r.vocab("src_vocab"), r.vocab("tgt_vocab")
    unknown: list[str] = []
    for sentence in sentences:
        words = [t for t in preprocess(sentence).split(" ") if t]
        if not words:
            raise ZooError("empty sentence: nothing to translate")
        if len(words) + 1 > num_steps:
            shown = sentence if len(sentence) <= 60 else sentence[:57] + "..."  # one line, however long the input
            raise ZooError(f"sentence {shown!r} has {len(words) + 1} tokens with <eos>, more than the {num_steps} "
                           f"(num_steps) this run was trained on: shorten it (the book's data pipeline would cut it)")
        unknown += [w for w in words if w not in src_vocab and w not in unknown]
    _unknown_note(note, unknown, "words")
    src, src_valid_len = encode_source(list(sentences), src_vocab, num_steps)
    runner = r.runner(runtime, provider)
    given = {"src": src, "src_valid_len": src_valid_len}
    names = [t.name for t in runner.encoder.inputs] if runner.encoder is not None else []
    if not names or any(n not in given for n in names):
        raise ZooError(f"{r.spec.name}: a translation model's encoder graph takes inputs named src and "
                       f"src_valid_len (int64), got {names or 'no encoder graph'}")
    state = runner.start(*(given[n] for n in names))
    first = torch.full((len(sentences),), tgt_vocab[BOS], dtype=torch.int64)
    eos = tgt_vocab[EOS]
    found = (greedy(runner, state, first, num_steps, eos) if beam == 1
             else beam_search(runner, state, first, num_steps, beam, eos))
    results = []
    for i, (sentence, ids) in enumerate(zip(sentences, found)):
        words = tgt_vocab.to_tokens(ids)
        result: dict[str, Any] = {"input": sentence, "translation": " ".join(words), "tokens": ids}
        if references:
            label = [t for t in preprocess(references[i]).split(" ") if t]
            result.update(reference=references[i], bleu=bleu(words, label, k=BLEU_K))
        if model is not None:
            result["attention"] = str(_draw_attention(model, attention, i, len(sentences), src[i],
                                                      src_valid_len[i], ids, src_vocab, tgt_vocab[BOS], tgt_vocab))
        results.append(result)
    return results


def _attention_model(r: _Run, path: str | Path) -> Any:
    """The run's PyTorch model, if it can draw its attention (before any translation is done)."""
    from zoo_core.attention_plot import check_path

    check_path(path)
    model = r.model()
    if not callable(getattr(model, "attention_maps", None)):
        raise ZooError(f"{r.spec.name} has no attention to draw: --attention applies to translation models with "
                       f"attention (bahdanau, transformer)")
    return model


def _draw_attention(model: Any, path: str | Path, i: int, n: int, src: Tensor, valid_len: Tensor, ids: list[int],
                    src_vocab: Any, bos: int, tgt_vocab: Any) -> Path:
    """Sentence `i`'s heatmaps: the model reads the padded source exactly as it was translated (the book's RNN
    encoders read the padding too) and ``<bos>`` + the translation; the source axes are then cut to the valid tokens
    (padding gets no weight from masked attention)."""
    from zoo_core.attention_plot import crop_source, numbered, save_heatmaps

    m = int(valid_len)
    tgt_in = torch.tensor([[bos, *ids]], dtype=torch.int64)
    maps = crop_source(model.attention_maps(src[None], valid_len.reshape(1), tgt_in), len(src), m)
    return save_heatmaps(numbered(path, i + 1, n), maps, src_vocab.to_tokens(src[:m].tolist()),
                         tgt_vocab.to_tokens(tgt_in[0].tolist()), title=f"attention weights ({model.__class__.__name__})")


__all__ = ["NUM_PREDS", "Predictions", "TASKS", "TOP_K", "image_input_shape", "load_image", "predict"]
