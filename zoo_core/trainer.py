"""The Trainer: one training loop for every model of the zoo (d2l §3.2's ``Trainer``, production-grade).

What the loop does per step: zero grads, forward + loss under autocast, backward, optional global-norm clipping,
optimiser step, fold the step's metrics into on-device sums. Nothing in a step copies to the host: metrics and the
non-finite-loss check are read once per logging interval and at epoch ends.

Around the loop: device and precision resolution, DDP under torchrun (gloo on CPU, nccl on CUDA; only rank 0
writes), on the CPU a malloc that keeps freed memory (`zoo_core.devices.keep_freed_memory`) and subnormal floats
flushed to zero (`zoo_core.devices.flush_denormals`), a checkpoint each epoch
and on Ctrl-C, bit-for-bit resume (data order, RNG and metric sums are restored, mid-epoch too), progress (tqdm on a
terminal, plain lines otherwise), ``metrics.jsonl`` and ``curves.png``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo_core import distributed
from zoo_core.artifacts import atomic_path, check_hashes, file_records, no_space_error, replace_dir, write_json
from zoo_core.data.module import DataModule, TensorLoader
from zoo_core.devices import (
    channels_last, cpu_has_native_bf16, flush_denormals, keep_freed_memory, resolve_device, resolve_precision, tf32,
)
from zoo_core.distributed import DistEnv
from zoo_core.errors import (
    IntegrityError, NonFiniteLossError, NoSpaceError, TrainingInterrupted, WorkerLostError, ZooError,
)
from zoo_core.metrics import MetricAccumulator, plot_curves, write_jsonl
from zoo_core.model import Classifier, Model, Optimizer
from zoo_core.weights import load_weights, save_weights

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"


@dataclass
class FitResult:
    """What `Trainer.fit` did: final metrics, per-epoch history, speed, where."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    epochs: int
    steps: int
    seconds: float
    examples: int
    device: str
    precision: str
    world_size: int
    params_in_sync: bool | None = None
    unit: str = "examples"              # what `units` counts: the model's `unit` (examples, or tokens)
    units: float = 0.0                  # training units seen (all ranks): tokens for sequence models
    best_epoch: int | None = None       # with early stopping: the epoch whose weights the model holds
    stopped_early: bool = False       # ended before max_epochs for lack of improvement
    denormals_flushed: bool = False   # CPU training flushed subnormal floats to zero (`devices.flush_denormals`)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def units_per_s(self) -> float:
        """Training speed in the model's unit (tokens/s for sequence models: what their benchmarks compare)."""
        return self.units / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Progress:
    """Where training stands: what a checkpoint records and a resume restores."""

    epoch: int = 0            # epochs finished
    batch: int = 0            # batches of the current epoch already trained
    step: int = 0             # optimiser steps in total
    seconds: float = 0.0      # training time, validation excluded
    examples: int = 0         # training examples seen (all ranks)
    units: float = 0.0        # training units seen (all ranks): the sum of batch weights, e.g. tokens
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0       # early stopping: the best epoch so far (0: none yet) and the epochs since
    bad_epochs: int = 0


class _TrainingStep(nn.Module):
    """Routes forward() to the model's training_step, so that DDP's gradient hooks see the whole step."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return self.model.training_step(batch)


class Trainer:
    """Trains a `Model` on a `DataModule`.

    Args:
        max_epochs: epochs to train (an epoch is a full pass over this rank's share of the training data).
        max_steps: stop after this many optimiser steps in total, whatever the epoch.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (see `resolve_device`).
        precision: ``auto``, ``32``, ``bf16`` or ``16`` (autocast; see `resolve_precision`).
        gradient_clip_val: clip gradients to this global norm (the book's ``clip_gradients``); 0 turns it off.
        early_stop_patience: stop when the model's monitored validation metric (`Model.monitor`: ``val_acc`` for
            classifiers, ``val_loss`` otherwise) has not improved for this many epochs (d2l §5.5), then restore the
            best epoch's weights; with a `run_dir`, they are also kept in ``best/``. None: train every epoch.
        compile: ``torch.compile`` the model for training (True: the default inductor backend, or a backend's
            name); the weights and their names are those of the plain model.
        channels_last: keep 4-D activations in NHWC memory (faster convolutions on tensor cores). None: on CUDA,
            for models with 2-D convolutions.
        seed: seeds torch's RNG at the start of `fit` and orders the data; recorded in checkpoints.
        rng: ``zoo``: the zoo's streams (initialisation, then a re-seeded stream for training, each epoch's order
            from ``(seed, epoch)``: resumable, the same on every DDP rank). ``book``: replay the d2l reference's one
            stream at `seed`: `Model.init_like_book`, then the book's ``DataLoader`` draws for each epoch's order
            (`zoo_core.book_rng`); for comparing with the book's code seed for seed; one process, no resume, no
            compile.
        run_dir: where checkpoints, ``metrics.jsonl`` and ``curves.png`` go; None writes nothing.
        log_every_n_steps: how often metrics and the loss check are read from the device.
        progress: a tqdm bar (True), plain lines (False), or tqdm only on a terminal (None).
        log: where plain lines go (default: stderr).
    """

    def __init__(self, max_epochs: int = 1, *, max_steps: int | None = None, device: str = "auto",
                 precision: str = "auto", gradient_clip_val: float = 0.0,
                 early_stop_patience: int | None = None, compile: bool | str = False,
                 channels_last: bool | None = None, seed: int | None = 0, rng: str = "zoo",
                 run_dir: str | Path | None = None, log_every_n_steps: int = 50, progress: bool | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if max_epochs < 1:
            raise ZooError(f"max_epochs must be at least 1, got {max_epochs}")
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.device = device
        self.precision = precision
        self.gradient_clip_val = float(gradient_clip_val or 0.0)
        if early_stop_patience is not None and early_stop_patience < 1:
            raise ZooError(f"early_stop_patience must be at least 1, got {early_stop_patience}")
        self.early_stop_patience = early_stop_patience
        self.compile = compile
        self.channels_last = channels_last
        self.seed = seed
        if rng not in ("zoo", "book"):
            raise ZooError(f"rng must be zoo or book, got {rng!r}")
        self.rng = rng
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.progress = progress
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    # --- public ----------------------------------------------------------------------------------------------------
    def fit(self, model: Model, data: DataModule, ckpt_path: str | Path | None = None) -> FitResult:
        """Train `model` on `data`; with `ckpt_path` (a checkpoint folder), continue where it stopped.

        Raises `NonFiniteLossError` if the loss becomes NaN/inf (the last good checkpoint is kept) and
        `TrainingInterrupted` on Ctrl-C (after saving a checkpoint).
        """
        env = DistEnv.from_env()
        if self.rng == "book":
            self._check_book_rng(model, env, ckpt_path)
        device = resolve_device(self.device, env.local_rank)
        precision = resolve_precision(self.precision, device)
        if device.type == "cpu" and precision == "bf16" and cpu_has_native_bf16() is False and env.is_main:
            self.log("warning: this CPU has no bf16 instructions (AVX512-BF16 or AMX): --precision bf16 is emulated "
                     "and slower than fp32 here")
        joined = distributed.init_process_group(env, device)
        error: BaseException | None = None
        try:
            # TF32: training on CUDA only; subnormals: flushed on the CPU, where they cost the most (see the function)
            with tf32(device.type == "cuda"), distributed.sigterm_raises(env), \
                    (flush_denormals() if device.type == "cpu" else contextlib.nullcontext(False)) as flushed:
                result = self._fit(model, data, env, device, precision, Path(ckpt_path) if ckpt_path else None)
                result.denormals_flushed = flushed
                return result
        except distributed.Terminated as e:  # outside the epoch loop, which says where it stopped
            error = WorkerLostError(f"training stopped: {e}")
            raise error from e
        except BaseException as e:
            error = e
            raise
        finally:
            if joined:  # really gone before we return: see zoo_core.distributed
                distributed.destroy_process_group(error)

    # --- the loop --------------------------------------------------------------------------------------------------
    def _fit(self, model: Model, data: DataModule, env: DistEnv, device: torch.device, precision: str,
             ckpt_path: Path | None) -> FitResult:
        if self.seed is not None:
            torch.manual_seed(self.seed)
        if self.rng == "book":  # on the CPU, before anything else draws: the book builds its model there
            model.init_like_book()
        if device.type == "cpu":  # the step's large tensors stop costing page faults every step (see the function)
            keep_freed_memory()
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
        if channels_last:
            model.to(device, memory_format=torch.channels_last)
        else:
            model.to(device)
        optimizer = model.configure_optimizers()
        train_metrics = MetricAccumulator(model.metrics, device)
        state = _Progress()
        if ckpt_path is not None:
            state = self._load_checkpoint(ckpt_path, model, optimizer, train_metrics, device)

        runner: nn.Module = _TrainingStep(model)
        if env.distributed:
            runner = torch.nn.parallel.DistributedDataParallel(
                runner, device_ids=[device.index] if device.type == "cuda" else None)
        reduce = distributed.all_reduce_sum if env.distributed else None
        train_loader = self._prepare(data.train_dataloader(), device, env, pad=True, channels_last=channels_last)
        if self.rng == "book":
            train_loader = train_loader.replace(book_shuffle=True)
        val_loader = self._prepare(data.val_dataloader(), device, env, pad=False, channels_last=channels_last)
        _check_labels(model, {"training": train_loader, "validation": val_loader})
        if self.compile:
            # in place (nn.Module.compile): parameter names, checkpoints and exports stay those of the plain model
            model.compile(**({"backend": self.compile} if isinstance(self.compile, str) else {}))
        autocast = self._autocast(device, precision)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
        params = [p for p in model.parameters() if p.requires_grad]
        recent_losses = torch.zeros(self.log_every_n_steps, device=device)  # checked for NaN/inf once per interval
        write = env.is_main and self.run_dir is not None
        kill_at = env.kill_at_step()
        stop = False
        best_weights = self._load_best(ckpt_path, model) if ckpt_path is not None else None

        for epoch in range(state.epoch, self.max_epochs):
            model.train()
            if state.batch == 0:
                train_metrics.reset()
            bar = self._bar(epoch, len(train_loader), state.batch, env)
            pending = 0  # steps since the last NaN/inf check
            started: float | None = time.perf_counter()
            try:
                for batch in train_loader.iterate(epoch, start=state.batch):
                    optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        out = runner(batch)
                    loss = out["loss"]
                    scaler.scale(loss).backward()
                    if self.gradient_clip_val > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
                    if scaler.is_enabled():
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    train_metrics.add(out, model.batch_weight(batch))
                    recent_losses[pending].copy_(loss.detach())
                    pending += 1
                    state.step += 1
                    if state.step == kill_at:  # a fault-tolerance test: this process is lost here
                        os.kill(os.getpid(), signal.SIGKILL)
                    state.batch += 1
                    state.examples += len(batch[0]) * env.world_size
                    stop = self.max_steps is not None and state.step >= self.max_steps
                    if pending == self.log_every_n_steps or stop:
                        self._check_finite(recent_losses[:pending], state.step, env)
                        pending = 0
                        if bar is not None:
                            bar.set_postfix(train_metrics.compute(), refresh=False)
                    if bar is not None:
                        bar.update()
                    if stop:
                        break
                self._check_finite(recent_losses[:pending], state.step, env)
                pending = 0
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                state.seconds += time.perf_counter() - started
                started = None  # counted: validation and checkpointing are not training time
                if bar is not None:
                    bar.close()
                state.units += train_metrics.total_weight(reduce)
                record = {"epoch": epoch + 1, "step": state.step,
                          **{f"train_{k}": v for k, v in model.epoch_metrics(train_metrics.compute(reduce)).items()},
                          **({f"val_{k}": v for k, v in self.validate(model, val_loader, autocast, reduce).items()}
                             if val_loader.dataset_size else {}),  # no validation split: a final refit
                          "seconds": round(state.seconds, 4),
                          "examples_per_s": round(state.examples / state.seconds, 1) if state.seconds else None}
                if model.unit != "examples":
                    record[f"{model.unit}_per_s"] = round(state.units / state.seconds, 1) if state.seconds else None
                state.history.append(record)
                state.epoch, state.batch = epoch + 1, 0
                if self.early_stop_patience is not None:
                    if self._improved(model, record, state):
                        state.best_epoch, state.bad_epochs = epoch + 1, 0
                        best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        if write:
                            self._save_best(model, record, state)
                    else:
                        state.bad_epochs += 1
                        stop = stop or state.bad_epochs >= self.early_stop_patience
                if write:
                    self._save_checkpoint(model, optimizer, train_metrics, state)
                    write_jsonl(self.run_dir / "metrics.jsonl", state.history)
                if env.is_main:
                    self.log(_format_record(record, self.max_epochs))
                    if (self.early_stop_patience is not None and state.bad_epochs >= self.early_stop_patience
                            and state.epoch < self.max_epochs):
                        self.log(f"early stopping: {model.monitor[0]} has not improved for {state.bad_epochs} "
                                 f"epochs; keeping epoch {state.best_epoch}'s weights")
            except Exception as e:
                reason = distributed.lost_worker(e) if env.distributed else None
                if reason is None:
                    raise
                # no new checkpoint: this rank's last step may have gone half through; the epoch's checkpoint is whole
                kept = (f"; the last checkpoint is {self.run_dir / CHECKPOINT_DIR}"
                        if self.run_dir is not None and (self.run_dir / CHECKPOINT_DIR).is_dir() else "")
                raise WorkerLostError(f"training stopped at epoch {epoch + 1}, step {state.step}: {reason}{kept}") from e
            except KeyboardInterrupt:
                if bar is not None:
                    bar.close()
                if started is not None:
                    state.seconds += time.perf_counter() - started
                # never checkpoint a NaN; no collective here: ranks may be interrupted at different steps
                self._check_finite(recent_losses[:pending], state.step, DistEnv())
                where = f"epoch {epoch + 1}, step {state.step}"
                if write:
                    self._save_checkpoint(model, optimizer, train_metrics, state)
                    raise TrainingInterrupted(f"interrupted at {where}; checkpoint saved in "
                                              f"{self.run_dir / CHECKPOINT_DIR}") from None
                raise TrainingInterrupted(f"interrupted at {where}") from None
            if stop:
                break

        if write and state.history:
            plot_curves(state.history, self.run_dir / "curves.png", title=type(model).__name__)
        in_sync = distributed.parameters_in_sync(model.parameters()) if env.distributed else None
        final = state.history[-1] if state.history else {}
        if best_weights is not None:  # early stopping hands back the best epoch, not the last
            model.load_state_dict(best_weights)
            final = state.history[state.best_epoch - 1]
        return FitResult(
            metrics={k: v for k, v in final.items() if k.startswith(("train_", "val_"))},
            history=state.history, epochs=state.epoch, steps=state.step, seconds=state.seconds,
            examples=state.examples, device=str(device), precision=precision, world_size=env.world_size,
            params_in_sync=in_sync, unit=model.unit, units=state.units, best_epoch=state.best_epoch if best_weights is not None else None,
            stopped_early=self.early_stop_patience is not None and state.bad_epochs >= self.early_stop_patience
            and state.epoch < self.max_epochs)

    @staticmethod
    def _improved(model: Model, record: dict[str, Any], state: _Progress) -> bool:
        """Whether this epoch's monitored metric beats the best epoch's (strictly; NaN never does)."""
        name, mode = model.monitor
        if name not in record:
            raise ZooError(f"early stopping monitors {name}, which {type(model).__name__} does not report "
                           f"(it reports {', '.join(k for k in record if k.startswith('val_'))})")
        value = record[name]
        if not math.isfinite(value):
            return False
        if state.best_epoch == 0:
            return True
        best = state.history[state.best_epoch - 1][name]
        return value < best if mode == "min" else value > best

    def _save_best(self, model: Model, record: dict[str, Any], state: _Progress) -> None:
        """Keep the best epoch's weights in ``best/`` (swapped in whole, like a checkpoint)."""
        assert self.run_dir is not None
        with _folder_swapped_in(self.run_dir / BEST_DIR) as tmp:
            save_weights(model, tmp / "model.safetensors")
            write_json(tmp / "best.json", {"files": file_records(tmp), "epoch": state.best_epoch, "step": state.step,
                                           "monitor": model.monitor[0], "value": record[model.monitor[0]]})

    def _load_best(self, ckpt_path: Path, model: Model) -> dict[str, Tensor] | None:
        """On resume: the best epoch's weights kept beside the checkpoint, checked against their hashes."""
        best = ckpt_path.parent / BEST_DIR
        index = best / "best.json"
        if self.early_stop_patience is None or not index.is_file():
            return None
        problems = check_hashes(best, json.loads(index.read_text(encoding="utf-8")))
        if problems:
            raise IntegrityError(f"best weights {best} are damaged: {'; '.join(problems)}")
        shadow = copy.deepcopy(model)  # load_weights re-ties shared weights and names any mismatch
        load_weights(shadow, best / "model.safetensors")
        return shadow.state_dict()

    @torch.no_grad()
    def validate(self, model: Model, loader: TensorLoader, autocast: contextlib.AbstractContextManager,
                 reduce: Callable[[Tensor], None] | None = None) -> dict[str, float]:
        """Mean metrics over `loader` in eval mode (one host sync at the end), with the model's derived epoch
        metrics (`Model.epoch_metrics`: perplexity)."""
        model.eval()
        metrics = MetricAccumulator(model.metrics, next(model.parameters()).device)
        for batch in loader:
            with autocast:
                out = model.validation_step(batch)
            metrics.add(out, model.batch_weight(batch))
        model.train()
        return model.epoch_metrics(metrics.compute(reduce))

    # --- helpers ---------------------------------------------------------------------------------------------------
    def _check_book_rng(self, model: Model, env: DistEnv, ckpt_path: str | Path | None) -> None:
        """``rng="book"`` replays one process's stream from its start: refuse what cannot (one line each)."""
        if not model.replays_book_rng:
            raise ZooError(f"--rng book: {type(model).__name__} cannot replay the book's random stream "
                           "(use --rng zoo)")
        if self.seed is None:
            raise ZooError("--rng book needs a seed")
        if env.world_size > 1:
            raise ZooError("--rng book replays one process's random stream: not under torchrun")
        if ckpt_path is not None:
            raise ZooError("--rng book cannot resume: the stream's position is not in the checkpoint; train again")
        if self.compile:
            raise ZooError("--rng book does not run with --compile")

    def _prepare(self, loader: TensorLoader, device: torch.device, env: DistEnv, pad: bool,
                 channels_last: bool = False) -> TensorLoader:
        if not isinstance(loader, TensorLoader):
            raise ZooError(f"the trainer batches from a TensorLoader; {type(loader).__name__} is not one")
        loader = loader.to(device).replace(seed=self.seed or 0)
        if channels_last:
            loader = loader.replace(transform=_to_channels_last(loader.transform))
        return loader.shard(env.rank, env.world_size, pad=pad) if env.distributed else loader

    @staticmethod
    def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
        if precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def _check_finite(self, losses: Tensor, step: int, env: DistEnv) -> None:
        """Raise `NonFiniteLossError` naming the first step whose loss was NaN/inf (one host sync)."""
        if losses.numel() == 0:
            return
        bad = ~torch.isfinite(losses)
        flag = bad.any().float().reshape(1)
        if env.distributed:
            distributed.all_reduce_max(flag)
        if flag.item():
            first = int(bad.nonzero()[0].item()) if bad.any() else 0
            bad_step = step - losses.numel() + first + 1
            kept = (f"; the last good checkpoint is {self.run_dir / CHECKPOINT_DIR}"
                    if self.run_dir is not None and (self.run_dir / CHECKPOINT_DIR).is_dir() else "")
            raise NonFiniteLossError(f"the loss became {float(losses[first]) if bad.any() else 'NaN/inf'} at step "
                                     f"{bad_step}; lower the learning rate or clip gradients{kept}")

    def _bar(self, epoch: int, total: int, initial: int, env: DistEnv) -> Any:
        use = self.progress if self.progress is not None else sys.stderr.isatty()
        if not (use and env.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{self.max_epochs}", leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    # --- checkpoints -----------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model: Model, optimizer: Optimizer, train_metrics: MetricAccumulator,
                         state: _Progress) -> Path:
        """Write weights (safetensors) and trainer state (tensors and plain values, loaded with weights_only=True)
        to a new folder, then swap it in place of the previous checkpoint."""
        assert self.run_dir is not None
        target = self.run_dir / CHECKPOINT_DIR
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        trainer_state = io.BytesIO()  # written by Python's file I/O below, whose errors say what went wrong
        torch.save({"optimizer": optimizer.state_dict(), "metrics": train_metrics.state_dict(), "rng": rng,
                    "progress": {"epoch": state.epoch, "batch": state.batch, "step": state.step,
                                 "seconds": state.seconds, "examples": state.examples, "units": state.units,
                                 "history": json.dumps(state.history), "best_epoch": state.best_epoch,
                                 "bad_epochs": state.bad_epochs},
                    "seed": self.seed}, trainer_state)
        with _folder_swapped_in(target) as tmp:
            save_weights(model, tmp / "model.safetensors")
            with atomic_path(tmp / "state.pt") as path:
                path.write_bytes(trainer_state.getbuffer())
            write_json(tmp / "checkpoint.json", {"files": file_records(tmp), "epoch": state.epoch,
                                                 "step": state.step})
        return target

    def _load_checkpoint(self, path: Path, model: Model, optimizer: Optimizer, train_metrics: MetricAccumulator,
                         device: torch.device) -> _Progress:
        index = path / "checkpoint.json"
        if not index.is_file():
            raise ZooError(f"{path} is not a checkpoint (no checkpoint.json)")
        problems = check_hashes(path, json.loads(index.read_text(encoding="utf-8")))
        if problems:
            raise IntegrityError(f"checkpoint {path} is damaged: {'; '.join(problems)}")
        blob = torch.load(path / "state.pt", map_location=device, weights_only=True)
        if blob.get("seed") != self.seed:
            raise ZooError(f"checkpoint {path} was trained with seed {blob.get('seed')}, not {self.seed}: the data "
                           f"order would differ")
        load_weights(model, path / "model.safetensors")
        optimizer.load_state_dict(blob["optimizer"])
        train_metrics.load_state_dict(blob["metrics"])
        torch.set_rng_state(blob["rng"]["torch"].cpu())
        if "cuda" in blob["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in blob["rng"]["cuda"]])
        p = blob["progress"]
        return _Progress(epoch=p["epoch"], batch=p["batch"], step=p["step"], seconds=p["seconds"],
                         examples=p["examples"], units=p.get("units", 0.0), history=json.loads(p["history"]),
                         best_epoch=p.get("best_epoch", 0), bad_epochs=p.get("bad_epochs", 0))


@contextlib.contextmanager
def _folder_swapped_in(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds, it replaces `target` whole. On
    failure (a full disk, Ctrl-C) the temporary folder is removed and `target` is left as it was."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        replace_dir(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        full = no_space_error(e, target)
        if full is None:
            raise
        # name the file by where it was going (checkpoint/model.safetensors), not by the folder just removed
        raise NoSpaceError(str(full).replace(str(tmp), str(target))) from e


@torch.no_grad()
def _check_labels(model: Model, loaders: dict[str, TensorLoader]) -> None:
    """Before the first step: a classifier's labels must lie in ``[0, classes)``, where ``classes`` is the size of the
    last dimension of its output (one forward pass on two examples, in eval mode). Otherwise training would end in an
    ``IndexError`` at some step (or a device-side assert on CUDA) instead of a user error. Reads each split's label
    range once (one host sync per split), never per step."""
    if not isinstance(model, Classifier):
        return
    classes = None
    for split, loader in loaders.items():
        labels = loader.tensors[-1]
        if not loader.dataset_size or labels.is_floating_point():
            continue  # no data, or class probabilities rather than class indices
        if classes is None:
            batch = tuple(t[:2] for t in loader.tensors)
            batch = loader.transform(batch) if loader.transform else batch
            was_training = model.training
            model.eval()
            classes = model(*batch[:-1]).shape[-1]
            model.train(was_training)
        low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
        if low < 0 or high >= classes:
            fix = (f" (--set num_outputs={high + 1})" if "num_outputs" in getattr(model, "hparams", {}) and low >= 0
                   else "")
            raise ZooError(f"the {split} labels run from {low} to {high}, but {type(model).__name__} scores "
                           f"{classes} classes (labels 0 to {classes - 1}): give the model as many outputs as the "
                           f"data has classes{fix}")


def _to_channels_last(transform: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]] | None) -> Callable:
    """`transform`, then 4-D floating-point tensors in channels-last memory (on the device, one copy per batch)."""
    def apply(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        batch = transform(batch) if transform else batch
        return tuple(channels_last(t) if t.dim() == 4 and t.is_floating_point() else t for t in batch)
    return apply


def _format_record(record: dict[str, Any], max_epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{max_epochs}", f"step {record['step']}"]
    for key, value in record.items():
        if key.startswith(("train_", "val_")) and isinstance(value, float) and math.isfinite(value):
            parts.append(f"{key} {value:.4f}")
    if record.get("tokens_per_s"):
        parts.append(f"{record['seconds']:.1f}s {record['tokens_per_s']:,.0f} tokens/s")
    elif record.get("examples_per_s"):
        parts.append(f"{record['seconds']:.1f}s {record['examples_per_s']:,.0f} ex/s")
    return "  ".join(parts)

