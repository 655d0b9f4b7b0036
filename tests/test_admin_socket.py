"""The admin socket (Ceph's protocol, read by the real ``ceph --admin-daemon``) and the perf dump."""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import require_binary

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy
from msgr.admin_socket import AdminSocket
from msgr.messages import MPing
from msgr.perf import CEPH_COUNTERS, MessengerPerf


def ask(path: str | Path, request: bytes) -> bytes:
    """One admin-socket round trip as Ceph's client does it: request + NUL, length, body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(request if request.startswith(b"\0") else request + b"\0")
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            assert chunk, "admin socket closed before the length"
            head += chunk
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            chunk = s.recv(n - len(body))
            assert chunk, "admin socket closed in the body"
            body += chunk
        return body


def ask_json(path: str | Path, **request: object) -> dict:
    return json.loads(ask(path, json.dumps(request).encode()))


class _Count(Dispatcher):
    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()

    def ms_dispatch(self, msg: object) -> bool:
        with self.cond:
            self.n += 1
            self.cond.notify_all()
        return True

    def wait_for(self, n: int, timeout: float = 10) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.n >= n, timeout)


@pytest.fixture
def asok_dir() -> Iterator[Path]:
    # short: a Unix socket path must fit in 108 bytes, and pytest's tmp_path may not
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="asok-", dir="/tmp"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@pytest.fixture
def pair(asok_dir: Path) -> Iterator[Callable[..., tuple]]:
    """``pair(**cfg)`` -> (a, b, conn a->b, b's dispatcher, a's admin socket path)."""
    made: list = []

    def make(**cfg: object) -> tuple:
        path = asok_dir / "$name.asok"
        a = Messenger.create(EntityName.osd(0), nonce=101, config=Config(admin_socket=str(path), **cfg))
        b = Messenger.create(EntityName.osd(1), nonce=202, config=Config())
        db = _Count()
        for m in (a, b):
            m.set_default_policy(Policy.lossless_peer())
            m.bind(EntityAddr.parse("v1:127.0.0.1:0"))
            made.append(m)
        b.add_dispatcher_tail(db)
        a.start()
        b.start()
        return a, b, a.connect_to(EntityName.TYPE_OSD, b.get_myaddr()), db, asok_dir / "osd.0.asok"
    yield make
    for m in made:
        m.shutdown()
    for m in made:
        m.wait()


def test_version_query_json_and_old_binary_form(pair: Callable[..., tuple]) -> None:
    *_, path = pair()
    assert ask(path, b'{"prefix":"0"}') == b"2"
    assert ask(path, b"\0\0\0\0") == b"2"
    old_dump = json.loads(ask(path, b"\0\0\0\1"))
    assert "AsyncMessenger" in old_dump


def test_command_descriptions_are_cephs_format(pair: Callable[..., tuple]) -> None:
    *_, path = pair()
    raw = ask(path, b'{"prefix": "get_command_descriptions"}')
    assert b"\n" not in raw   # compact, as Ceph's
    descs = json.loads(raw)
    sigs = {tuple(w for w in d["sig"] if isinstance(w, str)): d for d in descs.values()}
    assert sorted(descs) == [f"cmd{i:03d}" for i in range(len(descs))]
    perf_dump = sigs[("perf", "dump")]["sig"]
    assert perf_dump[2] == {"name": "logger", "type": "CephString", "req": "false"}
    assert sigs[("config", "set")]["sig"][3] == {"name": "val", "type": "CephString", "n": "N"}
    for needed in (("perf", "schema"), ("config", "show"), ("config", "get"), ("dump_connections",),
                   ("help",), ("perf", "reset")):
        assert needed in sigs
    helps = ask_json(path, prefix="help")
    assert helps["dump_connections"].startswith("show every connection")


def test_perf_dump_has_cephs_sections_names_and_units(pair: Callable[..., tuple]) -> None:
    a, _b, conn, db, path = pair()
    for _ in range(20):
        conn.send_message(MPing())
    assert db.wait_for(20)
    dump = ask_json(path, prefix="perf dump")
    w0 = dump["AsyncMessenger::Worker-0"]
    assert list(w0) == list(CEPH_COUNTERS)
    assert w0["msgr_send_messages"] == 20 and w0["msgr_created_connections"] == 1
    assert w0["msgr_active_connections"] == 1 and w0["msgr_send_bytes"] > 20 * 50
    assert isinstance(w0["msgr_running_total_time"], float) and 0 < w0["msgr_running_total_time"] < 60
    assert w0["msgr_running_total_time"] >= w0["msgr_running_send_time"]
    lat = w0["msgr_send_messages_queue_lat"]
    assert lat["avgcount"] == 20 and lat["sum"] >= 0
    assert lat["avgtime"] == pytest.approx(lat["sum"] / 20)
    totals = dump["AsyncMessenger"]
    assert totals["msgr_send_messages"] == 20 and "msgr_send_calls" in totals
    assert dump["throttle-msgr_dispatch_throttler-osd.0"]["max"] == 100 << 20
    # the messenger's own dump is the same thing
    assert a.perf_dump()["AsyncMessenger::Worker-0"]["msgr_send_messages"] == 20
    one = ask_json(path, prefix="perf dump", logger="AsyncMessenger::Worker-0", counter="msgr_send_messages")
    assert one == {"AsyncMessenger::Worker-0": {"msgr_send_messages": 20}}
    schema = ask_json(path, prefix="perf schema")
    entry = schema["AsyncMessenger::Worker-0"]["msgr_running_total_time"]
    assert entry["type"] == 1 and entry["value_type"] == "real" and entry["metric_type"] == "gauge"
    assert schema["AsyncMessenger::Worker-0"]["msgr_send_messages_queue_lat"]["type"] == 5
    assert schema["AsyncMessenger::Worker-0"]["msgr_recv_bytes"]["units"] == "bytes"
    compact = ask(path, b'{"prefix": "perf dump", "format": "json"}')
    assert b"\n" not in compact and json.loads(compact)["AsyncMessenger"]["msgr_send_messages"] == 20
    assert ask_json(path, prefix="perf reset", var="all") == {"success": "perf reset all"}
    after = ask_json(path, prefix="perf dump")["AsyncMessenger::Worker-0"]
    assert after["msgr_send_messages"] == 0 and after["msgr_active_connections"] == 1


def test_config_show_get_set(pair: Callable[..., tuple]) -> None:
    a, *_, path = pair(ms_initial_backoff=0.5)
    shown = ask_json(path, prefix="config show")
    assert shown["name"] == "osd.0" and shown["ms_initial_backoff"] == "0.500000"
    assert shown["ms_crc_data"] == "true"
    assert ask_json(path, prefix="config get", var="ms_tcp_nodelay") == {"ms_tcp_nodelay": "true"}
    reply = ask_json(path, prefix="config set", var="ms_max_backoff", val=["2m"])
    assert "ms_max_backoff = '120.000000'" in reply["success"]
    assert a.config.ms_max_backoff == 120.0
    assert ask_json(path, prefix="config diff")["diff"]["ms_max_backoff"]["current"] == "120.000000"
    assert ask(path, b'{"prefix": "config get", "var": "nosuch"}').startswith(b"ERROR: (2) ")
    bad = ask(path, b'{"prefix": "config set", "var": "ms_crc_data", "val": ["perhaps"]}')
    assert bad.startswith(b"ERROR: (22) ") and b"ms_crc_data" in bad and a.config.ms_crc_data is True
    assert ask(path, b'{"prefix": "config set", "var": "admin_socket", "val": ["/x"]}').startswith(b"ERROR: (1) ")


def test_config_set_debug_ms_applies_at_once(pair: Callable[..., tuple]) -> None:
    from msgr import debug
    logger = logging.getLogger("msgr")
    level, handlers = logger.level, list(logger.handlers)
    try:
        *_, path = pair()
        assert ask_json(path, prefix="config set", var="debug_ms", val=["1/5"]) == {"success": ""}
        assert debug.gate.messages and logger.level == logging.DEBUG
        assert ask_json(path, prefix="config get", var="debug_ms") == {"debug_ms": "1/5"}
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        debug.refresh()


def test_dump_connections(pair: Callable[..., tuple]) -> None:
    _a, b, conn, db, path = pair()
    for _ in range(5):
        conn.send_message(MPing())
    assert db.wait_for(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:   # the ACK of the last message may still be on its way
        dump = ask_json(path, prefix="dump_connections")
        (c,) = dump["connections"]
        if c["sent_unacked"] == 0:
            break
        time.sleep(0.01)
    assert dump["name"] == "osd.0"
    assert c["peer_addr"] == str(b.get_myaddr()) and c["state"] == "OPEN" and c["connected"]
    assert c["out_seq"] == 5 and c["in_seq"] == 0 and c["connect_seq"] == 1 and not c["lossy"]
    assert c["out_queue"] == 0 and c["sent_unacked"] == 0 and c["inbox"] == 0
    assert c["last_fault"] is None and c["faults"] == 0


def test_bad_requests_get_cephs_errors_and_the_socket_keeps_serving(pair: Callable[..., tuple]) -> None:
    *_, path = pair()
    assert ask(path, b"garbage") == b"ERROR: (22) Invalid argument\ninvalid json\n"
    assert ask(path, b'{"prefix": "nosuch"}') == b"ERROR: (22) Invalid argument\nunknown command prefix nosuch\n"
    assert ask(path, b'["prefix"]').startswith(b"ERROR: (22)")
    with socket.socket(socket.AF_UNIX) as s:     # a client that leaves without asking
        s.connect(str(path))
    with socket.socket(socket.AF_UNIX) as s:     # one that sends half a request and leaves
        s.connect(str(path))
        s.sendall(b'{"prefix": "perf')
    assert ask(path, b'{"prefix":"0"}') == b"2"


@pytest.mark.allow_error_log("no admin socket")   # the second messenger says so at ERROR
def test_socket_file_life_stale_file_replaced_and_restart(asok_dir: Path) -> None:
    path = asok_dir / "m.asok"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))          # a socket file nobody serves any more
    stale.close()
    ms = Messenger.create(EntityName.client(7), nonce=5, config=Config(admin_socket=str(path)))
    ms.start()
    try:
        assert ask(path, b'{"prefix":"0"}') == b"2"
        # a second messenger cannot take a live socket: it runs without one and says so
        other = Messenger.create(EntityName.client(8), nonce=6, config=Config(admin_socket=str(path)))
        other.start()
        other.shutdown()
        other.wait()
        assert ask_json(path, prefix="config show")["name"] == "client.7"
    finally:
        ms.shutdown()
        ms.wait()
    assert not path.exists()
    ms.start()   # restart after shutdown + wait serves again
    try:
        assert ask(path, b'{"prefix":"0"}') == b"2"
    finally:
        ms.shutdown()
        ms.wait()
    assert not path.exists()


def test_admin_socket_unit_start_twice_and_stop_idempotent(asok_dir: Path) -> None:
    ms = Messenger.create(EntityName.client(1), nonce=9)
    asok = AdminSocket(str(asok_dir / "u.asok"), ms)
    asok.start()
    asok.start()
    assert ask(asok_dir / "u.asok", b'{"prefix":"0"}') == b"2"
    asok.stop()
    asok.stop()
    assert not (asok_dir / "u.asok").exists()


def test_perf_blocks_by_worker_and_thread() -> None:
    perf = MessengerPerf("osd.0")
    perf.worker_block(1).msgr_recv_messages += 2
    perf.worker_block(0).total_ns += 1_500_000_000
    perf.here().msgr_local_messages += 1
    dump = perf.dump()
    assert list(dump)[:2] == ["AsyncMessenger::Worker-0", "AsyncMessenger::Worker-1"]
    assert dump["AsyncMessenger::Worker-0"]["msgr_running_total_time"] == 1.5
    assert dump["AsyncMessenger"]["msgr_recv_messages"] == 2
    assert dump["AsyncMessenger"]["msgr_local_messages"] == 1
    assert "msgr_local_messages" not in dump["AsyncMessenger::Worker-0"]
    assert not perf.reset("nosuch") and perf.reset("AsyncMessenger::Worker-1")
    assert perf.dump()["AsyncMessenger"]["msgr_recv_messages"] == 0


def test_ready_and_idle_timeouts_are_counted(asok_dir: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)    # accepts TCP, never speaks: the handshake cannot complete
    ms = Messenger.create(EntityName.client(3), nonce=77,
                          config=Config(ms_connection_ready_timeout=0.2, ms_initial_backoff=5))
    ms.start()
    try:
        ms.connect_to(EntityName.TYPE_OSD, EntityAddr.parse(f"v1:127.0.0.1:{silent.getsockname()[1]}/1"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ms.perf_dump()["AsyncMessenger"]["msgr_connection_ready_timeouts"]:
            time.sleep(0.02)
        assert ms.perf_dump()["AsyncMessenger::Worker-0"]["msgr_connection_ready_timeouts"] >= 1
    finally:
        ms.shutdown()
        ms.wait()
        silent.close()

    a = Messenger.create(EntityName.osd(0), nonce=1, config=Config(ms_connection_idle_timeout=0.2))
    b = Messenger.create(EntityName.osd(1), nonce=2, config=Config(ms_connection_idle_timeout=60))
    for m in (a, b):
        m.set_default_policy(Policy.stateless_server() if m is b else Policy.lossy_client())
        m.bind(EntityAddr.parse("v1:127.0.0.1:0"))
        m.start()
    try:
        a.connect_to(EntityName.TYPE_OSD, b.get_myaddr()).send_message(MPing())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not a.perf_dump()["AsyncMessenger"]["msgr_connection_idle_timeouts"]:
            time.sleep(0.02)
        assert a.perf_dump()["AsyncMessenger"]["msgr_connection_idle_timeouts"] == 1
    finally:
        for m in (a, b):
            m.shutdown()
        for m in (a, b):
            m.wait()


# --- the real ceph CLI ------------------------------------------------------------------------

def _ceph(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ceph", "--admin-daemon", str(path), *args], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.ceph
def test_real_ceph_cli_reads_perf_dump_config_and_connections(pair: Callable[..., tuple]) -> None:
    require_binary("ceph")
    _a, b, conn, db, path = pair()
    for _ in range(7):
        conn.send_message(MPing())
    assert db.wait_for(7)
    r = _ceph(path, "perf", "dump")
    assert r.returncode == 0, r.stderr
    dump = json.loads(r.stdout)
    assert dump["AsyncMessenger::Worker-0"]["msgr_send_messages"] == 7
    assert isinstance(dump["AsyncMessenger::Worker-0"]["msgr_running_total_time"], float)
    r = _ceph(path, "perf", "dump", "AsyncMessenger::Worker-0", "msgr_send_messages")
    assert json.loads(r.stdout) == {"AsyncMessenger::Worker-0": {"msgr_send_messages": 7}}, r.stderr
    r = _ceph(path, "-f", "json", "perf", "schema")
    assert r.returncode == 0 and json.loads(r.stdout)["AsyncMessenger::Worker-0"]["msgr_recv_bytes"]["type"] == 10
    r = _ceph(path, "config", "get", "ms_crc_data")
    assert json.loads(r.stdout) == {"ms_crc_data": "true"}, r.stderr
    r = _ceph(path, "config", "set", "ms_inject_socket_failures", "0")
    assert r.returncode == 0 and "success" in json.loads(r.stdout), r.stderr
    r = _ceph(path, "dump_connections")
    assert json.loads(r.stdout)["connections"][0]["peer_addr"] == str(b.get_myaddr()), r.stderr
    r = _ceph(path, "help")
    assert "perf dump" in json.loads(r.stdout)
    r = _ceph(path, "no", "such", "command")
    assert r.returncode != 0 and "invalid command" in r.stderr
    assert os.path.exists(path)
