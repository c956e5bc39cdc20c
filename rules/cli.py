"""`pgolf-audit check PATH [--policy P] [--json | --markdown]` — the static audit on the command line.

Exit codes are the contract of verdict.md: 0 pass, 1 fail, 2 needs_review, 3 the input could not be
read. Bad input prints one line on stderr, `error[<code>]: <sentence>`, and never a traceback: the
top level catches everything (a usage error too — argparse's own exit status 2 would read as
needs_review).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .errors import InputError
from .model import EXIT_BAD_INPUT, EXIT_CODES

USAGE_ERROR = "usage"
INTERNAL_ERROR = "unreadable_input"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2, which means needs_review here
        raise InputError(USAGE_ERROR, f"{message} (usage: pgolf-audit check PATH [--policy P] [--json | --markdown])")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pgolf-audit check",
                description="Audit a Parameter Golf records folder (or a zip/tar of one) against the rules.")
    p.add_argument("path", help="the records folder, or an archive of it")
    p.add_argument("--policy", default=None,
                   help="rule-set policy: leaderboard-2026-04 (default) or readme-2026-03")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the verdict JSON (verdict.md)")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown for a PR comment")
    return p


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: such numbers become null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def verdict_json(verdict) -> str:
    return json.dumps(_finite(verdict.to_json()), indent=2, ensure_ascii=False, allow_nan=False)


def _error(code: str, message: str) -> int:
    print(f"error[{code}]: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        from .engine import check
        from .render import markdown, terminal

        verdict = check(args.path, policy=args.policy)
        if args.json:
            out = verdict_json(verdict)
        elif args.markdown:
            out = markdown(verdict)
        else:
            out = terminal(verdict)
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
        sys.stdout.flush()
        return EXIT_CODES[verdict.outcome]
    except InputError as e:
        return _error(e.code, e.message)
    except KeyboardInterrupt:
        return _error("interrupted", "interrupted.")
    except BaseException as e:  # noqa: BLE001 - a user never sees a traceback
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return _error(INTERNAL_ERROR, f"the submission could not be audited ({type(e).__name__}: {detail}).")


if __name__ == "__main__":
    sys.exit(main())
