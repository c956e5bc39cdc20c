"""Building an AuditContext for a fixture folder without the submission loader, so the code rules
are testable on their own (the fixture harness uses rules.engine.context_for once it exists)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from rules.context import AuditContext, SourceFile, Submission
from rules.logs import ParsedLog

_HP_LINE = re.compile(r"^\s{2}([A-Za-z_][A-Za-z0-9_]*): (.*)$")
_TRAIN_TIME = re.compile(r"stopping_early: wallclock_cap train_time:\s?(\d+)ms")
_GPTQ = re.compile(r"GPTQ:collected (\d+) Hessians in ([\d.]+)s")
_RESERVE = re.compile(r"gptq:reserving (\d+)s, effective=(\d+)ms")
_SHARDS = re.compile(r"(?:^|\s)train_shards:\s?(\d+)\b")
_VALTOK = re.compile(r"^val_tokens: (\d+)$")
_SCORE = re.compile(r"^(\S+) val_loss[:=]\s?([\d.]+) val_bpb[:=]\s?([\d.]+)")


def mini_parse_log(text: str, file: str) -> ParsedLog:
    """Just the fields the code rules read: the Hyperparameters echo, train time, GPTQ timing,
    the data fingerprints (with where each was read)."""
    from rules.logs import LogLine, ScoreLine
    log = ParsedLog(file=file)
    in_hp = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip() == "Hyperparameters:":
            in_hp = True
            continue
        m = _HP_LINE.match(line)
        if in_hp and m:
            log.config[m.group(1)] = m.group(2).strip()
            continue
        in_hp = False
        if (m := _SCORE.match(line)):
            log.scores.append(ScoreLine(m.group(1), float(m.group(2)), float(m.group(3)), None, LogLine(i, line)))
        if (m := _TRAIN_TIME.search(line)):
            log.train_time_ms = float(m.group(1))
            log.where["train_time_ms"] = LogLine(i, line)
        if (m := _GPTQ.search(line)):
            log.gptq_collect_s = float(m.group(2))
            log.where["gptq_collect_s"] = LogLine(i, line)
        if (m := _RESERVE.search(line)):
            log.gptq_reserve_ms = float(m.group(1)) * 1000
            log.where["gptq_reserve_ms"] = LogLine(i, line)
        if (m := _SHARDS.search(line)):
            log.train_shards = int(m.group(1))
            log.where["train_shards"] = LogLine(i, line)
        if (m := _VALTOK.match(line)):
            log.val_tokens = int(m.group(1))
            log.where["val_tokens"] = LogLine(i, line)
        if line.startswith("wallclock:post_gptq"):
            log.where["post_gptq"] = LogLine(i, line)
            m = re.search(r"total_elapsed:([\d.]+)s", line)
            log.post_train_elapsed_s = float(m.group(1)) if m else None
        if "gptq:generated" in line or "self-generated" in line:
            log.gptq_calib_source = "self-generated"
        elif line.lower().startswith("gptq") and ("(val data)" in line or "validation" in line.lower()):
            log.gptq_calib_source = "val"
            log.where["gptq_calib_source"] = LogLine(i, line)
    return log


def source_file(path: str, text: str) -> SourceFile:
    err = None
    try:
        ast.parse(text)
    except SyntaxError as e:
        err = f"{e.msg} at line {e.lineno}"
    return SourceFile(path=path, text=text, raw_bytes=len(text.encode()), syntax_error=err)


def context_for_dir(case: Path) -> AuditContext:
    """Prefer the real loader; fall back to a direct build from the folder's files."""
    try:
        from rules.engine import context_for  # type: ignore[import-not-found]
        return context_for(case, policy=None)
    except (ImportError, NotImplementedError, AttributeError):
        return direct_context(case)


def direct_context(case: Path) -> AuditContext:
    """An AuditContext straight from a folder: every .py decoded as is, logs through mini_parse_log."""
    files = sorted(str(p.relative_to(case)) for p in case.rglob("*") if p.is_file())
    sources = [source_file(f, (case / f).read_text()) for f in files if f.endswith(".py")]
    logs = [mini_parse_log((case / f).read_text(), f) for f in files
            if f.endswith((".log", ".txt")) and not f.startswith("requirements")]
    sub = Submission(root=case, name=case.name, sha256="0" * 64, files=files, track="10min_16mb",
                     readme=None, submission_json=None, submission_json_file=None,
                     submission_json_error=None, logs=logs, sources=sources)
    return AuditContext(submission=sub, policy=None)


def context_for_script(text: str | None, logs: list[ParsedLog] | None = None,
                       extra: dict[str, str] | None = None) -> AuditContext:
    sources = [] if text is None else [source_file("train_gpt.py", text)]
    sources += [source_file(k, v) for k, v in (extra or {}).items()]
    sub = Submission(root=Path("."), name="case", sha256="0" * 64,
                     files=[s.path for s in sources], track="10min_16mb", readme=None,
                     submission_json=None, submission_json_file=None, submission_json_error=None,
                     logs=list(logs or []), sources=sources)
    return AuditContext(submission=sub, policy=None)
