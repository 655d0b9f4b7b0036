"""``python -m msgr probe v1:HOST:PORT``: talk to any v1 peer (a real ceph-mon included) as a client.

Steps, each printed as it finishes: handshake (negotiated features),
KEEPALIVE2 round trips (p50/p99), auth none (global_id), monmap (fsid,
epoch, monitors), then the osdmap version and ``mon stat`` when the peer is
a monitor that answers them. A failed step sets the exit status
(:class:`ExitCode`) by what went wrong: unreachable, not a Ceph v1 peer,
authentication refused, or another failure. Built on the public API only
(Messenger, Dispatcher, messages).
"""
from __future__ import annotations

import enum
import errno
import json
import queue
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.auth import AuthError, CephxClient, PermissionDeniedError
from msgr.auth.mon_exchange import authenticate
from msgr.auth.settings import ClientAuth, client_auth
from msgr.errors import BadBannerError, MsgrError
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MSGR_KEEPALIVE2, has_feature
from msgr.messages import (
    MAuth,
    MAuthReply,
    MMonCommand,
    MMonCommandAck,
    MMonGetVersion,
    MMonGetVersionReply,
    MMonMap,
    MMonSubscribe,
)
from msgr.messages.auth import CEPH_AUTH_CEPHX, CEPH_AUTH_NONE, CEPH_AUTH_UNKNOWN
from msgr.wire import BANNER, Priority

_AUTH_METHOD_NAMES = {CEPH_AUTH_UNKNOWN: "unknown", CEPH_AUTH_NONE: "none", CEPH_AUTH_CEPHX: "cephx",
                      4: "gss"}

#: how many bytes of a foreign greeting an error message quotes
QUOTED_GREETING_BYTES = 10


class ExitCode(enum.IntEnum):
    """Exit status of the ``msgr`` command, by what went wrong."""

    OK = 0
    FAILED = 1        # the peer answered, but a step failed (timeout, refusal, bad answer)
    USAGE = 2         # bad command line or address (missing port, v2:, bad number)
    UNREACHABLE = 3   # the host does not resolve, or nothing accepts the connection
    NOT_CEPH_V1 = 4   # something answered, but not a Ceph msgr v1 peer (SSH, HTTP, msgr2 only)
    AUTH_REFUSED = 5  # the peer refused our authentication

    def describe(self) -> str:
        return {
            ExitCode.OK: "every step succeeded",
            ExitCode.FAILED: "the peer answered but a step failed (timeout, refusal, bad answer)",
            ExitCode.USAGE: "bad command line or address (no port, v2:, bad number)",
            ExitCode.UNREACHABLE: "the host does not resolve or nothing accepts the connection",
            ExitCode.NOT_CEPH_V1: "the peer is not a Ceph msgr v1 peer (e.g. SSH, HTTP, msgr2 only)",
            ExitCode.AUTH_REFUSED: "the peer refused authentication (e.g. it requires cephx)",
        }[self]


class ProbeError(MsgrError):
    """A probe step failed (timeout, refusal, bad answer); ``exit_code`` says how."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def auth_method_name(method: int) -> str:
    return _AUTH_METHOD_NAMES.get(method, f"method {method}")


def explain_auth_refusal(reply: MAuthReply, offered: list[int]) -> str:
    """What a non-zero MAuthReply means, in words, with what to do about it.

    A monitor answers a negotiation (protocol 0) that offers none of the
    methods it allows with result -EOPNOTSUPP and protocol 0; v1 monitors
    know ``none`` and ``cephx``, so a refused ``none`` means cephx is required.
    """
    code = -reply.result
    # 95 is both ENOTSUP and EOPNOTSUPP on Linux; Ceph's code says EOPNOTSUPP
    name = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, "?")
    detail = f"result {reply.result} ({name})" + (f" {reply.result_msg!r}" if reply.result_msg else "")
    offered_names = "/".join(auth_method_name(m) for m in offered)
    if code in (errno.EOPNOTSUPP, errno.ENOTSUP) and reply.protocol == CEPH_AUTH_UNKNOWN:
        if CEPH_AUTH_CEPHX not in offered:
            return (f"auth refused: the monitor requires cephx; pass --name and --keyring "
                    f"(it does not allow auth {offered_names}: {detail})")
        return f"auth refused: the monitor allows none of the offered methods ({offered_names}) [{detail}]"
    if code == errno.EACCES:
        return f"auth refused: permission denied (wrong key or name?) [{detail}]"
    if code == errno.EPERM:
        return f"auth refused: not permitted [{detail}]"
    return (f"auth refused: result {reply.result} ({name}) protocol "
            f"{auth_method_name(reply.protocol)} {reply.result_msg!r}")


def sniff_peer(ip: str, port: int, timeout: float = 2.0) -> ProbeError | None:
    """Connect once more to learn why a handshake failed: None if a Ceph v1 peer answers.

    A v1 server writes its banner at once; SSH servers greet at once too. A peer
    that says nothing gets our banner, then a short wait, before being judged.
    """
    where = f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}"
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except ConnectionRefusedError:
        return ProbeError(f"connection refused by {where} (is the daemon running, and is this its "
                          "v1 port?)", ExitCode.UNREACHABLE)
    except TimeoutError:
        return ProbeError(f"no answer from {where} within {timeout:g} s", ExitCode.UNREACHABLE)
    except OSError as exc:
        return ProbeError(f"cannot connect to {where}: {exc.strerror or exc}", ExitCode.UNREACHABLE)
    with sock:
        got, closed = _read_greeting(sock, timeout)
        if not got and not closed:
            try:
                sock.sendall(BANNER)
                got, closed = _read_greeting(sock, timeout / 2)
            except OSError:
                closed = True
    if got.startswith(BANNER):
        return None
    if got.startswith(b"ceph v2"):
        return ProbeError(f"{where} speaks msgr2 only (banner {got[:8]!r}), not v1: use its v1 "
                          "address (a monitor's v1 port is 6789)", ExitCode.NOT_CEPH_V1)
    if not got:
        what = "closed the connection without a word" if closed else "sent nothing"
        return ProbeError(f"not a Ceph v1 peer: {where} {what} (a v1 peer sends its banner "
                          f"{BANNER!r} at once)", ExitCode.NOT_CEPH_V1)
    return ProbeError(f"not a Ceph v1 peer: got {got[:QUOTED_GREETING_BYTES]!r}", ExitCode.NOT_CEPH_V1)


def _read_greeting(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Up to a banner's worth of bytes (what came before the peer closed or went quiet), closed."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < max(len(BANNER), QUOTED_GREETING_BYTES):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(64)
        except TimeoutError:
            break
        except OSError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


class EventCollector(Dispatcher):
    """Hands every message and connection event to another thread through one queue of
    ``(kind, object)``: ``("msg", msg)``, ``("connect", conn)``, ``("reset", conn)`` (a reset or a
    remote reset), ``("refused", conn)``. The probe's thread reads it (tests use it too)."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def ms_dispatch(self, msg: Message) -> bool:
        self.events.put(("msg", msg))
        return True

    def ms_handle_connect(self, conn: Any) -> None:
        self.events.put(("connect", conn))

    def ms_handle_reset(self, conn: Any) -> bool:
        self.events.put(("reset", conn))
        return True

    def ms_handle_refused(self, conn: Any) -> bool:
        self.events.put(("refused", conn))
        return True

    def ms_handle_remote_reset(self, conn: Any) -> None:
        self.events.put(("reset", conn))


@dataclass
class ProbeResult:
    """Every step run, in order; ``exit_code``/``error`` come from the first failed one."""

    ok: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    error: str = ""

    def add(self, step: str, ok: bool, **info: Any) -> dict[str, Any]:
        entry = {"step": step, "ok": ok, **info}
        self.steps.append(entry)
        self.ok &= ok
        return entry

    def fail(self, step: str, exc: Exception) -> dict[str, Any]:
        code = exc.exit_code if isinstance(exc, ProbeError) else ExitCode.FAILED
        if self.ok:
            self.exit_code, self.error = code, str(exc)
        return self.add(step, False, error=str(exc))


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Probe:
    """One probe session; :meth:`run` returns a :class:`ProbeResult`."""

    def __init__(self, addr: EntityAddr, count: int = 10, timeout: float = 10.0,
                 features: int = CEPH_FEATURES_ALL_PACIFIC,
                 out: Callable[[str], None] | None = print, auth: ClientAuth | None = None) -> None:
        self.addr = addr
        self.auth = auth  # None: offer auth none only; else msgr.auth.settings.client_auth(cfg)
        self.count = count
        self.timeout = timeout
        self.features = features
        self.out = out
        self.result = ProbeResult()
        self.disp = EventCollector()
        self.ms: Any = None
        self.conn: Any = None

    def _say(self, entry: dict[str, Any]) -> None:
        if self.out is None:
            return
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("step", "ok"))
        self.out(f"{entry['step']:<10} {'ok  ' if entry['ok'] else 'FAIL'} {extra}")

    def _wait(self, want: Callable[[str, Any], bool], what: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeError(f"timed out after {self.timeout:.0f} s waiting for {what}")
            try:
                kind, obj = self.disp.events.get(timeout=left)
            except queue.Empty:
                continue
            if kind in ("reset", "refused") and obj is self.conn:
                raise ProbeError(f"connection {kind} while waiting for {what}")
            if want(kind, obj):
                return obj
            if kind == "msg":
                self._unsolicited.append(obj)

    def _wait_msg(self, cls: type, what: str, pred: Callable[[Any], bool] = lambda m: True) -> Any:
        for i, m in enumerate(self._unsolicited):
            if isinstance(m, cls) and pred(m):
                return self._unsolicited.pop(i)
        return self._wait(lambda k, o: k == "msg" and isinstance(o, cls) and pred(o), what)

    def _send(self, msg: Message) -> None:
        msg.set_priority(Priority.DEFAULT)  # as a real client sends them (127)
        self.conn.send_message(msg)

    def _step(self, name: str, fn: Callable[[], dict[str, Any]]) -> bool:
        try:
            info = fn()
            entry = self.result.add(name, True, **info)
        except (MsgrError, OSError) as exc:
            entry = self.result.fail(name, exc)
        self._say(entry)
        return bool(entry["ok"])

    # --- steps -------------------------------------------------------------
    def _connect(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.conn = self.ms.connect_to(EntityName.TYPE_MON, self.addr)
        try:
            self._wait(lambda k, o: k == "connect" and o is self.conn, "the handshake")
        except ProbeError as exc:
            raise self._why_no_handshake() or exc from None
        return {"peer": str(self.addr), "features": f"{self.conn.features:#018x}",
                "handshake_ms": round((time.perf_counter() - t0) * 1e3, 3)}

    def _why_no_handshake(self) -> ProbeError | None:
        """What the fault says (a non-Ceph banner), else what the peer says to a second connect."""
        err = getattr(self.conn, "last_fault_error", None)
        if isinstance(err, BadBannerError):
            if err.got.startswith(b"ceph v2"):
                return ProbeError(f"{self.addr.ip}:{self.addr.port} speaks msgr2 only (banner "
                                  f"{err.got[:8]!r}), not v1: use its v1 address (a monitor's v1 "
                                  "port is 6789)", ExitCode.NOT_CEPH_V1)
            return ProbeError(f"not a Ceph v1 peer: got {err.got[:QUOTED_GREETING_BYTES]!r}",
                              ExitCode.NOT_CEPH_V1)
        # the messenger only knows the session ended: ask the peer itself what it is
        return sniff_peer(self.addr.ip, self.addr.port, min(self.timeout, 2.0))

    def _keepalives(self) -> dict[str, Any]:
        if not has_feature(self.conn.features, MSGR_KEEPALIVE2):
            # the peer lacks KEEPALIVE2: a plain KEEPALIVE has no ack to time
            return {"count": 0, "skipped": "peer lacks MSGR_KEEPALIVE2"}
        rtts = []
        for _ in range(self.count):
            before = self.conn.get_last_keepalive_ack()
            t0 = time.perf_counter()
            self.conn.send_keepalive()
            if not self.conn.wait_keepalive_ack(after=before, timeout=self.timeout):
                raise ProbeError("no KEEPALIVE2_ACK" if self.conn.is_connected()
                                 else "no KEEPALIVE2_ACK: the connection ended")
            rtts.append((time.perf_counter() - t0) * 1e6)
        return {"count": len(rtts), "p50_us": round(_percentile(rtts, 0.5), 1),
                "p99_us": round(_percentile(rtts, 0.99), 1),
                "mean_us": round(statistics.fmean(rtts), 1) if rtts else 0}

    def _auth(self) -> dict[str, Any]:
        if self.auth is not None and self.auth.cephx:
            return self._auth_cephx(self.auth)
        offered = list(self.auth.methods) if self.auth is not None else [CEPH_AUTH_NONE]
        self._send(MAuth.none_request(methods=offered))
        r = self._wait_msg(MAuthReply, "MAuthReply")
        if r.result != 0:
            raise ProbeError(explain_auth_refusal(r, offered), ExitCode.AUTH_REFUSED)
        self.global_id = r.global_id
        return {"protocol": "none" if r.protocol == 1 else r.protocol, "result": r.result,
                "global_id": r.global_id}

    def _auth_cephx(self, auth: ClientAuth) -> dict[str, Any]:
        """cephx with the monitor (msgr.auth): challenge, session key, service tickets."""
        assert auth.key is not None
        client = CephxClient(auth.name, auth.key)
        try:
            rounds = authenticate(client, self._send, lambda: self._wait_msg(MAuthReply, "MAuthReply"))
        except PermissionDeniedError as exc:
            raise ProbeError(f"cephx refused for {auth.name}: wrong key, or the monitor does not know "
                             f"{auth.name} [{exc}]", ExitCode.AUTH_REFUSED) from None
        except AuthError as exc:
            raise ProbeError(f"cephx as {auth.name} failed: {exc}", ExitCode.AUTH_REFUSED) from None
        self.global_id = client.global_id
        tickets = ",".join(EntityName.type_name(t) for t in sorted(client.tickets.handlers))
        return {"protocol": "cephx", "name": str(auth.name), "global_id": client.global_id,
                "round_trips": rounds, "tickets": tickets}

    def _monmap(self) -> dict[str, Any]:
        self._send(MMonSubscribe(hostname="pymsgr-probe").add("monmap"))
        m = self._wait_msg(MMonMap, "MMonMap")
        self.monmap = m.monmap
        s = m.monmap.summary()
        return {"fsid": s["fsid"], "epoch": s["epoch"],
                "mons": ",".join(f"{x['name']}@{'/'.join(x['addrs'])}" for x in s["mons"]),
                "encoding": m.monmap.encoding}

    def _osdmap_version(self) -> dict[str, Any]:
        self._send(MMonGetVersion("osdmap", 1))
        r = self._wait_msg(MMonGetVersionReply, "MMonGetVersionReply", lambda m: m.handle == 1)
        return {"osdmap_version": r.version, "oldest": r.oldest_version}

    def _mon_stat(self) -> dict[str, Any]:
        cmd = MMonCommand([json.dumps({"prefix": "mon stat", "format": "json"})], self.monmap.fsid)
        cmd.tid = 1
        self._send(cmd)
        a = self._wait_msg(MMonCommandAck, "MMonCommandAck")
        if a.r != 0:
            raise ProbeError(f"mon stat: r={a.r} {a.rs}")
        return {"r": a.r, "output": a.outbl.decode(errors="replace").strip()}

    def run(self) -> ProbeResult:
        self._unsolicited: list[Message] = []
        self.monmap = None
        self.ms = Messenger.create(EntityName.client(), config=Config())
        policy = Policy.lossy_client()
        policy.features_supported = self.features
        self.ms.set_policy(EntityName.TYPE_MON, policy)
        self.ms.add_dispatcher_tail(self.disp)
        self.ms.start()
        try:
            if self._step("connect", self._connect):
                ok = self._step("keepalive", self._keepalives)
                ok = self._step("auth", self._auth) and ok
                if ok and self._step("monmap", self._monmap):
                    self._step("osdmap", self._osdmap_version)
                    self._step("mon_stat", self._mon_stat)
        finally:
            self.ms.shutdown()
            self.ms.wait()
        return self.result


def auth_from_options(name: str | None, keyring: str | None) -> ClientAuth | None:
    """What --name/--keyring ask for (docs/CEPHX.md): None keeps the probe at auth none."""
    if name is None and keyring is None:
        return None
    cfg = Config(name=name or "client.admin")
    if keyring is not None:
        cfg.keyring = keyring
        cfg.auth_client_required = "cephx"
    return client_auth(cfg)
