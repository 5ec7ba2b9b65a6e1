"""The `-e` hook: started by the helper, at most MAX_HOOKS at once.

Owns spawning the command given on the helper's command line at start-up
with one validated action (`reload`, or `install` with `source` and `group`
in its environment), as uid 0 with only CAP_NET_ADMIN + CAP_NET_RAW (the
helper's ambient capabilities, which exec hands on: `conntrack` works) and
no-new-privs, stdin from /dev/null, in a session of its own; and reaping it,
logging a non-zero exit status.

Must not: take the command from the daemon, or wait for a hook.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # not from typing: see wire.py (the helper's RSS)
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_HOOKS = 16  # hook processes running at once; more are refused (EAGAIN)


class Hooks:
    def __init__(self, command: str, warn: Callable[[str], None]) -> None:
        self.command = command
        self.warn = warn
        self.running: dict[int, str] = {}  # pid -> action

    def start(self, action: str, env: tuple[tuple[str, str], ...]) -> int:
        """Start the hook; an errno (ENOENT without `-e`, EAGAIN when too many run)."""
        if not self.command:
            return errno.ENOENT
        if len(self.running) >= MAX_HOOKS:
            return errno.EAGAIN
        environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS")}
        environ.update(env)
        try:
            pid = os.posix_spawnp(
                self.command,
                [self.command, action],
                environ,
                setsid=True,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            )
        except OSError as e:
            return e.errno or errno.EIO
        self.running[pid] = action
        return 0

    def reap(self) -> None:
        for pid, action in list(self.running.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                del self.running[pid]
                if code := os.waitstatus_to_exitcode(status):
                    self.warn(f"hook {self.command} {action} exited with status {code}")
