"""Ceph's admin socket: ``ceph --admin-daemon PATH perf dump`` against a pymsgr messenger.

The protocol (Ceph's AdminSocket, as the ``ceph`` tool and ``AdminSocketClient`` speak it):

- A client connects to the Unix stream socket, writes one request and reads one answer; the
  server closes the connection after answering.
- A request is a JSON object ending with a NUL byte (a newline ends it too), e.g.
  ``{"prefix": "perf dump", "format": "json"}``; arguments are further keys (``"logger"``,
  ``"var"``, ``"val"``). The old binary form, four bytes ``00 00 00 N``, asks for the protocol
  version (N=0), a perf dump (1) or the perf schema (2).
- The answer is a 4-byte big-endian length, then that many bytes of body. There is no status
  field: a failed command answers ``ERROR: (errno) strerror`` and a message, as Ceph does.
- The ``ceph`` tool first asks ``get_command_descriptions`` (every command's signature, the
  ``argdesc`` JSON of Ceph's command table), checks the user's words against it, then sends the
  matching command with its arguments as JSON. ``{"prefix": "0"}`` is the version query
  (answer ``2``) that Ceph uses to see whether a socket file is alive.

Bodies are JSON; ``format`` ``json`` is compact, anything else (the default) is Ceph's
``json-pretty``. One thread serves one request at a time (as Ceph's), each with 5 s socket
timeouts, so a stuck client cannot hold it longer.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgr import ceph_conf, debug
from msgr.errors import ConfigError, MsgrError

if TYPE_CHECKING:  # pragma: no cover
    from msgr.messenger import AsyncMessenger

_log = logging.getLogger("msgr.admin_socket")

VERSION = "2"              # Ceph's CEPH_ADMIN_SOCK_VERSION
MAX_REQUEST = 64 * 1024    # bytes of one request (Ceph's commands are far shorter)
IO_TIMEOUT = 5.0           # seconds, as Ceph's client and server
_LEN = struct.Struct(">I")


class CommandError(Exception):
    """A command that failed: ``errno`` and a message, answered as Ceph's ``ERROR:`` body."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@dataclass(frozen=True)
class Command:
    """One admin command: Ceph's signature string (``"perf dump name=logger,type=CephString,
    req=false"``), help text, and the handler (the argument dict -> a JSON-able result or str)."""

    signature: str
    help: str
    handler: Callable[[dict[str, Any]], Any]

    @property
    def prefix(self) -> str:
        return " ".join(w for w in self.signature.split() if "=" not in w)

    def descriptor(self) -> list[Any]:
        """The ``sig`` list of ``get_command_descriptions``: words, then argument dicts."""
        out: list[Any] = []
        for word in self.signature.split():
            if "=" in word:
                out.append(dict(kv.split("=", 1) for kv in word.split(",")))
            else:
                out.append(word)
        return out


class AdminSocket:
    """Serves the admin commands of one messenger at ``path``; :meth:`start` / :meth:`stop`."""

    def __init__(self, path: str, messenger: AsyncMessenger) -> None:
        self.path = path
        self.msgr = messenger
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self.commands: dict[str, Command] = {}
        for cmd in self._builtin_commands():
            self.register(cmd)

    # --- life ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and listen at ``path`` (a dead socket file there is replaced) and serve."""
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.bind(self.path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or _is_alive(self.path):
                    raise
                os.unlink(self.path)   # a socket file whose server is gone (as Ceph: ping, unlink)
                sock.bind(self.path)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            raise MsgrError(f"admin socket {self.path}: {exc.strerror or exc}") from exc
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name=f"admin_socket-{self.msgr.my_name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, wait for the thread and remove the socket file."""
        t = self._thread
        if t is None:
            return
        os.write(self._wake_w, b"x")
        if t is not threading.current_thread():
            t.join(IO_TIMEOUT * 2)
        self._thread = None
        os.close(self._wake_w)
        os.close(self._wake_r)
        self._wake_r = self._wake_w = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    def register(self, cmd: Command) -> None:
        if cmd.prefix in self.commands:
            raise ValueError(f"admin command {cmd.prefix!r} is already registered")
        self.commands[cmd.prefix] = cmd

    # --- serving ---------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._sock is not None
        lsock, wake = self._sock, self._wake_r
        while True:
            try:
                ready, _, _ = select.select([lsock.fileno(), wake], [], [])
            except InterruptedError:
                continue
            if wake in ready:
                return
            try:
                conn, _ = lsock.accept()
            except OSError as exc:
                _log.warning("admin socket %s: accept failed: %s", self.path, exc)
                continue
            with conn:
                try:
                    self._handle_client(conn)
                except OSError as exc:
                    _log.info("admin socket %s: client went away: %s", self.path, exc)
                except Exception:
                    _log.exception("admin socket %s: request failed", self.path)

    def _handle_client(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        request = _read_request(conn)
        if request is None:
            return
        body = self.execute(request)
        conn.sendall(_LEN.pack(len(body)) + body)

    def execute(self, request: bytes) -> bytes:
        """The answer body for one raw request (without its terminator)."""
        if request[:1] == b"\0":   # the old binary protocol: 00 00 00 N
            code = request[3] if len(request) >= 4 else 0
            request = json.dumps({"prefix": {0: "0", 1: "perf dump", 2: "perf schema"}.get(code, "?")}).encode()
        try:
            args = json.loads(request.decode("utf-8"))
            if not isinstance(args, dict) or not isinstance(args.get("prefix"), str):
                raise ValueError("no prefix")
        except (ValueError, UnicodeDecodeError):
            return _error(errno.EINVAL, "invalid json")
        prefix = " ".join(args["prefix"].split())
        cmd = self.commands.get(prefix)
        if cmd is None:
            return _error(errno.EINVAL, f"unknown command prefix {prefix}")
        pretty = args.get("format") != "json"
        try:
            result = cmd.handler(args)
        except CommandError as exc:
            return _error(exc.errno, str(exc))
        except Exception as exc:   # a bug of a handler: answer it, keep serving
            _log.exception("admin socket command %r failed", prefix)
            return _error(errno.EIO, f"{prefix}: {exc}")
        if isinstance(result, str):
            return result.encode()
        if prefix == "get_command_descriptions":
            pretty = False   # as Ceph: always compact
        if pretty:
            return (json.dumps(result, indent=4) + "\n").encode()
        return json.dumps(result, separators=(",", ":")).encode()

    # --- the commands ----------------------------------------------------------------
    def _builtin_commands(self) -> list[Command]:
        return [
            Command("0", "", lambda a: VERSION),
            Command("1", "", lambda a: self._perf_dump({})),
            Command("2", "", lambda a: self._perf_schema({})),
            Command("get_command_descriptions", "list available commands", self._descriptions),
            Command("help", "list available commands", self._help),
            Command("version", "get the pymsgr version", self._version),
            Command("perf dump name=logger,type=CephString,req=false "
                    "name=counter,type=CephString,req=false", "dump perfcounters value",
                    self._perf_dump),
            Command("perf schema", "dump perfcounters schema", self._perf_schema),
            Command("perf reset name=var,type=CephString",
                    "perf reset <name>: perf reset all or one perfcounter name", self._perf_reset),
            Command("config show", "dump current config settings", self._config_show),
            Command("config get name=var,type=CephString", "config get <field>: get the config value",
                    self._config_get),
            Command("config set name=var,type=CephString name=val,type=CephString,n=N",
                    "config set <field> <val> [<val> ...]: set a config variable (ms_* and debug_ms)",
                    self._config_set),
            Command("config diff", "dump diff of current config and default config", self._config_diff),
            Command("dump_connections", "show every connection: peer, state, seqs, queues, last fault",
                    self._dump_connections),
        ]

    def _descriptions(self, args: dict[str, Any]) -> dict[str, Any]:
        return {f"cmd{i:03d}": {"sig": c.descriptor(), "help": c.help}
                for i, c in enumerate(sorted(self.commands.values(), key=lambda c: c.prefix))}

    def _help(self, args: dict[str, Any]) -> dict[str, str]:
        return {c.prefix: c.help for c in sorted(self.commands.values(), key=lambda c: c.prefix) if c.help}

    def _version(self, args: dict[str, Any]) -> dict[str, str]:
        import msgr
        return {"version": str(getattr(msgr, "__version__", "unknown")), "release": "pymsgr",
                "release_type": "stable"}

    def _perf_dump(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.msgr.perf_dump(args.get("logger"), args.get("counter"))

    def _perf_schema(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.msgr.perf_schema()

    def _perf_reset(self, args: dict[str, Any]) -> dict[str, str]:
        var = str(args.get("var", ""))
        if not self.msgr.perf_reset(var):
            raise CommandError(errno.ENOENT, f"perf reset: no logger named {var!r}")
        return {"success": f"perf reset {var}"}

    def _config_show(self, args: dict[str, Any]) -> dict[str, str]:
        # the messenger's own name, whatever the ``name`` option says (it names the auth identity)
        return {**self.msgr.config.show(), "name": str(self.msgr.my_name)}

    def _config_get(self, args: dict[str, Any]) -> dict[str, str]:
        var = str(args.get("var", ""))
        try:
            return {var: self.msgr.config.get_str(var)}
        except KeyError:
            raise CommandError(errno.ENOENT, f"error getting '{var}': (2) No such file or directory") from None

    def _config_set(self, args: dict[str, Any]) -> dict[str, str]:
        var = str(args.get("var", ""))
        val = args.get("val", "")
        value = " ".join(val) if isinstance(val, list) else str(val)
        key = var.replace("-", "_").replace(" ", "_")
        if not (key.startswith("ms_") or key == "debug_ms"):
            raise CommandError(errno.EPERM, f"pymsgr sets ms_* options and debug_ms at run time, not {var!r}")
        try:
            self.msgr.config.set(key, value)
        except ConfigError as exc:
            raise CommandError(errno.EINVAL, str(exc)) from None
        if key == "debug_ms":
            debug.set_debug_ms(self.msgr.config.debug_ms)
            return {"success": ""}
        return {"success": f"{key} = '{self.msgr.config.get_str(key)}' (read when next used: new "
                           f"connections and handshakes see it)"}

    def _config_diff(self, args: dict[str, Any]) -> dict[str, Any]:
        from msgr.config import Config
        defaults = Config().show()
        current = self.msgr.config.show()
        diff = {k: {"default": defaults.get(k, ""), "current": v} for k, v in current.items()
                if defaults.get(k) != v}
        return {"diff": diff}

    def _dump_connections(self, args: dict[str, Any]) -> dict[str, Any]:
        conns = [c._status() for c in self.msgr.connections()]
        conns.sort(key=lambda s: (s["peer_addr"], s["state"]))
        return {"name": str(self.msgr.my_name), "addr": str(self.msgr.get_myaddr()),
                "connections": conns}


def _error(err: int, message: str) -> bytes:
    """Ceph's failure body: ``ERROR: (22) Invalid argument`` and the message."""
    return f"ERROR: ({err}) {os.strerror(err)}\n{message}\n".encode()


def _read_request(conn: socket.socket) -> bytes | None:
    """Bytes up to a NUL or newline (or the 4-byte old binary request); None if the client left."""
    buf = bytearray()
    while len(buf) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            return bytes(buf) if buf else None
        buf += chunk
        if buf[:1] == b"\0":
            if len(buf) >= 4:
                return bytes(buf[:4])
            continue
        for i, b in enumerate(buf):
            if b in (0, 10):
                return bytes(buf[:i])
    return bytes(buf)


def _is_alive(path: str) -> bool:
    """Whether a server answers at ``path`` (Ceph pings with the version query before reusing it)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b'{"prefix":"0"}\0')
            return len(s.recv(5)) > 0
    except OSError:
        return False


def serve(messenger: AsyncMessenger) -> AdminSocket | None:
    """The running admin socket of ``messenger`` if its config names one (``admin_socket``, with
    ``$name``-style metavariables expanded), else None. A socket that cannot be set up is logged
    as an error and the messenger runs without it, as a Ceph daemon does."""
    path = messenger.config.admin_socket
    if not path:
        return None
    path = ceph_conf.expand_metavariables(path, str(messenger.my_name), {})
    asok = AdminSocket(path, messenger)
    try:
        asok.start()
    except MsgrError as exc:
        _log.error("%s: no admin socket: %s", messenger.my_name, exc)
        return None
    return asok
