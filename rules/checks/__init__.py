"""One module per rule. Each module has a docstring (its documentation), `ID`, `CODE`, `TITLE`
and `check(ctx) -> RuleResult`; its must-fire / must-not-fire fixtures live in
`rules/checks/fixtures/<module name>/{fire,pass}/<case>/` with an `expect.json`."""
from __future__ import annotations

import importlib
from types import ModuleType

# verdict.md order; the ids and codes are a contract
RULE_MODULES: list[str] = [
    "package_layout",             # PG101 package-layout
    "claims_match_logs",          # PG102 claims-match-logs
    "artifact_size",              # PG201 artifact-size
    "train_time",                 # PG202 train-time
    "eval_time",                  # PG203 eval-time
    "calibration_within_budget",  # PG204 calibration-within-budget
    "seed_statistics",            # PG301 seed-statistics
    "ttt_score_first",            # PG401 ttt-score-first
    "ngram_target_in_key",        # PG402 ngram-target-in-key
    "two_pass_rescore",           # PG403 two-pass-rescore
    "gptq_on_validation",         # PG404 gptq-on-validation
    "validation_in_training",     # PG405 validation-in-training
    "normalized_distribution",    # PG406 normalized-distribution
    "byte_accounting",            # PG407 byte-accounting
    "network_access",             # PG408 network-access
]


def load_rules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{m}") for m in RULE_MODULES]
