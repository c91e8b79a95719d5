"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from tests.notebook_runner import Reader


@pytest.fixture(scope="session")
def reader():
    """One reader's kernel per test process: each run starts from an empty namespace (see
    Reader), so scenario after scenario pays for no new kernel and no new `import anthropic`."""
    with Reader() as kernel:
        yield kernel
