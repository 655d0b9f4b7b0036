"""A child process started inside a network namespace by the netns tests.

Modes (first argument):
  echo-server HOST PORT     listen, print ``{"ready": port}``, echo every connection until EOF
  echo-client HOST PORT     send an 8-byte counter every ``--interval`` s, read the echo back, print
                            ``{"echo": n}`` per round trip; stop at EOF on stdin or after ``--count``
  msgr-peer ...             see tests/test_lossless_netns.py (a messenger bound to its namespace address)

Each line on stdout is one JSON object, flushed at once, so the parent can follow progress.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time


def emit(**obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def echo_server(host: str, port: int) -> None:
    ls = socket.create_server((host, port))
    emit(ready=ls.getsockname()[1])

    def serve(s: socket.socket) -> None:
        with s:
            try:
                while data := s.recv(65536):
                    s.sendall(data)
            except OSError:
                pass
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


def echo_client(host: str, port: int, interval: float, count: int) -> None:
    s = socket.create_connection((host, port), timeout=30)
    s.settimeout(None)   # block through partitions: TCP retransmits until the link heals
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()
    threading.Thread(target=watch_stdin, daemon=True).start()
    n = 0
    while not stop.is_set() and (count == 0 or n < count):
        s.sendall(struct.pack("<Q", n))
        buf = b""
        while len(buf) < 8:
            data = s.recv(8 - len(buf))
            if not data:
                emit(error="eof")
                return
            buf += data
        emit(echo=struct.unpack("<Q", buf)[0])
        n += 1
        time.sleep(interval)
    s.close()
    emit(done=n)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--count", type=int, default=0)
    args, rest = ap.parse_known_args(argv)
    if args.mode == "echo-server":
        echo_server(args.host, args.port)
    elif args.mode == "echo-client":
        echo_client(args.host, args.port, args.interval, args.count)
    elif args.mode == "msgr-peer":
        raise SystemExit("msgr-peer mode is not available yet")
    else:
        ap.error(f"unknown mode {args.mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
