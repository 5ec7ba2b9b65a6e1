"""Unit tests for smcroute.parser: directives, errors, includes, smcroutectl args."""

from __future__ import annotations

import os
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
from smcroute.parser import ParseError, parse_command, parse_file, parse_text

from smcroute.model import IPC, MGroup, MRoute, Phyint, Problem, Where


def ok(text: str):  # type: ignore[no-untyped-def]
    cfg, probs = parse_text(text, "t.conf")
    assert not [p for p in probs if not p.warning], probs
    return cfg


def problems(text: str, name: str = "t.conf") -> list[str]:
    return [str(p) for p in parse_text(text, name)[1]]


def errors(text: str) -> list[str]:
    return [str(p) for p in parse_text(text, "t.conf")[1] if not p.warning]


def warnings(text: str) -> list[str]:
    return [str(p) for p in parse_text(text, "t.conf")[1] if p.warning]


A = ip_address


# -- directives ---------------------------------------------------------------


def test_phyint_forms() -> None:
    cfg = ok(
        "phyint eth0\n"
        "phyint eth1 disable\n"
        "phyint eth2 enable mrdisc ttl-threshold 7\n"
        "phyint eth3 ttl-threshold 255 enable\n"
        "phyint wg+ mrdisc\n"
    )
    assert cfg.phyints == [
        Phyint("eth0", True, False, 1, Where("t.conf", 1)),
        Phyint("eth1", False, False, 1, Where("t.conf", 2)),
        Phyint("eth2", True, True, 7, Where("t.conf", 3)),
        Phyint("eth3", True, False, 255, Where("t.conf", 4)),
        Phyint("wg+", True, True, 1, Where("t.conf", 5)),
    ]


def test_mgroup_forms() -> None:
    cfg = ok(
        "mgroup from eth0 group 225.1.2.3\n"
        "mgroup group 225.1.2.4 from eth0\n"
        "mgroup from eth0 source 10.0.0.1 group 232.1.1.1\n"
        "mgroup from eth0 group 232.1.1.2 source 10.0.0.1\n"
        "mgroup from eth0 source 0.0.0.0 group 225.9.9.9\n"
        "mgroup from eth0 group 225.3.3.0/30\n"
        "ssmgroup from eth0 group 232.2.2.2 source 10.0.0.2\n"
        "mgroup from eth0 group ff0e::1:2\n"
        "mgroup from eth0 source 2001:db8::1 group ff3e::8000:1\n"
    )
    g = cfg.groups
    assert g[0] == MGroup("eth0", None, 0, A("225.1.2.3"), 32)
    assert g[1] == MGroup("eth0", None, 0, A("225.1.2.4"), 32)
    assert g[2] == MGroup("eth0", A("10.0.0.1"), 32, A("232.1.1.1"), 32)
    assert g[3] == MGroup("eth0", A("10.0.0.1"), 32, A("232.1.1.2"), 32)
    assert g[4] == MGroup("eth0", None, 0, A("225.9.9.9"), 32)
    assert g[5] == MGroup("eth0", None, 0, A("225.3.3.0"), 30)
    assert g[6] == MGroup("eth0", A("10.0.0.2"), 32, A("232.2.2.2"), 32)
    assert g[7] == MGroup("eth0", None, 0, A("ff0e::1:2"), 128)
    assert g[8] == MGroup("eth0", A("2001:db8::1"), 128, A("ff3e::8000:1"), 128)
    assert [x.where.line for x in g] == list(range(1, 10))


def test_mroute_forms_and_free_order() -> None:
    cfg = ok(
        "mroute from eth0 group 225.1.1.1 source 10.0.0.1 to eth1 eth2\n"
        "mroute to eth1 eth2 from eth0 source 10.0.0.2 group 225.1.1.1\n"
        "mroute source 10.0.0.3 to eth1 group 225.1.1.1 from eth0\n"
        "mroute from eth0 group 225.3.0.0/16 to eth1\n"
        "mroute from eth0 source 10.1.0.0/16 group 225.4.4.4 to eth1\n"
        "mroute from eth+ group 225.5.5.5 to eth9\n"
        "mroute from eth0 source :: group ff0e::5 to eth1\n"
        "mroute from eth0 source fc00::1 group ff0e::6 to eth1\n"
    )
    r = cfg.routes
    assert r[0] == MRoute("eth0", A("10.0.0.1"), 32, A("225.1.1.1"), 32, ("eth1", "eth2"))
    assert r[1] == MRoute("eth0", A("10.0.0.2"), 32, A("225.1.1.1"), 32, ("eth1", "eth2"))
    assert r[2] == MRoute("eth0", A("10.0.0.3"), 32, A("225.1.1.1"), 32, ("eth1",))
    assert r[3] == MRoute("eth0", None, 0, A("225.3.0.0"), 16, ("eth1",))
    assert r[4] == MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.4"), 32, ("eth1",))
    assert r[5].iif == "eth+" and r[5].is_template
    assert r[6] == MRoute("eth0", None, 0, A("ff0e::5"), 128, ("eth1",))
    assert r[7].source == A("fc00::1") and r[7].source_len == 128
    assert not r[0].is_template and r[3].is_template
    assert r[0].where == Where("t.conf", 1)


def test_comments_blank_lines_and_whitespace() -> None:
    cfg = ok(
        "# a comment\n"
        "\n"
        "   \t  \n"
        "mroute from eth0 group 225.1.1.1 to eth1#trailing\n"
        "\tphyint   eth0\tenable   # why not\n"
        "mgroup from eth0 group 225.2.2.2 # group 225.9.9.9\r\n"
        "#mroute from eth0 group 10.0.0.1 to eth1\n"
    )
    assert [r.where.line for r in cfg.routes] == [4]
    assert cfg.routes[0].oifs == ("eth1",)
    assert cfg.phyints[0].where.line == 5
    assert cfg.groups[0].group == A("225.2.2.2")


def test_empty_text() -> None:
    assert parse_text("") == parse_text("# only\n\n")
    cfg, probs = parse_text("")
    assert probs == [] and not cfg.routes and not cfg.groups and not cfg.phyints


def test_keywords_are_lower_case() -> None:
    assert errors("MROUTE from eth0 group 225.1.1.1 to eth1") == [
        "t.conf:1: unknown directive 'MROUTE'; expected phyint, mgroup, ssmgroup, mroute "
        "or include (did you mean 'mroute'?)"
    ]


# -- errors, with line numbers and wording ------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "mrout from eth0 group 225.1.1.1 to eth1",
            "unknown directive 'mrout'; expected phyint, mgroup, ssmgroup, mroute or include "
            "(did you mean 'mroute'?)",
        ),
        (
            "frobnicate",
            "unknown directive 'frobnicate'; expected phyint, mgroup, ssmgroup, mroute or include",
        ),
        (
            "mroute from eth0 group 10.1.1.1 to eth1",
            "10.1.1.1 is not a multicast group (IPv4 groups are 224.0.0.0/4)",
        ),
        (
            "mroute from eth0 group 2001:db8::1 to eth1",
            "2001:db8::1 is not a multicast group (IPv6 groups are ff00::/8)",
        ),
        (
            "mroute from eth0 group 225.1.1.1/3 to eth1",
            "group range 225.1.1.1/3 is wider than the IPv4 multicast range 224.0.0.0/4 "
            "(use /4 or longer)",
        ),
        (
            "mroute from eth0 group ff0e::/7 to eth1",
            "group range ff0e::/7 is wider than the IPv6 multicast range ff00::/8 "
            "(use /8 or longer)",
        ),
        (
            "mroute from eth0 group 225.1.1.1/33 to eth1",
            "group '225.1.1.1/33': prefix length /33 is out of range for IPv4 (0-32)",
        ),
        (
            "mroute from eth0 group ff0e::1/129 to eth1",
            "group 'ff0e::1/129': prefix length /129 is out of range for IPv6 (0-128)",
        ),
        (
            "mroute from eth0 group 225.1.1.1/x to eth1",
            "group '225.1.1.1/x': prefix length must be a number 0-32",
        ),
        (
            "mroute from eth0 group 225.1.1 to eth1",
            "group '225.1.1' is not an IPv4 or IPv6 address (e.g. 225.1.2.3 or ff0e::1)",
        ),
        (
            "mroute from eth0 group 225.001.1.1 to eth1",
            "group '225.001.1.1' is not an IPv4 or IPv6 address (e.g. 225.1.2.3 or ff0e::1)",
        ),
        (
            "mroute from eth0 group ff02::1%eth0 to eth1",
            "group 'ff02::1%eth0': scope/zone suffixes ('%...') are not supported",
        ),
        (
            "mroute from eth0 source 225.0.0.1 group 225.1.1.1 to eth1",
            "source 225.0.0.1 is a multicast address; the source must be the unicast address "
            "of the sender",
        ),
        (
            "mroute from eth0 source 10.0.0.1/40 group 225.1.1.1 to eth1",
            "source '10.0.0.1/40': prefix length /40 is out of range for IPv4 (0-32)",
        ),
        (
            "mroute from eth0 source fc00::1 group 225.1.1.1 to eth1",
            "source fc00::1 is IPv6 but group 225.1.1.1 is IPv4; both must be the same family",
        ),
        (
            "mroute from eth0 source 0.0.0.0 group ff0e::1 to eth1",
            "source 0.0.0.0 is IPv4 but group ff0e::1 is IPv6; both must be the same family",
        ),
        ("mroute from eth0 to eth1", "mroute without 'group'; expected 'group GROUP'"),
        ("mroute group 225.1.1.1 to eth1", "mroute without 'from'; expected 'from IFNAME'"),
        ("mroute from eth0 group 225.1.1.1", "mroute without 'to'; expected 'to OIF [OIF ...]'"),
        (
            "mroute from eth0 group 225.1.1.1 to",
            "mroute: 'to' needs at least one outbound interface",
        ),
        (
            "mroute from eth0 group 225.1.1.1 group 225.1.1.2 to eth1",
            "mroute: 'group' given more than once",
        ),
        (
            "mroute from eth0 group 225.1.1.1 to eth1 to eth2",
            "mroute: 'to' given more than once",
        ),
        ("mroute from", "mroute: 'from' must be followed by an interface name"),
        (
            "mroute from group 225.1.1.1 to eth1",
            "mroute: 'from' must be followed by an interface name, not the keyword 'group'",
        ),
        (
            "mroute from eth0 eth1 group 225.1.1.1 to eth2",
            "mroute: unexpected 'eth1'; expected source, group or to ('from' takes a single value)",
        ),
        (
            "mroute from eth0 group 225.1.1.1 to eth1 source",
            "mroute: 'source' must be followed by a source address",
        ),
        (
            "mroute from eth0 group 225.1.1.1 to eth1 enable",
            "",  # 'enable' is a phyint keyword; see below
        ),
        (
            "mgroup from eth0 group 225.1.1.1 to eth1",
            "mgroup: 'to' is a mroute option, not a mgroup one; expected the keyword 'source'",
        ),
        ("mgroup from eth0", "mgroup without 'group'; expected 'group GROUP'"),
        (
            "ssmgroup from eth0 group 232.1.1.1",
            "ssmgroup without 'source'; expected 'source ADDR' (use mgroup to join from any "
            "source)",
        ),
        (
            "mgroup from eth0 group 225.0.0.0/16",
            "mgroup 225.0.0.0/16 would join 65536 groups; at most 1024 per line (use a longer "
            "prefix)",
        ),
        (
            "mgroup from eth0 source 10.0.0.0/24 group 225.0.0.0/24",
            "mgroup 225.0.0.0/24 would join 65536 groups; at most 1024 per line (use a longer "
            "prefix)",
        ),
        ("phyint", "phyint must be followed by an interface name"),
        (
            "phyint eth0 enabled",
            "phyint: unknown option 'enabled'; expected enable, disable, mrdisc or "
            "ttl-threshold (did you mean 'enable'?)",
        ),
        ("phyint eth0 enable disable", "phyint: both 'enable' and 'disable' given; use one"),
        ("phyint eth0 mrdisc mrdisc", "phyint: 'mrdisc' given more than once"),
        (
            "phyint eth0 ttl-threshold 0",
            "ttl-threshold '0' is not a TTL; expected a number 1-255",
        ),
        (
            "phyint eth0 ttl-threshold 256",
            "ttl-threshold '256' is not a TTL; expected a number 1-255",
        ),
        (
            "phyint eth0 ttl-threshold",
            "phyint: 'ttl-threshold' must be followed by a TTL value (1-255)",
        ),
        (
            "phyint averyveryverylongname",
            "phyint interface 'averyveryverylongname' is too long (21 characters; Linux "
            "interface names have at most 15)",
        ),
        (
            "mroute from e/0 group 225.1.1.1 to eth1",
            "inbound interface 'e/0' contains '/', which interface names cannot",
        ),
        (
            "mroute from eth0 group 225.1.1.1 to e+th1",
            "outbound interface 'e+th1': '+' is only allowed as the last character (a wildcard)",
        ),
        ("include", "include must be followed by a file name or glob"),
        ("include a b", "include takes one file name or glob; unexpected 'b'"),
    ],
)
def test_error_messages(line: str, message: str) -> None:
    text = "# header\n\nmroute from eth0 group 225.9.9.9 to eth1\n" + line + "\n"
    cfg, probs = parse_text(text, "t.conf")
    errs = [p for p in probs if not p.warning]
    assert errs, line
    assert all(p.where == Where("t.conf", 4) for p in errs)
    if message:
        assert str(errs[0]) == f"t.conf:4: {message}"
    # every other line is still in the Config
    assert cfg.routes[0].where.line == 3


def test_keyword_of_another_directive_is_reported() -> None:
    assert errors("mroute from eth0 group 225.1.1.1 to eth1 enable") == [
        "t.conf:1: mroute: 'enable' is a phyint option, not a mroute one; expected the keyword "
        "'source' or another outbound interface (interfaces cannot be named like keywords)"
    ]
    assert errors("phyint eth0 mroute") == [
        "t.conf:1: phyint: unexpected 'mroute' (one directive per line); expected enable, "
        "disable, mrdisc or ttl-threshold"
    ]


def test_include_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smcroute.parser import files

    (tmp_path / "secret.conf").write_text("phyint x\n")
    real = files.read_file

    def deny(path: str) -> str:
        if path.endswith("secret.conf"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(files, "read_file", deny)
    cfg, probs = parse_file_with(tmp_path, "include secret.conf\nphyint y\n")
    assert [str(p) for p in probs] == [
        f"{tmp_path / 'top.conf'}:1: include: cannot read {tmp_path / 'secret.conf'}: "
        "Permission denied"
    ]
    assert [p.ifname for p in cfg.phyints] == ["y"]


def test_several_errors_on_one_line() -> None:
    errs = errors("mroute from e/0 source 225.0.0.1 group 10.0.0.1 to a/b")
    assert len(errs) == 4
    assert all(e.startswith("t.conf:1: ") for e in errs)


def test_valid_lines_survive_bad_ones() -> None:
    cfg, probs = parse_text(
        "mroute from eth0 group 225.1.1.1 to eth1\n"
        "bogus line\n"
        "mroute from eth0 group 10.0.0.1 to eth1\n"
        "mgroup from eth0 group 225.2.2.2\n"
        "phyint eth0 bogus\n"
        "phyint eth1\n",
        "t.conf",
    )
    assert [p.where.line for p in probs] == [2, 3, 5]
    assert [r.where.line for r in cfg.routes] == [1]
    assert [g.where.line for g in cfg.groups] == [4]
    assert [p.where.line for p in cfg.phyints] == [6]


# -- warnings -----------------------------------------------------------------


def test_host_bits_masked_with_warning() -> None:
    cfg, probs = parse_text(
        "mroute from eth0 group 225.1.1.7/24 to eth1\n"
        "mroute from eth0 source 10.1.2.3/16 group 225.5.5.5 to eth1\n"
        "mgroup from eth0 group ff0e::1:7/120\n",
        "t.conf",
    )
    assert cfg.routes[0].group == A("225.1.1.0") and cfg.routes[0].group_len == 24
    assert cfg.routes[1].source == A("10.1.0.0") and cfg.routes[1].source_len == 16
    assert cfg.groups[0].group == A("ff0e::1:0")
    assert [str(p) for p in probs] == [
        "t.conf:1: group 225.1.1.7/24 has host bits set; using 225.1.1.0/24",
        "t.conf:2: source 10.1.2.3/16 has host bits set; using 10.1.0.0/16",
        "t.conf:3: group ff0e::1:7/120 has host bits set; using ff0e::1:0/120",
    ]
    assert all(p.warning for p in probs)


def test_any_source_spellings() -> None:
    cfg = ok(
        "mroute from eth0 source 0.0.0.0 group 225.1.1.1 to eth1\n"
        "mroute from eth1 source 0.0.0.0/0 group 225.1.1.1 to eth2\n"
        "mroute from eth2 group 225.1.1.1 to eth3\n"
        "mroute from eth0 source :: group ff0e::1 to eth1\n"
        "mroute from eth1 source ::/0 group ff0e::1 to eth2\n"
    )
    assert all(r.source is None and r.source_len == 0 for r in cfg.routes)


def test_oif_equal_to_iif_is_a_warning() -> None:
    cfg, probs = parse_text("mroute from eth0 group 225.1.1.1 to eth1 eth0\n", "t.conf")
    assert cfg.routes[0].oifs == ("eth1", "eth0")
    assert [p.warning for p in probs] == [True]
    assert "eth0 is also the inbound interface (loop risk" in probs[0].message


def test_repeated_oif_is_a_warning_and_dropped() -> None:
    cfg, probs = parse_text("mroute from eth0 group 225.1.1.1 to eth1 eth1 eth2\n")
    assert cfg.routes[0].oifs == ("eth1", "eth2")
    assert probs[0].warning and "eth1 is listed more than once" in probs[0].message


def test_too_many_oifs() -> None:
    oifs32 = " ".join(f"o{i}" for i in range(32))
    assert ok(f"mroute from eth0 group 225.1.1.1 to {oifs32}").routes[0].oifs[-1] == "o31"
    (err,) = errors(f"mroute from eth0 group 225.1.1.1 to {oifs32} o32")
    assert err == (
        "t.conf:1: 33 outbound interfaces; a route can have at most 32 (the kernel's VIF limit)"
    )


def test_duplicate_route() -> None:
    text = (
        "mroute from eth0 group 225.1.1.1 source 10.0.0.1 to eth1\n"
        "mroute from eth0 group 225.2.2.2 to eth1\n"
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\n"
    )
    cfg, probs = parse_text(text, "t.conf")
    assert [str(p) for p in probs] == [
        "t.conf:3: mroute (10.0.0.1, 225.1.1.1) from eth0 is a duplicate of line 1"
    ]
    assert probs[0].warning
    assert [r.where.line for r in cfg.routes] == [1, 2]


def test_duplicate_route_with_other_oifs_replaces() -> None:
    cfg, probs = parse_text(
        "mroute from eth0 group 225.3.0.0/16 to eth1\n"
        "mroute from eth0 group 225.3.0.0/16 to eth2\n",
        "t.conf",
    )
    assert probs[0].warning and "duplicate of line 1" in probs[0].message
    assert [(r.where.line, r.oifs) for r in cfg.routes] == [(2, ("eth2",))]


def test_same_sg_other_inbound_interface_later_wins() -> None:
    cfg, probs = parse_text(
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth2\n"
        "mroute from eth1 source 10.0.0.1 group 225.1.1.1 to eth2\n",
        "t.conf",
    )
    assert [r.iif for r in cfg.routes] == ["eth1"]
    (p,) = probs
    assert p.warning and p.where.line == 2
    assert "already routed from eth0 on line 1" in p.message and "(eth1) wins" in p.message


def test_templates_with_other_inbound_interface_are_fine() -> None:
    cfg = ok("mroute from eth0 group 225.1.1.1 to eth2\nmroute from eth1 group 225.1.1.1 to eth2\n")
    assert len(cfg.routes) == 2


def test_duplicate_group_and_phyint() -> None:
    cfg, probs = parse_text(
        "mgroup from eth0 group 225.1.1.1\n"
        "mgroup group 225.1.1.1 from eth0\n"
        "phyint eth0 ttl-threshold 3\n"
        "phyint eth0 ttl-threshold 3\n"
        "phyint eth0 ttl-threshold 5\n",
        "t.conf",
    )
    assert all(p.warning for p in probs)
    assert [p.where.line for p in probs] == [2, 4, 5]
    assert len(cfg.groups) == 1
    assert [(p.ttl_threshold, p.where.line) for p in cfg.phyints] == [(5, 5)]


def test_link_local_group_route_warns() -> None:
    (w,) = warnings("mroute from eth0 group 224.0.0.5 to eth1")
    assert "link-local" in w and "never forwards" in w
    (w,) = warnings("mroute from eth0 group ff02::5 to eth1")
    assert "link-local" in w
    assert warnings("mgroup from eth0 group 224.0.0.251") == []


def test_wildcards() -> None:
    cfg = ok(
        "phyint eth+\n"
        "mgroup from vlan+ group 225.1.1.1\n"
        "mroute from eth+ group 225.1.1.1 to br+ wg0"
    )
    assert cfg.phyints[0].ifname == "eth+"
    assert cfg.groups[0].iif == "vlan+"
    assert cfg.routes[0].oifs == ("br+", "wg0")


def test_mgroup_range_limit() -> None:
    assert len(ok("mgroup from eth0 group 225.1.0.0/22").groups) == 1
    assert errors("mgroup from eth0 group 225.1.0.0/21")


def test_problems_print_as_file_line_message() -> None:
    (p,) = parse_text("\n\nmroute from eth0 group 1.2.3.4 to eth1\n", "smcroute.conf")[1]
    assert str(p).startswith("smcroute.conf:3: ")


# -- absurd input ---------------------------------------------------------------


def test_one_mib_line_is_an_error_and_fast() -> None:
    text = "mroute from eth0 group 225.1.1.1 to eth1\n" + "x" * (1 << 20) + "\nphyint eth0\n"
    t = time.perf_counter()
    cfg, probs = parse_text(text, "t.conf")
    assert time.perf_counter() - t < 2.0  # lark never sees it (it would take minutes)
    assert [str(p) for p in probs] == [
        "t.conf:2: line is 1048576 characters long; at most 4096 are allowed"
    ]
    assert len(cfg.routes) == 1 and len(cfg.phyints) == 1


def test_long_comment_line_counts_too() -> None:
    assert errors("#" * 5000)
    assert not errors("#" * 4000)


def test_binary_garbage(tmp_path: Path) -> None:
    f = tmp_path / "bin.conf"
    f.write_bytes(
        b"mroute from eth0 group 225.1.1.1 to eth1\n"
        b"\x7fELF\x02\x01\x01\x00\x00\x00\n"
        b"mroute from eth\xff group 225.1.1.2 to eth1\n"
        b"# comment with \xfe\xff is fine\n"
        b"phyint eth0\x00\n"
        b"mroute from eth0 group 225.1.1.3 to eth1\n"
    )
    cfg, probs = parse_file(str(f))
    assert [r.where.line for r in cfg.routes] == [1, 6]
    assert [p.where.line for p in probs] == [2, 3, 5]
    assert "control character 0x7f at column 1" in probs[0].message
    assert "not valid UTF-8 text (byte 0xff at column 16)" in probs[1].message
    assert "control character 0x00" in probs[2].message
    for p in probs:
        str(p).encode("utf-8")  # printable


def test_utf8_text_and_odd_spaces() -> None:
    (e,) = errors("mroute from eth0\u00a0group 225.1.1.1 to eth1")
    assert "U+00A0 (no-break space)" in e
    # a non-ASCII interface name is fine for Linux
    assert ok("mroute from ethé group 225.1.1.1 to eth1").routes[0].iif == "ethé"


def test_crlf_line_endings() -> None:
    cfg = ok("phyint eth0\r\nmroute from eth0 group 225.1.1.1 to eth1\r\n")
    assert cfg.routes[0].oifs == ("eth1",)


# -- files and includes ---------------------------------------------------------


def test_missing_top_level_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.conf")
    cfg, probs = parse_file(path)
    assert probs == [Problem(Where(path, 0), "No such file or directory")]
    assert str(probs[0]) == f"{path}: No such file or directory"
    assert not cfg.routes and not cfg.groups and not cfg.phyints


def test_top_level_directory_and_fifo(tmp_path: Path) -> None:
    _, probs = parse_file(str(tmp_path))
    assert probs[0].message == "Is a directory"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _, probs = parse_file(str(fifo))  # must not block
    assert probs[0].message == "not a regular file"


def test_include_alphabetical_relative_and_nested(tmp_path: Path) -> None:
    d = tmp_path / "smcroute.d"
    d.mkdir()
    (d / "b.conf").write_text("mroute from eth0 group 225.0.0.2 to eth1\n")
    (d / "a.conf").write_text(
        "mroute from eth0 group 225.0.0.1 to eth1\ninclude ../nested/*.conf\n"
    )
    (d / "c.txt").write_text("this is not included\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "n.conf").write_text("phyint eth9\n")
    top = tmp_path / "smcroute.conf"
    top.write_text(
        "mroute from eth0 group 225.0.0.0 to eth1\n"
        "include smcroute.d/*.conf\n"
        "include nothing-matches-*.conf\n"
        "mroute from eth0 group 225.0.0.3 to eth1\n"
    )
    cfg, probs = parse_file(str(top))
    assert probs == []
    assert [str(r.group) for r in cfg.routes] == [
        "225.0.0.0",
        "225.0.0.1",
        "225.0.0.2",
        "225.0.0.3",
    ]
    assert cfg.routes[1].where == Where(str(d / "a.conf"), 1)
    assert cfg.phyints[0].where.file.endswith("nested/n.conf")


def test_include_relative_to_symlink_not_target(tmp_path: Path) -> None:
    (tmp_path / "etc" / "smcroute.d").mkdir(parents=True)
    (tmp_path / "etc" / "smcroute.d" / "a.conf").write_text("phyint from-etc\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "smcroute.conf").write_text("include smcroute.d/*.conf\n")
    (tmp_path / "etc" / "smcroute.conf").symlink_to(tmp_path / "pkg" / "smcroute.conf")
    cfg, probs = parse_file(str(tmp_path / "etc" / "smcroute.conf"))
    assert probs == [] and cfg.phyints[0].ifname == "from-etc"


def test_parse_text_includes_relative_to_filename(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text("phyint x\n")
    cfg, probs = parse_text("include x.conf\n", str(tmp_path / "main.conf"))
    assert probs == [] and cfg.phyints[0].ifname == "x"


def test_include_absolute_path(tmp_path: Path) -> None:
    inc = tmp_path / "x.conf"
    inc.write_text("phyint eth3\n")
    cfg = ok(f"include {inc}\n")
    assert cfg.phyints[0].ifname == "eth3"


def test_include_problems_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("\nmroute from eth0 group 10.0.0.1 to eth1\n")
    top = tmp_path / "top.conf"
    top.write_text("include inc.conf\nbogus\n")
    _, probs = parse_file(str(top))
    # ordered by file, then line
    assert [str(p) for p in probs] == [
        f"{top}:2: unknown directive 'bogus'; expected phyint, mgroup, ssmgroup, mroute or include",
        f"{tmp_path / 'inc.conf'}:2: 10.0.0.1 is not a multicast group (IPv4 groups are "
        "224.0.0.0/4)",
    ]


def test_include_loop(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("phyint a\ninclude b.conf\n")
    (tmp_path / "b.conf").write_text("phyint b\ninclude a.conf\n")
    cfg, probs = parse_file(str(tmp_path / "a.conf"))
    (p,) = probs
    assert not p.warning
    assert p.where == Where(str(tmp_path / "b.conf"), 2)
    assert "include loop" in p.message and "a.conf is already being read" in p.message
    assert [x.ifname for x in cfg.phyints] == ["a", "b"]


def test_include_self(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include *.conf\nphyint a\n")
    cfg, probs = parse_file(str(tmp_path / "a.conf"))
    assert len(probs) == 1 and "include loop" in probs[0].message
    assert len(cfg.phyints) == 1


def test_include_depth_limit(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i:02}.conf").write_text(f"phyint e{i}\ninclude f{i + 1:02}.conf\n")
    cfg, probs = parse_file(str(tmp_path / "f00.conf"))
    (p,) = probs
    assert "nests too deeply (more than 16 levels)" in p.message
    assert p.where.file.endswith("f16.conf")
    assert len(cfg.phyints) == 17


def test_include_same_file_twice_is_not_a_loop(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text("mgroup from eth0 group 225.1.1.1\n")
    top = tmp_path / "top.conf"
    top.write_text("include x.conf\ninclude x.conf\n")
    cfg, probs = parse_file(str(top))
    assert [p.warning for p in probs] == [True]  # duplicate group
    assert len(cfg.groups) == 1


def parse_file_with(tmp: Path, text: str):  # type: ignore[no-untyped-def]
    top = tmp / "top.conf"
    top.write_text(text)
    return parse_file(str(top))


def test_include_non_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.conf")
    (tmp_path / "d.conf").mkdir()
    cfg, probs = parse_file_with(tmp_path, "include *.conf\nphyint x\n")
    msgs = [(p.warning, p.message) for p in probs]
    assert (True, f"include '*.conf': skipping directory {tmp_path / 'd.conf'}") in msgs
    assert (False, f"include: cannot read {tmp_path / 'p.conf'}: not a regular file") in msgs
    assert len(cfg.phyints) == 1


def test_include_dev_zero_is_refused(tmp_path: Path) -> None:
    _, probs = parse_file_with(tmp_path, "include /dev/zero\n")
    assert probs[0].message == "include: cannot read /dev/zero: not a regular file"


def test_include_binary_file(tmp_path: Path) -> None:
    (tmp_path / "blob.conf").write_bytes(bytes(range(256)) * 4)
    cfg, probs = parse_file_with(tmp_path, "include blob.conf\nphyint x\n")
    assert probs and all(not p.warning for p in probs)
    assert len(cfg.phyints) == 1


# -- smcroutectl arguments -------------------------------------------------------


def test_command_add() -> None:
    r = parse_command("add", ["eth0", "10.0.0.1", "225.1.1.1", "eth1", "eth2"])
    assert r == MRoute("eth0", A("10.0.0.1"), 32, A("225.1.1.1"), 32, ("eth1", "eth2"))
    assert r.where == IPC
    r = parse_command("add", ["eth0", "225.1.1.0/24", "eth1"])
    assert r == MRoute("eth0", None, 0, A("225.1.1.0"), 24, ("eth1",))
    r = parse_command("add", ["eth0", "::", "ff0e::1", "eth1"])
    assert r == MRoute("eth0", None, 0, A("ff0e::1"), 128, ("eth1",))


def test_command_remove() -> None:
    r = parse_command("remove", ["eth0", "10.0.0.1", "225.1.1.1"])
    assert isinstance(r, MRoute) and r.oifs == () and r.source == A("10.0.0.1")
    r = parse_command("remove", ["eth0", "225.1.1.1", "eth2"])
    assert isinstance(r, MRoute) and r.oifs == ("eth2",) and r.source is None


def test_command_join_leave() -> None:
    g = parse_command("join", ["eth0", "225.1.1.1"])
    assert g == MGroup("eth0", None, 0, A("225.1.1.1"), 32) and g.where == IPC
    g = parse_command("leave", ["eth0", "10.0.0.1", "232.1.1.0/30"])
    assert g == MGroup("eth0", A("10.0.0.1"), 32, A("232.1.1.0"), 30)


@pytest.mark.parametrize(
    ("cmd", "args", "message"),
    [
        (
            "add",
            [],
            "add: missing inbound interface and group; usage: add IIF [SOURCE[/LEN]] "
            "GROUP[/LEN] OIF [OIF ...]",
        ),
        (
            "add",
            ["eth0", "225.1.1.1"],
            "add: missing outbound interface; usage: add IIF "
            "[SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]",
        ),
        (
            "add",
            ["eth0", "eth1", "eth2"],
            "add: 'eth1' is not an address; usage: add IIF "
            "[SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]",
        ),
        (
            "add",
            ["eth0", "10.0.0.1", "eth1"],
            "add: 10.0.0.1 is not a multicast group (IPv4 groups are 224.0.0.0/4)",
        ),
        (
            "add",
            ["eth0", "225.1.1.1", "10.0.0.1", "eth1"],
            "add: 10.0.0.1 is not a multicast group (IPv4 groups are 224.0.0.0/4) (the source "
            "comes before the group: IIF SOURCE GROUP)",
        ),
        (
            "add",
            ["eth0", "fc00::1", "225.1.1.1", "eth1"],
            "add: source fc00::1 is IPv6 but group 225.1.1.1 is IPv4; both must be the same family",
        ),
        (
            "add",
            ["e/0", "225.1.1.1", "eth1"],
            "add: inbound interface 'e/0' contains '/', which interface names cannot",
        ),
        (
            "join",
            ["eth0", "225.1.1.1", "eth1"],
            "join: unexpected 'eth1'; usage: join IIF [SOURCE[/LEN]] GROUP[/LEN]",
        ),
        (
            "join",
            ["eth0", "225.0.0.0/8"],
            "join: 225.0.0.0/8 would join 16777216 groups; at most 1024",
        ),
        ("leave", ["eth0"], "leave: missing group; usage: leave IIF [SOURCE[/LEN]] GROUP[/LEN]"),
        ("show", ["eth0"], "unknown command 'show'; expected add, remove, join or leave"),
        (
            "add",
            ["eth0", "225.1.1.1", "a b"],
            "add: invalid argument 'a b'; usage: add IIF [SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]",
        ),
    ],
)
def test_command_errors(cmd: str, args: list[str], message: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_command(cmd, args)
    assert str(e.value) == message


def test_command_and_config_agree() -> None:
    a = parse_command("add", ["eth0", "10.0.0.1", "225.1.1.7/24", "eth1"])
    (b,) = ok("mroute from eth0 source 10.0.0.1 group 225.1.1.7/24 to eth1").routes
    assert a == b


def test_command_too_many_oifs() -> None:
    with pytest.raises(ParseError, match="at most 32"):
        parse_command("add", ["eth0", "225.1.1.1", *[f"o{i}" for i in range(33)]])


def test_shipped_example_config_is_valid_when_uncommented() -> None:
    example = Path(__file__).resolve().parent.parent / "etc" / "smcroute.conf"
    assert example.exists()
    text = "\n".join(
        line[1:] if line[1:2].isalpha() and line.startswith("#") else line
        for line in example.read_text().splitlines()
    )
    cfg, probs = parse_text(text, str(example))
    assert probs == []
    assert cfg.routes and cfg.groups and cfg.phyints


def test_command_warnings_are_the_ones_a_file_gets() -> None:
    from smcroute.parser import parse_command, parse_text

    cases = [
        (["a1", "10.0.0.1", "225.1.1.1", "a1", "a2"], "also the inbound interface"),
        (["a1", "10.0.0.1", "224.0.0.9", "a2"], "the kernel never forwards it"),
        (["a1", "225.1.1.1/24", "a2"], "has host bits set; using 225.1.1.0/24"),
    ]
    for args, needle in cases:
        warnings: list[str] = []
        parse_command("add", args, warnings)
        assert len(warnings) == 1 and needle in warnings[0], (args, warnings)
        src = f"source {args[1]} " if len(args) > 3 and "/" not in args[1] else ""
        grp = args[2] if src else args[1]
        oifs = " ".join(args[3:] if src else args[2:])
        _, problems = parse_text(f"mroute from {args[0]} {src}group {grp} to {oifs}\n", "f")
        assert [p.message for p in problems] == warnings
    assert parse_command("add", ["a1", "225.1.1.1", "a2"], (w := [])) and w == []


# -- origins (model.Where): one int per directive ------------------------------


def test_where_is_a_file_and_a_line() -> None:
    w = Where("/etc/smcroute.conf", 12)
    assert (w.file, w.line, str(w)) == ("/etc/smcroute.conf", 12, "/etc/smcroute.conf:12")
    assert repr(w) == "Where(file='/etc/smcroute.conf', line=12)"
    assert w == Where("/etc/smcroute.conf", 12) and hash(w) == hash(Where("/etc/smcroute.conf", 12))
    assert w != Where("/etc/smcroute.conf", 13) and w != Where("/etc/other.conf", 12)
    assert Where.of(int(w)) == w and type(Where.of(int(w))) is Where and Where.of(w) is w
    assert (IPC.file, IPC.line) == ("<ipc>", 0)
    with pytest.raises(ValueError):
        Where("x.conf", -1)


def test_a_route_keeps_its_origin_as_a_plain_int() -> None:
    cfg = ok("mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\n")
    r = cfg.routes[0]
    assert type(r.origin) is int  # no per-line object
    assert r.where == Where("t.conf", 1) and str(r.where) == "t.conf:1"
    # the origin takes no part in equality, as before
    assert r == MRoute("eth0", A("10.0.0.1"), 32, A("225.1.1.1"), 32, ("eth1",), IPC)


def test_messages_name_file_and_line_across_files(tmp_path: Path) -> None:
    (tmp_path / "b.conf").write_text(
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\n"
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\n"
        "mroute from eth0 group 10.1.1.1 to eth1\n"
    )
    main = tmp_path / "a.conf"
    main.write_text(
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\ninclude b.conf\nbogus\n"
    )
    cfg, probs = parse_file(str(main))
    b = str(tmp_path / "b.conf")
    assert [str(p) for p in probs] == [
        f"{main}:3: unknown directive 'bogus'; expected phyint, mgroup, ssmgroup, "
        "mroute or include",
        f"{b}:1: mroute (10.0.0.1, 225.1.1.1) from eth0 is a duplicate of {main}:1",
        f"{b}:2: mroute (10.0.0.1, 225.1.1.1) from eth0 is a duplicate of {main}:1",
        f"{b}:3: 10.1.1.1 is not a multicast group (IPv4 groups are 224.0.0.0/4)",
    ]
    assert [str(r.where) for r in cfg.routes] == [f"{main}:1"]


def test_mroute_is_a_frozen_record_of_its_seven_values() -> None:
    """MRoute keeps four slots (one tuple for family, source and group, one int
    for the prefix lengths and the origin) but reads, compares and hashes as
    the record of (iif, source, source_len, group, group_len, oifs, origin)."""
    r = MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.0"), 24, ("eth1",), Where("t.conf", 70000))
    assert (r.iif, r.source, r.source_len, r.group, r.group_len, r.oifs) == (
        "eth0",
        A("10.1.0.0"),
        16,
        A("225.4.4.0"),
        24,
        ("eth1",),
    )
    assert (r.family, r.mfc_key, str(r.where)) == (
        4,
        (4, A("10.1.0.0"), A("225.4.4.0")),
        "t.conf:70000",
    )
    assert repr(r) == (
        "MRoute(iif='eth0', source=IPv4Address('10.1.0.0'), source_len=16, "
        "group=IPv4Address('225.4.4.0'), group_len=24, oifs=('eth1',))"
    )
    same = MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.0"), 24, ("eth1",))  # origin aside
    assert r == same and hash(r) == hash(same) and r.where != same.where
    for other in (
        MRoute("eth9", A("10.1.0.0"), 16, A("225.4.4.0"), 24, ("eth1",)),
        MRoute("eth0", A("10.1.0.1"), 16, A("225.4.4.0"), 24, ("eth1",)),
        MRoute("eth0", A("10.1.0.0"), 17, A("225.4.4.0"), 24, ("eth1",)),
        MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.1"), 24, ("eth1",)),
        MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.0"), 25, ("eth1",)),
        MRoute("eth0", A("10.1.0.0"), 16, A("225.4.4.0"), 24, ("eth2",)),
    ):
        assert r != other
    assert r != MGroup("eth0", A("10.1.0.0"), 16, A("225.4.4.0"), 24)
    with pytest.raises(AttributeError):
        r.iif = "eth1"  # type: ignore[misc]
    with pytest.raises(ValueError):
        MRoute("eth0", None, 0, A("ff0e::"), 129, ("eth1",))
    six = MRoute("eth0", A("2001:db8::1"), 128, A("ff0e::1"), 128, ("eth1",))
    assert six.family == 6 and not six.is_template and six.source_len == 128
    assert MRoute("eth0", A("2001:db8::"), 127, A("ff0e::1"), 128, ("eth1",)).is_template
    assert MRoute("eth+", A("10.0.0.1"), 32, A("225.1.1.1"), 32, ("eth1",)).is_template
    assert not MRoute("eth0", A("10.0.0.1"), 32, A("225.1.1.1"), 32, ("eth1",)).is_template
    assert MRoute("eth0", None, 0, A("225.1.1.1"), 32, ("eth1",)).is_template
