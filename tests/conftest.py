"""Test-wide settings.

One torch thread, and OpenMP threads that sleep rather than spin while they wait: the test
machines are small and shared, and spinning oneDNN threads made a 2-thread run on a busy
2-core machine up to fifteen times slower than a 1-thread run. Results do not depend on it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP

import torch

torch.set_num_threads(1)
