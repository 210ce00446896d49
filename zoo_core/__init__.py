"""d2l-zoo core: every model of *Dive into Deep Learning* behind one registry, one trainer, one export path.

The public API, for plugins and for Python users alike::

    import zoo_core
    zoo_core.list_models("res*")                         # specs only: no torch import
    model = zoo_core.get_model("softmax", preset="tiny")  # built, materialised, initialised
    data = zoo_core.get_data("softmax", preset="tiny")
    zoo_core.Trainer(max_epochs=1).fit(model, data)

Names that need torch (`Model`, `Trainer`, ...) are imported on first use, so that importing `zoo_core` (and thus
``zoo list`` / ``zoo info``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from zoo_core.errors import (  # noqa: E402
    DataNotFoundError, IntegrityError, NonFiniteLossError, TrainingInterrupted, UnknownNameError, ZooError,
)
from zoo_core.hookspecs import hookimpl  # noqa: E402
from zoo_core.lazy import lazy_exports  # noqa: E402
from zoo_core.registry import (  # noqa: E402
    DataSpec, GraphSpec, ModelSpec, Preset, TensorSpec, Tolerance, build_data, build_model, get_data, get_data_spec, get_model,
    get_spec, list_datasets, list_models,
)

# name -> module, imported on first attribute access (PEP 562)
_LAZY = {
    "Model": "zoo_core.model",
    "Classifier": "zoo_core.model",
    "DataModule": "zoo_core.data",
    "TensorLoader": "zoo_core.data",
    "DataFile": "zoo_core.data",
    "find_data_files": "zoo_core.data",
    "BOOK_URL": "zoo_core.data",
    "seeded_generator": "zoo_core.data",
    "atomic_path": "zoo_core.artifacts",
    "Vocab": "zoo_core.text",
    "masked_cross_entropy": "zoo_core.seq_metrics",
    "bleu": "zoo_core.seq_metrics",
    "corpus_bleu": "zoo_core.seq_metrics",
    "Trainer": "zoo_core.trainer",
    "FitResult": "zoo_core.trainer",
    "resolve_device": "zoo_core.devices",
    "channels_last": "zoo_core.devices",
    "save_weights": "zoo_core.weights",
    "load_weights": "zoo_core.weights",
    "export_onnx": "zoo_core.onnx_export",
    "check_parity": "zoo_core.parity",
    "ParityResult": "zoo_core.parity",
    "train": "zoo_core.workflows",
    "export": "zoo_core.workflows",
    "verify": "zoo_core.workflows",
}

if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy names
    from zoo_core.artifacts import atomic_path  # noqa: F401
    from zoo_core.seq_metrics import bleu, corpus_bleu, masked_cross_entropy  # noqa: F401
    from zoo_core.text import Vocab  # noqa: F401
    from zoo_core.data import (  # noqa: F401
        BOOK_URL, DataFile, DataModule, TensorLoader, find_data_files, seeded_generator,
    )
    from zoo_core.onnx_export import export_onnx  # noqa: F401
    from zoo_core.model import Classifier, Model  # noqa: F401
    from zoo_core.parity import ParityResult, check_parity  # noqa: F401
    from zoo_core.devices import channels_last, resolve_device  # noqa: F401
    from zoo_core.trainer import FitResult, Trainer  # noqa: F401
    from zoo_core.weights import load_weights, save_weights  # noqa: F401
    from zoo_core.workflows import export, train, verify  # noqa: F401


__getattr__, __dir__, _lazy_all = lazy_exports(__name__, _LAZY)

__all__ = [
    "__version__", "hookimpl",
    "DataSpec", "GraphSpec", "ModelSpec", "Preset", "TensorSpec", "Tolerance",
    "list_models", "list_datasets", "get_spec", "get_data_spec", "get_model", "get_data", "build_model", "build_data",
    "ZooError", "UnknownNameError", "DataNotFoundError", "IntegrityError", "NonFiniteLossError",
    "TrainingInterrupted",
    *_lazy_all,
]
