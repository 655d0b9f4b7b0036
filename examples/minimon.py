#!/usr/bin/env python3
"""minimon: a small monitor-like service a real ``ceph`` CLI can use (auth none or cephx, msgr v1).

    python examples/minimon.py --bind v1:127.0.0.1:16789 [--fsid UUID] [--id a] [--keyring FILE]

Point a ceph.conf at it (``mon host = v1:127.0.0.1:16789``) and run ``ceph ping mon.a`` or
``ceph mon stat``. Without ``--keyring`` it speaks auth none; with it, cephx only (the keyring
holds the clients' keys, as ``ceph-authtool`` writes them; msgr.auth.cephx_mon answers). Built on
pymsgr's public API and msgr.auth.

What it answers, like a pacific monitor does:
  MAuth (negotiation)    auth none: MAuthReply(protocol none, result 0, a new global_id), then MMonMap
                         cephx: MAuthReply(protocol cephx, a new global_id, the server challenge)
  MAuth (cephx)          the session key and tickets (then MMonMap), or service tickets
  MMonSubscribe          MConfig (empty) for "config", MMonMap for "monmap", nothing else
  MMonGetVersion         MMonGetVersionReply(epoch 1) for monmap/osdmap/..., echoing the handle
  MPing                  MPing whose front is a string holding the status JSON
  MMonCommand            get_command_descriptions, mon stat, mon dump, fsid (others: -EINVAL)
"""
from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy  # noqa: E402
from msgr.auth.cephx_mon import CephxMonServer, CephxMonSession  # noqa: E402
from msgr.auth.keyring import Keyring  # noqa: E402
from msgr.encoding import Encoder, Utime  # noqa: E402
from msgr.messages import (  # noqa: E402
    MAuth,
    MAuthReply,
    MConfig,
    MMonCommand,
    MMonCommandAck,
    MMonGetVersion,
    MMonGetVersionReply,
    MMonMap,
    MMonSubscribe,
    MonInfo,
    MonMap,
    MPing,
)

PRIO_HIGH = 196       # what a real mon puts on its replies
EINVAL = 22
CEPH_AUTH_NONE, CEPH_AUTH_CEPHX = 1, 2
EOPNOTSUPP = 95
# Commands we advertise to the CLI (it validates a command against these before sending it).
COMMANDS = [
    (["mon", "stat"], "summarize monitor status"),
    (["mon", "dump", {"name": "epoch", "type": "CephInt", "range": "0", "req": "false"}],
     "dump formatted monmap (optionally from epoch)"),
    (["fsid"], "show cluster FSID/UUID"),
    (["status"], "show cluster status"),
]


class MiniMon(Dispatcher):
    def __init__(self, addr: EntityAddr, fsid: uuid.UUID, name: str, verbose: bool = True,
                 keyring: Keyring | None = None) -> None:
        self.name = name
        # cephx when a keyring is given (then cephx only); one session per client connection
        self.cephx = CephxMonServer(keyring, time.time()) if keyring is not None else None
        self._sessions: dict[Any, CephxMonSession] = {}
        self.verbose = verbose
        now = time.time()
        stamp = Utime(int(now), int((now % 1) * 1e9))
        self.monmap = MonMap(fsid=fsid, epoch=1, last_changed=stamp, created=stamp,
                             persistent_features=0xFF, mons={name: MonInfo(name, [addr])},
                             ranks=[name], min_mon_release=16)
        self._gids = itertools.count(4097)
        self._lock = threading.Lock()
        self.seen: list[str] = []   # "type name" of every message received, for tests/logs

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"minimon: {text}", flush=True)

    def _reply(self, req: Message, msg: Message) -> None:
        msg.set_priority(PRIO_HIGH)
        req.get_connection().send_message(msg)

    # --- Dispatcher -------------------------------------------------------------
    def ms_handle_reset(self, conn: Any) -> bool:
        with self._lock:
            self._sessions.pop(conn, None)
        return False

    def ms_handle_remote_reset(self, conn: Any) -> None:
        self.ms_handle_reset(conn)

    def ms_handle_accept(self, conn: Any) -> None:
        self.log(f"accepted {conn.peer_name} from {conn.get_peer_addr()} features {conn.features:#x}")

    def ms_dispatch(self, msg: Message) -> bool:
        with self._lock:
            self.seen.append(f"{msg.get_type()} {type(msg).__name__}")
        self.log(f"<- {type(msg).__name__} from {msg.get_source()} {self._describe(msg)}")
        handler = getattr(self, f"_handle_{type(msg).__name__}", None)
        if handler is None:
            return False
        handler(msg)
        return True

    @staticmethod
    def _describe(msg: Message) -> str:
        if isinstance(msg, MMonSubscribe):
            return f"{ {k: (v.start, v.flags) for k, v in msg.what.items()} } host={msg.hostname!r}"
        if isinstance(msg, MMonCommand):
            return f"tid={msg.tid} {msg.cmd}"
        if isinstance(msg, MAuth):
            try:
                return f"protocol={msg.protocol} {msg.negotiation()}"
            except Exception:  # a non-negotiation MAuth is shown raw
                return f"protocol={msg.protocol}"
        return ""

    # --- handlers ------------------------------------------------------------------
    def _handle_MAuth(self, m: MAuth) -> None:
        if self.cephx is not None:
            self._handle_cephx(m)
            return
        try:
            methods = m.negotiation().methods if m.protocol == 0 else [m.protocol]
        except Exception:
            methods = []
        if CEPH_AUTH_NONE not in methods:
            self._reply(m, MAuthReply(0, -EOPNOTSUPP, 0))   # -ENOTSUP, as the real mon does
            return
        gid = next(self._gids)
        self._reply(m, MAuthReply(CEPH_AUTH_NONE, 0, gid))
        self._reply(m, MMonMap(self.monmap))          # the mon sends the map unasked

    def _handle_cephx(self, m: MAuth) -> None:
        assert self.cephx is not None
        conn = m.get_connection()
        if m.protocol == 0:
            try:
                neg = m.negotiation()
            except Exception:
                neg = None
            if neg is None or CEPH_AUTH_CEPHX not in neg.methods:
                self._reply(m, MAuthReply(0, -EOPNOTSUPP, 0))   # cephx required
                return
            session = self.cephx.new_session()
            with self._lock:
                self._sessions[conn] = session
            gid = neg.global_id or next(self._gids)
            self._reply(m, MAuthReply(CEPH_AUTH_CEPHX, 0, gid, session.start(neg.name, gid)))
            return
        with self._lock:
            session = self._sessions.get(conn)
        if session is None or m.protocol != CEPH_AUTH_CEPHX:
            self._reply(m, MAuthReply(m.protocol, -EINVAL, 0))
            return
        was = session.authenticated
        r, payload = session.handle(m.auth_payload, time.time())
        req = {0x100: "GET_AUTH_SESSION_KEY", 0x200: "GET_PRINCIPAL_SESSION_KEY",
               0x400: "GET_ROTATING_KEY"}.get(int.from_bytes(m.auth_payload[:2], "little"), "?")
        self.log(f"cephx {session.name}: {req} result {r}")
        self._reply(m, MAuthReply(CEPH_AUTH_CEPHX, r, session.global_id, payload))
        if r == 0 and not was and session.authenticated:
            self._reply(m, MMonMap(self.monmap))          # the mon sends the map unasked

    def _handle_MMonSubscribe(self, m: MMonSubscribe) -> None:
        if "config" in m.what:
            self._reply(m, MConfig({}))
        if "monmap" in m.what and m.what["monmap"].start <= self.monmap.epoch:
            self._reply(m, MMonMap(self.monmap))

    def _handle_MMonGetVersion(self, m: MMonGetVersion) -> None:
        self._reply(m, MMonGetVersionReply(m.handle, 1, 1))

    def _handle_MPing(self, m: MPing) -> None:
        reply = MPing()
        reply.front = Encoder().string(json.dumps(self.status(), indent=4)).getvalue()
        self._reply(m, reply)

    def _handle_MMonCommand(self, m: MMonCommand) -> None:
        try:
            cmd = json.loads(m.cmd[0]) if m.cmd else {}
        except ValueError:
            cmd = {}
        r, rs, out = self.command(cmd)
        ack = MMonCommandAck(m.cmd, r, rs, out, self.monmap.epoch)
        ack.tid = m.tid
        self._reply(m, ack)

    # --- state as the CLI sees it ---------------------------------------------------
    def mon_stat(self) -> dict:
        return {"epoch": self.monmap.epoch, "min_mon_release_name": "pacific", "num_mons": 1,
                "leader": self.name, "quorum": [{"rank": 0, "name": self.name}]}

    def mon_dump(self) -> dict:
        s = self.monmap.summary()
        return {"epoch": s["epoch"], "fsid": s["fsid"], "min_mon_release": 16,
                "min_mon_release_name": "pacific",
                "mons": [{"rank": x["rank"], "name": x["name"], "public_addrs": {"addrvec": [
                    {"type": "v1", "addr": a.removeprefix("v1:").rsplit("/", 1)[0], "nonce": 0}
                    for a in x["addrs"]]}} for x in s["mons"]]}

    def status(self) -> dict:
        return {"health": {"status": "HEALTH_OK", "checks": {}, "mutes": []},
                "mon_status": {"name": self.name, "rank": 0, "state": "leader", "election_epoch": 1,
                               "quorum": [0], "monmap": self.mon_dump(), "pymsgr": "minimon"}}

    def command(self, cmd: dict) -> tuple[int, str, bytes]:
        prefix = cmd.get("prefix", "")
        fmt = cmd.get("format", "")
        if prefix == "get_command_descriptions":
            desc = {f"cmd{i:03d}": {"sig": sig, "help": help_, "module": "mon", "perm": "r", "flags": 0}
                    for i, (sig, help_) in enumerate(COMMANDS)}
            return 0, "", json.dumps(desc).encode()
        if prefix == "mon stat":
            st = self.mon_stat()
            if fmt.startswith("json"):
                return 0, "", (json.dumps(st) + "\n").encode()
            addrs = ",".join(f"{n}=[{'/'.join(str(a) for a in i.addrs)}]" for n, i in self.monmap.mons.items())
            return 0, "", (f"e{st['epoch']}: 1 mons at {{{addrs}}}, election epoch 1, leader 0 "
                           f"{self.name}, quorum 0 {self.name}\n").encode()
        if prefix == "mon dump":
            d = self.mon_dump()
            if fmt.startswith("json"):
                return 0, f"dumped monmap epoch {d['epoch']}", (json.dumps(d) + "\n").encode()
            text = f"epoch {d['epoch']}\nfsid {d['fsid']}\n" + "".join(
                f"{x['rank']}: {x['public_addrs']['addrvec']} mon.{x['name']}\n" for x in d["mons"])
            return 0, f"dumped monmap epoch {d['epoch']}", text.encode()
        if prefix == "fsid":
            fsid = str(self.monmap.fsid)
            return 0, "", (json.dumps({"fsid": fsid}) if fmt.startswith("json") else fsid).encode() + b"\n"
        if prefix == "status":
            st = {"fsid": str(self.monmap.fsid), "health": {"status": "HEALTH_OK", "checks": {}},
                  "quorum_names": [self.name], "monmap": {"epoch": self.monmap.epoch, "num_mons": 1}}
            if fmt.startswith("json"):
                return 0, "", (json.dumps(st) + "\n").encode()
            text = (f"  cluster:\n    id:     {st['fsid']}\n    health: HEALTH_OK\n\n"
                    f"  services:\n    mon: 1 daemons, quorum {self.name} (pymsgr minimon)\n")
            return 0, "", text.encode()
        return -EINVAL, f"minimon: unknown command {prefix!r}", b""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", required=True, help="v1:HOST:PORT")
    p.add_argument("--fsid", default=None, help="cluster fsid (default: a new uuid4)")
    p.add_argument("--id", default="a", help="monitor name (default a)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--keyring", default=None, help="cephx: the clients' keys (then cephx only)")
    args = p.parse_args(argv)
    bind = EntityAddr.parse(args.bind).with_nonce(0)  # clients expect a mon's nonce to be 0
    fsid = uuid.UUID(args.fsid) if args.fsid else uuid.uuid4()
    ms = Messenger.create(EntityName.mon(args.id), nonce=0, config=Config())
    ms.set_default_policy(Policy.stateless_server())
    addr = ms.bind(bind)
    keyring = Keyring.load(args.keyring) if args.keyring else None
    mon = MiniMon(addr.with_nonce(0), fsid, args.id, verbose=not args.quiet, keyring=keyring)
    ms.add_dispatcher_tail(mon)
    ms.start()
    print(f"minimon: mon.{args.id} listening on {addr} fsid {fsid}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    ms.shutdown()
    ms.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
