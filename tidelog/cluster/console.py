"""The interactive console of ``tidelog cluster up``: stdlib ``cmd`` over readline (history kept
in the data dir, tab completion of commands and broker numbers). Each command is one call on
the :class:`~.supervisor.Supervisor`; a failure prints one line and the console goes on.
"""

from __future__ import annotations

import cmd
import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Final

from rich.console import Console
from rich.text import Text

from . import render
from .preflight import ClusterError
from .supervisor import Supervisor

HISTORY_FILE: Final = ".console_history"
HISTORY_LENGTH: Final = 1000
BROKER_ACTIONS: Final = ("list", "stop", "start", "restart", "kill")
TOPIC_ACTIONS: Final = ("list", "create")
GATEWAY_ACTIONS: Final = ("stop", "start")
PROMPT: Final = "tidelog> "
INTRO: Final = (
    "Commands: status, broker list, broker stop|start|restart|kill N, restart all, "
    "gateway stop|start, topic list, topic create NAME [PARTITIONS], help, quit "
    "(Ctrl-C or Ctrl-D quits too)."
)


class Notices:
    """Prints a notice (a broker died) from any thread at once, above the prompt, and redraws
    the prompt with whatever the operator had typed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.at_prompt = False
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self._lock:
            if self.at_prompt:
                sys.stdout.write("\r\x1b[K")
            self.console.print(Text(f"! {message}", "bold red"), soft_wrap=True)
            if self.at_prompt:
                sys.stdout.write(PROMPT + _readline().get_line_buffer())
            sys.stdout.flush()


class ClusterConsole(cmd.Cmd):
    prompt = PROMPT
    intro = INTRO

    def __init__(self, supervisor: Supervisor, console: Console, notices: Notices) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.out = console
        self.notices = notices
        self.history = supervisor.config.data_dir / HISTORY_FILE

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Until ``quit``, Ctrl-D or Ctrl-C (the caller then shuts the cluster down)."""
        load_history(self.history)
        try:
            self.cmdloop()
        except KeyboardInterrupt:
            self.out.print()
        finally:
            save_history(self.history)

    def preloop(self) -> None:
        self.notices.at_prompt = True

    def precmd(self, line: str) -> str:
        self.notices.at_prompt = False
        return line

    def postcmd(self, stop: bool, line: str) -> bool:
        self.notices.at_prompt = not stop
        return stop

    def emptyline(self) -> bool:
        return False  # cmd's default repeats the last command: never for `broker kill`

    def default(self, line: str) -> None:
        self.fail(f"unknown command {line.split()[0]!r}: try `help`")

    def fail(self, message: str) -> None:
        self.out.print(Text(message, "red"), soft_wrap=True)

    def attempt(self, action: Callable[[], str]) -> None:
        try:
            self.out.print(action(), soft_wrap=True)
        except ClusterError as exc:
            self.fail(str(exc))

    # --- commands ---------------------------------------------------------------------------

    def do_status(self, arg: str) -> None:
        """status: every broker (state, pid, ports, registration, partitions led), the
        controller, topics and leaderless partitions."""
        render.print_status(self.out, self.supervisor.status())

    def do_broker(self, arg: str) -> None:
        """broker list | broker stop N | broker start N | broker restart N | broker kill N
        (kill: SIGKILL, a crash on purpose)."""
        words = arg.split()
        if words == ["list"] or not words:
            self.out.print(render.brokers_table(self.supervisor.status()))
            return
        if len(words) != 2 or words[0] not in BROKER_ACTIONS[1:] or not words[1].isdigit():
            self.fail("usage: broker list | broker stop|start|restart|kill N")
            return
        actions = {
            "stop": self.supervisor.stop_broker,
            "start": self.supervisor.start_broker,
            "restart": self.supervisor.restart_broker,
            "kill": self.supervisor.kill_broker,
        }
        action, broker_id = actions[words[0]], int(words[1])
        self.attempt(lambda: action(broker_id))

    def do_restart(self, arg: str) -> None:
        """restart all: stop every broker, start them again, wait until all serve."""
        if arg.strip() != "all":
            self.fail("usage: restart all (one broker: broker restart N)")
            return
        self.attempt(self.supervisor.restart_all)

    def do_gateway(self, arg: str) -> None:
        """gateway stop | gateway start: the cluster's HTTP gateway (start waits for /ready)."""
        actions = {"stop": self.supervisor.stop_gateway, "start": self.supervisor.start_gateway}
        action = actions.get(arg.strip())
        if action is None:
            self.fail("usage: gateway stop | gateway start")
            return
        self.attempt(action)

    def do_topic(self, arg: str) -> None:
        """topic list | topic create NAME [PARTITIONS] (the cluster's default partitions and
        replication factor unless given)."""
        words = arg.split()
        if words in (["list"], []):
            self.out.print(render.topics_table(self.supervisor.topics()))
            return
        valid = words[:1] == ["create"] and len(words) in (2, 3)
        if not valid or (len(words) == 3 and not words[2].isdigit()):
            self.fail("usage: topic list | topic create NAME [PARTITIONS]")
            return
        partitions = int(words[2]) if len(words) == 3 else None
        self.attempt(lambda: self.supervisor.create_topic(words[1], partitions))

    def do_quit(self, arg: str) -> bool:
        """quit: stop every broker (gracefully) and etcd, then leave."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.out.print()
        return True

    # --- help and completion ----------------------------------------------------------------

    def get_names(self) -> list[str]:
        """The commands ``help`` lists and Tab completes: not ``EOF`` (Ctrl-D's handler)."""
        return [n for n in super().get_names() if n != "do_EOF"]

    def completenames(self, text: str, *ignored: object) -> list[str]:
        return [f"{name} " for name in super().completenames(text, *ignored)]

    def _ids(self, prefix: str) -> list[str]:
        return [str(i) for i in self.supervisor.slots if str(i).startswith(prefix)]

    def complete_broker(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) == 1:
            return _words(BROKER_ACTIONS, text, ends=("list",))
        if len(words) == 2 and words[1] != "list":
            return self._ids(text)
        return []

    def complete_restart(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return ["all"] if "all".startswith(text) and len(line[:begidx].split()) == 1 else []

    def complete_gateway(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if len(line[:begidx].split()) == 1:
            return _words(GATEWAY_ACTIONS, text, ends=GATEWAY_ACTIONS)
        return []

    def complete_topic(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if len(line[:begidx].split()) == 1:
            return _words(TOPIC_ACTIONS, text, ends=("list",))
        return []


def _words(words: tuple[str, ...], prefix: str, ends: tuple[str, ...]) -> list[str]:
    """The ``words`` starting with ``prefix``; those that take an argument with a space after
    them, so Tab leaves the cursor where the argument goes."""
    return [w if w in ends else f"{w} " for w in words if w.startswith(prefix)]


def _readline() -> ModuleType:
    """readline, imported only when the console runs: importing it changes how ``input()``
    behaves in every other command of the process (``tidelog produce``'s prompt)."""
    import readline

    return readline


def load_history(path: Path) -> None:
    readline = _readline()
    readline.set_history_length(HISTORY_LENGTH)
    with contextlib.suppress(OSError):  # the first session has no history yet
        readline.read_history_file(path)


def save_history(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only data dir: only the history is lost
        _readline().write_history_file(path)
