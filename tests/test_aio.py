"""msgr.aio under the standard asyncio loop and uvloop: awaitable request/flush/shutdown, messages
delivered into the loop with backpressure through the dispatch throttle, and cancellation that
leaves nothing behind (pending requests, flush marks, throttles, messages).
"""
from __future__ import annotations

import asyncio

import pytest
import test_rpc
from test_flush import socket_nobody_listens_on
from test_messenger_loopback import MTest
from test_rpc import Echo

from msgr import EntityName, Policy, RpcClient
from msgr.aio import AsyncDispatcher, flush, request, shutdown
from msgr.errors import DispatcherClosed, RequestTimeout

OSD = EntityName.TYPE_OSD


def _loop_factories() -> list:
    params = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
        params.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:   # the test extras install it; without it only the standard loop runs
        params.append(pytest.param(None, id="uvloop",
                                   marks=pytest.mark.skip(reason="uvloop is not installed")))
    return params


@pytest.fixture(params=_loop_factories())
def run(request):
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""
    def _run(coro):
        with asyncio.Runner(loop_factory=request.param) as runner:
            return runner.run(coro)
    return _run


# the messengers of a test, shut down and waited for at teardown (the fixture of test_rpc)
world = test_rpc.world


async def _until(pred, what: str, timeout: float = 30.0) -> None:
    """Poll ``pred`` on the loop; the deadline only turns a hang into a failure."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


def test_request_and_flush_are_awaitable(world, run) -> None:
    server = world(EntityName.osd(0), 301, Policy.lossless_peer(), Echo())
    rpc = RpcClient(timeout=30)
    client = world(EntityName.osd(1), 302, Policy.lossless_peer(), rpc)

    async def main():
        conn = client.connect_to(OSD, server.get_myaddr())
        replies = await asyncio.gather(*(request(rpc, conn, MTest(i)) for i in range(100)))
        assert [r.ident for r in replies] == [i + 1000 for i in range(100)]
        for i in range(50):
            conn.send_message(MTest(500 + i, data=b"z" * 2000))
        assert await flush(conn, timeout=30) is True
        assert not conn._proto.outq.sent
    run(main())
    assert len(rpc) == 0


def test_cancelled_awaits_leave_nothing_behind(world, run) -> None:
    rpc = RpcClient()
    client = world(EntityName.osd(1), 311, Policy.lossless_peer(), rpc)

    async def main():
        with socket_nobody_listens_on() as addr:
            conn = client.connect_to(OSD, addr)
            req = asyncio.create_task(request(rpc, conn, MTest(1)))
            fl = asyncio.create_task(flush(conn))
            await _until(lambda: len(rpc) == 1 and conn._flushes, "the request and flush to register")
            req.cancel()
            fl.cancel()
            for t in (req, fl):
                with pytest.raises(asyncio.CancelledError):
                    await t
            await _until(lambda: len(rpc) == 0 and not conn._flushes, "the request and flush to go")
            assert await flush(conn, timeout=0.05) is False      # a timed-out flush goes too
            await _until(lambda: not conn._flushes, "the timed-out flush to go")
            with pytest.raises(RequestTimeout):
                await request(rpc, conn, MTest(2), timeout=0.05)
            assert len(rpc) == 0
    run(main())


def test_messages_flow_into_the_loop_with_backpressure(world, run) -> None:
    limit = 16 * 1024
    size = 2000

    async def main():
        inbox = AsyncDispatcher()
        server = world(EntityName.osd(0), 321, Policy.lossless_peer(), inbox, ms_dispatch_throttle_bytes=limit)
        client = world(EntityName.osd(1), 322, Policy.lossless_peer())
        conn = client.connect_to(OSD, server.get_myaddr())
        for i in range(200):
            conn.send_message(MTest(i, data=bytes(size)))
        # nobody consumes: the messenger stops reading once the untaken messages fill the throttle
        await _until(lambda: inbox.qsize() >= limit // (size + 8) - 1, "the throttle to fill")
        await asyncio.sleep(0.2)
        held = inbox.qsize()
        throttle = server.dispatch_throttle
        assert held * size <= limit + size, f"{held} messages queued past the dispatch throttle"
        assert 0 < throttle.current <= limit + size + 64
        got = []
        async for msg in inbox:
            got.append(msg.ident)
            if len(got) == 200:
                break
        assert got == list(range(200))
        await _until(lambda: throttle.current == 0, "every throttle to be given back")
        inbox.close()
    run(main())


def test_cancelled_get_loses_no_message_and_close_gives_throttles_back(world, run) -> None:
    async def main():
        inbox = AsyncDispatcher()
        server = world(EntityName.osd(0), 331, Policy.lossless_peer(), inbox)
        client = world(EntityName.osd(1), 332, Policy.lossless_peer())
        waiter = asyncio.create_task(inbox.get())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        conn = client.connect_to(OSD, server.get_myaddr())
        conn.send_message(MTest(1, data=bytes(100)))
        first = await asyncio.wait_for(inbox.get(), 30)
        assert first.ident == 1
        for i in range(2, 6):
            conn.send_message(MTest(i, data=bytes(100)))
        await _until(lambda: inbox.qsize() == 4, "four untaken messages")
        assert server.dispatch_throttle.current > 0
        inbox.close()
        assert server.dispatch_throttle.current == 0
        with pytest.raises(DispatcherClosed):
            await inbox.get()
        assert [m async for m in inbox] == []
    run(main())


def test_async_shutdown_does_not_block_the_loop(world, run) -> None:
    client = world(EntityName.osd(1), 341, Policy.lossless_peer())

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)
        t = asyncio.create_task(ticker())
        with socket_nobody_listens_on() as addr:
            conn = client.connect_to(OSD, addr)
            conn.send_message(MTest(1))
            start = ticks
            await shutdown(client, linger=0.5)     # lingers the whole 0.5 s: nothing can be sent
            assert ticks > start, "the loop was blocked while shutting down"
        t.cancel()
        assert not client.is_started()
    run(main())
