"""Helpers for tests (import as ``from tests.support import require``)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip locally when ``condition`` is false; fail under CI, where everything must exist."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)
