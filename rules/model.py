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


def verdict_from_json(d: dict[str, Any]) -> Verdict:
    """A stored verdict JSON back as dataclasses (unknown keys dropped; the seed rows' extra keys
    such as `role`/`note` kept as attributes), so the renderers work on stored verdicts too."""
    from dataclasses import fields

    def build(cls: type, data: Any, **over: Any) -> Any:
        data = data if isinstance(data, dict) else {}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and k not in over}, **over)

    def seed(x: dict[str, Any]) -> SeedResult:
        obj = build(SeedResult, x, seed=x.get("seed"), log=str(x.get("log") or ""))
        for k in ("role", "note"):
            if k in x:
                setattr(obj, k, x[k])
        return obj

    sub = d.get("submission") if isinstance(d.get("submission"), dict) else {}
    info = SubmissionInfo(name=sub.get("name"), author=sub.get("author"), github_id=sub.get("github_id"),
                          track=sub.get("track"), claimed_val_bpb=sub.get("claimed_val_bpb"),
                          sha256=str(sub.get("sha256") or ""), files=list(sub.get("files") or []))
    rules = [build(RuleResult, r, evidence=[build(Evidence, e, source=str(e.get("source") or "log"))
                                            for e in r.get("evidence") or [] if isinstance(e, dict)],
                   id=str(r.get("id") or "?"), code=str(r.get("code") or ""),
                   title=str(r.get("title") or ""), outcome=r.get("outcome") or "needs_review",
                   message=str(r.get("message") or ""))
             for r in d.get("rules") or [] if isinstance(r, dict)]
    st = d.get("statistics")
    stats = None
    if isinstance(st, dict):
        b = st.get("baseline")
        base = build(Baseline, b, name=str(b.get("name") or ""), seeds=list(b.get("seeds") or [])) \
            if isinstance(b, dict) else None
        stats = build(Statistics, st, n=int(st.get("n") or 0), mean_bpb=st.get("mean_bpb"),
                      std_bpb=st.get("std_bpb"), baseline=base,
                      readings=st.get("readings") if isinstance(st.get("readings"), dict) else {})
    return Verdict(outcome=d.get("outcome") or "needs_review", policy=str(d.get("policy") or ""),
                   submission=info, rules=rules,
                   seeds=[seed(x) for x in d.get("seeds") or [] if isinstance(x, dict)],
                   statistics=stats, runs=list(d.get("runs") or []))
