"""Whether the daemon's main process can read its configuration.

The main process reads the configuration *after* dropping privileges, so a
file, include or folder that only root can read is a trap: at start-up it
would give a silently empty router.  This module owns the words for that
problem (which file, which user, how to fix it) and, for `smcrouted -F` run
as root, the check made as the daemon's user: a forked child takes that
user's IDs and parses the file exactly as the daemon would, then reports the
paths it was denied.

Must not: change the caller's identity (only the forked child does), or
decide what happens next (start-up fails, reload is rejected, -F warns: the
callers decide).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from collections.abc import Sequence

from smcroute.model import Problem


def user_name(uid: int) -> str:
    try:
        return f"'{pwd.getpwuid(uid).pw_name}' (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def denied(problems: Sequence[Problem]) -> list[str]:
    """The paths the parse was not allowed to read, in order, without repeats."""
    return list(dict.fromkeys(p.denied for p in problems if p.denied))


def explain(path: str, user: str) -> str:
    """One line: the file, the user, the fix."""
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        is_dir = False
    what = "folder" if is_dir else "file"
    mode = "o+rx" if is_dir else "o+r"
    return (
        f"{path}: the daemon's main process runs as {user} and cannot read this {what} "
        f"(Permission denied); make it readable by that user, for example "
        f"'chmod {mode} {path}' (or give it to that user's group with chgrp and chmod g+r"
        f"{'x' if is_dir else ''})"
    )


def check_as(path: str, uid: int, gid: int) -> list[str]:
    """Parse `path` as uid/gid (we are root); the paths that user may not read.

    Returns [] when the check itself cannot be made (fork or ID switch
    failed): -F then says nothing rather than something wrong.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            from smcroute.parser import parse_file

            _config, problems = parse_file(path)
            os.write(w, json.dumps(denied(problems)).encode())
            code = 0
        except BaseException:  # the child must exit, whatever happened
            pass
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    _pid, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return []
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        return []
    return [p for p in out if isinstance(p, str)]
