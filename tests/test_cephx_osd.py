"""cephx against a real ceph-osd 16 (memstore, msgr v1): authorizer, challenge, signed messages.

The Messenger does not put cephx authorizers in its handshake yet
(docs/CEPHX.md), so this test speaks the v1 handshake itself over a plain
socket, with pymsgr's wire structs and msgr.auth: our ticket for the OSD
comes from the real monitor, the OSD challenges our first authorizer, takes
the answered one, proves it opened our ticket (nonce + 1), and exchanges
CEPHX_V2-signed messages with us (an MCommand ``version`` and its reply).
A message with a bad signature is refused by the OSD.
"""
from __future__ import annotations

import json
import socket
import struct
import time
import uuid
from collections.abc import Iterator

import pytest
from cephosd import OSD_BINARIES, CephOsd
from conftest import require_binary
from test_cephx_interop import MonLink, _admin

from msgr.auth.mon_exchange import authenticate
from msgr.auth.signatures import sign_v2
from msgr.auth.tickets import Authorizer
from msgr.crc import crc32c
from msgr.entity import EntityAddr, EntityName
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, CEPHX_V2, MSG_AUTH, has_feature
from msgr.wire import BANNER, ConnectMsg, ConnectReply, MsgFooter, MsgHeader, Tag

pytestmark = pytest.mark.ceph
OSD = EntityName.TYPE_OSD
CEPH_MSG_COMMAND, CEPH_MSG_COMMAND_REPLY = 97, 98
FOOTER_COMPLETE, FOOTER_SIGNED = 1, 4
OSD_PROTOCOL = 24  # CEPH_OSDC_PROTOCOL: what a client puts in its connect to an OSD
SIGNATURE_FAILED = "Signature check failed"  # what ceph-osd 16 logs (level 0) for a bad signature


@pytest.fixture(scope="module")
def osd_cluster() -> Iterator[tuple]:
    from cephmon import CephMon
    require_binary("ceph-mon", "monmaptool", "ceph-authtool", *OSD_BINARIES)
    mon = CephMon(cephx=True, extra_conf=CephOsd.MON_CONF).start()
    osd = None
    try:
        osd = CephOsd(mon).start()
        yield mon, osd
    finally:
        if osd is not None:
            osd.stop()
        mon.stop()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return out


class RawOsdSession:
    """One lossy client session to the OSD, handshake by hand."""

    def __init__(self, addr: str, authorizer: Authorizer, global_id: int) -> None:
        self.addr = EntityAddr.parse(addr)
        self.sock = socket.socket()  # connected by handshake()
        self.authorizer = authorizer
        self.global_id = global_id
        self.replies: list[tuple[ConnectReply, bytes]] = []
        self.seq = 0

    def handshake(self) -> ConnectReply:
        self.sock.close()
        s = self.sock = socket.create_connection((self.addr.ip, self.addr.port), timeout=10)
        s.sendall(BANNER)
        ident = _recv_exact(s, 9 + 136 + 136)
        assert ident[:9] == BANNER
        seen = EntityAddr.decode_legacy(ident, 9 + 136)
        s.sendall(EntityAddr.parse(f"v1:{seen.ip}:0/{12345}").encode_legacy())
        for _ in range(3):
            auth = self.authorizer.payload
            s.sendall(ConnectMsg(CEPH_FEATURES_ALL_PACIFIC, EntityName.TYPE_CLIENT, 1, 0, OSD_PROTOCOL,
                                 2, len(auth), 1).pack() + auth)
            reply = ConnectReply.unpack(_recv_exact(s, ConnectReply.SIZE))
            reply_auth = _recv_exact(s, reply.authorizer_len)
            self.replies.append((reply, reply_auth))
            if reply.tag == Tag.CHALLENGE_AUTHORIZER:
                self.authorizer.add_challenge(reply_auth)
                continue
            if reply.tag == Tag.SEQ:
                _recv_exact(s, 8)
                s.sendall(struct.pack("<Q", 0))
            return reply
        raise AssertionError(f"no READY/SEQ after {self.replies}")

    def send(self, mtype: int, front: bytes, key: bytes, good_sig: bool = True) -> None:
        self.seq += 1
        h = MsgHeader(seq=self.seq, tid=self.seq, type=mtype, front_len=len(front),
                      src_type=EntityName.TYPE_CLIENT, src_num=self.global_id)
        raw_h = h.pack()
        h = MsgHeader.unpack(raw_h)
        fcrc = crc32c(0, front)
        sig = sign_v2(key, h.crc, fcrc, len(front), 0, 0, 0, 0, h.seq) ^ (0 if good_sig else 1)
        ftr = MsgFooter(fcrc, 0, 0, sig, FOOTER_COMPLETE | FOOTER_SIGNED).pack()
        self.sock.sendall(bytes([Tag.MSG]) + raw_h + front + ftr)

    def recv_msg(self) -> tuple[MsgHeader, bytes, bytes, MsgFooter]:
        while True:
            tag = _recv_exact(self.sock, 1)[0]
            if tag in (Tag.ACK, Tag.KEEPALIVE2, Tag.KEEPALIVE2_ACK):
                _recv_exact(self.sock, 8)
                continue
            assert tag == Tag.MSG, tag
            h = MsgHeader.unpack(_recv_exact(self.sock, MsgHeader.SIZE))
            front = _recv_exact(self.sock, h.front_len)
            _recv_exact(self.sock, h.middle_len)
            data = _recv_exact(self.sock, h.data_len)
            return h, front, data, MsgFooter.unpack(_recv_exact(self.sock, MsgFooter.SIZE))

    def close(self) -> None:
        self.sock.close()


CHALLENGE_UNKNOWN = "Tag: Unknown (0x10)"


def unknown_tags_before_the_challenge(text: str) -> list[str]:
    """tshark's "Tag: Unknown" complaints before it meets tag 0x10 (CHALLENGE_AUTHORIZER), which it does
    not know. After it, tshark has lost the stream (for the real client too) and what it reports depends
    on how TCP cut the bytes (observed to vary between runs), so only what comes before is compared."""
    import re
    return re.findall(r"Tag: Unknown \(0x[0-9a-f]+\)", text.split(CHALLENGE_UNKNOWN, 1)[0])


def decoded_like_the_real_clients(tshark, mon, osd, ours_pcap) -> str:
    """tshark's text of our capture ``ours_pcap`` of a cephx session with ``osd``, checked against
    the real ceph CLI's (``tell osd.N version``, captured here): the authorizer decoded (protocol
    2), nothing Malformed, the challenge tag unknown to tshark in both and no other unknown tag
    before it."""
    import subprocess
    with tshark.capture(osd.port, "real.pcapng") as real_cap:
        r = subprocess.run(["ceph", "-c", str(mon.conf_path), "tell", f"osd.{osd.id}", "version"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
    ours = tshark.decode(ours_pcap, osd.port, display_filter="ceph")
    real = tshark.decode(real_cap.pcap, osd.port, display_filter="ceph")
    assert "Authentication Protocol: 2" in ours
    assert "Malformed" not in ours and "Malformed" not in real
    assert CHALLENGE_UNKNOWN in real and CHALLENGE_UNKNOWN in ours
    assert unknown_tags_before_the_challenge(ours) == unknown_tags_before_the_challenge(real) == []
    return str(ours)


def _command_front(fsid: str, cmd: dict) -> bytes:
    """MCommand's front: fsid (16 raw bytes) + vector<string> (the JSON command)."""
    text = json.dumps(cmd).encode()
    return uuid.UUID(fsid).bytes + struct.pack("<I", 1) + struct.pack("<I", len(text)) + text


def _session(mon, osd) -> tuple[RawOsdSession, bytes]:
    link = MonLink(mon.addr)
    try:
        c = _admin(mon)
        authenticate(c, link.send, link.recv)
    finally:
        link.close()
    auth = c.build_authorizer(OSD, time.time())
    key = c.tickets.handlers[OSD].session_key
    assert key is not None
    return RawOsdSession(osd.addr, auth, c.global_id), key.secret


def test_cephx_authorizer_challenge_and_signed_command(osd_cluster):
    mon, osd = osd_cluster
    sess, key = _session(mon, osd)
    try:
        reply = sess.handshake()
        tags = [r.tag for r, _ in sess.replies]
        # observed: the OSD always challenges the first authorizer, then accepts the answer
        assert tags[0] == Tag.CHALLENGE_AUTHORIZER and tags[-1] in (Tag.READY, Tag.SEQ)
        assert has_feature(reply.features, MSG_AUTH) and has_feature(reply.features, CEPHX_V2)
        sess.authorizer.verify_reply(sess.replies[-1][1])   # the OSD opened our ticket
        sess.send(CEPH_MSG_COMMAND, _command_front(mon.fsid, {"prefix": "version"}), key)
        h, front, data, f = sess.recv_msg()
        assert h.type == CEPH_MSG_COMMAND_REPLY
        assert f.flags & FOOTER_SIGNED
        assert f.sig == sign_v2(key, h.crc, f.front_crc, h.front_len, f.middle_crc, h.middle_len,
                                f.data_crc, h.data_len, h.seq)
        assert struct.unpack_from("<i", front)[0] == 0 and b"pacific" in data
    finally:
        sess.close()


def test_osd_refuses_a_badly_signed_message(osd_cluster):
    mon, osd = osd_cluster
    sess, key = _session(mon, osd)
    try:
        sess.handshake()
        sess.send(CEPH_MSG_COMMAND, _command_front(mon.fsid, {"prefix": "version"}), key,
                  good_sig=False)
        sess.sock.settimeout(5)
        # observed: the OSD faults the session at once (it closes the socket): no reply, no timeout
        with pytest.raises(ConnectionError):
            sess.recv_msg()
    finally:
        sess.close()
    # and it says why in its log (what test_cephx_messenger.py checks is absent for our messenger)
    deadline = time.monotonic() + 10
    while SIGNATURE_FAILED not in osd.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the OSD did not log the signature failure"
        time.sleep(0.1)


def test_tshark_decodes_the_osd_session_as_the_real_clients(osd_cluster, tshark):
    """tshark says of our cephx session with the OSD what it says of the real ceph CLI's.

    Observed: tshark 4.0 decodes the connect with its cephx authorizer (protocol 2), but does
    not know tag 0x10 (CHALLENGE_AUTHORIZER): it reports "Unknown tag" (an undecoded-data
    error, not Malformed) and loses the stream after it, for the real client too.
    """
    mon, osd = osd_cluster
    sess, key = _session(mon, osd)
    with tshark.capture(osd.port, "ours.pcapng") as cap:
        try:
            sess.handshake()
            sess.send(CEPH_MSG_COMMAND, _command_front(mon.fsid, {"prefix": "version"}), key)
            sess.recv_msg()
        finally:
            sess.close()
    ours = decoded_like_the_real_clients(tshark, mon, osd, cap.pcap)
    assert "Authentication Size: 174" in ours
