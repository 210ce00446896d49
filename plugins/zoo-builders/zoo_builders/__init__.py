"""d2l-zoo, chapter 6: the builders' guide as a library of blocks, layers, initialisers, I/O and device helpers.

::

    from zoo_builders import MySequential, Parallel, repeat, init_xavier, save_tensors
    net = MySequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    net(torch.rand(2, 20))            # lazy layers get their shapes here
    net.apply(init_xavier())

Modules, one per job: `blocks` (MySequential, FixedHiddenMLP, NestMLP, chimera, Parallel, repeat), `layers`
(CenteredLayer, MyLinear, TensorReduction, FourierCoefficients), `init` (initialisers for ``module.apply``),
`lazy` (clear input-size errors for lazy layers), `io` (safetensors I/O), `devices` (try_gpu), `bench` (matmul
timings, ``zoo bench matmul``), `models` (the registered models), `data` (their synthetic data), `plugin` (the
registration hooks).

Names are imported on first use (PEP 562), so that importing the plugin (``zoo list``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_core.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    **dict.fromkeys(["MODES", "FixedHiddenMLP", "HalveUntilSmall", "MySequential", "NestMLP", "Parallel", "Repeat",
                     "UnknownModeError", "chimera", "halve_until_small_loop", "repeat"], "zoo_builders.blocks"),
    **dict.fromkeys(["CenteredLayer", "FourierCoefficients", "MyLinear", "TensorReduction", "dft_matrix"],
                    "zoo_builders.layers"),
    **dict.fromkeys(["init_constant", "init_kaiming", "init_mixture", "init_normal", "init_xavier"],
                    "zoo_builders.init"),
    **dict.fromkeys(["InputChecked", "InputSizeError", "find_input_size_error", "is_lazy", "mark_lazy"],
                    "zoo_builders.lazy"),
    **dict.fromkeys(["load_submodule", "load_tensors", "save_tensors"], "zoo_builders.io"),
    **dict.fromkeys(["to_device", "try_all_gpus", "try_gpu"], "zoo_builders.devices"),
    **dict.fromkeys(["matmul_benchmark"], "zoo_builders.bench"),
    **dict.fromkeys(["BuildersData"], "zoo_builders.data"),
}

if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy names
    from zoo_builders.bench import matmul_benchmark  # noqa: F401
    from zoo_builders.blocks import (  # noqa: F401
        MODES, FixedHiddenMLP, HalveUntilSmall, MySequential, NestMLP, Parallel, Repeat, UnknownModeError, chimera,
        halve_until_small_loop, repeat,
    )
    from zoo_builders.data import BuildersData  # noqa: F401
    from zoo_builders.devices import to_device, try_all_gpus, try_gpu  # noqa: F401
    from zoo_builders.init import init_constant, init_kaiming, init_mixture, init_normal, init_xavier  # noqa: F401
    from zoo_builders.io import load_submodule, load_tensors, save_tensors  # noqa: F401
    from zoo_builders.layers import CenteredLayer, FourierCoefficients, MyLinear, TensorReduction, dft_matrix  # noqa
    from zoo_builders.lazy import (  # noqa: F401
        InputChecked, InputSizeError, find_input_size_error, is_lazy, mark_lazy,
    )


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, eager=("__version__",))
