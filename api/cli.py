"""`pgolf-audit` — the command line. Sub-commands import their module lazily so `check` stays fast.

  check PATH [--policy P] [--json | --markdown]   static audit (exit 0 pass, 1 fail, 2 needs_review, 3 bad input)
  demo                                            the README's main job on embedded defaults
  serve [--port N]                                API + worker on embedded defaults
  worker                                          a Celery worker against the configured broker
  token create NAME --role submit|admin           create an API token (printed once)
  reproduce PATH --seeds ... --nproc N            run the submission's seeds locally in the sandbox
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "check": "rules.cli:main",
    "demo": "api.demo:main",
    "serve": "api.serve:main",
    "worker": "worker.cli:worker_main",
    "token": "api.tokens:main",
    "reproduce": "worker.reproduce:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    target = COMMANDS.get(cmd)
    if target is None:
        print(f"pgolf-audit: unknown command {cmd!r} (try --help)", file=sys.stderr)
        return 3
    mod_name, func = target.split(":")
    fn = getattr(importlib.import_module(mod_name), func)
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
