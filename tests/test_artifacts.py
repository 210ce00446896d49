"""Run directories and their files (`zoo_core.artifacts`): atomic writes, hashes, manifests, finding runs."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from zoo_core import IntegrityError, ZooError
from zoo_core.artifacts import (
    MANIFEST, SCHEMA_VERSION, atomic_path, atomic_write_text, check_hashes, create_run_dir, list_runs, new_run_id,
    no_space_error, read_manifest, replace_dir, resolve_run, rewrite_manifest_in_place, write_json, write_manifest,
)
from zoo_core.errors import NoSpaceError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- atomic writes ----------------------------------------------------------------------------------------------------

def test_atomic_path_failure_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old and whole")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old and whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_path_failure_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt  # Ctrl-C too
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_success_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "file.bin"
    with atomic_path(target) as tmp:
        assert not target.exists()  # nothing in place until the block succeeds
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"newer")
    assert target.read_bytes() == b"newer"


def test_atomic_write_text_and_json(tmp_path):
    target = tmp_path / "notes.txt"
    atomic_write_text(target, "héllo\nwörld\n")
    assert target.read_bytes() == "héllo\nwörld\n".encode()
    atomic_write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    write_json(tmp_path / "v.json", {"b": [1, 2], "a": "x"})
    text = (tmp_path / "v.json").read_text()
    assert json.loads(text) == {"b": [1, 2], "a": "x"} and text.endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "v.json"]


# --- run ids and folders ------------------------------------------------------------------------------------------------

def test_new_run_id_sorts_chronologically_and_is_unique():
    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.003)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert len({new_run_id() for _ in range(200)}) == 200  # even within one microsecond: a random suffix
    stamp, suffix = ids[0].split("-")
    assert stamp.endswith("Z") and "T" in stamp and len(suffix) == 4


def test_create_run_dir(tmp_path):
    first = create_run_dir(tmp_path / "artifacts", "lenet")
    time.sleep(0.002)
    second = create_run_dir(tmp_path / "artifacts", "lenet")
    assert first.is_dir() and second.is_dir() and first != second
    assert first.parent == second.parent == tmp_path / "artifacts" / "lenet"
    assert list(first.iterdir()) == []
    assert first.name < second.name


# --- manifests and hashes ----------------------------------------------------------------------------------------------

def make_run(root: Path, status: str | None = "completed") -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"weights")
    (root / "checkpoint").mkdir()
    (root / "checkpoint" / "state.pt").write_bytes(b"state")
    (root / "metrics.jsonl").write_text('{"epoch": 1}\n')
    manifest = {"model": "toy"}
    if status is not None:
        manifest["status"] = status
    write_manifest(root, manifest)
    return root


def test_write_manifest_records_every_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "checkpoint" / "nested").mkdir(parents=True)
    (run / "checkpoint" / "nested" / "state.bin").write_bytes(b"deep state")
    (run / ".model.safetensors.1234.tmp").write_bytes(b"a temporary file")
    (run / ".hidden").mkdir()
    (run / ".hidden" / "x").write_bytes(b"hidden folder")
    (run / MANIFEST).write_text("{}")  # an older manifest: not a file of the run
    manifest = write_manifest(run, {"model": "toy", "status": "completed"})
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["files"] == {
        "checkpoint/nested/state.bin": {"sha256": sha256(b"deep state"), "bytes": 10},
        "model.safetensors": {"sha256": sha256(b"weights"), "bytes": 7},
    }
    on_disk = json.loads((run / MANIFEST).read_text())
    assert on_disk == manifest and on_disk["model"] == "toy"
    assert read_manifest(run) == manifest
    assert check_hashes(run, manifest) == []


def test_check_hashes_reports_changed_and_missing_files(tmp_path):
    run = make_run(tmp_path / "run")
    manifest = read_manifest(run)
    (run / "model.safetensors").write_bytes(b"weightz")
    (run / "checkpoint" / "state.pt").unlink()
    problems = check_hashes(run, manifest)
    assert len(problems) == 2
    changed = next(p for p in problems if p.startswith("model.safetensors"))
    assert sha256(b"weightz")[:12] in changed and sha256(b"weights")[:12] in changed
    assert "checkpoint/state.pt is missing" in problems
    assert check_hashes(run, {"files": {}}) == []


def test_read_manifest_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZooError, match="is not a run: it has no manifest.json") as info:
        read_manifest(empty)
    assert not isinstance(info.value, IntegrityError)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text('{"schema_version": 1,')
    with pytest.raises(IntegrityError, match="is not valid JSON"):
        read_manifest(broken)
    (broken / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IntegrityError):
        read_manifest(broken)

    for wrong in ({"schema_version": 2}, {"model": "toy"}, [1, 2], "text"):
        (broken / MANIFEST).write_text(json.dumps(wrong))
        with pytest.raises(IntegrityError, match="not a zoo manifest of schema version 1"):
            read_manifest(broken)


# --- finding runs ------------------------------------------------------------------------------------------------------

def test_resolve_run_by_directory_and_id(tmp_path):
    out = tmp_path / "artifacts"
    run = make_run(out / "toy" / new_run_id())
    assert resolve_run(out, "toy", str(run)) == run
    assert resolve_run(out, "toy", run.name) == out / "toy" / run.name
    elsewhere = make_run(tmp_path / "elsewhere" / "my-run")
    assert resolve_run(out, "toy", str(elsewhere)) == elsewhere
    with pytest.raises(ZooError, match=r"no run 'nope' of toy: neither a run directory nor a run id under"):
        resolve_run(out, "toy", "nope")


def test_resolve_run_newest_completed(tmp_path):
    out = tmp_path / "artifacts"
    ids = []
    for _ in range(4):
        ids.append(new_run_id())
        time.sleep(0.002)
    oldest = make_run(out / "toy" / ids[0])
    newer = make_run(out / "toy" / ids[1])
    make_run(out / "toy" / ids[2], status="failed")
    make_run(out / "toy" / ids[3], status="running")  # the newest is still training
    (out / "toy" / "no-manifest").mkdir()
    assert resolve_run(out, "toy") == newer
    assert list_runs(out, "toy")[:2] == [oldest, newer]
    assert resolve_run(out, "toy", ids[3]) == out / "toy" / ids[3]  # asked for by id: found whatever its status


def test_resolve_run_without_finished_runs(tmp_path):
    out = tmp_path / "artifacts"
    with pytest.raises(ZooError, match=r"no finished run of toy under .*train one with `zoo train toy` \(or pass"):
        resolve_run(out, "toy")
    make_run(out / "toy" / new_run_id(), status="running")
    make_run(out / "toy" / new_run_id(), status=None)
    with pytest.raises(ZooError, match="no finished run of toy") as info:
        resolve_run(out, "toy")
    assert "--out" not in str(info.value)  # the folder exists: no hint about it
    assert "\n" not in str(info.value)


def test_resolve_run_names_the_newest_runs_failure(tmp_path):
    out = tmp_path / "artifacts"
    run = make_run(out / "toy" / new_run_id(), status="failed")
    manifest = json.loads((run / MANIFEST).read_text())
    (run / MANIFEST).write_text(json.dumps({**manifest, "error": "labels out of range"}))
    with pytest.raises(ZooError, match=rf"the newest, {run.name}, is failed: labels out of range\); train one"):
        resolve_run(out, "toy")


# --- a full disk --------------------------------------------------------------------------------------------------------

def test_atomic_path_turns_a_full_disk_into_one_line_naming_the_file(tmp_path):
    import errno

    target = tmp_path / "model.safetensors"
    with pytest.raises(NoSpaceError, match=rf"^no space left on device writing {target}: free some space"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # the partial temporary file is gone


@pytest.mark.parametrize(("error", "full"), [
    (OSError(28, "No space left on device", "/x/y.json"), True),
    (OSError(122, "Disk quota exceeded"), True),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), True),
    (OSError(13, "Permission denied"), False),
    (ValueError("space"), False),
])
def test_no_space_error_recognises_full_disks_only(error, full):
    converted = no_space_error(error, "/runs/a/metrics.jsonl")
    assert (converted is not None) == full
    if full:
        assert str(converted).startswith("no space left on device writing /")


def test_rewrite_manifest_in_place_keeps_the_file_and_records_hashes(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"w")
    write_manifest(tmp_path, {"model": "toy", "status": "running"})
    inode = (tmp_path / MANIFEST).stat().st_ino
    rewrite_manifest_in_place(tmp_path, {"model": "toy", "status": "failed", "error": "no space"})
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "failed" and manifest["files"]["weights.bin"]["sha256"] == sha256(b"w")
    assert (tmp_path / MANIFEST).stat().st_ino == inode  # written in place: no new file on a full disk


# --- replacing folders -------------------------------------------------------------------------------------------------

def test_replace_dir_swaps_folders(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.onnx").write_bytes(b"old")
    new = tmp_path / ".export.tmp"
    new.mkdir()
    (new / "model.onnx").write_bytes(b"new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["model.onnx"]
    assert (target / "model.onnx").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary or old folder left


def test_replace_dir_into_a_new_place_and_over_a_leftover(tmp_path):
    target = tmp_path / "export"
    first = tmp_path / "first"
    first.mkdir()
    (first / "a").write_text("1")
    replace_dir(first, target)
    assert (target / "a").read_text() == "1" and not first.exists()
    (tmp_path / ".export.old").mkdir()  # left by a crash between the two renames
    second = tmp_path / "second"
    second.mkdir()
    (second / "b").write_text("2")
    replace_dir(second, target)
    assert [p.name for p in target.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
