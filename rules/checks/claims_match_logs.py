"""PG102 claims-match-logs — what submission.json claims agrees with what the logs say.

Reviewers read the log, not the JSON (#1835, regina-openai, 2026-04-28, quoted the seed log), so
the JSON's numbers must be the logs' numbers:
* per-seed `val_bpb` (`seed_results`, `seeds` as a dict, or `seeds` + `seed_scores`) equals that
  seed's scored line; the headline `val_bpb` equals the mean of the per-seed scores;
* `bytes_total` / `artifact_bytes_max` agrees with the logged `Total submission size` lines;
* the `seeds` list names the seeds the logs ran.

Outcomes: a claim **better** (lower bpb) than any reading of the logs **fails** — that is a
misreported score. A claim worse than the logs, a size or seed-list disagreement, or seeds without
logs (pooled from another PR, as #1868 supplied #1851's) is a **warn**. No logs at all: needs_review.

Tolerances (each exists because merged records need it):
* 1e-5 on bpb (rules.md Rule 8: "val_bpb equals the mean of the per-seed scored lines within 1e-5");
* plus half a unit in the last decimal the JSON writes (04-03 claims 1.0912 for a mean of 1.09124)
  and in the last decimal the log line prints (non-`_exact` lines print 4 decimals);
* sizes: exact, or the JSON value equals the mean or any one seed's total (04-22 writes the mean as
  `bytes_total`), or is a rounding of the max to ≤ 3 significant trailing zeros' worth (15,900,000).
Exceptions from rules.md ("Choosing the score line") that must not fail:
* an eval-only re-run (TTT_EVAL_ONLY, 04-23 `ttt_pr1767/`) supplies the seed's score;
* compliance re-run logs (04-29 `*_rerun_gptq8s.log`) differ from the headline, which uses the
  original runs — the headline may match either the originals or the re-runs;
* a failed experiment appended after the scored line (04-04 seed 42): the JSON value is found at an
  earlier score line of the same log (see `_seedlogs`).
"""
from __future__ import annotations

import re
import sys
from statistics import fmean

from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import json_ev, log_ev, result
from ._seedlogs import _claimed_per_seed, _half_unit, ctx_seed_logs

ID = "claims-match-logs"
CODE = "PG102"
TITLE = "submission.json claims match the logs"

TOL_BPB = 1e-5


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _tol(claimed: float, measured: list[float]) -> float:
    return TOL_BPB + _half_unit(claimed) + max((_half_unit(m) for m in measured), default=0.0)


def _ev_score(lg) -> Evidence:
    w = lg.where.get("val_bpb") if isinstance(lg.where, dict) else None
    text = w.text if w else f"{lg.score_tag or 'score'} val_bpb:{lg.val_bpb}"
    return log_ev(lg.file, w.line if w else None, text)


def _bytes_agree(claimed: int, totals: list[int]) -> bool:
    if not totals:
        return True
    candidates = set(totals) | {round(fmean(totals)), max(totals)}
    if claimed in candidates:
        return True
    mx = max(totals)
    # a rounded figure (15,900,000) that does not understate the largest artifact by > 0.1 %
    return claimed % 1000 == 0 and claimed >= mx * 0.999 and abs(claimed - mx) < 100_000


_LOG_REF = re.compile(r"[\w\-./{},*]+\.(?:log|txt)\b")


def _unshipped_evidence(sub, claimed_seeds: dict, by_seed: dict, sj: dict) -> list[str]:
    """Reasons the shipped logs may not be the whole evidence: the README names log files that are
    not in the folder (04-23 names `ttt_pr1767/seed_*.log`), or submission.json claims seeds for
    which no log is shipped (03-19 MLP3x claims a 3-seed mean and ships one log)."""
    why: list[str] = []
    files = list(sub.files)
    missing_refs = []
    for ref in _LOG_REF.findall(sub.readme or ""):
        if "requirements" in ref.lower() or ref.startswith(("http", "//")):
            continue
        prefix = re.split(r"[{*]", ref, maxsplit=1)[0].lstrip("./")
        if prefix and not any(f == prefix or f.startswith(prefix) or f.endswith("/" + prefix) for f in files):
            missing_refs.append(ref)
    if missing_refs:
        why.append("the README names logs that are not shipped (" + ", ".join(sorted(set(missing_refs))[:3]) + ")")
    listed = sj.get("seeds") if isinstance(sj.get("seeds"), list) else list(claimed_seeds)
    no_log = [str(x) for x in listed if str(x) not in by_seed]
    n_claimed = sj.get("n_seeds")
    if no_log:
        why.append("seeds " + ", ".join(no_log) + " are claimed without a shipped log")
    elif isinstance(n_claimed, int) and n_claimed > len(by_seed):
        why.append(f"{n_claimed} seeds are claimed and {len(by_seed)} logs are shipped")
    return why


def check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    sub = ctx.submission
    sj = sub.submission_json
    jfile = sub.submission_json_file or "submission.json"
    if not isinstance(sj, dict):
        return result(me, "not_applicable", "There is no readable submission.json to compare with the logs.")
    g = ctx_seed_logs(ctx)
    if not g.seeds:
        if not sub.logs:
            return result(me, "needs_review", "There is no train log, so the claims in submission.json cannot be checked.")
        return result(me, "needs_review", "No log has a scored line (final val_bpb), so the claims cannot be checked.",
                      evidence=[log_ev(lg.file, None, "; ".join(lg.problems[:2]) or "no scored line")
                                for lg in sub.logs[:3]])
    fails: list[str] = []
    warns: list[str] = []
    notes: list[str] = []
    ev: list[Evidence] = []

    by_seed: dict[str, object] = {}
    for s in g.seeds:
        # the file name's seed is a second key (04-18 train_seed0.log logs `seed: 1337`)
        for key in (s.seed, getattr(s.log, "seed_from_name", None)):
            if key is not None:
                by_seed.setdefault(str(key), s)
    claimed_seeds = _claimed_per_seed(sj)
    matched_claims: list[float] = []
    for seed, cval in claimed_seeds.items():
        s = by_seed.get(seed)
        if s is None or s.val_bpb is None:
            warns.append(f"seed {seed} is claimed ({cval}) but has no log")
            continue
        tol = _tol(cval, [s.val_bpb])
        if abs(cval - s.val_bpb) <= tol:
            matched_claims.append(cval)
            if s.note:
                notes.append(f"seed {seed}: {s.note}")
            continue
        ev += [json_ev(jfile, f"seed {seed} val_bpb: {cval}"), _ev_score(s.score_log)]
        if cval < s.val_bpb - tol:
            fails.append(f"seed {seed} claims {cval} but its log scores {s.val_bpb}")
        else:
            warns.append(f"seed {seed} claims {cval}, worse than its log's {s.val_bpb}")

    seed_scores = [s.val_bpb for s in g.seeds if s.val_bpb is not None]
    headline = next((_num(sj.get(k)) for k in ("val_bpb", "mean_val_bpb", "mean_bpb") if _num(sj.get(k)) is not None), None)
    measured_mean = fmean(seed_scores)
    if headline is not None:
        readings: list[tuple[str, float, list[float]]] = [("the mean of the seed logs", measured_mean, seed_scores)]
        if claimed_seeds and len(matched_claims) == len(claimed_seeds):
            # only claims that each matched a log may explain the headline (a rounded mean of them)
            readings.append(("the mean of the per-seed claims", fmean(claimed_seeds.values()), list(claimed_seeds.values())))
        rerun_scores = [lg.val_bpb for lg in g.reruns if lg.val_bpb is not None]
        if rerun_scores:
            readings.append(("the mean of the re-run logs", fmean(rerun_scores), rerun_scores))
        if len(seed_scores) > 1 and not claimed_seeds:
            # single-run claims next to exploratory logs (03-17 LoRA_TTT ships train_v0..v3)
            readings += [(f"the log {s.log.file}", s.val_bpb, [s.val_bpb]) for s in g.seeds if s.val_bpb is not None]
        hit = next((r for r in readings if abs(headline - r[1]) <= _tol(headline, r[2])), None)
        if hit is None:
            best = min(r[1] for r in readings)
            ev.append(json_ev(jfile, f"val_bpb: {headline}"))
            ev += [_ev_score(s.score_log) for s in g.seeds[:5]]
            tol = _tol(headline, seed_scores)
            if headline < best - tol:
                fails.append(f"the headline val_bpb {headline} is better than the logs show "
                             f"(mean of {len(seed_scores)} seed log(s) {measured_mean:.8f})")
            else:
                warns.append(f"the headline val_bpb {headline} differs from the logs' mean {measured_mean:.8f}")
        elif hit[0] != readings[0][0]:
            notes.append(f"the headline matches {hit[0]}")

    # sizes
    totals = [lg.artifact_bytes for lg in g.all_training if lg.artifact_bytes is not None]
    for key in ("artifact_bytes_max", "bytes_total"):
        cb = _num(sj.get(key))
        if cb is None or not totals:
            continue
        if not _bytes_agree(int(cb), totals):
            warns.append(f"{key} {int(cb):,} does not match the logged totals (max {max(totals):,})")
            ev.append(json_ev(jfile, f"{key}: {int(cb)}"))

    # seed ids
    listed = sj.get("seeds")
    if isinstance(listed, list) and all(isinstance(x, (int, str)) for x in listed):
        missing = [str(x) for x in listed if str(x) not in by_seed]
        if missing and by_seed:
            warns.append("seeds " + ", ".join(missing) + " are listed but no log ran them")
    for s in g.seeds:
        named = s.log.file
        if s.log.seed is not None and "seed" in named.lower():
            m = re.search(r"seed[_-]?(\d+)", named, re.I)
            if m and int(m.group(1)) != s.log.seed:
                warns.append(f"{named} is named for seed {m.group(1)} but logs seed {s.log.seed}")

    n = len(g.seeds)
    unshipped = _unshipped_evidence(sub, claimed_seeds, by_seed, sj)
    if fails and (unshipped or sub.track == "non_record_16mb"):
        why = unshipped or ["non-record entries are listed by hand, not ranked by this number"]
        return result(me, "needs_review", "submission.json claims a better score than the shipped logs show ("
                      + "; ".join(fails) + "), but the evidence is incomplete: " + "; ".join(why) + ".",
                      measured=round(measured_mean, 8), limit=headline, evidence=ev)
    tail = (" (" + "; ".join(notes) + ")") if notes else ""
    if fails:
        return result(me, "fail", "submission.json claims a better score than its logs: " + "; ".join(fails) + ".",
                      measured=round(measured_mean, 8), limit=headline, evidence=ev)
    if warns:
        return result(me, "warn", "No claim is better than the logs show, but " + "; ".join(warns) + "." + tail,
                      measured=round(measured_mean, 8), limit=headline, evidence=ev)
    return result(me, "pass", f"submission.json agrees with {n} seed log(s): mean val_bpb {measured_mean:.8f}{tail}.",
                  measured=round(measured_mean, 8), limit=headline, evidence=ev or [_ev_score(g.seeds[0].score_log)])
