"""Seeds derived from the run seed, one independent stream per purpose.

Every random stream of a run (model initialisation, the per-micro-batch torch seed, collation, the
sampler) is seeded from the one run seed mixed with integers naming the purpose and position, so
no two streams share entropy and none depends on how much randomness was drawn before it.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
