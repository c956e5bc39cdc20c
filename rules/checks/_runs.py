"""Merging reproduction-run evidence (issue 5) into a rule's static result.

Rules that can be decided from runs/traces call `merge(rule_module, ctx, static_result)` last.
Without runs this returns the static result unchanged. With runs, the trace (what the run really
did) and our own measurements decide where they can, and the result says so with
`basis="reproduced"` and `run`/`trace` evidence next to the static evidence.

How the trace decides (events written by worker/tracer/sitecustomize.py, ordered by time across
all ranks):
- ttt-score-first: in the evaluation phase, every optimizer step's gradient forwards covered only
  validation positions that some no-grad scoring call had already covered (C3, score before
  update), and no no-grad scoring call covered only positions that had already been trained on
  (C4: re-scoring adapted tokens, a second pass, scoring the final epoch).
- validation-in-training: a validation shard opened after the first training step and before the
  end of training, or a sampled training loss whose targets are validation tokens. Opening the
  validation shards during setup is what the baseline does (for its periodic evaluation) and is
  reported, not failed.
- network-access: any connection or name lookup to a non-loopback address (refused by the
  tracer, and impossible anyway inside a network namespace).
- artifact-size / train-time / eval-time: our measured artifact bytes and wall clocks. A node that
  hardware calibration found slow makes a time overrun `needs_review` (the node's fault is not the
  submission's), never `fail`.
"""
from __future__ import annotations

import bisect
from types import ModuleType
from typing import Any, Iterable

from ..context import AuditContext, RunEvidence
from ..model import Evidence, RuleResult

ARTIFACT_LIMIT = 16_000_000
TRAIN_LIMIT_MS = 600_000
EVAL_LIMIT_S = 600.0
SLOW_NODE_FACTOR = 1.10


def merge(rule: ModuleType, ctx: AuditContext, static: RuleResult) -> RuleResult:
    if not ctx.runs:
        return static
    judge = _JUDGES.get(getattr(rule, "ID", ""))
    if judge is None:
        return static
    try:
        return judge(ctx, static)
    except Exception as e:  # a rule never raises on odd input
        static.evidence.append(Evidence(source="run", text=f"run evidence could not be read: {e}"[:300]))
        return static


# ------------------------------------------------------------------------------ interval sets


class Ranges:
    """A set of integer positions as sorted disjoint half-open intervals."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, a: int, b: int) -> None:
        if b <= a:
            return
        i = bisect.bisect_left(self.ends, a)       # first interval ending at/after a
        j = bisect.bisect_right(self.starts, b)    # intervals starting at/before b
        if i < j:
            a = min(a, self.starts[i])
            b = max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def add_all(self, rs: Iterable[Iterable[int]]) -> None:
        for a, b in rs:
            self.add(int(a), int(b))

    def missing(self, a: int, b: int) -> list[tuple[int, int]]:
        """Parts of [a, b) not in the set."""
        out, cur = [], a
        i = max(bisect.bisect_right(self.starts, a) - 1, 0)
        while cur < b and i < len(self.starts):
            s, e = self.starts[i], self.ends[i]
            if e <= cur:
                i += 1
                continue
            if s > cur:
                out.append((cur, min(s, b)))
            cur = max(cur, e)
            i += 1
        if cur < b:
            out.append((cur, b))
        return out

    def covers(self, a: int, b: int) -> bool:
        return not self.missing(a, b)

    def size(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))


def _fmt(rs: list[tuple[int, int]] | list[list[int]], k: int = 3) -> str:
    shown = ", ".join(f"[{a}, {b})" for a, b in list(rs)[:k])
    return shown + (f" and {len(rs) - k} more" if len(rs) > k else "")


def _run_name(run: RunEvidence, i: int) -> str:
    return f"seed {run.seed}" if run.seed is not None else f"run {i + 1}"


def _trace_ev(run: RunEvidence, i: int, text: str) -> Evidence:
    return Evidence(source="trace", file=run.trace_file, line=None, text=f"{_run_name(run, i)}: {text}"[:300])


def _run_ev(run: RunEvidence, i: int, text: str) -> Evidence:
    return Evidence(source="run", file=run.log_file, line=None, text=f"{_run_name(run, i)}: {text}"[:300])


def _with(static: RuleResult, outcome: str, message: str, evidence: list[Evidence],
          measured=None, limit=None) -> RuleResult:
    return RuleResult(id=static.id, code=static.code, title=static.title, outcome=outcome,  # type: ignore[arg-type]
                      message=message, measured=static.measured if measured is None else measured,
                      limit=static.limit if limit is None else limit,
                      evidence=list(static.evidence) + evidence, basis="reproduced")


def _traced(ctx: AuditContext) -> list[tuple[int, RunEvidence]]:
    return [(i, r) for i, r in enumerate(ctx.runs) if r.trace]


# -------------------------------------------------------------------------------- ttt-score-first


def eval_start(events: list[dict[str, Any]]) -> float | None:
    """When the first process saw the end of training (ranks that print nothing learn it a little
    later through the phase file; their events after this time belong to evaluation)."""
    ts = [e.get("t") for e in events if e.get("e") == "phase" and e.get("ph") == "eval"
          and isinstance(e.get("t"), (int, float))]
    return min(ts) if ts else None


def phase_of(ev: dict[str, Any], t_eval: float | None) -> str | None:
    ph = ev.get("ph")
    if ph in ("setup", "train") and t_eval is not None and isinstance(ev.get("t"), (int, float)) \
            and ev["t"] >= t_eval:
        return "eval"
    return ph


def _alternatives(ev: dict[str, Any]) -> list[tuple[int, int, list[int]]]:
    out = []
    for item in ev.get("amb") or []:
        try:
            a, b, xs = item
            out.append((int(a), int(b), [int(x) for x in xs]))
        except (TypeError, ValueError):
            continue
    return out


def _alts_for(alts: list[tuple[int, int, list[int]]], a: int, b: int) -> list[int]:
    """Other starts of the window [a, b) (a window inside an ambiguous run moves with it)."""
    return [x + (a - pa) for pa, pb, xs in alts if pa <= a and b <= pb for x in xs]


def ttt_findings(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay one run's evaluation-phase events in time order (all ranks together)."""
    t_eval = eval_start(events)
    scored, trained = Ranges(), Ranges()
    c3: list[dict[str, Any]] = []     # steps that trained on positions never scored
    c4: list[dict[str, Any]] = []     # scoring calls over positions already trained on
    steps = steps_with_ranges = unresolved_steps = score_calls = bwd = 0
    for ev in events:
        if phase_of(ev, t_eval) != "eval":
            continue
        kind = ev.get("e")
        rs = [(int(a), int(b)) for a, b in ev.get("r") or []]
        if kind == "score" and not ev.get("grad"):
            score_calls += 1
            # each window (row) on its own: a window whose targets were all trained on before is
            # a re-score; sliding windows of a legal pass always end in not-yet-trained tokens
            rows = [(int(a), int(b)) for a, b in ev.get("rows") or []] or rs
            alts = _alternatives(ev)
            # duplicated text: a window is a re-score only if every copy was trained on
            again = [(a, b) for a, b in rows if trained.size() and trained.covers(a, b)
                     and all(trained.covers(x, x + (b - a)) for x in _alts_for(alts, a, b))]
            if again:
                c4.append({"t": ev.get("t"), "rank": ev.get("rank"), "r": again})
            for a, b in rs:
                scored.add(a, b)
        elif kind == "bwd":
            bwd += 1
        elif kind == "step":
            steps += 1
            if not rs:
                if ev.get("unres"):
                    unresolved_steps += 1
                continue
            steps_with_ranges += 1
            alts = _alternatives(ev)
            # duplicated text: a trained piece counts as scored if any copy of it was scored
            missing = [(ma, mb) for a, b in rs for ma, mb in scored.missing(a, b)
                       if not any(scored.covers(ma + (x - pa), mb + (x - pa))
                                  for pa, pb, xs in alts if pa <= ma and mb <= pb for x in xs)]
            if missing:
                c3.append({"t": ev.get("t"), "rank": ev.get("rank"), "missing": missing,
                           "n": sum(b - a for a, b in missing)})
            for a, b in rs:
                trained.add(a, b)
    return {"c3": c3, "c4": c4, "steps": steps, "steps_with_ranges": steps_with_ranges,
            "unresolved_steps": unresolved_steps, "score_calls": score_calls, "bwd": bwd,
            "scored": scored.size(), "trained": trained.size()}


def _judge_ttt(ctx: AuditContext, static: RuleResult) -> RuleResult:
    runs = _traced(ctx)
    if not runs:
        return static
    ev: list[Evidence] = []
    failed = review = False
    adapted = False
    complete = incomplete = 0
    for i, run in runs:
        f = ttt_findings(run.trace)
        if f["c3"]:
            failed = True
            first = f["c3"][0]
            ev.append(_trace_ev(run, i, f"{len(f['c3'])} optimizer step(s) during evaluation trained on "
                                        f"validation positions not yet scored, first: {_fmt(first['missing'])} "
                                        f"({first['n']} positions, rank {first['rank']})"))
        if f["c4"]:
            failed = True
            first = f["c4"][0]
            ev.append(_trace_ev(run, i, f"{len(f['c4'])} scoring call(s) covered only validation positions "
                                        f"already trained on, first: {_fmt(first['r'])} (rank {first['rank']})"))
        if run.status != "ok" and not (f["c3"] or f["c4"]):
            incomplete += 1
            ev.append(_trace_ev(run, i, f"the run ended '{run.status}'; its trace shows no violation up to "
                                        "that point"))
            continue
        complete += 1
        if f["steps"]:
            adapted = True
            if f["steps_with_ranges"] == 0:
                review = True
                ev.append(_trace_ev(run, i, f"{f['steps']} optimizer step(s) during evaluation, but the tracer "
                                            "could not attribute their inputs to validation positions"))
            elif not (f["c3"] or f["c4"]):
                ev.append(_trace_ev(run, i, f"{f['steps_with_ranges']} evaluation-time optimizer steps each "
                                            f"trained only on already-scored positions; {f['score_calls']} "
                                            "scoring calls, none re-scoring trained positions"))
        elif f["bwd"]:
            ev.append(_trace_ev(run, i, f"{f['bwd']} backward pass(es) during evaluation without an "
                                        "optimizer step (no weights were updated through torch.optim)"))
        else:
            ev.append(_trace_ev(run, i, "no optimizer step during evaluation (no test-time training)"))
    if failed:
        return _with(static, "fail", "The reproduced run trained on validation tokens before scoring them, or "
                                     "re-scored tokens it had already trained on.", ev)
    if review:
        return _with(static, "needs_review", "Test-time training ran, but the trace could not tie its updates "
                                             "to validation positions.", ev)
    if not complete:
        static.evidence.extend(ev)
        return static
    if static.outcome == "fail":
        # the code shape was flagged; the run did not show it: both stay visible
        return _with(static, "fail", static.message + " (The reproduced run's trace showed no violation; "
                                                      "the flagged path may not have run.)", ev)
    if adapted:
        return _with(static, "pass", "The reproduced runs' test-time training only updated on validation "
                                     "tokens already scored, and scored each before training on it.", ev)
    if static.outcome in ("needs_review", "warn"):
        return _with(static, "pass", "The reproduced runs did no test-time training.", ev)
    static.evidence.extend(ev)
    return static


# ------------------------------------------------------------------------ validation-in-training


def _judge_val_in_training(ctx: AuditContext, static: RuleResult) -> RuleResult:
    runs = _traced(ctx)
    if not runs:
        return static
    ev: list[Evidence] = []
    failed = False
    for i, run in runs:
        t_eval = eval_start(run.trace)
        train_opens = [e for e in run.trace if e.get("e") == "open" and e.get("val")
                       and phase_of(e, t_eval) == "train"]
        setup_opens = [e for e in run.trace if e.get("e") == "open" and e.get("val")
                       and phase_of(e, t_eval) == "setup"]
        train_scores = [e for e in run.trace if e.get("e") == "score" and phase_of(e, t_eval) in ("setup", "train")
                        and e.get("grad") and e.get("r")]
        if train_opens:
            failed = True
            ev.append(_trace_ev(run, i, f"validation shard opened during training: {train_opens[0].get('p')}"
                                        + (f" (+{len(train_opens) - 1} more)" if len(train_opens) > 1 else "")))
        if train_scores:
            failed = True
            n = sum(b - a for e in train_scores for a, b in e["r"])
            ev.append(_trace_ev(run, i, f"{len(train_scores)} sampled training loss call(s) had validation "
                                        f"tokens as targets ({n} positions, first {_fmt(train_scores[0]['r'])})"))
        if setup_opens and not (train_opens or train_scores):
            ev.append(_trace_ev(run, i, f"validation shards read once before training "
                                        f"({len(setup_opens)} file(s)), as the baseline does for its periodic "
                                        "evaluation; no validation read or validation target during training"))
        elif not (train_opens or train_scores):
            ev.append(_trace_ev(run, i, "no validation shard read and no validation target during training"))
    if failed:
        return _with(static, "fail", "The reproduced run used validation data while training.", ev)
    if static.outcome == "fail" or not any(r.status == "ok" for _, r in runs):
        static.evidence.extend(ev)
        return static
    return _with(static, "pass" if static.outcome in ("pass", "needs_review", "warn", "not_applicable")
                 else static.outcome, "The reproduced runs read no validation data while training.", ev)


# --------------------------------------------------------------------------------- network-access


def _judge_network(ctx: AuditContext, static: RuleResult) -> RuleResult:
    ev: list[Evidence] = []
    failed = False
    traced = 0
    for i, run in enumerate(ctx.runs):
        iso = "inside a network namespace with loopback only" if run.network_isolated else \
              "without a network namespace (the tracer refused non-loopback sockets)"
        if not run.trace:
            ev.append(_run_ev(run, i, f"ran {iso}; no trace"))
            continue
        traced += 1
        attempts = [e for e in run.trace if e.get("e") == "net" and not e.get("allowed")]
        if attempts:
            failed = True
            a = attempts[0]
            ev.append(_trace_ev(run, i, f"{len(attempts)} network attempt(s) refused, first: {a.get('kind')} "
                                        f"{a.get('addr')} during {a.get('ph')}"))
        else:
            ev.append(_trace_ev(run, i, f"no network attempt; ran {iso}"))
    if failed:
        return _with(static, "fail", "The reproduced run tried to reach the network.", ev)
    if not traced or not any(r.status == "ok" and r.trace for r in ctx.runs):
        static.evidence.extend(ev)
        return static
    if static.outcome == "fail":
        static.evidence.extend(ev)
        return static
    return _with(static, "pass", "The reproduced runs made no network attempt.", ev)


# ------------------------------------------------------------------------------- sizes and times


def _judge_artifact(ctx: AuditContext, static: RuleResult) -> RuleResult:
    measured = [(i, r) for i, r in enumerate(ctx.runs) if r.artifact_bytes is not None]
    if not measured:
        return static
    ev = [_run_ev(r, i, f"measured artifact {r.artifact_bytes:,} bytes (code + compressed model)")
          for i, r in measured]
    worst = max(r.artifact_bytes for _, r in measured)  # type: ignore[type-var]
    if worst > ARTIFACT_LIMIT:
        return _with(static, "fail", f"A reproduced artifact is {worst:,} bytes, over the "
                                     f"{ARTIFACT_LIMIT:,}-byte cap.", ev, measured=worst, limit=ARTIFACT_LIMIT)
    if static.outcome == "fail":
        static.evidence.extend(ev)
        return static
    return _with(static, "pass", f"Every reproduced artifact fits: largest {worst:,} bytes.", ev,
                 measured=worst, limit=ARTIFACT_LIMIT)


def slow_node(ctx: AuditContext) -> tuple[bool, str]:
    for r in ctx.runs:
        cal = r.calibration or {}
        f = cal.get("factor")
        if isinstance(f, (int, float)) and f > SLOW_NODE_FACTOR:
            return True, (f"node {cal.get('node', '?')} ({cal.get('gpu', '?')}) runs the reference "
                          f"{f:.2f}x slower than the record's 8xH100 SXM")
    return False, ""


def _judge_train_time(ctx: AuditContext, static: RuleResult) -> RuleResult:
    rows = []
    for i, r in enumerate(ctx.runs):
        ms = r.parsed.train_time_ms if r.parsed is not None else None
        ours = None
        if "first_step" in r.wall_s and "train_end" in r.wall_s:
            ours = r.wall_s["train_end"] - r.wall_s["first_step"]
        if ms is None and ours is None:
            continue
        rows.append((i, r, ms, ours))
    if not rows:
        return static
    ev = [_run_ev(r, i, f"run's timer {ms:.0f} ms" if ms is not None else "run printed no train_time")
          for i, r, ms, ours in rows]
    ev = [Evidence(source="run", file=e.file, text=(e.text + (f"; our clock first step -> end of training "
          f"{ours:.1f} s (includes in-training evaluations)" if ours is not None else ""))[:300])
          for e, (_, _, _, ours) in zip(ev, rows)]
    worst = max((ms for _, _, ms, _ in rows if ms is not None), default=None)
    if worst is None:
        static.evidence.extend(ev)
        return static
    if worst > TRAIN_LIMIT_MS:
        slow, why = slow_node(ctx)
        if slow:
            return _with(static, "needs_review", f"Reproduced training took {worst:.0f} ms, but {why}.", ev,
                         measured=worst, limit=TRAIN_LIMIT_MS)
        return _with(static, "fail", f"Reproduced training took {worst:.0f} ms, over {TRAIN_LIMIT_MS} ms.", ev,
                     measured=worst, limit=TRAIN_LIMIT_MS)
    if static.outcome == "fail":
        static.evidence.extend(ev)
        return static
    return _with(static, "pass", f"Reproduced training stayed within the cap (longest {worst:.0f} ms).", ev,
                 measured=worst, limit=TRAIN_LIMIT_MS)


def _judge_eval_time(ctx: AuditContext, static: RuleResult) -> RuleResult:
    rows = []
    for i, r in enumerate(ctx.runs):
        logged = r.parsed.eval_time_ms / 1000 if r.parsed is not None and r.parsed.eval_time_ms else None
        ours = r.wall_s["end"] - r.wall_s["train_end"] if "end" in r.wall_s and "train_end" in r.wall_s else None
        if logged is not None or ours is not None:
            rows.append((i, r, logged, ours))
    if not rows:
        return static
    ev = [_run_ev(r, i, (f"scored evaluation {lg:.1f} s by the run's timer; " if lg is not None else "")
                  + (f"our clock end of training -> exit {ours:.1f} s (includes quantization, "
                     "serialization and diagnostics)" if ours is not None else "")) for i, r, lg, ours in rows]
    worst = max((lg for _, _, lg, _ in rows if lg is not None), default=None)
    if worst is None:
        static.evidence.extend(ev)
        return static
    if worst > EVAL_LIMIT_S:
        slow, why = slow_node(ctx)
        outcome = "needs_review" if slow else "fail"
        return _with(static, outcome, f"Reproduced scored evaluation took {worst:.1f} s"
                     + (f", but {why}." if slow else f", over {EVAL_LIMIT_S:.0f} s."), ev,
                     measured=worst, limit=EVAL_LIMIT_S)
    if static.outcome == "fail":
        static.evidence.extend(ev)
        return static
    return _with(static, "pass", f"Reproduced scored evaluation stayed within {EVAL_LIMIT_S:.0f} s "
                                 f"(longest {worst:.1f} s).", ev, measured=worst, limit=EVAL_LIMIT_S)


_JUDGES = {
    "ttt-score-first": _judge_ttt,
    "validation-in-training": _judge_val_in_training,
    "network-access": _judge_network,
    "artifact-size": _judge_artifact,
    "train-time": _judge_train_time,
    "eval-time": _judge_eval_time,
}
