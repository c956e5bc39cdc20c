"""The seven reproduction cases of the end-to-end test, as uploadable records folders.

Every case is the runner tests' tiny submission (tests/worker/tiny_submission/train_gpt.py)
specialised to one MODE: the `MODE == "..."` tests are folded to constants and the dead branches
dropped, so each folder holds only its own behaviour, as a real submission would. Without that,
the static rules would see every mode's code in each script (e.g. flag the legal run's TTT for
the `train_first` branch it never takes) and the verdict could not tell the cases apart.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.worker.test_reproduce_runs import TINY


class _FoldMode(ast.NodeTransformer):
    """Partial evaluation of `MODE` (a string constant) in comparisons, and/or, if and x-if-else."""

    def __init__(self, mode: str):
        self.mode = mode

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if (isinstance(node.left, ast.Name) and node.left.id == "MODE" and len(node.ops) == 1
                and isinstance(node.comparators[0], ast.Constant)
                and isinstance(node.ops[0], (ast.Eq, ast.NotEq))):
            same = node.comparators[0].value == self.mode
            return ast.Constant(same if isinstance(node.ops[0], ast.Eq) else not same)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        absorbing = not isinstance(node.op, ast.And)      # False absorbs `and`, True absorbs `or`
        rest = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, bool):
                if v.value is absorbing:
                    return ast.Constant(absorbing)
                continue                                  # the neutral constant drops out
            rest.append(v)
        if not rest:
            return ast.Constant(not absorbing)
        return rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest)

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant) and isinstance(node.test.value, bool):
            return node.body if node.test.value else node.orelse
        return node

    def visit_If(self, node: ast.If):  # noqa: ANN201 - a node, a list of nodes or None
        self.generic_visit(node)
        if isinstance(node.test, ast.Constant) and isinstance(node.test.value, bool):
            kept = node.body if node.test.value else node.orelse
            return kept or None
        return node


def specialise(source: str, mode: str) -> str:
    """`source` with every `MODE == / != "<x>"` decided for `mode` and dead branches removed."""
    tree = _FoldMode(mode).visit(ast.parse(source))
    # a block emptied by the folding needs a statement to stay valid Python
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if field == "body" and isinstance(block, list) and not block:
                block.append(ast.Pass())
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


@dataclass(frozen=True)
class Case:
    """One submission: its MODE, the README's extra env, and what the verdict must say."""
    key: str
    mode: str
    rule: str                    # the rule the reproduced run decides
    outcome: str                 # that rule's expected outcome in the final verdict
    source: str                  # the evidence source that must carry the decision (trace | run)
    says: str                    # a fragment that evidence must contain
    run_status: str              # the stored run's status
    env: str = ""

    def folder(self, root: Path, marker: str = "") -> Path:
        sub = root / f"2026-05-01_Tiny_{self.key}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "train_gpt.py").write_text(specialise(TINY.read_text(), self.mode))
        env = self.env.format(marker=marker)
        (sub / "README.md").write_text(f"# tiny {self.key}\n\n```bash\nMODE={self.mode} ITERATIONS=12 "
                                       f"{env}python train_gpt.py\n```\n")
        return sub


CASES = [
    Case("a_legal", "legal", "network-access", "pass", "trace", "no network attempt", "ok"),
    Case("b_train_first", "train_first", "ttt-score-first", "fail", "trace", "not yet scored", "ok"),
    Case("c_rescore", "rescore", "ttt-score-first", "fail", "trace", "already trained on", "ok"),
    Case("d_val_in_train", "val_in_train", "validation-in-training", "fail", "trace",
         "fineweb_val_000000.bin", "ok"),
    Case("e_socket", "socket", "network-access", "fail", "trace", "example.com", "ok"),
    Case("f_overrun", "hang", "reproduction-matches-claims", "needs_review", "run", "run timeout",
         "timeout", env="HANG_MARKER={marker} "),
    Case("g_crash", "crash", "reproduction-matches-claims", "needs_review", "run", "run crashed",
         "crashed"),
]
