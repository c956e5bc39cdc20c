"""`pgolf-audit token` — manage API tokens (only their sha256 is stored; the plaintext is printed
once, at creation).

  pgolf-audit token create NAME --role submit|admin
  pgolf-audit token list
  pgolf-audit token revoke NAME
"""
from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import IntegrityError

from store import repo
from store.db import migrate, session_scope
from store.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgolf-audit token", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name")
    create.add_argument("--role", choices=repo.ROLES, default="submit")
    sub.add_parser("list", help="list tokens (names and roles, never the tokens)")
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    args = parser.parse_args(argv)

    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.database_url)
    if args.cmd == "create":
        try:
            with session_scope(settings.database_url) as s:
                _tok, plaintext = repo.create_token(s, args.name, args.role)
        except IntegrityError:
            print(f"pgolf-audit token: a token named {args.name!r} already exists", file=sys.stderr)
            return 3
        print(plaintext)
        print(f"created {args.role} token {args.name!r}; it is shown only now", file=sys.stderr)
        return 0
    if args.cmd == "list":
        with session_scope(settings.database_url) as s:
            for t in repo.list_tokens(s):
                state = "revoked" if t.revoked else "active"
                print(f"{t.name}\t{t.role}\t{state}\t{t.created_at.isoformat()}")
        return 0
    with session_scope(settings.database_url) as s:
        if not repo.revoke_token(s, args.name):
            print(f"pgolf-audit token: no token named {args.name!r}", file=sys.stderr)
            return 3
    print(f"revoked {args.name!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
