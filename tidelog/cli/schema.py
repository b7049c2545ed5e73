"""``tidelog schema register|get|list|check|config``: the schema registry, through the HTTP
gateway's Confluent-compatible API (``--registry URL``, default the local gateway's
``/registry``; docs/REGISTRY.md)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

import httpx
import typer
from rich.table import Table

from . import context
from .errors import CliError, command
from .render import markup, print_json

REGISTRY_ENV: Final = "TIDELOG_REGISTRY"
DEFAULT_REGISTRY: Final = "http://127.0.0.1:8080/registry"
MEDIA_TYPE: Final = "application/vnd.schemaregistry.v1+json"

app = typer.Typer(
    name="schema",
    help="Schemas per subject, with versions and compatibility (Confluent's API; "
    "docs/REGISTRY.md).\n\n"
    "Example: `tidelog schema register orders-value order.avsc`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SubjectArgument = Annotated[
    str, typer.Argument(help="The subject. Example: orders-value", show_default=False)
]
FileArgument = Annotated[
    Path,
    typer.Argument(help="The schema file. Example: order.avsc", show_default=False, exists=True),
]
RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar=REGISTRY_ENV,
        help=f"The registry's URL (env {REGISTRY_ENV}). Example: --registry {DEFAULT_REGISTRY}",
    ),
]


class Kind(StrEnum):
    avro = "avro"
    json = "json"


class Level(StrEnum):
    none = "none"
    backward = "backward"
    backward_transitive = "backward_transitive"
    forward = "forward"
    forward_transitive = "forward_transitive"
    full = "full"
    full_transitive = "full_transitive"


TypeOption = Annotated[
    Kind | None,
    typer.Option(
        "--type",
        help="The schema language (default: by extension, .json is JSON). Example: --type json",
    ),
]


def _call(ctx: typer.Context, registry: str, method: str, path: str, body: Any = None) -> Any:
    """The registry's JSON answer; its error body becomes a :class:`CliError`."""
    timeout = context.settings(ctx).timeout
    try:
        with httpx.Client(base_url=registry, timeout=timeout, trust_env=False) as http:
            response = http.request(method, path, json=body, headers={"Content-Type": MEDIA_TYPE})
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the registry at {registry} ({exc}) — is `tidelog serve` or "
            f"`tidelog gateway` running? (point --registry or {REGISTRY_ENV} at it)"
        ) from None
    if response.status_code >= 400:
        try:
            error = response.json()
            text = f"{error['error_code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            text = f"HTTP {response.status_code}"
        raise CliError(text)
    return response.json()


def _body(file: Path, kind: Kind | None) -> dict[str, str]:
    if kind is None:
        kind = Kind.json if file.suffix == ".json" else Kind.avro
    return {"schema": file.read_text(), "schemaType": kind.value.upper()}


def _out(ctx: typer.Context, data: Any, text: str) -> None:
    if context.settings(ctx).json:
        print_json(data)
    else:
        context.stdout.print(text, soft_wrap=True)


@app.command("register")
@command
def register(
    ctx: typer.Context,
    subject: SubjectArgument,
    file: FileArgument,
    kind: TypeOption = None,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Register a schema under a subject (a new version if it is compatible).
    Example: `tidelog schema register orders-value order.avsc`"""
    answer = _call(ctx, registry, "POST", f"/subjects/{subject}/versions", _body(file, kind))
    _out(ctx, answer, f"{markup(subject)}: schema id {answer['id']}")


@app.command("get")
@command
def get(
    ctx: typer.Context,
    subject: SubjectArgument,
    version: Annotated[
        str, typer.Option(help="A version number, or latest. Example: --version 2")
    ] = "latest",
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Show one version of a subject: its id and schema.
    Example: `tidelog schema get orders-value --version 2`"""
    v = _call(ctx, registry, "GET", f"/subjects/{subject}/versions/{version}")
    _out(ctx, v, f"{markup(subject)} version {v['version']} (id {v['id']}): {markup(v['schema'])}")


@app.command("list")
@command
def list_(
    ctx: typer.Context,
    deleted: Annotated[
        bool, typer.Option(help="Include soft-deleted subjects. Example: --deleted")
    ] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """List the subjects and their versions. Example: `tidelog schema list --deleted`"""
    flag = "?deleted=true" if deleted else ""
    subjects = _call(ctx, registry, "GET", f"/subjects{flag}")
    rows = {s: _call(ctx, registry, "GET", f"/subjects/{s}/versions{flag}") for s in subjects}
    if context.settings(ctx).json:
        print_json(rows)
        return
    table = Table("subject", "versions")
    for s, versions in rows.items():
        table.add_row(markup(s), ", ".join(map(str, versions)))
    context.stdout.print(table)


@app.command("check")
@command
def check(
    ctx: typer.Context,
    subject: SubjectArgument,
    file: FileArgument,
    kind: TypeOption = None,
    version: Annotated[
        str, typer.Option(help="The version to check against. Example: --version 1")
    ] = "latest",
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Check a schema against a version of the subject at the subject's compatibility level;
    exits 1 when it is incompatible. Example: `tidelog schema check orders-value v2.avsc`"""
    path = f"/compatibility/subjects/{subject}/versions/{version}?verbose=true"
    answer = _call(ctx, registry, "POST", path, _body(file, kind))
    ok = bool(answer["is_compatible"])
    reasons = "".join(f"\n  {markup(m)}" for m in answer.get("messages", []))
    _out(ctx, answer, "compatible" if ok else f"[red]incompatible[/red]{reasons}")
    if not ok:
        raise typer.Exit(1)


@app.command("config")
@command
def config(
    ctx: typer.Context,
    subject: Annotated[
        str | None,
        typer.Argument(
            help="A subject (none: the global level). Example: orders-value", show_default=False
        ),
    ] = None,
    level: Annotated[
        Level | None, typer.Option(help="Set this level. Example: --level full")
    ] = None,
    registry: RegistryOption = DEFAULT_REGISTRY,
) -> None:
    """Show or set the compatibility level, global or of one subject.
    Example: `tidelog schema config orders-value --level full`"""
    path = "/config" if subject is None else f"/config/{subject}"
    if level is not None:
        answer = _call(ctx, registry, "PUT", path, {"compatibility": level.value.upper()})
        shown = answer["compatibility"]
    else:
        answer = _call(ctx, registry, "GET", path + ("?defaultToGlobal=true" if subject else ""))
        shown = answer["compatibilityLevel"]
    _out(ctx, answer, f"{markup(subject or 'global')}: {shown}")
