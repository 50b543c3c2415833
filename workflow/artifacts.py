"""Artifact stores on Django's storage API, so any storage backend (S3 included) works."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage

from .engine.errors import InvalidInput

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}){0,3}$")
CHUNK = 1024 * 1024


def check_key(key: str) -> str:
    """Refuse keys that could leave the store's root: traversal, absolute paths, NUL, long names."""
    if not isinstance(key, str) or not _KEY.match(key) or ".." in key.split("/"):
        raise InvalidInput(f"artifact key {key[:80]!r} is not a safe relative name")
    return key


class _HashingReader:
    """Wraps a file-like body: hashes and counts bytes as the storage reads them (bounded memory)."""

    def __init__(self, body: IO[bytes]) -> None:
        self._body = body
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._body.read(CHUNK if n is None or n < 0 else n)
        self.digest.update(data)
        self.size += len(data)
        return data


class _StreamFile(File):
    """A ``File`` whose chunks come from a stream, never read whole into memory."""

    def __init__(self, reader: _HashingReader, name: str) -> None:
        super().__init__(reader, name)  # type: ignore[arg-type]
        self._reader = reader

    def chunks(self, chunk_size: int | None = None) -> Any:
        while True:
            data = self._reader.read(chunk_size or CHUNK)
            if not data:
                return
            yield data

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return True

    @property
    def size(self) -> int:  # type: ignore[override]
        return self._reader.size


class StorageArtifactStore:
    """Writes artifact blobs through a Django ``Storage`` under generated, validated keys."""

    def __init__(self, storage: Storage, *, prefix: str = "artifacts") -> None:
        self.storage = storage
        self.prefix = prefix

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    def put(self, key: str, content_type: str, body: bytes | IO[bytes]) -> tuple[str, int, str]:
        import io

        stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
        reader = _HashingReader(stream)  # type: ignore[arg-type]
        path = self._path(key)
        stored = self.storage.save(path, _StreamFile(reader, path))
        return stored, reader.size, reader.digest.hexdigest()

    def open(self, key: str) -> IO[bytes]:
        return self.storage.open(key, "rb")  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        self.storage.delete(key)

    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def uri(self, key: str) -> str:
        try:
            return self.storage.url(key)
        except NotImplementedError:
            return f"artifact://{key}"


class FileArtifactStore(StorageArtifactStore):
    """The seed's file store: blobs under a local directory, through ``FileSystemStorage``."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(FileSystemStorage(location=str(root)), prefix="")
