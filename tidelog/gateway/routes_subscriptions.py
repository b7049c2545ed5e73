"""Webhook subscriptions over HTTP: create, list, status, pause, resume, replay, delete
(docs/HTTP.md, "Webhook subscriptions")."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Response

from . import models as mo
from . import models_subscriptions as ms
from .routes_admin import ERRORS, State
from .webhooks_model import Definition

router = APIRouter(tags=["subscriptions"])
NamePath = Annotated[str, Path(min_length=1, max_length=200)]
BASE: Final = "/v1/subscriptions"
SUB_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **ERRORS,
    429: {"model": mo.ErrorBody, "description": "max_subscriptions reached"},
}


def to_model(d: Definition) -> ms.SubscriptionModel:
    return ms.SubscriptionModel(
        name=d.name,
        url=d.url,
        topic=d.topics[0] if d.topics else None,
        topic_pattern=d.pattern,
        start=ms.StartModel(kind=d.start.kind, value=d.start.value),
        format=d.format,
        headers=dict(d.headers),
        filter=ms.FilterModel(key_prefix=d.filter.key_prefix, headers=dict(d.filter.headers)),
        signed=d.secret is not None,
        dead_letter_topic=d.dead_letter_topic,
        state=d.state,
        ended_reason=d.ended_reason,
        generation=d.generation,
        created_ms=d.created_ms,
    )


@router.post(BASE, response_model=ms.SubscriptionModel, status_code=201, responses=SUB_ERRORS)
async def create(body: ms.CreateSubscription, gw: State) -> ms.SubscriptionModel:
    """Subscribe ``url`` to a topic or a topic pattern; every gateway on the same brokers
    serves it from now on (it is stored in the brokers)."""
    return to_model(await gw.webhooks.create(body))


@router.get(BASE, response_model=ms.SubscriptionList, responses=ERRORS)
async def list_all(gw: State) -> ms.SubscriptionList:
    return ms.SubscriptionList(subscriptions=[to_model(d) for d in gw.webhooks.all()])


@router.get(BASE + "/{name}", response_model=ms.SubscriptionStatus, responses=ERRORS)
async def status(name: NamePath, gw: State) -> ms.SubscriptionStatus:
    """The subscription, its committed position and lag per partition, and what this gateway
    has delivered of it."""
    wh = gw.webhooks
    d = wh.get(name)
    partitions = await wh.positions(d)
    runner = wh.runners.get(name)
    st = runner.deliverer.stats if runner is not None else None
    delivery = ms.DeliveryStatus(
        serving=runner is not None,
        owned_partitions=len(runner.workers) if runner is not None else 0,
        held_records=runner.held if runner is not None else 0,
        deliveries=st.deliveries if st else 0,
        failures=st.failures if st else 0,
        dead_letters=st.dead_letters if st else 0,
        filtered=st.filtered if st else 0,
        consecutive_failures=st.consecutive_failures if st else 0,
        last_success_ms=st.last_success_ms if st else None,
        last_error=st.last_error if st else None,
        last_error_ms=st.last_error_ms if st else None,
    )
    return ms.SubscriptionStatus(subscription=to_model(d), partitions=partitions, delivery=delivery)


@router.post(BASE + "/{name}/pause", response_model=ms.SubscriptionModel, responses=ERRORS)
async def pause(name: NamePath, gw: State) -> ms.SubscriptionModel:
    """Stop delivering (attempts in flight finish); the position is kept."""
    return to_model(await gw.webhooks.set_state(name, "paused"))


@router.post(BASE + "/{name}/resume", response_model=ms.SubscriptionModel, responses=ERRORS)
async def resume(name: NamePath, gw: State) -> ms.SubscriptionModel:
    return to_model(await gw.webhooks.set_state(name, "active"))


@router.post(BASE + "/{name}/replay", response_model=ms.SubscriptionModel, responses=ERRORS)
async def replay(name: NamePath, body: ms.ReplayRequest, gw: State) -> ms.SubscriptionModel:
    """Move the position to an offset or a time: records from there are delivered again."""
    return to_model(await gw.webhooks.replay(name, body))


@router.delete(BASE + "/{name}", status_code=204, responses=ERRORS)
async def delete(name: NamePath, gw: State) -> Response:
    """Stop and forget the subscription (its dead-letter topic stays)."""
    await gw.webhooks.delete(name)
    return Response(status_code=204)
