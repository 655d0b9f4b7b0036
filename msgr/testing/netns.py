"""Two network namespaces joined by a veth pair, for multi-host tests on one machine.

``NetnsPair`` creates namespaces ``a`` and ``b`` (names unique per process and
pair), a veth pair with one end in each (addresses ``{subnet}.1`` and
``{subnet}.2``), runs child processes inside either namespace, and makes
partitions by setting one end of the link down. Closing it (or leaving the
``with`` block, on any error) kills its children and deletes both namespaces,
which also destroys the veth pair; nothing is created in the caller's namespace.

Needs root and ``ip`` (iproute2). The ``netem`` qdisc is not assumed: delay and
loss come from :class:`msgr.testing.FaultProxy`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from msgr.errors import MsgrError

__all__ = ["NetnsError", "NetnsPair", "netns_required", "netns_unavailable_reason", "cleanup_stale",
           "require_netns", "REQUIRE_ENVS"]

PREFIX = "msgrt"
REQUIRE_ENVS = ("MSGR_REQUIRE_NETNS", "MSGR_REQUIRE_CEPH")
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-\d+-[ab]$")
_counter = itertools.count(1)


class NetnsError(MsgrError, RuntimeError):
    """An ``ip`` command needed for namespaces failed (or ``ip`` is missing)."""


def _ip(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    if shutil.which("ip") is None:
        raise NetnsError("the `ip` command (iproute2) is not installed")
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_required() -> bool:
    """True when missing namespace support must fail tests instead of skipping them."""
    return any(os.environ.get(name, "") not in ("", "0") for name in REQUIRE_ENVS)


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if a probe namespace could be made."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"{PREFIX}-{os.getpid()}-0-a"
    try:
        _ip("netns", "add", name)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` is not permitted here: {exc}"
    _ip("netns", "delete", name, check=False)
    return None


def require_netns() -> None:
    """In a pytest test: skip (or fail under MSGR_REQUIRE_NETNS/MSGR_REQUIRE_CEPH=1) without namespaces."""
    reason = netns_unavailable_reason()
    if reason is not None:
        _unavailable(reason)


def _unavailable(reason: str) -> None:
    import pytest  # only test code calls this
    if netns_required():
        pytest.fail(f"{reason} ({'/'.join(REQUIRE_ENVS)}=1, so this is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def cleanup_stale() -> list[str]:
    """Delete namespaces left by dead processes (a crashed or killed test run); return their names."""
    proc = _ip("netns", "list", check=False)
    removed = []
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue   # still alive: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if _ip("netns", "delete", name, check=False).returncode == 0:
            removed.append(name)
    return removed


class NetnsPair:
    """Namespaces ``a`` and ``b`` joined by veth ``dev_a`` <-> ``dev_b``."""

    def __init__(self, subnet: str = "10.77.0", prefix_len: int = 24) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.ns = {"a": f"{PREFIX}-{pid}-{n}-a", "b": f"{PREFIX}-{pid}-{n}-b"}
        # interface names are limited to 15 bytes
        self.dev = {"a": f"mv{pid % 10**7}{n % 100}a", "b": f"mv{pid % 10**7}{n % 100}b"}
        self.addr = {"a": f"{subnet}.1", "b": f"{subnet}.2"}
        self.prefix_len = prefix_len
        self._created: list[str] = []
        self._children: list[subprocess.Popen[Any]] = []

    # convenient names for the common two-sided case
    ns_a = property(lambda self: self.ns["a"])
    ns_b = property(lambda self: self.ns["b"])
    addr_a = property(lambda self: self.addr["a"])
    addr_b = property(lambda self: self.addr["b"])

    def create(self) -> NetnsPair:
        """Make both namespaces and the link; on any failure undo what was made and raise NetnsError."""
        try:
            for side in ("a", "b"):
                _ip("netns", "add", self.ns[side])
                self._created.append(self.ns[side])
            a, b = self.dev["a"], self.dev["b"]
            _ip("-n", self.ns["a"], "link", "add", a, "type", "veth", "peer", "name", b,
                "netns", self.ns["b"])
            for side in ("a", "b"):
                ns, dev = self.ns[side], self.dev[side]
                _ip("-n", ns, "addr", "add", f"{self.addr[side]}/{self.prefix_len}", "dev", dev)
                _ip("-n", ns, "link", "set", "dev", "lo", "up")
                _ip("-n", ns, "link", "set", "dev", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill children started here and delete the namespaces (idempotent)."""
        for child in self._children:
            if child.poll() is None:
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        self._children.clear()
        errors = []
        for name in reversed(self._created):
            proc = _ip("netns", "delete", name, check=False)
            if proc.returncode != 0 and name in self.list_all():
                errors.append(f"{name}: {proc.stderr.strip()}")
        self._created.clear()
        if errors:
            raise NetnsError("could not delete namespaces: " + "; ".join(errors))

    def __enter__(self) -> NetnsPair:
        return self.create() if not self._created else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def list_all() -> list[str]:
        """Every namespace name ``ip netns list`` shows."""
        out = _ip("netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.split()]

    # --- processes ---------------------------------------------------------------
    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside namespace ``side``."""
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def run(self, side: str, argv: Sequence[str], timeout: float = 30,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``side`` to completion; output captured as text."""
        proc = subprocess.run(self.command(side, argv), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NetnsError(f"{argv!r} in {self.ns[side]} failed ({proc.returncode}): "
                             f"{proc.stderr.strip()}")
        return proc

    def popen(self, side: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``side``; it is killed by ``close()`` if still running."""
        # `ip netns exec` execs the command, so the Popen pid is the child itself
        child: subprocess.Popen[Any] = subprocess.Popen(self.command(side, argv), **kwargs)
        self._children.append(child)
        return child

    def python(self, side: str, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start this interpreter (``sys.executable``) with ``args`` inside ``side``.

        Defaults: text pipes for stdin/stdout, stderr inherited, unbuffered.
        """
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("text", True)
        env = dict(kwargs.pop("env", None) or os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return self.popen(side, [sys.executable, *args], env=env, **kwargs)

    # --- partitions ------------------------------------------------------------------
    def link_down(self, side: str = "a") -> None:
        """Take ``side``'s end of the veth down: no packet crosses until ``link_up``."""
        _ip("-n", self.ns[side], "link", "set", "dev", self.dev[side], "down")

    def link_up(self, side: str = "a") -> None:
        _ip("-n", self.ns[side], "link", "set", "dev", self.dev[side], "up")

    @contextlib.contextmanager
    def partition(self, side: str = "a") -> Iterator[None]:
        """The link is down inside the ``with`` block and up again after it (even on error)."""
        self.link_down(side)
        try:
            yield
        finally:
            self.link_up(side)

    def kill_tcp(self, side: str) -> int:
        """Abort (``ss -K``) every TCP socket in ``side`` whose peer is the other side; return how many.

        The owning process sees ECONNABORTED at once, as if its host had dropped the
        connection; the kernel's RST to the peer is lost if the link is down.
        """
        other = self.addr["b" if side == "a" else "a"]
        proc = self.run(side, ["ss", "-K", "-t", "dst", other], check=False)
        # ss prints a header and one line per destroyed socket
        return sum(1 for line in proc.stdout.splitlines()[1:] if line.strip())

    def kill_children(self, sig: int = signal.SIGKILL) -> None:
        for child in self._children:
            if child.poll() is None:
                child.send_signal(sig)
