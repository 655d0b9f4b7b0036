"""The real-monitor fixtures themselves: the mon answers, stops cleanly, captures work."""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cephmon
from cephmon import CephMon, CephMonError, missing_binaries

TESTS_DIR = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; it only counts as alive if it is not one.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_mon_answers_ping(ceph_mon: CephMon, ceph_cli) -> None:
    r = ceph_cli("ping", "mon.a", timeout=30)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["mon_status"]["name"] == "a"
    assert status["mon_status"]["state"] == "leader"
    assert status["mon_status"]["monmap"]["fsid"] == ceph_mon.fsid


def test_mon_status_reports_our_v1_address(ceph_mon: CephMon, ceph_cli) -> None:
    r = ceph_cli("mon", "dump", "--format", "json", timeout=30)
    assert r.returncode == 0, r.stderr
    monmap = json.loads(r.stdout)
    addrs = monmap["mons"][0]["public_addrs"]["addrvec"]
    assert addrs == [{"type": "v1", "addr": f"127.0.0.1:{ceph_mon.port}", "nonce": 0}]


def test_fixture_attributes(ceph_mon: CephMon) -> None:
    assert ceph_mon.host == "127.0.0.1"
    assert ceph_mon.addr == f"v1:127.0.0.1:{ceph_mon.port}"
    conf = ceph_mon.conf_path.read_text()
    assert f"mon host = {ceph_mon.addr}" in conf
    assert "ms bind msgr2 = false" in conf
    assert ceph_mon.pid is not None and _alive(ceph_mon.pid)
    assert ceph_mon.log_path.exists()


def test_stop_kills_the_mon_and_removes_its_dir(ceph_mon_factory) -> None:
    mon = ceph_mon_factory()
    pid = mon.pid
    assert pid is not None and _alive(pid)
    port, mon_dir = mon.port, mon.dir
    mon.stop()
    assert not _alive(pid)
    assert not mon_dir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    mon.stop()  # idempotent


def test_sigkill_after_grace_when_sigterm_is_ignored(ceph_mon_factory) -> None:
    mon = ceph_mon_factory()
    pid = mon.pid
    assert pid is not None
    # SIGSTOP makes the mon ignore SIGTERM (it stays pending), like a hung daemon.
    os.kill(pid, signal.SIGSTOP)
    mon._kill(grace=0.5)
    assert not _alive(pid)


def test_lost_port_race_moves_to_another_port(tmp_path: Path) -> None:
    if missing_binaries("ceph-mon", "monmaptool"):
        pytest.skip("needs ceph-mon")
    mon = CephMon(tmp_path / "mon")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    first = taken.getsockname()[1]
    picks = iter([first])
    real_free_port = cephmon.free_port
    # The first pick is a port someone else listens on; later picks are real.
    cephmon.free_port = lambda host="127.0.0.1": next(picks, None) or real_free_port(host)
    try:
        mon.start()
        assert mon.port != first
        assert mon.running()
    finally:
        cephmon.free_port = real_free_port
        mon.stop()
        taken.close()


def test_fixed_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    if missing_binaries("ceph-mon", "monmaptool"):
        pytest.skip("needs ceph-mon")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mon = CephMon(tmp_path / "mon", port=taken.getsockname()[1])
        with pytest.raises(CephMonError, match="Address already in use"):
            mon.start()
        mon.stop()


def test_debug_ms_param_reaches_the_mon_log(ceph_mon_factory) -> None:
    mon = ceph_mon_factory(debug_ms=20)
    with socket.create_connection((mon.host, mon.port), timeout=5) as s:
        s.recv(281)
    assert "debug ms = 20" in mon.conf_path.read_text()
    # At level 20 the messenger logs each accepted socket.
    log = mon.log_path.read_text(errors="replace")
    assert "accept" in log


def _set_child_subreaper(on: bool) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(36, int(on)) == 0  # PR_SET_CHILD_SUBREAPER


def test_no_mon_outlives_a_killed_pytest(tmp_path: Path) -> None:
    """A hard-killed test process takes its mon with it (PR_SET_PDEATHSIG)."""
    if missing_binaries("ceph-mon", "monmaptool"):
        pytest.skip("needs ceph-mon")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from cephmon import CephMon
        mon = CephMon({str(tmp_path / 'mon')!r}).start()
        print(mon.pid, flush=True)
        time.sleep(60)
    """)
    # The orphaned mon is re-parented to us, so we can reap it and leave no zombie.
    if not _set_child_subreaper(True):
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) unavailable")
    try:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            pid = int(child.stdout.readline())
            assert _alive(pid)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        deadline = time.monotonic() + 5
        reaped = False
        while time.monotonic() < deadline and not reaped:
            with contextlib.suppress(ChildProcessError):
                reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
            time.sleep(0.02)
        assert reaped, "the mon survived its parent's SIGKILL"
    finally:
        _set_child_subreaper(False)


def test_tshark_capture_sees_the_banner(ceph_mon: CephMon, tshark) -> None:
    with tshark.capture(ceph_mon.port) as cap:
        with socket.create_connection((ceph_mon.host, ceph_mon.port), timeout=5) as s:
            got = b""
            while len(got) < 9:
                got += s.recv(281)
    text = tshark.decode(cap.pcap, ceph_mon.port)
    # The capture holds the mon's banner and no UDP readiness probes.
    assert "ceph v027" in text
    assert "pymsgr-probe" not in text
    packets = json.loads(tshark.decode(cap.pcap, ceph_mon.port, fmt="json"))
    assert any("ceph" in p["_source"]["layers"] for p in packets)
