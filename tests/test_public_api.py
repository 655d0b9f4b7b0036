"""The public surface: documented for help(), and one argument order for sending."""
import inspect
import pydoc
import threading
import warnings
from pathlib import Path

import pytest

import eventcenter
import msgr
from msgr import Config, Dispatcher, EntityAddr, EntityName, Message, Messenger, Policy
from msgr.connection import AsyncConnection, Connection, LoopbackConnection


def _undocumented(cls: type) -> list[str]:
    missing = [] if inspect.getdoc(cls) else ["<class>"]
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if callable(fn) and not inspect.getdoc(getattr(cls, name)):
            missing.append(name)
    return missing


@pytest.mark.parametrize("module", [msgr, eventcenter], ids=["msgr", "eventcenter"])
def test_every_exported_class_documents_itself_and_its_public_methods(module):
    classes = [getattr(module, n) for n in module.__all__ if inspect.isclass(getattr(module, n))]
    assert classes
    gaps = {c.__qualname__: m for c in classes if (m := _undocumented(c))}
    assert not gaps, f"help() shows these without a docstring: {gaps}"


class _Ping(Message):
    TYPE = 0x7E31


class _Inbox(Dispatcher):
    def __init__(self) -> None:
        self.got: list[Message] = []
        self.cond = threading.Condition()

    def ms_dispatch(self, msg: Message) -> bool:
        with self.cond:
            self.got.append(msg)
            self.cond.notify_all()
        return True

    def wait_for(self, n: int) -> list[Message]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout=10), self.got
            return list(self.got)


@pytest.fixture
def loopback():
    ms = Messenger.create(EntityName.osd(0), nonce=4242, config=Config())
    ms.set_default_policy(Policy.lossless_peer())
    inbox = _Inbox()
    ms.add_dispatcher_tail(inbox)
    ms.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    ms.start()
    yield ms, inbox
    ms.shutdown()
    ms.wait()


def test_send_message_takes_cephs_order_like_send_to(loopback):
    ms, inbox = loopback
    me = ms.get_myaddr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the new order and keywords warn about nothing
        ms.send_to(_Ping(), EntityName.TYPE_OSD, me)
        ms.send_message(_Ping(), EntityName.TYPE_OSD, me)
        ms.send_message(_Ping(), addr=me, peer_type=EntityName.TYPE_OSD)
    assert [type(m) for m in inbox.wait_for(3)] == [_Ping] * 3


def test_send_message_old_order_still_works_with_a_deprecation_warning(loopback):
    ms, inbox = loopback
    me = ms.get_myaddr()
    with pytest.warns(DeprecationWarning, match="send_message\\(msg, peer_type, addr\\)"):
        ms.send_message(_Ping(), me, EntityName.TYPE_OSD)
    with pytest.warns(DeprecationWarning):
        ms.send_message(_Ping(), me)   # the old default peer type (OSD)
    assert len(inbox.wait_for(2)) == 2


def test_send_message_without_an_address_is_a_clear_error(loopback):
    ms, _ = loopback
    with pytest.raises(TypeError, match="EntityAddr"):
        ms.send_message(_Ping(), EntityName.TYPE_OSD)


# what protocol machines and connections ask of their messenger (msgr/protocol/host.py,
# msgr/connection_host.py): the messenger's internal host answers them, not its public surface
_INTERNAL = ("register_conn", "lookup_conn", "unregister_conn", "get_global_seq", "learned_addr",
             "wall_clock", "fork_rng", "fault_injector", "session_lock", "connection_closed",
             "connection_registered", "connection_marked_down", "note_dropped_unsent")


def test_protocol_and_connection_host_methods_are_not_public_on_a_started_messenger(loopback):
    ms, _inbox = loopback
    public = {n for n in dir(ms) if not n.startswith("_")}
    assert not public & set(_INTERNAL), sorted(public & set(_INTERNAL))
    for name in ("get_myaddr", "get_policy", "connect_to", "send_to", "send_message", "mark_down",
                 "mark_down_all", "perf_dump", "perf_schema", "perf_reset", "set_policy", "bind",
                 "shutdown", "wait", "get_default_send_priority", "dispatch_throttle", "my_name", "nonce",
                 "config"):
        assert hasattr(ms, name), name
    # the messenger's own machinery: reached by its connections through MessengerHost, not by users
    for name in ("clock", "rng", "perf", "dispatch_queue", "dispatchers", "default_send_priority"):
        assert not hasattr(ms, name), name
    undocumented = [n for n in public if callable(getattr(ms, n)) and not inspect.getdoc(getattr(ms, n))]
    assert not undocumented, undocumented


def test_connections_talk_to_the_messenger_through_its_internal_host(loopback):
    ms, _inbox = loopback
    peer = Messenger.create(EntityName.osd(1), nonce=4343)
    peer.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    peer.start()
    try:
        conn = ms.connect_to(EntityName.TYPE_OSD, peer.get_myaddr())
        conn.send_message(_Ping())
        assert conn.get_messenger() is ms            # the application's view stays the messenger
        host = conn._host
        assert host is not ms and host.messenger is ms
        assert conn._proto.host is host              # the protocol machine gets the host too
        assert host.dispatch_throttle is ms.dispatch_throttle
    finally:
        peer.shutdown()
        peer.wait()


# What a Connection offers the application: the names outside users rely on and docs/USER_GUIDE.md's
# "Connection" section. Everything else on the object is the messenger's business (underscored;
# msgr/connection_host.py declares what the messenger may call).
CONNECTION_API = {
    "send_message", "send_keepalive", "is_connected", "get_peer_addr", "get_peer_type", "peer_type",
    "peer_name", "features", "mark_down", "flush", "flush_future", "get_messenger",
    "get_last_keepalive_ack", "wait_keepalive_ack", "last_fault", "last_fault_error",
}


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_connection_objects_show_only_the_documented_surface(loopback):
    """A new public name on a connection is an API decision: document it (and add it here)."""
    ms, inbox = loopback
    peer = Messenger.create(EntityName.osd(1), nonce=4344)
    peer_inbox = _Inbox()
    peer.add_dispatcher_tail(peer_inbox)
    peer.bind(EntityAddr.parse("v1:127.0.0.1:0"))
    peer.start()
    try:
        out = ms.connect_to(EntityName.TYPE_OSD, peer.get_myaddr())
        out.send_message(_Ping())
        accepted = peer_inbox.wait_for(1)[0].get_connection()
        assert accepted is not out and accepted.is_connected()
        for conn in (out, accepted, ms.connect_to(EntityName.TYPE_OSD, ms.get_myaddr())):
            assert _public(conn) == CONNECTION_API, (type(conn).__name__,
                                                     sorted(_public(conn) ^ CONNECTION_API))
        for cls in (Connection, AsyncConnection, LoopbackConnection):
            assert _public(cls) == CONNECTION_API, (cls.__name__, sorted(_public(cls) ^ CONNECTION_API))
    finally:
        peer.shutdown()
        peer.wait()


def _assert_help_documents(cls: type, names: set[str], values: frozenset[str] = frozenset()) -> None:
    """help(cls) shows every name of ``names``, each with a docstring (but ``values``: constants)."""
    gaps = [n for n in sorted(names - values) if not inspect.getdoc(getattr(cls, n))]
    assert not gaps, f"help({cls.__name__}) shows these without a docstring: {gaps}"
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert not [n for n in names if n not in text]


def _assert_guide_mentions(heading: str, names: set[str]) -> None:
    """docs/USER_GUIDE.md's section ``heading`` (up to the next heading) names each of ``names``."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "USER_GUIDE.md").read_text()
    section = guide[guide.index(heading):]
    section = section[:section.find("\n#", 1)]
    missing = [n for n in sorted(names) if f"`{n}" not in section and f".{n}" not in section]
    assert not missing, f"docs/USER_GUIDE.md's {heading!r} does not mention {missing}"


@pytest.mark.parametrize("cls", [Connection, AsyncConnection, LoopbackConnection])
def test_help_of_a_connection_documents_every_public_name(cls):
    _assert_help_documents(cls, _public(cls) | CONNECTION_API)


def test_the_user_guide_documents_every_public_connection_name():
    _assert_guide_mentions("### Connection", CONNECTION_API)


# What a Message offers the application: docs/USER_GUIDE.md §5 (writing a message type) and the
# names the API contract lists. Encoding for the send queue, receive throttles, the connection
# setter and the receive stamp are the messenger's (underscored; see msgr/message.py).
MESSAGE_API = {
    "TYPE", "HEAD_VERSION", "COMPAT_VERSION", "header", "front", "middle", "data", "footer",
    "encode_payload", "decode_payload", "get_type", "get_seq", "tid", "get_priority", "set_priority",
    "get_source", "get_connection", "get_payload_len",
}
_MESSAGE_CONSTANTS = frozenset({"TYPE", "HEAD_VERSION", "COMPAT_VERSION"})


def test_message_shows_only_the_documented_surface(loopback):
    """A new public name on Message is an API decision: document it (and add it here)."""
    ms, inbox = loopback
    built = _Ping()
    ms.connect_to(EntityName.TYPE_OSD, ms.get_myaddr()).send_message(built)
    received = inbox.wait_for(1)[0]
    assert received.get_connection() is not None
    for obj in (Message, _Ping, Message(), built, received):
        assert _public(obj) == MESSAGE_API, (obj, sorted(_public(obj) ^ MESSAGE_API))


def test_help_of_message_documents_every_public_name():
    _assert_help_documents(Message, _public(Message) | MESSAGE_API, values=_MESSAGE_CONSTANTS)


def test_the_user_guide_documents_every_public_message_name():
    _assert_guide_mentions("## 5. Writing a message type", MESSAGE_API)
