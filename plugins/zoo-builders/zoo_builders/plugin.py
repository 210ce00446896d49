"""Registers chapter 6's models, its synthetic dataset and ``zoo bench matmul``. Imports no torch (``zoo list``
stays fast): builders are strings, and the benchmark imports torch when it runs."""

from __future__ import annotations

from zoo_core import DataSpec, ModelSpec, Preset, hookimpl

DATASET = "builders-synthetic"
BOOK_DATA = {"num_train": 1000, "num_val": 200, "batch_size": 32}
TINY_DATA = {"num_train": 64, "num_val": 32, "batch_size": 16}


def _presets(book: dict, tiny: dict, book_params: int, tiny_params: int, num_inputs: int = 20,
             num_outputs: int = 10, lr: float = 0.1) -> dict[str, Preset]:
    data = {"num_inputs": num_inputs, "num_outputs": num_outputs}
    return {
        "book": Preset(model={**book, "lr": lr}, data={**data, **BOOK_DATA}, train={"max_epochs": 10},
                       num_params=book_params,
                       summary=f"the book's sizes; 1000 synthetic examples, lr {lr}, 10 epochs"),
        "tiny": Preset(model={**tiny, "lr": lr}, data={**data, **TINY_DATA}, train={"max_epochs": 1},
                       num_params=tiny_params),
    }


def _spec(name: str, cls: str, section: str, summary: str, presets: dict[str, Preset], num_inputs: int = 20,
          num_outputs: int = 10, tags: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name=name, builder=f"zoo_builders.models:{cls}", chapter=6, section=section, summary=summary,
                     task="regression", dataset=DATASET, presets=presets, tags=tags,
                     inputs=[f"X: float32[batch, {num_inputs}]"], outputs=[f"y_hat: float32[batch, {num_outputs}]"])


@hookimpl
def zoo_register_datasets(register):
    register(DataSpec(DATASET, "zoo_builders.data:BuildersData",
                      "X ~ U(0, 1)^d, y = tanh(2 (X - 0.5) W / sqrt(d)) + noise, W fixed by the seed (chapter 6)"))


@hookimpl
def zoo_register_models(register):
    mlp = {"num_hiddens": 256}, {"num_hiddens": 16}
    register(_spec("my-sequential", "MySequentialMLP", "6.1",
                   "MLP 20-256-10 in MySequential, the book's nn.Sequential from scratch (lazy layers)",
                   _presets(*mlp, 7946, 506), tags=("lazy",)))
    register(_spec("fixed-hidden-mlp", "FixedHiddenNet", "6.1",
                   "FixedHiddenMLP: constant buffer weight, one layer used twice, halving loop in closed form",
                   _presets({}, {}, 420, 420, num_outputs=1), num_outputs=1, tags=("lazy", "tied")))
    register(_spec("chimera", "Chimera", "6.1", "The chimera: NestMLP, a linear layer and FixedHiddenMLP in sequence",
                   _presets({}, {}, 4712, 4712, num_outputs=1), num_outputs=1, tags=("lazy", "tied")))
    register(_spec("parallel-mlp", "ParallelMLP", "6.1",
                   "Parallel: MLP branches of 12 and 24 units concatenated (36 features), then a linear head",
                   _presets({"branches": [12, 24]}, {"branches": [4, 8]}, 1126, 382), tags=("lazy",)))
    register(_spec("repeat-mlp", "RepeatMLP", "6.1",
                   "Block factory: n Linear-ReLU blocks (sequential, parallel-sum/concat or residual) between in/out",
                   _presets({"num_hiddens": 256, "num_blocks": 2, "mode": "sequential"},
                            {"num_hiddens": 16, "num_blocks": 2, "mode": "sequential"}, 139530, 1050),
                   tags=("lazy",)))
    register(_spec("tied-mlp", "TiedMLP", "6.2",
                   "Tied parameters: one 8-unit linear layer used twice, one parameter set, gradients summed",
                   _presets({}, {}, 249, 249, num_outputs=1), num_outputs=1, tags=("lazy", "tied")))
    register(_spec("centered-mlp", "CenteredMLP", "6.5", "CenteredLayer (X - mean, per example) between two "
                   "linear layers", _presets({"num_hiddens": 128}, {"num_hiddens": 16}, 3978, 506), tags=("lazy",)))
    register(_spec("my-linear-mlp", "MyLinearMLP", "6.5",
                   "MyLinear(64, 8), MyLinear(8, 1): a linear layer from its own parameters",
                   _presets({}, {}, 529, 529, num_inputs=64, num_outputs=1, lr=0.03), num_inputs=64, num_outputs=1))
    register(_spec("tensor-reduction", "TensorReductionNet", "6.5",
                   "Tensor reduction layer y_k = sum_ij W_ijk x_i x_j (a quadratic form per output)",
                   _presets({}, {}, 4000, 4000)))
    register(_spec("fourier-mlp", "FourierMLP", "6.5",
                   "Leading half of the input's DFT coefficients (rfft's n//2+1, as real/imag) into an MLP",
                   _presets(*mlp, 8458, 538), tags=("lazy",)))


@hookimpl
def zoo_register_commands(cli):
    import click

    @cli.group("bench")
    def bench() -> None:
        """Micro-benchmarks of the book (chapter 6: matrix products on CPU and GPU)."""

    @bench.command("matmul")
    @click.option("--device", "devices", multiple=True, metavar="DEVICE",
                  help="cpu, cuda, cuda:N or mps (repeatable).  [default: cpu, and cuda where there is one]")
    @click.option("--large", type=click.IntRange(min=1), default=1024, show_default=True,
                  help="Size n of the large n x n products.")
    @click.option("--small", type=click.IntRange(min=1), default=16, show_default=True,
                  help="Size n of the small n x n products.")
    @click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
                  help="Large products timed (small ones: 200 times as many).")
    @click.option("--products", type=click.IntRange(min=1), default=1000, show_default=True,
                  help="Products whose Frobenius norms are logged.")
    @click.option("--size", type=click.IntRange(min=1), default=100, show_default=True,
                  help="Size of the matrices whose norms are logged.")
    @click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: torch's choice).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def matmul(devices: tuple[str, ...], large: int, small: int, repeat: int, products: int, size: int,
               threads: int | None, as_json: bool) -> None:
        """Large vs small matrix products, and logging norms one .item() at a time vs once at the end (d2l 6.7)."""
        import json

        import torch

        from zoo_builders.bench import format_table, matmul_benchmark
        from zoo_core import resolve_device

        if not devices:
            devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        resolved = [resolve_device(d) for d in devices]  # a missing device: one line, no traceback
        if threads is not None:  # on a busy machine, small products on several threads wait for each other
            torch.set_num_threads(threads)
        results = matmul_benchmark(resolved, large=large, small=small, large_repeat=repeat,
                                   small_repeat=200 * repeat, products=products, product_size=size)
        if as_json:
            click.echo(json.dumps(results, indent=2))
        else:
            for line in format_table(results):
                click.echo(line)
