"""A message whose payload cannot be decoded faults its connection and gives back every throttle.

Issue 11, defect 3: a ``decode_payload`` that raised anything but a few listed exception types (a
hand-written decoder's ``struct.error``) escaped ``decode_message``; the batch path then kept the
policy and dispatch throttle reservations of that message forever, and after enough such messages
the whole messenger stopped reading. Raw v1 clients send the bad messages here; a well-behaved
client must still get every message through, and each bad one costs one WARNING line.
"""
from __future__ import annotations

import logging
import struct

import pytest
from rawv1 import frame, open_session, recv_until_closed
from test_messenger_loopback import Collector, wait_for

from msgr import Config, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.errors import DecodeError
from msgr.message import decode_message
from msgr.throttle import Throttle
from msgr.wire import MsgHeader

KiB = 1024


class Undecodable(Message):
    """Its decoder always fails the way a hand-written one does on a short front: struct.error."""
    TYPE = 0x7B11

    def decode_payload(self) -> None:
        struct.unpack_from("<Q", self.front, len(self.front))


class Wellformed(Message):
    TYPE = 0x7B12

    def __init__(self, ident: int = 0, pad: int = 0) -> None:
        super().__init__()
        self.ident = ident
        self.front = struct.pack("<Q", ident) + bytes(pad)

    def decode_payload(self) -> None:
        (self.ident,) = struct.unpack_from("<Q", self.front)


class DecoderBug(Message):
    """A decoder with a plain bug (no struct/value error at all)."""
    TYPE = 0x7B13

    def decode_payload(self) -> None:
        raise RuntimeError("decoder bug")


@pytest.mark.parametrize("cls,exc_text", [(Undecodable, "unpack_from"), (DecoderBug, "decoder bug")])
def test_any_decoder_exception_is_a_decode_error(cls, exc_text):
    h = MsgHeader(type=cls.TYPE, version=1, compat_version=1, front_len=3)
    with pytest.raises(DecodeError, match=f"{cls.__name__}.*{exc_text}"):
        decode_message(h, b"abc", b"", b"")


@pytest.fixture
def server():
    cfg = Config(ms_dispatch_throttle_bytes=100_000)
    ms = Messenger.create(EntityName.osd(11), nonce=1111, config=cfg)
    ms.set_default_policy(Policy.stateless_server())
    policy_bytes, policy_msgs = Throttle("policy-bytes", 1_000_000), Throttle("policy-msgs", 100)
    ms.set_policy_throttlers(EntityName.TYPE_CLIENT, policy_bytes, policy_msgs)
    d = Collector()
    ms.add_dispatcher_tail(d)
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    yield ms, d, policy_bytes, policy_msgs
    ms.shutdown()
    ms.wait()


# front sizes: up to 8 KiB a frame is handled by the batch path, larger ones by the OPEN states
@pytest.mark.parametrize("front_len", [4 * KiB, 12 * KiB], ids=["batch_path", "state_path"])
def test_undecodable_messages_leak_no_throttle(server, caplog, front_len):
    caplog.set_level(logging.INFO, logger="msgr")
    ms, d, policy_bytes, policy_msgs = server
    for i in range(40):
        s = open_session(ms.get_myaddr(), nonce=5000 + i)
        s.sendall(frame(Undecodable.TYPE, 1, bytes(front_len), src_num=5000 + i))
        try:
            recv_until_closed(s)    # the server faults this one connection (lossy: it closes)
        except TimeoutError:
            pytest.fail(f"bad message {i}: the server never read it (a full throttle?)")
        finally:
            s.close()
    wait_for(lambda: ms.dispatch_throttle.current == 0 and policy_bytes.current == 0
             and policy_msgs.current == 0,
             timeout=10, what=f"every throttle back at 0 (dispatch {ms.dispatch_throttle.current}, "
                              f"policy bytes {policy_bytes.current}, messages {policy_msgs.current})")

    client = Messenger.create(EntityName.client(12), nonce=1212)
    client.set_default_policy(Policy.lossy_client())
    client.start()
    try:
        conn = client.connect_to(EntityName.TYPE_OSD, ms.get_myaddr())
        for i in range(200):
            conn.send_message(Wellformed(i, 20 * KiB))
        wait_for(lambda: sum(isinstance(m, Wellformed) for m in d.msgs) == 200,
                 what=f"200 good messages (got {sum(isinstance(m, Wellformed) for m in d.msgs)})")
    finally:
        client.shutdown()
        client.wait()
    assert not any(isinstance(m, Undecodable) for m in d.msgs)

    warnings = [r for r in caplog.records if r.name.startswith("msgr") and r.levelno == logging.WARNING
                and "Undecodable" in r.getMessage()]
    assert len(warnings) == 40, [r.getMessage() for r in warnings]
    assert all("127.0.0.1" in r.getMessage() for r in warnings), warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an ERROR line was logged"
