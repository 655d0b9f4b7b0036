"""``python -m msgr probe ... --name client.admin --keyring FILE`` against a real cephx monitor.

Exit statuses are only checked to be non-zero on failure (the command's own table of statuses
is msgr/cli.py's).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from msgr.auth import CryptoKey

ROOT = Path(__file__).resolve().parent.parent


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "msgr", "probe", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_probe_with_cephx_runs_every_step(cephx_mon):
    r = _probe(cephx_mon.addr, "--name", "client.admin", "--keyring", str(cephx_mon.keyring_path),
               "--count", "5", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    steps = {s["step"]: s for s in out["steps"]}
    assert all(s["ok"] for s in out["steps"]), out
    assert steps["auth"]["protocol"] == "cephx" and steps["auth"]["global_id"] > 0
    assert steps["auth"]["tickets"] == "mon,osd,mgr,auth" and steps["auth"]["round_trips"] == 2
    assert steps["monmap"]["fsid"] == cephx_mon.fsid
    assert "quorum" in steps["mon_stat"]["output"]
    assert steps["keepalive"]["count"] == 5 and steps["keepalive"]["p99_us"] >= steps["keepalive"]["p50_us"]


def test_probe_text_output_names_cephx(cephx_mon):
    r = _probe(cephx_mon.addr, "-n", "client.admin", "-k", str(cephx_mon.keyring_path), "--count", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    auth_line = next(line for line in r.stdout.splitlines() if line.startswith("auth"))
    assert "ok" in auth_line and "protocol=cephx" in auth_line and "name=client.admin" in auth_line
    assert r.stdout.rstrip().endswith("probe: ok")


def test_probe_with_a_wrong_key_fails_clearly(cephx_mon, tmp_path):
    bad = tmp_path / "keyring"
    bad.write_text(f"[client.admin]\n\tkey = {CryptoKey.generate().to_base64()}\n")
    r = _probe(cephx_mon.addr, "--name", "client.admin", "--keyring", str(bad), "--count", "2")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "wrong key" in r.stderr and "client.admin" in r.stderr and "EACCES" in r.stderr


def test_probe_keyring_problems_are_usage_errors(cephx_mon, tmp_path):
    r = _probe(cephx_mon.addr, "--keyring", str(tmp_path / "missing"))
    assert r.returncode != 0 and "no keyring" in r.stderr and "Traceback" not in r.stderr
    r = _probe(cephx_mon.addr, "--name", "client.nobody", "--keyring", str(cephx_mon.keyring_path))
    assert r.returncode != 0 and "no key for client.nobody" in r.stderr
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\xff not a keyring")
    r = _probe(cephx_mon.addr, "--keyring", str(garbage))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr


def test_probe_without_a_key_is_refused(cephx_mon):
    r = _probe(cephx_mon.addr, "--count", "2")
    assert r.returncode != 0 and "auth refused" in r.stdout + r.stderr
