"""Fixtures for the TUI tests."""

from __future__ import annotations

import pytest

from .helpers import fake_host


@pytest.fixture()
def host(catalog):  # type: ignore[no-untyped-def]
    """One RTX 4090 with 20 GiB free."""
    return fake_host(catalog)
