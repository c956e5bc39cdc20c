"""PG301 seed-statistics — ≥ 3 seeds of one configuration, and a significant win over the frontier.

Rule 4 of rules.md. The README asks for "enough run logs to show at p < 0.01" a 0.005-nat win
("most often … an average over 3 training runs", d2bd76079); since 2026-04-28 the leaderboard
admits rows at one-sided Welch p < 0.25 against the *previous frontier row* with no margin
(cocohearts: #1900, #1902, #2146; reproduced p-values: #1514 vs #1493 0.0204, #1769 vs #1736 0.0625).
"A leaderboard row needs a 3-seed mean from the same submitted configuration" (cocohearts, #2124).

What it computes: per-seed val_bpb from each seed log's scored line (not from submission.json),
mean, sample std, and the one-sided Welch test (`rules.stats`) against the frontier baseline's
seeds (`rules.frontier`). Both policies' readings are always in `statistics.readings`; the
selected policy (`rules.policies`) decides:
* **fail**: fewer than `min_seeds` seeds, fewer than that many sharing one configuration (the logs'
  echoed configs are diffed ignoring seed, run id, paths and times), or p ≥ alpha;
* **needs_review**: fewer than 3 seeds on a record dated before 2026-03-21 (single-run records were
  merged under the March practice, before the README's "average over 3 runs" note, d2bd76079), or a
  single-seed record supported by a separate re-run (`record_support` / `supports_pr`, #1868 for
  #1851: the message names the pooled support); no frontier baseline, or the test is undefined (a 1-seed baseline row, zero
  variance on both sides);
* **warn**: significant, but a best-k-of-n disclosure is present (#1769 reported the best 5 of 7
  "per competition convention" and was accepted at p = 0.063 — surfaced, not punished) or a minority
  of seeds ran another configuration;
* non-record track: not_applicable (no significance requirement).
The systems-only waiver (README) has never been granted in an observed case (#1587, #1902), so it
is not applied automatically.
"""
from __future__ import annotations

import re
import sys
from typing import Any

from .. import stats
from ..context import AuditContext
from ..model import Baseline, Evidence, RuleResult, Statistics
from ..policies import POLICIES, get_policy
from ._base import json_ev, log_ev, result
from ._seedlogs import SeedLog, ctx_seed_logs

ID = "seed-statistics"
CODE = "PG301"
TITLE = "Seeds and statistical significance"

_IGNORED_KEY = re.compile(r"seed|run_?id|uuid|path|dir|file|logs?$|log_|output|host|rank|date|time|wallclock_s|"
                          r"elapsed|memory|peak", re.I)


def _material_keys(seeds: list[SeedLog]) -> set[str]:
    """Config keys that can change a seed's score, compared across seeds.

    Left out: seed/run-id/path/time keys; keys only some logs echo (a newer script revision
    printing a new knob at its default: 04-06 `clip_mult_*`, 04-09 `ttt_hash_*`); and `ttt_*` keys
    when no seed's score is a TTT line (04-04 seed 42 enabled TTT as an extra experiment after its
    scored sliding-window line)."""
    if not seeds:
        return set()
    common = set.intersection(*(set(s.log.config) for s in seeds))
    keys = {k for k in common if not _IGNORED_KEY.search(k)}
    if not any("ttt" in (s.score_log.score_tag or "").lower() for s in seeds):
        keys = {k for k in keys if not k.lower().startswith("ttt")}
    return keys


def config_groups(seeds: list[SeedLog]) -> list[list[SeedLog]]:
    """Seeds grouped by their echoed configuration, largest group first."""
    keys = _material_keys(seeds)
    groups: dict[frozenset, list[SeedLog]] = {}
    for s in seeds:
        key = frozenset((k, v) for k, v in s.log.config.items() if k in keys)
        groups.setdefault(key, []).append(s)
    return sorted(groups.values(), key=len, reverse=True)


def config_diff(a: SeedLog, b: SeedLog) -> list[str]:
    keys = sorted(_material_keys([a, b]))
    return [f"{k}: {a.log.config.get(k)} vs {b.log.config.get(k)}" for k in keys
            if a.log.config.get(k) != b.log.config.get(k)]


def _to_baseline(obj: Any) -> Baseline | None:
    if obj is None:
        return None
    if isinstance(obj, Baseline):
        return obj
    seeds = getattr(obj, "seeds", None)
    if seeds is None and isinstance(obj, dict):
        seeds = obj.get("seeds")
    seeds = [float(x) for x in (seeds or []) if isinstance(x, (int, float))]
    get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
    name = get("name") or get("run") or get("folder") or "frontier row"
    return Baseline(name=str(name), seeds=seeds, pr=get("pr"), val_bpb=get("val_bpb"))


def baseline_for(ctx: AuditContext) -> tuple[Baseline | None, str | None]:
    """The previous frontier row for this submission (rules.frontier), and why that row."""
    fr = ctx.frontier
    if fr is None:
        return None, "the leaderboard frontier is not available"
    sub = ctx.submission
    explain = getattr(fr, "explain_baseline", None)
    if explain is not None:
        choice = explain(sub)
        row = _to_baseline(choice.row)
        reason = choice.reason
        no_seeds = getattr(choice.row, "no_seeds_reason", None)
        if row is not None and not row.seeds and no_seeds:
            reason = f"{reason} {no_seeds}"
        return row, reason
    fn = getattr(fr, "baseline_for", None)
    return (_to_baseline(fn(sub)) if fn else None), None


def _ratio(seeds: list[SeedLog], sj: dict) -> float | None:
    rs = [stats.nats_per_bpb(s.val_loss, s.val_bpb) for s in seeds]
    rs = [r for r in rs if r]
    if rs:
        return stats.mean(rs)
    vl, vb = sj.get("val_loss"), sj.get("val_bpb")
    if isinstance(vl, (int, float)) and isinstance(vb, (int, float)):
        r = stats.nats_per_bpb(float(vl), float(vb))
        # old files put the bpb in val_loss (10L_Int5MLP); a ratio near 1 is not a tokenizer ratio
        return r if r and r > 1.2 else None
    return None


def disclosure(sj: dict) -> dict[str, Any] | None:
    """A best-k-of-n disclosure: {'runs': N, 'values': [...]} when submission.json has one."""
    for key, block in sj.items():
        if not isinstance(block, dict) or not re.search(r"disclos|all_runs", key, re.I):
            continue
        runs, values = None, []
        for k, v in block.items():
            if isinstance(v, list) and re.search(r"seed", k, re.I):
                runs = len(v)
            if isinstance(v, dict) and re.search(r"bpb", k, re.I):
                values = [float(x) for x in v.values() if isinstance(x, (int, float))]
        return {"key": key, "runs": runs or len(values) or None, "values": values,
                "note": str(block.get("note", ""))[:200]}
    return None


def statistics_for(ctx: AuditContext) -> Statistics:
    """Mean, std and every policy's Welch reading; the selected policy's reading on top."""
    sub = ctx.submission
    sj = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    policy = get_policy(ctx.policy)
    g = ctx_seed_logs(ctx)
    groups = config_groups([s for s in g.seeds if s.val_bpb is not None])
    counted = groups[0] if groups else []
    values = [s.val_bpb for s in counted]
    base, base_reason = baseline_for(ctx)
    ratio = _ratio(counted, sj)
    readings: dict[str, Any] = {}
    for p in POLICIES.values():
        margin = p.margin_bpb(ratio)
        w = stats.welch_one_sided(values, base.seeds if base else [], margin) if values else None
        readings[p.id] = {
            "alpha": p.alpha, "margin_nats": p.margin_nats, "margin_bpb": round(margin, 6),
            "t": w.t if w else None, "df": w.df if w else None, "p_value": w.p if w else None,
            "significant": (w.p < p.alpha) if (w and w.p is not None) else None,
            "reason": (w.reason if w else "no scored seed") if base else (base_reason or "no frontier baseline"),
        }
    readings["nats_per_bpb"] = ratio
    readings["baseline_reason"] = base_reason
    readings["mean_delta_bpb"] = (stats.mean(values) - stats.mean(base.seeds)) if values and base and base.seeds else None
    d = disclosure(sj)
    if d:
        readings["disclosure"] = d
    sel = readings[policy.id]
    return Statistics(n=len(values), mean_bpb=stats.mean(values) if values else None,
                      std_bpb=stats.sample_std(values), baseline=base, p_value=sel["p_value"],
                      alpha=policy.alpha, margin_bpb=sel["margin_bpb"], significant=sel["significant"],
                      readings=readings)


# Records merged before this date were single runs (NaiveBaseline, the 03-18/03-19 wave); the
# README's "average over 3 runs" note (d2bd76079) and the 3-seed practice came after.
THREE_SEED_PRACTICE_DATE = "2026-03-21"
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def submission_date(sub) -> str | None:
    """YYYY-MM-DD from submission.json's `date`, else from the folder name's prefix."""
    sj = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    for text in (sj.get("date"), sub.name):
        m = _DATE.match(str(text or "").strip())
        if m:
            return "-".join(m.groups())
    return None


def _record_support(ctx: AuditContext) -> str | None:
    """A separate re-run that supports this record (a `record_support` folder with `supports_pr`,
    #1868 for #1851): named by this submission itself, or a frontier row of the same author and
    date whose seeds come from such a folder."""
    sj = ctx.submission.submission_json if isinstance(ctx.submission.submission_json, dict) else {}
    if sj.get("supports_pr") or sj.get("submission_type") == "record_support":
        return f"this folder is a record_support re-run for PR #{sj.get('supports_pr')}"
    author = str(sj.get("github_id") or sj.get("author") or "").lower()
    date = submission_date(ctx.submission)
    fr = ctx.frontier
    rows = getattr(fr, "record_rows", None) or []
    for row in (rows() if callable(rows) else rows):
        if "supports_pr" not in (row.folder_match or "") or not row.seeds:
            continue
        if author and (row.author or "").lower() == author and row.date == date:
            return (f"PR #{row.pr} is supported by the separate re-run {row.folder} "
                    f"({len(row.seeds)} seeds, mean {stats.mean(row.seeds):.6f})")
    return None


def _seed_ev(s: SeedLog) -> Evidence:
    w = s.score_log.where.get("val_bpb") if isinstance(s.score_log.where, dict) else None
    return log_ev(s.score_log.file, w.line if w else None, w.text if w else f"val_bpb:{s.val_bpb}")


def check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    sub = ctx.submission
    if sub.track == "non_record_16mb":
        return result(me, "not_applicable", "Non-record track: no seed count or significance requirement.")
    policy = get_policy(ctx.policy)
    g = ctx_seed_logs(ctx)
    scored = [s for s in g.seeds if s.val_bpb is not None]
    ev = [_seed_ev(s) for s in scored[:6]]
    if len(scored) < policy.min_seeds:
        short = f"Only {len(scored)} scored seed log(s); a record needs {policy.min_seeds} seeds of one configuration (#2124)"
        support = _record_support(ctx)
        if support is not None:
            return result(me, "needs_review", f"{short}, but {support}; judge the pooled seeds.",
                          measured=len(scored), limit=policy.min_seeds, evidence=ev)
        date = submission_date(sub)
        if len(scored) >= 1 and date is not None and date < THREE_SEED_PRACTICE_DATE:
            return result(me, "needs_review", f"{short}, but this record is dated {date}, before {THREE_SEED_PRACTICE_DATE}: "
                          "single-run records were accepted under the March practice (the README's \"average over 3 "
                          "runs\" note, d2bd76079, came later), so the seed count alone does not decide it.",
                          measured=len(scored), limit=policy.min_seeds, evidence=ev)
        return result(me, "fail", short + ".", measured=len(scored), limit=policy.min_seeds, evidence=ev)
    groups = config_groups(scored)
    notes: list[str] = []
    if len(groups[0]) < policy.min_seeds:
        diff = config_diff(groups[0][0], groups[1][0]) if len(groups) > 1 else []
        return result(me, "fail", f"The {len(scored)} seeds ran {len(groups)} different configurations; the largest "
                      f"shared one has {len(groups[0])} seed(s) ({'; '.join(diff[:3])}).",
                      measured=len(groups[0]), limit=policy.min_seeds, evidence=ev)
    if len(groups) > 1:
        diff = config_diff(groups[0][0], groups[1][0])
        notes.append(f"{sum(len(x) for x in groups[1:])} seed(s) ran another configuration ({'; '.join(diff[:2])}) "
                     "and are left out")
    ids = [str(s.seed) for s in groups[0] if s.seed is not None]
    if len(set(ids)) < len(ids):
        notes.append(f"{len(ids)} runs use only {len(set(ids))} distinct seed id(s)")
    st = statistics_for(ctx)
    d = st.readings.get("disclosure")
    if d:
        notes.append(f"submission.json discloses {d.get('runs')} runs for {st.n} reported seeds (best-k-of-n, #1769)")
        ev.append(json_ev(sub.submission_json_file, f"{d['key']}: {d.get('note') or d.get('runs')}"))
    others = "; ".join(f"{pid}: p={_fmt(r['p_value'])}" for pid, r in st.readings.items()
                       if pid in POLICIES and pid != policy.id)
    head = (f"{st.n} seeds, mean {st.mean_bpb:.6f}, std {_fmt(st.std_bpb)}")
    if st.baseline is None:
        why = st.readings.get("baseline_reason") or "no frontier row precedes it"
        return result(me, "needs_review", f"{head}; no frontier baseline to test against ({why.rstrip('.')}).",
                      measured=st.n, limit=policy.min_seeds, evidence=ev)
    sel = st.readings[policy.id]
    if st.p_value is None:
        return result(me, "needs_review", f"{head}; the Welch test against {st.baseline.name} is undefined "
                      f"({sel['reason']}).", measured=None, limit=policy.alpha, evidence=ev)
    vs = f"against {st.baseline.name} (mean {stats.mean(st.baseline.seeds):.6f}, {len(st.baseline.seeds)} seeds)"
    margin = f" with a {st.margin_bpb:.4f}-bpb margin" if st.margin_bpb else ""
    tail = f" Other policies: {others}." if others else ""
    if not st.significant:
        return result(me, "fail", f"{head}; one-sided Welch p = {_fmt(st.p_value)} {vs}{margin} is not below "
                      f"{policy.alpha} ({policy.id}).{tail}", measured=st.p_value, limit=policy.alpha, evidence=ev)
    msg = (f"{head}; one-sided Welch p = {_fmt(st.p_value)} {vs}{margin} is below {policy.alpha} ({policy.id})."
           + (" But " + "; ".join(notes) + "." if notes else "") + tail)
    return result(me, "warn" if notes else "pass", msg, measured=st.p_value, limit=policy.alpha, evidence=ev)


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}"
