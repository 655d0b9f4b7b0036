"""Message types. Importing this package registers every type it defines."""
from msgr.messages.auth import MAuth, MAuthReply
from msgr.messages.mon import (
    MConfig,
    MMonCommand,
    MMonCommandAck,
    MMonGetVersion,
    MMonGetVersionReply,
    MMonMap,
    MMonSubscribe,
    MMonSubscribeAck,
    SubscribeItem,
)
from msgr.messages.monmap import MonInfo, MonMap
from msgr.messages.ping import MPing

__all__ = [
    "MPing", "MAuth", "MAuthReply", "MMonGetVersion", "MMonGetVersionReply", "MMonSubscribe",
    "MMonSubscribeAck", "MMonMap", "MMonCommand", "MMonCommandAck", "MConfig", "MonMap", "MonInfo",
    "SubscribeItem",
]
