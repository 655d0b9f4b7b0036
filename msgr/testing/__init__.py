"""Test helpers that users may use too: a fault-injecting TCP proxy and network namespaces."""
from msgr.testing.faultproxy import Direction, FaultProxy
from msgr.testing.netns import NetnsError, NetnsPair

__all__ = ["Direction", "FaultProxy", "NetnsError", "NetnsPair"]
