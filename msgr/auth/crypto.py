"""Ceph's AES-128-CBC (``CEPH_CRYPTO_AES``) and the cephx sealed envelope.

* Cipher: AES-128 in CBC mode with Ceph's fixed IV (the 16 ASCII bytes
  ``cephsageyudagreg``) and PKCS#7 padding: 1 to 16 bytes, each holding the
  pad length, so even a block-aligned input grows by one block.
* Envelope (``encode_encrypt_enc_bl``): the plaintext is u8 struct_v (1),
  u64 magic ``0xff009cad8826aa55``, then the encoded value; the whole of it
  is encrypted. ``encode_encrypt`` wraps the ciphertext as a bufferlist
  (u32 length + bytes) inside a larger encoding.

The AES itself comes from the ``cryptography`` package; nothing here is
hand-written cryptography.
"""
from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from msgr.auth.errors import BadKeyError, CryptoDecodeError
from msgr.encoding import Decoder

__all__ = [
    "AES_IV", "AUTH_ENC_MAGIC", "AES_KEY_LEN", "aes_encrypt", "aes_decrypt", "seal", "unseal",
    "seal_bl", "unseal_bl", "KeyCipher",
]

AES_IV = b"cephsageyudagreg"
AES_KEY_LEN = 16
AES_BLOCK = 16
AUTH_ENC_MAGIC = 0xFF009CAD8826AA55
ENVELOPE_V = 1
_ENV_HEAD = struct.Struct("<BQ")
_U32 = struct.Struct("<I")


def _cipher(secret: bytes) -> Cipher[modes.CBC]:
    if len(secret) != AES_KEY_LEN:
        raise BadKeyError(f"AES key is {len(secret)} bytes, Ceph's AES keys are {AES_KEY_LEN}")
    return Cipher(algorithms.AES(bytes(secret)), modes.CBC(AES_IV))


def aes_encrypt(secret: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
    """PKCS#7-pad and encrypt ``plaintext`` with ``secret`` as Ceph does."""
    return KeyCipher(secret).encrypt(plaintext)


class KeyCipher:
    """:func:`aes_encrypt` for one key, its cipher built once: a signing session encrypts a block
    per message, and building the cipher costs more than the encryption itself."""

    __slots__ = ("_cipher",)

    def __init__(self, secret: bytes) -> None:
        self._cipher = _cipher(secret)

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        pad = AES_BLOCK - len(plaintext) % AES_BLOCK
        enc = self._cipher.encryptor()
        return enc.update(bytes(plaintext) + bytes([pad]) * pad) + enc.finalize()


def aes_decrypt(secret: bytes, ciphertext: bytes | bytearray | memoryview) -> bytes:
    """Decrypt and unpad; a bad length or padding raises :class:`CryptoDecodeError`.

    Like Ceph, only the last byte's pad length is checked (1..16); a wrong key
    is caught by the envelope's magic, not here.
    """
    n = len(ciphertext)
    if n == 0 or n % AES_BLOCK:
        raise CryptoDecodeError(f"AES ciphertext of {n} bytes is not a whole number of blocks")
    dec = _cipher(secret).decryptor()
    out = dec.update(bytes(ciphertext)) + dec.finalize()
    pad = out[-1]
    if not 1 <= pad <= AES_BLOCK:
        raise BadKeyError(f"AES padding byte {pad} is impossible (wrong key or corrupt data)")
    return out[:-pad]


def seal(secret: bytes, encoded: bytes | bytearray | memoryview) -> bytes:
    """``encode_encrypt_enc_bl``: envelope (v1, magic) + ``encoded``, encrypted."""
    return aes_encrypt(secret, _ENV_HEAD.pack(ENVELOPE_V, AUTH_ENC_MAGIC) + bytes(encoded))


def unseal(secret: bytes, ciphertext: bytes | bytearray | memoryview) -> bytes:
    """``decode_decrypt_enc_bl``: decrypt, check the magic, return the encoded value."""
    plain = aes_decrypt(secret, ciphertext)
    if len(plain) < _ENV_HEAD.size:
        raise CryptoDecodeError(f"sealed blob holds {len(plain)} bytes, less than its envelope")
    _v, magic = _ENV_HEAD.unpack_from(plain)
    if magic != AUTH_ENC_MAGIC:
        raise BadKeyError(f"bad magic {magic:#018x} in a sealed blob (wrong key?)")
    return plain[_ENV_HEAD.size:]


def seal_bl(secret: bytes, encoded: bytes | bytearray | memoryview) -> bytes:
    """``encode_encrypt``: :func:`seal` wrapped as a bufferlist (u32 length + ciphertext)."""
    c = seal(secret, encoded)
    return _U32.pack(len(c)) + c


def unseal_bl(secret: bytes, d: Decoder) -> bytes:
    """``decode_decrypt``: read a bufferlist from decoder ``d`` and :func:`unseal` it."""
    return unseal(secret, d.bytes())
