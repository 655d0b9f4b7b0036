"""The real ``ceph`` CLI (cephx) against examples/minimon.py --keyring: pymsgr as the auth server.

The keyring is made by ``ceph-authtool`` (client.admin with caps); minimon answers MAuth with
msgr.auth.cephx_mon. The real CLI authenticates (challenge, proof, session key, tickets) and
runs ``mon stat`` and ``ping mon.a``; with a key minimon does not know it is refused as a real
monitor refuses (permission denied). pymsgr's own client logs in against it too.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_binary
from test_interop_minimon import MiniMonProc

from msgr import Config, EntityAddr, EntityName, Messenger, Policy
from msgr.auth import CryptoKey, PermissionDeniedError
from msgr.auth.settings import client_auth
from msgr.monc import MonAuth

pytestmark = pytest.mark.ceph


class CephxMiniMon(MiniMonProc):
    """examples/minimon.py --keyring as a child process, and a ceph.conf requiring cephx; the
    keyring (client.admin and osd.5 with caps) made by ceph-authtool."""

    def __init__(self, tmp: Path) -> None:
        keyring = tmp / "keyring"
        for args in (["--create-keyring", "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *",
                      "--cap", "osd", "allow *"],
                     ["--gen-key", "-n", "osd.5", "--cap", "mon", "allow profile osd"]):
            r = subprocess.run(["ceph-authtool", str(keyring), *args], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
        super().__init__(tmp, keyring)


@pytest.fixture(scope="module")
def cephx_minimon(tmp_path_factory) -> Iterator[CephxMiniMon]:
    require_binary("ceph", "ceph-authtool")
    mm = CephxMiniMon(tmp_path_factory.mktemp("cephx-minimon"))
    yield mm
    mm.stop()


def test_real_ceph_cli_authenticates_with_cephx_and_runs_mon_stat(cephx_minimon):
    mm = cephx_minimon
    r = mm.ceph("mon", "stat", "--format", "json")
    assert r.returncode == 0, mm.explain(r)
    st = json.loads(r.stdout)
    assert st["num_mons"] == 1 and st["leader"] == "a"
    # it negotiated cephx and got its session key from us (result 0), not auth none
    assert mm.saw("cephx client.admin: GET_AUTH_SESSION_KEY result 0"), mm.explain(r)
    assert any("MAuth" in line and "protocol=0" in line and "methods=[2]" in line for line in mm.lines), \
        mm.explain(r)


def test_real_ceph_ping_with_cephx(cephx_minimon):
    mm = cephx_minimon
    r = mm.ceph("ping", "mon.a")
    assert r.returncode == 0, mm.explain(r)
    assert json.loads(r.stdout)["mon_status"]["monmap"]["fsid"] == mm.fsid


def test_real_ceph_cli_with_an_unknown_key_is_refused(cephx_minimon, tmp_path):
    mm = cephx_minimon
    bad = tmp_path / "bad.keyring"
    bad.write_text(f"[client.admin]\n\tkey = {CryptoKey.generate().to_base64()}\n")
    r = mm.ceph("mon", "stat", keyring=bad)
    assert r.returncode != 0 and "permission denied" in r.stderr.lower(), mm.explain(r)
    assert mm.saw("cephx client.admin: GET_AUTH_SESSION_KEY result -13")


def test_pymsgr_client_logs_in_to_minimon(cephx_minimon, tmp_path):
    mm = cephx_minimon
    ms = Messenger.create(EntityName.client(), config=Config(
        name="client.admin", keyring=str(mm.keyring), auth_client_required="cephx"))
    ms.set_policy(EntityName.TYPE_MON, Policy.lossy_client())
    ms.start()
    try:
        login = MonAuth(ms, EntityAddr.parse(mm.addr + "/0"))
        assert login.login() == 2 and login.global_id >= 4097
        assert {EntityName.TYPE_MON, EntityName.TYPE_OSD, EntityName.TYPE_MGR} <= set(login.cephx.tickets.handlers)
        bad = tmp_path / "bad.keyring"
        bad.write_text(f"[client.admin]\n\tkey = {CryptoKey.generate().to_base64()}\n")
        with pytest.raises(PermissionDeniedError):
            MonAuth(ms, EntityAddr.parse(mm.addr + "/0"), auth=client_auth(Config(
                name="client.admin", keyring=str(bad), auth_client_required="cephx"))).login()
    finally:
        ms.shutdown()
        ms.wait()


def test_a_cluster_of_pymsgr_only_with_cephx(cephx_minimon):
    """minimon is the monitor, a pymsgr osd.5 gets its rotating secrets from it and serves, a pymsgr
    client gets its OSD ticket from it: the session between them is authorized and signed."""
    import queue

    from msgr import Dispatcher, Message
    from msgr.messages.ping import MPing
    mm = cephx_minimon
    got: queue.Queue[Message] = queue.Queue()

    class Take(Dispatcher):
        def ms_dispatch(self, msg: Message) -> bool:
            got.put(msg)
            return isinstance(msg, MPing)

    mon_addr = EntityAddr.parse(mm.addr + "/0")
    svc = Messenger.create(EntityName.osd(5), config=Config(name="osd.5", keyring=str(mm.keyring),
                                                            auth_client_required="cephx"))
    svc.set_policy(EntityName.TYPE_MON, Policy.lossy_client())
    svc.set_policy(EntityName.TYPE_CLIENT, Policy.stateless_server())
    svc.add_dispatcher_tail(Take())
    addr = svc.bind(EntityAddr.parse("v1:127.0.0.1:0/0"))
    svc.start()
    cli = Messenger.create(EntityName.client(), config=Config(name="client.admin", keyring=str(mm.keyring),
                                                              auth_client_required="cephx"))
    cli.set_policy(EntityName.TYPE_MON, Policy.lossy_client())
    cli.set_policy(EntityName.TYPE_OSD, Policy.lossy_client())
    cli.start()
    try:
        slogin = MonAuth(svc, mon_addr)
        slogin.login()
        server = slogin.serve()
        assert mm.saw("osd.5: GET_ROTATING_KEY result 0")
        MonAuth(cli, mon_addr).login()
        conn = cli.connect_to(EntityName.TYPE_OSD, addr)
        conn.send_message(MPing())
        while not isinstance(m := got.get(timeout=10), MPing):
            pass
        assert m.footer is not None and m.footer.flags & 4   # signed
        assert server.accepted == 1 and server.refused == 0
    finally:
        cli.shutdown()
        cli.wait()
        svc.shutdown()
        svc.wait()
