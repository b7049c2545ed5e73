"""The control channel of a running supervisor: a unix socket, ``<data dir>/control.sock``
(only its owner can reach it: file permissions, no port, no token). One JSON line in, one
JSON line out, per connection:

    {"op": "status"}                         -> {"ok": true, "result": {...}}
    {"op": "broker", "action": "stop", "id": 2}
    {"op": "gateway", "action": "stop"}     (or "start")
    {"op": "restart-all"} | {"op": "topics"} | {"op": "down"}
                                             -> {"ok": false, "error": "why"}
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .preflight import ClusterError
from .supervisor import Supervisor

SOCKET_FILE: Final = "control.sock"
MAX_SOCKET_PATH: Final = 100
"""A unix socket path must fit ``sockaddr_un`` (108 bytes on Linux)."""
MAX_REQUEST: Final = 64 * 1024
REPLY_TIMEOUT_S: Final = 180.0
"""A command waits for brokers to stop and start: generous, but bounded."""


def socket_path(data_dir: Path) -> Path:
    path = data_dir.resolve() / SOCKET_FILE
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ClusterError(
            f"the data dir path is too long for a control socket ({path}): use a shorter --data-dir"
        )
    return path


def dispatch(supervisor: Supervisor, request: dict[str, Any]) -> Any:
    """Run one request; raises :class:`ClusterError` for a bad one."""
    match request:
        case {"op": "status"}:
            return supervisor.status()
        case {"op": "topics"}:
            return supervisor.topics()
        case {"op": "restart-all"}:
            return supervisor.restart_all()
        case {"op": "gateway", "action": "stop"}:
            return supervisor.stop_gateway()
        case {"op": "gateway", "action": "start"}:
            return supervisor.start_gateway()
        case {"op": "broker", "action": str(action), "id": int(broker_id)}:
            actions: dict[str, Callable[[int], str]] = {
                "stop": supervisor.stop_broker,
                "start": supervisor.start_broker,
                "restart": supervisor.restart_broker,
                "kill": supervisor.kill_broker,
            }
            if action not in actions:
                raise ClusterError(f"unknown broker action {action!r}")
            return actions[action](broker_id)
        case _:
            raise ClusterError(f"unknown request {request!r}")


class ControlServer:
    """Serves :func:`dispatch` on the socket, a thread per connection; ``on_down`` runs (on
    its own thread) after a ``down`` request has been answered."""

    def __init__(self, supervisor: Supervisor, on_down: Callable[[], None]) -> None:
        self.path = socket_path(supervisor.config.data_dir)
        self.path.unlink(missing_ok=True)  # left by a supervisor that died: we hold the lock
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST)
                try:
                    request = json.loads(line)
                    if request == {"op": "down"}:
                        reply: dict[str, Any] = {"ok": True, "result": "stopping the cluster"}
                    else:
                        reply = {"ok": True, "result": dispatch(supervisor, request)}
                except ClusterError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except ValueError:
                    reply = {"ok": False, "error": "a request is one JSON object on one line"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                self.wfile.flush()
                if request == {"op": "down"}:
                    threading.Thread(target=outer.on_down, daemon=True).start()

        self.on_down = on_down
        self.server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self.server.daemon_threads = True
        self.path.chmod(0o600)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)


def request(data_dir: Path, payload: dict[str, Any], timeout: float = REPLY_TIMEOUT_S) -> Any:
    """Send ``payload`` to the supervisor of ``data_dir``; its result, or :class:`ClusterError`
    with its error (or saying that no supervisor runs there)."""
    path = socket_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            raise ClusterError(
                f"no cluster is running from {data_dir} (nothing answers on {path}); "
                f"start one with `tidelog cluster up --data-dir {data_dir}`"
            ) from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        with sock.makefile("rb") as reply_file:
            try:
                line = reply_file.readline()
            except TimeoutError:
                raise ClusterError(f"the supervisor did not answer within {timeout:g}s") from None
    if not line:
        raise ClusterError("the supervisor closed the control socket without an answer")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ClusterError(str(reply.get("error")))
    return reply.get("result")
