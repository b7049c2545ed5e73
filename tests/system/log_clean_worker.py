"""The process the cleaner crash test SIGKILLs: opens a compacted log (recovering it), cleans
it until nothing is dirty, and prints a line at every read or write of the cleaner and at each
step of the swap, so the test can kill it at any of them."""

from __future__ import annotations

import sys

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.server.log import cleaner as cleaner_module
from tidelog.server.log.cleaner import LogCleaner
from tidelog.server.log.config import system_clock
from tidelog.server.log.files import Files
from tidelog.server.log.throttle import Throttler

CONFIG = TopicConfig(segment_bytes=16 * 1024, cleanup_policy="compact")


class Announcing(Throttler):
    def take(self, size: int) -> None:
        print("io", size, flush=True)


def main() -> None:
    log = PartitionLog.open(sys.argv[1], CONFIG)
    log.update_high_watermark(log.log_end_offset)
    print("ready", log.log_end_offset, flush=True)
    swap_in = cleaner_module.swap_in

    def announced_swap(*args: object) -> list[str]:
        print("swapping", flush=True)
        return swap_in(*args)  # type: ignore[arg-type]

    cleaner_module.swap_in = announced_swap  # type: ignore[assignment]
    cleaner = LogCleaner(lambda: [log], Files(), system_clock, throttle=Announcing(0, system_clock))
    while cleaner.clean_now(log) is not None:
        print("cleaned", flush=True)
    print("idle", flush=True)
    log.close()


if __name__ == "__main__":
    main()
