"""Test-wide settings.

One torch thread: the test machines are small and shared, and oneDNN's threads spin while
they wait for each other, which makes a 2-thread run on a busy 2-core machine up to ten
times slower than a 1-thread run. Results do not depend on it.
"""

import torch

torch.set_num_threads(1)
