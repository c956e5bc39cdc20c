"""Rule-set policies: which reading of the significance rule decides a verdict.

The competition has two readings of "a record must beat the frontier" (rules.md, Rule 4):

* `readme-2026-03` — the README text as launched (commit a15093ada, 2026-03-18): beat the
  existing SOTA by at least 0.005 nats at p < 0.01. The margin is in nats per token, so it is
  converted to bits per byte with the submission's own val_loss / val_bpb ratio (tokenizers
  differ: 0.005 nats is ~0.0030 bpb for SP1024 and ~0.0019 bpb for SP8192).
* `leaderboard-2026-04` — the maintainers' practice from 2026-04-28 (#1900, #1902, #2146):
  one-sided Welch t-test on per-seed val_bpb against the *previous frontier row*, p < 0.25,
  no margin. This is what actually admitted rows since then, so it is the default.

A policy is data, never edited once published: a new ruling is a new policy id (the way
MLPerf versions its rule directories, anchors.md §4.2), so old verdicts stay reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

UNKNOWN_POLICY = "unknown_policy"


@dataclass(frozen=True)
class Policy:
    id: str
    title: str
    alpha: float                 # one-sided Welch p must be below this
    margin_nats: float           # required improvement in nats per token (0 = none)
    baseline: str                # which row the test compares with
    min_seeds: int               # seeds of one configuration a record needs
    source: str                  # where the ruling comes from (README commit, PR numbers)

    def margin_bpb(self, nats_per_bpb: float | None) -> float:
        """The margin in bits per byte, converted with the submission's own val_loss/val_bpb.

        Without a ratio (no val_loss anywhere) the SP1024 ratio 1.689 is used: the smallest
        tokenizer gives the largest bpb margin, i.e. the conservative reading."""
        if self.margin_nats <= 0:
            return 0.0
        ratio = nats_per_bpb if nats_per_bpb and nats_per_bpb > 0 else 1.689
        return self.margin_nats / ratio

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "alpha": self.alpha,
                "margin_nats": self.margin_nats, "baseline": self.baseline,
                "min_seeds": self.min_seeds, "source": self.source}


POLICIES: dict[str, Policy] = {
    p.id: p for p in (
        Policy(id="readme-2026-03",
               title="README text: p < 0.01 with a 0.005-nat margin",
               alpha=0.01, margin_nats=0.005, baseline="previous-frontier-row", min_seeds=3,
               source="README, commits a15093ada and d2bd76079 (2026-03-18/19)"),
        Policy(id="leaderboard-2026-04",
               title="Leaderboard practice: p < 0.25 against the previous frontier row, no margin",
               alpha=0.25, margin_nats=0.0, baseline="previous-frontier-row", min_seeds=3,
               source="#1900, #1902 (2026-04-28), #2146 (2026-05-02), cocohearts"),
    )
}

DEFAULT_POLICY = "leaderboard-2026-04"


def get_policy(policy: str | Policy | None = None) -> Policy:
    """The policy by id (None → the default). An unknown id is bad input (exit 3), not a crash."""
    if isinstance(policy, Policy):
        return policy
    pid = DEFAULT_POLICY if policy in (None, "") else str(policy)
    try:
        return POLICIES[pid]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise InputError(UNKNOWN_POLICY, f"unknown policy {pid!r}; known policies: {known}.") from None


def other_policies(selected: Policy) -> list[Policy]:
    return [p for p in POLICIES.values() if p.id != selected.id]
