"""Keys, keyrings and Ceph's AES envelope, checked against real Ceph output.

tests/data/cephx_vectors.json was recorded from Ceph 16 on this kind of
machine: a keyring made by ceph-authtool, and the proofs (folded challenge
keys) that the real ceph CLI computed and the real ceph-mon accepted
(both logged at debug auth 20).
"""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from msgr.auth.cephx_client import fold_challenge
from msgr.auth.crypto import (
    AES_IV,
    AUTH_ENC_MAGIC,
    aes_decrypt,
    aes_encrypt,
    seal,
    seal_bl,
    unseal,
    unseal_bl,
)
from msgr.auth.errors import BadKeyError, CryptoDecodeError, KeyringError
from msgr.auth.keyring import CRYPTO_AES, CryptoKey, Keyring, parse_entity_name
from msgr.encoding import AuthEntityName, Decoder, Utime
from msgr.errors import DecodeError

VECTORS = json.loads((Path(__file__).parent / "data" / "cephx_vectors.json").read_text())


def test_keyring_from_ceph_authtool_parses():
    kr = Keyring.parse(VECTORS["keyring"])
    assert kr.names() == ["mon.", "client.admin"]
    admin = kr.entries["client.admin"]
    assert admin.caps == {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"}
    key = kr.get_key("client.admin")
    assert key.type == CRYPTO_AES and len(key.secret) == 16
    # a key's created stamp is the time ceph-authtool made it (Dec 2026 here)
    assert 1.7e9 < key.created.sec < 2.2e9
    assert kr.get_key(parse_entity_name("mon.")).to_base64() in VECTORS["keyring"]


def test_cryptokey_binary_form_round_trips():
    b64 = Keyring.parse(VECTORS["keyring"]).get_key("client.admin").to_base64()
    raw = base64.b64decode(b64)
    assert len(raw) == 28 and raw[:2] == b"\x01\x00" and raw[10:12] == b"\x10\x00"
    key = CryptoKey.decode(raw)
    assert key.encode() == raw and key.to_base64() == b64
    assert "secret=<16 bytes>" in repr(key) and b64 not in repr(key)


@pytest.mark.parametrize("proof", VECTORS["ceph_cli_proofs"])
def test_fold_matches_what_the_real_ceph_client_sent(proof):
    key = Keyring.parse(VECTORS["keyring"]).get_key("client.admin")
    sc, cc = int(proof["server_challenge"], 16), int(proof["client_challenge"], 16)
    assert fold_challenge(key, sc, cc) == int(proof["key"], 16)


def test_aes_is_cbc_with_cephs_iv_and_pkcs7():
    key = bytes(range(16))
    assert AES_IV == b"cephsageyudagreg"
    for n in (0, 1, 15, 16, 17, 31, 32):
        c = aes_encrypt(key, b"x" * n)
        assert len(c) == (n // 16 + 1) * 16  # always 1..16 bytes of padding
        assert aes_decrypt(key, c) == b"x" * n
    # CBC with the fixed IV: the first block depends only on the first 16 plaintext bytes
    assert aes_encrypt(key, b"A" * 32)[:16] == aes_encrypt(key, b"A" * 16)[:16]


def test_envelope_has_version_and_magic():
    key = bytes(range(16))
    plain = aes_decrypt(key, seal(key, b"hello"))
    assert plain[0] == 1 and int.from_bytes(plain[1:9], "little") == AUTH_ENC_MAGIC
    assert plain[9:] == b"hello"
    assert unseal(key, seal(key, b"hello")) == b"hello"
    bl = seal_bl(key, b"hi")
    assert int.from_bytes(bl[:4], "little") == len(bl) - 4
    assert unseal_bl(key, Decoder(bl)) == b"hi"


def test_wrong_key_and_garbage_are_typed_errors():
    key, other = bytes(range(16)), bytes(range(1, 17))
    c = seal(key, b"payload of a ticket")
    with pytest.raises(BadKeyError):
        unseal(other, c)
    for bad in (b"", b"x" * 15, b"y" * 17):
        with pytest.raises(CryptoDecodeError):
            unseal(key, bad)
    with pytest.raises(BadKeyError):
        aes_encrypt(b"short", b"")
    with pytest.raises(DecodeError):
        unseal_bl(key, Decoder(b"\xff\xff\xff\x7f" + c))  # length beyond the buffer


@pytest.mark.parametrize("text,err", [
    ("key = AQB2RRRr\n", "before any"),
    ("[client.admin]\nkey = !!!notbase64\n", "not base64"),
    ("[client.admin]\nkey = AAAA\n", "does not decode"),
    ("[client.admin]\nthis is not an option\n", "cannot parse"),
])
def test_bad_keyrings_are_refused_with_the_reason(text, err):
    with pytest.raises(KeyringError, match=err):
        Keyring.parse(text)


def test_keyring_lookup_and_missing_entity():
    kr = Keyring.parse(VECTORS["keyring"])
    with pytest.raises(KeyringError, match="no key for client.nobody"):
        kr.get_key("client.nobody")
    with pytest.raises(KeyringError):
        parse_entity_name("admin")
    assert parse_entity_name("client.admin") == AuthEntityName(8, "admin")
    assert parse_entity_name("mon.") == AuthEntityName(1, "")
    assert Keyring.parse(kr.to_text()).get_key("mon.") == kr.get_key("mon.")
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load("/nonexistent/keyring")


def test_generated_key_is_aes():
    k = CryptoKey.generate(now=1000.5)
    assert k.type == CRYPTO_AES and k.created == Utime(1000, 500000000)


@pytest.fixture
def authtool(tmp_path):
    from conftest import require_binary
    require_binary("ceph-authtool")
    return tmp_path


def test_keys_made_by_ceph_authtool_now(authtool):
    kr_path = authtool / "keyring"
    subprocess.run(["ceph-authtool", "--create-keyring", str(kr_path), "--gen-key", "-n",
                    "client.foo", "--cap", "mon", "allow r"], check=True, capture_output=True)
    printed = subprocess.run(["ceph-authtool", str(kr_path), "-n", "client.foo", "-p"],
                             check=True, capture_output=True, text=True).stdout.strip()
    kr = Keyring.load(kr_path)
    assert kr.get_key("client.foo").to_base64() == printed
    assert kr.entries["client.foo"].caps == {"mon": "allow r"}
    # and ceph-authtool reads back a key we wrote (--add-key takes the base64 form)
    mine = CryptoKey.generate()
    subprocess.run(["ceph-authtool", str(kr_path), "-n", "client.bar", "--add-key",
                    mine.to_base64()], check=True, capture_output=True)
    assert Keyring.load(kr_path).get_key("client.bar").secret == mine.secret
