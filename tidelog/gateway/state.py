"""What every route shares: the settings, the broker clients, the consumer instances, the
queue members and the WebSocket accounting. One :class:`Gateway` per app, on
``app.state.gateway``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from .clients import Clients
from .instances import Instances
from .queues import QueueMembers
from .settings import GatewaySettings
from .webhooks import Webhooks


@dataclass(slots=True)
class SocketStats:
    """The WebSocket side: connections, subscriptions, queued bytes, stalled pumps."""

    connections: int = 0
    subscriptions: int = 0
    buffered_bytes: int = 0
    stalled: int = 0


@dataclass(slots=True)
class Gateway:
    settings: GatewaySettings
    clients: Clients
    instances: Instances
    webhooks: Webhooks
    queues: QueueMembers
    sockets: SocketStats = field(default_factory=SocketStats)

    @classmethod
    def create(cls, settings: GatewaySettings) -> Gateway:
        clients = Clients(settings)
        return cls(
            settings,
            clients,
            Instances(settings, settings.clock),
            Webhooks(settings, clients),
            QueueMembers(settings, settings.clock),
        )

    def start(self) -> None:
        self.instances.start()
        self.webhooks.start()
        self.queues.start()

    async def close(self) -> None:
        await self.webhooks.close()
        await self.instances.close()
        await self.queues.close()
        await self.clients.close()


def gateway(request: Request) -> Gateway:
    """The FastAPI dependency that hands a route the shared state."""
    state: Gateway = request.app.state.gateway
    return state
