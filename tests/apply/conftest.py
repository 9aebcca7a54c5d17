"""Shared fixtures of the apply tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import apply_programs  # noqa: E402


@pytest.fixture(scope="session")
def programs() -> dict[str, apply_programs.Program]:
    """The test programs, compiled once per session."""
    return {name: apply_programs.build(name) for name in apply_programs.BUILDERS}
