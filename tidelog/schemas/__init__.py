"""Schema logic without I/O: JSON Schema and Avro parsing, compatibility, validation, the
wire framing and the registry's log-replayed state. Used by the broker (validation on produce)
and by the registry behind the HTTP gateway (docs/REGISTRY.md).

Import the submodules (:mod:`.types`, :mod:`.compat`, :mod:`.state`, :mod:`.validation`,
:mod:`.framing`): this package imports nothing itself, so a broker that validates no topic
never loads fastavro or jsonschema.
"""
