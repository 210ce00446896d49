"""The zoo's verbs on registered models and their runs: `train`, `export`, `verify`. The CLI is a shell over these.

A run is a folder ``OUT/MODEL/RUN-ID`` (see artifacts/README.md) whose ``manifest.json`` says what it is: model,
preset, hyper-parameters, data, trainer settings, metrics, speed, versions, the sha256 of every file, and after
export the ONNX graph's inputs/outputs and the parity results.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from zoo_core import __version__
from zoo_core.artifacts import (
    check_hashes, create_run_dir, list_runs, no_space_error, read_manifest, resolve_run, rewrite_manifest_in_place,
    write_manifest,
)
from zoo_core.devices import resolve_device, resolve_precision
from zoo_core.distributed import DistEnv
from zoo_core.errors import NoSpaceError, TrainingInterrupted, WorkerLostError, ZooError
from zoo_core.hparams import accepted_arguments, parse_assignments, resolve_overrides
from zoo_core.model import Model
from zoo_core.registry import (
    GraphSpec, ModelSpec, TensorSpec, build_data, build_model, data_class, get_data_spec, get_spec, model_class,
)
from zoo_core.trainer import CHECKPOINT_DIR, Trainer
from zoo_core.weights import load_weights, save_weights

Log = Callable[[str], None]
PARITY_BATCH_SIZE = 3  # not export.TRACE_BATCH_SIZE: parity must hold at a batch size the export did not trace
WEIGHTS = "model.safetensors"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _versions(spec: ModelSpec) -> dict[str, str | None]:
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"), "zoo-core": __version__,
            spec.plugin: _version(spec.plugin)}


# --- train ----------------------------------------------------------------------------------------------------------

def _configure(spec: ModelSpec, preset: str, assignments: dict[str, str]) -> tuple[dict, dict, dict]:
    """Model, data and trainer settings: the preset's, overridden by ``--set`` assignments (validated)."""
    p = spec.preset(preset)
    mcls, dcls = model_class(spec), data_class(get_data_spec(spec.dataset))
    routed = resolve_overrides(assignments, {"model": (mcls, p.model), "data": (dcls, p.data)},
                               owner=f"{spec.name} (model and data)")
    trainer_args = accepted_arguments(Trainer) or {}
    unknown = [k for k in p.train if k not in trainer_args]
    if unknown:
        raise ZooError(f"preset {preset!r} of {spec.name} sets unknown trainer options {', '.join(unknown)}")
    return {**p.model, **routed["model"]}, {**p.data, **routed["data"]}, dict(p.train)


def train(name: str, *, preset: str = "book", epochs: int | None = None, max_steps: int | None = None,
          batch_size: int | None = None, lr: float | None = None, assignments: Sequence[str] = (),
          device: str = "auto", precision: str = "auto", seed: int | None = None, data_dir: str | None = None,
          out: str | Path = "artifacts", resume: str | None = None, early_stop_patience: int | None = None,
          compile: bool = False, threads: int | None = None, rng: str | None = None, log: Log = print,
          command: str | None = None) -> Path | None:
    """Train model `name` into a new run under `out` (or continue run `resume`); returns the run folder.

    `assignments` are ``KEY=VALUE`` overrides of model or data hyper-parameters; `lr` and `batch_size` are
    shorthands for ``lr=...`` and ``batch_size=...``. `seed` defaults to 0 (a resumed run keeps its own).
    `early_stop_patience` stops after that many epochs without improvement of the model's monitored validation
    metric and keeps the best epoch's weights (as the run's weights, and in ``best/``). `compile` trains through
    ``torch.compile`` (a speed setting: a resumed run may turn it on or off); `threads` sets torch's intra-op
    threads (fewer than the cores can be faster on a shared machine; also a speed setting). `command` is recorded in
    the manifest (the CLI passes its command line). `rng` is ``zoo`` (the default) or ``book``, which replays the
    d2l reference's random stream at `seed` (`zoo_core.book_rng`; the models that can say so). Under torchrun, only rank 0 writes and returns the folder; the
    other ranks return None.

    Whatever ends a run early once its folder exists (an error of any kind, Ctrl-C, a full disk) is recorded in its
    manifest: status ``failed`` with the error in one line, or ``interrupted``.
    """
    run: dict[str, Any] = {}  # the run's folder and manifest, once _train has them
    try:
        return _train(name, preset=preset, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                      assignments=assignments, device=device, precision=precision, seed=seed, data_dir=data_dir,
                      out=out, resume=resume, early_stop_patience=early_stop_patience, compile=compile,
                      threads=threads, rng=rng, log=log, command=command, run=run)
    except BaseException as e:
        if not run:
            raise
        failure = _record_failure(name, run["dir"], run["manifest"], e)
        if failure is e:
            raise
        raise failure from e


def _train(name: str, *, preset: str, epochs: int | None, max_steps: int | None, batch_size: int | None,
           lr: float | None, assignments: Sequence[str], device: str, precision: str, seed: int | None,
           data_dir: str | None, out: str | Path, resume: str | None, early_stop_patience: int | None,
           compile: bool, threads: int | None, rng: str | None, log: Log, command: str | None,
           run: dict[str, Any]) -> Path | None:
    """`train`'s work; fills `run` with the run's folder and manifest (rank 0) as soon as they exist."""
    spec = get_spec(name)
    env = DistEnv.from_env()
    overrides = parse_assignments(assignments)
    if lr is not None:
        overrides["lr"] = repr(lr)
    if batch_size is not None:
        overrides["batch_size"] = str(batch_size)

    ckpt = None
    restarted = _restarted_run(out, name, env) if resume is None else None  # torchrun restarted this job
    if restarted is not None and read_manifest(restarted).get("status") == "completed":
        log(f"run {restarted} of this torchrun job has completed already")
        return restarted if env.is_main else None
    if resume is not None or restarted is not None:
        if resume is not None and rng is not None:
            raise ZooError("--resume keeps the run's own --rng: leave --rng out (a run with --rng book cannot resume)")
        if resume is not None and (overrides or preset != "book" or seed is not None
                                   or early_stop_patience is not None):
            raise ZooError("--resume continues a run with its own settings; only --epochs, --max-steps, --device, "
                           "--precision, --compile and --threads may change")
        run_dir = restarted or resolve_run(out, name, resume)
        if restarted is not None and env.is_main:
            log(f"torchrun restarted the job (restart {env.restart_count}): continuing run {run_dir} from its "
                f"checkpoint")
        manifest = read_manifest(run_dir)
        if manifest.get("model") != name:
            raise ZooError(f"run {run_dir} is a run of {manifest.get('model')!r}, not of {name!r}")
        ckpt = run_dir / CHECKPOINT_DIR
        if not (ckpt / "checkpoint.json").is_file():
            raise ZooError(f"run {run_dir} has no checkpoint to resume from")
        preset, model_hp, data_hp = manifest["preset"], manifest["hparams"], manifest["data"]["hparams"]
        trainer_cfg = dict(manifest["trainer"])
        seed = trainer_cfg.pop("seed")
        if trainer_cfg.get("rng") == "book":  # refused here, before the run's manifest could record a failure
            raise ZooError(f"run {run_dir} replays the book's random stream (--rng book), which cannot resume: "
                           "the stream's position is not in the checkpoint; train again")
    else:
        model_hp, data_hp, trainer_cfg = _configure(spec, preset, overrides)
        seed = 0 if seed is None else seed
        trainer_cfg["rng"] = rng or "zoo"
        if early_stop_patience is not None:
            trainer_cfg["early_stop_patience"] = early_stop_patience
        run_dir = None
        manifest = None
    if epochs is not None:
        trainer_cfg["max_epochs"] = epochs
    if max_steps is not None:
        trainer_cfg["max_steps"] = max_steps
    trainer_cfg.setdefault("max_epochs", 1)
    trainer_cfg.setdefault("max_steps", None)
    trainer_cfg.setdefault("gradient_clip_val", 0.0)

    resolve_precision(precision, resolve_device(device, env.local_rank))  # fail before making a run folder
    if threads is not None:
        if threads < 1:
            raise ZooError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    data = build_data(spec, data_hp, data_dir=data_dir)
    data.splits()  # load (or fail on missing data) before creating a run folder
    to_predict = data.predict_inputs()  # the same: a data module checks here what writing its predictions needs
    if ckpt is None:
        model_hp = _with_data_hparams(spec, model_hp, data.model_hparams(), overrides)
    model = build_model(spec, model_hp)
    if trainer_cfg.get("rng") == "book":  # refused before a run folder exists
        if not model.replays_book_rng:
            what = name + (" with " + " ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
            raise ZooError(f"--rng book: {what} cannot replay the book's random stream (use --rng zoo)")
        if compile:
            raise ZooError("--rng book does not run with --compile")

    if env.is_main:
        if run_dir is None:
            run_dir = create_run_dir(out, name)
            inputs, outputs = _built_io(spec, preset, model)
            manifest = {
                "model": name, "run_id": run_dir.name, "status": "running", "created": _now(),
                "plugin": {"name": spec.plugin, "version": _version(spec.plugin)},
                "preset": preset, "task": spec.task, "hparams": model.hparams,
                "data": {"name": spec.dataset, "hparams": data.hparams},
                "trainer": {**trainer_cfg, "seed": seed},
                "num_params": model.num_params(),
                "inputs": [t.to_json() for t in inputs], "outputs": [t.to_json() for t in outputs],
                "command": command,
                **({"torchrun": {"job_id": env.job_id}} if env.job_id is not None else {}),
            }
        run.update(dir=run_dir, manifest=manifest)
        vocabs = data.vocabs()
        for vocab_name, vocab in vocabs.items():  # the run predicts on its own: its vocabularies go with it
            vocab.save(run_dir / f"{vocab_name}.json")
        if vocabs:
            manifest["vocabs"] = {vocab_name: f"{vocab_name}.json" for vocab_name in vocabs}
        manifest.update(status="running", updated=_now(), versions=_versions(spec))
        manifest["trainer"].update({k: v for k, v in trainer_cfg.items() if k in ("max_epochs", "max_steps")})
        write_manifest(run_dir, manifest)

    def make_trainer(folder: Path | None, log: Log) -> Trainer:
        return Trainer(**trainer_cfg, device=device, precision=precision, seed=seed, compile=compile,
                       run_dir=folder if env.is_main else None, log=log)

    folds = data.folds()
    if folds and ckpt is not None:
        raise ZooError(f"run {run_dir} is cross-validated: it cannot resume (each fold starts afresh); train anew")
    cross_validation = _cross_validate(spec, model_hp, folds, seed, make_trainer, run_dir, log) if folds else None
    result = make_trainer(run_dir, log).fit(model, data, ckpt_path=ckpt)
    if not env.is_main:
        return None

    save_weights(model, run_dir / WEIGHTS, metadata={"zoo.model": name, "zoo.version": __version__,
                                                     "zoo.hparams": json.dumps(model.hparams)})
    metrics = dict(result.metrics)
    if cross_validation is not None:  # the estimate of the final model's error, which has no held-out data
        metrics.update({f"cv_{k}": v for k, v in cross_validation["mean"].items()})
        manifest["cross_validation"] = cross_validation
    if to_predict is not None:
        written = _predict(model, data, to_predict, run_dir)
        manifest["predictions"] = written.relative_to(run_dir).as_posix()
        log(f"predictions for {len(to_predict[0]):,} examples: {written}")
    manifest.update(
        status="completed", updated=_now(), metrics={k: round(v, 6) for k, v in metrics.items()},
        train={"epochs": result.epochs, "steps": result.steps, "seconds": round(result.seconds, 3),
               "examples": result.examples, "examples_per_s": round(result.examples_per_s, 1),
               **({result.unit: int(result.units), f"{result.unit}_per_s": round(result.units_per_s, 1)}
                  if result.unit != "examples" else {}),
               "device": result.device, "precision": result.precision, "world_size": result.world_size,
               "params_in_sync": result.params_in_sync, "threads": torch.get_num_threads(), "compiled": compile,
               "denormals_flushed": result.denormals_flushed,
               **({"torchrun_restarts": env.restart_count} if env.job_id is not None else {}),
               **({"best_epoch": result.best_epoch, "stopped_early": result.stopped_early}
                  if result.best_epoch is not None else {}),
               "machine": f"{platform.machine()} {platform.system()}"})
    manifest.pop("error", None)
    write_manifest(run_dir, manifest)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("val_", "cv_val_")))
    speed = (f"{result.units_per_s:,.0f} {result.unit}/s" if result.unit != "examples"
             else f"{result.examples_per_s:,.0f} examples/s")
    log(f"{name}: {shown}  ({result.seconds:.1f}s, {speed} on {result.device}"
        + (f" x{result.world_size}" if result.world_size > 1 else "") + ")")
    return run_dir


def _built_io(spec: ModelSpec, preset: str, model: Model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The forward pass's input and output specs of the model as built: the preset's, with the fixed sizes that
    ``--set`` changed (``num_outputs=12`` makes the logits ``[batch, 12]``) taken from the model (one forward pass
    on trace-size inputs, as the ONNX export does)."""
    from zoo_core.onnx_export import concrete_graph

    graph = concrete_graph(model, GraphSpec("model", *spec.io(preset)))
    return graph.inputs, graph.outputs


def _restarted_run(out: str | Path, name: str, env: DistEnv) -> Path | None:
    """In a job that torchrun restarted (``--max-restarts``, after a worker was lost), the run its first attempt
    made: the newest run of `name` under `out` that records this job's id and has a checkpoint (or has completed).
    None in a first attempt, outside torchrun, or when that run never got to a checkpoint (it is then marked failed,
    and the restart trains a new run). Every rank finds the same run: under several nodes, `out` must be a shared
    folder, as for ``--resume`` (and the job needs its own ``--rdzv-id``)."""
    if env.restart_count == 0 or env.job_id is None:
        return None
    for run_dir in reversed(list_runs(out, name)):
        try:
            manifest = read_manifest(run_dir)
        except ZooError:
            continue
        if manifest.get("torchrun", {}).get("job_id") != env.job_id:
            continue
        if manifest.get("status") == "completed" or (run_dir / CHECKPOINT_DIR / "checkpoint.json").is_file():
            return run_dir
        if env.is_main and manifest.get("status") == "running":
            manifest.update(status="failed", updated=_now(), error="torchrun restarted its job before the first "
                                                                    "checkpoint; the restart trains a new run")
            write_manifest(run_dir, manifest)
        return None
    return None


def _record_failure(name: str, run_dir: Path, manifest: dict[str, Any], error: BaseException) -> BaseException:
    """Write into the run's manifest how training ended: ``interrupted`` (Ctrl-C) or ``failed``, with the error in
    one line. Returns the exception to raise in the error's place: a full disk becomes a `NoSpaceError` naming the
    file; an interruption, a full disk or a lost worker says how to resume where there is a checkpoint to resume
    from; any other error is returned as it is."""
    shown = no_space_error(error) or error
    interrupted = isinstance(error, (TrainingInterrupted, KeyboardInterrupt))
    line = " ".join(str(shown).split()) or "interrupted"
    if not isinstance(shown, (ZooError, KeyboardInterrupt)):
        line = f"{type(shown).__name__}: {line}"
    manifest.update(status="interrupted" if interrupted else "failed", error=line, updated=_now())
    try:
        try:
            write_manifest(run_dir, manifest)
        except NoSpaceError:
            rewrite_manifest_in_place(run_dir, manifest)
    except Exception as e:  # noqa: BLE001 - the error that ended training is the one to report
        if isinstance(shown, ZooError):
            return type(shown)(f"{shown}; {run_dir / 'manifest.json'} could not be updated either "
                               f"({no_space_error(e) or e})")
        return shown
    resumable = (run_dir / CHECKPOINT_DIR / "checkpoint.json").is_file()
    if isinstance(shown, (TrainingInterrupted, NoSpaceError, WorkerLostError)) and resumable:
        return type(shown)(f"{shown}; continue with: zoo train {name} --resume {run_dir}")
    return shown


def _with_data_hparams(spec: ModelSpec, model_hp: dict[str, Any], from_data: dict[str, Any],
                       overrides: dict[str, str]) -> dict[str, Any]:
    """The model's hyper-parameters with those the data decides (its vocabulary size) filled in, where the model
    takes them and ``--set`` did not give them: ``--set token=word`` then builds a model of the word vocabulary."""
    accepted = accepted_arguments(model_class(spec))
    taken = {k: v for k, v in from_data.items()
             if (accepted is None or k in accepted) and k not in overrides}
    return {**model_hp, **taken}


def _cross_validate(spec: ModelSpec, model_hp: dict[str, Any], folds: Sequence[Any], seed: int,
                    make_trainer: Callable[[Path | None, Log], Trainer], run_dir: Path | None,
                    log: Log) -> dict[str, Any]:
    """Train a fresh model on each fold (into ``folds/J/`` of the run); the per-fold and mean validation metrics."""
    per_fold = []
    for j, fold in enumerate(folds):
        torch.manual_seed(seed)
        fold_model = build_model(spec, model_hp)

        def fold_log(line: str, j: int = j) -> None:
            log(f"fold {j + 1}/{len(folds)}  {line}")

        result = make_trainer(run_dir / "folds" / str(j) if run_dir is not None else None, fold_log).fit(
            fold_model, fold)
        per_fold.append({k: v for k, v in result.metrics.items() if k.startswith("val_")})
    mean = {k: sum(f[k] for f in per_fold) / len(per_fold) for k in per_fold[0]}
    log(f"{len(folds)}-fold cross-validation: " + "  ".join(f"mean {k} {v:.4f}" for k, v in mean.items()))
    return {"folds": len(folds), "per_fold": per_fold, "mean": mean}


def _predict(model: Model, data: Any, inputs: tuple[torch.Tensor, ...], run_dir: Path) -> Path:
    """`Model.predict` over the data's unlabelled `inputs`, in batches, written by the data module."""
    from zoo_core.data.module import TensorLoader

    device = next(model.parameters()).device
    model.eval()
    loader = TensorLoader(inputs, batch_size=max(data.batch_size, 1024)).to(device)
    predictions = torch.cat([model.predict(*batch) for batch in loader]).cpu()
    return data.write_predictions(run_dir, predictions)


# --- loading a run --------------------------------------------------------------------------------------------------

def finished_run(name: str, run: str | None, out: str | Path) -> tuple[ModelSpec, Path, dict[str, Any]]:
    """The spec, folder and manifest of a finished run of `name` (`run`: a directory or run id; default the newest
    finished one under `out`); a run that did not finish, or that another plugin's model of that name trained, is a
    `ZooError` saying so."""
    spec = get_spec(name)
    run_dir = resolve_run(out, name, run)
    manifest = read_manifest(run_dir)
    if manifest.get("model") != name:
        raise ZooError(f"run {run_dir} is a run of {manifest.get('model')!r}, not of {name!r}")
    plugin = manifest.get("plugin")
    trained_by = plugin.get("name") if isinstance(plugin, dict) else plugin
    if trained_by and spec.plugin and trained_by != spec.plugin:  # another plugin's model under the same name
        raise ZooError(f"run {run_dir} trained plugin {trained_by}'s {name}, and {name} is now plugin "
                       f"{spec.plugin}'s: train it anew (`zoo train {name}`) or name one of its runs with --run")
    status = manifest.get("status")
    if status == "failed":
        raise ZooError(f"run {run_dir} failed: {manifest.get('error') or 'no error recorded'}")
    if status != "completed":
        resumable = (run_dir / CHECKPOINT_DIR / "checkpoint.json").is_file()
        raise ZooError(f"run {run_dir} did not finish (status {status}); "
                       + (f"continue it with `zoo train {name} --resume {run_dir}`" if resumable else
                          f"it has no checkpoint to continue from: train anew with `zoo train {name}`"))
    return spec, run_dir, manifest


def load_run_model(spec: ModelSpec, run_dir: Path, manifest: dict[str, Any]) -> Model:
    """Rebuild a run's model from its manifest's hyper-parameters and load its weights (eval mode, CPU)."""
    model = build_model(spec, manifest["hparams"])
    load_weights(model, run_dir / WEIGHTS)
    return model.eval()


def run_graphs(spec: ModelSpec, manifest: dict[str, Any], model: Model | None = None) -> tuple[GraphSpec, ...]:
    """The graphs of a run's model, with the sizes of the model it built (`zoo_core.onnx_export.concrete_graph`: a
    ``--set`` may have changed the vocabulary or hidden sizes its preset declares). `model` is the run's model, or
    None to build one from the manifest's hyper-parameters (its weights are not needed for shapes)."""
    from zoo_core.onnx_export import concrete_graph

    model = model if model is not None else build_model(spec, manifest["hparams"])
    return tuple(concrete_graph(model, g) for g in spec.graph_specs(manifest["preset"]))


def _parity(spec: ModelSpec, model: Model, graph: GraphSpec, onnx_path: Path) -> dict[str, dict[str, Any]]:
    """Parity of one graph on ONNX Runtime's CPU provider (and CUDA where present), at sizes export did not trace."""
    from zoo_core.onnx_export import parity_dims
    from zoo_core.parity import CPU, CUDA, check_parity, cuda_unavailable_reason

    torch.manual_seed(0)
    dims = parity_dims(graph)
    inputs = model.graph_inputs(graph.name, dims)
    module = model.graph_module(graph.name)
    tol = {"atol": spec.parity.atol, "rtol": spec.parity.rtol, "dims": dims,
           "input_names": [t.name for t in graph.inputs]}
    results = {CPU: check_parity(module, onnx_path, inputs, provider=CPU, **tol).to_json()}
    reason = cuda_unavailable_reason()
    results[CUDA] = ({"skipped": reason} if reason else
                     check_parity(module, onnx_path, inputs, provider=CUDA, **tol).to_json())
    model.cpu()
    return results


def _format_parity(provider: str, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"{provider}: skipped ({result['skipped']})"
    from zoo_core.parity import ParityResult

    return str(ParityResult(**result))


# --- export ---------------------------------------------------------------------------------------------------------

def export(name: str, *, run: str | None = None, out: str | Path = "artifacts", onnx: bool = True,
           opset: int = 18, log: Log = print) -> list[Path]:
    """Export a finished run: check its weights load; with `onnx`, write one ONNX file per graph of the model
    (``model.onnx``; generation models ``encoder.onnx``, ``decoder_step.onnx`` ...) and check each one's parity
    with ONNX Runtime (CPU, and CUDA where present). Records everything in the manifest; returns the files written
    (the weights file alone without `onnx`).

    A parity failure is recorded, then raised as a `ZooError`.
    """
    spec, run_dir, manifest = finished_run(name, run, out)
    problems = check_hashes(run_dir, manifest)
    if problems:
        raise ZooError(f"run {run_dir} is damaged: {'; '.join(problems)}")
    model = load_run_model(spec, run_dir, manifest)
    if not onnx:
        log(f"{WEIGHTS}: {model.num_params():,} parameters load into {type(model).__name__}")
        return [run_dir / WEIGHTS]

    from zoo_core.onnx_export import export_graph

    graphs = {}
    for graph in run_graphs(spec, manifest, model):
        info = export_graph(model, graph, run_dir / graph.file, opset=opset, exporter=spec.onnx_exporter)
        graphs[graph.name] = {**info, "role": graph.role, **({"state": list(graph.state)} if graph.state else {}),
                              "parity": _parity(spec, model, graph, run_dir / graph.file)}
    first = next(iter(graphs.values()))
    manifest["onnx"] = {"opset": opset, "exporter": first["exporter"], "graphs": graphs}
    manifest.pop("parity", None)  # schema 1 kept parity beside "onnx"; it now lives in each graph
    manifest["versions"] = _versions(spec)
    manifest["updated"] = _now()
    write_manifest(run_dir, manifest)
    failed = []
    for graph_name, info in graphs.items():
        for provider, result in info["parity"].items():
            log(f"{info['file']}: {_format_parity(provider, result)}")
            if result.get("passed") is False:
                failed.append(f"{info['file']} on {provider}")
    if failed:
        raise ZooError(f"ONNX Runtime parity failed for {', '.join(failed)} in {run_dir} (recorded in its manifest)")
    return [run_dir / info["file"] for info in graphs.values()]


# --- verify ---------------------------------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    """The checks `verify` ran on a run: (what, passed, detail) each."""

    run_dir: Path
    checks: list[tuple[str, bool | None, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok is not False for _, ok, _ in self.checks)

    def add(self, what: str, ok: bool | None, detail: str = "") -> None:
        self.checks.append((what, ok, detail))


def verify(name: str, *, run: str | None = None, out: str | Path = "artifacts", log: Log = print) -> VerifyReport:
    """Re-check a finished run: every file's sha256, that the weights load, and (if exported) ONNX Runtime
    parity on CPU (and CUDA where present). Prints one line per check; raises a `ZooError` if any fails."""
    spec, run_dir, manifest = finished_run(name, run, out)
    report = VerifyReport(run_dir)
    damaged = set()
    for rel, record in manifest.get("files", {}).items():
        problem = check_hashes(run_dir, {"files": {rel: record}})
        report.add(f"sha256 {rel}", not problem, problem[0] if problem else record["sha256"][:16])
        if problem:
            damaged.add(rel)
    model = None
    if WEIGHTS in damaged:
        report.add("weights load", False, f"not loaded: {WEIGHTS} does not match its hash")
    else:
        try:
            model = load_run_model(spec, run_dir, manifest)
            report.add("weights load", True, f"{model.num_params():,} parameters into {type(model).__name__}")
        except ZooError as e:
            report.add("weights load", False, str(e))
    if "onnx" not in manifest:
        report.add("onnx parity", None, f"no ONNX export yet (zoo export {name} --onnx)")
    else:
        exported = manifest["onnx"].get("graphs") or {"model": manifest["onnx"]}  # schema 1: one model.onnx
        for graph in run_graphs(spec, manifest, model):
            info = exported.get(graph.name)
            if info is None:
                report.add(f"onnx parity {graph.file}", False, f"not exported (zoo export {name} --onnx)")
            elif info["file"] in damaged or WEIGHTS in damaged or model is None:
                report.add(f"onnx parity {info['file']}", False, "not checked: the ONNX file or the weights are "
                                                                 "damaged")
            else:
                for provider, result in _parity(spec, model, graph, run_dir / info["file"]).items():
                    report.add(f"onnx parity {info['file']}", None if "skipped" in result else result["passed"],
                               _format_parity(provider, result))
    for what, ok, detail in report.checks:
        log(f"{'ok  ' if ok else 'FAIL' if ok is False else 'skip'}  {what}: {detail}")
    if not report.passed:
        bad = [what for what, ok, _ in report.checks if ok is False]
        raise ZooError(f"verification of {run_dir} failed: {', '.join(bad)}")
    log(f"{run_dir}: all checks passed")
    return report
