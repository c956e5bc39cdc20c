"""The blob store: a directory shared by the API and the workers (a volume in compose).

Three kinds of things live there:
- objects (`objects/ab/cdef…`): immutable bytes addressed by their sha256 (uploaded archives,
  traces, artifacts). Writes go to a temp file then `rename`, so a reader never sees half a blob.
- trees (`trees/<key>/…`): an unpacked records folder, written to a temp dir then renamed into
  place; the rules engine reads it as a normal folder.
- logs (`logs/<submission>/<run>.log`): append-only run logs written line by line as the run
  goes, so a dead worker leaves the log up to the moment it died.

Keys are relative paths checked against a strict pattern; nothing resolves outside the root.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class BlobKeyError(ValueError):
    """A key that is not a safe relative path inside the store."""


class BlobNotFound(FileNotFoundError):
    pass


class BlobStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        for sub in ("objects", "trees", "logs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- paths -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key.split("/"):
            raise BlobKeyError(f"invalid blob key {key!r}")
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise BlobKeyError(f"blob key {key!r} leaves the store")
        return path

    def path(self, key: str) -> Path:
        """The file or folder on disk for `key` (raises BlobNotFound when absent)."""
        p = self._path(key)
        if not p.exists():
            raise BlobNotFound(key)
        return p

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def _tmp(self) -> Path:
        return self.root / "tmp"

    # ---- content-addressed objects ---------------------------------------------------------
    @staticmethod
    def object_key(sha256_hex: str) -> str:
        if not _HEX64.match(sha256_hex):
            raise BlobKeyError(f"not a sha256: {sha256_hex!r}")
        return f"objects/{sha256_hex[:2]}/{sha256_hex[2:]}"

    def put_stream(self, stream: BinaryIO) -> str:
        """Store the bytes of `stream`; returns their key (same content → same key)."""
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self._tmp(), prefix="obj-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            key = self.object_key(h.hexdigest())
            dest = self._path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                os.unlink(tmp)
            else:
                os.replace(tmp, dest)
            return key
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes) -> str:
        import io
        return self.put_stream(io.BytesIO(data))

    def put_file(self, path: str | os.PathLike[str]) -> str:
        with open(path, "rb") as fh:
            return self.put_stream(fh)

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    # ---- trees (unpacked folders) ----------------------------------------------------------
    @staticmethod
    def tree_key(sha256_hex: str) -> str:
        if not _HEX64.match(sha256_hex):
            raise BlobKeyError(f"not a sha256: {sha256_hex!r}")
        return f"trees/{sha256_hex}"

    def put_tree(self, src: str | os.PathLike[str], sha256_hex: str, subpath: str = "") -> str:
        """Copy the folder `src` in as an immutable tree named by its content hash, at
        `trees/<sha256>/<subpath>` (the subpath keeps names the rules read from the path, such as
        `track_10min_16mb/<folder name>`). Returns the key of the copied folder. Regular files
        and folders only: links are never copied (the intake refuses them before this)."""
        base = self.tree_key(sha256_hex)
        key = f"{base}/{subpath}" if subpath else base
        dest_base, dest = self._path(base), self._path(key)
        if dest_base.exists():
            if dest.exists():
                return key
            raise BlobKeyError(f"tree {base} already exists under another name")
        tmp = Path(tempfile.mkdtemp(dir=self._tmp(), prefix="tree-"))
        try:
            staged = tmp / "t"
            target = staged / subpath if subpath else staged
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, target, symlinks=True,
                            ignore=lambda d, names: [n for n in names
                                                     if os.path.islink(os.path.join(d, n))])
            try:
                os.replace(staged, dest_base)
            except OSError:
                if not dest.exists():   # lost a race with an identical writer: fine
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return key

    @staticmethod
    def safe_name(name: str, default: str = "submission") -> str:
        """`name` reduced to characters a key allows (for folder names kept in tree keys)."""
        cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").strip("._-")[:150]
        return cleaned or default

    # ---- append-only logs ------------------------------------------------------------------
    @staticmethod
    def log_key(submission_id: str, run_name: str) -> str:
        return f"logs/{submission_id}/{run_name}.log"

    def append_lines(self, key: str, lines: Iterable[str | bytes]) -> int:
        """Append lines to a log (each flushed as written); returns bytes written."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(path, "ab", buffering=0) as out:
            for line in lines:
                b = line.encode("utf-8", "replace") if isinstance(line, str) else line
                if not b.endswith(b"\n"):
                    b += b"\n"
                out.write(b)
                n += len(b)
        return n

    def append_line(self, key: str, line: str | bytes) -> int:
        return self.append_lines(key, [line])

    def log_writer(self, key: str) -> BinaryIO:
        """An unbuffered append handle, for a runner piping a process's output line by line."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "ab", buffering=0)

    def iter_log(self, key: str, offset: int = 0, chunk: int = 64 * 1024) -> Iterator[bytes]:
        """The log's bytes from `offset`, in chunks (what the API streams)."""
        with open(self.path(key), "rb") as fh:
            fh.seek(max(0, offset))
            while data := fh.read(chunk):
                yield data

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size
