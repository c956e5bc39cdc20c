"""Archive bombs and escapes are refused with stable codes, and nothing lands outside the target."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

from rules import errors
from rules.archive import (SPECIAL_FILE, UNSUPPORTED_ARCHIVE, Limits, sniff, unpack_archive)
from rules.errors import InputError


def _zip(path: Path, members: list[tuple[str, bytes]], attrs: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if attrs and name in attrs:
                info.external_attr = attrs[name] << 16
            zf.writestr(info, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


class _Zeros(io.RawIOBase):
    """A file of n zero bytes that costs no memory."""

    def __init__(self, n: int):
        self.left = n

    def readinto(self, b):  # noqa: D401
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k

    def readable(self):
        return True


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture()
def sandbox(tmp_path: Path):
    """(archive dir, target dir, check) where check() proves nothing was written outside target."""
    arch = tmp_path / "in"
    arch.mkdir()
    target = tmp_path / "sandbox" / "out"
    target.parent.mkdir()
    (target.parent / "sentinel").write_text("keep")

    def check():
        outside = _files_under(target.parent) - {"out", "sentinel"}
        outside = {p for p in outside if not p.startswith("out/")}
        assert outside == set(), outside
        assert (target.parent / "sentinel").read_text() == "keep"
        assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()

    return arch, target, check


def _refused(archive: Path, target: Path, code: str, limits: Limits | None = None) -> InputError:
    with pytest.raises(InputError) as exc:
        unpack_archive(archive, target, **({"limits": limits} if limits else {}))
    assert exc.value.code == code, exc.value.message
    assert exc.value.message and "\n" not in exc.value.message
    return exc.value


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_absolute_path_is_refused(sandbox, kind):
    arch, target, check = sandbox
    evil = f"/tmp/pgolf_evil_{uuid.uuid4().hex}"
    members = [("ok/README.md", b"hi"), (evil, b"pwned")]
    path = arch / f"a.{kind}"
    if kind == "zip":
        _zip(path, members)
    else:
        _tar(path, members, "w:gz" if kind == "tar.gz" else "w")
    _refused(path, target, errors.UNSAFE_PATH)
    assert not Path(evil).exists()
    check()


@pytest.mark.parametrize("name", ["../x", "ok/../../x", "..\\x", "ok/./../../x"])
def test_dotdot_is_refused(sandbox, name):
    arch, target, check = sandbox
    _refused(_zip(arch / "a.zip", [("ok/README.md", b"hi"), (name, b"pwned")]), target, errors.UNSAFE_PATH)
    _refused(_tar(arch / "a.tgz", [(name, b"pwned")]), target, errors.UNSAFE_PATH)
    check()


def test_symlink_to_etc_is_refused(sandbox):
    arch, target, check = sandbox
    _refused(_tar(arch / "s.tar.gz", [("sub/README.md", b"x"), _link("sub/etc", "/etc", tarfile.SYMTYPE)]),
             target, errors.UNSAFE_PATH)
    _refused(_tar(arch / "s2.tar.gz", [_link("sub/up", "../../..", tarfile.SYMTYPE)]), target, errors.UNSAFE_PATH)
    _refused(_zip(arch / "s.zip", [("sub/passwd", b"/etc/passwd")], {"sub/passwd": stat.S_IFLNK | 0o777}),
             target, errors.UNSAFE_PATH)
    assert not any(p.is_symlink() for p in target.rglob("*"))
    check()


def test_hardlink_escape_is_refused(sandbox):
    arch, target, check = sandbox
    _refused(_tar(arch / "h.tar", [("sub/a", b"x"), _link("sub/b", "../../etc/passwd", tarfile.LNKTYPE)], "w"),
             target, errors.UNSAFE_PATH)
    _refused(_tar(arch / "h2.tar", [_link("sub/b", "/etc/passwd", tarfile.LNKTYPE)], "w"),
             target, errors.UNSAFE_PATH)
    check()


def test_links_inside_the_folder_are_skipped_not_created(sandbox):
    arch, target, check = sandbox
    root = unpack_archive(_tar(arch / "ok.tgz", [("sub/README.md", b"readme"),
                                                 _link("sub/alias.md", "README.md", tarfile.SYMTYPE),
                                                 _link("sub/hard.md", "sub/README.md", tarfile.LNKTYPE)]), target)
    assert root == target / "sub"
    assert _files_under(root) == {"README.md"}
    check()


def test_device_file_is_refused(sandbox):
    arch, target, check = sandbox
    dev = tarfile.TarInfo("sub/null")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    _refused(_tar(arch / "d.tar", [("sub/README.md", b"x"), dev], "w"), target, SPECIAL_FILE)
    fifo = tarfile.TarInfo("sub/fifo")
    fifo.type = tarfile.FIFOTYPE
    _refused(_tar(arch / "f.tgz", [fifo]), target, SPECIAL_FILE)
    check()


def test_too_many_members(sandbox):
    arch, target, check = sandbox
    members = [(f"sub/f{i}.txt", b"") for i in range(1001)]
    _refused(_zip(arch / "m.zip", members), target, errors.TOO_MANY_MEMBERS)
    _refused(_tar(arch / "m.tgz", members), target, errors.TOO_MANY_MEMBERS)
    # exactly 1,000 is fine
    root = unpack_archive(_zip(arch / "ok.zip", members[:1000]), target / "ok")
    assert len(list(root.iterdir())) == 1000
    check()


def test_ratio_bomb_of_201_mb_zeros(sandbox):
    arch, target, check = sandbox
    n = 201 * 1000 * 1000
    zpath = arch / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo("sub/zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as out:
            chunk = bytes(1 << 20)
            left = n
            while left:
                k = min(left, len(chunk))
                out.write(chunk[:k])
                left -= k
    assert zpath.stat().st_size * 100 < n
    _refused(zpath, target, errors.ZIP_BOMB)
    tpath = arch / "bomb.tar.gz"
    info = tarfile.TarInfo("sub/zeros.bin")
    info.size = n
    with tarfile.open(tpath, "w:gz", compresslevel=1) as tf:
        tf.addfile(info, io.BufferedReader(_Zeros(n)))
    assert tpath.stat().st_size * 100 < n
    _refused(tpath, target, errors.ZIP_BOMB)   # no header pre-check for tar: caught while streaming
    written = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert written <= 100 * tpath.stat().st_size + (1 << 20)
    check()


def test_total_size_limit_stops_writing(sandbox):
    arch, target, check = sandbox
    data = os.urandom(300_000)
    limits = Limits(max_total_bytes=500_000)
    members = [("sub/a.bin", data), ("sub/b.bin", data), ("sub/c.bin", data)]
    _refused(_tar(arch / "big.tgz", members), target / "t", errors.TOO_LARGE, limits)
    written = sum(p.stat().st_size for p in (target / "t").rglob("*") if p.is_file())
    assert written <= 500_000
    _refused(_zip(arch / "big.zip", members), target / "z", errors.TOO_LARGE, limits)
    check()


def test_corrupt_empty_and_unsupported(sandbox):
    arch, target, check = sandbox
    (arch / "c.zip").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    _refused(arch / "c.zip", target, errors.BAD_ARCHIVE)
    (arch / "c.tgz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    _refused(arch / "c.tgz", target, errors.BAD_ARCHIVE)
    good = _zip(arch / "g.zip", [("sub/README.md", b"x" * 5000)]).read_bytes()
    (arch / "trunc.zip").write_bytes(good[: len(good) // 2])
    _refused(arch / "trunc.zip", target, errors.BAD_ARCHIVE)
    (arch / "empty.zip").write_bytes(b"")
    _refused(arch / "empty.zip", target, errors.BAD_ARCHIVE)
    (arch / "notes.tar.gz").write_text("just text, whatever the extension says")
    _refused(arch / "notes.tar.gz", target, UNSUPPORTED_ARCHIVE)
    _refused(_zip(arch / "nothing.zip", []), target, errors.BAD_ARCHIVE)   # no files at all
    check()


def test_detected_by_content_not_extension(sandbox):
    arch, target, check = sandbox
    misnamed = _zip(arch / "really_a_zip.tar.gz", [("2026-01-01_X/README.md", b"hello")])
    assert sniff(misnamed) == "zip"
    root = unpack_archive(misnamed, target)
    assert root.name == "2026-01-01_X" and (root / "README.md").read_text() == "hello"
    tar_named_zip = _tar(arch / "t.zip", [("README.md", b"a"), ("x.log", b"b")])
    assert sniff(tar_named_zip) == "tar.gz"
    root2 = unpack_archive(tar_named_zip, target.parent / "out2")
    assert root2 == target.parent / "out2"                      # no single folder: the target is the root
    assert _files_under(root2) == {"README.md", "x.log"}


def test_duplicate_member_is_refused(sandbox):
    arch, target, check = sandbox
    _refused(_tar(arch / "dup.tgz", [("sub/a.log", b"one"), ("sub/a.log", b"two")]), target, errors.BAD_ARCHIVE)
    check()


@pytest.mark.parametrize("mode, kind", [("w:bz2", "tar.bz2"), ("w:xz", "tar.xz"), ("w", "tar"), ("w:gz", "tar.gz")])
def test_compressed_tar_flavours(sandbox, mode, kind):
    arch, target, check = sandbox
    path = _tar(arch / "t.bin", [("2026-01-02_T/README.md", b"r"), ("2026-01-02_T/logs/train0.txt", b"l")], mode)
    assert sniff(path) == kind
    root = unpack_archive(path, target)
    assert root.name == "2026-01-02_T" and _files_under(root) == {"README.md", "logs", "logs/train0.txt"}
    check()
