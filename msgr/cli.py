"""The ``python -m msgr`` subcommands: ``probe`` (msgr.probe) and ``bench`` (bench.harness)."""
from __future__ import annotations

import sys

USAGE = "usage: python -m msgr {probe,bench} [...]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "probe":
        from msgr.probe import run_probe
        return run_probe(rest)
    if cmd == "bench":
        try:
            from bench import harness  # the repo's bench/ package (run from the checkout)
        except ModuleNotFoundError as exc:
            print(f"python -m msgr bench: the bench package is not importable ({exc}); "
                  "run from the repository root", file=sys.stderr)
            return 2
        return int(harness.main(rest) or 0)
    print(f"python -m msgr: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
    return 2
