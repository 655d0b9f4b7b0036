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

__all__ = ["sign_legacy", "sign_v2", "message_signature"]

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
