"""Fixtures of the CNI plugin tests: which binaries can run here."""
import os

import pytest

from cnirun import OURS, REFERENCE


@pytest.fixture
def ours():
    if not os.access(OURS, os.X_OK):
        pytest.skip(f"{OURS} is not installed (pip install -e . creates it)")
    return OURS


@pytest.fixture
def reference():
    if not os.access(REFERENCE, os.X_OK):
        pytest.skip("the reference plugins are not installed (Debian containernetworking-plugins)")
    return REFERENCE
