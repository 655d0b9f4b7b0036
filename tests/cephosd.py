"""A throwaway real ``ceph-osd`` (memstore, msgr v1) beside a cephx CephMon, for interop tests.

    mon = CephMon(cephx=True, extra_conf=CephOsd.MON_CONF).start()
    osd = CephOsd(mon).start()      # osd.0: registered, keyed, up
    ... osd.addr ("v1:127.0.0.1:PORT/NONCE"), osd.port, osd.keyring_path
    osd.stop()

The recipe is a new cluster's: ``ceph osd new UUID`` allocates id 0,
``ceph auth get-or-create osd.0`` makes its key, ``ceph-osd --mkfs`` builds a
memstore, and the OSD runs in the foreground as our child until ``ceph osd
dump`` shows it up. Stdlib only.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from cephmon import CephMon, CephMonError, _set_pdeathsig

__all__ = ["CephOsd", "OSD_BINARIES"]

OSD_BINARIES = ("ceph-osd", "ceph")


class CephOsd:
    """osd.0 on memstore, added to ``mon``'s cluster and started; needs a cephx mon with MON_CONF."""

    #: options the mon's ceph.conf needs so the OSD it serves runs from memory on msgr v1
    MON_CONF = {
        "osd objectstore": "memstore",
        "memstore device bytes": str(256 << 20),
        "osd data": "$run_dir/osd-$id",
        "osd pool default size": "1",
        "mon allow pool size one": "true",
    }

    def __init__(self, mon: CephMon, start_timeout: float = 30.0) -> None:
        self.mon = mon
        self.id = 0
        self.uuid = str(uuid.uuid4())
        self.dir = mon.dir / f"osd-{self.id}"
        self.start_timeout = start_timeout
        self.addr = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def keyring_path(self) -> Path:
        return self.dir / "keyring"

    @property
    def log_path(self) -> Path:
        return self.mon.dir / f"osd.{self.id}.log"

    def _cli(self, *args: str) -> str:
        r = self.mon.ceph_cli(*args, timeout=30)
        if r.returncode != 0:
            raise CephMonError(f"ceph {' '.join(args)} failed ({r.returncode}): {r.stderr[-800:]}")
        return r.stdout

    def start(self) -> CephOsd:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.id = int(self._cli("osd", "new", self.uuid).strip())
        self._cli("auth", "get-or-create", f"osd.{self.id}", "mon", "allow profile osd",
                  "osd", "allow *", "mgr", "allow profile osd", "-o", str(self.keyring_path))
        base = ["ceph-osd", "-c", str(self.mon.conf_path), "-i", str(self.id),
                "--keyring", str(self.keyring_path)]
        r = subprocess.run(base + ["--mkfs", "--osd-uuid", self.uuid], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise CephMonError(f"ceph-osd --mkfs failed ({r.returncode}): {r.stderr[-800:]}")
        with open(self.mon.dir / "ceph-osd.stderr", "wb") as err:
            self._proc = subprocess.Popen(base + ["-f"], stdin=subprocess.DEVNULL, stdout=err,
                                          stderr=err, preexec_fn=_set_pdeathsig)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CephMonError(f"ceph-osd exited with {self._proc.returncode} before it was up")
            dump = json.loads(self._cli("osd", "dump", "--format", "json"))
            me = [o for o in dump.get("osds", []) if o.get("osd") == self.id]
            if me and me[0].get("up"):
                v1 = [a for a in me[0]["public_addrs"]["addrvec"] if a["type"] == "v1"][0]
                self.addr = f"v1:{v1['addr']}/{v1['nonce']}"
                self.port = int(v1["addr"].rsplit(":", 1)[1])
                return self
            time.sleep(0.3)
        self.stop()
        raise CephMonError(f"ceph-osd did not come up within {self.start_timeout:.0f} s")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> CephOsd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
