"""Where dataset files are found, how they are checked, and how they are downloaded.

Search order: ``--data-dir``, then ``$ZOO_DATA``, then ``~/.cache/zoo/data``. A dataset is found in the first folder
that holds all of its files; each file's SHA-1 is checked before use (a mismatch is an error, never silently used).
When no folder has them, they are downloaded into the first folder of the list (unless ``ZOO_OFFLINE=1``); offline,
the error names the missing file and the folders searched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zoo_core.errors import DataNotFoundError, IntegrityError

DATA_ENV = "ZOO_DATA"
OFFLINE_ENV = "ZOO_OFFLINE"
CACHE_DIR = Path("~/.cache/zoo/data")
BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"


@dataclass(frozen=True)
class DataFile:
    """A file of a dataset: its path inside the data folder, its SHA-1, and (optionally) its download URL."""

    path: str
    sha1: str | None = None
    url: str | None = None


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data, in order."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]))
    dirs.append(CACHE_DIR.expanduser())
    return [d.expanduser() for d in dict.fromkeys(dirs)]


_sha1_memo: dict[tuple, str] = {}


def sha1_file(path: Path) -> str:
    """SHA-1 of a file, remembered for this process while its inode, size, mtime and ctime do not change (a copy
    that keeps the mtime still changes the ctime or the inode)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _sha1_memo:
        digest = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _sha1_memo[key] = digest.hexdigest()
    return _sha1_memo[key]


def check_files(dataset: str, root: Path, files: Sequence[DataFile]) -> None:
    """Raise `IntegrityError` if a file under `root` does not have its recorded SHA-1."""
    for f in files:
        if f.sha1 and (actual := sha1_file(root / f.path)) != f.sha1:
            raise IntegrityError(f"{dataset}: {root / f.path} has SHA-1 {actual}, expected {f.sha1}; it is corrupt "
                                 f"or not the book's file: replace it, or delete it to download it again")


def _download_urls(dataset: str, root: Path, files: Sequence[DataFile]) -> None:
    """Fetch each missing file to a temporary name, check its SHA-1, then rename it into place."""
    for f in files:
        target = root / f.path
        if target.is_file():
            continue
        if not f.url:
            raise OSError(f"no download URL for {f.path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f.url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            if f.sha1 and (actual := sha1_file(Path(tmp))) != f.sha1:
                raise IntegrityError(f"{dataset}: the download of {f.url} has SHA-1 {actual}, expected {f.sha1}; "
                                     f"it was not kept")
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)


def find_data_files(dataset: str, files: Sequence[DataFile], data_dir: str | os.PathLike | None = None,
                    download: Callable[[Path], None] | bool = True) -> Path:
    """The data folder holding all of `files` (checked), downloading them if no folder has them.

    `download` is True (fetch each file's URL), False (never), or a function that fetches the files into the folder
    it is given (torchvision's downloader, for instance).
    """
    dirs = data_dirs(data_dir)
    for root in dirs:
        if all((root / f.path).is_file() for f in files):
            check_files(dataset, root, files)
            return root

    missing = [f.path for f in files if not any((root / f.path).is_file() for root in dirs)] or [files[0].path]
    what = missing[0] + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    searched = ", ".join(str(d) for d in dirs)
    if os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no") or download is False:
        reason = f"downloads are off ({OFFLINE_ENV}=1)" if download is not False else "not downloaded"
    else:
        root = dirs[0]
        try:
            (download if callable(download) else lambda r: _download_urls(dataset, r, files))(root)
            if all((root / f.path).is_file() for f in files):
                check_files(dataset, root, files)
                return root
            reason = "the download did not produce them"
        except (IntegrityError, DataNotFoundError):
            # a downloader that looks for its own archive (fra-eng's zip) has already said what is missing, where
            # it looked and what to do: wrapping it would say it all twice
            raise
        except Exception as e:  # noqa: BLE001 - any failure to download is reported the same way
            reason = f"download failed: {' '.join(str(e).split()) or type(e).__name__}"
    raise DataNotFoundError(f"{dataset}: missing {what}; searched {searched}; {reason}. Put the files in one of "
                            f"these folders (or point {DATA_ENV} at a folder that has them)")
