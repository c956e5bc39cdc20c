"""Static analysis of a submission's training script, shared by the code rules (PG204, PG401–PG408).

- `index`   — AST index: functions, classes, call sites, loops, no-grad regions, if-guards (cached)
- `env`     — env-controlled switches resolved under the logged configuration
- `taint`   — which values derive from validation data (light def-use)
- `flow`    — entry point, end of the training loop, evaluation-phase reachability
- `ttt`     — score-first / train-before-score shape of test-time training
- `program` — all of the above for one script, plus the rule gate (no script / syntax error)
"""
from __future__ import annotations

from .env import UNKNOWN, Switches, env_call, truthy
from .index import ModuleIndex, ParseFailure, call_name, dotted, get_index, walk_own
from .program import Program, other_sources, program_for

__all__ = ["UNKNOWN", "ModuleIndex", "ParseFailure", "Program", "Switches", "call_name", "dotted",
           "env_call", "get_index", "other_sources", "program_for", "truthy", "walk_own"]
