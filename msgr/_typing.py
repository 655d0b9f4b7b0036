"""Type aliases shared by the codec modules (no run-time behaviour)."""
from __future__ import annotations

# What the decoders accept: anything they can len(), slice and struct.unpack_from.
BytesLike = bytes | bytearray | memoryview

__all__ = ["BytesLike"]
