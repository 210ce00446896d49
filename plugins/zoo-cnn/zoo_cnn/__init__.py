"""d2l-zoo, chapter 7: convolutional neural networks.

::

    from zoo_cnn import corr2d, pool2d, conv_output_shape
    corr2d(torch.arange(9.0).reshape(3, 3), torch.arange(4.0).reshape(2, 2))   # [[19, 25], [37, 43]]
    conv_output_shape(28, kernel_size=5, padding=2)                              # (28, 28)

    import zoo_core
    model = zoo_core.get_model("lenet")                                          # Xavier-initialised LeNet

Modules, one per job: `ops` (the book's from-scratch cross-correlation, multi-channel and 1x1 convolutions,
pooling, the `Conv2D` layer, output-shape arithmetic), `edge` (the edge detector and its one-image dataset), `lenet`
(LeNet and the book's `init_cnn`), `plugin` (the registration hooks).

Names are imported on first use (PEP 562), so that loading the plugin (``zoo list``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_core.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    **dict.fromkeys(["Conv2D", "conv_output_shape", "corr2d", "corr2d_multi_in", "corr2d_multi_in_out",
                     "corr2d_multi_in_out_1x1", "pool2d"], "zoo_cnn.ops"),
    **dict.fromkeys(["EdgeDetector", "EdgeImage", "edge_image"], "zoo_cnn.edge"),
    **dict.fromkeys(["LeNet", "init_cnn"], "zoo_cnn.lenet"),
}

if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy names
    from zoo_cnn.edge import EdgeDetector, EdgeImage, edge_image  # noqa: F401
    from zoo_cnn.lenet import LeNet, init_cnn  # noqa: F401
    from zoo_cnn.ops import (  # noqa: F401
        Conv2D, conv_output_shape, corr2d, corr2d_multi_in, corr2d_multi_in_out, corr2d_multi_in_out_1x1, pool2d,
    )


__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, eager=("__version__",))
