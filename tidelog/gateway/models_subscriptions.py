"""Request and response bodies of the webhook subscription endpoints (docs/HTTP.md,
"Webhook subscriptions")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .formats import Format
from .models import Strict, TopicName

SubscriptionName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$", examples=["billing"])
]
HeaderMap = dict[Annotated[str, Field(min_length=1, max_length=256)], str]


class FilterModel(Strict):
    """Deliver only records that match every condition given (none: every record)."""

    key_prefix: str | None = Field(default=None, min_length=1)
    """The key's bytes start with this text's UTF-8 bytes (a null key never matches)."""
    headers: HeaderMap = Field(default_factory=dict)
    """For each name: the record has a header of that name whose value is exactly this text."""


class CreateSubscription(Strict):
    """A webhook subscription: ``topic`` or ``topic_pattern`` (a regular expression the whole
    topic name matches; topics created later are picked up), delivered to ``url``."""

    name: SubscriptionName
    url: str = Field(min_length=1, max_length=2048, examples=["http://127.0.0.1:9000/hook"])
    topic: TopicName | None = None
    topic_pattern: str | None = Field(default=None, min_length=1, max_length=1000)
    start: Literal["earliest", "latest", "offset", "time"] = "latest"
    offset: int | None = Field(default=None, ge=0)
    """With ``start: offset``: every partition starts there (clamped into its log)."""
    time: int | None = Field(default=None, ge=0)
    """With ``start: time``: ms since the epoch; each partition starts at its first record at
    or after it."""
    format: Format = Format.JSON
    headers: HeaderMap = Field(default_factory=dict)
    """Extra HTTP headers sent with every delivery."""
    filter: FilterModel = Field(default_factory=FilterModel)
    secret: str | None = Field(default=None, min_length=16, max_length=256)
    """Signs every body: ``X-Tidelog-Signature: sha256=<hex HMAC-SHA256 of the body>``."""
    dead_letter_topic: TopicName | None = None
    """Default: ``_tidelog_dlq.<name>``."""

    @model_validator(mode="after")
    def _check(self) -> CreateSubscription:
        if (self.topic is None) == (self.topic_pattern is None):
            raise ValueError("give exactly one of topic and topic_pattern")
        if (self.start == "offset") != (self.offset is not None):
            raise ValueError("offset goes with start: offset (and only with it)")
        if (self.start == "time") != (self.time is not None):
            raise ValueError("time goes with start: time (and only with it)")
        return self


class StartModel(Strict):
    kind: Literal["earliest", "offset", "time"]
    value: int


class SubscriptionModel(Strict):
    """A subscription as stored (the secret is never shown: ``signed`` says if there is
    one)."""

    name: str
    url: str
    topic: str | None
    topic_pattern: str | None
    start: StartModel
    format: Format
    headers: dict[str, str]
    filter: FilterModel
    signed: bool
    dead_letter_topic: str
    state: Literal["active", "paused", "ended"]
    ended_reason: str | None
    generation: int
    """Goes up with every replay."""
    created_ms: int


class SubscriptionList(Strict):
    subscriptions: list[SubscriptionModel]


class PartitionStatus(Strict):
    topic: str
    partition: int
    position: int | None
    """The committed position: the next offset to deliver (null before the first commit)."""
    end_offset: int
    lag: int | None


class DeliveryStatus(Strict):
    """Counted by the gateway that answers, since it started serving the subscription."""

    serving: bool
    """This gateway is a member of the subscription's group."""
    owned_partitions: int
    held_records: int
    deliveries: int
    failures: int
    dead_letters: int
    filtered: int
    consecutive_failures: int
    last_success_ms: int | None
    last_error: str | None
    last_error_ms: int | None


class SubscriptionStatus(Strict):
    subscription: SubscriptionModel
    partitions: list[PartitionStatus]
    delivery: DeliveryStatus


class ReplayRequest(Strict):
    """Move the position of every partition (or only ``topic``/``partition``) to ``offset``
    (clamped into the log) or to the first record at or after ``time`` (ms)."""

    offset: int | None = Field(default=None, ge=0)
    time: int | None = Field(default=None, ge=0)
    topic: TopicName | None = None
    partition: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ReplayRequest:
        if (self.offset is None) == (self.time is None):
            raise ValueError("give exactly one of offset and time")
        if self.partition is not None and self.topic is None:
            raise ValueError("partition goes with topic")
        return self
