"""The hostile suite's seed: random per run, printed in the header, fixed by HOSTILE_SEED."""

from __future__ import annotations

import os
import random

SEED = int(os.environ.get("HOSTILE_SEED") or random.SystemRandom().randrange(2**32))


def pytest_report_header() -> str:
    return f"hostile-peer suite: HOSTILE_SEED={SEED} (set it to replay a run)"
