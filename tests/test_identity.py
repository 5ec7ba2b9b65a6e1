"""The main process's identity (smcroute.identity): no root needed."""

from __future__ import annotations

import os
import pwd
import socket
import zlib

import pytest

from smcroute import identity
from smcroute.identity import DYNAMIC_FIRST, DYNAMIC_LAST, IdentityError, choose, dynamic

SPAN = DYNAMIC_LAST - DYNAMIC_FIRST + 1
NOBODY = pwd.getpwnam("nobody")


def slot(ident: str) -> int:
    return DYNAMIC_FIRST + zlib.crc32(ident.encode()) % SPAN


def free(_n: int) -> bool:
    return False


def test_dynamic_range_is_the_one_nothing_else_allocates() -> None:
    # above login.defs' UID_MAX (60000) and systemd-homed/nspawn (60001-60577),
    # below systemd's DynamicUser= range (61184-65519) and nobody (65534)
    assert 60577 < DYNAMIC_FIRST <= DYNAMIC_LAST < 61184


def test_dynamic_is_stable_per_name_and_differs_between_names() -> None:
    a = dynamic("smcroute", in_use=(set(), set()), reserved=[], known=free, lock=None)
    b = dynamic("smcroute", in_use=(set(), set()), reserved=[], known=free, lock=None)
    c = dynamic("other", in_use=(set(), set()), reserved=[], known=free, lock=None)
    assert a.uid == a.gid == b.uid == slot("smcroute") and c.uid == slot("other") != a.uid
    assert a.dynamic and a.name == f"uid {a.uid}, gid {a.uid}"
    assert "an identity of its own" in a.describe("smcroute")


def test_dynamic_skips_every_kind_of_taken_id() -> None:
    n = slot("x")
    nxt = [DYNAMIC_FIRST + (n - DYNAMIC_FIRST + k) % SPAN for k in range(6)]
    got = dynamic(
        "x",
        in_use=({nxt[0]}, {nxt[1]}),  # a process's user ID, another's group ID
        reserved=[range(nxt[2], nxt[2] + 1)],  # an /etc/subuid range
        known=lambda i: i == nxt[3],  # a user or group database entry
        lock=lambda i: None if i == nxt[4] else socket.socket(socket.AF_UNIX),  # held
    )
    assert got.uid == got.gid == nxt[5]
    assert got.lock is not None
    got.lock.close()


def test_dynamic_wraps_around_and_says_when_nothing_is_free() -> None:
    every = set(range(DYNAMIC_FIRST, DYNAMIC_LAST + 1))
    last_free = (every - {DYNAMIC_FIRST}, set())
    assert dynamic("y", in_use=last_free, reserved=[], known=free, lock=None).uid == DYNAMIC_FIRST
    with pytest.raises(IdentityError, match=r"no free user ID .* create a user 'smcroute'"):
        dynamic("y", in_use=(every, set()), reserved=[], known=free, lock=None)


def test_the_lock_keeps_a_second_daemon_off_the_same_id() -> None:
    first = identity._lock(DYNAMIC_FIRST)
    assert first is not None
    try:
        assert identity._lock(DYNAMIC_FIRST) is None
    finally:
        first.close()
    again = identity._lock(DYNAMIC_FIRST)
    assert again is not None
    again.close()


def test_ids_in_use_sees_this_process() -> None:
    uids, gids = identity.ids_in_use()
    assert os.getuid() in uids and os.getgid() in gids


def test_sub_ranges(tmp_path: os.PathLike[str]) -> None:
    p = os.path.join(tmp_path, "subuid")
    with open(p, "w") as f:
        f.write("alice:100000:65536\nbroken line\nbob:60600:10\n")
    assert identity.sub_ranges(p) == [range(100000, 165536), range(60600, 60610)]
    assert identity.sub_ranges(os.path.join(tmp_path, "missing")) == []


def test_default_without_smcroute_user_is_dynamic(monkeypatch: pytest.MonkeyPatch) -> None:
    real = identity._db_user
    monkeypatch.setattr(identity, "_db_user", lambda u: None if u == "smcroute" else real(u))
    who = choose(None, None, "smcroute", lock=False)
    assert who.dynamic and who.warning is None and who.lock is None
    assert DYNAMIC_FIRST <= who.uid <= DYNAMIC_LAST


def test_nobody_is_possible_with_a_warning() -> None:
    who = choose("nobody", None, "smcroute", in_use=(set(), set()))
    assert (who.uid, who.gid, who.dynamic) == (NOBODY.pw_uid, NOBODY.pw_gid, False)
    assert who.name.startswith("nobody:")
    assert who.warning and "shared by other services" in who.warning
    assert "can stop smcrouted" in who.warning


def test_a_user_other_processes_run_as_gets_a_warning() -> None:
    root = choose("root", None, "smcroute", in_use=({0}, {0}))
    assert root.warning and "other processes already run as root" in root.warning


def test_explicit_user_and_group() -> None:
    who = choose(str(NOBODY.pw_uid), "0", "smcroute", in_use=(set(), set()))
    assert (who.uid, who.gid) == (NOBODY.pw_uid, 0)
    # a number without a database entry works when the group is given too
    n = choose("60999", "60999", "smcroute", in_use=(set(), set()))
    assert (n.uid, n.gid, n.name) == (60999, 60999, "60999:60999") and n.warning is None


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("no-such-user-x", None, "unknown user 'no-such-user-x'"),
        ("60999", None, "needs :GROUP"),
        ("nobody", "no-such-group-x", "unknown group 'no-such-group-x'"),
        ("99999999999", "1", "out of range"),
        ("nobody", "99999999999", "out of range"),
    ],
)
def test_bad_users_and_groups_are_clear_errors(user: str, group: str | None, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        choose(user, group, "smcroute", in_use=(set(), set()))


def test_ids_in_use_reads_every_status_whole(tmp_path: os.PathLike[str]) -> None:
    """Every ID of live processes, a long Groups line read to its end; zombies,
    vanished processes and other entries skipped."""
    many = " ".join(str(70000 + i) for i in range(3000))  # a status of ~20 KiB
    statuses = {
        "1": "Name:\tinit\nState:\tS (sleeping)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n",
        "22": f"Name:\tx\nState:\tR\nUid:\t5\t6\t7\t8\nGid:\t9\t10\t11\t12\nGroups:\t{many}\n",
        "333": "Name:\tz\nState:\tZ (zombie)\nUid:\t40\t40\t40\t40\nGid:\t41\t41\t41\t41\n",
        "net": "Name:\tn\nUid:\t50\t50\t50\t50\n",
    }
    for entry, text in statuses.items():
        os.makedirs(os.path.join(tmp_path, entry))
        with open(os.path.join(tmp_path, entry, "status"), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(tmp_path, "4444"))  # gone meanwhile: no status
    uids, gids = identity.ids_in_use(os.fspath(tmp_path))
    assert uids == {0, 5, 6, 7, 8}
    assert gids == {0, 9, 10, 11, 12} | {70000 + i for i in range(3000)}
