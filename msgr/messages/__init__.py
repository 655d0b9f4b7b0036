"""Message types. Importing this package registers every type it defines."""
from msgr.messages.ping import MPing

__all__ = ["MPing"]
