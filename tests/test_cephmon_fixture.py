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

import cephmon
import pytest
import record_real_mon as rrm
from cephmon import CephMon, CephMonError

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


def test_lost_port_race_moves_to_another_port(tmp_path: Path, ceph_mon_binaries: None) -> None:
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


def test_fixed_busy_port_is_a_clear_error(tmp_path: Path, ceph_mon_binaries: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mon = CephMon(tmp_path / "mon", port=taken.getsockname()[1])
        with pytest.raises(CephMonError, match="Address already in use"):
            mon.start()
        mon.stop()


def test_mon_that_exits_early_is_a_clear_error_with_its_log(tmp_path: Path,
                                                            ceph_mon_binaries: None) -> None:
    # 100% critical free-space threshold: the mon refuses to run (exit 28, ENOSPC).
    mon = CephMon(tmp_path / "mon", extra_conf={"mon data avail crit": "100"})
    with pytest.raises(CephMonError, match="exited with status 28") as err:
        mon.start()
    assert "concerning levels of available storage" in str(err.value)
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


def test_no_mon_outlives_a_killed_pytest(tmp_path: Path, ceph_mon_binaries: None) -> None:
    """A hard-killed test process takes its mon with it (PR_SET_PDEATHSIG)."""
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
    # Capturing was live before the body ran: the very first SYN is in the file.
    syns = json.loads(tshark.decode(
        cap.pcap, ceph_mon.port, fmt="json",
        display_filter=f"tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport=={ceph_mon.port}"))
    assert len(syns) == 1


@pytest.mark.parametrize("ceph_mon", [{"debug_ms": 20}], indirect=True)
def test_session_mon_takes_cephmon_kwargs(ceph_mon: CephMon) -> None:
    assert ceph_mon.debug_ms == 20
    assert "debug ms = 20" in ceph_mon.conf_path.read_text()


# --- the recording script and the recordings in tests/data -----------------------

DATA_DIR = TESTS_DIR / "data"
SESSIONS = ("real_mon_session", "real_mon_session_old_footer", "real_mon_session_minimal")


def check_recording(out_dir: Path, stem: str) -> dict:
    """Self-consistency of one recorded session; returns the parsed JSON."""
    doc = json.loads((out_dir / f"{stem}.json").read_text())
    events = doc["events"]
    for d in ("rx", "tx"):
        stream = b"".join(bytes.fromhex(e["hex"]) for e in events if e["dir"] == d)
        assert stream == (out_dir / f"{stem}.{d}.bin").read_bytes()
    ident = next(e for e in events if e["kind"] == "server_identify")
    mon_port = int(doc["mon_addr"].rsplit(":", 1)[1].split("/")[0])
    assert bytes.fromhex(ident["hex"])[19:21] == mon_port.to_bytes(2, "big")
    msgs = [e for e in events if e["kind"] == "msg"]
    assert msgs, "no messages recorded"
    for e in msgs:
        # Re-derive from the raw bytes, not from the stored verdicts.
        info = rrm.describe_msg(bytes.fromhex(e["hex"]), doc["footer_size"])
        assert all(info[k] for k in info if k.endswith("_crc_ok")), (e["type_name"], info)
        assert info["footer_flags"] == 1
        assert info["type"] == e["type"] and info["seq"] == e["seq"]
    rx_seqs = [e["seq"] for e in msgs if e["dir"] == "rx"]
    assert rx_seqs == list(range(1, len(rx_seqs) + 1))
    return doc


def _rx_types(doc: dict) -> list[str]:
    return [e["type_name"] for e in doc["events"] if e["kind"] == "msg" and e["dir"] == "rx"]


def test_recorder_against_the_live_mon(ceph_mon: CephMon, tmp_path: Path) -> None:
    rrm.record_all(ceph_mon.host, ceph_mon.port, tmp_path)
    doc = check_recording(tmp_path, "real_mon_session")
    assert doc["fsid"] == ceph_mon.fsid
    assert doc["mon_addr"] == f"{ceph_mon.addr}/0"
    types = _rx_types(doc)
    assert types[:2] == ["AUTH_REPLY", "MON_MAP"]
    assert sorted(types[2:4]) == ["CONFIG", "MON_MAP"]
    assert types[4:] == ["MON_GET_VERSION_REPLY", "MON_COMMAND_ACK"]
    ack = next(e for e in doc["events"] if e.get("type_name") == "MON_COMMAND_ACK")
    assert ack["tid"] == 1
    stat = json.loads(bytes.fromhex(ack["data"]))
    assert stat["num_mons"] == 1 and stat["leader"] == "a"
    old = check_recording(tmp_path, "real_mon_session_old_footer")
    assert _rx_types(old)[:2] == ["AUTH_REPLY", "MON_MAP"]
    assert all(len(e["footer"]) == 2 * 13 for e in old["events"] if e["kind"] == "msg")
    minimal = check_recording(tmp_path, "real_mon_session_minimal")
    reply = next(e for e in minimal["events"] if e["kind"] == "connect_reply")
    assert reply["tag_name"] == "READY"
    assert "MON_SUBSCRIBE_ACK" in _rx_types(minimal)


@pytest.mark.parametrize("stem", SESSIONS)
def test_committed_recordings_are_consistent(stem: str) -> None:
    doc = check_recording(DATA_DIR, stem)
    assert doc["ceph_version"].startswith("ceph version 16.")


def test_committed_connect_replies() -> None:
    doc = json.loads((DATA_DIR / "real_mon_connect_replies.json").read_text())
    tags = {name: next(e for e in case["events"] if e["kind"] == "connect_reply")["tag_name"]
            for name, case in doc["cases"].items()}
    assert tags == {"features_0": "FEATURES", "protocol_0": "BADPROTOVER",
                    "no_reconnect_seq": "READY", "seq": "SEQ"}


def test_stale_dirs_of_dead_runs_are_removed(tmp_path: Path) -> None:
    old = tmp_path / "pymsgr-mon-old"
    young = tmp_path / "pymsgr-mon-young"
    other = tmp_path / "not-ours"
    for d in (old, young, other):
        d.mkdir()
    (old / "mon.a.pid").write_text("999999999\n")  # no such process
    past = time.time() - 2 * 3600
    for d in (old, other):
        os.utime(d, (past, past))
    assert cephmon.remove_stale_dirs(str(tmp_path)) == [old]
    assert not old.exists() and young.exists() and other.exists()


def test_fresh_mon_is_separate_from_the_session_mon(ceph_mon: CephMon,
                                                     fresh_ceph_mon: CephMon) -> None:
    assert fresh_ceph_mon.port != ceph_mon.port
    assert fresh_ceph_mon.fsid != ceph_mon.fsid
    assert fresh_ceph_mon.dir != ceph_mon.dir
    with socket.create_connection((fresh_ceph_mon.host, fresh_ceph_mon.port), timeout=5) as s:
        assert s.recv(9, socket.MSG_WAITALL) == b"ceph v027"
