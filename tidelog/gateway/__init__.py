"""The HTTP gateway: REST and WebSocket access to tidelog for other languages and curl.

A client of the brokers like any other (it uses :mod:`tidelog.client`, never the server), so
it runs beside one broker (``tidelog serve``) or in front of a cluster (``tidelog gateway``).
docs/HTTP.md describes every endpoint; the app serves its OpenAPI spec at ``/openapi.json``.
"""

from .app import create_app
from .server import GatewayServer, bind
from .settings import DEFAULT_HTTP_PORT, LIMITS, GatewaySettings

__all__ = ["DEFAULT_HTTP_PORT", "LIMITS", "GatewayServer", "GatewaySettings", "bind", "create_app"]
