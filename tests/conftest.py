"""Shared test configuration: where ../shared is (tests read fixtures from there, never copies)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PGOLF_SHARED", REPO.parent / "shared")).resolve()
RECORDS = SHARED / "fixtures" / "records"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}")
    return SHARED
