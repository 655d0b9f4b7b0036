"""``python -m msgr probe`` against the real ceph-mon of the ``ceph_mon`` fixture."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cephmon import free_port

from msgr.entity import EntityAddr
from msgr.features import CEPH_FEATURES_ALL_PACIFIC, MONENC, MONNAMES
from msgr.probe import Probe

ROOT = Path(__file__).resolve().parent.parent


def _probe_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "msgr", "probe", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_probe_real_mon_json(ceph_mon) -> None:
    r = _probe_cli(ceph_mon.addr, "--count", "20", "--json", "--timeout", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    steps = {s["step"]: s for s in out["steps"]}
    assert out["ok"] and all(s["ok"] for s in out["steps"])
    assert steps["monmap"]["fsid"] == ceph_mon.fsid
    assert steps["monmap"]["epoch"] >= 1 and f"a@v1:127.0.0.1:{ceph_mon.port}" in steps["monmap"]["mons"]
    assert steps["auth"]["result"] == 0 and steps["auth"]["global_id"] > 0
    assert steps["keepalive"]["count"] == 20 and 0 < steps["keepalive"]["p50_us"] <= steps["keepalive"]["p99_us"]
    # the mon's features (pacific) anded with ours
    assert int(steps["connect"]["features"], 16) == 0x3F01CFBDFFFDFFFF
    assert json.loads(steps["mon_stat"]["output"])["leader"] == "a"
    assert steps["osdmap"]["osdmap_version"] >= 1


def test_probe_real_mon_text_lines(ceph_mon) -> None:
    r = _probe_cli(ceph_mon.addr, "--count", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for step in ("connect", "keepalive", "auth", "monmap"):
        assert any(line.startswith(step) and " ok " in line for line in lines), (step, r.stdout)
    assert ceph_mon.fsid in r.stdout and lines[-1] == "probe: ok"


def test_probe_legacy_monmap_without_monenc(ceph_mon) -> None:
    # without MONNAMES/MONENC the mon sends the legacy monmap encoding; the probe still reads it
    lines: list[str] = []
    res = Probe(EntityAddr.parse(ceph_mon.addr), count=2, timeout=10,
                features=CEPH_FEATURES_ALL_PACIFIC & ~(MONNAMES | MONENC), out=lines.append).run()
    steps = {s["step"]: s for s in res.steps}
    assert steps["monmap"]["ok"], lines
    assert steps["monmap"]["fsid"] == ceph_mon.fsid and steps["monmap"]["encoding"] == "v1"


def test_probe_fails_nonzero_when_nobody_listens() -> None:
    r = _probe_cli(f"v1:127.0.0.1:{free_port()}", "--count", "1", "--timeout", "3", timeout=60)
    assert r.returncode != 0
    assert "FAIL" in r.stdout
