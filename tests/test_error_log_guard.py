"""The guard of tests/conftest.py: ERROR lines of msgr/eventcenter from any thread are caught."""
from __future__ import annotations

import logging
import threading

import pytest
from errorlog import ErrorLines


def _log_from_thread(name: str, level: int, text: str) -> None:
    t = threading.Thread(target=lambda: logging.getLogger(name).log(level, text), name="worker-x")
    t.start()
    t.join()


@pytest.mark.allow_error_log("unexpected error in read", "loop died")   # seen by conftest.py too
def test_worker_thread_errors_of_children_are_caught():
    lines = ErrorLines()
    lines.start()
    try:
        _log_from_thread("msgr.connection", logging.ERROR, "unexpected error in read")
        _log_from_thread("eventcenter.center", logging.CRITICAL, "loop died")
        _log_from_thread("msgr.connection", logging.WARNING, "a warning is fine")
        _log_from_thread("other", logging.ERROR, "not ours")
    finally:
        lines.stop()
    got = [(r.name, r.threadName, r.getMessage()) for r in lines.unexpected()]
    assert got == [("msgr.connection", "worker-x", "unexpected error in read"),
                   ("eventcenter.center", "worker-x", "loop died")]
    assert [r.getMessage() for r in lines.unexpected(["unexpected error"])] == ["loop died"]


@pytest.mark.allow_error_log("after stop")   # the autouse guard of conftest.py sees it
def test_nothing_is_caught_after_stop():
    lines = ErrorLines()
    lines.start()
    lines.stop()
    _log_from_thread("msgr", logging.ERROR, "after stop")
    assert lines.records == []


@pytest.mark.allow_error_log("expected by this test")
def test_marked_test_may_log_the_lines_it_names():
    _log_from_thread("msgr.messenger", logging.ERROR, "expected by this test")
