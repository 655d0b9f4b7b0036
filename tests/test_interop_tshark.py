"""tshark's Ceph dissector on pymsgr traffic: the probe vs a real mon, a real client vs minimon.

tshark 4.0's dissector marks every MON_MAP (monmap v9) as Malformed even when
the real mon sends it (docs/REAL_CEPH.md §9), so frames carrying MON_MAP are
left out of the Malformed check on the minimon side; everything else pymsgr
sends must decode cleanly.
"""
from __future__ import annotations

import re

from test_interop_minimon import MiniMonProc, minimon  # noqa: F401  (fixture)

from msgr.entity import EntityAddr
from msgr.probe import Probe


def _frames(text: str) -> list[str]:
    return [f for f in re.split(r"\n(?=Frame \d+:)", text) if f.startswith("Frame ")]


def test_probe_traffic_decodes_cleanly(ceph_mon, tshark) -> None:
    with tshark.capture(ceph_mon.port) as cap:
        res = Probe(EntityAddr.parse(ceph_mon.addr), count=3, timeout=10, out=None).run()
    assert res.ok, res.steps
    ours = _frames(tshark.decode(cap.pcap, ceph_mon.port,
                                 display_filter=f"ceph && tcp.dstport == {ceph_mon.port}"))
    text = "\n".join(ours)
    assert len(ours) >= 3, text[:3000]
    for want in ("Auth", "Subscribe", "Command"):
        assert want.lower() in text.lower(), want
    bad = [f.splitlines()[0] for f in ours if "Malformed" in f]
    assert not bad, bad


def test_minimon_traffic_decodes_cleanly(minimon: MiniMonProc, tshark) -> None:  # noqa: F811
    with tshark.capture(minimon.port) as cap:
        r = minimon.ceph("ping", "mon.a")
        assert r.returncode == 0, r.stderr
        r = minimon.ceph("mon", "stat")
        assert r.returncode == 0, r.stderr
    ours = _frames(tshark.decode(cap.pcap, minimon.port,
                                 display_filter=f"ceph && tcp.srcport == {minimon.port}"))
    assert ours, "no Ceph frames from minimon in the capture"
    text = "\n".join(ours)
    assert "Auth Reply" in text or "AUTH_REPLY" in text.upper().replace(" ", "_"), text[:3000]
    # a segment often holds AUTH_REPLY + MON_MAP: everything before the first MON_MAP must be clean
    bad = [f.splitlines()[0] for f in ours if "Malformed" in f.split("C_CEPH_MSG_MON_MAP (0x0004)")[0]]
    assert not bad, bad
    assert any("C_MSG_MON_COMMAND_ACK" in f or "C_CEPH_MSG_AUTH_REPLY" in f for f in ours)
