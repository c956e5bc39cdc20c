"""Dependencies shared by the routes: settings, a database session, the blob store, and bearer
token auth with two roles (`submit`, `admin`). Reading is open unless
`PGOLF_AUDIT_REPORTS_PUBLIC=false`."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from store import repo
from store.blobs import BlobStore
from store.db import transaction
from store.settings import Settings

from .errors import ApiError


@dataclass(frozen=True)
class Caller:
    """Who made an authenticated request (the token's name and role; never the token)."""
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with transaction(request.app.state.sessionmaker) as session:
        yield session


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _verify(request: Request, plaintext: str) -> tuple[str, str] | None:
    with request.app.state.sessionmaker() as session:
        tok = repo.verify_token(session, plaintext)
        return (tok.name, tok.role) if tok is not None else None


async def _authenticate(request: Request) -> Caller | None:
    """The caller of a request that carries a bearer token (401 if it is not a live token).
    Requests without a token cost no database work: public reads stay cheap."""
    plaintext = _bearer(request)
    if plaintext is None:
        return None
    found = await run_in_threadpool(_verify, request, plaintext)
    if found is None:
        raise ApiError(401, "invalid_token", "The bearer token is unknown or revoked.",
                       {"WWW-Authenticate": "Bearer"})
    return Caller(*found)


async def require_reader(request: Request) -> Caller | None:
    tok = await _authenticate(request)
    if tok is None and not request.app.state.settings.reports_public:
        raise ApiError(401, "token_required", "Reading reports needs a bearer token here.",
                       {"WWW-Authenticate": "Bearer"})
    return tok


async def require_submitter(request: Request) -> Caller | None:
    tok = await _authenticate(request)
    if tok is None and request.app.state.settings.submit_requires_token:
        raise ApiError(401, "token_required",
                       "Submitting needs a bearer token (pgolf-audit token create NAME --role submit).",
                       {"WWW-Authenticate": "Bearer"})
    return tok


async def require_admin(request: Request) -> Caller:
    tok = await _authenticate(request)
    if tok is None:
        raise ApiError(401, "token_required", "This action needs an admin bearer token.",
                       {"WWW-Authenticate": "Bearer"})
    if tok.role != "admin":
        raise ApiError(403, "admin_required", "This action needs an admin token.")
    return tok


ReaderDep = Annotated[Caller | None, Depends(require_reader)]
SubmitterDep = Annotated[Caller | None, Depends(require_submitter)]
AdminDep = Annotated[Caller, Depends(require_admin)]
