"""Artifact stores on Django's storage API, so any storage backend (S3 included) works.

A store writes blobs under generated keys (``ab/ab12...``) below a prefix, streaming the body in
1 MiB chunks through ``Storage.save`` while it hashes and counts it, so memory stays bounded
whatever the artifact's size. Every key, whether a caller supplies it or it comes back from a
database row, is validated before the storage sees it: nothing can leave the store's root.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage

from ..engine.content_types import check_content_type
from ..engine.errors import InvalidInput

CHUNK = 1024 * 1024  # bytes read from a body, and written to the storage, at a time
MAX_KEY_LENGTH = 400  # the stored key (prefix included) must fit Artifact.storage_key (500)

# A key is 1-5 segments of letters, digits, '_', '.' and '-', each starting with a letter or
# digit (so never '.', '..' or a hidden file) and at most 100 characters. '/' only separates
# segments: no absolute paths, no backslashes, no NUL, no whitespace.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,4}}")


def check_key(key: Any) -> str:
    """Return ``key`` if it is a safe relative storage name, else raise ``InvalidInput``.

    Refuses traversal (``../x``), absolute paths, backslashes, NUL and control characters,
    empty segments and very long names, so a key can never escape the store's root.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"artifact key must be a string, got {type(key).__name__}")
    # fullmatch, not match with '$': '$' also matches before a trailing newline.
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise InvalidInput(f"artifact key {key[:80]!r} is not a safe relative name")
    return key


def new_key() -> tuple[str, str]:
    """Generate an artifact id and its key (``ab/ab12...``: the first two hex digits fan out)."""
    artifact_id = uuid.uuid4().hex
    return artifact_id, f"{artifact_id[:2]}/{artifact_id}"


class _HashingReader:
    """Wraps a file-like body: hashes and counts bytes as the storage reads them (bounded memory).

    It reports itself as an open, unseekable stream, so storages that probe ``closed`` or
    ``seekable()`` before uploading (django-storages' S3 does) read it front to back.
    """

    closed = False

    def __init__(self, body: IO[bytes]) -> None:
        self._body = body
        self.digest = hashlib.sha256()
        self.size = 0
        self.at_eof = False

    def read(self, n: int | None = -1) -> bytes:
        # Never read the whole body at once, even when a storage asks for "everything".
        data = self._body.read(CHUNK if n is None or n < 0 else n)
        if data is None:  # a non-blocking stream with nothing ready: treat as no data yet
            data = b""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"artifact body must yield bytes, got {type(data).__name__} (open files in 'rb' mode)")
        data = bytes(data)
        if not data:
            self.at_eof = True
        self.digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass  # the caller owns the body


class _StreamFile(File):
    """A ``File`` whose chunks come from a stream, never read whole into memory."""

    def __init__(self, reader: _HashingReader, name: str, content_type: str) -> None:
        super().__init__(reader, name)  # type: ignore[arg-type]
        self._reader = reader
        self.content_type = content_type  # storages that set a Content-Type header read this

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        while True:
            data = self._reader.read(chunk_size or CHUNK)
            if not data:
                return
            yield data

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # Storages that "rewind" before uploading may do so while nothing has been read.
        if offset == 0 and whence in (io.SEEK_SET, io.SEEK_CUR) and self._reader.size == 0:
            return 0
        raise io.UnsupportedOperation("an artifact body is a stream: it cannot seek")

    def tell(self) -> int:
        return self._reader.size

    @property
    def size(self) -> int | None:  # type: ignore[override]
        """The length once the stream is exhausted; None before (an honest "unknown length")."""
        return self._reader.size if self._reader.at_eof else None

    @property
    def closed(self) -> bool:
        return False


class StorageArtifactStore:
    """Writes artifact blobs through a Django ``Storage`` under generated, validated keys.

    ``put`` returns the *stored* key (prefix included): that is what ``Artifact.storage_key``
    keeps and what ``open``, ``delete``, ``exists`` and ``uri`` take.
    """

    def __init__(self, storage: Storage, *, prefix: str = "artifacts") -> None:
        self.storage = storage
        self.prefix = check_key(prefix) if prefix else ""

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def _stored(self, key: str) -> str:
        """Validate a stored key (one ``put`` returned, usually read back from a row)."""
        check_key(key)
        if self.prefix and not key.startswith(self.prefix + "/"):
            raise InvalidInput(f"artifact key {key[:80]!r} is not under this store's prefix {self.prefix!r}")
        return key

    def put(self, key: str, content_type: str, body: bytes | IO[bytes]) -> tuple[str, int, str]:
        """Stream ``body`` to ``key``; return (stored key, size, sha256 hex).

        A file-like body is read in 1 MiB chunks, never whole. Keys are generated and unique,
        so an existing blob is never overwritten; a body that fails midway leaves no blob.
        """
        path = self._path(key)
        check_content_type(content_type)
        if isinstance(body, str):
            raise InvalidInput("artifact body must be bytes or a binary file-like object, got str")
        stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        if not hasattr(stream, "read"):
            raise InvalidInput(f"artifact body must be bytes or a file-like object, got {type(body).__name__}")
        if self.storage.exists(path):
            raise InvalidInput(f"artifact key {path!r} already exists; keys must be new (see new_key())")
        reader = _HashingReader(stream)  # type: ignore[arg-type]
        try:
            stored = self.storage.save(path, _StreamFile(reader, path, content_type))
        except BaseException:
            # FileSystemStorage leaves a partial file when the body fails midway: remove it.
            try:
                self.storage.delete(path)
            except Exception:  # prunewf --orphans finds what could not be removed
                pass
            raise
        return stored, reader.size, reader.digest.hexdigest()

    def open(self, key: str) -> IO[bytes]:
        """Open a stored blob for streaming reads (iterate ``chunks()`` or ``read(n)``)."""
        return self.storage.open(self._stored(key), "rb")  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        self.storage.delete(self._stored(key))

    def exists(self, key: str) -> bool:
        return self.storage.exists(self._stored(key))

    def size(self, key: str) -> int:
        return self.storage.size(self._stored(key))

    def modified_time(self, key: str) -> datetime:
        return self.storage.get_modified_time(self._stored(key))

    def uri(self, key: str) -> str:
        """A URL for the blob if the storage serves one, else ``artifact://<key>``."""
        key = self._stored(key)
        try:
            return self.storage.url(key)
        except (NotImplementedError, ValueError):
            return f"artifact://{key}"

    def keys(self) -> Iterator[str]:
        """Yield every stored key under the prefix (for the orphan sweep), one directory at a time."""
        pending = [self.prefix]
        while pending:
            directory = pending.pop()
            try:
                dirs, files = self.storage.listdir(directory)
            except FileNotFoundError:
                continue
            for name in sorted(files):
                key = f"{directory}/{name}" if directory else name
                if _KEY.fullmatch(key):  # skip names we never write (editor swap files, '.DS_Store')
                    yield key
            pending.extend(f"{directory}/{d}" if directory else d for d in sorted(dirs, reverse=True))


class FileArtifactStore(StorageArtifactStore):
    """The seed's file store: blobs under a local directory, through ``FileSystemStorage``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        super().__init__(FileSystemStorage(location=str(root)), prefix="")

    def uri(self, key: str) -> str:
        """``file://`` URI of the blob: a bare ``FileSystemStorage`` has no URL that serves it."""
        return Path(self.storage.path(self._stored(key))).resolve().as_uri()
