"""Run directories and the files in them: atomic writes, sha256 hashes, manifests, finding the newest run.

Every file is written under a temporary name in its destination folder and renamed into place, so a crash or a
full disk never leaves a partial file that looks whole. A manifest records the sha256 of every file of its run;
`check_hashes` says which ones no longer match.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo_core.errors import IntegrityError, NoSpaceError, ZooError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def no_space_error(e: BaseException, path: str | os.PathLike | None = None) -> NoSpaceError | None:
    """A one-line `NoSpaceError` naming the file if `e` says its device is full (an ``OSError`` with ENOSPC or
    EDQUOT, or a library's error wrapping one, like safetensors' "I/O error: No space left on device (os error
    28)"); None for any other error."""
    if isinstance(e, NoSpaceError):
        return e
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        path = path or e.filename
    elif not any(text in str(e) for text in _NO_SPACE_TEXT):
        return None
    where = f" writing {path}" if path else ""
    return NoSpaceError(f"no space left on device{where}: free some space, or pass --out on another disk")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, sync it and rename it to `path`.

    The temporary file never outlives the block. A full disk is a `NoSpaceError` naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would have created it; some writers use 0600
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as e:
        full = no_space_error(e, path)
        if full is None or full is e:
            raise
        raise full from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder `tmp` in place of `target`, keeping the old one until the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file of a run but the manifest and temporary files."""
    records = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.as_posix() != MANIFEST and not any(p.startswith(".") for p in rel.parts):
            records[rel.as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return records


def check_hashes(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the files a manifest lists (missing, or a sha256 that does not match); empty if none."""
    problems = []
    for rel, record in manifest.get("files", {}).items():
        path = run_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif (actual := sha256_file(path)) != record["sha256"]:
            problems.append(f"{rel} has sha256 {actual[:12]}..., the manifest says {record['sha256'][:12]}...")
    return problems


# --- runs -----------------------------------------------------------------------------------------------------------

def new_run_id() -> str:
    """A UTC timestamp with microseconds and a short random suffix: sorts by time, never collides in practice."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


def create_run_dir(out: str | os.PathLike, model: str) -> Path:
    run_dir = Path(out) / model / new_run_id()
    run_dir.mkdir(parents=True)
    return run_dir


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not path.is_file():
        raise ZooError(f"{run_dir} is not a run: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise IntegrityError(f"{path} is not a zoo manifest of schema version {SCHEMA_VERSION}")
    return manifest


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the sha256 of every file of the run in `manifest`, then write it atomically; returns it."""
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["files"] = file_records(run_dir)
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def rewrite_manifest_in_place(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """`write_manifest` for a full disk, where even the few kB of a new temporary file are not to be had: overwrite
    the manifest's own file, whose blocks are already allocated (a manifest grows by far less than a block when a
    run is marked failed). Not atomic: only for recording why a run failed, when nothing else can be written."""
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["files"] = file_records(run_dir)
    data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")
    with open(run_dir / MANIFEST, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    return manifest


def list_runs(out: str | os.PathLike, model: str) -> list[Path]:
    """The runs of `model` under `out`, oldest first."""
    folder = Path(out) / model
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def resolve_run(out: str | os.PathLike, model: str, run: str | None = None) -> Path:
    """A run of `model`: `run` as a directory or a run id under ``out/model``, or the newest finished one."""
    if run is not None:
        for candidate in (Path(run), Path(out) / model / run):
            if (candidate / MANIFEST).is_file():
                return candidate
        raise ZooError(f"no run {run!r} of {model}: neither a run directory nor a run id under {Path(out) / model}")
    runs = list_runs(out, model)
    finished = [r for r in runs if _status(r) == "completed"]
    if not finished:
        newest = ""
        if runs:
            status, error = _status(runs[-1]), _manifest_field(runs[-1], "error")
            newest = f" (the newest, {runs[-1].name}, is {status}" + (f": {error})" if error else ")")
        raise ZooError(f"no finished run of {model} under {Path(out) / model}{newest}; train one with "
                       f"`zoo train {model}`" + (" (or pass --out)" if not Path(out).exists() else ""))
    return finished[-1]


def _status(run_dir: Path) -> str | None:
    return _manifest_field(run_dir, "status")


def _manifest_field(run_dir: Path, key: str) -> Any:
    try:
        return json.loads((run_dir / MANIFEST).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
