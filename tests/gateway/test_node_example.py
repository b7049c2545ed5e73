"""The Node.js example (examples/node) passes its own tests, run by Node's test runner against a
real ``tidelog serve`` (broker and gateway) that the Node test starts from this virtualenv.

Node.js and npm come from apt in ``.ci/run``; without them this test is skipped locally and
fails under CI. ``npm ci`` installs the example's one package (``ws``) when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
BIN = Path(sys.executable).parent
NODE = shutil.which("node")
NPM = shutil.which("npm")
DEADLINE_S = 180.0

pytestmark = pytest.mark.skipif(
    (NODE is None or NPM is None) and not os.environ.get("CI"),
    reason="Node.js or npm is missing (apt-get install nodejs npm; .ci/run does, and under CI "
    "this test fails instead)",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["TIDELOG_BIN"] = str(BIN / "tidelog")
    env.pop("NODE_OPTIONS", None)
    return subprocess.run(
        args,
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def test_the_node_example_passes_its_tests() -> None:
    assert NODE is not None and NPM is not None, "node and npm are needed (see .ci/run)"
    version = _run(NODE, "--version").stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 18, f"Node.js 18+ is needed, not {version}"
    if not (EXAMPLE / "node_modules" / "ws" / "package.json").exists():
        installed = _run(NPM, "ci", "--no-audit", "--no-fund")
        assert installed.returncode == 0, installed.stdout + installed.stderr
    done = _run(NODE, "--test", "--test-reporter=tap")  # TAP: the summary lines below
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout and re.search(r"^# pass [1-9]", done.stdout, re.M), done.stdout
