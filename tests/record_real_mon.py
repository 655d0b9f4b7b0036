#!/usr/bin/env python3
"""Record what a real Ceph monitor sends on msgr v1, for offline decoder tests.

Stdlib only and independent of pymsgr on purpose: the recordings are the
reference our codec is tested against, so they must not come from it.

    python tests/record_real_mon.py                      # start a throwaway mon, write tests/data/
    python tests/record_real_mon.py --mon 127.0.0.1:6789 --out /tmp/rec
    python tests/record_real_mon.py --only real_mon_session_minimal   # add one file, keep the rest

Sessions (one JSON file each, plus the raw byte streams as .rx.bin/.tx.bin):
  real_mon_session.json             features 0x3f01cfbdfffdffff (21-byte footers): handshake,
                                    KEEPALIVE2, MAuth -> AUTH_REPLY + MON_MAP, MMonSubscribe v3
                                    {config, monmap} -> MConfig + MON_MAP, MMonGetVersion(osdmap),
                                    MMonCommand {"prefix": "mon stat"} -> MON_COMMAND_ACK
  real_mon_session_old_footer.json  MSG_AUTH (bit 23) cleared: 13-byte footers; MAuth only
  real_mon_session_minimal.json     features 0x0401020002040000 (the required set only): READY,
                                    13-byte footers, legacy MON_MAP, MON_SUBSCRIBE_ACK (16)
  real_mon_connect_replies.json     connect replies to bad connects (FEATURES, BADPROTOVER),
                                    and READY without RECONNECT_SEQ
The client side is deterministic (fixed nonce, keepalive stamp, hostname); the
mon's side (fsid, global ids, global_seq, map timestamps) differs per run.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

FEATURES_FULL = 0x3F01CFBDFFFDFFFF
FEATURES_NO_MSG_AUTH = FEATURES_FULL & ~(1 << 23)
FEATURES_MINIMAL = 0x0401020002040000  # what the mon requires of a client (crush bits only)
FEATURE_MSG_AUTH = 1 << 23
FEATURE_RECONNECT_SEQ = 1 << 6
CLIENT_NONCE = 0x7031C0DE
KEEPALIVE_STAMP = (1_700_000_000, 123_456_789)
HOSTNAME = "pymsgr"

BANNER = b"ceph v027"
TAG_NAMES = {1: "READY", 2: "RESETSESSION", 3: "WAIT", 4: "RETRY_SESSION", 5: "RETRY_GLOBAL",
             6: "CLOSE", 7: "MSG", 8: "ACK", 9: "KEEPALIVE", 10: "BADPROTOVER",
             11: "BADAUTHORIZER", 12: "FEATURES", 13: "SEQ", 14: "KEEPALIVE2",
             15: "KEEPALIVE2_ACK", 16: "CHALLENGE_AUTHORIZER"}
MSG_NAMES = {4: "MON_MAP", 15: "MON_SUBSCRIBE", 16: "MON_SUBSCRIBE_ACK", 17: "AUTH", 18: "AUTH_REPLY",
             19: "MON_GET_VERSION", 20: "MON_GET_VERSION_REPLY", 41: "OSD_MAP",
             50: "MON_COMMAND", 51: "MON_COMMAND_ACK", 62: "CONFIG", 0x704: "MGR_MAP"}

HEADER = struct.Struct("<QQHHHIIIHBQHHI")   # ceph_msg_header, 53 bytes
FOOTER = struct.Struct("<IIIQB")            # with MSG_AUTH, 21 bytes
FOOTER_OLD = struct.Struct("<IIIB")         # without, 13 bytes
CONNECT = struct.Struct("<QIIIIIIB")
CONNECT_REPLY = struct.Struct("<BQIIIIB")


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def ceph_crc32c(crc: int, data: bytes) -> int:
    """Ceph's crc32c: reflected Castagnoli, caller's seed, no final inversion."""
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


# --- encoders (just enough for the messages we send) ---------------------------

def enc_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<I", len(b)) + b


def legacy_addr(ip: str, port: int, nonce: int) -> bytes:
    sockaddr = struct.pack(">HH", 2, port) + socket.inet_aton(ip)
    return struct.pack("<II", 0, nonce) + sockaddr.ljust(128, b"\0")


def paxos_head() -> bytes:
    return struct.pack("<Qhq", 0, -1, 0)


def frame(seq: int, mtype: int, front: bytes, *, version: int = 1, compat: int = 1,
          tid: int = 0, priority: int = 127, src_num: int = -1, data: bytes = b"",
          msg_auth: bool = True) -> bytes:
    """tag MSG + header + front + data + footer, CRCs filled in."""
    head = HEADER.pack(seq, tid, mtype, priority, version, len(front), 0, len(data), 0,
                       8, src_num & 0xFFFFFFFFFFFFFFFF, compat, 0, 0)[:49]
    head += struct.pack("<I", ceph_crc32c(0, head))
    fcrc, dcrc = ceph_crc32c(0, front), ceph_crc32c(0, data)
    foot = FOOTER.pack(fcrc, 0, dcrc, 0, 1) if msg_auth else FOOTER_OLD.pack(fcrc, 0, dcrc, 1)
    return b"\x07" + head + front + data + foot


def mauth_front() -> bytes:
    payload = (b"\x01" + struct.pack("<II", 1, 1)              # struct_v, set<u32>{NONE}
               + struct.pack("<I", 8) + enc_str("admin")        # EntityName client.admin
               + struct.pack("<Q", 0))                          # global_id
    return paxos_head() + struct.pack("<I", 0) + enc_str(payload) + struct.pack("<I", 0)


def subscribe_front(what: dict[str, int]) -> bytes:
    body = struct.pack("<I", len(what))
    for name in sorted(what):
        body += enc_str(name) + struct.pack("<QB", what[name], 0)
    return body + enc_str(HOSTNAME)


def describe_msg(raw: bytes, footer_size: int) -> dict[str, Any]:
    """Fields, sections and CRC checks of one MSG frame (tag byte included)."""
    head = raw[1:1 + HEADER.size]
    (seq, tid, mtype, prio, ver, flen, mlen, dlen, doff, stype, snum, compat, _res,
     crc) = HEADER.unpack(head)
    body = raw[1 + HEADER.size:]
    front, middle, data = body[:flen], body[flen:flen + mlen], body[flen + mlen:flen + mlen + dlen]
    foot = body[flen + mlen + dlen:]
    if len(foot) != footer_size:
        raise ValueError(f"frame has {len(foot)} footer bytes, expected {footer_size}")
    fields = (FOOTER if footer_size == FOOTER.size else FOOTER_OLD).unpack(foot)
    return {"type": mtype, "type_name": MSG_NAMES.get(mtype, "?"), "seq": seq, "tid": tid,
            "priority": prio, "version": ver, "compat_version": compat,
            "src": [stype, snum - (1 << 64) if snum >> 63 else snum], "data_off": doff,
            "header_crc_ok": crc == ceph_crc32c(0, head[:49]),
            "front_crc_ok": fields[0] == ceph_crc32c(0, front),
            "middle_crc_ok": fields[1] == ceph_crc32c(0, middle),
            "data_crc_ok": fields[2] == ceph_crc32c(0, data),
            "footer_flags": fields[-1],
            "header": head.hex(), "front": front.hex(), "middle": middle.hex(),
            "data": data.hex(), "footer": foot.hex()}


# --- the recording session ---------------------------------------------------

class Recorder:
    """A raw v1 client socket that logs every chunk it sends and receives."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.events: list[dict[str, Any]] = []
        self.rx = bytearray()
        self.tx = bytearray()
        self.msg_auth = True

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, data: bytes, /, **info: Any) -> None:
        self.sock.sendall(data)
        self.tx += data
        self.events.append({"dir": "tx", "kind": kind, **info, "hex": data.hex()})

    def recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"mon closed the socket after {len(buf)} of {n} bytes")
            buf += chunk
        self.rx += buf
        return bytes(buf)

    def note(self, kind: str, data: bytes, /, **info: Any) -> None:
        self.events.append({"dir": "rx", "kind": kind, **info, "hex": data.hex()})

    def handshake(self, features: int, *, host_type: int = 8, proto: int = 15,
                  global_seq: int = 1) -> dict[str, Any]:
        ident = self.recv(9 + 136 + 136)
        self.note("server_identify", ident)
        self.send("client_addr", legacy_addr("127.0.0.1", 0, CLIENT_NONCE))
        return self.connect(features, host_type=host_type, proto=proto, global_seq=global_seq)

    def connect(self, features: int, *, host_type: int = 8, proto: int = 15,
                global_seq: int = 1) -> dict[str, Any]:
        self.send("connect", CONNECT.pack(features, host_type, global_seq, 0, proto, 0, 0, 0),
                  features=hex(features))
        raw = self.recv(CONNECT_REPLY.size)
        tag, rfeat, gseq, cseq, rproto, alen, flags = CONNECT_REPLY.unpack(raw)
        reply = {"tag": tag, "tag_name": TAG_NAMES.get(tag, "?"), "features": hex(rfeat),
                 "global_seq": gseq, "connect_seq": cseq, "protocol_version": rproto,
                 "authorizer_len": alen, "flags": flags}
        if alen:
            raw += self.recv(alen)
        if tag == 13:  # SEQ: the mon's acked seq follows; we answer with our in_seq
            raw += self.recv(8)
            reply["acked_seq"] = struct.unpack("<Q", raw[-8:])[0]
        self.note("connect_reply", raw, **reply)
        if tag == 13:
            self.send("in_seq", struct.pack("<Q", 0))
        self.msg_auth = bool(features & rfeat & FEATURE_MSG_AUTH)
        return reply

    def read_frame(self) -> dict[str, Any]:
        tag = self.recv(1)[0]
        if tag in (14, 15):  # KEEPALIVE2(_ACK): a timespec follows
            raw = bytes([tag]) + self.recv(8)
            ev = {"tag": tag, "kind": TAG_NAMES[tag].lower(), "stamp": list(struct.unpack("<II", raw[1:]))}
        elif tag == 8:
            raw = bytes([tag]) + self.recv(8)
            ev = {"tag": tag, "kind": "ack", "seq": struct.unpack("<Q", raw[1:])[0]}
        elif tag == 7:
            return self._read_msg()
        else:
            raise ValueError(f"unexpected tag {tag} ({TAG_NAMES.get(tag, '?')})")
        self.note(ev.pop("kind"), raw, **ev)
        return self.events[-1]

    def _read_msg(self) -> dict[str, Any]:
        head = self.recv(HEADER.size)
        flen, mlen, dlen = struct.unpack_from("<III", head, 22)
        fsize = FOOTER.size if self.msg_auth else FOOTER_OLD.size
        raw = b"\x07" + head + self.recv(flen + mlen + dlen + fsize)
        self.note("msg", raw, **describe_msg(raw, fsize))
        return self.events[-1]

    def send_msg(self, raw: bytes, **info: Any) -> None:
        fsize = FOOTER.size if self.msg_auth else FOOTER_OLD.size
        self.send("msg", raw, **describe_msg(raw, fsize), **info)

    def read_until(self, want: Callable[[dict[str, Any]], bool], limit: int = 20) -> dict[str, Any]:
        for _ in range(limit):
            ev = self.read_frame()
            if want(ev):
                return ev
        raise TimeoutError(f"no wanted frame within {limit} frames")

    def result(self, **meta: Any) -> dict[str, Any]:
        return {**meta, "events": self.events}


def _is_msg(mtype: int) -> Callable[[dict[str, Any]], bool]:
    return lambda ev: ev.get("type") == mtype


def _read_msgs(rec: Recorder, types: set[int]) -> dict[int, dict[str, Any]]:
    """Read frames until one message of each type in ``types`` arrived."""
    got: dict[int, dict[str, Any]] = {}
    while not types <= got.keys():
        ev = rec.read_until(lambda e: "type" in e)
        got.setdefault(ev["type"], ev)
    return got


def record_session(host: str, port: int) -> tuple[dict[str, Any], Recorder]:
    """The full client session with MSG_AUTH (21-byte footers)."""
    rec = Recorder(host, port)
    try:
        rec.send("banner", BANNER)
        reply = rec.handshake(FEATURES_FULL)
        if reply["tag"] != 13:
            raise RuntimeError(f"mon refused the connect: {reply}")
        seq = 1
        rec.send("keepalive2", b"\x0e" + struct.pack("<II", *KEEPALIVE_STAMP))
        rec.send_msg(frame(seq, 17, mauth_front()))
        got = _read_msgs(rec, {18, 4})
        global_id = struct.unpack_from("<Q", bytes.fromhex(got[18]["front"]), 8)[0]
        monmap = bytes.fromhex(got[4]["front"])
        fsid = monmap[10:26]  # u32 bl len, u8 v, u8 compat, u32 len, then the fsid
        # Later messages carry client.<global_id>, as the real client's second session does.
        seq += 1
        rec.send_msg(frame(seq, 15, subscribe_front({"monmap": 0, "config": 0}), version=3,
                           src_num=global_id))
        _read_msgs(rec, {62, 4})
        seq += 1
        rec.send_msg(frame(seq, 19, struct.pack("<Q", 1) + enc_str("osdmap"), src_num=global_id))
        _read_msgs(rec, {20})
        seq += 1
        cmd = json.dumps({"prefix": "mon stat", "format": "json"})
        front = paxos_head() + fsid + struct.pack("<I", 1) + enc_str(cmd)
        rec.send_msg(frame(seq, 50, front, tid=1, src_num=global_id), cmd=[cmd])
        _read_msgs(rec, {51})
        return rec.result(features=hex(FEATURES_FULL), footer_size=FOOTER.size,
                          global_id=global_id, fsid=str(uuid.UUID(bytes=fsid))), rec
    finally:
        rec.close()


def record_old_footer(host: str, port: int) -> tuple[dict[str, Any], Recorder]:
    """MSG_AUTH cleared: the mon's footers are 13 bytes."""
    rec = Recorder(host, port)
    try:
        rec.send("banner", BANNER)
        rec.handshake(FEATURES_NO_MSG_AUTH)
        rec.send("keepalive2", b"\x0e" + struct.pack("<II", *KEEPALIVE_STAMP))
        rec.send_msg(frame(1, 17, mauth_front(), msg_auth=False))
        _read_msgs(rec, {18, 4})
        return rec.result(features=hex(FEATURES_NO_MSG_AUTH), footer_size=FOOTER_OLD.size), rec
    finally:
        rec.close()


def record_minimal(host: str, port: int) -> tuple[dict[str, Any], Recorder]:
    """Only the required bits: READY, 13-byte footers, legacy MON_MAP, MON_SUBSCRIBE_ACK."""
    rec = Recorder(host, port)
    try:
        rec.send("banner", BANNER)
        reply = rec.handshake(FEATURES_MINIMAL)
        if reply["tag"] != 1:
            raise RuntimeError(f"expected READY, got {reply}")
        rec.send("keepalive2", b"\x0e" + struct.pack("<II", *KEEPALIVE_STAMP))
        rec.send_msg(frame(1, 17, mauth_front(), msg_auth=False))
        _read_msgs(rec, {18, 4})
        # Without MON_STATEFUL_SUB (bit 57) the mon acks the subscription.
        rec.send_msg(frame(2, 15, subscribe_front({"monmap": 0, "config": 0}), version=3,
                           msg_auth=False))
        _read_msgs(rec, {62, 4, 16})
        return rec.result(features=hex(FEATURES_MINIMAL), footer_size=FOOTER_OLD.size), rec
    finally:
        rec.close()


def record_connect_replies(host: str, port: int) -> dict[str, Any]:
    """Refused connects are answered on the same socket; each case on a fresh one."""
    cases = [("features_0", {"features": 0}, 12),
             ("protocol_0", {"features": FEATURES_FULL, "proto": 0}, 10),
             ("no_reconnect_seq", {"features": FEATURES_FULL & ~FEATURE_RECONNECT_SEQ}, 1),
             ("seq", {"features": FEATURES_FULL}, 13)]
    out: dict[str, Any] = {"cases": {}}
    for name, kw, want_tag in cases:
        rec = Recorder(host, port)
        try:
            rec.send("banner", BANNER)
            reply = rec.handshake(**kw)
        finally:
            rec.close()
        if reply["tag"] != want_tag:
            raise RuntimeError(f"{name}: expected tag {want_tag}, got {reply}")
        out["cases"][name] = {"sent": kw | {"features": hex(kw["features"])}, "events": rec.events}
    return out


def mon_version() -> str:
    try:
        return subprocess.run(["ceph-mon", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return "unknown"


SESSIONS: dict[str, Callable[[str, int], tuple[dict[str, Any], Recorder]]] = {
    "real_mon_session": record_session,
    "real_mon_session_old_footer": record_old_footer,
    "real_mon_session_minimal": record_minimal,
}
CONNECT_REPLIES = "real_mon_connect_replies"


def record_all(host: str, port: int, out_dir: Path,
               only: list[str] | None = None) -> list[Path]:
    """Run the sessions (all, or the stems in ``only``) against ``host:port``; write the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(only or [*SESSIONS, CONNECT_REPLIES])
    unknown = wanted - {*SESSIONS, CONNECT_REPLIES}
    if unknown:
        raise ValueError(f"unknown sessions {sorted(unknown)}")
    meta = {"recorded_with": "tests/record_real_mon.py", "ceph_version": mon_version(),
            "mon_addr": f"v1:{host}:{port}/0",
            "client_nonce": CLIENT_NONCE, "keepalive_stamp": list(KEEPALIVE_STAMP)}
    written = []
    for stem, fn in SESSIONS.items():
        if stem not in wanted:
            continue
        result, rec = fn(host, port)
        written.append(_write_json(out_dir / f"{stem}.json", {**meta, **result}))
        for d in ("rx", "tx"):
            path = out_dir / f"{stem}.{d}.bin"
            path.write_bytes(bytes(getattr(rec, d)))
            written.append(path)
    if CONNECT_REPLIES in wanted:
        written.append(_write_json(out_dir / f"{CONNECT_REPLIES}.json",
                                   {**meta, **record_connect_replies(host, port)}))
    return written


def _write_json(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mon", help="HOST:PORT of a v1 mon (auth none); default: start a throwaway one")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--only", action="append", choices=[*SESSIONS, CONNECT_REPLIES],
                    help="record just this file (repeatable); other tests read the existing ones")
    args = ap.parse_args(argv)
    if args.mon:
        host, _, port = args.mon.rpartition(":")
        paths = record_all(host, int(port), Path(args.out), args.only)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cephmon import CephMon
        with CephMon() as mon:
            paths = record_all(mon.host, mon.port, Path(args.out), args.only)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
