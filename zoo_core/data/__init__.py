"""Data: the `DataModule` base, tensor batching, dataset files (search, checksums, download), the book's datasets.

Importing this package imports torch; the built-in plugin (`zoo_core.core_plugin`) does not.
"""

from zoo_core.data.files import BOOK_URL, DataFile, data_dirs, find_data_files
from zoo_core.data.module import DataModule, TensorLoader, seeded_generator

__all__ = ["BOOK_URL", "DataFile", "DataModule", "TensorLoader", "data_dirs", "find_data_files", "seeded_generator"]
