"""A pymsgr Messenger as a cephx client of a real cluster (ceph-mon + ceph-osd 16, msgr v1).

``MonAuth.login`` authenticates the messenger with the monitor; its connects to the OSD then
carry a cephx authorizer, answer the OSD's authorizer challenge, verify the OSD's authorizer
reply, and sign every message (CEPHX_V2) and check every signature the OSD sends. The OSD
answers an MCommand ``version``: it accepted our signature; our receive path accepted its.
"""
from __future__ import annotations

import json
import struct
import time
import uuid
from typing import Any

import pytest
from test_cephx_osd import (  # noqa: F401  (osd_cluster: the module fixture, a cephx mon + osd.0)
    SIGNATURE_FAILED,
    decoded_like_the_real_clients,
    osd_cluster,
)

from msgr import Config, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.auth.errors import AuthError
from msgr.features import CEPHX_V2, MSG_AUTH, has_feature
from msgr.monc import MonAuth
from msgr.probe import EventCollector
from msgr.wire import FOOTER_SIGNED

pytestmark = pytest.mark.ceph
OSD, MON = EntityName.TYPE_OSD, EntityName.TYPE_MON
CEPH_MSG_COMMAND, CEPH_MSG_COMMAND_REPLY = 97, 98


class Collector(EventCollector):
    def wait(self, kind: str, mtype: int = CEPH_MSG_COMMAND_REPLY, timeout: float = 20.0) -> Any:
        """The next event of ``kind`` (a message: of type ``mtype``; the monitor's are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            k, obj = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if k == kind and (k != "msg" or obj.get_type() == mtype):
                return obj


def command(fsid: str, cmd: dict, tid: int) -> Message:
    """MCommand (type 97): fsid (16 raw bytes) + vector<string> holding the JSON command."""
    text = json.dumps(cmd).encode()
    m = Message()
    m.header.type = CEPH_MSG_COMMAND
    m.front = uuid.UUID(fsid).bytes + struct.pack("<II", 1, len(text)) + text
    m.tid = tid
    return m


@pytest.fixture
def client(osd_cluster):  # noqa: F811
    mon, osd = osd_cluster
    cfg = Config(name="client.admin", keyring=str(mon.keyring_path), auth_client_required="cephx")
    ms = Messenger.create(EntityName.client(), config=cfg)
    ms.set_policy(MON, Policy.lossy_client())
    ms.set_policy(OSD, Policy.lossy_client())
    disp = Collector()
    ms.add_dispatcher_tail(disp)
    ms.start()
    try:
        yield mon, osd, ms, disp
    finally:
        ms.shutdown()
        ms.wait()


def test_messenger_logs_in_and_exchanges_signed_messages_with_the_osd(client):
    mon, osd, ms, disp = client
    login = MonAuth(ms, EntityAddr.parse(mon.addr))
    assert login.login() >= 2 and login.global_id > 0
    conn = ms.connect_to(OSD, EntityAddr.parse(osd.addr))
    conn.send_message(command(mon.fsid, {"prefix": "version"}, tid=7))
    reply = disp.wait("msg")
    assert reply.get_type() == CEPH_MSG_COMMAND_REPLY and reply.tid == 7
    assert struct.unpack_from("<i", reply.front)[0] == 0 and b"pacific" in bytes(reply.data)
    # the OSD signed its reply (our receive path checked it before delivering)
    assert reply.footer.flags & FOOTER_SIGNED and reply.footer.sig != 0
    assert has_feature(conn.features, MSG_AUTH) and has_feature(conn.features, CEPHX_V2)
    assert login.auth_client.built == 1   # one authorizer, challenged once and answered
    signer = conn._proto._signer
    assert signer is not None and signer.signed == 1 and signer.checked == 1
    # more traffic on the same session: every message signed both ways
    for tid in range(8, 12):
        conn.send_message(command(mon.fsid, {"prefix": "version"}, tid=tid))
    got = sorted(disp.wait("msg").tid for _ in range(4))
    assert got == [8, 9, 10, 11] and signer.checked == 5
    # keepalives (never signed) are acked on the signed session
    before = conn._proto.last_keepalive_ack_stamp
    conn.send_keepalive()
    deadline = time.monotonic() + 10
    while conn._proto.last_keepalive_ack_stamp == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert conn._proto.last_keepalive_ack_stamp != before and conn.is_connected()
    # the OSD found nothing wrong with any of our signatures (it logs a failure at level 0)
    assert SIGNATURE_FAILED not in osd.log_path.read_text(errors="replace")


def test_messenger_without_login_is_refused_by_the_cephx_osd(client):
    mon, osd, ms, disp = client
    conn = ms.connect_to(OSD, EntityAddr.parse(osd.addr))   # auth none: the OSD requires cephx
    conn.send_message(command(mon.fsid, {"prefix": "version"}, tid=1))
    assert disp.wait("reset") is conn
    assert "BADAUTHORIZER" in (conn.last_fault or "")


def test_login_with_a_wrong_key_is_a_typed_error(client, tmp_path):
    from msgr.auth import CryptoKey, PermissionDeniedError
    from msgr.auth.settings import client_auth
    mon, osd, ms, disp = client
    bad = tmp_path / "bad.keyring"
    bad.write_text(f"[client.admin]\n\tkey = {CryptoKey.generate().to_base64()}\n")
    cfg = Config(name="client.admin", keyring=str(bad), auth_client_required="cephx")
    with pytest.raises(PermissionDeniedError):
        MonAuth(ms, EntityAddr.parse(mon.addr), auth=client_auth(cfg)).login()
    with pytest.raises(AuthError):
        MonAuth(ms, EntityAddr.parse(mon.addr),
                auth=client_auth(Config(name="client.admin", keyring=str(tmp_path / "none"),
                                        auth_client_required="cephx, none")))


def test_user_guide_cephx_example_runs_against_the_cluster(osd_cluster):  # noqa: F811
    """docs/USER_GUIDE.md §11's example, run as written against the real mon and OSD."""
    import re
    from pathlib import Path
    guide = (Path(__file__).resolve().parent.parent / "docs" / "USER_GUIDE.md").read_text()
    code = re.search(r"```python\n(from msgr import Config, EntityAddr.*?)```", guide, re.S)
    assert code, "the cephx example is missing from the user guide"
    mon, osd = osd_cluster
    disp = Collector()
    ns: dict[str, Any] = {"__name__": "user_guide_cephx", "keyring": str(mon.keyring_path),
                          "mon_addr": mon.addr, "osd_addr": osd.addr, "dispatcher": disp,
                          "request": command(mon.fsid, {"prefix": "version"}, tid=3)}
    try:
        exec(compile(code.group(1), "docs/USER_GUIDE.md", "exec"), ns)
        reply = disp.wait("msg")
        assert reply.tid == 3 and reply.footer.flags & FOOTER_SIGNED
    finally:
        ms = ns.get("ms")
        if ms is not None:
            ms.shutdown()
            ms.wait()


def test_tshark_decodes_the_messengers_osd_session(client, tshark):
    """tshark says of the Messenger's cephx session with the OSD no more than of the real CLI's:
    the authorizer decoded, no Malformed; it does not know tag 0x10 (CHALLENGE_AUTHORIZER) and then
    reads the second connect as a tag (observed for the real client too, tests/test_cephx_osd.py)."""
    mon, osd, ms, disp = client
    MonAuth(ms, EntityAddr.parse(mon.addr)).login()
    with tshark.capture(osd.port, "messenger.pcapng") as cap:
        conn = ms.connect_to(OSD, EntityAddr.parse(osd.addr))
        conn.send_message(command(mon.fsid, {"prefix": "version"}, tid=1))
        disp.wait("msg")
        conn.mark_down()
    decoded_like_the_real_clients(tshark, mon, osd, cap.pcap)
