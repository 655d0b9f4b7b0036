"""The ``msgr`` command (also ``python -m msgr``): ``probe`` a v1 peer, ``bench`` the library.

Every subcommand documents itself with ``--help``. Exit statuses are the
values of :class:`msgr.probe.ExitCode` (listed in ``msgr --help``).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import textwrap

from msgr.entity import AF_INET, AF_INET6, EntityAddr
from msgr.errors import MsgrError
from msgr.probe import ExitCode, Probe, ProbeError, auth_from_options

__all__ = ["main", "parse_peer_address", "AddressError"]

MON_V1_PORT = 6789  # a monitor's legacy (v1) port; 3300 is msgr2 only

_EXIT_CODES_HELP = "\n".join(f"  {int(c)}  {c.describe()}" for c in ExitCode)


class AddressError(ProbeError):
    """A peer address the command line cannot use (syntax, missing port, v2, unknown host)."""


def _usage_error(message: str) -> AddressError:
    return AddressError(message, ExitCode.USAGE)


def parse_peer_address(text: str, resolve: bool = True) -> EntityAddr:
    """``[v1:]HOST:PORT[/NONCE]`` -> a v1 :class:`EntityAddr` to connect to.

    HOST is an IPv4 address, ``[IPv6]`` or a host name (resolved here, IPv4
    first). The port is required: a peer has no default port to guess, and
    port 0 cannot be dialled. ``v2:`` addresses are refused: pymsgr speaks
    msgr v1 only.
    """
    s = text.strip()
    if s.startswith("v2:"):
        raise _usage_error(
            f"{text!r} is a msgr2 (v2:) address; pymsgr speaks msgr v1 only: give the peer's v1 "
            f"address instead (a monitor's is v1:HOST:{MON_V1_PORT})")
    s = s.removeprefix("v1:")
    nonce = 0
    if "/" in s:
        s, _, nonce_text = s.rpartition("/")
        if not nonce_text.isdigit() or int(nonce_text) > 0xFFFFFFFF:
            raise _usage_error(f"bad nonce {nonce_text!r} in {text!r}: a number 0..4294967295")
        nonce = int(nonce_text)
    if s.startswith("["):
        host, sep, port_text = s[1:].partition("]")
        if not sep or (port_text and not port_text.startswith(":")):
            raise _usage_error(f"bad IPv6 address {text!r}: write v1:[ADDR]:PORT")
        port_text = port_text[1:]
    elif s.count(":") > 1:
        raise _usage_error(f"{text!r}: put an IPv6 address in brackets, e.g. v1:[::1]:{MON_V1_PORT}")
    else:
        host, _, port_text = s.partition(":")
    if not host:
        raise _usage_error(f"{text!r} has no host: write v1:HOST:PORT")
    if not port_text:
        raise _usage_error(f"{text!r} has no port: write v1:HOST:PORT "
                           f"(a monitor's v1 port is {MON_V1_PORT})")
    if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
        raise _usage_error(f"bad port {port_text!r} in {text!r}: a number 1..65535")
    port = int(port_text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not resolve:
            raise _usage_error(f"{host!r} is not an IP address") from None
        return _resolve(host, port, nonce)
    family = AF_INET6 if ip.version == 6 else AF_INET
    return EntityAddr(EntityAddr.TYPE_LEGACY, nonce, str(ip), port, family)


def _resolve(host: str, port: int, nonce: int) -> EntityAddr:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressError(f"cannot resolve host {host!r}: {exc.strerror}", ExitCode.UNREACHABLE) from None
    # IPv4 first: a daemon bound to one address family is far more often bound to IPv4.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = str(sockaddr[0])
            return EntityAddr(EntityAddr.TYPE_LEGACY, nonce, ip, port,
                              AF_INET6 if family == socket.AF_INET6 else AF_INET)
    raise AddressError(f"host {host!r} has no IPv4 or IPv6 address", ExitCode.UNREACHABLE)


def _prog() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "msgr"


def _text(*paragraphs: str) -> str:
    """Paragraphs filled to 78 columns (the raw formatter keeps the exit status table as written)."""
    return "\n\n".join(textwrap.fill(p, 78) for p in paragraphs)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; ``bench`` takes its own options (``bench --help``)."""
    from msgr import __version__

    prog = prog or _prog()
    top = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_text("pymsgr: Ceph's messenger (msgr v1) in Python. Talk to a Ceph daemon "
                          "or measure the library."),
        epilog=_text(f"Run '{prog} COMMAND --help' for a command's options.")
        + "\n\nexit status:\n" + _EXIT_CODES_HELP)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    probe = sub.add_parser(
        "probe", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="connect to a v1 peer (e.g. a ceph-mon) and report what it answers",
        description=_text(
            "Connect to a msgr v1 peer as a client and run these steps, printing each as it "
            "finishes: the handshake (negotiated features), KEEPALIVE2 round trips (p50/p99), "
            "auth (global_id), the monmap, then the osdmap version and 'mon stat' when the peer "
            "is a monitor that answers them.",
            "When the handshake fails the probe connects once more to see what the peer sends, "
            "and says so: nothing listening, not a Ceph peer (SSH, HTTP...), or msgr2 only."),
        epilog=_text(
            f"ADDR is [v1:]HOST:PORT[/NONCE]: HOST is an IPv4 address, [IPv6] or a host name "
            f"(resolved, IPv4 first). The port is required (a monitor's v1 port is "
            f"{MON_V1_PORT}). v2: addresses are refused: pymsgr speaks msgr v1 only.")
        + "\n\nexit status:\n" + _EXIT_CODES_HELP)
    probe.add_argument("addr", metavar="ADDR", help="the peer, e.g. v1:127.0.0.1:6789")
    probe.add_argument("--count", type=_positive_int, default=10,
                       help="KEEPALIVE2 round trips to time (default 10)")
    probe.add_argument("--timeout", type=_positive_float, default=10.0,
                       help="seconds to wait for each step (default 10)")
    probe.add_argument("--json", action="store_true",
                       help="print one JSON object at the end instead of a line per step")
    probe.add_argument("--name", "-n", metavar="TYPE.ID",
                       help="authenticate as this entity (default client.admin) with cephx")
    probe.add_argument("--keyring", "-k", metavar="FILE",
                       help="keyring holding the entity's key (as ceph-authtool writes it); with it, "
                            "cephx is required. Without --name/--keyring: auth none")

    sub.add_parser("bench", add_help=False,
                   help="run the benchmark suite (run from a checkout; 'bench --help' for options)")
    return top


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _run_probe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        addr = parse_peer_address(args.addr)
    except AddressError as exc:
        print(f"{parser.prog} probe: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    try:
        auth = auth_from_options(args.name, args.keyring)
    except MsgrError as exc:  # a keyring that cannot be read, or lacks the entity
        print(f"{parser.prog} probe: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    probe = Probe(addr, args.count, args.timeout, out=None if args.json else print, auth=auth)
    res = probe.run()
    if args.json:
        print(json.dumps({"ok": res.ok, "addr": str(addr), "exit_code": int(res.exit_code),
                          "steps": res.steps}, indent=1))
    else:
        print("probe:", "ok" if res.ok else "FAILED")
        if not res.ok and res.error:
            print(f"{parser.prog} probe: {res.error}", file=sys.stderr)
    return int(res.exit_code)


def _run_bench(prog: str, argv: list[str]) -> int:
    if os.path.isfile(os.path.join("bench", "harness.py")) and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the `msgr` script run at the root of a checkout
    try:
        from bench import harness  # the repository's bench/ package: run from a checkout
    except ModuleNotFoundError as exc:
        print(f"{prog} bench: the bench package is not importable ({exc}); run it from the "
              "root of a pymsgr checkout (make bench)", file=sys.stderr)
        return int(ExitCode.USAGE)
    return int(harness.main(argv) or 0)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns the exit status (see ``--help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    # bench owns all of its options, --help included: hand them over untouched.
    if argv and argv[0] == "bench":
        return _run_bench(parser.prog, argv[1:])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0)
    return _run_probe(parser, args)
