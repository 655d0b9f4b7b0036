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
from collections.abc import Callable

from msgr.auth.crypto import AUTH_ENC_MAGIC, KeyCipher
from msgr.auth.errors import BadSignatureError
from msgr.features import CEPHX_V2, MSG_AUTH

__all__ = ["sign_legacy", "sign_v2", "message_signature", "SessionSigner"]

_LEGACY = struct.Struct("<BQI4I")
_V2 = struct.Struct("<8I")
_FOUR = struct.Struct("<4Q")
Encrypt = Callable[[bytes], bytes]


def _legacy(encrypt: Encrypt, header_crc: int, front_crc: int, middle_crc: int, data_crc: int) -> int:
    block = _LEGACY.pack(1, AUTH_ENC_MAGIC, 16, header_crc, front_crc, middle_crc, data_crc)
    return int.from_bytes(encrypt(block)[:8], "little")


def _v2(encrypt: Encrypt, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
        middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
    block = _V2.pack(header_crc, front_crc, front_len, middle_crc, middle_len, data_crc, data_len,
                     seq & 0xFFFFFFFF)
    a, b, c, d = _FOUR.unpack_from(encrypt(block))
    sig: int = a ^ b ^ c ^ d
    return sig


def sign_legacy(secret: bytes, header_crc: int, front_crc: int, middle_crc: int,
                data_crc: int) -> int:
    return _legacy(KeyCipher(secret).encrypt, header_crc, front_crc, middle_crc, data_crc)


def sign_v2(secret: bytes, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
            middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
    return _v2(KeyCipher(secret).encrypt, header_crc, front_crc, front_len, middle_crc, middle_len,
               data_crc, data_len, seq)


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

    __slots__ = ("_cipher", "cephx_v2", "checked", "signed")

    def __init__(self, secret: bytes, cephx_v2: bool) -> None:
        self._cipher = KeyCipher(secret)
        self.cephx_v2 = cephx_v2
        self.signed = 0
        self.checked = 0

    def _signature(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
                   middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
        if self.cephx_v2:
            return _v2(self._cipher.encrypt, header_crc, front_crc, front_len, middle_crc, middle_len,
                       data_crc, data_len, seq)
        return _legacy(self._cipher.encrypt, header_crc, front_crc, middle_crc, data_crc)

    @classmethod
    def for_session(cls, secret: bytes, features: int, sign_messages: bool) -> SessionSigner | None:
        if not sign_messages or features & MSG_AUTH != MSG_AUTH:
            return None
        return cls(secret, features & CEPHX_V2 == CEPHX_V2)

    def sign(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
             middle_len: int, data_crc: int, data_len: int, seq: int) -> int:
        """The footer signature of an outgoing message."""
        self.signed += 1
        return self._signature(header_crc, front_crc, front_len, middle_crc, middle_len, data_crc,
                               data_len, seq)

    def check(self, header_crc: int, front_crc: int, front_len: int, middle_crc: int,
              middle_len: int, data_crc: int, data_len: int, seq: int, sig: int) -> None:
        """Raise :class:`BadSignatureError` unless ``sig`` is the signature of this message."""
        want = self._signature(header_crc, front_crc, front_len, middle_crc, middle_len, data_crc,
                               data_len, seq)
        if want != sig:
            raise BadSignatureError(f"message seq {seq}: signature {sig:#018x} does not match its "
                                    f"contents (session key gives {want:#018x})")
        self.checked += 1
