"""Reading a broker's ``/metrics`` over HTTP (httpx) into plain numbers for ``status``,
``top`` and ``cluster health``.

The CLI finds the admin port with ``--admin HOST:PORT`` (``top`` takes several, comma-separated:
one per broker of a cluster); by default the ``--broker`` host and port 9644 (the broker's
default ``admin_port``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Final

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families

from .errors import CliError

DEFAULT_ADMIN_PORT: Final = 9644
PREFIX: Final = "tidelog_"

AdminOption = Annotated[
    str | None,
    typer.Option(
        "--admin",
        envvar="TIDELOG_ADMIN",
        help="The broker's admin HTTP port (/metrics), as host:port (top: several, "
        "comma-separated, one per broker); default: the --broker host and port 9644. "
        "Example: --admin 127.0.0.1:9644",
    ),
]


def admin_address(admin: str | None, broker: str) -> str:
    """``--admin`` if given, else the broker's host with port 9644."""
    if admin:
        return admin
    host = broker.rsplit(":", 1)[0] if ":" in broker else broker
    return f"{host}:{DEFAULT_ADMIN_PORT}"


@dataclass(slots=True)
class Scrape:
    """One scrape: ``samples[name][labels]`` with labels as a sorted tuple of pairs."""

    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def value(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get(PREFIX + name, {}).get(tuple(sorted(labels.items())), default)

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of ``name`` with its labels."""
        return [(dict(k), v) for k, v in self.samples.get(PREFIX + name, {}).items()]

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """``name``'s samples summed by the label values ``keys``."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for labels, value in self.series(name):
            out[tuple(labels.get(k, "") for k in keys)] += value
        return dict(out)


def merge(scrapes: list[Scrape]) -> Scrape:
    """Several brokers' scrapes as one: samples with the same name and labels added up (a
    topic's records in over its leaders, a group's lag from its coordinator, disk use over
    every replica)."""
    out = Scrape()
    for one in scrapes:
        for name, series in one.samples.items():
            merged = out.samples[name]
            for labels, value in series.items():
                merged[labels] = merged.get(labels, 0.0) + value
    return out


def parse(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape.samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return scrape


async def fetch(client: httpx.AsyncClient, admin: str) -> Scrape:
    """Scrape ``http://ADMIN/metrics``; :class:`CliError` naming the address if it fails."""
    url = f"http://{admin}/metrics"
    try:
        response = await client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot read metrics from {url}: {exc or type(exc).__name__} — is the broker's "
            "admin port on? (point --admin at it)"
        ) from None
    return parse(response.text)


def histogram_quantile(buckets: dict[str, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative ``{le: count}`` buckets, interpolated inside its bucket
    like PromQL's ``histogram_quantile``; ``None`` without observations."""
    bounds = sorted((float(le), count) for le, count in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower
