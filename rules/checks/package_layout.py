"""PG101 package-layout — the records folder has what the README asks a submission to ship.

What it decides (rules.md, Rule 8; README commit a15093ada, 2026-03-18):
* `README.md` explaining the submission, `submission.json` that parses, at least one train log
  "automatically produced by your script", and `train_gpt.py` that compiles — a missing one, an
  unparseable `submission.json` or a `train_gpt.py` with a syntax error **fails**;
* `submission.json` has `author`, `github_id`, `name`, `val_bpb` and `date`. A missing field is a
  **warn**, because merged records omit some (`2026-03-19_smeargate_orthoinit_muonwd` has no
  name/author; 56 of 57 files on main have `github_id`) — except a file that claims no score at all
  (no `val_bpb`, `mean_val_bpb` or per-seed values), which **fails**: there is nothing to check;
* the folder name is `YYYY-MM-DD_Description` — **warn** otherwise (MarioPaerle renamed
  `2026_04_16_…` on cocohearts' request, commit e64813770; a name with spaces was merged);
* the track comes from the path (`records/track_10min_16mb`, `records/track_non_record_16mb`) or the
  metadata (`track`); a disagreement between the two, or no track at all, is a **warn** (the
  audit then applies the record track's limits).
Non-record entries ship the same files; they need no seeds and run on any hardware (#1175).
"""
from __future__ import annotations

import re
import sys

from ..context import AuditContext
from ..model import Evidence, RuleResult
from ._base import json_ev, result

ID = "package-layout"
CODE = "PG101"
TITLE = "Submission package layout"

REQUIRED_FIELDS = ("author", "github_id", "name", "val_bpb", "date")
FOLDER_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_[A-Za-z0-9._+\-]+$")
_SCORE_KEYS = ("val_bpb", "mean_val_bpb", "mean_bpb")


def _has_score(sj: dict) -> bool:
    if any(isinstance(sj.get(k), (int, float)) and not isinstance(sj.get(k), bool) for k in _SCORE_KEYS):
        return True
    for key in ("seed_results", "seeds"):
        block = sj.get(key)
        if isinstance(block, dict) and any(isinstance(v, dict) and "val_bpb" in v for v in block.values()):
            return True
    return isinstance(sj.get("seed_scores"), list)


def _json_track(sj: dict) -> str | None:
    raw = str(sj.get("track") or "").lower().replace("-", "_")
    if not raw:
        return None
    if "non_record" in raw or "unlimited" in raw:
        return "non_record_16mb"
    if "10min" in raw:
        return "10min_16mb"
    return None


def _path_track(files_root: str) -> str | None:
    if "track_non_record_16mb" in files_root:
        return "non_record_16mb"
    if "track_10min_16mb" in files_root:
        return "10min_16mb"
    return None


def check(ctx: AuditContext) -> RuleResult:
    sub = ctx.submission
    fails: list[str] = []
    warns: list[str] = []
    ev: list[Evidence] = []
    files = set(sub.files)

    if not any(f.lower() == "readme.md" for f in files):
        fails.append("README.md is missing")
    sj = sub.submission_json
    if sj is None or not isinstance(sj, dict):
        fails.append(sub.submission_json_error or "submission.json is missing or is not a JSON object")
    else:
        missing = [k for k in REQUIRED_FIELDS if sj.get(k) in (None, "")]
        if "val_bpb" in sj and sj["val_bpb"] is not None and not _has_score({"val_bpb": sj["val_bpb"]}):
            fails.append(f"submission.json's val_bpb is not a number ({str(sj['val_bpb'])[:40]!r})")
        elif not _has_score(sj):
            fails.append("submission.json claims no val_bpb (no val_bpb, mean or per-seed value)")
        elif missing:
            warns.append("submission.json lacks " + ", ".join(missing))
        if missing:
            ev.append(json_ev(sub.submission_json_file or "submission.json",
                              "missing fields: " + ", ".join(missing)))
    if not sub.logs:
        fails.append("there is no train log")
    script = sub.train_script
    if script is None:
        fails.append("train_gpt.py is missing")
    else:
        if script.path != "train_gpt.py":
            warns.append(f"the training script is at {script.path}, not the folder root")
        if script.syntax_error:
            fails.append(f"train_gpt.py does not compile ({script.syntax_error})")
            ev.append(Evidence(source="code", file=script.path, line=None, text=script.syntax_error[:300]))

    if not FOLDER_NAME.match(sub.name or ""):
        warns.append(f"folder name {sub.name!r} is not YYYY-MM-DD_Description")

    path_track = _path_track(str(sub.root).replace("\\", "/"))
    meta_track = _json_track(sj) if isinstance(sj, dict) else None
    if path_track and meta_track and path_track != meta_track:
        warns.append(f"the path says track {path_track} but submission.json says {meta_track}")
    if sub.track is None and not (path_track or meta_track):
        warns.append("the track is unknown (neither the path nor submission.json names one); record-track limits apply")
    for p in sub.problems[:3]:
        warns.append(p.rstrip("."))

    track = sub.track or path_track or meta_track or "unknown"
    if fails:
        return result(sys.modules[__name__], "fail",
                      "The package is incomplete: " + "; ".join(fails + warns) + ".",
                      measured=len(fails), limit=0, evidence=ev)
    if warns:
        return result(sys.modules[__name__], "warn",
                      f"The package has the required files (track {track}), but " + "; ".join(warns) + ".",
                      measured=len(warns), limit=0, evidence=ev)
    return result(sys.modules[__name__], "pass",
                  f"README.md, submission.json, {len(sub.logs)} log(s) and train_gpt.py are present (track {track}).",
                  evidence=ev)
