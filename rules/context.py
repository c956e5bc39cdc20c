"""What every rule reads: the loaded submission, its decoded sources, its parsed logs, the policy,
and (after a reproduction) the runs and their traces."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .logs import ParsedLog


@dataclass
class SourceFile:
    """A Python source of the submission. `text` is the real source: self-extracting wrappers
    (exec(lzma.decompress(b85decode(...))) and friends) are decoded by parsing, never executed."""
    path: str                      # relative to the submission root
    text: str                      # decoded source (what the code rules read)
    raw_bytes: int                 # size of the file as shipped
    wrapper_layers: list[str] = field(default_factory=list)  # e.g. ["b85decode", "lzma"] when decoded
    syntax_error: str | None = None  # one sentence when `text` does not parse


@dataclass
class Submission:
    root: Path                       # the records folder on disk (unpacked if an archive)
    name: str                        # folder name, e.g. 2026-03-29_Loader_FullGPTQ_XSA11_BigramHash2816
    sha256: str                      # identity: hash over (relpath, content) of every file, sorted
    files: list[str]                 # every file, relative, sorted
    track: str | None                # "10min_16mb" | "non_record_16mb" | None
    readme: str | None
    submission_json: dict[str, Any] | None
    submission_json_file: str | None
    submission_json_error: str | None  # one sentence when missing or malformed
    logs: list[ParsedLog]
    sources: list[SourceFile]          # every .py, decoded
    requirements: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def train_script(self) -> SourceFile | None:
        for s in self.sources:
            if s.path == "train_gpt.py":
                return s
        for s in self.sources:
            if Path(s.path).name == "train_gpt.py":
                return s
        return None


@dataclass
class RunEvidence:
    """One reproduction run (issue 5). Rules read `trace` events when present."""
    seed: int | None
    status: str                      # "ok" | "crashed" | "timeout" | "infra_error"
    log_file: str | None = None
    parsed: ParsedLog | None = None
    wall_s: dict[str, float] = field(default_factory=dict)   # start, first_step, train_end, end
    artifact_bytes: int | None = None
    gpu: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    trace_file: str | None = None
    network_isolated: bool | None = None
    calibration: dict[str, Any] | None = None


@dataclass
class AuditContext:
    submission: Submission
    policy: Any                      # rules.policies.Policy
    runs: list[RunEvidence] = field(default_factory=list)
    frontier: Any = None             # rules.frontier.Frontier

    def run_config(self) -> dict[str, str]:
        """The configuration the logs show was run (union over seed logs; first seen wins)."""
        out: dict[str, str] = {}
        for log in self.submission.logs:
            for k, v in log.config.items():
                out.setdefault(k, v)
        return out
