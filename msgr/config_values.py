"""Option values written as strings, parsed by Ceph's rules (as Ceph 16 parses its options).

- booleans: ``true``/``false`` in any case, or a decimal integer (non-zero is true), as Ceph;
  pymsgr also takes ``yes``/``no``/``on``/``off`` (Ceph 16 ignores those with a warning).
- integers: decimal with an optional SI suffix ``K M G T P E`` (powers of 1000), as Ceph's int
  options (``1K`` is 1000; lower case and ``Ki`` are refused).
- sizes: decimal with an optional IEC suffix ``K M G T P E`` (powers of 1024), optionally followed
  by ``i`` or ``B``: ``4K`` = ``4Ki`` = ``4KB`` = 4096, ``100M``, ``1G``; ``B`` alone means bytes.
  ``4KiB``, lower case units and fractions are refused, as Ceph refuses them.
- durations: seconds as a number (fractions allowed), or Ceph's time spans: ``30s``, ``5m``,
  ``1h30m``, ``2 days``, ``1w`` (units s/sec/second(s), m/min/minute(s), h/hr/hour(s),
  d/day(s), w/wk/week(s), mo/month(s), y/yr/year(s); a bare trailing number is seconds).
- debug levels: ``N`` or ``N/M`` (log level / in-memory gather level), as Ceph's ``debug_*``.

Every parser raises :class:`ValueError` with a message naming what was wrong.
"""
from __future__ import annotations

import math
import re

_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}

_SI = {"K": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_IEC = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
_INT_RE = re.compile(r"[+-]?[0-9]+")

_SPAN_UNITS: dict[str, int] = {}
for _seconds, _names in ((1, "s sec second seconds"), (60, "m min minute minutes"),
                         (3600, "h hr hour hours"), (86400, "d day days"),
                         (7 * 86400, "w wk week weeks"), (30 * 86400, "mo month months"),
                         (365 * 86400, "y yr year years")):
    for _n in _names.split():
        _SPAN_UNITS[_n] = _seconds
_SPAN_RE = re.compile(r"\s*([0-9]+)\s*([a-z]*)\s*")


def parse_bool(text: str) -> bool:
    s = text.strip()
    low = s.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    if _INT_RE.fullmatch(s):
        return int(s) != 0
    raise ValueError(f"not a boolean: {text!r} (true/false, yes/no, on/off or an integer)")


def _split_number(text: str, kind: str) -> tuple[int, str]:
    s = text.strip()
    m = re.match(r"[+-]?[0-9]+", s)
    if m is None:
        raise ValueError(f"not {kind}: {text!r}")
    return int(m.group()), s[m.end():]


def parse_int(text: str) -> int:
    """A decimal integer with an optional SI suffix (``2K`` = 2000), as Ceph's int options."""
    n, unit = _split_number(text, "an integer")
    if not unit:
        return n
    if unit not in _SI:
        raise ValueError(f"not an integer: {text!r} (unit {unit!r}: use K, M, G, T, P or E)")
    return n * int(10 ** _SI[unit])


def parse_size(text: str) -> int:
    """A byte count with an optional IEC suffix (``4K`` = 4096, ``100M``, ``1G``), as Ceph's sizes."""
    n, unit = _split_number(text, "a size")
    if n < 0:
        raise ValueError(f"a size must not be negative: {text!r}")
    if not unit:
        return n
    head, tail = unit[0], unit[1:]
    if head == "B" and not tail:
        return n
    if head in _IEC and tail in ("", "i", "B"):
        return n << _IEC[head]
    raise ValueError(f"not a size: {text!r} (units: B, K, M, G, T, P, E, optionally followed "
                     f"by i or B, e.g. 4K, 100Mi, 1GB)")


def parse_float(text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {text!r}")
    return v


def parse_secs(text: str) -> float:
    """Seconds: a plain number (``0.2``) or a Ceph time span (``30s``, ``1h30m``, ``2 days``)."""
    try:
        return parse_float(text)
    except ValueError:
        pass
    s = text.strip()
    total, pos = 0, 0
    if not s:
        raise ValueError("not a duration: empty")
    while pos < len(s):
        m = _SPAN_RE.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"not a duration: {text!r} (e.g. 0.5, 30s, 5m, 1h30m, 2 days)")
        number, unit = m.groups()
        if unit and unit not in _SPAN_UNITS:
            raise ValueError(f"not a duration: {text!r} (unknown unit {unit!r})")
        if not unit and m.end() != len(s):
            raise ValueError(f"not a duration: {text!r}")
        total += int(number) * _SPAN_UNITS.get(unit, 1)
        pos = m.end()
    return float(total)


def parse_debug_level(text: str) -> tuple[int, int]:
    """``"N"`` or ``"N/M"`` -> (log level, gather level); ``"N"`` gathers at N as Ceph does."""
    parts = text.strip().split("/")
    if len(parts) > 2 or not all(_INT_RE.fullmatch(p.strip()) for p in parts):
        raise ValueError(f"not a debug level: {text!r} (N or N/M, e.g. 1 or 1/5)")
    log = int(parts[0])
    gather = int(parts[-1])
    if log < 0 or gather < 0:
        raise ValueError(f"a debug level must not be negative: {text!r}")
    return log, gather


def format_float(v: float) -> str:
    """Floats as Ceph prints them in ``config show`` / ``config get`` (``0.200000``)."""
    return f"{v:.6f}"
