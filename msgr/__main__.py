"""``python -m msgr ...``: the ``msgr`` command (:mod:`msgr.cli`)."""
from __future__ import annotations

import sys

from msgr.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m msgr"))
