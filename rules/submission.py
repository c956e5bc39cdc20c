"""Load a submission (a records folder, or an archive of one) into `rules.context.Submission`.

`load_submission` raises `InputError` only when the input cannot be a submission at all (missing
path, a file that is not an archive, an unsafe or broken archive, a folder with no records-folder
file in it). Everything else is recorded, never raised: a missing or malformed `submission.json`
becomes `submission_json_error`, a binary or non-UTF-8 log a `ParsedLog` with problems, a script
that does not parse a `SourceFile.syntax_error`.

The identity `sha256` is a hash over the sorted (relative path, sha256 of content) pairs of every
file, so the same content gets the same id whether it came as a folder, a zip or a tarball.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

from .archive import sniff, unpack_archive
from .context import SourceFile, Submission
from .decode import decode_source
from .errors import NOT_A_RECORDS_FOLDER, NOT_FOUND, InputError
from .logs import ParsedLog, parse_log_bytes

MAX_FILES = 5000                    # files walked in a folder (more: the rest are ignored, noted)
MAX_LOG_BYTES = 64 * 1024 * 1024    # bytes read from one log
MAX_SOURCE_BYTES = 16 * 1024 * 1024  # bytes read from one .py
MAX_TEXT_BYTES = 4 * 1024 * 1024    # README / submission.json / requirements.txt
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", "__MACOSX", ".venv", "node_modules"}
_NOT_LOGS = ("readme", "requirements", "license", "cmakelists")
_TRACKS = {"track_10min_16mb": "10min_16mb", "track_non_record_16mb": "non_record_16mb"}


def load_submission(path: str | Path, *, workdir: Path | None = None) -> Submission:
    """Load the records folder (or archive of one) at `path`. See the module docstring."""
    src = Path(path)
    if not src.exists():
        raise InputError(NOT_FOUND, f"{src} does not exist.")
    archive_path: Path | None = None
    if src.is_dir():
        root = src
    elif src.is_file():
        if sniff(src) is None and src.stat().st_size > 0:
            raise InputError(NOT_A_RECORDS_FOLDER,
                             f"{src.name} is neither a folder nor a zip/tar archive of a records folder.")
        target = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pgolf-sub-"))
        if workdir is not None:
            target = target / "unpacked"
            if target.exists() and any(target.iterdir()):
                target = Path(tempfile.mkdtemp(prefix="unpacked-", dir=workdir))
        root = unpack_archive(src, target)
        archive_path = src
        if root == target:   # no single top-level folder: name the submission after the archive
            return _load_folder(root, archive_path, name=_archive_stem(src))
    else:
        raise InputError(NOT_A_RECORDS_FOLDER, f"{src} is neither a folder nor a regular file.")
    return _load_folder(root, archive_path)


def _walk(root: Path, problems: list[str]) -> list[str]:
    out: list[str] = []
    skipped_links = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not Path(dirpath, d).is_symlink())
        for fn in sorted(filenames):
            full = Path(dirpath, fn)
            if full.is_symlink() or not full.is_file():
                skipped_links += 1
                continue
            out.append(full.relative_to(root).as_posix())
            if len(out) >= MAX_FILES:
                problems.append(f"The folder has more than {MAX_FILES:,} files; only the first were read.")
                return sorted(out)
    if skipped_links:
        problems.append(f"{skipped_links} symbolic link(s) or special file(s) in the folder were ignored.")
    return sorted(out)


def _read(path: Path, cap: int) -> tuple[bytes, bool]:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    return data[:cap], len(data) > cap


def _text(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(root: Path, files: list[str]) -> str:
    """Identity of a file set: sha256 over sorted (relpath, sha256(content)) pairs."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8", errors="surrogateescape"))
        h.update(b"\0")
        h.update(_file_digest(root / rel).encode())
        h.update(b"\n")
    return h.hexdigest()


def is_log_name(rel: str) -> bool:
    p = PurePosixPath(rel)
    if p.suffix.lower() not in (".log", ".txt"):
        return False
    return not p.name.lower().startswith(_NOT_LOGS)


def _track(parts: list[str], meta: dict | None) -> str | None:
    for part in parts:
        if part in _TRACKS:
            return _TRACKS[part]
    raw = meta.get("track") if isinstance(meta, dict) else None
    if isinstance(raw, str):
        t = raw.strip().lower().replace("-", "_")
        if t.startswith("track_"):
            t = t[len("track_"):]
        if "non_record" in t:
            return "non_record_16mb"
        if t in ("10min_16mb", "record", "10min"):
            return "10min_16mb"
    return None


def _pick_json(files: list[str]) -> str | None:
    cands = [f for f in files if PurePosixPath(f).name.lower().startswith("submission")
             and f.lower().endswith(".json")]
    if not cands:
        return None
    # top level first, then `submission.json` over variants (submission_ternary.json)
    cands.sort(key=lambda f: (f.count("/"), PurePosixPath(f).name.lower() != "submission.json", f))
    return cands[0]


def _load_json(root: Path, rel: str | None) -> tuple[dict | None, str | None]:
    if rel is None:
        return None, "No submission.json was found in the folder."
    data, truncated = _read(root / rel, MAX_TEXT_BYTES)
    if truncated:
        return None, f"{rel} is larger than {MAX_TEXT_BYTES:,} bytes and was not read."
    text, _ = _text(data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"{rel} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})."
    except RecursionError:
        return None, f"{rel} is nested too deeply to read."
    if not isinstance(obj, dict):
        return None, f"{rel} holds a JSON {type(obj).__name__}, not an object."
    return obj, None


def _pick_top(files: list[str], names: tuple[str, ...]) -> str | None:
    cands = [f for f in files if PurePosixPath(f).name.lower() in names]
    cands.sort(key=lambda f: (f.count("/"), f))
    return cands[0] if cands else None


def _source(root: Path, rel: str, problems: list[str]) -> SourceFile:
    data, truncated = _read(root / rel, MAX_SOURCE_BYTES)
    raw_bytes = (root / rel).stat().st_size
    text, replaced = _text(data)
    if truncated:
        problems.append(f"{rel} is larger than {MAX_SOURCE_BYTES:,} bytes; only its start was read.")
    if replaced:
        problems.append(f"{rel} is not valid UTF-8; undecodable bytes were replaced.")
    dec = decode_source(text)
    for note in dec.notes:
        problems.append(f"{rel}: {note}")
    syntax_error = None
    try:
        ast.parse(dec.text, filename=rel)
    except SyntaxError as exc:
        syntax_error = f"{rel} does not parse: {exc.msg} at line {exc.lineno}."
    except (ValueError, RecursionError, MemoryError) as exc:
        syntax_error = f"{rel} does not parse ({type(exc).__name__})."
    return SourceFile(path=rel, text=dec.text, raw_bytes=raw_bytes,
                      wrapper_layers=list(dec.layers), syntax_error=syntax_error)


def _log(root: Path, rel: str) -> ParsedLog:
    data, truncated = _read(root / rel, MAX_LOG_BYTES)
    log = parse_log_bytes(data, rel)
    if truncated:
        log.problems.append(f"{rel} is larger than {MAX_LOG_BYTES:,} bytes; only its start was read.")
    return log


def _load_folder(root: Path, archive_path: Path | None, name: str | None = None) -> Submission:
    problems: list[str] = []
    files = _walk(root, problems)
    logs_rel = [f for f in files if is_log_name(f)]
    py_rel = [f for f in files if f.lower().endswith(".py")]
    json_rel = _pick_json(files)
    readme_rel = _pick_top(files, ("readme.md", "readme.txt", "readme"))
    if not (logs_rel or py_rel or json_rel or readme_rel):
        raise InputError(NOT_A_RECORDS_FOLDER,
                         f"{root.name} has no README.md, submission.json, train log or .py file; "
                         "it is not a records folder.")
    meta, json_error = _load_json(root, json_rel)
    readme = None
    if readme_rel:
        data, _ = _read(root / readme_rel, MAX_TEXT_BYTES)
        readme, replaced = _text(data)
        if replaced:
            problems.append(f"{readme_rel} is not valid UTF-8; undecodable bytes were replaced.")
    req_rel = _pick_top(files, ("requirements.txt",))
    requirements = _text(_read(root / req_rel, MAX_TEXT_BYTES)[0])[0] if req_rel else None

    parts = list(root.resolve().parts)
    if archive_path is not None:
        parts += list(archive_path.resolve().parts)
    return Submission(
        root=root,
        name=name or root.name,
        sha256=content_sha256(root, files),
        files=files,
        track=_track(parts, meta),
        readme=readme,
        submission_json=meta,
        submission_json_file=json_rel,
        submission_json_error=json_error,
        logs=[_log(root, rel) for rel in logs_rel],
        sources=[_source(root, rel, problems) for rel in py_rel],
        requirements=requirements,
        problems=problems,
    )


def _archive_stem(path: Path) -> str:
    name = path.name
    for ext in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem
