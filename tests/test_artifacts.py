"""Artifact stores: safe keys, streaming puts with bounded reads, and artifacts in step commits."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import FileSystemStorage
from django.utils import timezone

from tests.conftest import drain, run_graph
from workflow import Package, StepContext, StepState, permanent, retryable
from workflow.engine.errors import InvalidInput
from workflow.models import Artifact
from workflow.stores.artifacts import CHUNK, FileArtifactStore, StorageArtifactStore, check_key, new_key
from workflow.stores.retention import prune_orphans

ODD_KEYS = [
    "../x",
    "a/../b",
    "a/..",
    "..",
    ".",
    "/abs",
    "/etc/passwd",
    "a\x00b",
    "a\\b",
    "..\\x",
    "C:\\x",
    "x" * 101,
    "/".join(["a" * 90] * 5),  # 5 legal segments, but 454 characters
    "a/b/c/d/e/f",
    "",
    "a//b",
    "a/",
    ".hidden",
    "abc\n",
    " a",
    "a b",
    "é",
]


def pattern(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


class GeneratedBody(io.RawIOBase):
    """A file-like body of ``size`` bytes that makes them up as it is read, and remembers how."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.largest_read = 0
        self.reads = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        assert n is not None and n > 0, f"the store asked for the whole body (read({n}))"
        self.reads += 1
        self.largest_read = max(self.largest_read, n)
        take = min(n, self.remaining)
        self.remaining -= take
        data = bytes([self.reads % 256]) * take
        self.digest.update(data)
        return data


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> FileArtifactStore:
    return FileArtifactStore(tmp_path / "blobs")


# -- keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ODD_KEYS)
def test_check_key__refuses_odd_names(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


@pytest.mark.parametrize("key", [None, 7, b"ab/cd"])
def test_check_key__refuses_non_strings(key: Any) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "ab/ab12cd", "x" * 100, "report.v2_final-1.csv", "a/b/c/d/e"])
def test_check_key__accepts_safe_relative_names(key: str) -> None:
    assert check_key(key) == key


def test_new_key__is_unique_and_valid() -> None:
    (id1, key1), (id2, key2) = new_key(), new_key()
    assert id1 != id2
    assert key1 == f"{id1[:2]}/{id1}"
    assert check_key(key1) and check_key(key2)


@pytest.mark.parametrize("key", ODD_KEYS)
def test_put__refuses_odd_keys_and_writes_nothing(store: FileArtifactStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put(key, "text/plain", b"evil")
    with pytest.raises(InvalidInput):
        store.put(key, "text/plain", io.BytesIO(b"evil"))
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a\x00b", "a\\b", "x" * 500])
def test_open_delete_exists__refuse_odd_keys(store: FileArtifactStore, tmp_path: Path, key: str) -> None:
    outside = tmp_path / "x"
    outside.write_bytes(b"keep me")
    for call in (store.open, store.delete, store.exists, store.uri):
        with pytest.raises(InvalidInput):
            call(key)
    assert outside.read_bytes() == b"keep me"


def test_storage_store__refuses_keys_outside_its_prefix(tmp_path: Path) -> None:
    store = StorageArtifactStore(FileSystemStorage(location=str(tmp_path)), prefix="artifacts")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret").write_bytes(b"not an artifact")
    with pytest.raises(InvalidInput, match="prefix"):
        store.open("other/secret")
    with pytest.raises(InvalidInput, match="prefix"):
        store.delete("other/secret")
    assert (tmp_path / "other" / "secret").exists()


# -- put, open, delete ----------------------------------------------------------------------------------
def test_put__round_trips_bytes_with_size_and_sha256(store: FileArtifactStore) -> None:
    body = pattern(100_000)
    key, size, digest = store.put("ab/abc", "application/octet-stream", body)
    assert key == "ab/abc"
    assert size == len(body)
    assert digest == hashlib.sha256(body).hexdigest()
    assert store.exists(key)
    with store.open(key) as fh:
        assert fh.read() == body
    assert store.size(key) == len(body)
    store.delete(key)
    assert not store.exists(key)


def test_put__streams_a_file_like_in_bounded_chunks(store: FileArtifactStore) -> None:
    size = 3 * CHUNK + 12_345
    body = GeneratedBody(size)
    key, stored_size, digest = store.put("ab/stream", "application/octet-stream", body)
    assert stored_size == size
    assert digest == body.digest.hexdigest()
    assert body.largest_read <= CHUNK  # never read(-1): the body is never held whole
    assert body.reads >= 4
    with store.open(key) as fh:
        got = hashlib.sha256()
        for chunk in fh.chunks(CHUNK):
            got.update(chunk)
    assert got.hexdigest() == digest
    assert Path(store.storage.path(key)).stat().st_size == size


def test_put__under_a_prefix_through_any_storage(tmp_path: Path) -> None:
    store = StorageArtifactStore(FileSystemStorage(location=str(tmp_path), base_url="/blobs/"), prefix="artifacts")
    key, size, _ = store.put("cd/cdef", "text/csv", io.BytesIO(b"a,b\n1,2\n"))
    assert key == "artifacts/cd/cdef"
    assert (tmp_path / "artifacts" / "cd" / "cdef").read_bytes() == b"a,b\n1,2\n"
    assert size == 8
    assert store.uri(key) == "/blobs/artifacts/cd/cdef"
    assert list(store.keys()) == [key]


def test_put__refuses_text_bodies_and_writes_nothing(store: FileArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="bytes"):
        store.put("ab/text", "text/plain", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="bytes"):
        store.put("ab/text", "text/plain", io.StringIO("text mode"))  # type: ignore[arg-type]
    assert files_under(tmp_path) == []


def test_put__never_overwrites_an_existing_blob(store: FileArtifactStore) -> None:
    store.put("ab/same", "text/plain", b"first")
    with pytest.raises(InvalidInput, match="already exists"):
        store.put("ab/same", "text/plain", b"second")
    with store.open("ab/same") as fh:
        assert fh.read() == b"first"


def test_put__a_body_failing_midway_leaves_no_blob(store: FileArtifactStore, tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * n

    with pytest.raises(OSError, match="connection reset"):
        store.put("ab/broken", "application/octet-stream", Broken())
    assert files_under(tmp_path) == []


def test_file_store__uri_is_a_file_uri(store: FileArtifactStore) -> None:
    key, _, _ = store.put("ab/u", "text/plain", b"x")
    assert store.uri(key) == Path(store.storage.path(key)).resolve().as_uri()


def test_keys__lists_blobs_and_skips_foreign_names(store: FileArtifactStore) -> None:
    a, _, _ = store.put("ab/one", "text/plain", b"1")
    b, _, _ = store.put("cd/two", "text/plain", b"2")
    (store.root / "cd" / ".swp").write_bytes(b"editor")
    assert sorted(store.keys()) == [a, b]


# -- artifacts in steps ------------------------------------------------------------------------------
@pytest.fixture
def package_kinds() -> list[Callable[[Package], None]]:
    def add_kinds(pkg: Package) -> None:
        @pkg.executor("store")
        def store_step(step: StepContext) -> dict:
            size = (step.raw_input or {}).get("size", 1000)
            ref = step.store_artifact("data.bin", "application/octet-stream", GeneratedBody(size),
                                      metadata={"source": "generated"})
            return {"id": ref.id, "size": ref.size, "sha256": ref.sha256, "uri": ref.uri}

        @pkg.executor("store_then_fail")
        def store_then_fail(step: StepContext) -> None:
            step.store_artifact("partial.bin", "application/octet-stream", io.BytesIO(b"half-done work"))
            raise permanent("after_store", "failed after storing an artifact")

        @pkg.executor("store_flaky")
        def store_flaky(step: StepContext) -> dict:
            step.store_artifact(f"attempt-{step.attempt}.txt", "text/plain", f"attempt {step.attempt}".encode())
            if step.attempt < 2:
                raise retryable("flaky", "first attempt fails after storing")
            return {"attempt": step.attempt}

        @pkg.executor("inline")
        def inline(step: StepContext) -> None:
            step.artifact("blob.bin", "application/octet-stream", b"x" * step.raw_input["size"])

    return [add_kinds]


def test_store_artifact__commits_a_reference_row(runtime: Any) -> None:
    size = 2 * CHUNK + 7
    run_id = run_graph(runtime, [{"id": "s", "kind": "store", "input": {"size": size}}])
    drain(runtime)
    result = runtime.result(run_id, "s")
    assert result.state == StepState.SUCCEEDED
    row = Artifact.objects.get(run_id=run_id)
    assert row.step.step_id == "s"
    assert row.id == result.data["id"]
    assert row.name == "data.bin" and row.content_type == "application/octet-stream" and row.kind == "binary"
    assert row.body is None and not row.is_inline
    assert row.size == size == result.data["size"]
    assert row.metadata == {"source": "generated"}
    assert row.storage_key.endswith(row.id)
    hasher = hashlib.sha256()
    with runtime.artifact_store.open(row.storage_key) as fh:
        for chunk in fh.chunks():
            hasher.update(chunk)
    assert row.sha256 == hasher.hexdigest() == result.data["sha256"]
    assert result.data["uri"].startswith("file://")


def test_artifact__inline_body_is_kept_in_the_row(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "i", "kind": "inline", "input": {"size": 100}}])
    drain(runtime)
    row = Artifact.objects.get(run_id=run_id)
    assert row.is_inline and bytes(row.body) == b"x" * 100
    assert row.sha256 == hashlib.sha256(b"x" * 100).hexdigest()


def test_artifact__over_the_inline_limit_fails_permanently(make_runtime: Any, transactional_db: Any) -> None:
    rt = make_runtime(artifact_inline_limit=64)
    run_id = run_graph(rt, [{"id": "i", "kind": "inline", "input": {"size": 65}}])
    drain(rt)
    result = rt.result(run_id, "i")
    assert result.state == StepState.FAILED
    assert result.attempt == 1  # permanent: not retried
    assert result.error.code == "artifact_too_large"
    assert "store_artifact" in result.error.message
    assert not Artifact.objects.filter(run_id=run_id).exists()


def test_store_artifact__a_step_failing_after_storing_leaves_no_row_and_no_blob(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "f", "kind": "store_then_fail"}])
    drain(runtime)
    assert runtime.result(run_id, "f").error.code == "after_store"
    assert not Artifact.objects.filter(run_id=run_id).exists()
    assert files_under(runtime.artifact_store.root) == []


def test_store_artifact__a_retried_step_keeps_only_the_blob_of_its_committed_attempt(runtime: Any) -> None:
    run_id = run_graph(runtime, [{"id": "r", "kind": "store_flaky", "retry": 3}])
    drain(runtime)
    assert runtime.result(run_id, "r").data == {"attempt": 2}
    row = Artifact.objects.get(run_id=run_id)
    assert row.name == "attempt-2.txt"
    assert files_under(runtime.artifact_store.root) == [Path(runtime.artifact_store.storage.path(row.storage_key))]


def test_store_artifact__a_blob_that_could_not_be_deleted_is_swept_by_prune_orphans(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.artifact_store

    def refuse(key: str) -> None:
        raise PermissionError("storage refused the delete")

    with monkeypatch.context() as m:
        m.setattr(store, "delete", refuse)
        run_id = run_graph(runtime, [{"id": "f", "kind": "store_then_fail"}])
        drain(runtime)
    assert not Artifact.objects.filter(run_id=run_id).exists()
    [leftover] = files_under(store.root)
    kept = run_graph(runtime, [{"id": "s", "kind": "store"}])
    drain(runtime)
    referenced = Artifact.objects.get(run_id=kept).storage_key

    # Young blobs are left alone: their step may not have committed yet.
    assert prune_orphans(artifact_store=store).orphans == 0
    old = (timezone.now() - timedelta(hours=2)).timestamp()
    for path in files_under(store.root):
        os.utime(path, (old, old))
    dry = prune_orphans(artifact_store=store, dry_run=True)
    assert dry.orphans == 1 and dry.deleted == 0 and leftover.exists()
    report = prune_orphans(artifact_store=store)
    assert report.scanned == 2 and report.referenced == 1
    assert report.orphans == report.deleted == 1
    assert report.orphan_keys == (leftover.relative_to(store.root).as_posix(),)
    assert not leftover.exists()
    assert store.exists(referenced)


def test_stream_file__looks_like_an_unseekable_stream_to_storages(store: FileArtifactStore) -> None:
    from workflow.stores.artifacts import _HashingReader, _StreamFile

    reader = _HashingReader(io.BytesIO(b"abc"))
    stream = _StreamFile(reader, "ab/x", "text/plain")
    assert stream.content_type == "text/plain" and not stream.closed and not stream.seekable()
    assert stream.size is None  # unknown until read to the end
    assert stream.seek(0) == 0  # a rewind before reading is harmless
    assert b"".join(stream.chunks()) == b"abc"
    assert stream.size == 3 and stream.tell() == 3
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(0)
