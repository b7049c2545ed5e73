"""The import arrows of DESIGN.md's "Layout", checked on the source (AST, nothing imported).

``wire`` (and ``schemas``) stay sans-IO; ``client``, ``gateway`` and ``cluster`` never import the
server; the server uses only the client's connection and metadata layer; the server's request
core never imports the transport; ``etcd`` imports nothing of tidelog; the CLI reaches the wire
through the client. Imports count wherever they are: at the top, inside a function, under
``if TYPE_CHECKING:``; relative imports are resolved, and a name taken from a package (``from
tidelog.server import Broker``) counts as an import of the module the package took it from
(``tidelog.server.broker``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

import tidelog

ROOT: Final = Path(tidelog.__file__).parent
CORE: Final = "tidelog.server.core"
# The broker-to-broker traffic DESIGN.md allows: the client's connection and metadata layer.
SERVER_MAY_IMPORT_FROM_CLIENT: Final = (
    "tidelog.client.connection",
    "tidelog.client.cluster",
    "tidelog.client.errors",
    "tidelog.client.backoff",
    "tidelog.client.types",
)


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules under any of ``sources`` must not import under any of ``forbidden``, except
    under ``allowed``. Names match whole dotted parts: ``asyncio`` is not ``asyncio_x``."""

    id: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()

    def applies_to(self, module: str) -> bool:
        return _under(module, self.sources)

    def forbids(self, target: str) -> bool:
        return _under(target, self.forbidden) and not _under(target, self.allowed)


RULES: Final = (
    Rule(
        "wire-is-sans-io",
        ("tidelog.wire", "tidelog.schemas"),
        ("asyncio", "socket"),
        "wire and schemas are sans-IO: bytes in, typed objects out",
    ),
    Rule(
        "clients-never-import-the-server",
        ("tidelog.client", "tidelog.gateway", "tidelog.cluster", "tidelog.registry"),
        ("tidelog.server",),
        "client, gateway, registry and cluster talk to brokers over the wire only",
    ),
    Rule(
        "gateway-is-below-the-cli",
        ("tidelog.gateway",),
        ("tidelog.cli", "tidelog.cluster", "tidelog.testing"),
        "the gateway is a library the CLI, the cluster supervisor and the fixtures use",
    ),
    Rule(
        "server-uses-only-the-client-network-layer",
        ("tidelog.server",),
        ("tidelog.client",),
        "the server may use only the client's connection and metadata layer "
        f"({', '.join(SERVER_MAY_IMPORT_FROM_CLIENT)})",
        allowed=SERVER_MAY_IMPORT_FROM_CLIENT,
    ),
    Rule(
        "cli-goes-through-the-client",
        ("tidelog.cli",),
        ("tidelog.wire",),
        "the CLI takes wire names from tidelog.client, which re-exports them",
    ),
    Rule(
        "core-is-transport-free",
        (CORE,),
        ("tidelog.server.connection", "tidelog.server.broker", "tidelog.server.run", "socket"),
        "the request core does not know about the transport",
    ),
    Rule(
        "etcd-is-a-leaf",
        ("tidelog.etcd",),
        (
            "tidelog.wire",
            "tidelog.server",
            "tidelog.client",
            "tidelog.gateway",
            "tidelog.cli",
            "tidelog.cluster",
        ),
        "the etcd client stands alone, so the broker and the supervisor can both use it",
    ),
)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True, slots=True)
class Source:
    module: str  # tidelog.server.core.data; a package's __init__ is the package: tidelog.server
    path: str  # tidelog/server/core/data.py
    text: str
    is_package: bool = False

    @classmethod
    def synthetic(cls, module: str, text: str) -> Source:
        return cls(module, module.replace(".", "/") + ".py", text)


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    name: str  # the name it binds (for a package's re-exports)
    target: str  # the module imported, absolute


@dataclass(slots=True)
class Tree:
    """The modules of the package, and for each package the names its ``__init__`` takes from
    its own modules, so that a re-exported name resolves to the module it lives in."""

    modules: set[str] = field(default_factory=set)
    exports: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, sources: list[Source]) -> Tree:
        tree = cls(modules={s.module for s in sources})
        for s in sources:
            if s.is_package:
                found = imports(s, tree)
                tree.exports[s.module] = {
                    i.name: i.target for i in found if _under(i.target, (s.module,))
                }
        return tree

    def resolve(self, module: str, name: str) -> str:
        """What ``from module import name`` imports: a submodule, the module a package's
        ``__init__`` took the name from, or the module itself."""
        if f"{module}.{name}" in self.modules:
            return f"{module}.{name}"
        seen: set[str] = set()
        while name in self.exports.get(module, {}) and module not in seen:
            seen.add(module)
            module = self.exports[module][name]
        return module


def read_package(root: Path = ROOT) -> list[Source]:
    sources = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        relative = str(path.relative_to(root.parent))
        sources.append(Source(module, relative, path.read_text(), is_package))
    return sources


def imports(source: Source, tree: Tree) -> list[Import]:
    """Every import of ``source``, anywhere in it, resolved to an absolute module."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source.text)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, a.asname or a.name, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = source.module if source.is_package else source.module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found += [
                Import(node.lineno, a.asname or a.name, tree.resolve(base, a.name))
                for a in node.names
            ]
    return sorted(found, key=lambda i: i.line)


def violations(rule: Rule, source: Source, tree: Tree) -> list[str]:
    """One message per import of ``source`` that ``rule`` forbids: where, what, and why."""
    if not rule.applies_to(source.module):
        return []
    found = [
        f"{source.path}:{i.line}: {source.module} imports {i.target} ({rule.id}: {rule.why})"
        for i in imports(source, tree)
        if rule.forbids(i.target)
    ]
    return list(dict.fromkeys(found))  # `from x import a, b` is one import of x


SOURCES: Final = read_package()
TREE: Final = Tree.scan(SOURCES)


# -- the real tree ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_the_package_follows_the_arrows(rule: Rule) -> None:
    assert any(rule.applies_to(s.module) for s in SOURCES), f"{rule.id}: no module to check"
    found = [message for source in SOURCES for message in violations(rule, source, TREE)]
    assert not found, "\n".join(found)


# -- the checker itself, on synthetic modules ------------------------------------------------

RULE: Final = {rule.id: rule for rule in RULES}
CORE_MODULE: Final = f"{CORE}.fetching"

BROKEN = [
    ("wire-is-sans-io", "tidelog.wire.frame", "import asyncio", "asyncio"),
    ("wire-is-sans-io", "tidelog.wire.frame", "from asyncio import Queue", "asyncio"),
    ("wire-is-sans-io", "tidelog.wire.frame", "import asyncio.streams", "asyncio.streams"),
    ("wire-is-sans-io", "tidelog.wire.frame", "def f():\n    import socket", "socket"),
    ("wire-is-sans-io", "tidelog.schemas.avro", "from socket import socketpair", "socket"),
    (
        "clients-never-import-the-server",
        "tidelog.client.admin",
        "from tidelog.server.config import BrokerConfig",
        "tidelog.server.config",
    ),
    (
        "clients-never-import-the-server",
        "tidelog.client.admin",
        "from ..server import Broker",
        "tidelog.server.broker",
    ),
    (
        "clients-never-import-the-server",
        "tidelog.client.admin",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tidelog.server",
        "tidelog.server",
    ),
    (
        "clients-never-import-the-server",
        "tidelog.gateway.http",
        "async def f():\n    from tidelog import server",
        "tidelog.server",
    ),
    (
        "clients-never-import-the-server",
        "tidelog.gateway.routes_admin",
        "from ..server.config import BrokerConfig",
        "tidelog.server.config",
    ),
    (
        "gateway-is-below-the-cli",
        "tidelog.gateway.app",
        "from tidelog.cli import context",
        "tidelog.cli.context",
    ),
    (
        "clients-never-import-the-server",
        "tidelog.cluster.supervisor",
        "from tidelog.server.log import LogManager",
        "tidelog.server.log.manager",
    ),
    (
        "server-uses-only-the-client-network-layer",
        "tidelog.server.fetch",
        "from tidelog.client import Producer",
        "tidelog.client.producer",
    ),
    (
        "server-uses-only-the-client-network-layer",
        "tidelog.server.fetch",
        "import tidelog.client",
        "tidelog.client",
    ),
    (
        "server-uses-only-the-client-network-layer",
        "tidelog.server.log.manager",
        "from ...client.consumer import Consumer",
        "tidelog.client.consumer",
    ),
    (
        "core-is-transport-free",
        CORE_MODULE,
        "from tidelog.server.connection import Session",
        "tidelog.server.connection",
    ),
    ("core-is-transport-free", CORE_MODULE, "from ..broker import Broker", "tidelog.server.broker"),
    (
        "core-is-transport-free",
        CORE_MODULE,
        "from tidelog.server import Broker",
        "tidelog.server.broker",
    ),
    ("core-is-transport-free", CORE_MODULE, "from .. import run", "tidelog.server.run"),
    ("core-is-transport-free", CORE_MODULE, "import socket", "socket"),
    (
        "cli-goes-through-the-client",
        "tidelog.cli.topics",
        "from ..wire import errors",
        "tidelog.wire.errors",
    ),
]


@pytest.mark.parametrize(("rule_id", "module", "source", "target"), BROKEN)
def test_a_forbidden_import_is_named_with_its_line(
    rule_id: str, module: str, source: str, target: str
) -> None:
    synthetic = Source.synthetic(module, '"""A synthetic module."""\n\n' + source)
    line = synthetic.text.count("\n") + 1  # the import is on the last line
    rule = RULE[rule_id]
    assert violations(rule, synthetic, TREE) == [
        f"{synthetic.path}:{line}: {module} imports {target} ({rule_id}: {rule.why})"
    ]


ALLOWED = [
    ("wire-is-sans-io", "tidelog.wire.frame", "import asyncio_compat\nimport socketserver"),
    ("wire-is-sans-io", "tidelog.server.connection", "import asyncio\nimport socket"),
    ("clients-never-import-the-server", "tidelog.client.admin", "from tidelog.wire import api"),
    ("clients-never-import-the-server", "tidelog.cli.serve", "from tidelog.server import Broker"),
    ("gateway-is-below-the-cli", "tidelog.cli.serve", "from tidelog.gateway import create_app"),
    (
        "server-uses-only-the-client-network-layer",
        "tidelog.server.replica",
        "from tidelog.client.connection import Connection\n"
        "from tidelog.client import Cluster\n"
        "from ..client.errors import TidelogConnectionError",
    ),
    ("core-is-transport-free", CORE_MODULE, "import asyncio\nfrom tidelog.server.log import x"),
    ("core-is-transport-free", "tidelog.server.connection", "from .broker import Broker"),
    (
        "cli-goes-through-the-client",
        "tidelog.cli.topics",
        "from tidelog.client import ConfigSource",
    ),
]


@pytest.mark.parametrize(("rule_id", "module", "source"), ALLOWED)
def test_an_allowed_import_passes(rule_id: str, module: str, source: str) -> None:
    assert violations(RULE[rule_id], Source.synthetic(module, source), TREE) == []


def test_a_package_init_resolves_relative_imports_from_itself() -> None:
    init = Source("tidelog.client", "tidelog/client/__init__.py", "from .producer import P", True)
    assert [i.target for i in imports(init, TREE)] == ["tidelog.client.producer"]
    module = Source.synthetic("tidelog.wire.api", "from . import frame")
    assert [i.target for i in imports(module, TREE)] == ["tidelog.wire.frame"]
