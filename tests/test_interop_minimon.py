"""A real ``ceph`` CLI against examples/minimon.py (pymsgr's public API as a monitor)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cephmon import free_port
from conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent


class MiniMonProc:
    """examples/minimon.py as a child process (its log lines kept in ``lines``) and a ceph.conf for
    the real CLI: no auth, or cephx with ``keyring`` (then given to minimon as its keyring)."""

    def __init__(self, tmp: Path, keyring: Path | None = None) -> None:
        self.port = free_port()
        self.fsid = str(uuid.uuid4())
        self.addr = f"v1:127.0.0.1:{self.port}"
        self.keyring = keyring
        auth = "none" if keyring is None else "cephx"
        self.conf = tmp / "ceph.conf"
        self.conf.write_text(
            "[global]\n"
            f"\tfsid = {self.fsid}\n\tmon host = {self.addr}\n"
            f"\tauth cluster required = {auth}\n\tauth service required = {auth}\n"
            f"\tauth client required = {auth}\n\tms bind msgr2 = false\n"
            + (f"\tkeyring = {keyring}\n" if keyring is not None else "")
            + f"\tlog file = {tmp}/client.log\n\tadmin socket = \n")
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "minimon.py"), "--bind", self.addr,
             "--fsid", self.fsid, "--id", "a", *([] if keyring is None else ["--keyring", str(keyring)])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            self.stop()
            raise RuntimeError("minimon did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "listening on" in line:
                self._ready.set()

    def ceph(self, *args: str, keyring: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real ``ceph`` CLI with this ceph.conf (and ``keyring`` instead of the conf's)."""
        extra = ["--keyring", str(keyring)] if keyring is not None else []
        return subprocess.run(["ceph", "-c", str(self.conf), "--connect-timeout", "15", *extra, *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def saw(self, text: str, timeout: float = 10.0) -> bool:
        """minimon printed a line containing ``text`` (its output is read by a thread: wait for it)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def explain(self, r: subprocess.CompletedProcess[str]) -> str:
        """What a failed CLI run said, and minimon's last log lines."""
        return f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-3000:]}\nminimon:\n" + \
            "\n".join(self.lines[-60:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def minimon(tmp_path: Path) -> Iterator[MiniMonProc]:
    require_binary("ceph")
    mm = MiniMonProc(tmp_path)
    yield mm
    mm.stop()


def test_real_ceph_ping_against_minimon(minimon: MiniMonProc) -> None:
    r = minimon.ceph("ping", "mon.a")
    assert r.returncode == 0, minimon.explain(r)
    status = json.loads(r.stdout)
    assert status["health"]["status"] == "HEALTH_OK"
    assert status["mon_status"]["monmap"]["fsid"] == minimon.fsid
    # the real client authenticated with auth none and pinged
    assert any("MAuth" in line and "protocol=0" in line for line in minimon.lines)
    assert any("<- MPing" in line for line in minimon.lines)


def test_real_ceph_mon_stat_against_minimon(minimon: MiniMonProc) -> None:
    r = minimon.ceph("mon", "stat", "--format", "json")
    assert r.returncode == 0, minimon.explain(r)
    st = json.loads(r.stdout)
    assert st["num_mons"] == 1 and st["leader"] == "a"
    assert any("get_command_descriptions" in line for line in minimon.lines)
    assert any("mon stat" in line for line in minimon.lines)


def test_real_ceph_mon_stat_plain(minimon: MiniMonProc) -> None:
    r = minimon.ceph("mon", "stat")
    assert r.returncode == 0, minimon.explain(r)
    assert r.stdout.startswith("e1: 1 mons at {a=[v1:127.0.0.1:") and "leader 0 a" in r.stdout


def test_real_ceph_status_against_minimon(minimon: MiniMonProc) -> None:
    r = minimon.ceph("-s")
    assert r.returncode == 0, minimon.explain(r)
    assert f"id:     {minimon.fsid}" in r.stdout and "HEALTH_OK" in r.stdout


# --- minimon's answers without sockets (fast; no Ceph needed) ------------------------

def _load_minimon():
    import importlib.util
    spec = importlib.util.spec_from_file_location("minimon", ROOT / "examples" / "minimon.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


class _FakeConn:
    features = 0x3F01CFBDFFFDFFFF

    def __init__(self) -> None:
        self.sent: list = []

    def send_message(self, msg) -> None:
        self.sent.append(msg)


def _deliver(mon, msg):
    """Encode ``msg`` as the peer would, decode it as minimon gets it, return minimon's replies."""
    from msgr.message import decode_message
    msg._encode(_FakeConn.features)
    got = decode_message(msg.header, msg.front, msg.middle, msg.data)
    conn = _FakeConn()
    got._set_connection(conn)
    assert mon.ms_dispatch(got)
    out = []
    for reply in conn.sent:
        reply._encode(conn.features)
        out.append(decode_message(reply.header, reply.front, reply.middle, reply.data))
    return out


def test_minimon_answers_like_a_monitor() -> None:
    mod = _load_minimon()
    from msgr.encoding import Decoder
    from msgr.entity import EntityAddr
    from msgr.messages import MAuth, MAuthReply, MConfig, MMonCommand, MMonCommandAck, MMonMap, MMonSubscribe, MPing
    fsid = uuid.uuid4()
    mon = mod.MiniMon(EntityAddr.parse("v1:127.0.0.1:6789/0"), fsid, "a", verbose=False)
    rep, mm = _deliver(mon, MAuth.none_request())
    assert isinstance(rep, MAuthReply) and (rep.protocol, rep.result) == (1, 0) and rep.global_id >= 4097
    assert isinstance(mm, MMonMap) and mm.monmap.fsid == fsid and mm.monmap.ranks == ["a"]
    assert isinstance(_deliver(mon, MAuth.none_request(methods=[2]))[0], MAuthReply)
    assert _deliver(mon, MAuth.none_request(methods=[2]))[0].result == -95
    cfg, mm = _deliver(mon, MMonSubscribe(hostname="h").add("config").add("monmap"))
    assert isinstance(cfg, MConfig) and isinstance(mm, MMonMap)
    (pong,) = _deliver(mon, MPing())
    assert json.loads(Decoder(pong.front).string())["mon_status"]["monmap"]["fsid"] == str(fsid)
    cmd = MMonCommand([json.dumps({"prefix": "mon stat", "format": "json"})], fsid)
    cmd.tid = 7
    (ack,) = _deliver(mon, cmd)
    assert isinstance(ack, MMonCommandAck) and ack.tid == 7 and ack.r == 0
    assert json.loads(ack.outbl)["leader"] == "a"
    (ack,) = _deliver(mon, MMonCommand([json.dumps({"prefix": "get_command_descriptions"})], fsid))
    assert ["mon", "stat"] in [c["sig"] for c in json.loads(ack.outbl).values()]
    (ack,) = _deliver(mon, MMonCommand([json.dumps({"prefix": "osd tree"})], fsid))
    assert ack.r == -22
