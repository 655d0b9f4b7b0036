"""Fuzz profiles: MSGR_FUZZ_PROFILE=ci (default, short, part of `make test`) or long (`make fuzz`).

Not a conftest.py: a second module named ``conftest`` would shadow tests/conftest.py for the tests
that import helpers from it. tests/conftest.py prints ``COUNTS`` at the end of a run."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("MSGR_FUZZ_PROFILE", "ci")
LONG = PROFILE == "long"
_common = dict(deadline=None, derandomize=not LONG, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("msgr-fuzz-ci", max_examples=40, **_common)
settings.register_profile("msgr-fuzz-long", max_examples=60_000, **_common)
FUZZ_SETTINGS = settings.get_profile("msgr-fuzz-long" if LONG else "msgr-fuzz-ci")

#: what the runs did, printed at the end (issue 7 asks for the counts of a long run)
COUNTS: dict[str, int] = {}


def count(key: str, n: int = 1) -> None:
    COUNTS[key] = COUNTS.get(key, 0) + n
