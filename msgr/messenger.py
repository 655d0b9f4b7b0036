"""AsyncMessenger: listening, the connection map, policies, dispatch and shutdown.

Its protocol machines and connections talk to it through one internal
:class:`MessengerHost` (their ProtocolHost and ConnectionHost): they look
sessions up and register them through it (under one messenger-wide lock, since
they run on several workers), draw ``global_seq`` from the process-wide counter
and tell it the address the peer sees us at. That interface is not the
application's: it stays off ``AsyncMessenger``'s public surface.
"""
from __future__ import annotations

import errno
import functools
import logging
import random
import socket
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from eventcenter import EVENT_READABLE, NetworkStack
from eventcenter.clock import MonotonicClock
from msgr import admin_socket, debug
from msgr.config import Config
from msgr.connection import AsyncConnection, Connection, LoopbackConnection, tune_socket
from msgr.dispatch_queue import DispatchQueue
from msgr.dispatcher import Dispatcher, DispatcherChain
from msgr.entity import EntityAddr, EntityName
from msgr.errors import MsgrError
from msgr.fault_inject import FaultInjector
from msgr.flush import linger as _linger
from msgr.perf import MessengerPerf
from msgr.policy import Policy
from msgr.protocol.gone_peers import GonePeers
from msgr.throttle import Throttle
from msgr.wire import Priority

if TYPE_CHECKING:  # pragma: no cover
    from msgr.connection_host import ConnectionHost
    from msgr.message import Message
    from msgr.protocol.host import AuthClient, AuthServer, AuthVerdict, ConnectAuthorizer
    from msgr.protocol.protocol_v1 import ProtocolV1

_log = logging.getLogger("msgr.messenger")

ACCEPT_BATCH = 16  # accept() calls per readable event on the listening socket, in a burst
# An accept this soon after the previous one is a burst: try for more in the same event. Otherwise
# one accept() per event: the listening fd is level-triggered, so a connection queued meanwhile
# fires it again, and a lone client's session does not pay a failing accept() (BlockingIOError).
ACCEPT_BURST_NS = 200_000

_global_seq_lock = threading.Lock()
_global_seq = 0


def _next_global_seq(at_least: int = 0) -> int:
    global _global_seq
    with _global_seq_lock:
        _global_seq = max(_global_seq, at_least) + 1
        return _global_seq


class SharedStacks:
    """The process-wide NetworkStacks, one per worker count (Ceph: one stack per CephContext).

    Refcounted by the messengers using them: the first ``acquire`` builds and
    starts a stack, the last ``release`` stops it and forgets it, so a later
    ``acquire`` starts a fresh one (shutdown + wait + start works).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stacks: dict[int, list[Any]] = {}  # num_workers -> [stack, references]

    def acquire(self, num_workers: int) -> NetworkStack:
        with self._lock:
            entry = self._stacks.get(num_workers)
            if entry is None:
                stack = NetworkStack(num_workers=num_workers)
                stack.start()
                entry = self._stacks[num_workers] = [stack, 0]
            entry[1] += 1
            shared: NetworkStack = entry[0]
            return shared

    def release(self, stack: NetworkStack) -> None:
        with self._lock:
            entry = self._stacks.get(stack.num_workers)
            if entry is None or entry[0] is not stack:
                raise MsgrError(f"release of a NetworkStack not handed out here: {stack!r}")
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._stacks[stack.num_workers]
        stack.stop()  # outside the lock: joining the workers must not block other messengers' start()

    def references(self, num_workers: int) -> int:
        """How many messengers use the shared stack with ``num_workers`` workers now (0: none runs)."""
        with self._lock:
            entry = self._stacks.get(num_workers)
            return entry[1] if entry is not None else 0


shared_stacks = SharedStacks()


def _noop() -> None:
    pass


class Messenger:
    """A Ceph messenger (msgr v1): one entity's endpoint for sessions with its peers.

    Make one with :meth:`create`, then: set policies per peer type (:meth:`set_policy`), add
    dispatchers (:meth:`add_dispatcher_tail`), optionally :meth:`bind` to listen, :meth:`start`;
    talk through :meth:`connect_to` (a :class:`~msgr.connection_base.Connection`) or
    :meth:`send_to`; end with :meth:`shutdown` then :meth:`wait`. Every method may be called from
    any thread. Dispatcher callbacks run on the messenger's threads (the dispatch thread, or a
    worker for fast dispatch): don't block in them. ``AsyncMessenger`` is the implementation;
    ``help(msgr.AsyncMessenger)`` documents each method:

    ============================================  ==============================================
    ``set_policy(peer_type, policy)``             policy per peer type (``set_default_policy``)
    ``add_dispatcher_head(d)`` / ``_tail(d)``     who receives messages and connection events
    ``bind(addr) -> EntityAddr``                  listen (port 0 picks one); returns the address
    ``start()``                                   workers, dispatch thread, listener
    ``connect_to(peer_type, addr) -> Connection`` the session to a peer (connects in background)
    ``send_to(msg, peer_type, addr)``             send without keeping the Connection
    ``send_message(msg, peer_type, addr)``        the same (Ceph's order; the old one is deprecated)
    ``mark_down(addr)`` / ``mark_down_all()``     end sessions now
    ``get_myaddr()``, ``perf_dump()``             our address; counters as Ceph's ``perf dump``
    ``set_auth_client/_server(x)``                cephx authorizers (``msgr.monc.MonAuth`` sets them)
    ``shutdown(linger=0.0)`` then ``wait()``      stop (``linger``: flush first); restartable
    ============================================  ==============================================

    Read-only attributes: ``my_name`` (our :class:`~msgr.entity.EntityName`), ``nonce``, ``config``
    (the :class:`~msgr.config.Config`; change options through it or the admin socket).
    """

    @staticmethod
    def create(name: EntityName, nonce: int | None = None, config: Config | None = None,
               stack: NetworkStack | None = None) -> AsyncMessenger:
        """A messenger; its workers come from ``stack`` (the caller starts and stops it) if given,
        else from the process-wide stack for its ``ms_async_op_threads`` (or a private one when
        ``ms_async_shared_stack`` is off)."""
        if nonce is None:
            nonce = random.SystemRandom().randrange(1, 1 << 32)
        return AsyncMessenger(name, nonce, config or Config(), stack)


class MessengerHost:
    """The messenger as its protocol machines and connections see it: the
    :class:`~msgr.protocol.host.ProtocolHost` and :class:`~msgr.connection_host.ConnectionHost`
    of every AsyncConnection, kept off the messenger's public surface.

    Part of the messenger (it reads and changes the messenger's connection map, address and
    counters under the messenger lock). What the per-message path reads (``config``,
    ``dispatch_throttle``, ``my_name``, ``dispatch_queue``, ``dispatchers``, ``perf``,
    ``default_send_priority``) are plain attributes, so that path pays no extra call.
    """

    def __init__(self, messenger: AsyncMessenger) -> None:
        self.messenger = messenger
        self.my_name = messenger.my_name
        self.config = messenger.config
        self.rng = messenger._rng
        self.clock = messenger._clock
        self.perf = messenger._perf
        self.dispatchers = messenger._dispatchers
        self.dispatch_queue = messenger._dispatch_queue
        # Ceph: a monitor sends at HIGH by default, everyone else at DEFAULT (set_default_send_priority)
        self.default_send_priority = int(Priority.HIGH if messenger.my_name.type == EntityName.TYPE_MON
                                         else Priority.DEFAULT)
        self.dispatch_throttle = Throttle(f"msgr_dispatch_throttler-{messenger.my_name}",
                                          messenger.config.ms_dispatch_throttle_bytes)
        self._rng_lock = threading.Lock()
        self._inert_injector: FaultInjector | None = None

    # --- ProtocolHost ---------------------------------------------------------------
    def get_myaddr(self) -> EntityAddr:
        """The messenger's address (bound, learned, or blank)."""
        return self.messenger._myaddr

    def get_policy(self, peer_type: int) -> Policy:
        """The messenger's policy for peers of ``peer_type``."""
        return self.messenger.get_policy(peer_type)

    def learned_addr(self, seen: EntityAddr) -> None:
        """A peer sees us at ``seen``; adopt its IP if ours is blank."""
        m = self.messenger
        with m._lock:
            if m._learned or not m._myaddr.is_blank_ip() or not self.config.ms_learn_addr_from_peer:
                return
            m._myaddr = m._myaddr.with_ip(seen.ip)
            m._learned = True
            _log.info("%s learned my addr %s", self.my_name, m._myaddr)

    def get_global_seq(self, at_least: int = 0) -> int:
        """The next value of the process-wide connect counter (at least ``at_least`` + 1)."""
        return _next_global_seq(at_least)

    def lookup_conn(self, peer_addr: EntityAddr) -> ProtocolV1 | None:
        """The registered session for ``peer_addr``, if any."""
        m = self.messenger
        with m._lock:
            found: ProtocolV1 | None = m._conns.get(peer_addr)
            return found

    def register_conn(self, proto: ProtocolV1) -> bool:
        """Register ``proto`` under its peer address; False if another one is registered."""
        m = self.messenger
        with m._lock:
            addr = proto.peer_addr
            assert addr is not None   # a protocol registers once it knows its peer
            cur = m._conns.get(addr)
            if cur is not None and cur is not proto:
                return False
            m._conns[addr] = proto
            return True

    def unregister_conn(self, proto: ProtocolV1) -> None:
        """Forget ``proto`` (only where it is the one registered: then GonePeers.session_left)."""
        m = self.messenger
        conn = proto.connection   # None once a never-registered session ended (AsyncConnection._released)
        with m._lock:
            for key in (proto.peer_addr, None if conn is None else conn._target):
                if key is not None and m._conns.get(key) is proto:
                    m._gone_pgs.session_left(key, proto)
                    del m._conns[key]

    def gone_peer_global_seq(self, peer_addr: EntityAddr) -> int:
        """The highest peer_global_seq of the sessions with ``peer_addr`` that were unregistered."""
        m = self.messenger
        with m._lock:
            return m._gone_pgs.highest(peer_addr)

    def wall_clock(self) -> tuple[int, int]:
        """(sec, nsec) of the wall clock, for KEEPALIVE2 stamps."""
        ns = time.time_ns()
        return ns // 1_000_000_000, ns % 1_000_000_000

    def get_authorizer(self, peer_type: int) -> ConnectAuthorizer | None:
        """The auth client's authorizer for a connect to ``peer_type`` (None without one: auth none)."""
        ac = self.messenger._auth_client
        return None if ac is None else ac.get_authorizer(peer_type)

    def verify_authorizer(self, peer_type: int, protocol: int, blob: bytes,
                          challenge: object) -> AuthVerdict | None:
        """The auth server's verdict on an incoming authorizer (None without one: auth none)."""
        srv = self.messenger._auth_server
        return None if srv is None else srv.verify_authorizer(peer_type, protocol, blob, challenge)

    def session_lock(self, proto: ProtocolV1) -> Any:
        """The session lock of ``proto``'s connection (an accept deciding on that session)."""
        return proto.connection._session_lock()

    # --- ConnectionHost (msgr/connection_host.py) -----------------------------------
    def fault_injector(self) -> FaultInjector:
        """A new connection's FaultInjector: its own RNG (replayable) when any injection is on, else
        one shared, inert injector (an idle connection then carries no Random of ~2.5 KiB)."""
        cfg = self.config
        if cfg.ms_inject_socket_failures or (cfg.ms_inject_delay_type.split()
                                              and cfg.ms_inject_delay_probability > 0):
            return FaultInjector(cfg, self.fork_rng())
        inert = self._inert_injector
        if inert is None or inert.internal_delay_s != cfg.ms_inject_internal_delays:
            inert = self._inert_injector = FaultInjector(cfg, self.rng)
        return inert

    def fork_rng(self) -> random.Random:
        """A per-connection RNG drawn from the messenger's seeded one (replayable injection)."""
        with self._rng_lock:
            return random.Random(self.rng.getrandbits(64))

    def connection_registered(self, conn: AsyncConnection) -> None:
        """``conn``'s session is known by its peer's address."""
        pass  # the map was updated by register_conn; kept as a hook for logging

    def connection_marked_down(self, conn: AsyncConnection) -> None:
        """mark_down: connect_to must not hand this session out any more."""
        m = self.messenger
        with m._lock:
            for key, proto in list(m._conns.items()):
                if proto is conn._proto:
                    m._gone_pgs.session_left(key, proto)
                    del m._conns[key]

    def connection_closed(self, conn: AsyncConnection) -> None:
        """``conn`` released everything it held; forget it."""
        m = self.messenger
        with m._lock:
            m._all.discard(conn)

    def note_dropped_unsent(self, count: int) -> None:
        """A connection marked down (or shut down) dropped ``count`` unsent messages."""
        m = self.messenger
        with m._lock:
            m._dropped_unsent += count


class AsyncMessenger(Messenger):
    """Messenger over EventCenter workers (docs/USER_GUIDE.md describes the public surface)."""

    def __init__(self, name: EntityName, nonce: int, config: Config,
                 stack: NetworkStack | None = None) -> None:
        self.my_name = name
        self.nonce = nonce
        self.config = config
        self._clock = MonotonicClock()
        self._rng = random.Random(config.ms_inject_seed)
        self._perf = MessengerPerf(str(name))
        self._dispatchers = DispatcherChain()
        self._dispatch_queue = DispatchQueue(self._dispatchers, str(name), self._perf)
        self._lock = threading.RLock()
        self._conns: dict[EntityAddr, Any] = {}        # peer addr -> ProtocolV1 (registered sessions)
        # peer addr -> highest peer_global_seq of its sessions that left _conns: a connect older than
        # that is stale (PROTOCOL.md §7 row 8a); one int per peer address ever unregistered
        self._gone_pgs = GonePeers()
        self._all: set[AsyncConnection] = set()        # every live connection, registered or not
        self._default_policy = Policy()
        self._policies: dict[int, Policy] = {}
        self._myaddr = EntityAddr(EntityAddr.TYPE_LEGACY, nonce)
        self._bind_addr: EntityAddr | None = None
        self._listen: socket.socket | None = None
        self._listen_worker: Any = None
        self._last_accept_ns = 0      # when the listener last fired (ACCEPT_BURST_NS)
        self._accept_local: EntityAddr | None = None   # local address of every accepted socket (bind)
        self._accept_family = int(socket.AF_INET)      # the listener's address family (bind)
        self._accept_tuned = False                     # accepted sockets inherit the listener's options
        self._stack: NetworkStack | None = None
        self._own_stack = stack            # caller-owned stack: never started/stopped by a wait()
        self._admin_socket: admin_socket.AdminSocket | None = None   # Config.admin_socket: from start() to shutdown()
        self._started = False
        self._stopping = threading.Event()
        self._learned = False
        self._dropped_unsent = 0           # messages mark_down/shutdown dropped (logged by wait())
        self._host = MessengerHost(self)   # what connections and protocols ask of us
        self._loopback = LoopbackConnection(self._host)
        self._auth_client: AuthClient | None = None   # cephx authorizers for our connects (set_auth_client)
        self._auth_server: AuthServer | None = None   # verifies incoming authorizers (set_auth_server)

    def __repr__(self) -> str:
        return f"<AsyncMessenger {self.my_name} {self._myaddr}>"

    def get_myaddr(self) -> EntityAddr:
        """Our address: the bound one, or (unbound) blank until a peer tells us how it sees us."""
        return self._myaddr

    def get_policy(self, peer_type: int) -> Policy:
        """The policy for peers of ``peer_type`` (the default policy if none was set)."""
        return self._policies.get(peer_type, self._default_policy)

    @property
    def dispatch_throttle(self) -> Throttle:
        """The messenger-wide ``ms_dispatch_throttle_bytes`` throttle (a fresh one after each wait())."""
        return self._host.dispatch_throttle

    def get_default_send_priority(self) -> int:
        """The priority given at send time to a message whose priority is 0."""
        return self._host.default_send_priority

    def set_default_send_priority(self, prio: int) -> None:
        """Set the priority given at send time to messages whose priority is 0."""
        self._host.default_send_priority = int(prio)

    # --- policies and dispatchers ----------------------------------------------
    def set_policy(self, peer_type: int, policy: Policy) -> None:
        """Use ``policy`` for sessions with peers of ``peer_type`` (``EntityName.TYPE_*``); set it before start."""
        self._policies[peer_type] = policy

    def set_default_policy(self, policy: Policy) -> None:
        """Use ``policy`` for peer types without their own (see :meth:`set_policy`)."""
        self._default_policy = policy

    def set_policy_throttlers(self, peer_type: int, bytes_throttle: Throttle | None,
                              msgs_throttle: Throttle | None) -> None:
        """Receive throttles (bytes, messages) for sessions with peers of ``peer_type``, as Ceph's."""
        p = self.get_policy(peer_type).copy()
        p.throttler_bytes, p.throttler_messages = bytes_throttle, msgs_throttle
        self._policies[peer_type] = p

    def set_auth_client(self, auth_client: AuthClient | None) -> None:
        """Who builds the authorizers of our connects (cephx: ``msgr.auth.auth_client.CephxAuthClient``,
        which ``msgr.monc.MonAuth.login`` sets); None: auth none. Connections opened afterwards use it."""
        self._auth_client = auth_client

    def set_auth_server(self, auth_server: AuthServer | None) -> None:
        """Who verifies the authorizers of incoming connects (cephx: ``msgr.auth.auth_server.
        CephxAuthServer``, which ``msgr.monc.MonAuth.serve`` sets); None: auth none rules."""
        self._auth_server = auth_server

    def add_dispatcher_head(self, d: Dispatcher) -> None:
        """Add ``d`` before the dispatchers already added (it is offered each message first)."""
        self._dispatchers.add_head(d)

    def add_dispatcher_tail(self, d: Dispatcher) -> None:
        """Add ``d`` after the dispatchers already added."""
        self._dispatchers.add_tail(d)

    # --- binding and life ---------------------------------------------------------
    def bind(self, addr: EntityAddr) -> EntityAddr:
        """Listen on ``addr`` (port 0 picks one); returns our address with the real port and nonce."""
        if self._listen is not None:
            raise MsgrError(f"{self.my_name}: already bound to {self._myaddr}")
        sock = socket.socket(addr.socket_family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr.sockaddr())
            sock.listen(512)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise MsgrError(f"{self.my_name}: cannot bind {addr}: {exc.strerror or exc}") from exc
        host, port = sock.getsockname()[:2]
        self._listen = sock
        # bound to one IP, every accepted socket's local address is this one: no getsockname() per
        # accept; bound to a wildcard it depends on the address the peer dialled (asked per socket)
        local = EntityAddr.from_sockaddr((host, port))
        self._accept_local = None if local.is_blank_ip() else local
        self._accept_family = int(addr.socket_family)
        # TCP_NODELAY / SO_RCVBUF set here are inherited by each accepted socket: no setsockopt per accept
        self._accept_tuned = sys.platform.startswith("linux") and tune_socket(sock, self.config)
        self._myaddr = EntityAddr(EntityAddr.TYPE_LEGACY, self.nonce, host, port, addr.family)
        self._bind_addr = self._myaddr
        if self._started:
            self._start_listening()
        return self._myaddr

    def start(self) -> None:
        """Start the workers, the dispatch thread and the listener; allowed again after shutdown+wait."""
        if self._started:
            return
        if self.config.is_set("debug_ms"):
            debug.set_debug_ms(self.config.debug_ms)   # Ceph's debug_ms -> the msgr loggers
        debug.refresh()
        if self._listen is None and self._bind_addr is not None:
            self.bind(self._bind_addr)  # restart after shutdown: same address again
        self._stopping.clear()
        self._stack = self._acquire_stack()
        self._dispatch_queue.start()
        self._started = True
        self._admin_socket = admin_socket.serve(self)
        if self._listen is not None:
            self._start_listening()

    def _acquire_stack(self) -> NetworkStack:
        n = max(1, self.config.ms_async_op_threads)
        if self._own_stack is not None:
            if not self._own_stack.running:
                self._own_stack.start()
            return self._own_stack
        if self.config.ms_async_shared_stack:
            return shared_stacks.acquire(n)
        stack = NetworkStack(num_workers=n)
        stack.start()
        return stack

    def _release_stack(self, stack: NetworkStack) -> None:
        if stack is self._own_stack:
            return
        if self.config.ms_async_shared_stack:
            shared_stacks.release(stack)
        else:
            stack.stop()

    def _start_listening(self) -> None:
        assert self._stack is not None and self._listen is not None
        w = self._listen_worker = self._stack.workers[0]
        lsock = self._listen
        w.center.submit_to(lambda: w.center.create_file_event(lsock.fileno(), EVENT_READABLE, self._on_accept))

    def _on_accept(self, fd: int, mask: int) -> None:
        # shutdown() and wait() clear _listen and _stack from an application thread while this runs on
        # the listening worker: read them once, and decide under the messenger lock whether an accepted
        # socket still belongs to this listener (shutdown() clears _listen under the same lock before
        # mark_down_all, so a session either is marked down by it or is never started)
        lsock, stack, local, family = self._listen, self._stack, self._accept_local, self._accept_family
        tuned = self._accept_tuned
        if lsock is None or stack is None:
            return
        now = time.monotonic_ns()
        burst = now - self._last_accept_ns < ACCEPT_BURST_NS
        self._last_accept_ns = now
        for _ in range(ACCEPT_BATCH if burst else 1):
            try:
                # socket.accept() without its wrapper, which reads the listener's family and type
                # back through two IntEnum conversions per call: the family is known since bind
                fd, peer = lsock._accept()   # type: ignore[attr-defined]  # (CPython, since 3.3)
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    _log.error("%s: accept failed: %s", self.my_name, exc)
                    return
                _log.info("%s: accept: %s", self.my_name, exc)
                continue
            worker = stack.get_worker()
            with self._lock:
                conn = None
                if self._listen is lsock:
                    conn = AsyncConnection(self._host, worker)
                    self._all.add(conn)
            if conn is None:
                worker.release()
                _log.debug("%s: accepted %s while shutting down: closed", self.my_name, peer)
                sock.close()
                return
            if worker is self._listen_worker:
                # this (the listening) worker serves the session too, always so with one worker:
                # start it here, no posted event between the accept and the banner going out
                conn._start_accept(sock, peer, local, tuned)
            else:
                worker.center.dispatch_event_external(functools.partial(conn._start_accept, sock, peer, local, tuned))

    def is_started(self) -> bool:
        """True between :meth:`start` and the end of :meth:`wait`."""
        return self._started

    def shutdown(self, linger: float = 0.0) -> None:
        """Close every connection and the listener, stop dispatching; wait() finishes the job.

        ``linger`` > 0 first flushes every connection (see ``Connection.flush``) for up to that many
        seconds in total, so what was sent before arrives; it must then be called from an application
        thread (:class:`msgr.errors.WouldDeadlockError` on a worker or the dispatch thread). With 0,
        as in Ceph, whatever is still unsent is dropped at once; wait() logs how many at INFO.
        """
        if linger > 0 and self._started:
            _linger(self.connections() + [self._loopback], linger, self.my_name)
        if not self._started:
            self._stopping.set()
            return
        with self._lock:  # first: an accept running now then starts no session mark_down_all misses
            lsock, w = self._listen, self._listen_worker
            self._listen = None
        self.mark_down_all()
        if lsock is not None:
            def close_listener() -> None:
                w.center.delete_file_event(lsock.fileno(), EVENT_READABLE)
                lsock.close()
            try:
                w.center.submit_to(close_listener, wait=False)
            except Exception:
                lsock.close()
        self._dispatch_queue.shutdown()
        if self._admin_socket is not None:
            self._admin_socket.stop()
            self._admin_socket = None
        self._stopping.set()

    def wait(self) -> None:
        """Block until shutdown() was called and everything stopped."""
        self._stopping.wait()
        stack, self._stack = self._stack, None
        if stack is not None:
            # the workers may serve other messengers and go on running: let the queued work
            # (mark_downs, the listener close, accepts posted meanwhile) run, then end what is left
            # on its own worker, so no socket, timer or worker reference of ours outlives wait()
            for _ in range(2):
                self._barrier(stack)
            with self._lock:
                leftovers = list(self._all)
            by_worker: dict[Any, list[AsyncConnection]] = {}
            for conn in leftovers:
                by_worker.setdefault(conn._worker, []).append(conn)
            for worker, conns in by_worker.items():
                self._run_on(worker, lambda conns=conns: [c._abandon() for c in conns])
            self._release_stack(stack)
        self._dispatch_queue.wait()
        with self._lock:
            leftovers = list(self._all)
            self._all.clear()
            self._conns.clear()
            self._gone_pgs.clear()
        for conn in leftovers:  # only if a worker was already gone: nothing runs them any more
            conn._orphan()
        with self._lock:
            dropped, self._dropped_unsent = self._dropped_unsent, 0
        if dropped:
            _log.info("%s: shutdown dropped %d unsent message(s) (shutdown(linger=SECONDS) delivers them "
                      "first)", self.my_name, dropped)
        self._started = False
        old = self._host.dispatch_throttle
        self._host.dispatch_throttle = Throttle(old.name, self.config.ms_dispatch_throttle_bytes)

    @staticmethod
    def _run_on(worker: Any, fn: Any) -> None:
        try:
            worker.center.submit_to(fn, wait=True)
        except Exception as exc:  # e.g. a caller-owned stack stopped under us
            _log.warning("cannot run on %r: %s", worker, exc)

    def _barrier(self, stack: NetworkStack) -> None:
        """Return once every worker ran what was queued on it before this call."""
        for w in list(stack.workers):
            self._run_on(w, _noop)

    # --- connections ---------------------------------------------------------------
    def connect_to(self, peer_type: int, addr: EntityAddr) -> Connection:
        """The session to ``addr`` (created and connecting in the background if new)."""
        if addr == self._myaddr or (addr.nonce == self.nonce and addr.port == self._myaddr.port
                                    and addr.port != 0):
            return self._loopback
        if not self._started or self._stack is None:
            raise MsgrError(f"{self.my_name}: connect_to before start()")
        with self._lock:
            proto = self._conns.get(addr)
            if proto is not None and not proto.connection._is_down() and not proto.connection._closed:
                found: Connection = proto.connection
                return found
            worker = self._stack.get_worker()
            conn = AsyncConnection(self._host, worker, addr, peer_type)
            # started before it is published: an accept deciding on it must see CONNECTING and its
            # peer address, never a session that has not begun (issue 11, defect 2)
            conn._begin_connect()
            self._conns[addr] = conn._proto
            self._all.add(conn)
        return conn

    def connect_to_type(self, peer_type: int, addr: EntityAddr) -> Connection:
        """The same as :meth:`connect_to` (Ceph's other name for it)."""
        return self.connect_to(peer_type, addr)

    def get_loopback_connection(self) -> Connection:
        """Our connection to ourselves: messages sent on it are dispatched here, without a socket."""
        return self._loopback

    def send_to(self, msg: Message, peer_type: int, addr: EntityAddr) -> None:
        """Send ``msg`` to ``addr`` (connecting first if needed); any thread."""
        self.connect_to(peer_type, addr).send_message(msg)

    def send_message(self, msg: Message, peer_type: int | EntityAddr | None = None,
                     addr: EntityAddr | int | None = None) -> None:
        """Send ``msg`` to the peer of type ``peer_type`` at ``addr``: Ceph's argument order, the
        same as :meth:`send_to`. Keywords work in any order.

        The old order ``send_message(msg, addr[, peer_type])`` still works but is deprecated (a
        DeprecationWarning); as before, a missing ``peer_type`` means an OSD.
        """
        if isinstance(peer_type, EntityAddr):   # the old positional order (msg, addr[, peer_type])
            warnings.warn("Messenger.send_message(msg, addr, peer_type) is deprecated: use "
                          "send_message(msg, peer_type, addr), Ceph's order, as send_to",
                          DeprecationWarning, stacklevel=2)
            peer_type, addr = addr, peer_type
        if not isinstance(addr, EntityAddr):
            raise TypeError(f"send_message needs the peer's EntityAddr, got {addr!r}")
        if peer_type is None:
            peer_type = EntityName.TYPE_OSD   # the default the old signature had
        if not isinstance(peer_type, int):
            raise TypeError(f"send_message needs the peer's entity type, got {peer_type!r}")
        self.send_to(msg, peer_type, addr)

    def mark_down(self, addr: EntityAddr) -> None:
        """End the session with ``addr`` now, as ``Connection.mark_down`` (no-op if there is none)."""
        with self._lock:
            proto = self._conns.get(addr)
        if proto is not None:
            proto.connection.mark_down()

    def mark_down_all(self) -> None:
        """End every session now (no reset callbacks); ``is_connected()`` is False for each when this returns."""
        with self._lock:
            conns = list(self._all)
        for c in conns:
            c.mark_down()

    def connections(self) -> list[AsyncConnection]:
        """Every live connection (registered sessions and ones still in their handshake)."""
        with self._lock:
            return list(self._all)

    # --- perf -----------------------------------------------------------------------
    def perf_dump(self, logger: str | None = None, counter: str | None = None) -> dict[str, Any]:
        """The counters as Ceph's ``perf dump`` shows them (see msgr/perf.py and
        docs/DEBUGGING.md): ``AsyncMessenger::Worker-N`` sections, the ``AsyncMessenger`` totals,
        the dispatch throttle, the dispatch queue and the connection counts."""
        t = self.dispatch_throttle
        dq = self._dispatch_queue
        extra = {
            f"throttle-{t.name}": {"val": t.current, "max": t.max, "get_or_fail_fail": t.waits},
            "dispatch_queue": {"length": len(dq), "dispatched": dq.dispatched},
            "connections": {"registered": len(self._conns), "live": len(self._all)},
        }
        return self._perf.dump(extra, logger, counter)

    def perf_schema(self) -> dict[str, Any]:
        """Ceph's ``perf schema``: type, description and unit of every counter :meth:`perf_dump` gives."""
        t = self.dispatch_throttle
        extra = {f"throttle-{t.name}": {
            "val": ("gauge", "Currently available throttle", "none"),
            "max": ("gauge", "Max value for throttle", "none"),
            "get_or_fail_fail": ("counter", "Get blocked during get_or_fail", "none")},
            "dispatch_queue": {"length": ("gauge", "items waiting for the dispatch thread", "none"),
                               "dispatched": ("counter", "items dispatched", "none")},
            "connections": {"registered": ("gauge", "sessions known by peer address", "none"),
                            "live": ("gauge", "connections alive", "none")}}
        return self._perf.schema(extra)

    def perf_reset(self, logger: str = "all") -> bool:
        """Ceph's ``perf reset``: zero the counters of every section ("all") or of one
        ``AsyncMessenger::Worker-N`` section; False if there is no such section."""
        return self._perf.reset(logger)


if TYPE_CHECKING:  # pragma: no cover
    def _host_implements_the_interfaces(host: MessengerHost) -> ConnectionHost:
        return host   # mypy checks MessengerHost against ConnectionHost (and so ProtocolHost)
