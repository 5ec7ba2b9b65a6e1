"""Capabilities: the one place that drops, keeps and hands them on.

Owns, for the main process: `lock` then `keep_only` -- no-new-privs, locked
securebits, a bounding set of `keep`, then exactly `keep` left (effective
and permitted; none inheritable or ambient), verified in /proc/self/status
-- in two steps, because the main process switches user in between
(`smcroute.identity.drop_parent_privileges`); and for the privileged
helper, which is born with its capabilities and never handles any itself:
`exec_with(keep)`, the `preexec_fn` that leaves a child forked by root
(between fork and exec) with no-new-privs, locked securebits, a bounding
set of `keep` and `keep` as ambient capabilities -- the only way uid 0
keeps capabilities across exec under SECBIT_NOROOT, so that after exec it
holds exactly `keep` (effective, permitted, inheritable, ambient), and so
does the `-e` hook it starts -- and `check_child(pid, keep)`, which
verifies that in /proc/PID/status once the child has exec'd.

Must not: be called in the main process before the helper has its sockets
(nothing privileged is possible afterwards), or let a process continue with
more capabilities than asked: `keep_only` and `check_child` raise
`PrivilegeError` if anything more is left.
"""

from __future__ import annotations

from collections.abc import Callable

import prctl  # type: ignore[import-untyped, unused-ignore]

# securebits: NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP, NO_SETUID_FIXUP_LOCKED,
# KEEP_CAPS_LOCKED -- uid 0 can never regain capabilities through exec.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
HELPER_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW)  # all the privileged helper (and hook) holds
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2


class PrivilegeError(Exception):
    """Privileges are still held."""


def _cap_status(pid: int | str = "self") -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
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


def exec_with(keep: tuple[int, ...]) -> Callable[[], None]:
    """The `preexec_fn` that gives an exec'd child of root exactly `keep` (see
    the module docstring).  libc is loaded now, before the fork."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        lock(keep)
        prctl.set_caps((list(keep), prctl.CAP_INHERITABLE, True))
        for cap in keep:
            if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot raise ambient capabilities")

    return preexec


def check_child(pid: int, keep: tuple[int, ...]) -> list[str]:
    """Verify that process `pid`, exec'd with `exec_with(keep)`, holds exactly
    `keep`; warnings (a bounding set larger than `keep`)."""
    st, want = _cap_status(pid), sum(1 << c for c in keep)
    sets = [st.get(k, 0) for k in ("CapEff", "CapPrm", "CapInh", "CapAmb")]
    if sets != [want] * 4 or st.get("NoNewPrivs") != 1:
        left = " ".join(f"{s:#x}" for s in sets)
        raise PrivilegeError(f"capabilities are not exactly {want:#x} (eff prm inh amb: {left})")
    extra = bin(st.get("CapBnd", 0) & ~want).count("1")
    return [f"could not drop {extra} capabilities from the bounding set"] if extra else []
