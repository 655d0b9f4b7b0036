"""The ``msgr`` command line: help at every level, address checks, and an error per failure kind."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cephmon import free_port

from msgr import Config, Dispatcher, EntityName, Message, Messenger, Policy, __version__
from msgr.cli import AddressError, main, parse_peer_address
from msgr.entity import AF_INET6, EntityAddr
from msgr.messages import MAuth, MAuthReply
from msgr.messages.auth import CEPH_AUTH_CEPHX, CEPH_AUTH_NONE
from msgr.probe import ExitCode, explain_auth_refusal

ROOT = Path(__file__).resolve().parent.parent

# What a real pacific ceph-mon with `auth * required = cephx` answered to an auth-none negotiation
# (recorded from ceph-mon 16.2.15; header: type 18, priority 196, version 1, front_len 24).
CEPHX_MON_REFUSES_NONE_FRONT = bytes.fromhex("00000000a1ffffff00000000000000000000000000000000")


def _run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(list(argv), prog="msgr")
    out, err = capsys.readouterr()
    return rc, out, err


# --- help and version ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["probe", "--help"]])
def test_help_documents_exit_statuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(*argv, capsys=capsys)
    assert rc == 0
    assert "exit status:" in out
    for code in ExitCode:
        assert f"  {int(code)}  {code.describe()}" in out


def test_top_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run("--help", capsys=capsys)
    assert rc == 0 and "probe" in out and "bench" in out


def test_probe_help_explains_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run("probe", "--help", capsys=capsys)
    assert rc == 0
    assert "[v1:]HOST:PORT" in out and "port is required" in out and "v2:" in out
    assert "--count" in out and "--timeout" in out and "--json" in out


def test_bench_help_is_the_harness_help() -> None:
    r = subprocess.run([sys.executable, "-m", "msgr", "bench", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: python -m msgr bench" in r.stdout and "--sizes" in r.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run("--version", capsys=capsys)
    assert rc == 0 and out.strip() == f"msgr {__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys=capsys)
    assert rc == ExitCode.USAGE and "required: COMMAND" in err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run("frobnicate", capsys=capsys)
    assert rc == ExitCode.USAGE and "invalid choice: 'frobnicate'" in err


@pytest.mark.parametrize("argv,needle", [
    (["probe", "v1:127.0.0.1:6789", "--count", "0"], "must be at least 1"),
    (["probe", "v1:127.0.0.1:6789", "--timeout", "-1"], "must be more than 0"),
    (["probe"], "required: ADDR"),
])
def test_probe_option_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(*argv, capsys=capsys)
    assert rc == ExitCode.USAGE and needle in err


# --- addresses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,ip,port,nonce,family", [
    ("v1:127.0.0.1:6789", "127.0.0.1", 6789, 0, 2),
    ("10.1.2.3:3300", "10.1.2.3", 3300, 0, 2),
    ("v1:127.0.0.1:6789/42", "127.0.0.1", 6789, 42, 2),
    ("v1:[::1]:6789", "::1", 6789, 0, AF_INET6),
    ("[fe80::1]:1/7", "fe80::1", 1, 7, AF_INET6),
])
def test_parse_peer_address(text: str, ip: str, port: int, nonce: int, family: int) -> None:
    a = parse_peer_address(text)
    assert (a.type, a.ip, a.port, a.nonce, a.family) == (EntityAddr.TYPE_LEGACY, ip, port, nonce, family)


@pytest.mark.parametrize("text,needle", [
    ("v1:127.0.0.1", "has no port"),            # not port 0
    ("127.0.0.1", "has no port"),
    ("v1:[::1]", "has no port"),
    ("v1:127.0.0.1:", "has no port"),
    ("v2:127.0.0.1:3300", "msgr v1 only"),
    ("v2:[::1]:3300", "msgr v1 only"),
    ("v1:127.0.0.1:0", "bad port '0'"),
    ("v1:127.0.0.1:65536", "bad port"),
    ("v1:127.0.0.1:http", "bad port"),
    ("v1:127.0.0.1:6789/x", "bad nonce"),
    ("v1:::1:6789", "in brackets"),
    ("v1:[::1:6789", "bad IPv6 address"),
    ("v1::6789", "has no host"),
])
def test_bad_peer_address(text: str, needle: str) -> None:
    with pytest.raises(AddressError, match=needle) as info:
        parse_peer_address(text)
    assert info.value.exit_code == ExitCode.USAGE


def test_hostname_resolves() -> None:
    a = parse_peer_address("v1:localhost:6789/5")
    assert (a.ip, a.port, a.nonce) == ("127.0.0.1", 6789, 5)


def test_hostname_prefers_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    infos = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 6789, 0, 0)),
             (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 6789))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: list(infos))
    assert parse_peer_address("mon.example:6789").ip == "192.0.2.7"
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: infos[:1])
    a = parse_peer_address("mon.example:6789")
    assert (a.ip, a.family) == ("2001:db8::1", AF_INET6)


def test_unknown_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: Any, **k: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(AddressError, match="cannot resolve host 'nosuch.example'") as info:
        parse_peer_address("v1:nosuch.example:6789")
    assert info.value.exit_code == ExitCode.UNREACHABLE


@pytest.mark.parametrize("addr,needle", [
    ("v1:127.0.0.1", "'v1:127.0.0.1' has no port"),
    ("v2:127.0.0.1:3300", "msgr v1 only"),
])
def test_cli_address_errors(addr: str, needle: str) -> None:
    r = subprocess.run([sys.executable, "-m", "msgr", "probe", addr], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == ExitCode.USAGE
    assert needle in r.stderr and "Traceback" not in r.stderr


# --- peers that are not what we hoped ------------------------------------------------------------

@contextlib.contextmanager
def _fake_server(greeting: bytes | None) -> Iterator[int]:
    """A loopback TCP server that sends ``greeting`` to each client (None: closes at once)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)  # close() does not wake a blocked accept(): poll the stop flag
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if greeting is None:
                c.close()
                continue
            conns.append(c)
            c.sendall(greeting)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        srv.close()
        t.join(5)
        for c in conns:
            c.close()


@pytest.mark.parametrize("greeting,needle", [
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "not a Ceph v1 peer: got b'SSH-2.0-Op'"),
    (b"ceph v2\n\x10\x00\x00\x00", "speaks msgr2 only"),
    (None, "closed the connection without a word"),
    (b"", "sent nothing"),
])
def test_probe_names_a_foreign_peer(greeting: bytes | None, needle: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with _fake_server(greeting) as port:
        # a host name, so resolution is exercised too
        rc, out, err = _run("probe", f"localhost:{port}", "--timeout", "2", "--count", "1",
                            capsys=capsys)
    assert rc == ExitCode.NOT_CEPH_V1, out + err
    assert needle in err and needle in out
    assert out.splitlines()[-1] == "probe: FAILED"


def test_probe_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run("probe", f"v1:127.0.0.1:{free_port()}", "--timeout", "3", capsys=capsys)
    assert rc == ExitCode.UNREACHABLE, out + err
    assert "connection refused by 127.0.0.1:" in err


# --- authentication refusals -----------------------------------------------------------------------

def _auth_reply(front: bytes) -> MAuthReply:
    r = MAuthReply()
    r.front = front
    r.decode_payload()
    return r


def test_recorded_cephx_refusal_is_explained() -> None:
    r = _auth_reply(CEPHX_MON_REFUSES_NONE_FRONT)
    assert (r.protocol, r.result, r.global_id, r.result_msg) == (0, -95, 0, "")
    text = explain_auth_refusal(r, [CEPH_AUTH_NONE])
    assert "the monitor requires cephx; pass --name and --keyring" in text
    assert "-95" in text and "EOPNOTSUPP" in text


@pytest.mark.parametrize("result,offered,needle", [
    (-95, [CEPH_AUTH_CEPHX, CEPH_AUTH_NONE], "allows none of the offered methods (cephx/none)"),
    (-13, [CEPH_AUTH_CEPHX], "permission denied"),
    (-1, [CEPH_AUTH_CEPHX], "not permitted"),
    (-22, [CEPH_AUTH_NONE], "result -22 (EINVAL)"),
])
def test_other_refusals(result: int, offered: list[int], needle: str) -> None:
    assert needle in explain_auth_refusal(MAuthReply(0, result), offered)


class _RefusingMon(Dispatcher):
    """Answers every MAuth as a cephx-only monitor answers an auth-none negotiation."""

    def ms_dispatch(self, msg: Message) -> bool:
        if isinstance(msg, MAuth):
            msg.get_connection().send_message(_auth_reply(CEPHX_MON_REFUSES_NONE_FRONT))
        return True


def test_probe_auth_refused_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    ms = Messenger.create(EntityName.mon("a"), nonce=0, config=Config())
    ms.set_default_policy(Policy.stateless_server())
    addr = ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.add_dispatcher_tail(_RefusingMon())
    ms.start()
    try:
        rc, out, err = _run("probe", f"v1:127.0.0.1:{addr.port}", "--timeout", "5", "--count", "1",
                            capsys=capsys)
    finally:
        ms.shutdown()
        ms.wait()
    assert rc == ExitCode.AUTH_REFUSED, out + err
    assert "the monitor requires cephx; pass --name and --keyring" in err
    assert any(line.startswith("auth") and "FAIL" in line for line in out.splitlines())


@pytest.mark.parametrize("greeting,needle", [
    (b"SSH-2.0-OpenSSH_9.2p1\r\n", "not a Ceph v1 peer: got b'SSH-2.0-Op'"),
    (b"ceph v2\n\x10\x00\x00\x00", "speaks msgr2 only"),
])
def test_probe_uses_the_messengers_banner_error(greeting: bytes, needle: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # the handshake's own BadBannerError names the peer; no second connection is needed
    def no_sniff(*a: Any, **k: Any) -> None:
        raise AssertionError("sniff_peer should not run")
    monkeypatch.setattr("msgr.probe.sniff_peer", no_sniff)
    with _fake_server(greeting) as port:
        rc, out, err = _run("probe", f"v1:127.0.0.1:{port}", "--timeout", "5", capsys=capsys)
    assert rc == ExitCode.NOT_CEPH_V1, out + err
    assert needle in err


def test_probe_real_cephx_mon_says_cephx_is_required(cephx_mon: Any) -> None:
    r = subprocess.run([sys.executable, "-m", "msgr", "probe", cephx_mon.addr, "--count", "1",
                        "--timeout", "10"], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert r.returncode == ExitCode.AUTH_REFUSED, r.stdout + r.stderr
    assert "the monitor requires cephx; pass --name and --keyring" in r.stderr
    assert "-95 (EOPNOTSUPP)" in r.stderr
