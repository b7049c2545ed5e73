"""The Confluent-compatible schema registry: its state in the compacted topic ``_schemas``
(:mod:`.store`), its operations (:mod:`.service`) and its REST API (:mod:`.http`), served by
the HTTP gateway under ``/registry``. A client of the brokers: imports ``tidelog.client``,
``tidelog.wire`` and ``tidelog.schemas``, never the server (docs/REGISTRY.md)."""

from .errors import RegistryError
from .http import MEDIA_TYPE, PREFIX, create_app
from .service import Registry
from .store import SchemaStore

__all__ = ["MEDIA_TYPE", "PREFIX", "Registry", "RegistryError", "SchemaStore", "create_app"]
