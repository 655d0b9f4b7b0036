"""Messenger configuration with Ceph's option names.

``Config(ms_crc_data=False)``; an unknown option name is a
:class:`msgr.errors.ConfigError`, so a typo never silently does nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from msgr.errors import ConfigError

_MiB = 1 << 20


@dataclass(init=False)
class Config:
    ms_crc_data: bool = True
    ms_crc_header: bool = True
    ms_async_op_threads: int = 1
    ms_async_shared_stack: bool = True       # pymsgr: messengers with equal ms_async_op_threads share workers
    ms_tcp_nodelay: bool = True
    ms_tcp_rcvbuf: int = 0
    ms_initial_backoff: float = 0.2          # seconds
    ms_max_backoff: float = 15.0             # seconds
    ms_connection_idle_timeout: float = 900.0  # seconds; 0 disables
    ms_connection_ready_timeout: float = 10.0  # seconds to reach OPEN after a connect/accept starts; 0 disables
    ms_dispatch_throttle_bytes: int = 100 * _MiB
    ms_max_message_front_len: int = 64 * _MiB   # pymsgr: refuse larger lengths before allocating
    ms_max_message_middle_len: int = 64 * _MiB
    ms_max_message_data_len: int = 256 * _MiB  # pymsgr: a bogus header can cost at most this much
    ms_learn_addr_from_peer: bool = True
    ms_inject_socket_failures: int = 0       # about one in N socket reads/writes fails; 0 = off
    ms_inject_internal_delays: float = 0.0   # seconds slept at race-prone points; 0 = off
    ms_inject_delay_type: str = ""           # entity types ("osd client") whose messages get delayed
    ms_inject_delay_probability: float = 0.0
    ms_inject_delay_max: float = 1.0         # seconds
    ms_inject_seed: int | None = None        # pymsgr: seed of the fault-injection RNG (replayable runs)

    def __init__(self, **options) -> None:
        known = {f.name: f for f in fields(self)}
        for f in known.values():
            setattr(self, f.name, f.default)
        for name, value in options.items():
            self.set(name, value)

    def set(self, name: str, value) -> None:
        known = {f.name for f in fields(self)}
        if name not in known:
            raise ConfigError(f"unknown option {name!r}")
        default = getattr(type(self), name, None)
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int) and not isinstance(value, bool):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"option {name} must not be negative: {value!r}")
        setattr(self, name, value)

    def copy(self) -> "Config":
        return Config(**{f.name: getattr(self, f.name) for f in fields(self)})
