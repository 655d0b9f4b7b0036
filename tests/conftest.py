"""Shared fixtures: a throwaway real Ceph monitor and tshark captures.

Tests that need a real Ceph binary skip when it is missing, unless
``MSGR_REQUIRE_CEPH=1``, where they fail naming what is missing (CI sets it so
an interop suite cannot silently turn into a row of skips).

Fixtures:
  ceph_mon          session-wide CephMon (tests/cephmon.py); parametrize
                    indirectly with a dict of CephMon kwargs, e.g.
                    ``@pytest.mark.parametrize("ceph_mon", [{"debug_ms": 20}], indirect=True)``
  fresh_ceph_mon    the same, one per test (no shared mon state)
  cephx_mon         session-wide CephMon(cephx=True): cephx required, ``.keyring_path``
  ceph_mon_factory  ``factory(**kwargs) -> CephMon`` started now, stopped at teardown
  ceph_mon_binaries only the skip/fail check, for tests that build CephMon themselves
  ceph_cli          skips/fails unless the ``ceph`` CLI exists; returns the CephMon.ceph_cli caller
  tshark            ``tshark.capture(port)`` context -> TsharkCapture (``.pcap``);
                    ``tshark.decode(pcap, port, fmt="text"|"json")``

Every test (autouse ``_no_error_logs``): an ERROR or worse from the ``msgr`` or ``eventcenter``
loggers (or their children, from any thread) fails the test, unless it is marked
``@pytest.mark.allow_error_log`` (every line) or ``@pytest.mark.allow_error_log("regex", ...)``
(the lines whose message matches one of the patterns).

MSGR_TEST_ASYNC_OP_THREADS=N runs the suite with ``ms_async_op_threads`` = N wherever a test does
not set the option itself: the hook changes Config's default in the test process only (``make
test-workers`` runs the suite with 1 and with 3).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cephmon import (  # noqa: E402  (path set just above)
    CEPHX_BINARIES,
    MON_BINARIES,
    CephMon,
    CephMonError,
    TsharkCapture,
    missing_binaries,
    tshark_decode,
)
from errorlog import WATCHED_LOGGERS, ErrorLines, describe  # noqa: E402

REQUIRE_ENV = "MSGR_REQUIRE_CEPH"
WORKERS_ENV = "MSGR_TEST_ASYNC_OP_THREADS"

# Fixtures whose users get the "ceph" marker, so `-m "not ceph"` deselects them.
_CEPH_FIXTURES = {"ceph_mon", "fresh_ceph_mon", "ceph_mon_factory", "ceph_cli", "tshark",
                  "ceph_mon_binaries", "cephx_mon"}


def ceph_required() -> bool:
    """True when missing Ceph tools must fail tests instead of skipping them."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it under MSGR_REQUIRE_CEPH=1."""
    if ceph_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def require_binary(*names: str) -> None:
    """Skip (or fail under MSGR_REQUIRE_CEPH=1) unless every binary is on PATH."""
    missing = missing_binaries(*names)
    if missing:
        unavailable(f"needs {', '.join(missing)} on PATH (apt-get install ceph-mon ceph-common "
                    f"tshark, or `make ceph-deps`)")


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout sends SIGTERM, which by default ends Python without any
    # teardown; as an interrupt, pytest still stops the mons and removes their dirs.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    workers = os.environ.get(WORKERS_ENV, "")
    if workers:
        _set_default_async_op_threads(int(workers))


def _set_default_async_op_threads(n: int) -> None:
    """Make ``Config()`` start with ms_async_op_threads = n in this process (tests only).

    Config takes its defaults from msgr.config.OPTIONS; a test that passes the option keeps its
    value. Checked at once, so a Config that stops working this way fails loudly, not silently."""
    import dataclasses

    from msgr import Config
    from msgr.config import OPTIONS
    opt = OPTIONS["ms_async_op_threads"]
    OPTIONS[opt.name] = dataclasses.replace(opt, default=opt.parse(n))
    if Config().ms_async_op_threads != n or Config(ms_async_op_threads=1).ms_async_op_threads != 1:
        raise pytest.UsageError(f"{WORKERS_ENV}: cannot change Config's default (conftest needs an update)")


def pytest_report_header(config: pytest.Config) -> str:
    from msgr import Config
    return f"ms_async_op_threads default: {Config().ms_async_op_threads} ({WORKERS_ENV} to change)"


@pytest.fixture(autouse=True)
def _no_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when msgr/eventcenter log at ERROR or above, unless it says it expects that."""
    lines = ErrorLines()
    lines.start()
    try:
        yield
    finally:
        lines.stop()
    marker = request.node.get_closest_marker("allow_error_log")
    if marker is not None and not marker.args:
        return
    bad = lines.unexpected(marker.args if marker is not None else ())
    if bad:
        pytest.fail(f"{len(bad)} ERROR line(s) from {'/'.join(WATCHED_LOGGERS)} (mark the test "
                    f"@pytest.mark.allow_error_log if they are expected):\n{describe(bad)}", pytrace=False)


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A lossless_util.Cluster of messengers, all shut down when the test ends."""
    from lossless_util import Cluster
    c = Cluster()
    yield c
    c.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _CEPH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ceph)


def _start_mon(kwargs: dict[str, Any]) -> CephMon:
    require_binary(*MON_BINARIES)
    mon = CephMon(**kwargs)
    try:
        return mon.start()
    except BaseException:
        mon.stop()
        raise


@pytest.fixture(scope="session")
def ceph_mon(request: pytest.FixtureRequest) -> Iterator[CephMon]:
    """A running monitor shared by the session (per distinct indirect param)."""
    mon = _start_mon(dict(getattr(request, "param", None) or {}))
    yield mon
    mon.stop()


@pytest.fixture(scope="session")
def cephx_mon() -> Iterator[CephMon]:
    """A running monitor that requires cephx (keyring from ceph-authtool), shared by the session."""
    require_binary(*CEPHX_BINARIES)
    mon = _start_mon({"cephx": True})
    yield mon
    mon.stop()


@pytest.fixture
def fresh_ceph_mon(request: pytest.FixtureRequest) -> Iterator[CephMon]:
    """A running monitor of this test only."""
    mon = _start_mon(dict(getattr(request, "param", None) or {}))
    yield mon
    mon.stop()


@pytest.fixture
def ceph_mon_factory() -> Iterator[Callable[..., CephMon]]:
    """Start monitors with custom CephMon kwargs; all are stopped at teardown."""
    mons: list[CephMon] = []

    def factory(**kwargs: Any) -> CephMon:
        mon = _start_mon(kwargs)
        mons.append(mon)
        return mon

    yield factory
    for mon in mons:
        mon.stop()


@pytest.fixture
def ceph_mon_binaries() -> None:
    """For tests that drive CephMon themselves: skip/fail unless ceph-mon and monmaptool exist."""
    require_binary(*MON_BINARIES)


@pytest.fixture
def ceph_cli(ceph_mon: CephMon) -> Callable[..., Any]:
    """``ceph_cli(*args, timeout=20)`` against the session mon; needs the ceph CLI."""
    require_binary("ceph")
    return ceph_mon.ceph_cli


class Tshark:
    """Capture loopback traffic of one port and decode it as Ceph."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self._count = 0

    @contextlib.contextmanager
    def capture(self, port: int, name: str | None = None) -> Iterator[TsharkCapture]:
        """Capture ``tcp port N`` on lo; capturing before the body runs, flushed after."""
        self._count += 1
        pcap = self.tmp_path / (name or f"capture{self._count}.pcapng")
        cap = TsharkCapture(port, pcap)
        try:
            cap.start()
        except CephMonError as e:
            unavailable(f"tshark cannot capture on lo here: {e}")
        try:
            yield cap
        except BaseException:
            cap.abort()  # keep the test's own error, not a flush failure
            raise
        cap.stop()

    @staticmethod
    def decode(pcap: str | os.PathLike[str], port: int, fmt: str = "text",
               display_filter: str | None = None) -> str:
        """tshark's decode of ``pcap`` with ``port`` as Ceph (text -V or JSON text)."""
        return tshark_decode(pcap, port, fmt=fmt, display_filter=display_filter)


@pytest.fixture
def tshark(tmp_path: Path) -> Tshark:
    require_binary("tshark")
    return Tshark(tmp_path)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the fuzz runs did (tests/fuzz/fuzzprofile.py counts them; issue 7 asks for the figures)."""
    profile = sys.modules.get("fuzzprofile")
    if profile is not None and profile.COUNTS:
        terminalreporter.write_sep("=", f"msgr fuzz ({profile.PROFILE} profile)")
        for key in sorted(profile.COUNTS):
            terminalreporter.write_line(f"{key:>28}: {profile.COUNTS[key]}")
