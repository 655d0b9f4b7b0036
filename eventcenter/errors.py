"""Errors raised by the event engine.

``eventcenter`` sits below ``msgr`` and must not import it, so these are
rooted at :class:`EventCenterError` (a ``RuntimeError``), not at
``msgr.errors.MsgrError``.
"""
from __future__ import annotations

__all__ = ["EventCenterError", "WrongThreadError", "CenterClosedError"]


class EventCenterError(RuntimeError):
    """Root of the errors the event engine raises on purpose."""


class WrongThreadError(EventCenterError):
    """An internal-thread-only method was called from a thread that does not own the center."""


class CenterClosedError(EventCenterError):
    """The center was closed: its poller is gone, or a waited-for call was dropped."""
