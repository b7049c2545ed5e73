"""Running a broker as a process: logging, uvloop, signals. ``tidelog serve`` and
``python -m tidelog.server`` both end here."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final

import uvloop

from tidelog.wire.errors import TidelogError

from .allocator import keep_large_allocations
from .broker import Broker
from .config import SETTINGS_DOC, BrokerConfig, ConfigError
from .limits import raise_descriptor_limit
from .log.powerloss import journaled_file_system

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the text format's fields: ``time`` (as asctime writes
    it), ``level``, ``component`` (the logger), ``message``; ``traceback`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "component": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    """One line per event: time, level, component, message (structured enough to grep), as
    text or (``log_format="json"``) as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # httpx logs every etcd request (keepalives each second) at INFO: only its warnings.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def serve(config: BrokerConfig, on_started: Callable[[Broker], None] | None = None) -> int:
    """Run a broker until SIGTERM or SIGINT, then shut down gracefully. Returns the exit code."""
    raise_descriptor_limit()
    keep_large_allocations()
    return uvloop.run(_serve(config, on_started))


async def _serve(config: BrokerConfig, on_started: Callable[[Broker], None] | None) -> int:
    # A test hook (tests/system power-loss runs), off unless $TIDELOG_TEST_POWERLOSS_JOURNAL.
    fs = None if config.in_memory else journaled_file_system(str(config.data_dir))
    broker = Broker(config, fs=fs)
    await broker.start()
    loop = asyncio.get_running_loop()
    stopping: asyncio.Task[None] | None = None

    def request_stop(signame: str) -> None:
        nonlocal stopping
        if stopping is None:
            logging.getLogger("tidelog.server").info("received %s", signame)
            stopping = asyncio.ensure_future(broker.stop())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    if on_started is not None:
        on_started(broker)
    try:
        await broker.wait_stopped()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if stopping is not None:
        try:
            await stopping
        except Exception:
            logging.getLogger("tidelog.server").exception("the broker did not stop cleanly")
            return 1
    return 0


def _banner(broker: Broker) -> None:
    """What the process prints once serving: the admin port first (when on), then the line
    tests and supervisors wait for, ending with the broker's address."""
    if broker.admin_address is not None:
        print(f"tidelog broker admin HTTP on {broker.admin_address}", flush=True)
    print(f"tidelog broker listening on {broker.address}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tidelog.server",
        description="Run a tidelog broker. Every setting can also come from a TIDELOG_<NAME> "
        "environment variable or a TOML file (--config).",
    )
    parser.add_argument("--config", help="TOML file with broker settings")
    for name, doc in SETTINGS_DOC.items():
        if name == "topic_defaults":
            continue
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=doc)
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config")
    try:
        config = BrokerConfig.load(overrides=args, config_file=config_file)
    except ConfigError as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    try:
        return serve(config, _banner)
    except TidelogError as exc:
        print(f"tidelog: cannot start the broker: {exc}", file=sys.stderr)
        return 1
