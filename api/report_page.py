"""The HTML behind `GET /v1/submissions/{id}/report`: the verdict rendered by `api.report`
(helper module, with the seed logs for the loss curves), or a small status page while there is no
verdict (in progress, refused input, infrastructure error, cancelled)."""
from __future__ import annotations

import html
import logging
from typing import Any

from store.blobs import BlobStore
from store.models import TERMINAL, Submission

log = logging.getLogger(__name__)
MAX_LOG_BYTES = 4 * 1024 * 1024


def _submission_dict(sub: Submission) -> dict[str, Any]:
    return {"id": sub.id, "status": sub.state, "state": sub.state, "source": sub.source_kind,
            "repo": sub.repo, "pr": sub.pr, "head_sha": sub.head_sha, "name": sub.name,
            "created_at": sub.created_at.isoformat() if sub.created_at else None,
            "updated_at": sub.updated_at.isoformat() if sub.updated_at else None}


def _logs(sub: Submission, verdict: dict[str, Any], blobs: BlobStore) -> dict[str, str]:
    """The seed logs (from the stored folder) and run logs, for the report's curves."""
    out: dict[str, str] = {}
    if sub.folder_key and blobs.exists(sub.folder_key):
        root = blobs.path(sub.folder_key).resolve()
        for seed in verdict.get("seeds") or []:
            name = seed.get("log") if isinstance(seed, dict) else None
            if not isinstance(name, str) or name in out:
                continue
            p = (root / name).resolve()
            if root in p.parents and p.is_file() and p.stat().st_size <= MAX_LOG_BYTES:
                out[name] = p.read_text("utf-8", "replace")
    for run in sub.runs:
        if run.log_key and blobs.exists(run.log_key) and blobs.size(run.log_key) <= MAX_LOG_BYTES:
            out[f"run-{run.id}"] = blobs.get_bytes(run.log_key).decode("utf-8", "replace")
    return out


def report_html(sub: Submission, verdict: dict[str, Any] | None, blobs: BlobStore) -> str:
    if verdict is not None:
        try:
            from .report import render_report
        except ImportError:
            render_report = None
        if render_report is not None:
            runs = [{"id": r.id, "seed": r.seed, "status": r.status, "log": f"run-{r.id}",
                     "wall_s": r.timings or {}, "gpu": r.gpu or {},
                     "artifact_bytes": r.artifact_bytes} for r in sub.runs] or None
            return render_report(verdict, submission=_submission_dict(sub),
                                 logs=_logs(sub, verdict, blobs), runs=runs, base_url="")
    return status_page(sub, verdict)


def status_page(sub: Submission, verdict: dict[str, Any] | None) -> str:
    e = html.escape
    title = f"pgolf-audit — {sub.name or sub.id}"
    refresh = "" if sub.state in TERMINAL else '<meta http-equiv="refresh" content="3">'
    rows = "".join(
        f"<tr><td>{e(t.at.isoformat())}</td><td>{e(t.from_state or '')}</td>"
        f"<td>{e(t.to_state)}</td><td>{e(t.reason_code)}</td><td>{e(t.message or '')}</td></tr>"
        for t in sub.transitions)
    error = (f"<p class=error><b>{e(sub.error_code)}</b>: {e(sub.error_message or '')}</p>"
             if sub.error_code else "")
    outcome = (f"<p>Verdict: <b>{e(str(verdict.get('outcome')))}</b> "
               f"(<a href=\"/v1/submissions/{e(sub.id)}/verdict\">JSON</a>)</p>" if verdict else "")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>{refresh}"
            f"<title>{e(title)}</title></head><body><h1>{e(title)}</h1>"
            f"<p>State: <b>{e(sub.state)}</b></p>{error}{outcome}"
            "<table><thead><tr><th>at</th><th>from</th><th>to</th><th>reason</th><th>message</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></body></html>")
