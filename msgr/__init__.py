"""pymsgr: Ceph AsyncMessenger (msgr v1) in Python."""
__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

from msgr.config import Config
from msgr.connection import Connection
from msgr.dispatcher import Dispatcher
from msgr.entity import EntityAddr, EntityName
from msgr.message import Message
from msgr.messenger import AsyncMessenger, Messenger
from msgr.policy import Policy
from msgr.rpc import RpcClient, reply_to

__all__ = ["__version__", "AsyncMessenger", "Config", "Connection", "Dispatcher", "EntityAddr", "EntityName",
           "Message",
           "Messenger", "Policy", "RpcClient", "reply_to"]
