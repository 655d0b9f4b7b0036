"""docs/USER_GUIDE.md's message example runs as written and round-trips through the wire codec."""
from __future__ import annotations

import re
from pathlib import Path

from msgr.message import decode_message

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "USER_GUIDE.md"


def test_message_subclass_example_round_trips() -> None:
    code = re.search(r"```python\n(from msgr import Message.*?)```", GUIDE.read_text(), re.S)
    assert code, "the Message subclass example is missing from the user guide"
    ns: dict[str, object] = {"__name__": "user_guide_example"}
    exec(compile(code.group(1), str(GUIDE), "exec"), ns)
    cls = ns["MKvPut"]
    msg = cls("key", b"value", 30)  # type: ignore[operator]
    msg._encode(0)
    got = decode_message(msg.header, msg.front, b"", b"")
    assert type(got) is cls and (got.key, got.value, got.ttl) == ("key", b"value", 30)
    # a version-1 sender (no ttl field) is still read
    msg.header.version = 1
    msg.front = msg.front[:-4]
    old = decode_message(msg.header, msg.front, b"", b"")
    assert (old.key, old.value, old.ttl) == ("key", b"value", 0)
