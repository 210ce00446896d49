"""The ``zoo`` command line (also ``python -m zoo_core``, which is what torchrun launches).

Each command is a thin shell over the public Python API. A user's mistake (`ZooError`, or a bad option) is printed
as one line, ``zoo: error: ...``, with a non-zero exit; ``--debug`` (or ``ZOO_DEBUG=1``) shows the traceback.
``list``, ``info`` and ``plugins`` read specs only and never import torch.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from typing import Any

import click

from zoo_core import __version__, plugins, registry
from zoo_core.errors import ZooError

DEFAULT_OUT = "artifacts"


def _err(message: str) -> None:
    click.echo(f"zoo: {message}", err=True)


def _is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job: they print nothing."""
    return os.environ.get("RANK", "0") == "0"


def _warn_broken_plugins() -> None:
    """After a command succeeded: one warning per broken plugin (on failure, the error line stands alone)."""
    state = plugins.loaded()
    if state is not None and _is_main_process():
        for info in state.broken:
            if not info.installed:
                _err(f"warning: {plugins.ALLOWLIST_ENV} names {info.name}, which is not installed "
                     f"(see `zoo plugins`)")
            else:
                _err(f"warning: plugin {info.name} is broken and was skipped: {info.error} (see `zoo plugins`)")


def _debug(ctx: click.Context) -> bool:
    """Whether ``zoo --debug`` (or ``ZOO_DEBUG=1``) asked for tracebacks."""
    return bool(ctx.find_root().params.get("debug")) or os.environ.get("ZOO_DEBUG", "") not in ("", "0")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="zoo")
@click.option("--debug", is_flag=True, help="Show the full traceback of any error.")
def cli(debug: bool) -> None:
    """d2l-zoo: the models of Dive into Deep Learning: list, train, export to ONNX, verify.

    \b
    zoo list                        every registered model
    zoo info softmax                its card: chapter, presets, parameters, inputs/outputs
    zoo train softmax               the book's recipe on the book's data, into artifacts/
    zoo export softmax --onnx       ONNX + parity check against ONNX Runtime
    zoo verify softmax              re-check hashes, weights and parity of the newest run
    zoo predict lenet shoe.png      ask a trained run (images, prefixes, sentences)
    """


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--chapter", type=int, help="Only models of this book chapter.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(pattern: str | None, chapter: int | None, as_json: bool) -> None:
    """List registered models; PATTERN is a shell glob on the name, any case (e.g. 'soft*').

    No match is an error (exit 1) that names the chapters there are; with --json it is an empty list.
    """
    plugins.load()
    specs = registry.list_models(pattern, chapter)
    if as_json:
        _echo_json([{k: s.to_json()[k] for k in ("name", "chapter", "section", "task", "dataset", "summary",
                                                  "plugin", "tags")} for s in specs])
        return
    if not specs:  # an error, as grep's no match: a script learns it from the exit status
        chapters = sorted({s.chapter for s in registry.list_models(pattern)})
        filtered = chapter is not None
        where = (f"; {pattern!r} matches models of chapter{'s' * (len(chapters) > 1)} "
                 f"{', '.join(map(str, chapters))}" if filtered and pattern and chapters else
                 f"; chapters with models: {', '.join(map(str, chapters))}" if filtered and chapters else "")
        state = plugins.loaded()
        hint = state.unknown_name_hint() if state is not None else ""  # the model may be a broken plugin's
        raise ZooError("no model matches" + (f" {pattern!r}" if pattern else "")
                       + (f" in chapter {chapter}" if filtered else "") + where + (f"; {hint}" if hint else ""))
    _table([[s.name, str(s.chapter), s.section, s.task, s.dataset, s.plugin, s.summary] for s in specs],
           ["NAME", "CH", "SECTION", "TASK", "DATASET", "PLUGIN", "SUMMARY"])


def _kv(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "-"


@cli.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--layers", is_flag=True,
              help="Build the model and print each layer's output shape on one example (the book's layer_summary).")
@click.option("--preset", default="book", show_default=True, help="The preset to build for --layers.")
def info_command(name: str, as_json: bool, layers: bool, preset: str) -> None:
    """Show a model's card: chapter, dataset, presets and their hyper-parameters, parameters, inputs/outputs and
    exported graphs. Builds each preset's model to warn where the card's parameter count is wrong (--json reads the
    card only, without torch)."""
    state = plugins.load()
    spec = registry.get_spec(name)
    if layers:
        _layer_summary(spec, preset, as_json)
        return
    if as_json:
        _echo_json(spec.to_json())
        return
    version = next((p.version for p in state.plugins if p.name == spec.plugin), "?")
    click.echo(f"{spec.name}: {spec.summary}")
    rows = [("chapter", f"{spec.chapter} (section {spec.section})"), ("task", spec.task),
            ("dataset", spec.dataset), ("plugin", f"{spec.plugin} {version}"), ("builder", spec.builder),
            ("inputs", ", ".join(map(str, spec.inputs))), ("outputs", ", ".join(map(str, spec.outputs))),
            ("onnx", spec.onnx_exporter + (f" ({spec.onnx_reason})" if spec.onnx_reason else "")),
            ("parity", f"atol {spec.parity.atol:g}, rtol {spec.parity.rtol:g}"
                       + (f" ({spec.parity.reason})" if spec.parity.reason else ""))]
    if spec.tags:
        rows.append(("tags", ", ".join(spec.tags)))
    if getattr(registry.model_class(spec), "replays_book_rng", False) is True:
        rows.append(("rng", "zoo, book (zoo train --rng book replays the d2l reference's random stream)"))
    for key, value in rows:
        click.echo(f"  {key:<9} {value}")
    click.echo("  presets")
    for preset_name, p in spec.presets.items():
        params = f"{p.num_params:,} parameters" if p.num_params is not None else "parameters not declared"
        click.echo(f"    {preset_name:<7} {params}" + (f": {p.summary}" if p.summary else ""))
        click.echo(f"            model  {_kv(dict(p.model))}")
        click.echo(f"            data   {_kv(dict(p.data))}")
        click.echo(f"            train  {_kv(dict(p.train))}")
        inputs, outputs = spec.io(preset_name)
        if (inputs, outputs) != (spec.inputs, spec.outputs):
            click.echo(f"            io     {', '.join(map(str, inputs))} -> {', '.join(map(str, outputs))}")
        if spec.graphs or p.graphs:  # generation models: the graphs `zoo export` writes
            for g in spec.graph_specs(preset_name):
                state = f"; state {', '.join(g.state)}" if g.state else ""
                click.echo(f"            graph  {g.file} ({g.role}): {', '.join(map(str, g.inputs))} -> "
                           f"{', '.join(map(str, g.outputs))}{state}" + (f" -- {g.summary}" if g.summary else ""))
    for preset_name, p in spec.presets.items():  # the card against the built models (imports torch: after printing)
        if p.num_params is not None or spec.graphs or p.graphs:
            _warn_card(spec, preset_name, registry.get_model(spec.name, preset=preset_name))


def _warn_card(spec: registry.ModelSpec, preset: str, model: Any) -> None:
    """Warn where a card is not the built model: its declared parameter count, or a fixed size of a generation
    graph (an encoder's or a step's); the contract suite fails both."""
    from zoo_core.onnx_export import concrete_graph

    declared, built = spec.preset(preset).num_params, model.num_params()
    if declared is not None and declared != built:
        _err(f"warning: the card of {spec.name} declares {declared:,} parameters for its {preset} preset, the "
             f"built model has {built:,}: plugin {spec.plugin} should declare num_params={built}")
    for graph in spec.graph_specs(preset):
        if graph.name == "model":
            continue  # the card's inputs and outputs: layer_summary and the contract suite run them
        try:
            real = concrete_graph(model, graph)
        except ZooError as e:
            _err(f"warning: the card of {spec.name}, {preset} preset: {e}")
            continue
        wrong = [f"{s} (the built model's: {r})" for s, r in zip((*graph.inputs, *graph.outputs),
                                                                 (*real.inputs, *real.outputs)) if s != r]
        if wrong:
            _err(f"warning: the card of {spec.name} declares, in graph {graph.name} of its {preset} preset, "
                 + "; ".join(wrong) + f": plugin {spec.plugin} should declare the built model's sizes")


def _layer_summary(spec: registry.ModelSpec, preset: str, as_json: bool) -> None:
    spec.preset(preset)  # an unknown preset fails before torch is imported
    model = registry.get_model(spec.name, preset=preset)
    _warn_card(spec, preset, model)
    rows = model.layer_summary()
    if as_json:
        _echo_json([{"name": n, "layer": kind, "output_shape": list(shape)} for n, kind, shape in rows])
        return
    click.echo(f"{spec.name} ({preset} preset): {model.num_params():,} parameters; input "
               + ", ".join(f"{tuple(x.shape)}" for x in model.example_inputs(1)))
    _table([[n, kind, "x".join(map(str, shape))] for n, kind, shape in rows], ["LAYER", "TYPE", "OUTPUT SHAPE"])


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: version, hooks, models; broken ones with their error (exit status 1 if any).

    With ``zoo --debug plugins``, the traceback of each broken plugin follows on stderr.
    """
    state = plugins.load()
    if as_json:
        _echo_json([p.to_json() for p in state.plugins])
    else:
        rows = []
        for p in state.plugins:
            what = (f"NOT INSTALLED: {p.error}" if not p.installed else f"BROKEN: {p.error}" if p.broken
                    else ", ".join(p.hooks) + (" (built-in)" if p.builtin else ""))
            rows.append([p.name, p.version, str(len(p.models)), str(len(p.datasets)), what])
        _table(rows, ["PLUGIN", "VERSION", "MODELS", "DATASETS", "HOOKS"])
    if _debug(ctx):
        for p in state.broken:
            if p.traceback:
                click.echo(f"\nplugin {p.name} ({p.module}):\n{p.traceback.rstrip()}", err=True)
    if state.broken:
        ctx.exit(1)


@cli.command("train")
@click.argument("name")
@click.option("--preset", default="book", show_default=True, help="Hyper-parameter preset: book, tiny, ...")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the preset's).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimiser steps in total.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (per process under torchrun).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any model or data hyper-parameter (repeatable), e.g. --set num_hiddens=512.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(["auto", "32", "bf16", "16"], case_sensitive=False), default="auto",
              show_default=True,
              help="auto: bf16 autocast on CUDA, 32 (float32) elsewhere. 16: float16 autocast with loss scaling, "
                   "CUDA only. bf16 on a CPU with AVX512-BF16 or AMX: matrix products about twice as fast (a "
                   "Transformer step about 1.4x); on other CPUs it is emulated and slower.")
@click.option("--seed", type=int, help="Seed of initialisation, dropout and data order.  [default: 0]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Look here first for data (then $ZOO_DATA).")
@click.option("--out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              help="Artifacts root: runs go to OUT/NAME/RUN-ID.")
@click.option("--resume", metavar="RUN", help="Continue a run (its directory or id) from its last checkpoint.")
@click.option("--early-stop-patience", type=click.IntRange(min=1), metavar="N",
              help="Stop after N epochs without a better validation metric (val_acc, or val_loss); keep the best "
                   "epoch's weights.")
@click.option("--compile", "compile_", is_flag=True, help="Train through torch.compile (slower start, faster steps).")
@click.option("--threads", type=click.IntRange(min=1), help="torch intra-op threads (default: torch's choice).")
@click.option("--rng", type=click.Choice(["zoo", "book"], case_sensitive=False), default=None,
              help="book: replay the d2l reference's random stream at --seed (its initialisation order, DataLoader "
                   "shuffles and dropout masks), to compare with the book's code seed for seed; one process, no "
                   "resume, no --compile; the models that can say so in `zoo info`. zoo: the zoo's resumable "
                   "streams.  [default: zoo]")
def train_command(name: str, preset: str, epochs: int | None, max_steps: int | None, batch_size: int | None,
                  lr: float | None, assignments: tuple[str, ...], device: str, precision: str, seed: int | None,
                  data_dir: str | None, out: str, resume: str | None, early_stop_patience: int | None,
                  compile_: bool, threads: int | None, rng: str | None) -> None:
    """Train NAME with its preset's recipe; prints the run directory as the last line on stdout."""
    plugins.load()
    from zoo_core import workflows

    run_dir = workflows.train(
        name, preset=preset, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
        assignments=list(assignments), device=device, precision=precision, seed=seed, data_dir=data_dir, out=out,
        resume=resume, early_stop_patience=early_stop_patience, compile=compile_, threads=threads,
        rng=rng.lower() if rng else None, log=lambda line: click.echo(line, err=True),
        command=shlex.join(["zoo", *sys.argv[1:]]))
    if run_dir is not None:  # rank 0
        click.echo(str(run_dir))


@cli.command("export")
@click.argument("name")
@click.option("--run", metavar="RUN", help="Run directory or run id (default: the newest finished run of NAME).")
@click.option("--out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              help="Artifacts root to look for runs in.")
@click.option("--onnx", "onnx_", is_flag=True, help="Export to ONNX and check parity with ONNX Runtime.")
@click.option("--opset", type=click.IntRange(min=7), default=18, show_default=True, help="ONNX opset.")
def export_command(name: str, run: str | None, out: str, onnx_: bool, opset: int) -> None:
    """Export a trained run: check its safetensors weights load; with --onnx write one ONNX file per graph of the
    model (model.onnx; generation models encoder.onnx, decoder_step.onnx ...) and check each one's parity with ONNX
    Runtime. Prints the files written, one per line."""
    plugins.load()
    from zoo_core import workflows

    files = workflows.export(name, run=run, out=out, onnx=onnx_, opset=opset,
                             log=lambda line: click.echo(line, err=True))
    for path in files:  # one per graph: model.onnx, or encoder.onnx and decoder_step.onnx ...
        click.echo(str(path))


@cli.command("verify")
@click.argument("name")
@click.option("--run", metavar="RUN", help="Run directory or run id (default: the newest finished run of NAME).")
@click.option("--out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              help="Artifacts root to look for runs in.")
def verify_command(name: str, run: str | None, out: str) -> None:
    """Re-check a run: file hashes, weights load, ONNX Runtime parity (CPU; CUDA too where present)."""
    plugins.load()
    from zoo_core import workflows

    workflows.verify(name, run=run, out=out, log=lambda line: click.echo(line))


@cli.command("predict")
@click.argument("name")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--run", metavar="RUN", help="Run directory or run id (default: the newest finished run of NAME).")
@click.option("--out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              help="Artifacts root to look for runs in.")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="PyTorch with the run's weights, or ONNX Runtime with its exported graphs (zoo export --onnx).")
@click.option("--beam", type=click.IntRange(min=1), metavar="K",
              help="Beam search with K hypotheses (text models; default 1: greedy).")
@click.option("--num-preds", type=click.IntRange(min=1), metavar="N",
              help="Tokens a language model adds to each prefix.  [default: 20]")
@click.option("--reference", "references", multiple=True, metavar="TEXT",
              help="A reference translation (one per sentence, in order): adds the book's BLEU.")
@click.option("--attention", type=click.Path(dir_okay=False), metavar="FILE",
              help="Save the attention heatmaps (every layer and head, tokens on the axes) of a translation model "
                   "with attention to FILE (.png, .pdf, .svg, .jpg; FILE-1.png, ... for several sentences).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict_command(name: str, inputs: tuple[str, ...], run: str | None, out: str, runtime: str, beam: int | None,
                    num_preds: int | None, references: tuple[str, ...], attention: str | None,
                    as_json: bool) -> None:
    """Ask a trained run: INPUT is an image file (classifiers: top-5 classes), a prefix (language models:
    continued) or a sentence (translation: translated).

    \b
    zoo predict lenet shoe.png
    zoo predict gru-lm "time traveller" --num-preds 50 --beam 4
    zoo predict seq2seq "i'm home ." --reference "je suis chez moi ." --runtime onnx
    zoo predict transformer "i'm home ." --beam 4 --runtime onnx --attention heatmaps.png
    """
    plugins.load()
    from zoo_core.predict import predict

    result = predict(name, inputs, run=run, out=out, runtime=runtime, beam=beam, num_preds=num_preds,
                     references=references, attention=attention, note=lambda line: _err(f"note: {line}"))
    if as_json:
        _echo_json(result.to_json())
    else:
        _err(result.source())  # stderr: which run answered (the newest finished one unless --run says)
        for line in result.lines():
            click.echo(line)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zoo`` script: runs the CLI and turns errors into one line and an exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # bare `zoo`: its help, as `zoo --help` (click would call it a usage error)
        args = ["--help"]
    # --debug is the group's option, but the error lines say "rerun with --debug": accept it after the subcommand too
    # (not after `--`, where it would be an input)
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[:end]:
        args = ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]
    debug = "--debug" in args[:1] or os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    try:
        plugins.register_commands(cli)
        result = cli.main(args=args, prog_name="zoo", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if args[:1] != ["plugins"]:  # `zoo plugins` reports them itself
            _warn_broken_plugins()
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:  # bad options and arguments
        if debug:
            traceback.print_exc()
        command = e.ctx.command_path if getattr(e, "ctx", None) else "zoo"
        _err(f"error: {e.format_message()} (see `{command} --help`)")
        code = e.exit_code
    except click.exceptions.Abort:
        _err("aborted")
        code = 130
    except ZooError as e:
        if debug:
            traceback.print_exc()
        _err(f"error: {' '.join(str(e).split())}")
        code = e.exit_code
    except Exception as e:  # noqa: BLE001 - a bug: still one line, unless --debug
        if debug:
            raise
        _err(f"internal error: {type(e).__name__}: {' '.join(str(e).split())} (rerun with --debug for the traceback)")
        code = 1
    sys.exit(code)
