"""Read the two byte streams of one TCP connection out of a classic pcap file (stdlib only).

Enough for loopback captures made by tests/cephmon.py's TsharkCapture (saved
with ``tshark -F pcap``): Ethernet + IPv4 + TCP, in order, no retransmissions.
"""
from __future__ import annotations

import struct
from pathlib import Path


def tcp_streams(pcap: str | Path, server_port: int) -> tuple[bytes, bytes]:
    """(client->server bytes, server->client bytes) of the first connection to ``server_port``."""
    data = Path(pcap).read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    pos = 24
    to_server, to_client = bytearray(), bytearray()
    client_port = None
    while pos + 16 <= len(data):
        _ts, _tus, incl, _orig = struct.unpack_from(endian + "IIII", data, pos)
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        total = struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[ihl:total]
        sport, dport = struct.unpack_from(">HH", tcp)
        payload = tcp[(tcp[12] >> 4) * 4:]
        if dport == server_port and client_port in (None, sport):
            client_port = sport
            to_server += payload
        elif sport == server_port and dport == client_port:
            to_client += payload
    return bytes(to_server), bytes(to_client)


def v1_server_stream(buf: bytes) -> dict:
    """Split a v1 server->client stream: banner, two addrs, connect replies (+authorizer replies)
    up to READY or SEQ (whose u64 follows), then the frames."""
    from msgr.wire import ConnectReply, Tag
    pos = 9 + 136 + 136
    out = []
    while True:
        r = ConnectReply.unpack(buf, pos)
        auth = buf[pos + ConnectReply.SIZE:pos + ConnectReply.SIZE + r.authorizer_len]
        out.append((r, auth))
        pos += ConnectReply.SIZE + r.authorizer_len
        if r.tag == Tag.SEQ:
            pos += 8
        if r.tag in (Tag.READY, Tag.SEQ):
            break
    return {"replies": out, "frames": v1_frames(buf, pos)}


def v1_client_stream(buf: bytes, server: dict) -> dict:
    """Split a v1 client->server stream: banner, addr, one connect (+authorizer) per server
    reply, the u64 answering a SEQ reply, then the frames."""
    from msgr.wire import ConnectMsg, Tag
    pos = 9 + 136
    connects = []
    for r, _ in server["replies"]:
        c = ConnectMsg.unpack(buf, pos)
        auth = buf[pos + ConnectMsg.SIZE:pos + ConnectMsg.SIZE + c.authorizer_len]
        connects.append((c, auth))
        pos += ConnectMsg.SIZE + c.authorizer_len
        if r.tag == Tag.SEQ:
            pos += 8
    return {"connects": connects, "frames": v1_frames(buf, pos)}


def v1_frames(buf: bytes, pos: int) -> list:
    """(tag, header, front, middle, data, footer) for MSG frames; other tags as (tag, None...)."""
    from msgr.wire import MsgFooter, MsgHeader
    frames = []
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        if tag == 7:
            h = MsgHeader.unpack(buf, pos)
            pos += MsgHeader.SIZE
            front = buf[pos:pos + h.front_len]
            pos += h.front_len
            middle = buf[pos:pos + h.middle_len]
            pos += h.middle_len
            data = buf[pos:pos + h.data_len]
            pos += h.data_len
            f = MsgFooter.unpack(buf, pos)
            pos += MsgFooter.SIZE
            frames.append((tag, h, front, middle, data, f))
        elif tag == 8:
            pos += 8
        elif tag == 14:
            pos += 8
        elif tag == 15:
            pos += 8
        elif tag == 6:
            break
        else:
            raise ValueError(f"tag {tag} at {pos - 1}")
    return frames
