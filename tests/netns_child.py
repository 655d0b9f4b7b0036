"""A child process started inside a network namespace by the netns tests.

Modes (first argument):
  echo-server HOST PORT     listen, print ``{"ready": port}``, echo every connection until EOF
  echo-client HOST PORT     send an 8-byte counter every ``--interval`` s, read the echo back, print
                            ``{"echo": n, "t": monotonic}`` per round trip; stop at EOF on stdin or after ``--count``
  msgr-recv HOST PORT       a lossless_peer messenger (osd.1) bound to HOST:PORT; prints ``{"ready": addr}``,
                            ``{"received": n}`` every ``--report`` messages, ``{"complete": n}`` at ``--count``,
                            and on EOF on stdin ``{"ids": [...], "perf": {...}}`` before it shuts down
  msgr-send HOST PORT       a lossless_peer messenger (osd.0) bound to HOST:PORT that sends ``--count``
                            MSeq messages to ``--peer`` in batches of ``--batch`` every ``--interval`` s;
                            prints ``{"sent": n}`` per ``--report``, ``{"queued_all": n}``, and on EOF on
                            stdin ``{"perf": {...}}``
  (``--config`` takes a JSON object of Config options for both messenger modes)

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
        # t: when the echo came back (CLOCK_MONOTONIC, the same clock in every network namespace)
        emit(echo=struct.unpack("<Q", buf)[0], t=time.monotonic())
        n += 1
        time.sleep(interval)
    s.close()
    emit(done=n)


def seq_message_class() -> type:
    """MSeq: front = id (u64) + a pad whose length and bytes follow from the id (checked on decode)."""
    import struct as st

    from msgr import Message
    from msgr.errors import DecodeError

    def pad_for(ident: int) -> bytes:
        n = (ident * 7919) % 1500
        return bytes((ident + i) & 0xFF for i in range(n))

    class _MSeq(Message):
        TYPE = 0x7F30

        def __init__(self, ident: int = 0) -> None:
            super().__init__()
            self.ident = ident
            self.front = st.pack("<Q", ident) + pad_for(ident)

        def decode_payload(self) -> None:
            self.ident = st.unpack_from("<Q", self.front)[0]
            if bytes(self.front[8:]) != pad_for(self.ident):
                raise DecodeError(f"MSeq {self.ident}: payload corrupted")
    return _MSeq


def make_messenger(name: object, host: str, port: int, config: dict, nonce: int) -> object:
    from msgr import Config, EntityAddr, Messenger, Policy
    ms = Messenger.create(name, nonce=nonce, config=Config(**config))
    ms.set_default_policy(Policy.lossless_peer())
    ms.bind(EntityAddr.parse(f"v1:{host}:{port}"))
    return ms


def msgr_recv(host: str, port: int, count: int, report: int, config: dict) -> None:
    from msgr import Dispatcher, EntityName
    mseq = seq_message_class()
    ids: list[int] = []
    lock = threading.Lock()

    class Recv(Dispatcher):
        def ms_can_fast_dispatch(self, msg: object) -> bool:
            return isinstance(msg, mseq)

        def ms_fast_dispatch(self, msg: object) -> None:
            with lock:
                ids.append(msg.ident)   # type: ignore[attr-defined]
                n = len(ids)
            if n % report == 0:
                emit(received=n)
            if n == count:
                emit(complete=n)

        def ms_dispatch(self, msg: object) -> bool:
            emit(unexpected=repr(msg))
            return True

    ms = make_messenger(EntityName.osd(1), host, port, config, nonce=2002)
    ms.add_dispatcher_tail(Recv())
    ms.start()
    emit(ready=str(ms.get_myaddr()))
    sys.stdin.read()
    with lock:
        emit(ids=list(ids), perf=ms.perf_dump())
    ms.shutdown()
    ms.wait()


def msgr_send(host: str, port: int, peer: str, count: int, batch: int, interval: float, report: int,
              config: dict) -> None:
    from msgr import EntityAddr, EntityName
    mseq = seq_message_class()
    ms = make_messenger(EntityName.osd(0), host, port, config, nonce=1001)
    ms.start()
    conn = ms.connect_to(EntityName.TYPE_OSD, EntityAddr.parse(peer))
    for i in range(count):
        conn.send_message(mseq(i))
        if (i + 1) % report == 0:
            emit(sent=i + 1)
        if (i + 1) % batch == 0:
            time.sleep(interval)
    emit(queued_all=count)
    sys.stdin.read()
    emit(perf=ms.perf_dump())
    ms.shutdown()
    ms.wait()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--report", type=int, default=100)
    ap.add_argument("--peer", default="")
    ap.add_argument("--config", default="{}")
    args = ap.parse_args(argv)
    if args.mode == "echo-server":
        echo_server(args.host, args.port)
    elif args.mode == "echo-client":
        echo_client(args.host, args.port, args.interval, args.count)
    elif args.mode == "msgr-recv":
        msgr_recv(args.host, args.port, args.count, args.report, json.loads(args.config))
    elif args.mode == "msgr-send":
        msgr_send(args.host, args.port, args.peer, args.count, args.batch, args.interval, args.report,
                  json.loads(args.config))
    else:
        ap.error(f"unknown mode {args.mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
