"""The event engine: epoll EventCenter, Worker threads and the NetworkStack.

Knows nothing of the messenger.  Clocks live in :mod:`eventcenter.clock`,
errors in :mod:`eventcenter.errors`.
"""
from .center import EventCenter
from .poller import EVENT_NONE, EVENT_READABLE, EVENT_WRITABLE
from .worker import NetworkStack, Worker

__all__ = ["EventCenter", "Worker", "NetworkStack", "EVENT_NONE", "EVENT_READABLE", "EVENT_WRITABLE"]
