"""Throwaway real Ceph monitor and tshark capture helpers for interop tests.

Stdlib only, so benchmarks and recording scripts can import it too:

    mon = CephMon().start()          # own temp dir, free loopback port, v1 only, auth none
    mon = CephMon(cephx=True).start()  # the same with cephx required (mon.keyring_path)
    ...  mon.host, mon.port, mon.addr ("v1:127.0.0.1:PORT"), mon.fsid
    mon.ceph_cli("ping", "mon.a")
    mon.stop()                       # SIGTERM, SIGKILL after a grace period; dir removed

The recipe (conf keys, `mkdir mon`, monmaptool, mkfs) is the one in
docs/REAL_CEPH.md §1. The mon runs in the foreground (`-f`) as our child,
so a failed bind shows up as an exit status instead of a silent daemon death.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

__all__ = [
    "CephMon", "CephMonError", "TsharkCapture", "free_port", "missing_binaries",
    "remove_stale_dirs", "tshark_decode",
]

MON_BINARIES = ("ceph-mon", "monmaptool")
CEPHX_BINARIES = ("ceph-authtool",)


class CephMonError(RuntimeError):
    """The throwaway monitor could not be set up, started or reached."""


def missing_binaries(*names: str) -> list[str]:
    """The names among ``names`` that are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: if pytest dies hard (SIGKILL),
    # the kernel kills the mon too, so no mon outlives its test run.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4), from /proc/net/tcp."""
    inodes: set[str] = set()
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                    inodes.add(fields[9])
    except OSError:
        pass
    return inodes


def _pid_owns_listener(pid: int, port: int) -> bool | None:
    """True if ``pid`` holds the listening socket on ``port``; None if /proc cannot tell."""
    inodes = _listening_inodes(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    if not inodes or not fd_dir.is_dir():
        return None
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def _is_ceph_mon(pid: int) -> bool:
    """Guard against a stale pid file whose pid now names another process."""
    try:
        return b"ceph-mon" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


_TMP_PREFIX = "pymsgr-mon-"
_STALE_AFTER_S = 3600.0


def remove_stale_dirs(parent: str | None = None) -> list[Path]:
    """Delete our temp dirs left by hard-killed runs: old, and with no live mon.

    Conservative on purpose: a dir younger than an hour may belong to a run
    that is still starting its mon.
    """
    removed = []
    now = time.time()
    for d in Path(parent or tempfile.gettempdir()).glob(_TMP_PREFIX + "*"):
        try:
            if not d.is_dir() or now - d.stat().st_mtime < _STALE_AFTER_S:
                continue
            pid_file = d / "mon.a.pid"
            pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
        except (OSError, ValueError):
            continue
        if pid is None or not _is_ceph_mon(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


_RUNNING: set[CephMon] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    # Last line of defence when a test run ends without fixture teardown.
    with _RUNNING_LOCK:
        leftovers = list(_RUNNING)
    for mon in leftovers:
        mon.stop()


class CephMon:
    """One throwaway ``ceph-mon`` (id ``a``) on loopback, msgr v1 only, auth none.

    ``cephx=True`` requires cephx for everything instead: ``ceph-authtool`` makes
    ``keyring`` (``mon.`` and ``client.admin``, all caps) in the mon's dir, the
    ceph.conf names it, and the store is made with it (``--mkfs --keyring``).
    ``base_dir=None`` makes a private temp dir that :meth:`stop` removes; a given
    dir is kept unless ``remove_dir=True``. ``port=None`` picks a free port and
    retries with another one if the mon loses the bind race.
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, *,
                 host: str = "127.0.0.1", port: int | None = None, debug_ms: int = 0,
                 extra_conf: dict[str, str] | None = None, start_timeout: float = 20.0,
                 remove_dir: bool | None = None, die_with_parent: bool = True,
                 cephx: bool = False) -> None:
        if base_dir is None:
            # Short path on purpose: the admin socket path must fit sun_path (108 bytes).
            remove_stale_dirs()
            self.dir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX))
            self._remove_dir = True if remove_dir is None else remove_dir
        else:
            self.dir = Path(base_dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_dir = bool(remove_dir)
        self.host = host
        self.port = port or 0
        self._fixed_port = port is not None
        self.debug_ms = debug_ms
        self.extra_conf = dict(extra_conf or {})
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.fsid = str(uuid.uuid4())
        self.name = "a"
        self.cephx = cephx
        self._proc: subprocess.Popen[bytes] | None = None

    # --- paths and addresses ---------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.dir / "ceph.conf"

    @property
    def keyring_path(self) -> Path:
        """The cephx keyring (``mon.``, ``client.admin``); exists only in cephx mode."""
        return self.dir / "keyring"

    @property
    def log_path(self) -> Path:
        return self.dir / f"mon.{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / f"mon.{self.name}.pid"

    @property
    def stderr_path(self) -> Path:
        return self.dir / "ceph-mon.stderr"

    @property
    def addr(self) -> str:
        return f"v1:{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The mon's pid from its pid file (None before it wrote one)."""
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the mon log and its stderr, for error messages."""
        out = []
        for path in (self.log_path, self.stderr_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(out) or "(no mon log written)"

    # --- life cycle --------------------------------------------------------

    def start(self) -> CephMon:
        """Create the mon store and run the mon until its port accepts TCP."""
        missing = missing_binaries(*MON_BINARIES, *(CEPHX_BINARIES if self.cephx else ()))
        if missing:
            raise CephMonError(f"missing Ceph binaries: {', '.join(missing)}")
        attempts = 1 if self._fixed_port else 5
        for _attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            self._mkfs()
            if self._launch_and_wait():
                with _RUNNING_LOCK:
                    _RUNNING.add(self)
                return self
            # Only a lost bind race gets here: the port was taken meanwhile.
        raise CephMonError(f"ceph-mon could not bind a free port in {attempts} tries\n"
                           + self.log_tail())

    def _conf_text(self) -> str:
        d = self.dir
        auth = "cephx" if self.cephx else "none"
        opts = {
            "fsid": self.fsid,
            "mon host": self.addr,
            "auth cluster required": auth,
            "auth service required": auth,
            "auth client required": auth,
            "ms bind msgr2": "false",
            "ms bind msgr1": "true",
            # Fail fast on a lost port race (defaults: 3 tries, 5 s apart).
            "ms bind retry count": "1",
            "ms bind retry delay": "0",
            # Without it the mon's last words (why it exited) are often lost.
            "log flush on exit": "true",
            "mon data": f"{d}/mon/$cluster-$id",
            "log file": f"{d}/$name.log",
            "run dir": f"{d}",
            "admin socket": f"{d}/$name.asok",
            "pid file": f"{d}/$name.pid",
        }
        if self.cephx:
            opts["keyring"] = str(self.keyring_path)
        if self.debug_ms:
            opts["debug ms"] = str(self.debug_ms)
        opts.update(self.extra_conf)
        return "[global]\n" + "".join(f"\t{k} = {v}\n" for k, v in opts.items())

    def _run_tool(self, *argv: str) -> None:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise CephMonError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}\n"
                               + self.log_tail())

    def _mkfs(self) -> None:
        # A new port means a new monmap, so the store is rebuilt from scratch.
        shutil.rmtree(self.dir / "mon", ignore_errors=True)
        for p in (self.log_path, self.pid_path, self.dir / "monmap"):
            p.unlink(missing_ok=True)
        (self.dir / "mon").mkdir(parents=True)
        self.conf_path.write_text(self._conf_text())
        monmap = str(self.dir / "monmap")
        self._run_tool("monmaptool", "--create", "--addv", self.name, f"[{self.addr}]",
                       "--fsid", self.fsid, monmap)
        mkfs = ["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", self.name,
                "--monmap", monmap]
        if self.cephx:
            self._make_keyring()
            mkfs += ["--keyring", str(self.keyring_path)]
        self._run_tool(*mkfs)

    def _make_keyring(self) -> None:
        """``mon.`` and ``client.admin`` with every cap, as a new cluster's bootstrap has."""
        kr = str(self.keyring_path)
        self.keyring_path.unlink(missing_ok=True)
        self._run_tool("ceph-authtool", "--create-keyring", kr, "--gen-key", "-n", "mon.",
                       "--cap", "mon", "allow *")
        self._run_tool("ceph-authtool", kr, "--gen-key", "-n", "client.admin",
                       "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                       "--cap", "mgr", "allow *", "--cap", "mds", "allow *")

    def _launch_and_wait(self) -> bool:
        """Start the mon; True once it listens, False on a lost port race."""
        with open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                ["ceph-mon", "-c", str(self.conf_path), "-i", self.name, "-f"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.dir,
                preexec_fn=_set_pdeathsig if self.die_with_parent else None)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                if "Address already in use" in self.log_tail(200) and not self._fixed_port:
                    return False
                raise CephMonError(f"ceph-mon exited with status {rc} before listening on "
                                   f"{self.addr}\n" + self.log_tail())
            if self._accepts_tcp():
                # Someone else may hold the port we picked: make sure it is our mon.
                owner = _pid_owns_listener(self._proc.pid, self.port)
                if owner is not False:
                    return True
            time.sleep(0.02)
        self._kill()
        raise CephMonError(f"ceph-mon did not accept TCP on {self.addr} within "
                           f"{self.start_timeout:.0f} s\n" + self.log_tail())

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _kill(self, grace: float = 5.0) -> None:
        # The pid file is authoritative (as for a daemonized mon); our child
        # handle is the fallback when the mon died before writing it.
        pids = {p for p in (self.pid, self._proc.pid if self._proc else None)
                if p and _is_ceph_mon(p)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._proc.wait(grace)

    def stop(self) -> None:
        """SIGTERM the mon (SIGKILL after 5 s), then remove the dir if we own it."""
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        self._kill()
        self._proc = None
        if self._remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> CephMon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- talking to it ---------------------------------------------------------

    def ceph_cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run ``ceph -c <conf> <args>``; raises subprocess.TimeoutExpired on a hang."""
        argv = ["ceph", "-c", str(self.conf_path), "--connect-timeout", str(int(max(timeout, 1))),
                *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def __repr__(self) -> str:
        return f"CephMon({self.addr}, dir={self.dir}, running={self.running()})"


# --- tshark ------------------------------------------------------------------

class TsharkCapture:
    """``tshark -i lo -f "tcp port N" -w pcap`` that is really capturing once started.

    tshark says "Capturing on" before the kernel delivers packets (the first
    ~50 ms of traffic were lost in trials), so readiness is proven instead: UDP
    probes to an unused port go into the same capture until tshark prints one.
    A final probe likewise proves that everything sent before :meth:`stop` is
    in the file.
    """

    def __init__(self, port: int, pcap_path: str | os.PathLike[str], *, iface: str = "lo",
                 ready_timeout: float = 15.0) -> None:
        self.port = port
        self.pcap = Path(pcap_path)
        self.iface = iface
        self.ready_timeout = ready_timeout
        self.probe_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: list[bytes] = []
        self._seen_cv = threading.Condition()
        self._reader: threading.Thread | None = None
        self._probe_no = 0

    def start(self) -> TsharkCapture:
        missing = missing_binaries("tshark")
        if missing:
            raise CephMonError("missing binary: tshark")
        self.pcap.unlink(missing_ok=True)
        cfilter = f"tcp port {self.port} or (udp and dst port {self.probe_port})"
        # -P -l -T fields: print the payload of each probe as tshark reads it back.
        argv = ["tshark", "-i", self.iface, "-f", cfilter, "-w", str(self.pcap), "-P", "-l",
                "-T", "fields", "-e", "data.data"]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, preexec_fn=_set_pdeathsig)
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self._sync("start")
        except BaseException:
            self.abort()
            raise
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._seen_cv:
                self._seen.append(line.strip())
                self._seen_cv.notify_all()
        with self._seen_cv:
            self._seen_cv.notify_all()

    def _sync(self, what: str) -> None:
        """Send probes until tshark shows one of them."""
        self._probe_no += 1
        marker = f"pymsgr-probe-{what}-{self._probe_no}".encode()
        want = marker.hex().encode()
        deadline = time.monotonic() + self.ready_timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    u.sendto(marker, ("127.0.0.1", self.probe_port))
                with self._seen_cv:
                    if self._seen_cv.wait_for(lambda: want in self._seen or self._exited(), 0.05):
                        if want in self._seen:
                            return
                        break
        err = b""
        if self._exited() and self._proc and self._proc.stderr:
            err = self._proc.stderr.read()
        raise CephMonError(f"tshark did not capture its {what} probe within "
                           f"{self.ready_timeout:.0f} s: {err.decode(errors='replace')[-800:]}")

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def abort(self) -> None:
        """Stop tshark at once (no flush probe); safe to call twice."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # tshark then stops dumpcap and closes the file
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        self._proc = None

    def stop(self) -> Path:
        """Flush (end probe), stop tshark and return the pcap path."""
        try:
            if not self._exited():
                self._sync("end")
        finally:
            self.abort()
        return self.pcap

    def __enter__(self) -> TsharkCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self.abort()  # do not mask the test's own error with a sync failure


def tshark_decode(pcap: str | os.PathLike[str], port: int, *, fmt: str = "text",
                  display_filter: str | None = None, timeout: float = 60.0) -> str:
    """Decode ``pcap`` with ``port``'s TCP traffic dissected as Ceph.

    ``fmt`` is "text" (``-V``) or "json" (``-T json``, returned as text; use
    json.loads). The default display filter keeps only that port's TCP traffic,
    which hides the capture's UDP probes.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"fmt must be 'text' or 'json', not {fmt!r}")
    # No `-d tcp.port==N,ceph`: tshark 4.0's Ceph dissector is only a TCP
    # heuristic (on by default) that recognises the banner; -d rejects "ceph".
    argv = ["tshark", "-r", str(pcap),
            "-Y", display_filter or f"tcp.port=={port}"]
    argv += ["-V"] if fmt == "text" else ["-T", "json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise CephMonError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr[-800:]}")
    return r.stdout
