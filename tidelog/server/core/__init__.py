"""The broker's transport-free request core (see :mod:`.dispatch`).

``types`` holds what the transport shares with it; ``durability`` the one write path;
``data`` and ``admin`` the APIs; ``state`` what they share.
"""

from .configs import parse_topic_configs
from .dispatch import BrokerCore
from .durability import Appended, WritePath
from .notifier import AppendNotifier
from .types import (
    DeadlineClock,
    LoopClock,
    Outcome,
    Reply,
    RequestCore,
    Session,
    finish,
    served,
)

__all__ = [
    "Appended",
    "AppendNotifier",
    "BrokerCore",
    "DeadlineClock",
    "LoopClock",
    "Outcome",
    "Reply",
    "RequestCore",
    "Session",
    "WritePath",
    "parse_topic_configs",
    "finish",
    "served",
]
