"""``python -m msgr probe|bench ...``: hands the command line to :mod:`msgr.cli`."""
from __future__ import annotations

import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m msgr {probe,bench} [...]", file=sys.stderr)
        return 0 if argv else 2
    try:
        # imported lazily: probe/bench pull in more than the library needs
        cli = importlib.import_module("msgr.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "msgr.cli":
            raise
        print("python -m msgr: the command-line module msgr.cli is not installed in this build",
              file=sys.stderr)
        return 2
    return int(cli.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
