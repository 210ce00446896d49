"""The Trainer: it learns, averages metrics correctly, resumes bit for bit, stops on NaN, clips, picks devices."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from zoo_core import (
    Classifier, NonFiniteLossError, Trainer, TrainingInterrupted, ZooError, get_data, get_model, resolve_device,
)
from zoo_core.data.fashion_mnist import FashionMNIST
from zoo_core.devices import cpu_has_native_bf16, resolve_precision


class DropoutNet(Classifier):
    """A small classifier with dropout, so that resuming must restore the RNG to be bit-for-bit."""

    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, X):
        return self.net(X)

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 1, 28, 28),)


def dropout_setup(seed=0):
    torch.manual_seed(seed)
    return DropoutNet(), FashionMNIST(batch_size=32, synthetic=True, num_train=160, num_val=64)


def quiet(**kwargs):
    return Trainer(device="cpu", progress=False, log=lambda line: None, **kwargs)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_fit_learns_the_book_regression():
    model, data = get_model("linreg", preset="book"), get_data("linreg", preset="book")
    result = quiet(max_epochs=3).fit(model, data)
    assert result.metrics["val_loss"] < 1e-3  # noise variance is 1e-4
    assert result.epochs == 3 and result.steps == 3 * 32  # 1000 examples, batch 32: 31 full batches + 1
    assert result.examples == 3 * 1000
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.history[0]["val_loss"] > result.history[-1]["val_loss"]


def test_epoch_metrics_are_example_weighted_means():
    """Batches of 7 over 100 examples (the last one short): the epoch loss is the mean over all examples."""
    model = get_model("linreg-scratch", preset="book")
    data = get_data("linreg-scratch", preset="book", num_val=100, batch_size=7)
    X, y = data.splits()["val"]
    metrics = quiet().validate(model, data.val_dataloader(), contextlib.nullcontext())
    with torch.no_grad():
        assert metrics["loss"] == pytest.approx(model.loss(model(X), y).item(), rel=1e-5)


def test_resume_after_an_epoch_is_bit_for_bit(tmp_path):
    model, data = dropout_setup()
    straight = quiet(max_epochs=3).fit(model, data)
    expected = params(model)

    model, data = dropout_setup()
    quiet(max_epochs=1, run_dir=tmp_path).fit(model, data)
    model, data = dropout_setup(seed=123)  # initial weights must come from the checkpoint
    resumed = quiet(max_epochs=3, run_dir=tmp_path).fit(model, data, ckpt_path=tmp_path / "checkpoint")
    assert all(torch.equal(a, b) for a, b in zip(params(model), expected))
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    assert resumed.steps == straight.steps
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_ctrl_c_mid_epoch_saves_a_checkpoint_and_resume_is_bit_for_bit(tmp_path):
    model, data = dropout_setup()
    quiet(max_epochs=2).fit(model, data)
    expected = params(model)

    model, data = dropout_setup()
    calls = {"n": 0}
    step = model.training_step

    def interrupted_step(batch):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, third batch (5 batches per epoch)
            raise KeyboardInterrupt
        return step(batch)

    model.training_step = interrupted_step
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 7"):
        quiet(max_epochs=2, run_dir=tmp_path).fit(model, data)
    saved = json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())
    assert saved["step"] == 7

    model, data = dropout_setup(seed=7)
    quiet(max_epochs=2, run_dir=tmp_path).fit(model, data, ckpt_path=tmp_path / "checkpoint")
    assert all(torch.equal(a, b) for a, b in zip(params(model), expected))


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model, data = dropout_setup()
    calls = {"n": 0}
    step = model.training_step

    def poisoned_step(batch):
        calls["n"] += 1
        out = step(batch)
        return {**out, "loss": out["loss"] * float("nan")} if calls["n"] >= 7 else out

    model.training_step = poisoned_step
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 7;.*last good checkpoint"):
        quiet(max_epochs=3, run_dir=tmp_path, log_every_n_steps=50).fit(model, data)
    saved = json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())
    assert saved["epoch"] == 1 and saved["step"] == 5  # epoch 1's checkpoint, not the poisoned epoch 2
    restored = DropoutNet()
    quiet(max_epochs=1).fit(restored, data, ckpt_path=tmp_path / "checkpoint")  # loads, already done: no steps
    assert all(torch.isfinite(p).all() for p in restored.parameters())


def test_gradient_clipping_bounds_each_update():
    """With SGD, one clipped step moves the parameters by at most lr * clip (global norm)."""
    model = get_model("linreg-scratch", preset="book", lr=0.5)
    data = get_data("linreg-scratch", preset="book")
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    quiet(max_epochs=1, max_steps=1, gradient_clip_val=0.01).fit(model, data)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.5 * 0.01, rel=1e-3)


def test_bf16_autocast_trains_on_cpu():
    model, data = get_model("softmax", preset="tiny"), get_data("softmax", preset="tiny")
    result = quiet(max_epochs=3, precision="bf16").fit(model, data)
    assert result.precision == "bf16"
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, native):
    """Emulated bf16 products are several times slower than float32's (`cpu_has_native_bf16`): said once, up front;
    nothing is said where the CPU has them or where that cannot be told."""
    monkeypatch.setattr("zoo_core.trainer.cpu_has_native_bf16", lambda: native)
    lines = []
    Trainer(max_epochs=1, device="cpu", precision="bf16", progress=False, log=lines.append).fit(
        get_model("softmax", preset="tiny"), get_data("softmax", preset="tiny"))
    warned = [line for line in lines if "no bf16 instructions" in line]
    assert len(warned) == (1 if native is False else 0)
    assert lines[-1].startswith("epoch 1/1")


def test_cpu_has_native_bf16_reads_the_flags():
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\nbogomips\t: 4800\n"
    assert cpu_has_native_bf16(flags.format("avx512_bf16 avx512_vnni")) is True  # AMD Zen 4, Intel Cooper Lake on
    assert cpu_has_native_bf16(flags.format("amx_bf16 amx_tile")) is True        # Intel Sapphire Rapids on
    assert cpu_has_native_bf16(flags.format("avx512_vnni")) is False
    assert cpu_has_native_bf16("processor\t: 0\nFeatures\t: fp asimd bf16\n") is None  # not x86's flags
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):  # this machine's /proc/cpuinfo
        assert isinstance(cpu_has_native_bf16(), bool)


def test_plain_progress_lines_one_per_epoch():
    lines = []
    Trainer(max_epochs=2, device="cpu", progress=False, log=lines.append).fit(
        get_model("softmax", preset="tiny"), get_data("softmax", preset="tiny"))
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "val_acc" in lines[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_device_errors_are_clear():
    with pytest.raises(ZooError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ZooError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ZooError, match="precision 16 needs CUDA"):
        resolve_precision("16", torch.device("cpu"))
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_precision("auto", torch.device("cpu")) == "32"


class TinyConvNet(Classifier):
    def __init__(self, lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, X):
        return self.net(X)

    def example_inputs(self, batch_size=2):
        return (torch.rand(batch_size, 1, 28, 28),)


def test_channels_last_feeds_nhwc_batches_and_learns_the_same():
    data = FashionMNIST(batch_size=32, synthetic=True, num_train=128, num_val=64)
    seen = []
    results = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = TinyConvNet()
        # one input channel is NCHW and NHWC at once: look at the second convolution's 4-channel input
        model.net[2].register_forward_pre_hook(lambda module, args: seen.append(
            (channels_last, args[0].is_contiguous(memory_format=torch.channels_last))))
        results[channels_last] = quiet(max_epochs=2, channels_last=channels_last).fit(model, data)
        assert model.net[2].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert all(nhwc for cl, nhwc in seen if cl) and not any(nhwc for cl, nhwc in seen if not cl)
    assert results[True].metrics["val_loss"] == pytest.approx(results[False].metrics["val_loss"], rel=1e-4)


def test_channels_last_views_single_channel_batches_as_nhwc():
    from zoo_core import channels_last

    X = torch.rand(4, 1, 6, 5)
    Y = channels_last(X)
    assert torch.equal(X, Y) and Y.stride() == (30, 1, 5, 1)  # NHWC strides, same memory, no copy
    assert Y.data_ptr() == X.data_ptr()
    Z = channels_last(torch.rand(4, 3, 6, 5))
    assert Z.stride() == (90, 1, 15, 3)


FAULTS = """
import resource, torch
from zoo_core.devices import keep_freed_memory

def faults_of_three():  # 64 MB tensors, made and freed three times
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.ones(16_000_000)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_three()
assert keep_freed_memory()
faults_of_three()  # the heap grows to hold them
# the least of three later rounds: a kernel that reclaims idle memory (DAMON here) may take the kept pages back
# between two rounds, and then one round faults again
print(default, min(faults_of_three() for _ in range(3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
def test_keep_freed_memory_ends_the_page_faults_of_large_tensors() -> None:
    """A 64 MB tensor made again and again: with glibc's defaults each one is a fresh mapping (16,000 page faults);
    once freed memory is kept, later ones reuse it. In a fresh process: a CPU training in this one already kept it."""
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    default, kept = map(int, out.stdout.split())
    pages = 3 * 16_000_000 * 4 // 4096
    assert default > pages * 0.9
    assert kept < pages // 10


def test_cpu_training_keeps_freed_memory(monkeypatch):
    """`Trainer.fit` on the CPU has malloc keep freed memory (`keep_freed_memory`), before the first step."""
    calls = []
    monkeypatch.setattr("zoo_core.trainer.keep_freed_memory", lambda: calls.append("kept") or True)
    data = FashionMNIST(batch_size=32, synthetic=True, num_train=64, num_val=32)
    quiet(max_epochs=1).fit(DropoutNet(), data)
    assert calls == ["kept"]


SUBNORMALS = """
import torch
from zoo_core.devices import denormals_flushed, flush_denormals

torch.set_num_threads(2)
x = torch.full((1_000_000,), 1e-39)  # subnormal; 2 threads each take half of a product
(x * 1.0).sum()  # the OpenMP workers start here, before the mode changes
def flushed():
    return round(((x * 1.0) == 0).float().mean().item(), 3)
before = denormals_flushed(), flushed()
with flush_denormals() as on:
    inside = denormals_flushed(), flushed()
print(on, before, inside, (denormals_flushed(), flushed()))
"""


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormals")
def test_flush_denormals_reaches_every_thread_and_restores_the_mode() -> None:
    """Inside `flush_denormals` a product of subnormals is 0 on the OpenMP workers too (``torch.set_flush_denormal``
    alone sets the calling thread: half of the elements would stay), and after it every thread computes them again.
    In a fresh process: the threads and the mode are process state."""
    out = subprocess.run([sys.executable, "-c", SUBNORMALS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "True (False, 0.0) (True, 1.0) (False, 0.0)"


def test_cpu_training_flushes_denormals_and_restores_the_mode():
    """`Trainer.fit` trains on the CPU with subnormals flushed (`flush_denormals`), says so in its result, and leaves
    the mode as it found it."""
    from zoo_core.devices import denormals_flushed

    seen = []

    class Probe(DropoutNet):
        def training_step(self, batch):
            seen.append(denormals_flushed())
            return super().training_step(batch)

    data = FashionMNIST(batch_size=32, synthetic=True, num_train=64, num_val=32)
    can_flush = torch.set_flush_denormal(False)
    result = quiet(max_epochs=1).fit(Probe(), data)
    assert seen == [can_flush] * 2 and result.denormals_flushed is can_flush
    assert not denormals_flushed()


def test_compile_trains_the_same_model_with_the_same_weight_names():
    """``compile`` goes through torch.compile (the eager backend here: the wiring, not inductor's speed)."""
    data = FashionMNIST(batch_size=32, synthetic=True, num_train=128, num_val=64)
    torch.manual_seed(0)
    plain = TinyConvNet()
    quiet(max_epochs=1).fit(plain, data)
    torch._dynamo.reset()
    torch.manual_seed(0)
    compiled = TinyConvNet()
    quiet(max_epochs=1, compile="eager").fit(compiled, data)
    assert compiled._compiled_call_impl is not None  # it really ran compiled
    assert list(compiled.state_dict()) == list(plain.state_dict())
    for a, b in zip(plain.parameters(), compiled.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def gpu_data():
    return FashionMNIST(batch_size=64, synthetic=True, num_train=512, num_val=128, resize=32)


@pytest.mark.gpu
def test_cuda_training_uses_bf16_channels_last_and_device_resident_batches():
    """On CUDA by default: bf16 autocast, channels_last for conv nets, batches already on the GPU."""
    torch.manual_seed(0)
    model = TinyConvNet()
    seen = []
    model.net[2].register_forward_pre_hook(lambda m, args: seen.append(
        (args[0].device.type, args[0].dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
    result = Trainer(max_epochs=3, device="cuda", progress=False, log=lambda line: None).fit(model, gpu_data())
    assert result.precision == "bf16" and result.device.startswith("cuda")
    assert model.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(device == "cuda" and nhwc for device, _, nhwc in seen)
    assert any(dtype == torch.bfloat16 for _, dtype, _ in seen)  # autocast: the second conv gets bf16 activations
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.gpu
def test_cuda_compile_matches_eager_training():
    results = {}
    for compile in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        results[compile] = Trainer(max_epochs=2, device="cuda", precision="32", compile=compile, progress=False,
                                   log=lambda line: None).fit(TinyConvNet(), gpu_data())
    assert results[True].metrics["val_acc"] == pytest.approx(results[False].metrics["val_acc"], abs=0.03)
    assert results[True].metrics["val_loss"] == pytest.approx(results[False].metrics["val_loss"], rel=0.05)
