"""The ASGI application: routes, error handlers, the body limit and the shared state's
lifespan. ``create_app(settings)`` is all a server (uvicorn, a test) needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tidelog import __version__
from tidelog import registry as schema_registry

from . import (
    models,
    queuesocket,
    routes_admin,
    routes_consumers,
    routes_queues,
    routes_records,
    routes_subscriptions,
    spec,
    ws,
)
from .errors import BodyLimitMiddleware, install_handlers
from .settings import GatewaySettings
from .state import Gateway

DESCRIPTION = (
    "REST and WebSocket access to tidelog: topics, produce, fetch, consumer groups, queues, "
    "cluster metadata and health. Every error is `{error_code, message}`. See docs/HTTP.md.\n\n"
    "**WebSockets** (OpenAPI 3 cannot declare them; JSON text frames, each client message "
    "with an `op` and an `id`, each answered by one frame with that `id`, or by "
    "`{type: error, id, error_code, message}`):\n\n"
    "- `/v1/ws`: stream topics and produce. Ops `subscribe`, `unsubscribe`, `produce`, "
    "`commit`; pushed `{type: records, id, records}`.\n"
    "- `/v1/queues/{group}/ws?topics=T[&topics=U]&prefetch=N&format=json|text|base64`: a "
    "queue's messages, pushed as `{type: messages, messages, lock_duration_ms}` (each message "
    "as in the lease answer, with its receipt), at most `prefetch` unsettled at once "
    "(`ws_queue_max_prefetch`). Ops `ack` (`receipts`), `nack` (`receipt`, `delay_ms`, "
    "`error`), `reject` (`receipt`, `reason`), `renew` (`receipt`), as their REST bodies; "
    "answers `acked`, `nacked`, `rejected`, `renewed`. What is not settled when the socket "
    "closes is delivered again at once."
)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway as an ASGI app; its clients connect to ``settings.bootstrap`` on first
    use."""
    settings = (settings or GatewaySettings()).validate()
    schemas = schema_registry.SchemaStore(settings.bootstrap, settings.request_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = Gateway.create(settings)
        app.state.gateway = gw
        gw.start()
        try:
            yield
        finally:
            await schemas.close()
            await gw.close()

    app = FastAPI(
        title="tidelog HTTP gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={422: {"model": models.ErrorBody, "description": "invalid request"}},
    )
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    modules = (
        routes_admin,
        routes_records,
        routes_consumers,
        routes_queues,
        routes_subscriptions,
        ws,
        queuesocket,
    )
    for module in modules:
        app.include_router(module.router)
    app.state.routes = [route for module in modules for route in module.router.routes]
    spec.install(app, settings)
    # The Confluent-compatible schema registry (docs/REGISTRY.md), its own error format.
    app.mount(schema_registry.PREFIX, schema_registry.create_app(schemas))
    return app
