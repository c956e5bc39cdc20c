"""The leaderboard frontier: which row a submission must beat, with that row's per-seed val_bpb.

The data file `rules/data/frontier.json` is built by `scripts/build_frontier.py` from the README
leaderboard (../shared/fixtures/leaderboard.json) and the merged record folders; rebuild it when
the leaderboard changes.

Which row is the baseline (rules.md Rule 4: "each row is compared with the previous frontier
row", records accepted "chronologically depending on their PR creation time"):
1. `comparison_baseline_pr` in submission.json, when that PR is a row;
2. otherwise the best (lowest val_bpb) record row that precedes the submission: by PR number
   when both PR numbers are known, else by date (strictly earlier). The submission's own row,
   when it is on the leaderboard (matched by folder name or PR), is never its own baseline;
3. with neither a date nor a PR, the best record row overall.
`base_pr` names the code a submission builds on (2026-04-09_A2 says base_pr 1394 while its README
compares with #1493), so it picks the row only when no chronological row exists; otherwise the
reason sentence mentions it.
`explain_baseline` also returns the chronological row when an explicit one was chosen, so a report
can show both.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "frontier.json"
_DATE = re.compile(r"^(\d{4})[-_](\d{2})[-_](\d{2})")
_PR = re.compile(r"(\d{2,6})")


@dataclass
class FrontierRow:
    track: str                      # "record" | "non_record"
    run: str
    val_bpb: float
    author: str | None
    date: str | None                # YYYY-MM-DD
    pr: int | None
    folder: str | None              # record folder name when known
    seeds: list[float] = field(default_factory=list)
    seed_ids: list[str] = field(default_factory=list)
    seeds_source: str | None = None
    nats_per_bpb: float | None = None
    no_seeds_reason: str | None = None
    pr_source: str | None = None
    folder_match: str | None = None

    @property
    def name(self) -> str:
        return f"PR #{self.pr} {self.run}" if self.pr else self.run


@dataclass
class BaselineChoice:
    row: FrontierRow | None
    reason: str                     # one sentence: why this row (or why none)
    chronological: FrontierRow | None = None


def _parse_pr(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        m = _PR.search(value)
        return int(m.group(1)) if m else None
    return None


def _parse_date(value: Any) -> str | None:
    if isinstance(value, str):
        m = _DATE.match(value.strip())
        if m:
            return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    return None


class Frontier:
    def __init__(self, rows: list[FrontierRow]):
        self.rows = rows

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Frontier":
        data = json.loads(Path(path or DATA_FILE).read_text())
        rows = []
        for r in data.get("rows", []):
            rows.append(FrontierRow(
                track=r.get("track", "record"), run=r.get("run", ""), val_bpb=float(r["val_bpb"]),
                author=r.get("author"), date=_parse_date(r.get("date")), pr=_parse_pr(r.get("pr")),
                folder=r.get("folder"), seeds=[float(x) for x in r.get("seeds") or []],
                seed_ids=[str(x) for x in r.get("seed_ids") or []], seeds_source=r.get("seeds_source"),
                nats_per_bpb=r.get("nats_per_bpb"), no_seeds_reason=r.get("no_seeds_reason"),
                pr_source=r.get("pr_source"), folder_match=r.get("folder_match"),
            ))
        return cls(rows)

    # -- lookups --------------------------------------------------------------------------
    @property
    def record_rows(self) -> list[FrontierRow]:
        return [r for r in self.rows if r.track == "record"]

    def by_pr(self, pr: int | str | None) -> FrontierRow | None:
        n = _parse_pr(pr)
        if n is None:
            return None
        for r in self.rows:
            if r.pr == n:
                return r
        return None

    def by_folder(self, folder: str | None) -> FrontierRow | None:
        if not folder:
            return None
        name = Path(folder).name
        for r in self.rows:
            if r.folder == name:
                return r
        return None

    def best(self) -> FrontierRow | None:
        rows = self.record_rows
        return min(rows, key=lambda r: r.val_bpb) if rows else None

    # -- the baseline ---------------------------------------------------------------------
    def baseline_for(self, submission: Any) -> FrontierRow | None:
        """The row `submission` must beat (see the module docstring), or None."""
        return self.explain_baseline(submission).row

    def explain_baseline(self, submission: Any) -> BaselineChoice:
        meta = getattr(submission, "submission_json", None)
        if meta is None and isinstance(submission, dict):
            meta = submission
        meta = meta if isinstance(meta, dict) else {}
        folder = getattr(submission, "name", None)
        own = self.by_folder(folder)
        own_pr = _parse_pr(meta.get("pr")) or (own.pr if own else None)
        own_date = _parse_date(meta.get("date")) or _parse_date(folder or "") or (own.date if own else None)
        chrono, chrono_reason = self._chronological(own, own_pr, own_date)

        pr = _parse_pr(meta.get("comparison_baseline_pr"))
        row = self.by_pr(pr)
        if row is not None and row is not own:
            return BaselineChoice(row, f"submission.json names PR #{pr} (comparison_baseline_pr) as its baseline.",
                                  chrono)
        pr = _parse_pr(meta.get("base_pr"))
        row = self.by_pr(pr)
        if row is not None and row is not own:
            if chrono is None:
                return BaselineChoice(row, f"submission.json names PR #{pr} (base_pr) as its base.", chrono)
            if row is not chrono:
                chrono_reason += (f" Its base_pr #{pr} names the code it builds on, not the row it must beat "
                                  "(rows are compared with the previous frontier row, #1902).")
        return BaselineChoice(chrono, chrono_reason, chrono)

    def _chronological(self, own: FrontierRow | None, own_pr: int | None,
                       own_date: str | None) -> tuple[FrontierRow | None, str]:
        rows = [r for r in self.record_rows if r is not own]
        if own_pr is None and own_date is None:
            best = min(rows, key=lambda r: r.val_bpb) if rows else None
            return best, "The submission has no date or PR number, so the best leaderboard row is the baseline."

        def precedes(r: FrontierRow) -> bool:
            if own_pr is not None and r.pr is not None:
                return r.pr < own_pr
            if own_date is not None and r.date is not None:
                return r.date < own_date
            return False

        earlier = [r for r in rows if precedes(r)]
        if not earlier:
            return None, "No leaderboard record row precedes the submission."
        best = min(earlier, key=lambda r: r.val_bpb)
        when = f"PR #{own_pr}" if own_pr is not None else own_date
        return best, f"{best.name} is the best record row before the submission ({when})."


_DEFAULT: Frontier | None = None


def load_frontier(path: str | Path | None = None) -> Frontier:
    """The packaged frontier (cached), or the one at `path`."""
    global _DEFAULT
    if path is not None:
        return Frontier.load(path)
    if _DEFAULT is None:
        _DEFAULT = Frontier.load()
    return _DEFAULT
