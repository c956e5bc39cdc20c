"""The static audit: load a records folder, run every rule, assemble the verdict (verdict.md).

`check(path, policy)` is the whole pipeline; `context_for` and `audit` are its two halves so the
fixture harness and the worker (which adds reproduction runs) can call them separately.

A rule that raises is a bug in the rule, not in the submission: its result becomes
`needs_review` with a sentence naming the error, and the other rules still run — a verdict never
ends in a traceback (anchors.md §4.2: MLPerf reports "failed executing" the same way).
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .checks import RULE_MODULES
from .context import AuditContext, RunEvidence
from .model import RuleResult, SeedResult, Statistics, SubmissionInfo, Verdict
from .policies import Policy, get_policy

_RULE_TITLES = {
    # id and code of each registered module, so a module that fails to import still gets a row
    "package_layout": ("package-layout", "PG101"),
    "claims_match_logs": ("claims-match-logs", "PG102"),
    "artifact_size": ("artifact-size", "PG201"),
    "train_time": ("train-time", "PG202"),
    "eval_time": ("eval-time", "PG203"),
    "calibration_within_budget": ("calibration-within-budget", "PG204"),
    "seed_statistics": ("seed-statistics", "PG301"),
    "ttt_score_first": ("ttt-score-first", "PG401"),
    "ngram_target_in_key": ("ngram-target-in-key", "PG402"),
    "two_pass_rescore": ("two-pass-rescore", "PG403"),
    "gptq_on_validation": ("gptq-on-validation", "PG404"),
    "validation_in_training": ("validation-in-training", "PG405"),
    "normalized_distribution": ("normalized-distribution", "PG406"),
    "byte_accounting": ("byte-accounting", "PG407"),
    "network_access": ("network-access", "PG408"),
}


@dataclass
class SeedRow(SeedResult):
    """A seeds-table row: the contract's fields plus which role the log plays."""
    role: str = "seed"            # seed | rerun | duplicate | eval_only | unscored
    note: str | None = None


@lru_cache(maxsize=1)
def _frontier() -> Any:
    """The leaderboard frontier (rules.frontier), loaded once per process; None if unavailable,
    in which case seed-statistics says there is no baseline instead of failing."""
    try:
        from .frontier import load_frontier

        return load_frontier()
    except Exception:  # noqa: BLE001 - no frontier means no baseline, not a crash
        return None


def context_for(path: str | Path, policy: str | Policy | None = None,
                runs: list[RunEvidence] | None = None, *, workdir: Path | None = None) -> AuditContext:
    """Load the submission at `path` (folder or archive; an archive is unpacked under `workdir`
    when given). Raises InputError for unreadable input."""
    from .submission import load_submission

    pol = get_policy(policy)
    sub = load_submission(Path(path), workdir=workdir) if workdir is not None else load_submission(Path(path))
    return AuditContext(submission=sub, policy=pol, runs=list(runs or []), frontier=_frontier())


def _run_rule(module_name: str, ctx: AuditContext) -> RuleResult:
    rid, code = _RULE_TITLES.get(module_name, (module_name.replace("_", "-"), "PG000"))
    title = rid
    try:
        mod = importlib.import_module(f"rules.checks.{module_name}")
        rid, code, title = getattr(mod, "ID", rid), getattr(mod, "CODE", code), getattr(mod, "TITLE", title)
        res = mod.check(ctx)
        if not isinstance(res, RuleResult):
            raise TypeError(f"returned {type(res).__name__}, not a RuleResult")
        return res
    except Exception as e:  # noqa: BLE001 - a rule bug becomes a review item, never a traceback
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        return RuleResult(id=rid, code=code, title=title, outcome="needs_review",
                          message=(f"The {rid} check could not finish on this submission "
                                   f"({type(e).__name__}{': ' + detail if detail else ''}); review it by hand."))


def _claimed_bpb(sj: dict | None) -> float | None:
    if not isinstance(sj, dict):
        return None
    for key in ("val_bpb", "mean_val_bpb", "mean_bpb"):
        v = sj.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _str_or_none(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def submission_info(ctx: AuditContext) -> SubmissionInfo:
    sub = ctx.submission
    sj = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    return SubmissionInfo(
        name=_str_or_none(sj.get("name") or sj.get("run_name")) or sub.name,
        author=_str_or_none(sj.get("author")),
        github_id=_str_or_none(sj.get("github_id")),
        track=sub.track,
        claimed_val_bpb=_claimed_bpb(sj),
        sha256=sub.sha256,
        files=list(sub.files),
    )


def _row(lg, role: str, seed=None, val_bpb=None, val_loss=None, note=None) -> SeedRow:
    from .checks._seedlogs import seed_of

    return SeedRow(
        seed=seed if seed is not None else seed_of(lg), log=lg.file,
        val_bpb=val_bpb if val_bpb is not None else lg.val_bpb,
        val_loss=val_loss if val_loss is not None else lg.val_loss,
        artifact_bytes=lg.artifact_bytes, code_bytes=lg.code_bytes,
        train_time_s=None if lg.train_time_ms is None else round(lg.train_time_ms / 1000.0, 3),
        eval_time_s=None if lg.eval_time_ms is None else round(lg.eval_time_ms / 1000.0, 3),
        steps=lg.stop_step if lg.stop_step is not None else (lg.steps[-1].step if lg.steps else None),
        role=role, note=note)


def seeds_table(ctx: AuditContext) -> list[SeedResult]:
    """One row per log: the counted seeds first, then re-runs, duplicates and the rest."""
    from .checks._seedlogs import ctx_seed_logs

    g = ctx_seed_logs(ctx)
    rows: list[SeedResult] = []
    for s in g.seeds:
        row = _row(s.log, "seed", seed=s.seed, val_bpb=s.val_bpb, val_loss=s.val_loss, note=s.note)
        if s.score_log is not s.log and s.score_log.eval_time_ms is not None:
            row.eval_time_s = round(s.score_log.eval_time_ms / 1000.0, 3)
        rows.append(row)
    for role, logs in (("rerun", g.reruns), ("duplicate", g.duplicates),
                       ("eval_only", g.eval_only), ("unscored", g.unscored)):
        rows.extend(_row(lg, role) for lg in logs)
    return rows


def statistics(ctx: AuditContext) -> Statistics | None:
    try:
        from .checks.seed_statistics import statistics_for

        return statistics_for(ctx)
    except Exception:  # noqa: BLE001 - the seed-statistics rule reports the problem itself
        return None


def _run_json(r: RunEvidence) -> dict[str, Any]:
    return {"seed": r.seed, "status": r.status, "log_file": r.log_file,
            "val_bpb": r.parsed.val_bpb if r.parsed else None,
            "val_loss": r.parsed.val_loss if r.parsed else None,
            "steps": (r.parsed.stop_step or (r.parsed.steps[-1].step if r.parsed.steps else None))
            if r.parsed else None,
            "train_time_ms": r.parsed.train_time_ms if r.parsed else None,
            "eval_time_ms": r.parsed.eval_time_ms if r.parsed else None,
            "artifact_bytes": r.artifact_bytes, "wall_s": dict(r.wall_s), "gpu": dict(r.gpu),
            "network_isolated": r.network_isolated, "trace_file": r.trace_file}


def audit(ctx: AuditContext) -> Verdict:
    if not isinstance(ctx.policy, Policy):
        ctx.policy = get_policy(ctx.policy)
    results = [_run_rule(m, ctx) for m in RULE_MODULES]
    if ctx.runs:
        # judged only from reproduction runs: reproduced vs claimed, and the node's calibration
        try:
            from .runs_judge import run_results
            results += run_results(ctx)
        except Exception as exc:  # noqa: BLE001 - a judge bug must not lose the verdict
            results.append(RuleResult(id="reproduction-matches-claims", code="PG501",
                                      title="Reproduced runs match the claims", outcome="needs_review",
                                      message=f"the run judge could not decide: {type(exc).__name__}"))
    try:
        seeds = seeds_table(ctx)
    except Exception:  # noqa: BLE001
        seeds = []
    return Verdict(outcome=Verdict.outcome_of(results), policy=ctx.policy.id,
                   submission=submission_info(ctx), rules=results, seeds=seeds,
                   statistics=statistics(ctx), runs=[_run_json(r) for r in ctx.runs])


def check(path: str | Path, policy: str | Policy | None = None) -> Verdict:
    """The static audit of a folder or archive. An archive is unpacked into a temporary folder
    that is removed once the verdict is built (rules read files while they run)."""
    p = Path(path)
    if p.is_dir():
        return audit(context_for(p, policy))
    get_policy(policy)                       # an unknown policy is bad input before any unpacking
    with tempfile.TemporaryDirectory(prefix="pgolf-check-") as wd:
        return audit(context_for(p, policy, workdir=Path(wd)))
