"""The write half of AsyncConnection: the protocol's output to a non-blocking socket.

One ``sendmsg`` per turn in the usual case; a short write keeps the rest as
memoryviews and registers WRITABLE until it is gone (the level-triggered rule
of docs/ARCHITECTURE.md: WRITABLE is polled only while output is waiting).
"""
from __future__ import annotations

import socket
import time
from collections.abc import Sequence, Sized
from typing import TYPE_CHECKING, Any

from eventcenter import EVENT_WRITABLE
from msgr._typing import BytesLike

if TYPE_CHECKING:  # pragma: no cover
    from msgr.protocol.protocol_v1 import ProtocolV1

__all__ = ["SocketWriter", "IOV_MAX"]

IOV_MAX = 1024      # Linux: buffers per sendmsg

_mono_ns = time.monotonic_ns   # perf running times (real time, whatever clock the protocol runs on)


class SocketWriter:
    """Mixin of AsyncConnection; the connection supplies the fields below and the error paths."""

    _sock: socket.socket | None
    _fd: int
    _center: Any
    _perf: Any
    _inject: Any
    _proto: ProtocolV1
    _wbufs: list[memoryview]
    _writing: bool

    if TYPE_CHECKING:  # pragma: no cover - supplied by AsyncConnection
        def _socket_error(self, exc: OSError, where: str) -> None: ...

        def _on_writable(self, fd: int, mask: int) -> None: ...

    def _write(self) -> None:
        """Write the protocol's output; keep the unsent rest as memoryviews and wait for WRITABLE."""
        sock = self._sock
        if sock is None:
            return
        t0 = _mono_ns()
        bufs = self._wbufs
        if not bufs:
            # the usual case: nothing left from a short write, so the protocol's list goes out as it
            # is in one send/sendmsg (no per-buffer memoryview, no bookkeeping unless the kernel takes less)
            out = self._proto.take_output()
            if not out:   # nothing to write (the caller did not ask has_output() first)
                if self._writing:
                    self._center.delete_file_event(self._fd, EVENT_WRITABLE)
                    self._writing = False
                return
            if len(out) <= IOV_MAX:
                perf = self._perf
                inject = self._inject
                if inject.socket_failures and inject.maybe_fail_socket(sock, "write"):
                    perf.msgr_injected_failures += 1
                try:
                    if len(out) == 1:
                        # one buffer (a reply with its ACK): send, cheaper than building a msghdr
                        b = out[0]
                        n = sock.send(b)
                        left = len(b) - n
                    else:
                        n = sock.sendmsg(out)
                        left = sum(map(len, out)) - n   # one C-level sum, not a Python loop per buffer
                except (BlockingIOError, InterruptedError):
                    perf.msgr_eagain += 1
                    self._keep_unwritten(out, 0)
                except OSError as exc:
                    self._socket_error(exc, "write")
                    return   # the fault path owns the socket now
                else:
                    perf.msgr_send_calls += 1
                    perf.msgr_send_bytes += n
                    if left:
                        self._keep_unwritten(out, n)
                    elif self._writing:
                        self._center.delete_file_event(self._fd, EVENT_WRITABLE)
                        self._writing = False
                dt = _mono_ns() - t0   # _time_write, inlined on the usual path
                perf.send_ns += dt
                perf.total_ns += dt
                return
            for b in out:
                if len(b):
                    bufs.append(b if type(b) is memoryview else memoryview(b))
        elif self._proto.has_output():
            for b in self._proto.take_output():
                if len(b):
                    bufs.append(b if type(b) is memoryview else memoryview(b))
        self._write_rest(sock, bufs)
        if self._sock is not sock:
            return
        if bufs:
            self._wait_writable()
        elif self._writing:
            self._center.delete_file_event(self._fd, EVENT_WRITABLE)
            self._writing = False
        self._time_write(t0)

    def _time_write(self, t0: int) -> None:
        dt = _mono_ns() - t0
        perf = self._perf
        perf.send_ns += dt
        perf.total_ns += dt   # the read span ends before its write: nothing is counted twice

    def _wait_writable(self) -> None:
        if not self._writing:
            self._center.create_file_event(self._fd, EVENT_WRITABLE, self._on_writable)
            self._writing = True

    def _keep_unwritten(self, out: list[BytesLike], n: int) -> None:
        """A short write of ``out`` (``n`` bytes taken): the rest to ``_wbufs`` as memoryviews, and
        WRITABLE polled until it is gone."""
        i, n = _written_prefix(out, n)
        if n:
            self._perf.msgr_eagain += 1
        rest = self._wbufs
        rest.append(memoryview(out[i])[n:])
        rest.extend(memoryview(b) for b in out[i + 1:] if len(b))
        self._wait_writable()

    def _write_rest(self, sock: socket.socket, bufs: list[memoryview]) -> None:
        """Write ``bufs`` (memoryviews) until done or the socket is full; trims ``bufs`` in place."""
        perf = self._perf
        inject = self._inject
        while bufs:
            if inject.socket_failures and inject.maybe_fail_socket(sock, "write"):
                perf.msgr_injected_failures += 1
            try:
                n = sock.sendmsg(bufs[:IOV_MAX] if len(bufs) > IOV_MAX else bufs)
            except (BlockingIOError, InterruptedError):
                perf.msgr_eagain += 1
                return
            except OSError as exc:
                self._socket_error(exc, "write")
                return
            perf.msgr_send_calls += 1
            perf.msgr_send_bytes += n
            i, n = _written_prefix(bufs, n)
            if i:
                del bufs[:i]
            if n:
                bufs[0] = bufs[0][n:]
                perf.msgr_eagain += 1
                return  # a short write: the socket buffer is full


def _written_prefix(bufs: Sequence[Sized], n: int) -> tuple[int, int]:
    """How a write of ``n`` bytes splits ``bufs``: whole buffers written, and bytes into the next one."""
    i = 0
    for b in bufs:
        ln = len(b)
        if n < ln:
            break
        n -= ln
        i += 1
    return i, n
