"""What the KV cache saves: gpt-mini continuing a prefix by 200 characters on ONNX Runtime, with its cached ``step``
graph against re-running the uncached ``model`` graph over the whole sequence at each step.

    ZOO_DATA=../shared/data python benchmarks/kv_cache.py                       # book sizes, weights at init
    ZOO_DATA=../shared/data python benchmarks/kv_cache.py --run artifacts/runs/gpt-mini/RUN --repeat 5

Both sides are `zoo_core.decoding` Runners driven by the same greedy loop (`zoo_core.decoding.continue_prefixes`:
the prefix warms up, then 200 greedy steps), on ONNX Runtime sessions with the same options (``--threads`` intra-op
threads, 1 by default: the machine is shared):

- cached: the exported ``step.onnx``; each step feeds one token and the cache of every block's keys and values
  (past positions), and gets the cache back grown by one;
- uncached: the exported ``model.onnx`` (the causal forward pass); the state is the token sequence so far, and each
  step runs the whole sequence and keeps the last position's logits (what a model without a cache must do).

The two continuations must be the same tokens (the same function, computed two ways); the figure is the ratio of
the medians of the two wall times over ``--repeat`` runs (the issue's target: >= 2x). The prefix is the novel's
first sentence (104 characters once preprocessed), so that the last step reads 303 positions. The timing does not
depend on the weights (every step's shapes are the same whatever the weights), so by default the model is the book
preset at its initialisation (seed 0); ``--run`` takes a trained run's weights instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import write_result

PREFIX = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite matter to "
          "us.")
TARGET_RATIO = 2.0


class UncachedRunner:
    """A Runner (`zoo_core.decoding`) over the ``model`` graph alone: the state is the tokens so far (batch, n);
    a step appends the new token and runs the whole sequence, returning the last position's logits."""

    def __init__(self, session, vocab_size: int) -> None:
        self.session, self.vocab_size = session, vocab_size

    def start(self, *inputs, batch_size: int | None = None) -> dict:
        return {"seq": torch.zeros(batch_size, 0, dtype=torch.int64)}

    def step(self, tokens, state):
        seq = torch.cat([state["seq"], tokens[:, None]], 1)
        logits = self.session.run(None, {"X": seq.numpy()})[0]
        return torch.from_numpy(logits[:, -1]), {"seq": seq}, ()


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a finished gpt-mini run (its weights); default: book preset, "
                                                     "weights at init (seed 0)")
    parser.add_argument("--num-preds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (and torch's)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "kv_cache_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from zoo_core import get_model, get_spec
    from zoo_core.data.time_machine import TimeMachine
    from zoo_core.decoding import OnnxRunner, continue_prefixes
    from zoo_core.onnx_export import export_graph
    from zoo_core.text import Vocab

    if args.run:
        from zoo_core.workflows import finished_run, load_run_model

        spec, run_dir, manifest = finished_run("gpt-mini", args.run, Path(args.run).parent.parent)
        model = load_run_model(spec, run_dir, manifest).eval()
        vocab = Vocab.load(run_dir / "vocab.json")
        weights = f"trained run {run_dir}"
    else:
        torch.manual_seed(0)
        spec, model = get_spec("gpt-mini"), get_model("gpt-mini", preset="book").eval()
        vocab = TimeMachine().vocab
        weights = "book preset at initialisation (seed 0)"
    prefix = vocab[TimeMachine.tokenize(TimeMachine.preprocess(PREFIX))]
    model.check_length(len(prefix), args.num_preds)
    graphs = model.graph_specs()
    with tempfile.TemporaryDirectory(prefix="zoo-kv-") as tmp:
        files = {g.name: Path(tmp) / g.file for g in graphs}
        for g in graphs:
            export_graph(model, g, files[g.name])
        cached = OnnxRunner({"step": files["step"]}, graphs)
        step_session = session(files["step"], args.threads)
        cached.sessions["step"] = (step_session, [i.name for i in step_session.get_inputs()])
        uncached = UncachedRunner(session(files["model"], args.threads), model.vocab_size)

        times: dict[str, list[float]] = {"cached": [], "uncached": []}
        tokens: dict[str, list[int]] = {}
        for i in range(args.repeat + 1):  # run 0 warms both up, untimed
            for name, runner in (("cached", cached), ("uncached", uncached)):  # alternating: load hits both
                started = time.perf_counter()
                tokens[name] = continue_prefixes(runner, [prefix], args.num_preds)[0]
                if i:
                    times[name].append(time.perf_counter() - started)
    same = tokens["cached"] == tokens["uncached"]
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["uncached"] / median["cached"]
    print(f"cached {median['cached'] * 1000:.1f} ms, uncached {median['uncached'] * 1000:.1f} ms: {ratio:.2f}x; "
          f"same tokens: {same}")
    write_result(args.out, {
        "benchmark": f"gpt-mini continuing a {len(prefix)}-character prefix by {args.num_preds} characters (greedy) on "
                     f"ONNX Runtime (CPU, {args.threads} intra-op thread(s)): the KV-cached step graph vs re-running "
                     f"the uncached forward graph over the whole sequence at each step",
        "model": {"name": "gpt-mini", "hparams": model.hparams, "weights": weights},
        "prefix": PREFIX, "prefix_tokens": len(prefix), "num_preds": args.num_preds, "repeat": args.repeat,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 4) for k, v in median.items()},
        "ms_per_token": {k: round(v * 1000 / args.num_preds, 3) for k, v in median.items()},
        "speedup": round(ratio, 2), "target_speedup": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO,
        "same_tokens": same, "continuation": "".join(vocab.to_tokens(tokens["cached"]))})
    if not same:
        raise SystemExit("the cached and uncached continuations differ")


if __name__ == "__main__":
    main()
