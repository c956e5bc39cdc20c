"""Which logs are the submission's seeds: shared by claims-match-logs, seed-statistics and the
engine's seeds table, so all three count the same runs.

A records folder can hold more logs than seeds (rules.md, "Choosing the score line"):
* a `train.log` that is a copy of one seed's log (same seed, same score) — a duplicate;
* compliance re-runs next to the originals (`train_seed42_rerun_gptq8s.log`, PR #1868): the
  JSON headline uses the originals, so re-runs are listed but not counted as seeds;
* eval-only re-runs (`TTT_EVAL_ONLY=1`, e.g. 04-23 `ttt_pr1767/`, PR #1787): a scored line but no
  training; when one exists for a seed, its score is the seed's score, while sizes and training
  times still come from the training log;
* logs without any scored line (crashed or partial runs).
A log whose last scored line is an appended failed experiment (04-04 seed 42) keeps its training
numbers; `scored_values` lets claims-match-logs find the line that submission.json reports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..logs import ParsedLog

_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.I)
_RERUN_NAME = re.compile(r"re-?run", re.I)
# a score line: "<tag> val_loss:x val_bpb:y" (or "=" forms); step lines and diagnostics are not scores
_SCORE = re.compile(r"^(?:\d+\.\d{3} )?([A-Za-z][\w\-]*)\s+val_loss[:=]\s?([\d.]+)\s+val_bpb[:=]\s?([\d.]+)")
_NOT_SCORE_TAGS = {"diagnostic", "DIAGNOSTIC", "pre-quantization", "step"}


@dataclass
class SeedLog:
    seed: int | str | None
    log: ParsedLog                    # the training log: sizes, times, steps
    score_log: ParsedLog              # the log whose scored line is this seed's score
    val_bpb: float | None
    val_loss: float | None
    note: str | None = None           # why score_log/val_bpb differ from the training log's own


@dataclass
class SeedLogs:
    seeds: list[SeedLog] = field(default_factory=list)       # one per seed, the counted runs
    reruns: list[ParsedLog] = field(default_factory=list)
    duplicates: list[ParsedLog] = field(default_factory=list)
    eval_only: list[ParsedLog] = field(default_factory=list)
    unscored: list[ParsedLog] = field(default_factory=list)

    @property
    def all_training(self) -> list[ParsedLog]:
        """Every log that trained a model (the cap and the time limits apply to each)."""
        out = [s.log for s in self.seeds] + self.reruns + self.duplicates
        out += [lg for lg in self.unscored if _trained(lg)]
        return out


def seed_of(log: ParsedLog) -> int | str | None:
    if log.seed is not None:
        return log.seed
    m = _SEED_IN_NAME.search(Path(log.file).name)
    return int(m.group(1)) if m else None


def _trained(log: ParsedLog) -> bool:
    return bool(log.steps) or log.train_time_ms is not None or log.stopped_early


def is_eval_only(log: ParsedLog) -> bool:
    return log.val_bpb is not None and not _trained(log) and log.artifact_bytes is None


def is_rerun(log: ParsedLog) -> bool:
    return bool(_RERUN_NAME.search(log.file))


def scored_values(root: Path | None, log: ParsedLog) -> list[tuple[int, str, float, float]]:
    """Every score-shaped line of the log file: (line, tag, val_loss, val_bpb). Cheap re-read."""
    if root is None or log.is_binary:
        return []
    try:
        text = (Path(root) / log.file).read_text(errors="replace")
    except OSError:
        return []
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        m = _SCORE.match(line)
        if not m or m.group(1) in _NOT_SCORE_TAGS:
            continue
        try:
            out.append((i, m.group(1), float(m.group(2).rstrip(".")), float(m.group(3).rstrip("."))))
        except ValueError:
            continue
    return out


def _claimed_per_seed(sj: dict | None) -> dict[str, float]:
    """submission.json's per-seed val_bpb, keyed by str(seed): `seed_results`, or `seeds` as a dict,
    or `seeds` + `seed_scores` lists."""
    out: dict[str, float] = {}
    if not isinstance(sj, dict):
        return out
    for key in ("seed_results", "seeds"):
        block = sj.get(key)
        if isinstance(block, dict):
            for s, v in block.items():
                if isinstance(v, dict) and isinstance(v.get("val_bpb"), (int, float)):
                    out[str(s)] = float(v["val_bpb"])
    if not out and isinstance(sj.get("seeds"), list) and isinstance(sj.get("seed_scores"), list):
        for s, v in zip(sj["seeds"], sj["seed_scores"]):
            if isinstance(v, (int, float)):
                out[str(s)] = float(v)
    return out


def group(logs: list[ParsedLog], root: Path | None = None, submission_json: dict | None = None) -> SeedLogs:
    out = SeedLogs()
    training: list[ParsedLog] = []
    for lg in sorted(logs, key=lambda x: x.file):
        if lg.is_binary:
            out.unscored.append(lg)
        elif is_eval_only(lg):
            out.eval_only.append(lg)
        elif lg.val_bpb is None:
            out.unscored.append(lg)
        elif is_rerun(lg):
            out.reruns.append(lg)
        else:
            training.append(lg)
    # a seed whose only scored logs are re-runs still counts once, from its re-run
    seeds_with_original = {seed_of(lg) for lg in training}
    for lg in list(out.reruns):
        s = seed_of(lg)
        if s is not None and s not in seeds_with_original:
            out.reruns.remove(lg)
            training.append(lg)
            seeds_with_original.add(s)

    by_seed: dict[object, list[ParsedLog]] = {}
    for lg in training:
        # a duplicate is the same seed *and* the same score (train.log copied from train_seed42.log);
        # the same seed with another score is another run (03-17 LoRA_TTT: four runs of seed 1337)
        s = seed_of(lg)
        key = (s, round(lg.val_bpb, 6)) if s is not None else ("file", lg.file)
        by_seed.setdefault(key, []).append(lg)

    claimed = _claimed_per_seed(submission_json)
    for key, group_logs in by_seed.items():
        # prefer the log whose file name names the seed (train_seed42.log over train.log)
        group_logs.sort(key=lambda lg: (0 if _SEED_IN_NAME.search(Path(lg.file).name) else 1, lg.file))
        primary = group_logs[0]
        for other in group_logs[1:]:
            out.duplicates.append(other)
        seed = seed_of(primary)
        sl = SeedLog(seed=seed, log=primary, score_log=primary,
                     val_bpb=primary.val_bpb, val_loss=primary.val_loss)
        ev = [e for e in out.eval_only if seed is not None and seed_of(e) == seed]
        if ev:
            sl.score_log = ev[-1]
            sl.val_bpb, sl.val_loss = ev[-1].val_bpb, ev[-1].val_loss
            sl.note = f"score from the eval-only re-run {ev[-1].file}"
        elif seed is not None and str(seed) in claimed and sl.val_bpb is not None \
                and abs(claimed[str(seed)] - sl.val_bpb) > 1e-4:
            # the last score line may be an appended experiment; take the line the JSON reports
            for line, tag, vl, vb in scored_values(root, primary):
                if abs(vb - claimed[str(seed)]) <= 5e-6 + _half_unit(claimed[str(seed)]):
                    sl.val_bpb, sl.val_loss = vb, vl
                    sl.note = (f"submission.json reports {tag} at line {line}, not the last scored "
                               f"line ({primary.score_tag} {primary.val_bpb})")
                    break
        out.seeds.append(sl)
    out.seeds.sort(key=lambda s: (str(type(s.seed)), s.seed if s.seed is not None else -1, s.log.file))
    return out


def _half_unit(x: float) -> float:
    """Half a unit in the last written decimal of x (a JSON number's rounding)."""
    s = repr(float(x))
    if "e" in s or "E" in s:
        return 0.0
    decimals = len(s.split(".", 1)[1]) if "." in s else 0
    return 0.5 * 10.0 ** (-decimals)


def ctx_seed_logs(ctx) -> SeedLogs:
    """Cached per context: every rule that needs the grouping shares one."""
    cached = getattr(ctx, "_seed_logs", None)
    if cached is None:
        sub = ctx.submission
        cached = group(list(sub.logs), getattr(sub, "root", None), sub.submission_json)
        try:
            setattr(ctx, "_seed_logs", cached)
        except AttributeError:
            pass
    return cached
