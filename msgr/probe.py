"""``python -m msgr probe v1:HOST:PORT``: talk to any v1 peer (a real ceph-mon included) as a client.

Steps, each printed as it finishes: handshake (negotiated features),
KEEPALIVE2 round trips (p50/p99), auth none (global_id), monmap (fsid,
epoch, monitors), then the osdmap version and ``mon stat`` when the peer is
a monitor that answers them. Any failed step makes the exit status non-zero.
Built on the public API only (Messenger, Dispatcher, messages).
"""
from __future__ import annotations

import json
import queue
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.auth import AuthError, CephxClient, PermissionDeniedError
from msgr.auth.mon_exchange import authenticate
from msgr.auth.settings import ClientAuth, client_auth
from msgr.errors import MsgrError
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
from msgr.wire import Priority


class ProbeError(MsgrError):
    """A probe step failed (timeout, refusal, bad answer)."""


class _Collector(Dispatcher):
    """Hands every message and connection event to the probe's thread through one queue."""

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
    ok: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, ok: bool, **info: Any) -> dict[str, Any]:
        entry = {"step": step, "ok": ok, **info}
        self.steps.append(entry)
        self.ok &= ok
        return entry


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _keepalive_ack_stamp(conn: Any) -> Any:
    """The last KEEPALIVE2_ACK the connection saw (Ceph's get_last_keepalive_ack)."""
    get = getattr(conn, "get_last_keepalive_ack", None)
    if get is not None:
        return get()
    proto = getattr(conn, "proto", None)  # until the connection exposes it publicly
    return getattr(proto, "last_keepalive_ack_us", None)


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
        self.disp = _Collector()
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
            entry = self.result.add(name, False, error=str(exc))
        self._say(entry)
        ok: bool = entry["ok"]
        return ok

    # --- steps -------------------------------------------------------------
    def _connect(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.conn = self.ms.connect_to(EntityName.TYPE_MON, self.addr)
        self._wait(lambda k, o: k == "connect" and o is self.conn, "the handshake")
        return {"peer": str(self.addr), "features": f"{self.conn.features:#018x}",
                "handshake_ms": round((time.perf_counter() - t0) * 1e3, 3)}

    def _keepalives(self) -> dict[str, Any]:
        if not has_feature(self.conn.features, MSGR_KEEPALIVE2):
            # the peer lacks KEEPALIVE2: a plain KEEPALIVE has no ack to time
            return {"count": 0, "skipped": "peer lacks MSGR_KEEPALIVE2"}
        rtts = []
        for _ in range(self.count):
            before = _keepalive_ack_stamp(self.conn)
            t0 = time.perf_counter()
            self.conn.send_keepalive()
            deadline = t0 + self.timeout
            while _keepalive_ack_stamp(self.conn) == before:
                if time.perf_counter() > deadline:
                    raise ProbeError("no KEEPALIVE2_ACK")
                time.sleep(20e-6)
            rtts.append((time.perf_counter() - t0) * 1e6)
        return {"count": len(rtts), "p50_us": round(_percentile(rtts, 0.5), 1),
                "p99_us": round(_percentile(rtts, 0.99), 1),
                "mean_us": round(statistics.fmean(rtts), 1) if rtts else 0}

    def _auth(self) -> dict[str, Any]:
        if self.auth is not None and self.auth.cephx:
            return self._auth_cephx(self.auth)
        self._send(MAuth.none_request(methods=self.auth.methods if self.auth is not None else None))
        r = self._wait_msg(MAuthReply, "MAuthReply")
        if r.result != 0:
            raise ProbeError(f"auth refused: result {r.result} protocol {r.protocol} {r.result_msg!r}")
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
                             f"{auth.name} [{exc}]") from None
        except AuthError as exc:
            raise ProbeError(f"cephx as {auth.name} failed: {exc}") from None
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


def _probe_auth(name: str | None, keyring: str | None) -> ClientAuth | None:
    """What --name/--keyring ask for (docs/CEPHX.md): None keeps the probe at auth none."""
    if name is None and keyring is None:
        return None
    cfg = Config(name=name or "client.admin")
    if keyring is not None:
        cfg.keyring = keyring
        cfg.auth_client_required = "cephx"
    return client_auth(cfg)


def run_probe(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m msgr probe",
                                description="Probe a msgr v1 peer (e.g. a ceph-mon) as a client.")
    p.add_argument("addr", help="v1:HOST:PORT")
    p.add_argument("--count", type=int, default=10, help="KEEPALIVE2 round trips (default 10)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per step (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.add_argument("--name", "-n", metavar="TYPE.ID",
                   help="authenticate as this entity (default client.admin) with cephx")
    p.add_argument("--keyring", "-k", metavar="FILE",
                   help="keyring holding the entity's key (as ceph-authtool writes it); with it, "
                        "cephx is required. Without --name/--keyring: auth none")
    args = p.parse_args(argv)
    try:
        addr = EntityAddr.parse(args.addr)
    except MsgrError as exc:
        p.error(str(exc))
    try:
        auth = _probe_auth(args.name, args.keyring)
    except MsgrError as exc:  # a keyring that cannot be read, or lacks the entity
        print(f"python -m msgr probe: {exc}", file=sys.stderr)
        return 2
    probe = Probe(addr, max(1, args.count), args.timeout, out=None if args.json else print, auth=auth)
    res = probe.run()
    if args.json:
        print(json.dumps({"ok": res.ok, "addr": str(addr), "steps": res.steps}, indent=1))
    else:
        print("probe:", "ok" if res.ok else "FAILED")
        failed = [st for st in res.steps if not st["ok"]]
        if failed:
            print(f"python -m msgr probe: {failed[0]['step']}: {failed[0].get('error', '')}",
                  file=sys.stderr)
    return 0 if res.ok else 1
