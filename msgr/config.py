"""Messenger configuration with Ceph's option names and Ceph's value syntax.

``Config(ms_crc_data=False, ms_dispatch_throttle_bytes="100M", ms_initial_backoff="30s")``: values may be
given typed or as strings written as in a ceph.conf (``"false"``, ``"4K"``, ``"30s"``; see
:mod:`msgr.config_values`). An unknown option name is a :class:`msgr.errors.ConfigError`, so a
typo never silently does nothing. :meth:`Config.from_ceph_conf` reads a ceph.conf; options Ceph
knows but pymsgr does not use (``fsid``, ``mon_host``, ``log_file``...) are kept aside there,
readable with :meth:`Config.get` and :attr:`Config.ceph_options`.

The options live in one table, :data:`OPTIONS`; a module adds its own with
:func:`register_option` (or a row in the table below), and every ``Config`` then accepts,
parses, shows and copies it like the rest.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from msgr import ceph_conf
from msgr.config_values import (
    format_float,
    parse_bool,
    parse_debug_level,
    parse_float,
    parse_int,
    parse_secs,
    parse_size,
)
from msgr.errors import ConfigError

_MiB = 1 << 20

# option type -> parser of a string value
PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": parse_bool, "int": parse_int, "size": parse_size, "float": parse_float,
    "secs": parse_secs, "str": str, "debug": lambda s: "{}/{}".format(*parse_debug_level(s)),
}


@dataclass(frozen=True)
class Option:
    """One option: its Ceph name, type (a key of :data:`PARSERS`), default and bounds."""

    name: str
    type: str
    default: Any
    desc: str = ""
    min: float | None = 0          # numbers: the smallest value allowed (None: no bound)
    max: float | None = None
    ceph: bool = True              # False: a pymsgr option that Ceph does not have
    nullable: bool = False         # None is a valid value (means "unset")

    def parse(self, value: Any) -> Any:
        """``value`` (typed or a string) checked and converted to this option's type."""
        if value is None and self.nullable:
            return None
        kind = self.type
        try:
            if isinstance(value, str):
                v = PARSERS[kind](value)
            elif kind == "bool":
                if not isinstance(value, int):
                    raise TypeError(f"not a boolean: {value!r}")
                v = bool(value)
            elif kind in ("int", "size"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"not an integer: {value!r}")
                v = int(value)
            elif kind in ("float", "secs"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"not a number: {value!r}")
                v = float(value)
            elif kind == "debug":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"not a debug level: {value!r} (N or 'N/M')")
                v = "{}/{}".format(*parse_debug_level(str(value)))
            else:
                raise ValueError(f"a {kind} option takes a string, not {value!r}")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"option {self.name}: {exc}") from None
        if kind in ("int", "size", "float", "secs"):
            if self.min is not None and v < self.min:
                raise ConfigError(f"option {self.name} must be at least {self.min}: {value!r}")
            if self.max is not None and v > self.max:
                raise ConfigError(f"option {self.name} must be at most {self.max}: {value!r}")
        return v

    def format(self, value: Any) -> str:
        """``value`` as Ceph prints it in ``config show`` / ``config get``."""
        if value is None:
            return ""
        if self.type == "bool":
            return "true" if value else "false"
        if self.type in ("float", "secs"):
            return format_float(value)
        return str(value)


OPTIONS: dict[str, Option] = {}


def register_option(opt: Option) -> None:
    """Add ``opt`` to every Config (a module that needs options of its own calls this at import)."""
    if opt.type not in PARSERS:
        raise ValueError(f"option {opt.name}: unknown type {opt.type!r}")
    known = OPTIONS.get(opt.name)
    if known is not None and known != opt:
        raise ValueError(f"option {opt.name} is already registered differently: {known}")
    if opt.default is not None or not opt.nullable:
        opt.parse(opt.default)   # a default that its own parser refuses is a bug of the table
    OPTIONS[opt.name] = opt


for _opt in (
    Option("ms_crc_data", "bool", True, "CRC-32C of the message segments"),
    Option("ms_crc_header", "bool", True, "CRC-32C of the message header"),
    Option("ms_async_op_threads", "int", 1, "worker threads of the messenger", min=1, max=24),
    Option("ms_async_shared_stack", "bool", True,
           "messengers with equal ms_async_op_threads share one set of workers", ceph=False),
    Option("ms_tcp_nodelay", "bool", True, "TCP_NODELAY on every socket"),
    Option("ms_tcp_rcvbuf", "size", 0, "SO_RCVBUF of every socket; 0 keeps the kernel's"),
    Option("ms_initial_backoff", "secs", 0.2, "first reconnect delay (seconds)"),
    Option("ms_max_backoff", "secs", 15.0, "largest reconnect delay (seconds)"),
    Option("ms_connection_idle_timeout", "secs", 900.0, "close a session idle this long; 0 disables"),
    Option("ms_connection_ready_timeout", "secs", 10.0,
           "a handshake must reach OPEN within this many seconds; 0 disables"),
    Option("ms_dispatch_throttle_bytes", "size", 100 * _MiB, "bytes of received messages waiting "
           "for dispatch before reading stops"),
    Option("ms_max_message_front_len", "size", 64 * _MiB, "refuse larger front lengths before "
           "allocating", ceph=False),
    Option("ms_max_message_middle_len", "size", 64 * _MiB, "refuse larger middle lengths", ceph=False),
    Option("ms_max_message_data_len", "size", 256 * _MiB, "refuse larger data lengths (a bogus "
           "header can cost at most this much)", ceph=False),
    Option("ms_learn_addr_from_peer", "bool", True, "take our IP from what the first peer sees"),
    Option("ms_inject_socket_failures", "int", 0, "about one in N socket reads/writes fails; 0 = off"),
    Option("ms_inject_internal_delays", "secs", 0.0, "seconds slept at race-prone points; 0 = off"),
    Option("ms_inject_delay_type", "str", "", "entity types (\"osd client\") whose messages get delayed"),
    Option("ms_inject_delay_probability", "float", 0.0, "probability of delaying a message", max=1.0),
    Option("ms_inject_delay_max", "secs", 1.0, "longest injected delay (seconds)"),
    Option("ms_inject_seed", "int", None, "seed of the fault-injection RNG (replayable runs)",
           ceph=False, nullable=True, min=None),
    # authentication (msgr/auth/, docs/CEPHX.md); defaults are Ceph's
    Option("name", "str", "client.admin", "our entity name (TYPE.ID), as ceph's --name"),
    Option("keyring", "str", "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,"
           "/etc/ceph/keyring,/etc/ceph/keyring.bin", "keyring files to try, first found wins"),
    Option("auth_cluster_required", "str", "cephx", "auth methods daemons require of each other"),
    Option("auth_service_required", "str", "cephx", "auth methods a service requires of clients"),
    Option("auth_client_required", "str", "cephx, none", "auth methods a client accepts"),
    Option("cephx_sign_messages", "bool", True, "sign messages on sessions that have a key"),
    Option("cephx_require_signatures", "bool", False, "refuse peers that cannot sign (no MSG_AUTH)"),
    Option("cephx_cluster_require_signatures", "bool", False, "the same between daemons"),
    Option("cephx_service_require_signatures", "bool", False, "the same, services of their clients"),
    Option("debug_ms", "debug", "0/0", "messenger log level / gather level (N or N/M); "
           "see docs/DEBUGGING.md"),
    Option("admin_socket", "str", "", "serve Ceph's admin-socket protocol at this path ($name, "
           "$cluster... expanded); empty: none"),
):
    register_option(_opt)


class Config:
    """Option values by Ceph name: ``cfg.ms_crc_data``; set with ``Config(...)``, :meth:`set` or
    plain attribute assignment (all three parse and check the value)."""

    # the options of the table above, for type checkers (values live in the instance)
    ms_crc_data: bool
    ms_crc_header: bool
    ms_async_op_threads: int
    ms_async_shared_stack: bool
    ms_tcp_nodelay: bool
    ms_tcp_rcvbuf: int
    ms_initial_backoff: float
    ms_max_backoff: float
    ms_connection_idle_timeout: float
    ms_connection_ready_timeout: float
    ms_dispatch_throttle_bytes: int
    ms_max_message_front_len: int
    ms_max_message_middle_len: int
    ms_max_message_data_len: int
    ms_learn_addr_from_peer: bool
    ms_inject_socket_failures: int
    ms_inject_internal_delays: float
    ms_inject_delay_type: str
    ms_inject_delay_probability: float
    ms_inject_delay_max: float
    ms_inject_seed: int | None
    name: str
    keyring: str
    auth_cluster_required: str
    auth_service_required: str
    auth_client_required: str
    cephx_sign_messages: bool
    cephx_require_signatures: bool
    cephx_cluster_require_signatures: bool
    cephx_service_require_signatures: bool
    debug_ms: str
    admin_socket: str
    _explicit: set[str]
    _ceph_options: dict[str, str]

    def __init__(self, **options: Any) -> None:
        object.__setattr__(self, "_explicit", set())
        object.__setattr__(self, "_ceph_options", {})
        for opt in OPTIONS.values():
            object.__setattr__(self, opt.name, opt.default)
        for name, value in options.items():
            self.set(name, value)

    # --- setting and getting -------------------------------------------------------
    def set(self, name: str, value: Any) -> None:
        """Set option ``name`` (Ceph's spelling; ``-`` and blanks read as ``_``) to ``value``."""
        key = ceph_conf.normalize_key(name)
        opt = OPTIONS.get(key)
        if opt is None:
            raise ConfigError(f"unknown option {name!r}")
        object.__setattr__(self, key, opt.parse(value))
        self._explicit.add(key)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def get(self, name: str, default: Any = None) -> Any:
        """An option's value, or the string of an option kept aside from a ceph.conf, or ``default``."""
        key = ceph_conf.normalize_key(name)
        if key in OPTIONS:
            return getattr(self, key)
        return self._ceph_options.get(key, default)

    def get_str(self, name: str) -> str:
        """An option's value as Ceph prints it (``"true"``, ``"0.200000"``); KeyError if unknown."""
        key = ceph_conf.normalize_key(name)
        opt = OPTIONS.get(key)
        if opt is not None:
            return opt.format(getattr(self, key))
        if key in self._ceph_options:
            return self._ceph_options[key]
        raise KeyError(name)

    def is_set(self, name: str) -> bool:
        """True if option ``name`` was given explicitly (not left at its default)."""
        return ceph_conf.normalize_key(name) in self._explicit

    @property
    def ceph_options(self) -> dict[str, str]:
        """Options read from a ceph.conf that pymsgr does not use (``fsid``, ``mon_host``...)."""
        return dict(self._ceph_options)

    def show(self) -> dict[str, str]:
        """Every option as Ceph's ``config show`` prints it, kept-aside options included."""
        out = {name: opt.format(getattr(self, name)) for name, opt in sorted(OPTIONS.items())}
        for key, value in sorted(self._ceph_options.items()):
            out.setdefault(key, value)
        return out

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of every option, in the option table's order."""
        for name in OPTIONS:
            yield name, getattr(self, name)

    def copy(self) -> Config:
        """An independent copy with the same values."""
        new = Config()
        for name in OPTIONS:
            object.__setattr__(new, name, getattr(self, name))
        new._explicit.update(self._explicit)
        new._ceph_options.update(self._ceph_options)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return dict(self.items()) == dict(other.items()) and self._ceph_options == other._ceph_options

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        changed = ", ".join(f"{n}={getattr(self, n)!r}" for n in OPTIONS if n in self._explicit)
        return f"Config({changed})"

    # --- ceph.conf -----------------------------------------------------------------
    @classmethod
    def from_ceph_conf(cls, path: str | os.PathLike[str], name: str = "client.admin",
                       cluster: str = "ceph", **overrides: Any) -> Config:
        """The options of entity ``name`` in the ceph.conf at ``path``.

        Sections ``[global]``, ``[<type>]`` and ``[<name>]`` apply in that order (the later
        wins); ``$name``-style metavariables are expanded; ``overrides`` are applied last (as
        ``Config(**overrides)``). Options pymsgr does not use are kept aside, not errors; a
        value pymsgr cannot parse is a :class:`ConfigError` naming the file.
        """
        raw = ceph_conf.merged_options(ceph_conf.read_conf(path), name)
        cfg = cls(name=name)  # Ceph's `name` is the entity whose sections are read
        for key, value in raw.items():
            value = ceph_conf.expand_metavariables(value, name, raw, cluster)
            if key in OPTIONS:
                try:
                    cfg.set(key, value)
                except ConfigError as exc:
                    raise ConfigError(f"{os.fspath(path)} [{name}]: {exc}") from None
            else:
                cfg._ceph_options[key] = value
        for key, value in overrides.items():
            cfg.set(key, value)
        return cfg
