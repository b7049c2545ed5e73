"""The tidelog protocol, sans-IO: bytes in, typed messages out, and back.

No sockets and no asyncio: the broker (``tidelog.server``) and the client (``tidelog.client``)
both drive this codec. docs/PROTOCOL.md is the byte-level specification.
"""

from . import errors, messages
from .api import (
    API_SPECS,
    DEFAULT_BROKER_PORT,
    HANDSHAKE_VERSION,
    ApiKey,
    ApiSpec,
    api_of,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    negotiate_protocol,
    negotiate_versions,
    split_data,
    supported_versions,
)
from .compression import Compression
from .frame import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameFlags,
    FrameHeader,
    encode_frame,
    encode_frame_prefix,
)
from .records import (
    BatchAttributes,
    Record,
    RecordBatch,
    RecordBatchBuilder,
    build_batch,
    iter_batches,
    read_records,
    stamp_batch,
)

__all__ = [
    "API_SPECS",
    "DEFAULT_BROKER_PORT",
    "HANDSHAKE_VERSION",
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "ApiKey",
    "ApiSpec",
    "BatchAttributes",
    "Compression",
    "Frame",
    "FrameDecoder",
    "FrameFlags",
    "FrameHeader",
    "Record",
    "RecordBatch",
    "RecordBatchBuilder",
    "build_batch",
    "decode_request",
    "decode_response",
    "encode_error",
    "encode_frame",
    "encode_frame_prefix",
    "encode_request",
    "api_of",
    "encode_response",
    "errors",
    "iter_batches",
    "messages",
    "negotiate_protocol",
    "negotiate_versions",
    "read_records",
    "split_data",
    "stamp_batch",
    "supported_versions",
]
