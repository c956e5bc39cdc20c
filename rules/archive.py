"""Safe unpacking of one records folder shipped as `.zip`, `.tar`, `.tar.gz`/`.tgz` (also
bzip2/xz-compressed tar).

The format is detected from the content (magic bytes), never from the extension. Every limit is
enforced while streaming, on the bytes actually produced, because archive headers can lie:

* at most `Limits.max_members` members (1,000);
* at most `Limits.max_total_bytes` unpacked (200 MB) — writing stops as soon as it is exceeded;
* a compression ratio (unpacked / archive size) of at most `Limits.max_ratio` (100), checked
  once more than `Limits.ratio_floor_bytes` (1 MiB) are out, so tiny archives of a few
  repetitive lines are not mistaken for bombs;
* no absolute paths, no `..`, no drive letters; links (symlinks and hardlinks) pointing outside
  the folder are refused and links inside it are not created (auditing never needs them, and a
  link inside could redirect a later write); device files and FIFOs are refused.

Each refusal raises `rules.errors.InputError` with a stable code. If the archive holds a single
top-level folder, that folder is the submission root (through any chain of single folders, so
`records/track_10min_16mb/<name>/` from a PR diff works too).
"""
from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import (BAD_ARCHIVE, TOO_LARGE, TOO_MANY_MEMBERS, UNSAFE_PATH, ZIP_BOMB,
                     InputError)

UNSUPPORTED_ARCHIVE = "unsupported_archive"   # not a zip / tar / tar.gz / tgz (by content)
SPECIAL_FILE = "special_file"                 # device file, FIFO or other non-regular member

_CHUNK = 64 * 1024
_SKIP_PREFIXES = ("__MACOSX/",)


@dataclass(frozen=True)
class Limits:
    max_members: int = 1000
    max_total_bytes: int = 200 * 1000 * 1000
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1024 * 1024


DEFAULT_LIMITS = Limits()


def sniff(path: Path) -> str | None:
    """The archive kind of a file from its first bytes: "zip", "tar", "tar.gz", "tar.bz2",
    "tar.xz", or None when it is none of these."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:3] == b"BZh":
        return "tar.bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "tar.xz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def safe_member_path(name: str) -> str:
    """The normalized relative path of a member, or InputError(UNSAFE_PATH)."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or raw.startswith("//"):
        raise InputError(UNSAFE_PATH, f"The archive member {name!r} has an absolute path.")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InputError(UNSAFE_PATH, f"The archive member {name!r} leaves the folder ('..').")
    if any("\x00" in p for p in parts):
        raise InputError(UNSAFE_PATH, f"The archive member {name!r} has a NUL byte in its name.")
    return "/".join(parts)


def _link_stays_inside(member: str, target: str, hard: bool) -> bool:
    """Whether a link named `member` pointing at `target` resolves inside the folder."""
    t = target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        return False
    base = "" if hard else posixpath.dirname(member)
    joined = posixpath.normpath(posixpath.join(base, t))
    return not (joined == ".." or joined.startswith("../"))


class _Writer:
    """Writes members under `target`, counting bytes against the limits as they stream."""

    def __init__(self, target: Path, archive_size: int, limits: Limits):
        self.target = target
        self.real_target = os.path.realpath(target)
        self.archive_size = max(archive_size, 1)
        self.limits = limits
        self.total = 0
        self.members = 0
        self.written: set[str] = set()
        self.skipped_links: list[str] = []

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise InputError(TOO_MANY_MEMBERS,
                             f"The archive has more than {self.limits.max_members:,} members.")

    def _account(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise InputError(TOO_LARGE, f"The archive unpacks to more than "
                                        f"{self.limits.max_total_bytes:,} bytes.")
        if (self.total > self.limits.ratio_floor_bytes
                and self.total > self.limits.max_ratio * self.archive_size):
            raise InputError(ZIP_BOMB, f"The archive expands more than {self.limits.max_ratio:g} times "
                                       f"its size ({self.archive_size:,} bytes); refusing a likely zip bomb.")

    def destination(self, rel: str) -> Path:
        if rel in self.written:
            raise InputError(BAD_ARCHIVE, f"The archive holds {rel!r} twice.")
        dest = self.target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        real_parent = os.path.realpath(dest.parent)
        if os.path.commonpath([real_parent, self.real_target]) != self.real_target:
            raise InputError(UNSAFE_PATH, f"The archive member {rel!r} would be written outside the folder.")
        if dest.is_symlink() or (dest.exists() and not dest.is_file()):
            raise InputError(UNSAFE_PATH, f"The archive member {rel!r} collides with another member.")
        self.written.add(rel)
        return dest

    def write_stream(self, rel: str, src: BinaryIO) -> None:
        dest = self.destination(rel)
        with open(dest, "wb") as out:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                # account before writing: never write past the budget
                self._account(len(chunk))
                out.write(chunk)

    def make_dir(self, rel: str) -> None:
        if not rel:
            return
        d = self.target / rel
        d.mkdir(parents=True, exist_ok=True)
        if os.path.commonpath([os.path.realpath(d), self.real_target]) != self.real_target:
            raise InputError(UNSAFE_PATH, f"The archive folder {rel!r} is outside the folder.")


def unpack_archive(archive: str | Path, target: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Unpack `archive` into the (empty or new) folder `target`; return the submission root."""
    archive = Path(archive)
    target = Path(target)
    try:
        size = archive.stat().st_size
    except OSError as exc:
        raise InputError(BAD_ARCHIVE, f"The archive could not be read ({exc.strerror}).") from exc
    if size == 0:
        raise InputError(BAD_ARCHIVE, "The archive is an empty file.")
    kind = sniff(archive)
    if kind is None:
        raise InputError(UNSUPPORTED_ARCHIVE,
                         "The file is not a zip, tar, tar.gz or tgz archive (judged by its content).")
    target.mkdir(parents=True, exist_ok=True)
    writer = _Writer(target, size, limits)
    try:
        if kind == "zip":
            _unpack_zip(archive, writer)
        else:
            _unpack_tar(archive, writer)
    except InputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, OSError,
            ValueError, RuntimeError, NotImplementedError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(BAD_ARCHIVE, f"The archive is corrupt or unreadable ({type(exc).__name__}: {detail}).") from exc
    if not writer.written:
        raise InputError(BAD_ARCHIVE, "The archive contains no files.")
    return _submission_root(target)


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > writer.limits.max_members:
            raise InputError(TOO_MANY_MEMBERS, f"The archive has more than {writer.limits.max_members:,} members.")
        declared = sum(i.file_size for i in infos)
        # headers are only a first look (zipfile never returns more than file_size bytes, and
        # the stream is counted again below), but they let an obvious bomb fail before any write
        if declared > writer.limits.ratio_floor_bytes and declared > writer.limits.max_ratio * writer.archive_size:
            raise InputError(ZIP_BOMB, f"The archive declares {declared:,} unpacked bytes from "
                                       f"{writer.archive_size:,}; refusing a likely zip bomb.")
        if declared > writer.limits.max_total_bytes:
            raise InputError(TOO_LARGE, f"The archive declares {declared:,} unpacked bytes "
                                        f"(limit {writer.limits.max_total_bytes:,}).")
        for info in infos:
            writer.count_member()
            rel = safe_member_path(info.filename)
            if not rel or rel.startswith(_SKIP_PREFIXES):
                continue
            mode = (info.external_attr >> 16) & 0xFFFF
            ftype = stat.S_IFMT(mode) if mode else 0
            if ftype == stat.S_IFLNK:
                with zf.open(info) as f:
                    link_target = f.read(4096).decode("utf-8", errors="replace")
                if not _link_stays_inside(rel, link_target, hard=False):
                    raise InputError(UNSAFE_PATH, f"The archive member {rel!r} is a link pointing outside the folder.")
                writer.skipped_links.append(rel)
                continue
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                raise InputError(SPECIAL_FILE, f"The archive member {rel!r} is not a regular file.")
            if info.is_dir() or ftype == stat.S_IFDIR:
                writer.make_dir(rel)
                continue
            if info.flag_bits & 0x1:
                raise InputError(BAD_ARCHIVE, f"The archive member {rel!r} is encrypted.")
            with zf.open(info) as src:
                writer.write_stream(rel, src)


def _unpack_tar(archive: Path, writer: _Writer) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        while True:
            member = tf.next()
            if member is None:
                break
            writer.count_member()
            rel = safe_member_path(member.name)
            if not rel or rel.startswith(_SKIP_PREFIXES):
                continue
            if member.issym() or member.islnk():
                if not _link_stays_inside(rel, member.linkname, hard=member.islnk()):
                    raise InputError(UNSAFE_PATH, f"The archive member {rel!r} is a link pointing outside the folder.")
                writer.skipped_links.append(rel)
                continue
            if member.isdir():
                writer.make_dir(rel)
                continue
            if not member.isfile():
                raise InputError(SPECIAL_FILE, f"The archive member {rel!r} is a device file, FIFO or "
                                               "other non-regular file.")
            src = tf.extractfile(member)
            if src is None:
                raise InputError(BAD_ARCHIVE, f"The archive member {rel!r} could not be read.")
            with src:
                writer.write_stream(rel, src)
            tf.members = []   # do not keep every TarInfo in memory


def _submission_root(target: Path) -> Path:
    """The folder holding the submission: descend through folders that hold nothing but one
    folder (`2026-..._X/`, or `records/track_10min_16mb/2026-..._X/` from a PR diff)."""
    root = target
    for _ in range(8):
        entries = [p for p in root.iterdir() if p.name not in ("__MACOSX", ".DS_Store")]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        else:
            break
    return root
