"""Ceph keys: ``CryptoKey`` (binary and base64) and keyring files as ``ceph-authtool`` writes them.

A ``CryptoKey`` encodes as u16 type (1 = AES, 0 = none), ``utime_t``
created, u16 secret length, secret bytes; the ``key = ...`` of a keyring is
that encoding in base64 (28 bytes for an AES key). A keyring is an ini-like
text: ``[client.admin]`` sections holding ``key = <base64>`` and
``caps <service> = "<caps>"`` lines (tabs, spaces, ``#``/``;`` comments).
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from msgr.auth.crypto import AES_KEY_LEN
from msgr.auth.errors import KeyringError
from msgr.encoding import AuthEntityName, Decoder, Encoder, Utime
from msgr.entity import EntityName
from msgr.errors import DecodeError

__all__ = ["CryptoKey", "Keyring", "KeyringEntry", "parse_entity_name", "CRYPTO_NONE", "CRYPTO_AES"]

CRYPTO_NONE = 0
CRYPTO_AES = 1

_TYPE_BY_NAME = {v: k for k, v in ((1, "mon"), (2, "mds"), (4, "osd"), (8, "client"),
                                   (16, "mgr"), (0x20, "auth"))}


def parse_entity_name(text: str) -> AuthEntityName:
    """``client.admin`` / ``mon.`` / ``osd.0`` -> :class:`AuthEntityName` (type + id)."""
    typ, dot, ident = text.partition(".")
    if not dot or typ not in _TYPE_BY_NAME:
        raise KeyringError(f"entity name {text!r} is not TYPE.ID with TYPE one of "
                           f"{', '.join(sorted(_TYPE_BY_NAME))}")
    return AuthEntityName(_TYPE_BY_NAME[typ], ident)


def entity_name_str(name: AuthEntityName) -> str:
    return f"{EntityName.type_name(name.type)}.{name.id}"


@dataclass(frozen=True, slots=True)
class CryptoKey:
    """A Ceph secret: type, creation time and the raw secret (16 bytes for AES)."""

    secret: bytes
    type: int = CRYPTO_AES
    created: Utime = Utime()

    def __post_init__(self) -> None:
        if self.type == CRYPTO_AES and len(self.secret) != AES_KEY_LEN:
            raise KeyringError(f"AES key of {len(self.secret)} bytes (Ceph's are {AES_KEY_LEN})")
        if self.type not in (CRYPTO_AES, CRYPTO_NONE):
            raise KeyringError(f"crypto key type {self.type} is not AES (1) or none (0)")

    @classmethod
    def generate(cls, now: float | None = None) -> CryptoKey:
        t = time.time() if now is None else now
        return cls(os.urandom(AES_KEY_LEN), CRYPTO_AES, Utime(int(t), int((t % 1) * 1e9)))

    def encode_into(self, e: Encoder) -> Encoder:
        return e.u16(self.type).utime(self.created).u16(len(self.secret)).raw(self.secret)

    def encode(self) -> bytes:
        return self.encode_into(Encoder()).getvalue()

    @classmethod
    def decode_from(cls, d: Decoder) -> CryptoKey:
        typ = d.u16()
        created = d.utime()
        n = d.u16()
        secret = d.raw(n)
        try:
            return cls(secret, typ, created)
        except KeyringError as exc:
            raise DecodeError(f"CryptoKey: {exc}") from None

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> CryptoKey:
        d = Decoder(buf, what="CryptoKey")
        key = cls.decode_from(d)
        if not d.at_end():
            raise DecodeError(f"CryptoKey: {d.remaining()} bytes after the key")
        return key

    @classmethod
    def from_base64(cls, text: str) -> CryptoKey:
        """The ``key = ...`` form of a keyring (also ``ceph-authtool -p``'s output)."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyringError(f"key is not base64: {exc}") from None
        try:
            return cls.decode(raw)
        except DecodeError as exc:
            raise KeyringError(f"key does not decode as a CryptoKey: {exc}") from None

    def to_base64(self) -> str:
        return base64.b64encode(self.encode()).decode()

    def __repr__(self) -> str:  # never print the secret
        return (f"CryptoKey(type={self.type}, created={self.created.sec}, "
                f"secret=<{len(self.secret)} bytes>)")


@dataclass(slots=True)
class KeyringEntry:
    name: str
    key: CryptoKey | None = None
    caps: dict[str, str] = field(default_factory=dict)


_SECTION = re.compile(r"^\[\s*([^\]]+?)\s*\]$")
_OPTION = re.compile(r"^([A-Za-z0-9_ .-]+?)\s*=\s*(.*)$")


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


class Keyring:
    """Entities and their keys, read from a keyring file or text."""

    def __init__(self, entries: dict[str, KeyringEntry] | None = None) -> None:
        self.entries: dict[str, KeyringEntry] = dict(entries or {})

    @classmethod
    def parse(cls, text: str, source: str = "keyring") -> Keyring:
        entries: dict[str, KeyringEntry] = {}
        cur: KeyringEntry | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            m = _SECTION.match(line)
            if m:
                cur = entries.setdefault(m.group(1), KeyringEntry(m.group(1)))
                continue
            m = _OPTION.match(line)
            if not m:
                raise KeyringError(f"{source}:{lineno}: cannot parse {raw!r}")
            if cur is None:
                raise KeyringError(f"{source}:{lineno}: {m.group(1)!r} before any [entity] section")
            opt = " ".join(m.group(1).replace("_", " ").split())
            value = m.group(2)
            if opt == "key":
                try:
                    cur.key = CryptoKey.from_base64(_unquote(value))
                except KeyringError as exc:
                    raise KeyringError(f"{source}:{lineno}: [{cur.name}] {exc}") from None
            elif opt.startswith("caps "):
                cur.caps[opt[5:]] = _unquote(value)
            # other options (auid, ...) are kept by Ceph but mean nothing to a client
        return cls(entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {os.fspath(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise KeyringError(f"keyring {os.fspath(path)!r} is not text") from None
        return cls.parse(text, os.fspath(path))

    def add(self, name: str, key: CryptoKey, caps: dict[str, str] | None = None) -> None:
        self.entries[name] = KeyringEntry(name, key, dict(caps or {}))

    def names(self) -> list[str]:
        return list(self.entries)

    def get_key(self, name: str | AuthEntityName) -> CryptoKey:
        """The key of ``name``; :class:`KeyringError` if the keyring has none."""
        text = name if isinstance(name, str) else entity_name_str(name)
        entry = self.entries.get(text)
        if entry is None or entry.key is None:
            have = ", ".join(self.entries) or "no entities"
            raise KeyringError(f"keyring has no key for {text} (it has {have})")
        return entry.key

    def to_text(self) -> str:
        """The ``ceph-authtool`` layout (tab-indented, quoted caps)."""
        out = []
        for e in self.entries.values():
            out.append(f"[{e.name}]")
            if e.key is not None:
                out.append(f"\tkey = {e.key.to_base64()}")
            out.extend(f'\tcaps {svc} = "{cap}"' for svc, cap in sorted(e.caps.items()))
        return "\n".join(out) + "\n"
