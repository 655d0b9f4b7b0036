"""msgr.message: the type registry builds the right class, refuses conflicts, and decodes safely."""
import pytest

from msgr.errors import DecodeError
from msgr.message import Message, decode_message, message_class
from msgr.messages import MPing
from msgr.wire import MsgHeader


class MRegistryProbe(Message):
    TYPE = 0x7A01
    HEAD_VERSION = 2
    COMPAT_VERSION = 1

    def __init__(self, value: int = 0) -> None:
        super().__init__()
        self.value = value

    def encode_payload(self, features: int) -> None:
        self.front = self.value.to_bytes(4, "little")

    def decode_payload(self) -> None:
        if len(self.front) != 4:
            raise ValueError("front must be 4 bytes")
        self.value = int.from_bytes(self.front, "little")


def test_registry_builds_the_registered_class():
    assert message_class(2) is MPing
    m = MRegistryProbe(77)
    m._encode(features=0)
    assert (m.header.type, m.header.front_len, m.header.version, m.header.compat_version) == (0x7A01, 4, 2, 1)
    back = decode_message(m.header, m.front, b"", b"")
    assert type(back) is MRegistryProbe and back.value == 77


def test_unknown_type_arrives_as_plain_message():
    msg = decode_message(MsgHeader(type=0x7A77), b"abc", b"", b"")
    assert type(msg) is Message and msg.get_type() == 0x7A77 and msg.front == b"abc"


def test_conflicting_type_number_is_refused():
    with pytest.raises(TypeError, match="already registered"):
        class MImpostor(Message):  # noqa: F841
            TYPE = 0x7A01
    assert message_class(0x7A01) is MRegistryProbe


def test_bad_payload_and_too_new_compat_raise_decode_error():
    with pytest.raises(DecodeError):
        decode_message(MsgHeader(type=0x7A01, compat_version=1), b"xy", b"", b"")
    with pytest.raises(DecodeError):
        decode_message(MsgHeader(type=0x7A01, compat_version=3), b"\0\0\0\0", b"", b"")


def test_encode_is_done_once_per_feature_set():
    m = MRegistryProbe(5)
    m._encode(1)
    m.value = 6
    m._encode(1)          # same features: the encoded front is kept (requeue does not re-encode)
    assert m.front == (5).to_bytes(4, "little")
    m._encode(2)          # new session features: encoded again
    assert m.front == (6).to_bytes(4, "little")


class MPlainProbe(Message):
    """No __init__ of its own: the receive path builds it without a throwaway default header."""
    TYPE = 0x7A02


def test_decode_keeps_the_received_header_and_sets_every_slot():
    h = MsgHeader(type=0x7A02, seq=9, tid=4, front_len=3)
    msg = decode_message(h, b"abc", b"m", b"d")
    assert type(msg) is MPlainProbe and msg.header is h
    assert (msg.front, msg.middle, msg.data, msg.footer) == (b"abc", b"m", b"d", None)
    assert msg.get_connection() is None and msg._throttled is None and msg._encoded_features is None
    assert msg._recv_stamp_us == 0
    msg._release_throttles()                     # nothing taken: a no-op
    msg.note = "x"                              # instances still take ad-hoc attributes
    assert msg.get_payload_len() == 5 and msg.get_seq() == 9


def test_decode_runs_a_subclass_init_for_its_field_defaults():
    h = MsgHeader(type=0x7A01, compat_version=1)
    msg = decode_message(h, (123).to_bytes(4, "little"), b"", b"")
    assert type(msg) is MRegistryProbe and msg.header is h and msg.value == 123


def test_plain_message_decoded_equals_one_built_with_init():
    h = MsgHeader(type=0x7A77, seq=3)
    got, ref = decode_message(h, b"f", b"", b""), Message()
    ref.header, ref.front = h, b"f"
    slots = [s for s in Message.__slots__ if s != "__dict__"]
    assert {s: getattr(got, s) for s in slots} == {s: getattr(ref, s) for s in slots}
