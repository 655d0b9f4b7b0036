"""cephx signing cost: small-message throughput of a signed session vs the same session unsigned.

Two messengers in one process over loopback (a client and an ``osd.0`` service, one worker
each by default). The signed run gives the client a ticket and the service its rotating secret
(minted in memory by msgr.auth.cephx_mon: no monitor needed); the handshake then carries the
authorizer and challenge, and every message is signed (CEPHX_V2) and checked. The figure is
signed msg/s over unsigned msg/s in the same run (median of ``--rounds`` alternating pairs);
absolute numbers depend on the machine and are shown for context only.

Run: ``python -m bench.cephx_signing [--count N] [--rounds R]``.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.auth.auth_client import CephxAuthClient
from msgr.auth.auth_server import CephxAuthServer, ServiceSecrets
from msgr.auth.cephx_client import CephxClient
from msgr.auth.cephx_mon import CephxMonServer
from msgr.auth.keyring import CryptoKey, Keyring, parse_entity_name

OSD = EntityName.TYPE_OSD
MSG_TYPE = 0x7FFF


class _Count(Dispatcher):
    def __init__(self, want: int) -> None:
        self.want, self.n = want, 0
        self.done = threading.Event()

    def ms_can_fast_dispatch_any(self) -> bool:
        return True

    def ms_can_fast_dispatch(self, msg: Message) -> bool:
        return True

    def ms_fast_dispatch(self, msg: Message) -> None:
        self.n += 1
        if self.n == self.want:
            self.done.set()


def _tickets() -> tuple[CephxClient, ServiceSecrets]:
    """client.admin's tickets from an in-memory monitor, and the OSD secrets they are sealed with."""
    keyring, key = Keyring(), CryptoKey.generate()
    keyring.add("client.admin", key)
    mon = CephxMonServer(keyring, time.time())
    client = CephxClient(parse_entity_name("client.admin"), key)
    client.initial_request()
    session = mon.new_session()
    nxt = client.handle_reply(2, 0, 4097, session.start(client.name, 4097), time.time())
    while nxt is not None:
        result, reply = session.handle(nxt, time.time())
        nxt = client.handle_reply(2, result, 0, reply, time.time())
    secrets = ServiceSecrets()
    secrets.set_rotating(OSD, mon.rotating[OSD])
    return client, secrets


def _message(front: bytes) -> Message:
    m = Message()
    m.header.type = MSG_TYPE
    m.front = front
    return m


def one_run(count: int, signed: bool, front_len: int = 64) -> tuple[float, int]:
    """(msg/s for ``count`` messages of ``front_len`` bytes client -> service after a warm-up one,
    messages the client's session signed)."""
    counter = _Count(count + 1)
    server: Any = Messenger.create(EntityName.osd(0), config=Config())
    server.set_default_policy(Policy.stateless_server())
    server.add_dispatcher_tail(counter)
    addr = server.bind(EntityAddr.parse("v1:127.0.0.1:0/0"))
    server.start()
    client: Any = Messenger.create(EntityName.client(), config=Config())
    client.set_default_policy(Policy.lossy_client())
    client.start()
    try:
        if signed:
            tickets, secrets = _tickets()
            client.set_auth_client(CephxAuthClient(tickets))
            server.set_auth_server(CephxAuthServer(secrets, OSD, server.config))
        conn = client.connect_to(OSD, addr)
        conn.send_message(_message(b"w"))
        while counter.n < 1:
            time.sleep(0.001)
        front = b"x" * front_len
        t0 = time.perf_counter()
        for _ in range(count):
            conn.send_message(_message(front))
        if not counter.done.wait(120):
            raise RuntimeError(f"only {counter.n - 1} of {count} messages arrived")
        rate = count / (time.perf_counter() - t0)
        signer = conn._proto._signer   # internal: only to report that the run did sign
        return rate, 0 if signer is None else signer.signed
    finally:
        client.shutdown()
        client.wait()
        server.shutdown()
        server.wait()


def run(count: int = 20000, rounds: int = 3) -> dict[str, float]:
    got: dict[bool, list[float]] = {False: [], True: []}
    n_signed = {False: 0, True: 0}
    for _ in range(rounds):
        for signed in (False, True):
            rate, n = one_run(count, signed)
            got[signed].append(rate)
            n_signed[signed] += n
    unsigned, signed_ = statistics.median(got[False]), statistics.median(got[True])
    return {"unsigned_msg_s": round(unsigned), "signed_msg_s": round(signed_),
            "ratio_signed_vs_unsigned": round(signed_ / unsigned, 3),
            "signed_messages": n_signed[True], "unsigned_run_signed": n_signed[False]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    r = run(a.count, a.rounds)
    print(" ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
