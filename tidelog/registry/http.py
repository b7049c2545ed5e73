"""The Confluent Schema Registry REST API as an ASGI app, mounted by the HTTP gateway at
:data:`PREFIX` (so ``SchemaRegistryClient({"url": "http://host:8080/registry"})`` works).

Every answer is ``application/vnd.schemaregistry.v1+json``; errors are Confluent's
``{"error_code": <int>, "message": <str>}``. Bodies are read as JSON whatever their declared
content type (clients send ``application/vnd.schemaregistry.v1+json`` or plain JSON).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from tidelog.schemas.state import SchemaVersion
from tidelog.schemas.types import Compatibility, InvalidSchemaError, SchemaType
from tidelog.wire.errors import TidelogError

from . import errors as e
from .service import Registry, SchemaInput, parse_level
from .store import SchemaStore

PREFIX: Final = "/registry"
MEDIA_TYPE: Final = "application/vnd.schemaregistry.v1+json"
logger = logging.getLogger("tidelog.registry")
router = APIRouter()


class RegistryResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise e.RegistryError(50005, "Unrecognized request body: not JSON") from None
    if not isinstance(body, dict):
        raise e.RegistryError(e.INVALID_SCHEMA, "the request body must be a JSON object")
    return body


async def _schema_input(request: Request) -> SchemaInput:
    body = await _body(request)
    text = body.get("schema")
    if not isinstance(text, str):
        raise e.RegistryError(e.INVALID_SCHEMA, "Invalid schema: 'schema' must be a string")
    if body.get("references"):
        raise e.RegistryError(e.INVALID_SCHEMA, "Invalid schema: references are not supported")
    try:
        kind = SchemaType(str(body.get("schemaType") or "AVRO").upper())
    except ValueError:
        raise e.RegistryError(
            e.INVALID_SCHEMA, f"Invalid schema type {body.get('schemaType')!r}"
        ) from None
    return SchemaInput(text, kind)


def _version_body(v: SchemaVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schema": v.schema,
    }
    if v.schema_type is not SchemaType.AVRO:
        out["schemaType"] = v.schema_type.value
    return out


@router.get("/schemas/types")
async def schema_types() -> list[str]:
    return [t.value for t in SchemaType]


@router.get("/schemas/ids/{schema_id}")
async def schema_by_id(schema_id: int, request: Request) -> dict[str, Any]:
    kind, text, _ = await _registry(request).by_id(schema_id)
    out: dict[str, Any] = {"schema": text}
    if kind is not SchemaType.AVRO:
        out["schemaType"] = kind.value
    return out


@router.get("/schemas/ids/{schema_id}/schema")
async def raw_schema_by_id(schema_id: int, request: Request) -> Response:
    _, text, _ = await _registry(request).by_id(schema_id)
    return Response(text, media_type=MEDIA_TYPE)


@router.get("/schemas/ids/{schema_id}/subjects")
async def subjects_by_id(schema_id: int, request: Request) -> list[str]:
    _, _, uses = await _registry(request).by_id(schema_id)
    return sorted(
        {v.subject for v in uses if not v.deleted or _flag(request.query_params.get("deleted"))}
    )


@router.get("/schemas/ids/{schema_id}/versions")
async def versions_by_id(schema_id: int, request: Request) -> list[dict[str, Any]]:
    _, _, uses = await _registry(request).by_id(schema_id)
    deleted = _flag(request.query_params.get("deleted"))
    return [{"subject": v.subject, "version": v.version} for v in uses if deleted or not v.deleted]


@router.get("/subjects")
async def subjects(request: Request) -> list[str]:
    q = request.query_params
    return await _registry(request).subjects(q.get("subjectPrefix", ""), _flag(q.get("deleted")))


@router.post("/subjects/{subject}/versions")
async def register(subject: str, request: Request) -> dict[str, Any]:
    version = await _registry(request).register(subject, await _schema_input(request))
    return {"id": version.id}


@router.post("/subjects/{subject}")
async def lookup(subject: str, request: Request) -> dict[str, Any]:
    deleted = _flag(request.query_params.get("deleted"))
    found = await _registry(request).lookup(subject, await _schema_input(request), deleted)
    return _version_body(found)


@router.delete("/subjects/{subject}")
async def delete_subject(subject: str, request: Request) -> list[int]:
    permanent = _flag(request.query_params.get("permanent"))
    return await _registry(request).delete_subject(subject, permanent)


@router.get("/subjects/{subject}/versions")
async def versions(subject: str, request: Request) -> list[int]:
    deleted = _flag(request.query_params.get("deleted"))
    return await _registry(request).versions(subject, deleted)


@router.get("/subjects/{subject}/versions/{version}")
async def version(subject: str, version: str, request: Request) -> dict[str, Any]:
    deleted = _flag(request.query_params.get("deleted"))
    return _version_body(await _registry(request).version(subject, version, deleted))


@router.get("/subjects/{subject}/versions/{version}/schema")
async def version_schema(subject: str, version: str, request: Request) -> Response:
    found = await _registry(request).version(subject, version)
    return Response(found.schema, media_type=MEDIA_TYPE)


@router.delete("/subjects/{subject}/versions/{version}")
async def delete_version(subject: str, version: str, request: Request) -> int:
    permanent = _flag(request.query_params.get("permanent"))
    return await _registry(request).delete_version(subject, version, permanent)


@router.post("/compatibility/subjects/{subject}/versions/{version}")
async def compatibility(subject: str, version: str, request: Request) -> dict[str, Any]:
    return await _compatibility(subject, version, request)


@router.post("/compatibility/subjects/{subject}/versions")
async def compatibility_all(subject: str, request: Request) -> dict[str, Any]:
    return await _compatibility(subject, None, request)


async def _compatibility(subject: str, version: str | None, request: Request) -> dict[str, Any]:
    problems = await _registry(request).test(subject, version, await _schema_input(request))
    out: dict[str, Any] = {"is_compatible": not problems}
    if _flag(request.query_params.get("verbose")):
        out["messages"] = problems
    return out


@router.get("/config")
async def get_config(request: Request) -> dict[str, str]:
    level = await _registry(request).config(None, True)
    return {"compatibilityLevel": level.value}


@router.get("/config/{subject}")
async def get_subject_config(subject: str, request: Request) -> dict[str, str]:
    default = _flag(request.query_params.get("defaultToGlobal"))
    level = await _registry(request).config(subject, default)
    return {"compatibilityLevel": level.value}


@router.put("/config")
async def put_config(request: Request) -> dict[str, str]:
    return await _put_config(None, request)


@router.put("/config/{subject}")
async def put_subject_config(subject: str, request: Request) -> dict[str, str]:
    return await _put_config(subject, request)


async def _put_config(subject: str | None, request: Request) -> dict[str, str]:
    body = await _body(request)
    level: Compatibility = parse_level(body.get("compatibility"))
    await _registry(request).set_config(subject, level)
    return {"compatibility": level.value}


@router.delete("/config")
async def delete_config(request: Request) -> dict[str, str]:
    level = await _registry(request).delete_config(None)
    return {"compatibilityLevel": level.value}


@router.delete("/config/{subject}")
async def delete_subject_config(subject: str, request: Request) -> dict[str, str]:
    level = await _registry(request).delete_config(subject)
    return {"compatibilityLevel": level.value}


@router.get("/")
async def root() -> dict[str, str]:
    return {}


def _error(status: int, code: int, message: str) -> RegistryResponse:
    return RegistryResponse({"error_code": code, "message": message}, status_code=status)


def create_app(store: SchemaStore) -> FastAPI:
    """The registry over ``store`` (the caller starts and closes the store)."""
    app = FastAPI(
        title="tidelog schema registry",
        default_response_class=RegistryResponse,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.registry = Registry(store)
    app.include_router(router)

    async def on_registry(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, e.RegistryError)
        return _error(exc.status, exc.error_code, exc.message)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.status_code, str(exc.detail))

    async def on_broker(_: Request, exc: Exception) -> Response:
        if isinstance(exc, TimeoutError):
            return _error(500, e.OPERATION_TIMEOUT, "Operation timed out")
        if isinstance(exc, InvalidSchemaError):
            return _error(422, e.INVALID_SCHEMA, str(exc))
        logger.warning("registry store error: %s", exc)
        return _error(500, e.STORE_ERROR, f"Error in the backend data store: {exc}")

    async def on_validation(_: Request, exc: Exception) -> Response:
        return _error(422, 422, "Unprocessable request: a path or query value is malformed")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(e.RegistryError, on_registry)
    app.add_exception_handler(HTTPException, on_http)
    for cls in (TidelogError, ConnectionError, TimeoutError, InvalidSchemaError):
        app.add_exception_handler(cls, on_broker)
    return app
