"""The tidelog broker: network front, request handlers, log storage.

Depends on :mod:`tidelog.wire`, never on :mod:`tidelog.client`.
"""

from .broker import Broker
from .config import BrokerConfig, ConfigError

__all__ = ["Broker", "BrokerConfig", "ConfigError"]
