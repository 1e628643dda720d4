"""Shared test fixtures. Reference fixtures live in ../shared/fixtures and tests fail (never skip) without them."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"


def fixture_path(name: str) -> Path:
    """Path of a reference fixture; raises (so the test fails) when it is missing."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"reference fixture missing: {path} (the parity tests need ../shared/fixtures)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES_DIR.is_dir():
        raise FileNotFoundError(f"reference fixtures folder missing: {FIXTURES_DIR}")
    return FIXTURES_DIR
