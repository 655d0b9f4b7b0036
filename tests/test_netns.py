"""NetnsPair: two namespaces joined by veth; TCP across them; partitions by link down/up; cleanup."""
from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgr.testing.netns import NetnsError, NetnsPair, cleanup_stale, netns_required, require_netns

pytestmark = pytest.mark.netns

CHILD = str(Path(__file__).resolve().parent / "netns_child.py")


class Lines:
    """Follow a child's JSON stdout lines from a thread, with timeouts."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def get(self, timeout: float) -> dict | None:
        return self.q.get(timeout=timeout)


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    require_netns()
    cleanup_stale()
    with NetnsPair() as p:
        yield p


def start_echo(pair: NetnsPair) -> int:
    server = pair.python("b", CHILD, "echo-server", pair.addr_b, "0")
    ready = Lines(server).get(timeout=20)
    assert ready and "ready" in ready
    return ready["ready"]


def test_pair_has_both_namespaces_and_addresses(pair: NetnsPair) -> None:
    names = NetnsPair.list_all()
    assert pair.ns_a in names and pair.ns_b in names
    out = pair.run("a", ["ip", "-o", "-4", "addr", "show"]).stdout
    assert f"{pair.addr_a}/24" in out and pair.addr_b not in out
    out_b = pair.run("b", ["ip", "-o", "-4", "addr", "show"]).stdout
    assert f"{pair.addr_b}/24" in out_b and pair.addr_a not in out_b
    link = pair.run("a", ["ip", "-o", "link", "show", "type", "veth"]).stdout
    assert pair.dev["a"] in link and "state UP" in link


def test_tcp_echo_between_namespaces(pair: NetnsPair) -> None:
    port = start_echo(pair)
    client = pair.python("a", CHILD, "echo-client", pair.addr_b, str(port), "--count", "200",
                         "--interval", "0")
    lines = Lines(client)
    got = []
    while (line := lines.get(timeout=20)) is not None:
        got.append(line)
    assert got[-1] == {"done": 200}
    assert [line["echo"] for line in got[:-1]] == list(range(200))


def test_echo_client_in_root_namespace_cannot_reach_b(pair: NetnsPair) -> None:
    # the namespace address must not be reachable from outside: proves the child really runs inside b
    port = start_echo(pair)
    import socket
    with pytest.raises(OSError):
        socket.create_connection((pair.addr_b, port), timeout=1).close()


def test_partition_stops_traffic_and_heals(pair: NetnsPair) -> None:
    port = start_echo(pair)
    client = pair.python("a", CHILD, "echo-client", pair.addr_b, str(port), "--interval", "0.01")
    lines = Lines(client)
    seen = [lines.get(timeout=20)["echo"] for _ in range(20)]
    with pair.partition("a"):
        down_at = time.monotonic()
        # at most the round trip already in flight gets through after the link went down; echoes that
        # came back before it (still in the pipe or the queue under load) are not judged here
        drained = []
        with pytest.raises(queue.Empty):
            while True:
                drained.append(lines.get(timeout=0.3))
        after = [d["echo"] for d in drained if d["t"] > down_at]
        assert len(after) <= 1, f"echoes {after} came back after the link went down"
        seen += [d["echo"] for d in drained]
        with pytest.raises(queue.Empty):   # partitioned: nothing crosses
            lines.get(timeout=1.0)
    healed_at = time.monotonic()
    # TCP retransmission backoff decides how soon after link up the next segment goes
    seen.append(lines.get(timeout=15)["echo"])
    heal_s = time.monotonic() - healed_at
    for _ in range(20):
        seen.append(lines.get(timeout=10)["echo"])
    client.stdin.close()
    while (line := lines.get(timeout=10)) is not None:
        if "echo" in line:
            seen.append(line["echo"])
    assert seen == list(range(len(seen))), "bytes across the partition were lost or reordered"
    assert heal_s < 15


def test_kill_tcp_aborts_the_connection_inside_the_namespace(pair: NetnsPair) -> None:
    port = start_echo(pair)
    client = pair.python("a", CHILD, "echo-client", pair.addr_b, str(port), "--interval", "0.05")
    lines = Lines(client)
    assert lines.get(timeout=20)["echo"] == 0
    assert pair.kill_tcp("a") == 1
    while (line := lines.get(timeout=10)) is not None:
        if "echo" not in line:
            break
    assert client.wait(10) != 0 and line is None   # the client died of ECONNABORTED
    assert pair.kill_tcp("a") == 0


def test_close_removes_namespaces_and_children_even_on_error() -> None:
    require_netns()
    p = NetnsPair()
    child = None
    with pytest.raises(RuntimeError, match="boom"):
        with p:
            child = p.popen("a", ["sleep", "60"])
            raise RuntimeError("boom")
    assert child is not None and child.poll() is not None
    names = NetnsPair.list_all()
    assert p.ns_a not in names and p.ns_b not in names
    p.close()   # idempotent


def test_failed_create_leaves_nothing_behind() -> None:
    require_netns()
    p = NetnsPair(subnet="not-an-address")
    with pytest.raises(NetnsError, match="addr add"):
        p.create()
    names = NetnsPair.list_all()
    assert p.ns_a not in names and p.ns_b not in names


def test_require_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSGR_REQUIRE_NETNS", raising=False)
    monkeypatch.delenv("MSGR_REQUIRE_CEPH", raising=False)
    assert not netns_required()
    monkeypatch.setenv("MSGR_REQUIRE_NETNS", "0")
    assert not netns_required()
    monkeypatch.setenv("MSGR_REQUIRE_CEPH", "1")
    assert netns_required()
