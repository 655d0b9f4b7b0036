"""cephx against a real ceph-mon 16 that requires it (the ``cephx_mon`` fixture).

The fixture's keyring is made by ceph-authtool (``mon.``, ``client.admin``);
the real ``ceph`` CLI proves the fixture, then pymsgr's client authenticates,
gets its tickets, uses the session (monmap), renews, and meets the
monitor's refusals (wrong key, unknown entity, auth none only).
"""
from __future__ import annotations

import queue
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy
from msgr.auth import (
    CephxClient,
    CryptoKey,
    Keyring,
    PermissionDeniedError,
    UnsupportedAuthError,
    parse_entity_name,
)
from msgr.auth.mon_exchange import authenticate, renew
from msgr.messages import MAuth, MAuthReply, MMonMap, MMonSubscribe
from msgr.wire import Priority

OSD, MGR, MON, AUTH = (EntityName.TYPE_OSD, EntityName.TYPE_MGR, EntityName.TYPE_MON,
                       EntityName.TYPE_AUTH)


class _Inbox(Dispatcher):
    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue()

    def ms_dispatch(self, msg: Any) -> bool:
        self.q.put(msg)
        return True


class MonLink:
    """One lossy client connection to the monitor with a queue of what it sends us."""

    def __init__(self, addr: str) -> None:
        self.inbox = _Inbox()
        self.ms = Messenger.create(EntityName.client(), config=Config())
        self.ms.set_policy(EntityName.TYPE_MON, Policy.lossy_client())
        self.ms.add_dispatcher_tail(self.inbox)
        self.ms.start()
        self.conn = self.ms.connect_to(EntityName.TYPE_MON, EntityAddr.parse(addr))

    def send(self, msg: Any) -> None:
        msg.set_priority(Priority.DEFAULT)
        self.conn.send_message(msg)

    def recv(self, cls: type = MAuthReply, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            m = self.inbox.q.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(m, cls):
                return m

    def close(self) -> None:
        self.ms.shutdown()
        self.ms.wait()


@pytest.fixture
def link(cephx_mon) -> Iterator[MonLink]:
    lk = MonLink(cephx_mon.addr)
    yield lk
    lk.close()


def _admin(mon) -> CephxClient:
    kr = Keyring.load(mon.keyring_path)
    return CephxClient(parse_entity_name("client.admin"), kr.get_key("client.admin"))


def test_real_ceph_cli_runs_mon_stat_with_cephx(cephx_mon, tmp_path):
    from conftest import require_binary
    require_binary("ceph")
    conf = cephx_mon.conf_path.read_text()
    assert "auth client required = cephx" in conf and f"keyring = {cephx_mon.keyring_path}" in conf
    r = cephx_mon.ceph_cli("mon", "stat")
    assert r.returncode == 0, r.stderr
    assert "1 mons at" in r.stdout and "quorum 0 a" in r.stdout
    # the same CLI with a keyring whose key the monitor does not know is refused
    bad = tmp_path / "bad.keyring"
    bad.write_text(f"[client.admin]\n\tkey = {CryptoKey.generate().to_base64()}\n")
    r = subprocess.run(["ceph", "-c", str(cephx_mon.conf_path), "--keyring", str(bad),
                        "--connect-timeout", "10", "mon", "stat"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "permission denied" in r.stderr.lower()


def test_pymsgr_authenticates_and_uses_the_session(cephx_mon, link):
    c = _admin(cephx_mon)
    rounds = authenticate(c, link.send, link.recv)
    assert c.authenticated and c.global_id > 0
    assert rounds == 2  # challenge, then the session key with every other ticket in one reply
    now = time.time()
    t = c.tickets.handlers
    assert {AUTH, MON, OSD, MGR} <= set(t) and all(h.have_key(now) for h in t.values())
    assert t[AUTH].validity == 72 * 3600 and t[OSD].validity == 3600  # Ceph's default ttls
    # the monitor serves an authenticated session: subscribe to the monmap
    link.send(MMonSubscribe(hostname="pymsgr-cephx").add("monmap"))
    m = link.recv(MMonMap)
    assert m.monmap.fsid == cephx_mon.fsid or str(m.monmap.fsid) == cephx_mon.fsid
    # authorizers for the daemons can be built from the tickets
    assert c.build_authorizer(OSD, now).payload


def test_renewal_before_expiry_gets_new_keys_from_the_monitor(cephx_mon, link):
    c = _admin(cephx_mon)
    authenticate(c, link.send, link.recv)
    t = c.tickets.handlers
    old = {k: h.session_key for k, h in t.items()}
    old_auth_ticket = t[AUTH].ticket
    # three quarters into the service tickets' hour: GET_PRINCIPAL_SESSION_KEY
    clock = time.time() + 2800
    assert c.needs_renewal(clock)
    assert renew(c, link.send, link.recv, clock=lambda: clock) == 1
    assert all(t[s].session_key != old[s] for s in (MON, OSD, MGR))
    assert t[AUTH].session_key == old[AUTH]
    # 54 h into the auth ticket's 72: GET_AUTH_SESSION_KEY presenting the old ticket
    clock = time.time() + 54 * 3600 + 60
    assert renew(c, link.send, link.recv, clock=lambda: clock) >= 1
    assert t[AUTH].session_key != old[AUTH] and t[AUTH].ticket != old_auth_ticket
    assert not c.needs_renewal(clock)


def test_wrong_key_is_permission_denied(cephx_mon, link):
    c = CephxClient(parse_entity_name("client.admin"), CryptoKey.generate())
    with pytest.raises(PermissionDeniedError, match="GET_AUTH_SESSION_KEY") as ei:
        authenticate(c, link.send, link.recv)
    assert ei.value.result == -13 and not c.authenticated


def test_unknown_entity_is_refused(cephx_mon, link):
    # Observed: the monitor challenges any name, then answers -EACCES to the proof,
    # exactly as for a wrong key: on the wire the two cannot be told apart.
    c = CephxClient(parse_entity_name("client.nobody"), CryptoKey.generate())
    with pytest.raises(PermissionDeniedError, match="GET_AUTH_SESSION_KEY") as ei:
        authenticate(c, link.send, link.recv)
    assert not c.authenticated and ei.value.result == -13


def test_offering_auth_none_to_a_cephx_monitor_is_unsupported(cephx_mon, link):
    link.send(MAuth.none_request())
    r = link.recv()
    assert r.result < 0
    c = _admin(cephx_mon)
    c.initial_request()
    with pytest.raises(UnsupportedAuthError):
        c.handle_reply(r.protocol, r.result, r.global_id, r.result_bl, time.time())


def test_tshark_decodes_the_cephx_exchange(cephx_mon, tshark):
    """Both directions of the exchange decode as Ceph Auth / Auth Reply with protocol CephX.

    Observed (docs/CEPHX.md): over msgr v1 the monitor session is not signed (no
    SIGNED footer flag, signature 0) in either direction. tshark 4.0 does not
    decode the cephx bodies (it reports them as undecoded bytes, not Malformed);
    its MON_MAP decoder is Malformed on the real monitor's monmap v9, so frames
    from the MON_MAP on are left out of the check.
    """
    import re
    with tshark.capture(cephx_mon.port) as cap:
        lk = MonLink(cephx_mon.addr)
        try:
            authenticate(_admin(cephx_mon), lk.send, lk.recv)
        finally:
            lk.close()
    text = tshark.decode(cap.pcap, cephx_mon.port, display_filter="ceph")
    frames = [f for f in re.split(r"\n(?=Frame \d+:)", text) if f.startswith("Frame ")]
    auth = [f for f in frames if "C_CEPH_MSG_AUTH" in f]
    assert len(auth) >= 4, text[-3000:]
    joined = "\n".join(auth)
    assert "Supported Protocol: CephX (0x00000002)" in joined and "Entity Name: client.admin" in joined
    assert "Request Type: Get Auth Session Key" in joined
    assert joined.count("Auth Reply Message, Proto: CephX") >= 2
    bad = [f.splitlines()[0] for f in auth if "Malformed" in f.split("C_CEPH_MSG_MON_MAP")[0]]
    assert not bad, bad
    # neither side signs the v1 monitor session
    assert re.findall(r"Signature: (0x[0-9a-f]+)", joined) == ["0x0000000000000000"] * len(
        re.findall(r"Signature: ", joined))
