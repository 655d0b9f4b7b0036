"""msgr.entity: names read like Ceph's, addresses encode in both forms, race order is Ceph's memcmp."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgr.entity import EntityAddr, EntityName, decode_addrvec, encode_addrvec
from msgr.errors import BadAddressError, ShortBufferError
from msgr.features import MSG_ADDR2


def test_names():
    assert (EntityName.TYPE_MON, EntityName.TYPE_MDS, EntityName.TYPE_OSD, EntityName.TYPE_CLIENT,
            EntityName.TYPE_MGR) == (1, 2, 4, 8, 16)
    assert str(EntityName.osd(0)) == "osd.0"
    assert str(EntityName.client(4100)) == "client.4100"
    assert str(EntityName.mon("a")) == "mon.a"
    assert EntityName.osd(3) == EntityName(4, 3) and hash(EntityName.osd(3)) == hash(EntityName(4, 3))


def test_parse_and_str():
    a = EntityAddr.parse("v1:127.0.0.1:6789/1234")
    assert (a.type, a.ip, a.port, a.nonce) == (EntityAddr.TYPE_LEGACY, "127.0.0.1", 6789, 1234)
    assert str(a) == "v1:127.0.0.1:6789/1234"
    assert EntityAddr.parse(str(a)) == a
    b = EntityAddr.parse("v1:[::1]:6800")
    assert (b.ip, b.port, str(b)) == ("::1", 6800, "v1:[::1]:6800/0")
    for bad in ("v1:nothost:1", "v1:1.2.3.4:99999", "v1:1.2.3.4:1/x", "v1:[::1"):
        with pytest.raises(BadAddressError):
            EntityAddr.parse(bad)


def test_legacy_example_from_spec():
    # PROTOCOL.md §2.2: 192.168.1.10:6789, nonce 0x12345678
    raw = EntityAddr.parse("v1:192.168.1.10:6789/305419896").encode_legacy()
    assert raw[:16] == bytes.fromhex("00000000" "78563412" "00021a85" "c0a8010a")
    assert raw[16:] == bytes(120) and len(raw) == 136


@given(st.ip_addresses(), st.integers(0, 65535), st.integers(0, 2**32 - 1))
def test_legacy_round_trip(ip, port, nonce):
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    a = EntityAddr.parse(f"v1:{host}:{port}/{nonce}")
    assert EntityAddr.decode_legacy(a.encode_legacy()) == a
    assert EntityAddr.decode(a.encode_legacy()) == (a, 136)
    new = a.encode(MSG_ADDR2)
    assert new[0] == 1
    assert EntityAddr.decode(new + b"tail") == (a, len(new))


def test_legacy_errors():
    with pytest.raises(ShortBufferError):
        EntityAddr.decode_legacy(bytes(135))
    raw = bytearray(EntityAddr.parse("v1:1.2.3.4:5/6").encode_legacy())
    raw[8:10] = b"\x00\x09"
    with pytest.raises(BadAddressError):
        EntityAddr.decode_legacy(raw)
    assert EntityAddr.decode_legacy(bytes(136)).is_blank_ip()  # family 0 counts as blank
    with pytest.raises(BadAddressError):
        EntityAddr.decode(b"\x07" + bytes(20))


def test_addrvec():
    addrs = [EntityAddr.parse("v2:127.0.0.1:3300/0"), EntityAddr.parse("v1:127.0.0.1:6789/0")]
    raw = encode_addrvec(addrs, MSG_ADDR2)
    assert raw[0] == 2 and decode_addrvec(raw) == (addrs, len(raw))
    legacy = encode_addrvec(addrs, 0)
    assert decode_addrvec(legacy) == ([addrs[1]], 136)
    with pytest.raises(BadAddressError):
        decode_addrvec(b"\x02" + (10**6).to_bytes(4, "little"))


def test_race_order_is_ceph_memcmp():
    # REAL_CEPH.md §11.6: a nonzero nonce makes our address larger than the mon's .../0
    mon = EntityAddr.parse("v1:127.0.0.1:17789/0")
    ours_nonce = EntityAddr.parse("v1:127.0.0.1:1000/5")
    ours_low_port = EntityAddr.parse("v1:127.0.0.1:17273/0")
    assert ours_nonce.legacy_cmp_key() > mon.legacy_cmp_key()
    assert ours_low_port.legacy_cmp_key() < mon.legacy_cmp_key()
    # the nonce is compared little-endian byte first: 256 (00 01 ..) < 1 (01 00 ..)
    assert EntityAddr.parse("v1:1.1.1.1:1/256").legacy_cmp_key() < EntityAddr.parse("v1:1.1.1.1:1/1").legacy_cmp_key()
