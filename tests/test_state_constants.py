"""The hot paths' stand-ins for Enum machinery stay equal to what they stand for.

``States`` (msgr/protocol/states.py) lists State's members as plain class attributes, so the
handshake reads them without the Enum metaclass hook; ``State`` and ``TimerKind`` hash by identity.
A state added to ``State`` but not to ``States`` (or a typo there) fails here, not in a session."""
from __future__ import annotations

from msgr.protocol.actions import Deliver, TimerKind
from msgr.protocol.states import State, States


def test_states_lists_every_state_once_as_the_same_object() -> None:
    listed = {k: v for k, v in vars(States).items() if not k.startswith("_")}
    assert listed == {s.name: s for s in State}
    assert all(listed[s.name] is s for s in State)


def test_identity_hash_agrees_with_equality() -> None:
    for enum_cls in (State, TimerKind):
        members = list(enum_cls)
        table = {m: i for i, m in enumerate(members)}
        assert len(table) == len(members)
        for i, m in enumerate(members):
            assert table[m] == i
            assert m in frozenset(members)
            assert hash(m) == object.__hash__(m)


def test_deliver_is_the_list_of_its_messages() -> None:
    msgs = [object(), object()]
    d = Deliver(msgs)
    assert d.msgs is d and list(d) == msgs and d == msgs
    assert repr(Deliver([])) == "Deliver([])"
