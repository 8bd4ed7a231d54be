"""Test-wide settings and the fixtures every test shares.

One torch thread, and OpenMP threads that sleep rather than spin while they wait: the test
machines are small and shared, and spinning oneDNN threads made a 2-thread run on a busy
2-core machine up to fifteen times slower than a 1-thread run. Results do not depend on it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Each test starts on one torch thread, and whatever a test or a command it runs sets
    (``--threads``, a thread-count test) is undone after it: tiny models on a busy 2-core
    machine run up to ten times faster on one thread than on two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
