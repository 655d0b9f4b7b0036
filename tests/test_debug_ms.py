"""debug_ms: Ceph-style per-message log lines on the msgr loggers, off at no more than a bool read."""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import pytest

from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy, debug
from msgr.messages import MPing


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("msgr")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    debug.refresh()


class _Count(Dispatcher):
    def __init__(self, want: int) -> None:
        self.n = 0
        self.want = want
        self.done = threading.Event()

    def ms_dispatch(self, msg: object) -> bool:
        self.n += 1
        if self.n >= self.want:
            self.done.set()
        return True


def _exchange(cfg_a: Config, n: int = 3) -> None:
    """Messenger a (with ``cfg_a``) sends ``n`` pings to b and one to itself; wait for all."""
    a = Messenger.create(EntityName.osd(0), nonce=11, config=cfg_a)
    b = Messenger.create(EntityName.osd(1), nonce=22, config=Config())
    da, db = _Count(1), _Count(n)
    for m, d in ((a, da), (b, db)):
        m.set_default_policy(Policy.lossless_peer())
        m.add_dispatcher_tail(d)
        m.bind(EntityAddr.parse("v1:127.0.0.1:0"))
        m.start()
    try:
        conn = a.connect_to(EntityName.TYPE_OSD, b.get_myaddr())
        for _ in range(n):
            conn.send_message(MPing())
        a.get_loopback_connection().send_message(MPing())
        assert db.done.wait(10) and da.done.wait(10)
    finally:
        for m in (a, b):
            m.shutdown()
        for m in (a, b):
            m.wait()


def _ms_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "msgr.ms"]


def test_debug_ms_1_logs_one_line_per_message_sent_and_received(caplog: pytest.LogCaptureFixture) -> None:
    _exchange(Config(debug_ms=1))
    lines = _ms_lines(caplog)
    sent = [ln for ln in lines if " --> " in ln]
    received = [ln for ln in lines if " <== " in ln]
    # a's three pings to b and one to itself, each once; b (debug_ms unset, but logging is
    # process-wide) logs its receptions too
    assert len(sent) == 4, lines
    assert all(re.match(r"-- v1:127\.0\.0\.1:\d+/11 --> v1:127\.0\.0\.1:\d+/(22|11) -- MPing\(type 0x2\) v1 "
                        r"-- \?\+0 0x[0-9a-f]+ con 0x[0-9a-f]+$", ln) for ln in sent), sent
    remote = [ln for ln in received if "/22 <== " in ln]
    assert [int(re.search(r" (\d+) ==== ", ln).group(1)) for ln in remote] == [1, 2, 3], received
    assert all(re.search(r"<== osd\.0 v1:127\.0\.0\.1:\d+/11 \d+ ==== MPing\(type 0x2\) v1 ==== 0\+0\+0 "
                         r"\(unknown \d+ \d+ \d+\)", ln) for ln in received), received
    assert len(received) == 4
    assert not any(".state " in ln or ".action " in ln for ln in lines)  # level 1 only
    assert logging.getLogger("msgr").level == logging.DEBUG


def test_debug_ms_20_adds_states_decisions_and_actions(caplog: pytest.LogCaptureFixture) -> None:
    _exchange(Config(debug_ms="20/20"))
    lines = _ms_lines(caplog)
    opened = r"conn\(0x[0-9a-f]+ s=OPEN pgs=\d+ cs=1 l=0\)\.state CONNECTING_WAIT_CONNECT_REPLY -> OPEN"
    assert any(re.search(opened, ln) for ln in lines), lines
    assert any("decision row 9 (no existing session): open" in ln for ln in lines), lines
    assert any(".action OpenSocket(" in ln for ln in lines)


def test_debug_ms_gather_level_form_and_levels() -> None:
    assert debug.set_debug_ms("1/5") == 1
    assert debug.gate.messages and not debug.gate.states
    assert debug.set_debug_ms(10) == 10 and debug.gate.states and not debug.gate.actions
    assert debug.set_debug_ms("0/5") == 0
    assert not debug.gate.messages
    assert debug.python_level(0) == logging.INFO and debug.python_level(1) == logging.DEBUG
    assert debug.ceph_level(logging.DEBUG) == 1 and debug.ceph_level(1) == 30


def test_explicit_debug_ms_0_silences_even_a_debug_root(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)          # the root logger at DEBUG
    _exchange(Config(debug_ms=0))
    assert _ms_lines(caplog) == []
    assert not debug.gate.messages


def test_python_debug_logging_alone_shows_messages(caplog: pytest.LogCaptureFixture) -> None:
    """The issue: at DEBUG, three messages sent produced no log line about them."""
    caplog.set_level(logging.DEBUG, logger="msgr")
    _exchange(Config())
    assert len([ln for ln in _ms_lines(caplog) if " --> " in ln]) == 4


def test_off_by_default_and_no_line_is_formatted(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    calls: list[str] = []
    for name in ("trace_sent", "trace_received", "trace_progress", "trace_actions"):
        monkeypatch.setattr(debug, name, lambda *a, _n=name: calls.append(_n))
    _exchange(Config())
    assert not debug.gate.messages and calls == []


def test_unconfigured_logging_gets_a_stderr_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("msgr")
    monkeypatch.setattr(logger, "hasHandlers", lambda: False)
    before = list(logger.handlers)
    debug.set_debug_ms(1)
    added = [h for h in logger.handlers if h not in before]
    assert len(added) == 1 and isinstance(added[0], logging.StreamHandler)


def test_bad_debug_ms_values() -> None:
    assert Config(debug_ms=1).debug_ms == "1/1"
    assert Config(debug_ms="1/5").debug_ms == "1/5"
    assert Config(debug_ms=" 20 ").debug_ms == "20/20"
    for bad in ("x", "1/2/3", "-1", "1/", True, 1.5):
        with pytest.raises(Exception, match="debug_ms"):
            Config(debug_ms=bad)


def test_trace_helpers_work_on_performers_without_a_messenger(caplog: pytest.LogCaptureFixture) -> None:
    """The simulator's connections share the core's _handle hook but have no messenger."""
    from types import SimpleNamespace

    from msgr.protocol.actions import CloseSocket
    from msgr.protocol.states import State
    caplog.set_level(1, logger="msgr.ms")
    class FakeProto(SimpleNamespace):   # a class of our own: weak references allowed
        __hash__ = object.__hash__
    proto = FakeProto(state=State.OPEN, host="osd.0", peer_addr="v1:1.2.3.4:5/6", policy=None,
                      peer_global_seq=1, connect_seq=1)
    conn = SimpleNamespace(_proto=proto)
    debug.trace_actions(conn, [CloseSocket("test")])
    debug.trace_progress(conn)
    msg = MPing()
    debug.trace_sent(conn, msg)
    assert len(_ms_lines(caplog)) == 3
