"""The HTML verdict report: one self-contained page a maintainer can read in a minute.

`render_report(verdict, ...)` turns a verdict (verdict.md) into HTML with no external resources:
inline CSS, charts drawn here as inline SVG (no JavaScript, no CDN), so the page can be saved,
mailed or attached to an issue and still render. Every string that came from a submission
(README text, log lines, file names, messages quoting them) is escaped: the template runs with
Jinja2 autoescaping and the SVG builders escape their own text.

The page is built from a plain "view" dict prepared in Python (formatting, sorting, charts), so
the template stays declarative and the renderer never raises on a partial or odd verdict.
"""
from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"
ARTIFACT_LIMIT = 16_000_000
TIME_LIMIT_S = 600.0

# outcome -> (label, rank for sorting: problems first)
RULE_OUTCOMES = {
    "fail": ("fail", 0),
    "needs_review": ("needs review", 1),
    "warn": ("warn", 2),
    "pass": ("pass", 3),
    "not_applicable": ("n/a", 4),
}
VERDICT_LABELS = {"pass": "PASS", "fail": "FAIL", "needs_review": "NEEDS REVIEW"}
# colour-blind-friendly series palette (Okabe-Ito)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F7F7F", "#000000"]


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------

def render_report(
    verdict: dict,
    *,
    submission: dict | None = None,
    logs: dict[str, str] | None = None,
    runs: list[dict] | None = None,
    base_url: str = "",
) -> str:
    """Render the verdict as a complete HTML document.

    submission: the store's record (id, status, source, repo, pr, head_sha, timestamps), if any.
    logs: log file name (as in verdict seeds' `log`, or a run's `log`) -> text, for the curves.
    runs: reproduction runs (defaults to verdict["runs"]).
    base_url: prefix for links back into the API (verdict JSON, run logs).
    """
    verdict = verdict if isinstance(verdict, dict) else {}
    view = build_view(verdict, submission=submission or {}, logs=logs or {},
                      runs=merge_runs(runs, verdict.get("runs")), base_url=base_url.rstrip("/"))
    return _environment().get_template("report.html").render(**view)


# --------------------------------------------------------------------------------------------
# adapters for the API route (store rows and the blob folder -> render_report's inputs)
# --------------------------------------------------------------------------------------------

MAX_LOG_BYTES = 20 * 1024 * 1024


def load_logs(root: str | Path, verdict: dict, *, max_bytes: int = MAX_LOG_BYTES) -> dict[str, str]:
    """The texts of the logs the report plots: every seed row's `log` and every run's
    `log_file`/`log`, read relative to the submission folder `root`. Paths that leave the
    folder, missing files and files over `max_bytes` are skipped (the page says "no points")."""
    root = Path(root).resolve()
    names: list[str] = []
    for s in _list(verdict.get("seeds")):
        if isinstance(s, dict) and isinstance(s.get("log"), str):
            names.append(s["log"])
    for r in _list(verdict.get("runs")):
        if isinstance(r, dict):
            names += [r[k] for k in ("log_file", "log") if isinstance(r.get(k), str)]
    out: dict[str, str] = {}
    for name in dict.fromkeys(names):
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.stat().st_size > max_bytes:
            continue
        out[name] = path.read_bytes().decode("utf-8", errors="replace")
    return out


def submission_dict(sub: Any) -> dict[str, Any]:
    """The store's Submission row (or a dict) as the header facts the report shows."""
    if isinstance(sub, dict) or sub is None:
        return dict(sub or {})
    created = getattr(sub, "created_at", None)
    return {"id": getattr(sub, "id", None), "status": getattr(sub, "state", None),
            "source": getattr(sub, "source_kind", None), "repo": getattr(sub, "repo", None),
            "pr": getattr(sub, "pr", None), "head_sha": getattr(sub, "head_sha", None),
            "name": getattr(sub, "name", None), "error_message": getattr(sub, "error_message", None),
            "created_at": created.strftime("%Y-%m-%d %H:%M UTC") if isinstance(created, datetime) else created}


def run_dict(run: Any) -> dict[str, Any]:
    """The store's Run row (or a dict) in the shape the runs table reads."""
    if isinstance(run, dict):
        return dict(run)
    return {"id": getattr(run, "id", None), "seed": getattr(run, "seed", None),
            "nproc": getattr(run, "nproc", None), "status": getattr(run, "status", None),
            "exit_code": getattr(run, "exit_code", None), "timings": getattr(run, "timings", None),
            "gpu": getattr(run, "gpu", None), "artifact_bytes": getattr(run, "artifact_bytes", None),
            "trace_key": getattr(run, "trace_key", None), "error": getattr(run, "error", None)}


def merge_runs(store_runs: list | None, verdict_runs: Any) -> list[dict]:
    """Store rows (ids, status, timings — the live view) completed by the verdict's runs
    (reproduced val_bpb, log file, isolation) of the same seed; the verdict's alone otherwise."""
    vruns = [r for r in _list(verdict_runs) if isinstance(r, dict)]
    if store_runs is None:
        return vruns
    by_seed: dict[str, dict] = {}
    for r in vruns:
        by_seed.setdefault(str(r.get("seed")), r)
    out = []
    for row in store_runs:
        row = run_dict(row)
        extra = by_seed.get(str(row.get("seed")), {})
        out.append({**extra, **{k: v for k, v in row.items() if v not in (None, "", {}, [])}})
    return out


IN_PROGRESS = {"received", "validating", "queued", "running", "judging", "reported"}


def render_pending(submission: dict, *, refresh_s: int = 15) -> str:
    """The page served at the report URL before a verdict exists (the pending commit status
    links there): the state, the source and, for a stopped audit, why. Refreshes itself (a meta
    refresh, no JavaScript) while the audit is still in progress."""
    sub = submission if isinstance(submission, dict) else {}
    state = str(sub.get("status") or sub.get("state") or "received")
    active = state in IN_PROGRESS
    headline = {"cancelled": "Audit cancelled", "error_infra": "Audit interrupted"}.get(
        state, "Audit in progress" if active else "No verdict")
    colour = "#9a6700" if active else "#cf222e"
    facts = [(k, str(v)) for k, v in (("state", state), ("source", sub.get("source")),
                                      ("received", sub.get("created_at"))) if v]
    if sub.get("repo") and sub.get("pr"):
        facts.append(("pull request", f"{sub['repo']}#{sub['pr']}"))
    if sub.get("head_sha"):
        facts.append(("head", str(sub["head_sha"])[:10]))
    message = str(sub.get("error_message") or "")
    if not message and state == "error_infra":
        message = "An infrastructure error stopped the audit; it is retried and never counted against the submitter."
    return _environment().get_template("pending.html").render(
        state=state, headline=headline, colour=colour, name=str(sub.get("name") or sub.get("id") or "submission"),
        facts=facts, message=message, refresh=refresh_s if active and refresh_s > 0 else None,
        links=[(label, href) for label, href in _github_links(sub) if _safe_href(href)])


@lru_cache(maxsize=1)
def _environment() -> Environment:
    """One environment per process: templates are compiled once."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


# --------------------------------------------------------------------------------------------
# view model
# --------------------------------------------------------------------------------------------

def build_view(verdict: dict, *, submission: dict, logs: dict[str, str], runs: list[dict],
               base_url: str) -> dict[str, Any]:
    info = _dict(verdict.get("submission"))
    rules = [_rule_view(r, i) for i, r in enumerate(_list(verdict.get("rules"))) if isinstance(r, dict)]
    counts = {k: sum(1 for r in rules if r["outcome"] == k) for k in RULE_OUTCOMES}
    outcome = verdict.get("outcome") if verdict.get("outcome") in VERDICT_LABELS else "needs_review"
    seeds = [s for s in _list(verdict.get("seeds")) if isinstance(s, dict)]
    stats = _dict(verdict.get("statistics"))
    runs = [r for r in _list(runs) if isinstance(r, dict)]
    sid = submission.get("id")
    name = info.get("name") or submission.get("name") or "unnamed submission"

    links = []
    if sid is not None:
        links.append(("verdict JSON", f"{base_url}/v1/submissions/{quote(str(sid))}/verdict"))
    pr_link = _github_links(submission)
    links.extend(pr_link)

    curves = _curves(seeds, runs, logs)
    ordered = sorted(rules, key=lambda r: (r["rank"], r["index"]))   # problems first, then verdict order
    return {
        "title": f"{VERDICT_LABELS[outcome]} — {name} — pgolf-audit",
        "outcome": outcome,
        "outcome_label": VERDICT_LABELS[outcome],
        "name": name,
        "counts": counts,
        "n_rules": len(rules),
        "policy": verdict.get("policy") or "unknown policy",
        "schema": verdict.get("schema") or "",
        "facts": _submission_facts(info, submission),
        "links": [(label, href) for label, href in links if _safe_href(href)],
        "problems": [r for r in ordered if r["outcome"] in ("fail", "needs_review", "warn")],
        "rules": ordered,
        "stats": _stats_view(stats, seeds, verdict.get("policy")),
        "strip_svg": Markup(_strip_chart(seeds, runs, stats)),
        "seeds": [_seed_view(s) for s in seeds],
        "curves": curves,
        "runs": [_run_view(r, seeds, sid, base_url) for r in runs],
        "mean_bpb": _fmt_bpb(stats.get("mean_bpb")),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _rule_view(r: dict, index: int) -> dict[str, Any]:
    outcome = r.get("outcome") if r.get("outcome") in RULE_OUTCOMES else "needs_review"
    label, rank = RULE_OUTCOMES[outcome]
    evidence = []
    for e in _list(r.get("evidence")):
        if not isinstance(e, dict):
            continue
        file = e.get("file")
        line = e.get("line")
        where = f"{file}:{line}" if file and line is not None else (file or "")
        evidence.append({"source": str(e.get("source") or "?"), "where": where,
                         "text": str(e.get("text") or "")})
    return {
        "index": index,
        "id": str(r.get("id") or "?"),
        "code": str(r.get("code") or ""),
        "title": str(r.get("title") or r.get("id") or ""),
        "outcome": outcome,
        "label": label,
        "rank": rank,
        "message": str(r.get("message") or ""),
        "measured": _fmt_value(r.get("measured")),
        "limit": _fmt_value(r.get("limit")),
        "over": _over_limit(r.get("measured"), r.get("limit")),
        "basis": str(r.get("basis") or ""),
        "evidence": evidence,
        "open": outcome in ("fail", "needs_review", "warn"),
    }


def _submission_facts(info: dict, submission: dict) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", []):
            facts.append((label, str(value)))

    add("author", info.get("author"))
    if info.get("github_id") and info.get("github_id") != info.get("author"):
        add("GitHub", info.get("github_id"))
    add("track", info.get("track"))
    add("claimed val_bpb", _fmt_bpb(info.get("claimed_val_bpb")) if info.get("claimed_val_bpb") is not None else None)
    add("sha256", (info.get("sha256") or "")[:16] + ("…" if info.get("sha256") else ""))
    add("files", len(info["files"]) if isinstance(info.get("files"), list) else None)
    add("submission", submission.get("id"))
    add("status", submission.get("status"))
    add("source", submission.get("source"))
    if submission.get("repo") and submission.get("pr"):
        add("pull request", f"{submission['repo']}#{submission['pr']}")
    add("head", (str(submission.get("head_sha") or ""))[:10])
    add("received", submission.get("created_at"))
    return facts


def _github_links(submission: dict) -> list[tuple[str, str]]:
    repo, pr, sha = submission.get("repo"), submission.get("pr"), submission.get("head_sha")
    if not repo or not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", str(repo)):
        return []
    out = []
    if pr is not None and str(pr).isdigit():
        out.append((f"PR #{pr}", f"https://github.com/{repo}/pull/{pr}"))
    if sha and re.fullmatch(r"[0-9a-fA-F]{7,40}", str(sha)):
        out.append((f"commit {str(sha)[:7]}", f"https://github.com/{repo}/commit/{sha}"))
    return out


def _stats_view(stats: dict, seeds: list[dict], policy: Any) -> dict[str, Any]:
    baseline = _dict(stats.get("baseline"))
    base_seeds = [v for v in _list(baseline.get("seeds")) if _num(v) is not None]
    base_mean = sum(base_seeds) / len(base_seeds) if base_seeds else _num(baseline.get("val_bpb"))
    base_std = _std(base_seeds)
    mean = _num(stats.get("mean_bpb"))
    readings = []
    raw_readings = _dict(stats.get("readings"))
    # policy readings are the dict entries with an alpha; the rest are context (ratio, reasons)
    for pol, rd in raw_readings.items():
        if not isinstance(rd, dict) or "alpha" not in rd:
            continue
        t, df = _num(rd.get("t")), _num(rd.get("df"))
        readings.append({
            "policy": str(pol),
            "selected": str(pol) == str(policy),
            "p_value": _fmt_p(rd.get("p_value")),
            "alpha": _fmt_value(rd.get("alpha")),
            "margin": _margin_text(rd),
            "t": f"t = {t:.3f}, df = {df:.1f}" if t is not None and df is not None else "",
            "significant": _fmt_bool(rd.get("significant")),
            "sig_class": _bool_class(rd.get("significant")),
            "note": str(rd.get("reason") or rd.get("note") or ""),
        })
    if not readings and stats:
        readings.append({
            "policy": str(policy or "selected policy"), "selected": True,
            "p_value": _fmt_p(stats.get("p_value")), "alpha": _fmt_value(stats.get("alpha")),
            "margin": _fmt_bpb(stats.get("margin_bpb")) if stats.get("margin_bpb") is not None else "—",
            "significant": _fmt_bool(stats.get("significant")),
            "sig_class": _bool_class(stats.get("significant")), "note": "", "t": "",
        })
    delta = mean - base_mean if mean is not None and base_mean is not None else None
    disclosure = _dict(raw_readings.get("disclosure"))
    ratio = _num(raw_readings.get("nats_per_bpb"))
    return {
        "present": bool(stats),
        "n": stats.get("n") if stats.get("n") is not None else len(seeds),
        "mean": _fmt_bpb(mean),
        "std": _fmt_bpb(stats.get("std_bpb")),
        "test": str(stats.get("test") or ""),
        "p_value": _fmt_p(stats.get("p_value")),
        "alpha": _fmt_value(stats.get("alpha")),
        "margin": _fmt_bpb(stats.get("margin_bpb")) if stats.get("margin_bpb") is not None else "—",
        "significant": _fmt_bool(stats.get("significant")),
        "sig_class": _bool_class(stats.get("significant")),
        "readings": readings,
        "baseline_reason": str(raw_readings.get("baseline_reason") or ""),
        "ratio": f"{ratio:.4f} nats per bpb" if ratio is not None else "",
        "disclosure": (f"Best-of-n disclosure: {disclosure.get('runs')} runs in total "
                       f"({disclosure.get('key')}). {disclosure.get('note') or ''}".strip()
                       if disclosure else ""),
        "baseline": None if not baseline else {
            "name": str(baseline.get("name") or "baseline"),
            "pr": baseline.get("pr"),
            "n": len(base_seeds),
            "mean": _fmt_bpb(base_mean),
            "std": _fmt_bpb(base_std),
            "seeds": ", ".join(_fmt_bpb(v) for v in base_seeds),
        },
        "delta": (f"{delta:+.5f}" if delta is not None else "—"),
        "delta_class": ("good" if delta is not None and delta < 0 else "bad" if delta is not None else ""),
    }


def _seed_view(s: dict) -> dict[str, Any]:
    art = _num(s.get("artifact_bytes"))
    train, ev = _num(s.get("train_time_s")), _num(s.get("eval_time_s"))
    return {
        "seed": _fmt_value(s.get("seed")),
        "role": str(s.get("role") or "seed"),
        "counted": _counted(s),
        "note": str(s.get("note") or ""),
        "log": str(s.get("log") or ""),
        "val_bpb": _fmt_bpb(s.get("val_bpb")),
        "val_loss": _fmt_num(s.get("val_loss"), 5),
        "artifact": _fmt_bytes(art),
        "artifact_pct": f"{100 * art / ARTIFACT_LIMIT:.2f}%" if art is not None else "",
        "artifact_over": art is not None and art > ARTIFACT_LIMIT,
        "code": _fmt_bytes(_num(s.get("code_bytes"))),
        "train": _fmt_secs(train), "train_over": train is not None and train > TIME_LIMIT_S,
        "eval": _fmt_secs(ev), "eval_over": ev is not None and ev > TIME_LIMIT_S,
        "steps": _fmt_value(s.get("steps")),
    }


def _counted(s: dict) -> bool:
    """Seeds-table rows for the counted seeds (the engine also lists re-runs, duplicates, …)."""
    return s.get("role") in (None, "seed")


def _margin_text(rd: dict) -> str:
    bpb, nats = _num(rd.get("margin_bpb")), _num(rd.get("margin_nats"))
    if bpb is None:
        return "—"
    if bpb == 0:
        return "none"
    return f"{bpb:.6f}" + (f" ({nats:g} nat)" if nats else "")


def _run_view(r: dict, seeds: list[dict], sid: Any, base_url: str) -> dict[str, Any]:
    seed = r.get("seed")
    claimed = _num(r.get("claimed_val_bpb"))
    if claimed is None:
        for s in seeds:
            if _counted(s) and s.get("seed") is not None and str(s.get("seed")) == str(seed):
                claimed = _num(s.get("val_bpb"))
    parsed = _dict(r.get("parsed"))
    reproduced = _first_num(r.get("val_bpb"), r.get("reproduced_val_bpb"), parsed.get("val_bpb"))
    wall = _dict(r.get("timings")) or _dict(r.get("wall_s"))   # store rows (live) / verdict runs
    train = _first_num(r.get("train_time_s"), _span(wall, "start", "train_end"))
    ev = _first_num(r.get("eval_time_s"), _span(wall, "train_end", "end"))
    total = _first_num(r.get("total_time_s"), _span(wall, "start", "end"))
    gpu = r.get("gpu")
    if isinstance(gpu, dict):
        parts = [gpu.get("name") or gpu.get("model"), f"×{gpu['count']}" if gpu.get("count") else None,
                 f"driver {gpu['driver']}" if gpu.get("driver") else None]
        gpu_text = " ".join(str(p) for p in parts if p)
    else:
        gpu_text = str(gpu or "")
    run_id = r.get("id", r.get("run_id", r.get("run")))
    href = r.get("log_url") if isinstance(r.get("log_url"), str) else None
    if not href and sid is not None and run_id is not None:
        href = f"{base_url}/v1/submissions/{quote(str(sid))}/runs/{quote(str(run_id))}/log"
    delta = reproduced - claimed if reproduced is not None and claimed is not None else None
    status = str(r.get("status") or "unknown")
    return {
        "id": _fmt_value(run_id),
        "seed": _fmt_value(seed),
        "status": status,
        "status_class": {"ok": "pass", "passed": "pass", "succeeded": "pass", "crashed": "fail",
                         "failed": "fail", "timeout": "fail", "infra_error": "warn",
                         "error_infra": "warn", "running": "na", "queued": "na"}.get(status, "na"),
        "reproduced": _fmt_bpb(reproduced),
        "claimed": _fmt_bpb(claimed),
        "delta": f"{delta:+.5f}" if delta is not None else "—",
        "train": _fmt_secs(train), "eval": _fmt_secs(ev), "total": _fmt_secs(total),
        "artifact": _fmt_bytes(_num(r.get("artifact_bytes"))),
        "gpu": gpu_text,
        "nproc": _fmt_value(r.get("nproc")),
        "log_href": href if href and _safe_href(href) else None,
        "evidence": str(r.get("basis") or r.get("evidence_source") or "reproduced"),
        "network": {True: "isolated", False: "not isolated"}.get(r.get("network_isolated"), ""),
        "trace": "trace" if r.get("trace_file") or r.get("trace_key") or r.get("trace") else "",
        "exit_code": _fmt_value(r.get("exit_code")) if r.get("exit_code") is not None else "",
        "reason": str(r.get("reason") or r.get("error") or ""),
    }


# --------------------------------------------------------------------------------------------
# loss curves (from the logs, via the shared log grammar)
# --------------------------------------------------------------------------------------------

def _curves(seeds: list[dict], runs: list[dict], logs: dict[str, str]) -> dict[str, Any]:
    """One series per seed log named in the verdict (claimed), plus one per run log (reproduced,
    dashed). Logs given but not named by any seed or run are listed, not plotted, so a folder
    holding original + re-run logs does not draw two curves for one seed."""
    series: list[dict[str, Any]] = []
    used: set[str] = set()
    for s in seeds:
        name = s.get("log")
        if _counted(s) and isinstance(name, str) and name in logs and name not in used:
            used.add(name)
            series.append(_series_from_log(logs[name], name, f"seed {_fmt_value(s.get('seed'))}", False))
    for r in runs:
        name = r.get("log") or r.get("log_file")
        if isinstance(name, str) and name in logs and name not in used:
            used.add(name)
            series.append(_series_from_log(logs[name], name, f"run seed {_fmt_value(r.get('seed'))}", True))
    if not series and not seeds and not runs:  # a bare log bundle: plot everything given
        for name, text in logs.items():
            used.add(name)
            series.append(_series_from_log(text, name, name, False))
    for i, s in enumerate(series):
        s["color"] = PALETTE[i % len(PALETTE)]
    train = [{"label": s["label"], "color": s["color"], "dashed": s["dashed"], "points": s["train"]}
             for s in series]
    val = [{"label": s["label"], "color": s["color"], "dashed": s["dashed"], "points": s["val"]}
           for s in series]
    return {
        "n": len(series),
        "train_svg": Markup(_line_chart(train, chart="train-loss", title="Training loss",
                                        x_label="step", y_label="train_loss", robust=True)),
        "val_svg": Markup(_line_chart(val, chart="val-bpb", title="Validation bpb at checkpoints",
                                      x_label="step", y_label="val_bpb", markers=True, robust=True)),
        "unplotted": sorted(set(logs) - used),   # re-runs, duplicates, other logs
        "problems": [f"{s['file']}: {p}" for s in series for p in s["problems"]],
    }


def _series_from_log(text: str, file: str, label: str, dashed: bool) -> dict[str, Any]:
    points, problems = step_points(text, file)
    train = [(p[0], p[1]) for p in points if p[1] is not None]
    val = [(p[0], p[2]) for p in points if p[2] is not None]
    if not train and not val:
        problems = problems + ["no step lines found"]
    return {"file": file, "label": label, "dashed": dashed,
            "train": _thin(_dedupe_restarts(train), MAX_POINTS),
            "val": _thin(_dedupe_restarts(val), MAX_POINTS), "problems": problems}


MAX_POINTS = 600   # per curve: enough for a 640-px chart, keeps a 20k-step log's page small


def _thin(points: list[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """At most `n` points, evenly spaced by index, always keeping the first and the last."""
    if len(points) <= n:
        return points
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]


def step_points(text: str, file: str) -> tuple[list[tuple[int, float | None, float | None]], list[str]]:
    """(step, train_loss, val_bpb) for every step line, read by the shared log grammar
    (`rules.logs.parse_log`), so the curves and the rules see the same steps."""
    from rules.logs import parse_log

    try:
        parsed = parse_log(text, file)
    except Exception as exc:  # a broken log must not break the page
        return [], [f"the log could not be parsed ({type(exc).__name__})"]
    # the parser's other problems (missing size lines, …) belong to the rules, not the curves
    return [(int(p.step), _num(p.train_loss), _num(p.val_bpb)) for p in parsed.steps], []


def _dedupe_restarts(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Logs that restart (warm-up passes, re-runs appended) repeat step numbers: keep the last
    monotonic run of steps, which is the run that produced the score."""
    start = 0
    for i in range(1, len(points)):
        if points[i][0] < points[i - 1][0]:
            start = i
    return points[start:]


# --------------------------------------------------------------------------------------------
# SVG charts (no JavaScript; every text escaped)
# --------------------------------------------------------------------------------------------

W, H = 600, 300          # line charts (two per row on a wide screen)
SW = 960                 # the strip chart spans the page width
ML, MR, MT, MB = 64, 18, 34, 46
LEGEND_ROW = 18


def _line_chart(series: list[dict], *, chart: str, title: str, x_label: str, y_label: str,
                markers: bool = False, robust: bool = False) -> str:
    pts = [p for s in series for p in s["points"] if _finite(p[1])]
    legend = [(s["label"], s["color"], s.get("dashed")) for s in series if s["points"]]
    rows = _legend_rows(legend, W - ML - MR)
    height = H + LEGEND_ROW * len(rows) + (6 if rows else 0)
    head = (f'<svg class="chart" data-chart="{chart}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" '
            f'aria-label="{_e(title)}">')
    out = [head, f"<title>{_e(title)}</title>",
           f'<text class="ctitle" x="{ML}" y="20">{_e(title)}</text>']
    if not pts:
        out.append(f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle">'
                   f'no {_e(y_label)} points in the logs</text></svg>')
        return "".join(out)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    y0, y1 = min(ys), max(ys)
    clipped = False
    if robust:  # early steps (loss ~7-12) would flatten the rest of the curve: clip them
        late = [p[1] for p in pts if p[0] >= x0 + 0.1 * (x1 - x0)]
        if len(late) >= 2:
            top = max(late)
            span = top - min(late) or abs(top) * 0.1 or 1.0
            if y1 > top + 0.5 * span:
                y1, clipped = top + 0.25 * span, True
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    y0 -= 0.04 * (y1 - y0)
    xt = _ticks(x0, x1, 6)
    yt = _ticks(y0, y1, 5)
    x0, x1 = min(x0, xt[0]), max(x1, xt[-1])
    yt = [t for t in yt if y0 - 1e-12 <= t <= y1 + 1e-12]

    def sx(v: float) -> float:
        return ML + (v - x0) / (x1 - x0) * (W - ML - MR)

    def sy(v: float) -> float:
        v = min(max(v, y0), y1)
        return MT + (y1 - v) / (y1 - y0) * (H - MT - MB)

    out.append(_axes(xt, yt, sx, sy, x_label, y_label, x_fmt=_fmt_tick_int, y_fmt=_fmt_tick))
    for s in series:
        spts = [p for p in s["points"] if _finite(p[1])]
        if not spts:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in spts)
        dash = ' stroke-dasharray="6 4"' if s.get("dashed") else ""
        out.append(f'<polyline class="series" data-series="{_e(s["label"])}" fill="none" '
                   f'stroke="{s["color"]}" stroke-width="2" stroke-linejoin="round"{dash} '
                   f'points="{coords}"><title>{_e(s["label"])}</title></polyline>')
        if markers or len(spts) == 1:
            for x, y in spts:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.2" fill="{s["color"]}">'
                           f'<title>{_e(s["label"])}: step {x}, {_e(_fmt_tick(y))}</title></circle>')
    out.append(_legend(rows, H))
    if clipped:
        out.append(f'<text class="note" x="{W - MR}" y="20" text-anchor="end">'
                   f'y clipped at {_fmt_tick(y1)} (early steps above)</text>')
    out.append("</svg>")
    return "".join(out)


def _strip_chart(seeds: list[dict], runs: list[dict], stats: dict) -> str:
    """val_bpb per seed: this submission's claimed seeds, reproduced runs, the baseline's seeds."""
    baseline = _dict(stats.get("baseline"))
    rows: list[tuple[str, str, list[tuple[str, float]]]] = []
    claimed = [(f"seed {_fmt_value(s.get('seed'))}", v) for s in seeds
               if _counted(s) and (v := _num(s.get("val_bpb"))) is not None]
    if claimed:
        rows.append(("this submission (claimed)", PALETTE[0], claimed))
    repro = [(f"run seed {_fmt_value(r.get('seed'))}", v) for r in runs
             if (v := _first_num(r.get("val_bpb"), r.get("reproduced_val_bpb"),
                                 _dict(r.get("parsed")).get("val_bpb"))) is not None]
    if repro:
        rows.append(("reproduced", PALETTE[2], repro))
    base = [(f"baseline seed {i + 1}", float(v)) for i, v in enumerate(_list(baseline.get("seeds")))
            if _num(v) is not None]
    if base:
        pr = baseline.get("pr")
        label = f"baseline PR #{pr}" if isinstance(pr, int) else f"baseline: {baseline.get('name') or 'previous record'}"
        rows.append((label, PALETTE[5], base))
    h = MT + 40 * max(len(rows), 1) + MB
    left = 230
    title = "val_bpb per seed (lower is better; bar = mean)"
    out = [f'<svg class="chart" data-chart="bpb-strip" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {SW} {h}" width="{SW}" height="{h}" role="img" aria-label="{_e(title)}">',
           f"<title>{_e(title)}</title>", f'<text class="ctitle" x="{left}" y="20">{_e(title)}</text>']
    values = [v for _, _, pts in rows for _, v in pts]
    if not values:
        out.append(f'<text class="empty" x="{SW / 2}" y="{h / 2}" text-anchor="middle">'
                   f'no per-seed val_bpb to plot</text></svg>')
        return "".join(out)
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.12, 0.0005)
    lo, hi = lo - pad, hi + pad
    margin = _num(stats.get("margin_bpb"))
    base_mean = sum(v for _, v in base) / len(base) if base else None
    threshold = base_mean - margin if base_mean is not None and margin else None
    if threshold is not None:
        lo = min(lo, threshold - pad / 2)
    xt = [t for t in _ticks(lo, hi, 6) if lo <= t <= hi]

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (SW - left - MR)

    bottom = h - MB
    for t in xt:
        x = sx(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{bottom}"/>'
                   f'<text class="tick" x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">'
                   f'{_e(_fmt_tick(t))}</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{SW - MR}" y2="{bottom}"/>'
               f'<text class="alabel" x="{(left + SW - MR) / 2:.1f}" y="{h - 8}" '
               f'text-anchor="middle">val_bpb</text>')
    if threshold is not None:
        x = sx(threshold)
        out.append(f'<line class="threshold" x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{bottom}">'
                   f'<title>baseline mean − margin = {threshold:.5f}</title></line>'
                   f'<text class="note" x="{x - 4:.1f}" y="{MT + 10}" text-anchor="end">'
                   f'to beat: {threshold:.5f}</text>')
    for i, (label, color, pts) in enumerate(rows):
        cy = MT + 20 + 40 * i
        out.append(f'<g class="strip" data-row="{_e(label)}">'
                   f'<text class="rowlabel" x="{left - 12}" y="{cy + 4}" text-anchor="end">'
                   f'{_e(_clip(label, 28))}<title>{_e(label)}</title></text>'
                   f'<line class="rowline" x1="{left}" y1="{cy}" x2="{SW - MR}" y2="{cy}"/>')
        mean = sum(v for _, v in pts) / len(pts)
        out.append(f'<line class="mean" x1="{sx(mean):.1f}" y1="{cy - 13}" x2="{sx(mean):.1f}" '
                   f'y2="{cy + 13}" stroke="{color}"><title>{_e(label)} mean {mean:.5f}</title></line>')
        for j, (plabel, v) in enumerate(pts):
            jitter = ((j % 3) - 1) * 4
            out.append(f'<circle class="dot" cx="{sx(v):.1f}" cy="{cy + jitter}" r="5.5" fill="{color}" '
                       f'fill-opacity="0.85" stroke="#fff" stroke-width="1">'
                       f'<title>{_e(plabel)}: {v:.5f}</title></circle>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _axes(xt, yt, sx, sy, x_label, y_label, *, x_fmt, y_fmt) -> str:
    bottom, top = H - MB, MT
    parts = []
    for t in yt:
        y = sy(t)
        parts.append(f'<line class="grid" x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(y_fmt(t))}</text>')
    for t in xt:
        x = sx(t)
        parts.append(f'<line class="tickmark" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">{_e(x_fmt(t))}</text>')
    parts.append(f'<line class="axis" x1="{ML}" y1="{bottom}" x2="{W - MR}" y2="{bottom}"/>'
                 f'<line class="axis" x1="{ML}" y1="{top}" x2="{ML}" y2="{bottom}"/>'
                 f'<text class="alabel" x="{(ML + W - MR) / 2:.1f}" y="{H - 10}" text-anchor="middle">{_e(x_label)}</text>'
                 f'<text class="alabel" transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{_e(y_label)}</text>')
    return "".join(parts)


def _legend_rows(items: list[tuple[str, str, bool | None]], width: float) -> list[list]:
    """Lay legend entries left to right under the plot, wrapping at the plot width."""
    rows: list[list] = []
    x = width + 1
    for label, color, dashed in items:
        text = _clip(label, 28)
        w = 30 + 6.8 * len(text) + 16
        if x + w > width:
            rows.append([])
            x = 0.0
        rows[-1].append((x, text, color, dashed))
        x += w
    return rows


def _legend(rows: list[list], y_top: float) -> str:
    parts = ['<g class="legend">']
    for r, row in enumerate(rows):
        y = y_top + 12 + LEGEND_ROW * r
        for x, text, color, dashed in row:
            lx = ML + x
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            parts.append(f'<line x1="{lx:.1f}" y1="{y - 4}" x2="{lx + 22:.1f}" y2="{y - 4}" stroke="{color}" '
                         f'stroke-width="2.5"{dash}/><text x="{lx + 28:.1f}" y="{y}">{_e(text)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _ticks(lo: float, hi: float, n: int) -> list[float]:
    """'Nice' tick values (1, 2, 5 × 10^k) covering [lo, hi]."""
    if not (_finite(lo) and _finite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    return ticks


# --------------------------------------------------------------------------------------------
# formatting helpers (all return plain strings; escaping happens in the template / _e)
# --------------------------------------------------------------------------------------------

def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _first_num(*vals: Any) -> float | None:
    for v in vals:
        n = _num(v)
        if n is not None:
            return n
    return None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _span(wall: dict, a: str, b: str) -> float | None:
    x, y = _num(wall.get(a)), _num(wall.get(b))
    return y - x if x is not None and y is not None and y >= x else None


def _std(vals: Iterable[float]) -> float | None:
    v = list(vals)
    if len(v) < 2:
        return None
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _fmt_bpb(v: Any) -> str:
    n = _num(v)
    return f"{n:.5f}" if n is not None else "—"


def _fmt_num(v: Any, digits: int = 4) -> str:
    n = _num(v)
    return f"{n:.{digits}f}" if n is not None else "—"


def _fmt_p(v: Any) -> str:
    n = _num(v)
    if n is None:
        return "—"
    return f"{n:.2e}" if n < 1e-3 else f"{n:.4f}"


def _fmt_bytes(n: float | None) -> str:
    return f"{int(n):,}" if n is not None else "—"


def _fmt_secs(n: float | None) -> str:
    return f"{n:,.1f} s" if n is not None else "—"


def _fmt_bool(v: Any) -> str:
    return {True: "yes", False: "no"}.get(v, "—") if isinstance(v, bool) or v is None else str(v)


def _bool_class(v: Any) -> str:
    return {True: "good", False: "bad"}.get(v, "") if isinstance(v, bool) else ""


def _fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 100_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        return f"{v:.6g}"
    return str(v)


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _fmt_tick_int(v: float) -> str:
    return f"{int(round(v)):,}"


def _over_limit(measured: Any, limit: Any) -> bool:
    m, lim = _num(measured), _num(limit)
    return m is not None and lim is not None and m > lim


def _safe_href(href: str) -> bool:
    """Only http(s) and same-site links; never javascript:/data: from untrusted fields."""
    return isinstance(href, str) and (href.startswith(("https://", "http://", "/")) and not href.startswith("//"))
