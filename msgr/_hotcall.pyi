"""Types of the CPython C-API fast path msgr._hotcall (csrc/hotcall.c; msgr/_cext.py decides whether it is used)."""
from typing import Any

from typing_extensions import Buffer

SCAN_SLOTS: int
SCAN_PINNED_FRAMES: int
FRAME_FIELDS: int

def bind(message: type, header: type, init: Any, encode_payload: Any, encode: Any, /) -> Any: ...
def frame_burst(conf: tuple[int, ...], msgs: list[Any], start: int, seq: int, out: list[Any],
                /) -> tuple[int, bytearray | None, BaseException | None]: ...
def frame_one(conf: tuple[int, ...], msg: Any, seq: int, ack: int, /) -> bytes | BaseException | None: ...
def scan(buf: Buffer, offset: int, end: int | None, flags: int, max_inline: int,
         max_frames: int, /) -> tuple[int, int, list[tuple[int, ...]], int, int]: ...
def scan_pinned(buf: Any, offset: int, end: int, flags: int, max_inline: int,
                /) -> tuple[int, int, list[tuple[int, ...]], int, int]: ...
