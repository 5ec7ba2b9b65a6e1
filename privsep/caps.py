"""Dropping the parent's privileges after the privileged helper is spawned.

Owns: `drop_parent_privileges(uid, gid, name)` -- switch to the unprivileged
identity `smcroute.identity` chose (supplementary groups, gid, uid), and in
every case end with no capabilities at all (bounding, permitted, effective,
inheritable, ambient) and no-new-privs.  Where switching user is impossible (a user namespace that
maps only root, for example) it stays uid 0 without capabilities and says so.

Must not: be called before the helper has its sockets (nothing privileged is
possible afterwards), or leave the process with any capability: it verifies
/proc/self/status and raises `PrivilegeError` if anything is left.
"""

from __future__ import annotations

import contextlib
import os

import prctl  # type: ignore[import-untyped, unused-ignore]

# securebits: NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP, NO_SETUID_FIXUP_LOCKED,
# KEEP_CAPS_LOCKED -- uid 0 can never regain capabilities through exec.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20


class PrivilegeError(Exception):
    """Privileges are still held."""


def _cap_status() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.startswith("Cap") or k == "NoNewPrivs":
                out[k] = int(v.strip(), 16)
    return out


def _drop_bounding_set() -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):  # needs CAP_SETPCAP; harmless if already gone
        with contextlib.suppress(OSError, ValueError):
            prctl.capbset_drop(cap)


def _clear_capabilities() -> None:
    """Empty the permitted, effective, inheritable (and so ambient) sets."""
    flags = [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED, prctl.CAP_INHERITABLE]
    # Dropping from permitted/inheritable also empties the ambient set (kernel invariant).
    prctl.set_caps((list(prctl.ALL_CAPS), flags, False))


def drop_parent_privileges(uid: int, gid: int, name: str) -> str:
    """Become user ID `uid`, group ID `gid` (called `name` in the log) with no
    capabilities; return a line for the log.

    Raises PrivilegeError if any capability is left afterwards.
    """
    prctl.set_no_new_privs(1)
    with contextlib.suppress(OSError):
        prctl.set_securebits(_SECUREBITS)  # needs CAP_SETPCAP; best effort
    # The bounding set can only shrink while CAP_SETPCAP is effective: do it
    # before the uid switch takes our capabilities away.
    _drop_bounding_set()
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
    _clear_capabilities()
    st = _cap_status()
    left = st.get("CapEff", 0) | st.get("CapPrm", 0) | st.get("CapInh", 0) | st.get("CapAmb", 0)
    if left or st.get("NoNewPrivs") != 1:
        raise PrivilegeError(f"could not drop all capabilities (left: {left:#x})")
    if switched and os.getuid() == uid:
        if uid == 0:
            return f"running as {name} with no capabilities"
        return f"running as {name}"
    return (
        f"user switch impossible ({why or 'uid unchanged'}); "
        f"running as uid {os.getuid()} with no capabilities"
    )
