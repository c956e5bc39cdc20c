"""Configuration evidence besides the logs' Hyperparameters echo: the environment a submission's
run command sets, and the raw log text (for lines that only a guarded branch prints).

March-era logs echo no configuration, and a script whose risky path defaults to off can be run
with it on from the README (`PPM_ENABLED=1 … torchrun …`) or a shipped `.sh`. The order of
evidence is: the logs' echo, then these run commands, then the default written in the code.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_FENCE = re.compile(r"^\s*```+\s*([\w+-]*)\s*$")
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
_LAUNCHER = re.compile(r"(^|/)(torchrun|python\d?(\.\d+)?|accelerate|deepspeed|srun|bash|sh|uv)$")
_SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
MAX_LOG_CHARS = 4_000_000


@dataclass
class LaunchEvidence:
    env: dict[str, str] = field(default_factory=dict)        # VAR -> value (first seen wins)
    where: dict[str, str] = field(default_factory=dict)      # VAR -> "README.md:12"
    log_text: str = ""                                      # every submitted log, concatenated


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with `\\` continuations joined, each with the number of its first line."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for i, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def command_env(line: str) -> dict[str, str]:
    """`export A=1` -> {A: 1}; `A=1 B=2 torchrun … train_gpt.py` -> {A: 1, B: 2}; else {}."""
    line = line.split(" #", 1)[0].strip().lstrip("$ ").strip()
    if not line or line.startswith("#"):
        return {}
    try:
        toks = shlex.split(line)
    except ValueError:
        toks = line.split()
    if not toks:
        return {}
    if toks[0] == "export":
        return {m.group(1): m.group(2) for t in toks[1:] if (m := _ASSIGN.match(t))}
    if toks[0] == "env":
        toks = toks[1:]
    env: dict[str, str] = {}
    for t in toks:
        m = _ASSIGN.match(t)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        return env if env and _LAUNCHER.search(t) else {}
    return {}


def _shell_lines(name: str, text: str, fenced: bool) -> list[tuple[int, str]]:
    if not fenced:
        return _logical_lines(text)
    out, block, lang = [], None, ""
    for i, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            if block is None:
                block, lang = [], m.group(1).lower()
            else:
                if lang in _SHELL_LANGS:
                    out += [(i - len(block) + n - 1, s) for n, s in _logical_lines("\n".join(block))]
                block = None
            continue
        if block is not None:
            block.append(line)
    return out


def launch_evidence(sub) -> LaunchEvidence:
    """The run-command environment from README code blocks and shipped .sh files, and the logs' text."""
    ev = LaunchEvidence()
    files = list(getattr(sub, "files", None) or [])
    root = getattr(sub, "root", None)
    docs: list[tuple[str, str, bool]] = []
    readme = getattr(sub, "readme", None)
    if readme:
        docs.append(("README.md", readme, True))
    for rel in files:
        low = rel.lower()
        is_readme = low.endswith(".md") and low.rsplit("/", 1)[-1].startswith("readme") and not readme
        if (low.endswith(".sh") or is_readme) and root is not None:
            try:
                docs.append((rel, (root / rel).read_text(encoding="utf-8", errors="replace")[:200_000], is_readme))
            except OSError:
                continue
    for name, text, fenced in docs:
        for line_no, line in _shell_lines(name, text, fenced):
            for k, v in command_env(line).items():
                if k not in ev.env:
                    ev.env[k] = v
                    ev.where[k] = f"{name}:{line_no}"
    chunks, total = [], 0
    for log in getattr(sub, "logs", None) or []:
        rel = getattr(log, "file", None)
        if not rel or root is None or total >= MAX_LOG_CHARS:
            continue
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")[:MAX_LOG_CHARS - total]
        except OSError:
            continue
        chunks.append(text)
        total += len(text)
    ev.log_text = "\n".join(chunks)
    return ev


def ctx_launch_evidence(ctx) -> LaunchEvidence:
    """Cached per context, like the seed-log grouping."""
    hit = getattr(ctx, "_launch_evidence", None)
    if hit is None:
        hit = launch_evidence(ctx.submission)
        try:
            ctx._launch_evidence = hit
        except AttributeError:  # pragma: no cover - a frozen context: just recompute next time
            pass
    return hit
