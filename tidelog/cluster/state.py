"""The supervisor's state file, ``<data dir>/state.json``: its PID, etcd's endpoints and every
broker's PID and ports, rewritten atomically (write a temporary file, then rename over) on each
change, so a reader never sees half of it. Tools and tests read it; commands go through the
control socket (:mod:`.control`).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Final

STATE_FILE: Final = "state.json"


class StateFile:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self._lock = threading.Lock()  # watcher threads write too

    def write(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(state, indent=2) + "\n")
            os.replace(temporary, self.path)

    def read(self) -> dict[str, Any] | None:
        """The last state written, or ``None`` when there is none (or it is unreadable)."""
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def remove(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
