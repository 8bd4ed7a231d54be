"""Fixtures for the data loader tests.

The real data sets live outside the repository, at ``../shared/data`` from the repository
root; a fresh clone has no such folder, and the tests that need it skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder ``../shared/data`` (skips the test when it is absent)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(
            f"real data not available: {SHARED_DATA.resolve()} does not exist "
            "(it lives outside the repository, at ../shared/data from the repository root)"
        )
    return SHARED_DATA
