"""The verdict contract (../shared/spec/verdict.md) as dataclasses.

Names here are read by other tools: add fields freely, never rename or drop the contract's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SCHEMA = "pgolf-audit/verdict/1"

RuleOutcome = Literal["pass", "fail", "warn", "needs_review", "not_applicable"]
VerdictOutcome = Literal["pass", "fail", "needs_review"]
EvidenceSource = Literal["code", "log", "json", "readme", "run", "trace"]


@dataclass
class Evidence:
    source: EvidenceSource
    file: str | None = None
    line: int | None = None
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "line": self.line, "text": self.text}


@dataclass
class RuleResult:
    id: str
    code: str
    title: str
    outcome: RuleOutcome
    message: str
    measured: float | int | str | None = None
    limit: float | int | str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    # which evidence the outcome rests on: "claimed" (the submitted logs/code) or "reproduced" (our runs)
    basis: str = "claimed"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code": self.code,
            "title": self.title,
            "outcome": self.outcome,
            "message": self.message,
            "measured": self.measured,
            "limit": self.limit,
            "evidence": [e.to_json() for e in self.evidence],
            "basis": self.basis,
        }


@dataclass
class SeedResult:
    seed: int | str | None
    log: str
    val_bpb: float | None = None
    val_loss: float | None = None
    artifact_bytes: int | None = None
    code_bytes: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Baseline:
    name: str
    seeds: list[float]
    pr: int | None = None
    val_bpb: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Statistics:
    n: int
    mean_bpb: float | None
    std_bpb: float | None
    baseline: Baseline | None = None
    test: str = "welch-one-sided"
    p_value: float | None = None
    alpha: float | None = None
    margin_bpb: float | None = None
    significant: bool | None = None
    # both policies' readings are always shown; the selected policy decides
    readings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["baseline"] = self.baseline.to_json() if self.baseline else None
        return d


@dataclass
class SubmissionInfo:
    name: str | None
    author: str | None
    github_id: str | None
    track: str | None
    claimed_val_bpb: float | None
    sha256: str
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    outcome: VerdictOutcome
    policy: str
    submission: SubmissionInfo
    rules: list[RuleResult]
    seeds: list[SeedResult]
    statistics: Statistics | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    schema: str = SCHEMA

    @staticmethod
    def outcome_of(rules: list[RuleResult]) -> VerdictOutcome:
        if any(r.outcome == "fail" for r in rules):
            return "fail"
        if any(r.outcome == "needs_review" for r in rules):
            return "needs_review"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "outcome": self.outcome,
            "policy": self.policy,
            "submission": self.submission.to_json(),
            "rules": [r.to_json() for r in self.rules],
            "seeds": [s.to_json() for s in self.seeds],
            "statistics": self.statistics.to_json() if self.statistics else None,
            "runs": self.runs,
        }


EXIT_CODES: dict[str, int] = {"pass": 0, "fail": 1, "needs_review": 2}
EXIT_BAD_INPUT = 3
