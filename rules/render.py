"""Human renderings of a verdict: a terminal table and Markdown for a PR comment.

Both show the same things in the same order — the outcome first, one row per rule (code, id,
outcome, measured vs limit, message), the seeds, the statistics with both policies' readings —
because a reviewer reads the top line and only then the evidence.
"""
from __future__ import annotations

from typing import Any

from .model import Verdict

_MARK = {"pass": "ok", "fail": "FAIL", "warn": "warn", "needs_review": "REVIEW", "not_applicable": "n/a"}
_EMOJI = {"pass": "✅", "fail": "❌", "warn": "⚠️", "needs_review": "🔍", "not_applicable": "➖"}


def fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == int(v) and abs(v) >= 1000:
            return f"{int(v):,}"
        return f"{v:.6g}"
    return str(v)


def _measured(r) -> str:
    if r.measured is None and r.limit is None:
        return ""
    return f"{fmt_value(r.measured)} / {fmt_value(r.limit)}"


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return lines or [""]


def _bpb(v: Any) -> str:
    return f"{v:.8f}" if isinstance(v, float) else fmt_value(v)


def _stats_lines(v: Verdict) -> list[str]:
    st = v.statistics
    if st is None:
        return ["statistics: none (no scored seeds)"]
    out = [f"statistics: n={st.n} mean={_bpb(st.mean_bpb)} std={fmt_value(st.std_bpb)}"]
    if st.baseline is not None:
        pr = f" (PR #{st.baseline.pr})" if st.baseline.pr and not st.baseline.name.startswith("PR #") else ""
        out.append(f"  baseline: {st.baseline.name}{pr}"
                   + f", {len(st.baseline.seeds)} seed(s)")
    for pid, r in st.readings.items():
        if isinstance(r, dict) and "alpha" in r:
            chosen = " (selected)" if pid == v.policy else ""
            sig = {True: "significant", False: "not significant", None: "undefined"}[r.get("significant")]
            why = f" — {r['reason']}" if r.get("p_value") is None and r.get("reason") else ""
            out.append(f"  {pid}{chosen}: p={fmt_value(r.get('p_value'))} alpha={r['alpha']} "
                       f"margin={fmt_value(r.get('margin_bpb'))} bpb → {sig}{why}")
    d = st.readings.get("disclosure")
    if d:
        out.append(f"  disclosure: {d.get('runs')} runs ({d.get('key')})")
    return out


def terminal(v: Verdict, width: int | None = None) -> str:
    if width is None:
        import shutil

        width = max(100, min(160, shutil.get_terminal_size((120, 24)).columns))
    sub = v.submission
    lines = [f"pgolf-audit: {v.outcome.upper()}   policy {v.policy}",
             f"submission: {sub.name or '?'} by {sub.author or '?'} ({sub.github_id or '?'}), "
             f"track {sub.track or 'unknown'}, claimed val_bpb {fmt_value(sub.claimed_val_bpb)}",
             f"sha256: {sub.sha256}", ""]
    head = f"{'code':6} {'rule':26} {'outcome':8} {'measured / limit':24} message"
    lines += [head, "-" * min(width, 140)]
    msg_w = max(30, width - 68)
    for r in v.rules:
        msg = _wrap(r.message, msg_w)
        lines.append(f"{r.code:6} {r.id:26} {_MARK.get(r.outcome, r.outcome):8} {_measured(r)[:24]:24} {msg[0]}")
        lines += [" " * 68 + m for m in msg[1:]]
    lines.append("")
    if v.seeds:
        lines.append(f"{'seed':>8} {'role':9} {'val_bpb':>11} {'artifact':>12} {'train s':>9} {'eval s':>8} {'steps':>7}  log")
        for s in v.seeds:
            role = getattr(s, "role", "seed")
            lines.append(f"{str(s.seed) if s.seed is not None else '?':>8} {role:9} {_bpb(s.val_bpb):>11} "
                         f"{fmt_value(s.artifact_bytes):>12} {fmt_value(s.train_time_s):>9} {fmt_value(s.eval_time_s):>8} "
                         f"{fmt_value(s.steps):>7}  {s.log}")
        lines.append("")
    lines += _stats_lines(v)
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code_span(text: str) -> str:
    text = text.replace("\n", " ").strip()
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown(v: Verdict) -> str:
    sub = v.submission
    out = [f"## {_EMOJI.get(v.outcome, '')} pgolf-audit: **{v.outcome}** (policy `{v.policy}`)", "",
           f"**{_md_escape(sub.name or '?')}** by {_md_escape(sub.author or '?')} (`{sub.github_id or '?'}`), "
           f"track `{sub.track or 'unknown'}`, claimed val_bpb {fmt_value(sub.claimed_val_bpb)}", "",
           "| code | rule | outcome | measured / limit | message |", "|---|---|---|---|---|"]
    for r in v.rules:
        out.append(f"| {r.code} | `{r.id}` | {_EMOJI.get(r.outcome, '')} {r.outcome} | {_md_escape(_measured(r))} "
                   f"| {_md_escape(r.message)} |")
    with_ev = [r for r in v.rules if r.evidence and r.outcome in ("fail", "warn", "needs_review")]
    if with_ev:
        out += ["", "<details><summary>Evidence</summary>", ""]
        for r in with_ev:
            out.append(f"**{r.code} {r.id}** ({r.outcome})")
            out.append("")
            for e in r.evidence:
                loc = f"{e.file}:{e.line}" if e.line else (e.file or e.source)
                out.append(f"- `{loc}` ({e.source}): {_code_span(e.text)}")
            out.append("")
        out.append("</details>")
    if v.seeds:
        out += ["", "<details><summary>Seeds</summary>", "",
                "| seed | role | val_bpb | artifact bytes | train s | eval s | steps | log |",
                "|---|---|---|---|---|---|---|---|"]
        for s in v.seeds:
            out.append(f"| {s.seed if s.seed is not None else '?'} | {getattr(s, 'role', 'seed')} | {_bpb(s.val_bpb)} | "
                       f"{fmt_value(s.artifact_bytes)} | {fmt_value(s.train_time_s)} | {fmt_value(s.eval_time_s)} | "
                       f"{fmt_value(s.steps)} | `{s.log}` |")
        out += ["", "</details>"]
    out += ["", "<details><summary>Statistics</summary>", "", "```"] + _stats_lines(v) + ["```", "", "</details>", ""]
    return "\n".join(out)
