"""Capabilities: the one place that drops, keeps and hands them on.

Owns: `restrict(keep)` -- exactly the capabilities `keep` left (effective
and permitted; none inheritable or ambient, none beyond them in the
bounding set), locked securebits and no-new-privs, verified in
/proc/self/status -- in two steps, `lock` then `keep_only`, for the main
process, which switches user in between (`smcroute.identity.drop_parent_privileges`);
`ambient(on)` -- the privileged helper's two capabilities handed on to the
`-e` hook.

Must not: be called before the helper has its sockets (nothing privileged is
possible afterwards), or return with more capabilities than asked: it
raises `PrivilegeError` if anything more is left.
"""

from __future__ import annotations

import errno

import prctl  # type: ignore[import-untyped, unused-ignore]

TYPE_CHECKING = False  # not from typing: see wire.py (the helper's RSS)
if TYPE_CHECKING:
    from typing import Any

# securebits: NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP, NO_SETUID_FIXUP_LOCKED,
# KEEP_CAPS_LOCKED -- uid 0 can never regain capabilities through exec.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
HELPER_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW)  # all the privileged helper keeps
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 47, 2, 4
_libc: Any = None


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


def lock(keep: tuple[int, ...]) -> list[str]:
    """No-new-privs, locked securebits, a bounding set of `keep` (while
    CAP_SETPCAP is still effective).  Returns warnings."""
    warnings = []
    prctl.set_no_new_privs(1)
    try:
        prctl.set_securebits(_SECUREBITS)
    except OSError as e:
        warnings.append(f"cannot lock securebits: {e.strerror}")
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    failed = 0
    for cap in (c for c in range(last + 1) if c not in keep):
        try:
            prctl.capbset_drop(cap)
        except (OSError, ValueError):
            failed += 1
    if failed:
        warnings.append(f"could not drop {failed} capabilities from the bounding set")
    return warnings


def keep_only(keep: tuple[int, ...]) -> None:
    ep = [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED]
    others = [c for c in prctl.ALL_CAPS if c not in keep]
    # Dropping from permitted/inheritable also empties the ambient set (kernel invariant).
    prctl.set_caps((others, ep, False), (list(prctl.ALL_CAPS), prctl.CAP_INHERITABLE, False))
    st = _cap_status()
    left = (st.get("CapEff", 0) | st.get("CapPrm", 0)) & ~sum(1 << c for c in keep)
    left |= st.get("CapInh", 0) | st.get("CapAmb", 0)
    if left or st.get("NoNewPrivs") != 1:
        raise PrivilegeError(f"could not drop all capabilities (left: {left:#x})")


def restrict(keep: tuple[int, ...]) -> list[str]:
    """Keep exactly `keep` (see the module docstring); returns warnings."""
    warnings = lock(keep)
    keep_only(keep)
    return warnings


def ambient(on: bool) -> None:
    """Around spawning the hook: the helper's capabilities as ambient ones, the
    only way uid 0 keeps capabilities across exec under SECBIT_NOROOT."""
    global _libc
    if _libc is None:
        import ctypes  # only when a hook runs: keeps the helper small otherwise

        _libc = ctypes.CDLL(None, use_errno=True)
    prctl.cap_inheritable.net_admin = prctl.cap_inheritable.net_raw = on
    for cap in HELPER_CAPS if on else ():
        if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
            raise OSError(errno.EPERM, "cannot raise ambient capabilities for the hook")
    if not on:
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
