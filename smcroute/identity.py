"""Which user and group the unprivileged main process runs as (`-p`).

Owns the choice, made as root before the privilege drop:

- `-p USER[:GROUP]`: that user (a name, or a number even without an entry in
  the user database) and its primary group unless GROUP is given; a warning
  when the identity is shared (`nobody`, or other processes already running
  under that user ID), because any process of the same user ID can signal the
  main process: SIGTERM stops the router and removes its routes, SIGHUP
  reloads it.
- without `-p`: the `smcroute` user if it exists (the Debian package creates
  it), else a *dynamic identity* reserved for this daemon while it runs, as
  systemd's `DynamicUser=` does: a user ID and the group ID of the same
  number, taken from 60578-61183, the range systemd documents as used by
  nothing (above login.defs' UID_MAX 60000, below systemd's own dynamic
  users 61184-65519 and `nobody`); the first free one from a slot derived
  from the daemon's name (`-i`), so a restart usually gets the same number.
  A number is free when no user or group database entry has it (NSS, so LDAP
  too), no /etc/subuid or /etc/subgid range covers it, no running process
  uses it as any of its user or group IDs, and no other smcrouted starting at
  the same moment holds it (an abstract socket named after it, bound until
  the main process exits, so no file is left behind).

The switch itself is `drop_parent_privileges` (with `smcroute.privsep.caps`),
called after the helper has its sockets.

Must not: create files.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import zlib
from collections.abc import Callable, Iterable

from smcroute.privsep import caps
from smcroute.records import dataclass

DYNAMIC_FIRST = 60578
DYNAMIC_LAST = 61183
DEFAULT_USER = "smcroute"
SHARED_USERS = ("nobody",)


class IdentityError(Exception):
    """The requested user or group does not exist, or no dynamic ID is free."""


@dataclass
class Identity:
    """A user ID and group ID to switch to, how to name them, and a warning."""

    uid: int
    gid: int
    name: str  # for log lines: "smcroute:smcroute", "nobody:nogroup", "uid 60612, gid 60612"
    dynamic: bool = False
    warning: str | None = None
    lock: socket.socket | None = None  # held while the main process runs (dynamic only)

    def describe(self, ident: str) -> str:
        if self.dynamic:
            return (
                f"{self.name}, an identity of its own (no user {DEFAULT_USER!r}; "
                f"no other process uses these IDs while smcrouted -i {ident} runs)"
            )
        return self.name


def _db_user(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        return None


def _gid_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


def ids_in_use(proc: str = "/proc") -> tuple[set[int], set[int]]:
    """Every user ID and group ID (real, effective, saved, file system,
    supplementary) of the processes we can see, zombies aside (they can
    neither signal nor be signalled)."""
    uids: set[int] = set()
    gids: set[int] = set()
    try:
        entries = os.listdir(proc)
    except OSError:
        return uids, gids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            data = _read_all(f"{proc}/{entry}/status")
        except OSError:
            continue  # gone meanwhile, or unreadable
        # Only four of its ~55 lines matter: find them, no dict of all (start-up time).
        fields = {}
        for name in (b"State:", b"Uid:", b"Gid:", b"Groups:"):
            at = data.find(b"\n" + name)
            if at >= 0:
                start = at + 1 + len(name)
                end = data.find(b"\n", start)
                fields[name] = data[start : end if end >= 0 else len(data)]
        if fields.get(b"State:", b"").strip().startswith(b"Z"):
            continue
        try:
            uids.update(int(v) for v in fields.get(b"Uid:", b"").split())
            gids.update(int(v) for v in fields.get(b"Gid:", b"").split())
            gids.update(int(v) for v in fields.get(b"Groups:", b"").split())
        except ValueError:
            continue
    return uids, gids


def _read_all(path: str) -> bytes:
    """A whole file by plain system calls: a file object costs more than the
    read of a /proc status (start-up reads one per process)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 8192)]
        while chunks[-1]:
            chunks.append(os.read(fd, 8192))
        return b"".join(chunks)
    finally:
        os.close(fd)


def sub_ranges(path: str) -> list[range]:
    """The ranges of /etc/subuid or /etc/subgid (`name:start:count` lines)."""
    out: list[range] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    start = int(parts[1])
                    out.append(range(start, start + int(parts[2])))
    except OSError:
        pass
    return out


def _lock(n: int) -> socket.socket | None:
    """Hold `n` for this process: None if another smcrouted holds it already."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(f"\0smcrouted-dynamic-id-{n}")
    except OSError:
        s.close()
        return None
    return s


def _known(n: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(n)
            return True
        except KeyError:
            continue
        except OverflowError:
            return True
    return False


def dynamic(
    ident: str,
    *,
    in_use: tuple[set[int], set[int]] | None = None,
    reserved: Iterable[range] | None = None,
    known: Callable[[int], bool] = _known,
    lock: Callable[[int], socket.socket | None] | None = _lock,
) -> Identity:
    """A free user ID (and the group ID of the same number) for `ident`."""
    uids, gids = ids_in_use() if in_use is None else in_use
    if reserved is None:
        reserved = sub_ranges("/etc/subuid") + sub_ranges("/etc/subgid")
    taken = list(reserved)
    span = DYNAMIC_LAST - DYNAMIC_FIRST + 1
    first = zlib.crc32(ident.encode()) % span
    for k in range(span):
        n = DYNAMIC_FIRST + (first + k) % span
        if n in uids or n in gids or any(n in r for r in taken) or known(n):
            continue
        held = lock(n) if lock is not None else None
        if lock is not None and held is None:
            continue
        return Identity(n, n, f"uid {n}, gid {n}", dynamic=True, lock=held)
    raise IdentityError(
        f"no free user ID in {DYNAMIC_FIRST}-{DYNAMIC_LAST} for the main process; "
        f"create a user {DEFAULT_USER!r} or choose one with -p"
    )


def _shared_warning(uid: int, label: str, uids: set[int]) -> str | None:
    if label.split(":")[0] in SHARED_USERS or uid == 65534:
        why = f"{label} is shared by other services"
    elif uid in uids:
        why = f"other processes already run as {label.split(':')[0]}"
    else:
        return None
    return (
        f"{why}: any process running as that user can stop smcrouted (SIGTERM removes "
        "every route) or make it reload; without -p it runs under an identity of its own"
    )


def choose(
    user: str | None,
    group: str | None,
    ident: str,
    *,
    in_use: tuple[set[int], set[int]] | None = None,
    lock: bool = True,
) -> Identity:
    """The identity for `-p USER[:GROUP]` (both None without `-p`).

    Raises IdentityError for an unknown user or group, or when no dynamic ID
    is free.  With `lock=False` (to tell which identity a daemon would use,
    e.g. for `-F`) a dynamic ID is chosen but not held.
    """
    if in_use is None:
        in_use = ids_in_use()
    if user is None:
        pw = _db_user(DEFAULT_USER)
        if pw is None:
            return dynamic(ident, in_use=in_use, lock=_lock if lock else None)
    else:
        pw = _db_user(user)
        if pw is None and not (user.isdigit() and group is not None):
            more = " (a user ID without an entry needs :GROUP)" if user.isdigit() else ""
            raise IdentityError(f"unknown user {user!r}{more}")
    uid, gid, uname = (pw.pw_uid, pw.pw_gid, pw.pw_name) if pw else (int(user or 0), 0, user)
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            if not group.isdigit():
                raise IdentityError(f"unknown group {group!r}") from None
            gid = int(group)
        except OverflowError:
            gid = -1
    if not (0 <= uid <= 0xFFFFFFFE and 0 <= gid <= 0xFFFFFFFE):
        raise IdentityError(f"user or group ID out of range in -p {user}:{group}")
    label = f"{uname}:{_gid_name(gid)}"
    return Identity(uid, gid, label, warning=_shared_warning(uid, label, in_use[0]))


def drop_parent_privileges(uid: int, gid: int, name: str) -> str:
    """Become user ID `uid`, group ID `gid` (called `name` in the log) with no
    capabilities; return a line for the log.

    Raises PrivilegeError if any capability is left afterwards.  Where the
    switch is impossible (a user namespace that maps only root, for example)
    it stays uid 0 with nothing.
    """
    caps.lock(())  # the bounding set shrinks only before the uid switch
    why = ""
    switched = False
    try:
        if os.getuid() == uid and os.geteuid() == uid and os.getgid() == gid:
            switched = True
        else:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            switched = True
    except OSError as e:
        why = f"{e.strerror} switching to {name}"
    caps.keep_only(())
    if switched and os.getuid() == uid:
        if uid == 0:
            return f"running as {name} with no capabilities"
        return f"running as {name}"
    return (
        f"user switch impossible ({why or 'uid unchanged'}); "
        f"running as uid {os.getuid()} with no capabilities"
    )
