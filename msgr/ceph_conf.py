"""Reading a ceph.conf the way Ceph reads it.

The format (Ceph's ConfFile): ``[section]`` headings, ``key = value`` lines, comments from ``#``
or ``;`` to the end of a line, values optionally in single or double quotes, a backslash escapes the
next character and a backslash at the end of a line continues it. Keys are normalised as Ceph does
(surrounding blanks dropped, each run of blanks inside becomes one ``_``; pymsgr also maps ``-`` to
``_``, which Ceph 16 accepts on its command line only). A key repeated in a section: the last wins.

For an entity ``type.id`` the sections apply in the order ``[global]``, ``[type]``,
``[type.id]``, the later overriding the earlier. ``$cluster``, ``$type``, ``$id``, ``$name``,
``$host``, ``$pid`` and ``$<option>`` in values are expanded as Ceph expands them.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from msgr.errors import ConfigError

_BLANKS = re.compile(r"[ \t]+")
_META = re.compile(r"\$(\{[a-z_]+\}|[a-z_]+)")


def normalize_key(key: str) -> str:
    """``"ms tcp  nodelay"``, ``"ms_tcp_nodelay"``, ``"ms-tcp-nodelay"`` -> ``"ms_tcp_nodelay"``."""
    return _BLANKS.sub("_", key.strip()).replace("-", "_")


def _unescape_value(raw: str, where: str) -> str:
    """The value part of a line: quotes, escapes and a trailing comment handled."""
    s = raw.strip()
    if s[:1] in ("'", '"'):
        quote, out, i = s[0], [], 1
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                out.append(s[i + 1])
                i += 2
                continue
            if c == quote:
                rest = s[i + 1:].strip()
                if rest and rest[0] not in "#;":
                    raise ConfigError(f"{where}: text after the closing quote: {rest!r}")
                return "".join(out)
            out.append(c)
            i += 1
        raise ConfigError(f"{where}: unterminated quoted value")
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if c in "#;":
            break
        out.append(c)
        i += 1
    return "".join(out).strip()


def _strip_comment(line: str) -> str:
    """``line`` up to an unescaped ``#`` or ``;`` (for headings and key-only checks)."""
    i = 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] in "#;":
            return line[:i]
        i += 1
    return line


def parse_conf_text(text: str, source: str = "<ceph.conf>") -> dict[str, dict[str, str]]:
    """``{section: {normalised key: value}}``; a malformed line is a :class:`ConfigError`."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    lines = text.splitlines()
    lineno = 0
    while lineno < len(lines):
        start = lineno + 1
        line = lines[lineno]
        lineno += 1
        while line.endswith("\\") and not line.endswith("\\\\") and lineno < len(lines):
            line = line[:-1] + lines[lineno]   # a continued line
            lineno += 1
        where = f"{source}:{start}"
        body = _strip_comment(line).strip()
        if not body:
            continue
        if body.startswith("["):
            if not body.endswith("]") or len(body) < 3:
                raise ConfigError(f"{where}: bad section heading {line.strip()!r}")
            current = sections.setdefault(body[1:-1].strip(), {})
            continue
        key, _, value = line.partition("=")
        if "=" not in body or not key.strip() or "[" in key:
            raise ConfigError(f"{where}: expected 'key = value', got {line.strip()!r}")
        if current is None:
            raise ConfigError(f"{where}: {key.strip()!r} is outside any [section]")
        current[normalize_key(key)] = _unescape_value(value, where)
    return sections


def read_conf(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{os.fspath(path)}: not UTF-8 text ({exc.reason})") from exc
    return parse_conf_text(text, os.fspath(path))


def sections_for(name: str) -> list[str]:
    """The sections that apply to entity ``name``, weakest first: global, type, type.id."""
    order = ["global"]
    etype = name.split(".", 1)[0]
    if etype:
        order.append(etype)
    if name != etype:
        order.append(name)
    return order


def merged_options(sections: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """The raw string value of every key that applies to entity ``name``."""
    out: dict[str, str] = {}
    for section in sections_for(name):
        out.update(sections.get(section, {}))
    return out


def expand_metavariables(value: str, name: str, options: dict[str, str],
                         cluster: str = "ceph") -> str:
    """``$cluster``, ``$type``, ``$id``, ``$name``, ``$host``, ``$pid`` and ``$option`` expanded."""
    etype, _, eid = name.partition(".")
    fixed = {"cluster": cluster, "type": etype, "id": eid, "name": name,
             "host": socket.gethostname().split(".")[0], "pid": str(os.getpid())}

    def expand(text: str, depth: int) -> str:
        def one(m: re.Match[str]) -> str:
            var = m.group(1).strip("{}")
            if var in fixed:
                return fixed[var]
            if var in options and depth < 8:
                return expand(options[var], depth + 1)
            return m.group(0)
        return _META.sub(one, text)
    return expand(value, 0)
