"""The blob store: content addressing, atomic writes, trees, append-only logs, path safety."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.blobs import BlobKeyError, BlobNotFound, BlobStore


def test_objects_are_content_addressed(tmp_path: Path) -> None:
    b = BlobStore(tmp_path)
    k1 = b.put_bytes(b"hello")
    k2 = b.put_bytes(b"hello")
    k3 = b.put_bytes(b"other")
    assert k1 == k2 != k3
    assert k1.startswith("objects/2c/")
    assert b.get_bytes(k1) == b"hello"
    assert os.listdir(tmp_path / "tmp") == []       # temp files renamed or removed


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "objects/../../x", "a//b", "", ".hidden",
                                 "logs/a/../../b", "a\\b", "a/./b"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    b = BlobStore(tmp_path)
    with pytest.raises(BlobKeyError):
        b.path(key)


def test_missing_blob(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        BlobStore(tmp_path).path("objects/aa/bb")


def test_trees_keep_names_and_drop_links(tmp_path: Path) -> None:
    src = tmp_path / "src" / "2026-01-01_X"
    (src / "sub").mkdir(parents=True)
    (src / "README.md").write_text("hi")
    (src / "sub" / "a.log").write_text("line\n")
    os.symlink("/etc/passwd", src / "leak")
    b = BlobStore(tmp_path / "store")
    sha = "0" * 64
    key = b.put_tree(src, sha, "track_10min_16mb/2026-01-01_X")
    assert key == f"trees/{sha}/track_10min_16mb/2026-01-01_X"
    root = b.path(key)
    assert (root / "README.md").read_text() == "hi" and (root / "sub" / "a.log").exists()
    assert not (root / "leak").exists() and not (root / "leak").is_symlink()
    # the same tree again is a no-op; a different name under the same hash is refused
    assert b.put_tree(src, sha, "track_10min_16mb/2026-01-01_X") == key
    with pytest.raises(BlobKeyError):
        b.put_tree(src, sha, "other")
    assert BlobStore.safe_name("a b/../c") == "a_b_.._c"
    assert BlobStore.safe_name("...") == "submission"


def test_logs_append_and_stream_from_offset(tmp_path: Path) -> None:
    b = BlobStore(tmp_path)
    key = b.log_key("sub1", "seed-1")
    b.append_line(key, "step 1")
    b.append_lines(key, ["step 2\n", b"step 3"])
    assert b.get_bytes(key) == b"step 1\nstep 2\nstep 3\n"
    assert b"".join(b.iter_log(key, offset=7)) == b"step 2\nstep 3\n"
    with b.log_writer(key) as w:
        w.write(b"step 4\n")
        # visible to readers before the writer closes (streamed, not buffered)
        assert b.get_bytes(key).endswith(b"step 4\n")
    assert b.size(key) == len(b"step 1\nstep 2\nstep 3\nstep 4\n")
