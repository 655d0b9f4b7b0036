"""What a client's auth options (``name``, ``keyring``, ``auth_client_required``...) amount to.

:func:`client_auth` reads a :class:`~msgr.config.Config` and returns the
methods to offer a monitor, our name and, when cephx is among them and a
keyring holds our key, the key. Keyring paths are tried in order with
``$cluster``, ``$name``, ``$type`` and ``$id`` expanded, as Ceph does.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from msgr.auth.errors import KeyringError
from msgr.auth.keyring import CryptoKey, Keyring, entity_name_str, parse_entity_name
from msgr.config import Config
from msgr.encoding import AuthEntityName
from msgr.messages.auth import CEPH_AUTH_CEPHX, CEPH_AUTH_NONE

__all__ = ["ClientAuth", "client_auth", "parse_methods", "keyring_candidates"]

_METHODS = {"cephx": CEPH_AUTH_CEPHX, "none": CEPH_AUTH_NONE}


def parse_methods(text: str) -> list[int]:
    """``"cephx, none"`` -> [2, 1] (Ceph separates with commas, semicolons or blanks)."""
    out = []
    for word in re.split(r"[,;\s]+", text.strip()):
        if not word:
            continue
        if word not in _METHODS:
            raise KeyringError(f"auth method {word!r} is not one pymsgr speaks (cephx, none)")
        if _METHODS[word] not in out:
            out.append(_METHODS[word])
    return out


def keyring_candidates(value: str, name: AuthEntityName, cluster: str = "ceph") -> list[Path]:
    """The keyring paths of option ``keyring``, metavariables expanded."""
    text = entity_name_str(name)
    typ, _, ident = text.partition(".")
    subst = {"cluster": cluster, "name": text, "type": typ, "id": ident}
    out = []
    for item in re.split(r"[,;]+", value):
        item = item.strip()
        if item:
            out.append(Path(re.sub(r"\$(cluster|name|type|id)\b", lambda m: subst[m.group(1)], item)))
    return out


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Methods to offer, in order, our auth name, and our key when cephx can be used."""

    methods: list[int]
    name: AuthEntityName
    key: CryptoKey | None
    keyring_path: Path | None

    @property
    def cephx(self) -> bool:
        return self.key is not None and CEPH_AUTH_CEPHX in self.methods


def client_auth(cfg: Config, cluster: str = "ceph") -> ClientAuth:
    """Resolve a client's auth options; :class:`KeyringError` when cephx is the only method
    allowed but no keyring holds our key (as Ceph refuses to start such a client)."""
    name = parse_entity_name(cfg.name)
    methods = parse_methods(cfg.auth_client_required)
    key = path = None
    if CEPH_AUTH_CEPHX in methods:
        tried = keyring_candidates(cfg.keyring, name, cluster)
        found = [p for p in tried if os.path.exists(p)]
        if found:
            path = found[0]
            key = Keyring.load(path).get_key(name)
        elif methods == [CEPH_AUTH_CEPHX]:
            raise KeyringError(f"cephx is required but no keyring was found (tried "
                               f"{', '.join(map(str, tried)) or 'nothing'})")
        if key is None:
            methods = [m for m in methods if m != CEPH_AUTH_CEPHX]
    return ClientAuth(methods, name, key, path)
