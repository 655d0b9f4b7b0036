"""cephx message signatures (``CEPH_FEATURE_MSG_AUTH``): the u64 in a v1 message footer.

Both forms encrypt a small block with the session key shared with the peer
(AES-128-CBC, Ceph's IV and padding, see :mod:`msgr.auth.crypto`):

* legacy (the peer lacks ``CEPHX_V2``): the block is what ``seal`` would
  encrypt for the four CRCs as a 16-byte value: u8 1, u64 magic, u32 16,
  then header, front, middle and data CRC (u32 each); the signature is the
  first 8 bytes of the ciphertext, little-endian.
* ``CEPHX_V2``: the block is header CRC, front CRC, front length, middle
  CRC, middle length, data CRC, data length and the low 32 bits of the
  message's seq (eight u32); the signature is the XOR of the four
  little-endian u64 words of the 32-byte ciphertext's first 32 bytes.
"""
from __future__ import annotations

import struct

from msgr.auth.crypto import AUTH_ENC_MAGIC, aes_encrypt
from msgr.auth.errors import BadSignatureError
from msgr.features import CEPHX_V2, MSG_AUTH

__all__ = ["sign_legacy", "sign_v2", "message_signature", "SessionSigner"]

_LEGACY = struct.Struct("<BQI4I")
_V2 = struct.Struct("<8I")
_FOUR = struct.Struct("<4Q")


def sign_legacy(secret: bytes, header_crc: int, front_crc: int, middle_crc: int,
                data_crc: int) -> int:
    block = _LEGACY.pack(1, AUTH_ENC_MAGIC, 16, header_crc, front_crc, middle_crc, data_crc)
    return int.from_bytes(aes_encrypt(secret, block)[:8], "little")


def sign_v2(secret: bytes, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
            middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
    block = _V2.pack(header_crc, front_crc, front_len, middle_crc, middle_len, data_crc, data_len,
                     seq & 0xFFFFFFFF)
    a, b, c, d = _FOUR.unpack_from(aes_encrypt(secret, block))
    sig: int = a ^ b ^ c ^ d
    return sig


def message_signature(secret: bytes, cephx_v2: bool, *, header_crc: int, front_crc: int,
                      front_len: int, middle_crc: int, middle_len: int, data_crc: int,
                      data_len: int, seq: int) -> int:
    """The footer signature of one message, in the form the negotiated features pick."""
    if cephx_v2:
        return sign_v2(secret, header_crc, front_crc, front_len, middle_crc, middle_len,
                       data_crc, data_len, seq)
    return sign_legacy(secret, header_crc, front_crc, middle_crc, data_crc)


class SessionSigner:
    """Signs and checks the messages of one session with the key its authorizer carried.

    Implements :class:`msgr.protocol.host.MessageSigner`. Built by :meth:`for_session` only when
    the session negotiated ``MSG_AUTH`` (a footer with room for a signature) and signing is on
    (``cephx_sign_messages``), as Ceph signs then and checks then.
    """

    __slots__ = ("secret", "cephx_v2", "checked", "signed")

    def __init__(self, secret: bytes, cephx_v2: bool) -> None:
        self.secret = secret
        self.cephx_v2 = cephx_v2
        self.signed = 0
        self.checked = 0

    @classmethod
    def for_session(cls, secret: bytes, features: int, sign_messages: bool) -> SessionSigner | None:
        if not sign_messages or features & MSG_AUTH != MSG_AUTH:
            return None
        return cls(secret, features & CEPHX_V2 == CEPHX_V2)

    def sign(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
             middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
        """The footer signature of an outgoing message."""
        self.signed += 1
        return message_signature(self.secret, self.cephx_v2, header_crc=header_crc,
                                 front_crc=front_crc, front_len=front_len, middle_crc=middle_crc,
                                 middle_len=middle_len, data_crc=data_crc, data_len=data_len, seq=seq)

    def check(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
              middle_len: int, data_crc: int, data_len: int, seq: int, sig: int) -> None:
        """Raise :class:`BadSignatureError` unless ``sig`` is the signature of this message."""
        want = message_signature(self.secret, self.cephx_v2, header_crc=header_crc,
                                 front_crc=front_crc, front_len=front_len, middle_crc=middle_crc,
                                 middle_len=middle_len, data_crc=data_crc, data_len=data_len, seq=seq)
        if want != sig:
            raise BadSignatureError(f"message seq {seq}: signature {sig:#018x} does not match its "
                                    f"contents (session key gives {want:#018x})")
        self.checked += 1
