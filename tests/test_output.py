"""`show` formatting: doc/SPEC.md §4 examples byte for byte, -d, -t, ANSI, JSON."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ipc_helpers import GROUPS, INTERFACES, PENDING, ROUTES, route

from smcroute.output import OutputError, format_json, format_show, strip_counters

SPEC_ROUTES = """\
_______________________________________________________________________________
(*,G) Template Rules
===============================================================================
ROUTE (S,G)                                IIF  OIFS
===============================================================================
(*, 225.3.3.0/24)                          a1   a2 a3
(*, ff2e::43)                              a1   a2
_______________________________________________________________________________
(S,G) Rules
===============================================================================
ROUTE (S,G)                                IIF  OIFS
===============================================================================
(10.0.0.5, 225.4.4.4)                      a1   a2
_______________________________________________________________________________
Kernel MFC Table
===============================================================================
ROUTE (S,G)                                IIF  OIFS
===============================================================================
(10.0.0.5, 225.4.4.4)                      a1   a2
(10.0.0.1, 225.3.3.7)                      a1   a2 a3
"""

SPEC_GROUPS = """\
_______________________________________________________________________________
Group Memberships Table
===============================================================================
GROUP (S,G)                                IIF
===============================================================================
(*, 225.5.5.5)                             a1
(10.0.0.9, 225.5.5.0/30)                   a1
"""

SPEC_INTERFACES = """\
===============================================================================
 INDEX PHYINT  VIF  MIF
===============================================================================
     1 lo      N/A  N/A
     3 a1        0    0
"""

# The detailed form, checked against the original 2.5 daemon's `-pd show`
# (same column positions) with the counters of our fake data.
DETAIL_ROUTES = """\
_______________________________________________________________________________
(*,G) Template Rules
===============================================================================
ROUTE (S,G)                                IIF    PACKETS      BYTES  OIFS
===============================================================================
(*, 225.3.3.0/24)                          a1          10       1000  a2 a3
(*, ff2e::43)                              a1           0          0  a2
_______________________________________________________________________________
(S,G) Rules
===============================================================================
ROUTE (S,G)                                IIF    PACKETS      BYTES  OIFS
===============================================================================
(10.0.0.5, 225.4.4.4)                      a1           5        500  a2
_______________________________________________________________________________
Kernel MFC Table
===============================================================================
ROUTE (S,G)                                IIF    PACKETS      BYTES  OIFS
===============================================================================
(10.0.0.5, 225.4.4.4)                      a1           5        500  a2
(10.0.0.1, 225.3.3.7)                      a1  1234567890 9876543210  a2 a3
"""

SPEC_MD = Path(__file__).resolve().parents[1] / "doc/SPEC.md"


def plain(kind: str, data: object, detail: bool = False) -> str:
    return format_show(kind, data, detail=detail, plain=True, headings=True)


def test_routes_plain_equals_spec() -> None:
    assert plain("routes", ROUTES) == SPEC_ROUTES


def test_groups_plain_equals_spec() -> None:
    assert plain("groups", GROUPS) == SPEC_GROUPS


def test_interfaces_plain_equals_spec() -> None:
    assert plain("interfaces", INTERFACES) == SPEC_INTERFACES


def test_examples_are_the_ones_in_spec_md() -> None:
    blocks = re.findall(r"```\n(.*?)```", SPEC_MD.read_text(), re.S)
    for expected in (SPEC_ROUTES, SPEC_GROUPS, SPEC_INTERFACES):
        assert expected in blocks


def test_routes_detail() -> None:
    assert plain("routes", ROUTES, detail=True) == DETAIL_ROUTES


def test_data_rows_only() -> None:
    text = format_show("routes", ROUTES, detail=False, plain=True, headings=False)
    assert text.splitlines() == [
        line for line in SPEC_ROUTES.splitlines() if re.match(r"\(\S+, ", line)
    ]
    text = format_show("interfaces", INTERFACES, detail=False, plain=True, headings=False)
    assert text == "     1 lo      N/A  N/A\n     3 a1        0    0\n"


def test_empty_tables_left_out() -> None:
    data = {"routes": {"asm": [], "ssm": [ROUTES["routes"]["ssm"][0]], "kernel": []}}
    assert plain("routes", data) == "\n".join(SPEC_ROUTES.splitlines()[7:13]) + "\n"
    assert plain("routes", {"routes": {"asm": [], "ssm": [], "kernel": []}}) == ""
    assert plain("groups", {"groups": {"conf": [], "kernel": []}}) == ""


def test_groups_detail_adds_kernel_table() -> None:
    text = plain("groups", GROUPS, detail=True)
    assert text.startswith(SPEC_GROUPS)
    assert "Kernel Group Membership Table\n" in text
    assert text.endswith("(*, 225.5.5.5)                             a1\n")


def test_long_names_and_addresses() -> None:
    long_sg = route(
        "2001:db8:1111:2222:3333:4444:5555:6666",
        "ff3e:1111:2222:3333:4444:5555:6666:7777",
        "a2",
        ["a3"],
    )
    data = {
        "routes": {
            "asm": [route(None, "225.3.3.0/24", "longifname01", ["a2"])],
            "ssm": [long_sg],
            "kernel": [],
        }
    }
    lines = plain("routes", data).splitlines()
    assert lines[3] == "ROUTE (S,G)                                IIF          OIFS"
    assert lines[5] == "(*, 225.3.3.0/24)                          longifname01 a2"
    assert lines[11] == (
        "(2001:db8:1111:2222:3333:4444:5555:6666, ff3e:1111:2222:3333:4444:5555:6666:7777) "
        "a2           a3"
    )
    detail = plain("routes", data, detail=True).splitlines()
    header = "ROUTE (S,G)                                IIF            PACKETS      BYTES  OIFS"
    assert detail[3] == header
    assert detail[2] == "=" * len(header)  # the rule grows with a wide header
    assert detail[0] == "_" * 79


def test_interfaces_long_name() -> None:
    data = {"interfaces": [{"index": 6, "name": "verylongname15", "vif": 4, "mif": None}]}
    assert plain("interfaces", data).splitlines()[1:] == [
        " INDEX PHYINT          VIF  MIF",
        "=" * 79,
        "     6 verylongname15    4  N/A",
    ]


def test_pending() -> None:
    data = {
        "pending": [
            *PENDING["pending"],
            {
                "kind": "mgroup",
                "iif": "wg1",
                "source": "10.1.1.1",
                "group": "232.1.1.1",
                "oifs": [],
            },
        ]
    }
    assert plain("pending", data) == (
        "=" * 79 + "\n"
        "PENDING ROUTES AND GROUPS\n" + "=" * 79 + "\n"
        "mroute  from wg0 group 239.5.5.5 to a2\n"
        "mgroup  from wg1 source 10.1.1.1 group 232.1.1.1\n"
    )
    assert plain("pending", {"pending": []}) == "No pending routes or groups\n"
    assert format_show("pending", {"pending": []}, detail=False, plain=True, headings=False) == ""


def test_ansi_headings() -> None:
    text = format_show("routes", ROUTES, detail=False, plain=False, headings=True)
    lines = text.splitlines()
    assert lines[0] == "\x1b[4m" + " " * 79 + "\x1b[0m"
    assert lines[1] == "(*,G) Template Rules"
    assert (
        lines[2]
        == "\x1b[7m" + "ROUTE (S,G)                                IIF  OIFS".ljust(79) + "\x1b[0m"
    )
    assert lines[3] == "(*, 225.3.3.0/24)                          a1   a2 a3"
    assert "=" not in text and "_" not in text
    rows = format_show("routes", ROUTES, detail=False, plain=False, headings=False)
    assert "\x1b" not in rows


@pytest.mark.parametrize(
    "kind, data",
    [("routes", ROUTES), ("groups", GROUPS), ("interfaces", INTERFACES), ("pending", PENDING)],
)
def test_plain_has_no_control_characters(kind: str, data: object) -> None:
    for detail in (False, True):
        text = plain(kind, data, detail)
        assert text.endswith("\n")
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)
        assert all(line == line.rstrip() for line in text.splitlines())


def test_wire_data_cannot_inject_escapes() -> None:
    data = {
        "routes": {
            "asm": [],
            "ssm": [route("10.0.0.1", "225.1.1.1", "a\x1b[2J", ["b"])],
            "kernel": [],
        }
    }
    assert "\x1b" not in plain("routes", data)


def test_json_strips_counters_unless_detail() -> None:
    doc = json.loads(format_json(ROUTES, detail=False))
    for table in doc["routes"].values():
        for r in table:
            assert set(r) == {"source", "group", "iif", "oifs"}
    assert json.loads(format_json(ROUTES, detail=True)) == ROUTES
    assert format_json(ROUTES, detail=False).endswith("}\n")
    assert strip_counters(GROUPS) == GROUPS
    assert ROUTES["routes"]["asm"][0]["packets"] == 10  # input untouched


@pytest.mark.parametrize(
    "kind, data",
    [
        ("routes", None),
        ("routes", {"routes": []}),
        ("routes", {"routes": {"asm": [{"group": 1}]}}),
        ("routes", {"routes": {"asm": [{"group": "g", "iif": "a", "oifs": "x"}]}}),
        ("groups", {"groups": {"conf": [1]}}),
        ("interfaces", {"interfaces": [{"index": "1", "name": "lo"}]}),
        ("interfaces", {"interfaces": [{"index": 1, "name": "lo", "vif": "0"}]}),
        ("pending", {"pending": [{"kind": 3}]}),
        ("bogus", {}),
    ],
)
def test_malformed_data_is_output_error(kind: str, data: object) -> None:
    with pytest.raises(OutputError):
        plain(kind, data)


@settings(max_examples=200)
@given(
    st.sampled_from(["routes", "groups", "interfaces", "pending"]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "routes",
                        "groups",
                        "interfaces",
                        "pending",
                        "asm",
                        "ssm",
                        "kernel",
                        "conf",
                        "source",
                        "group",
                        "iif",
                        "oifs",
                        "index",
                        "name",
                        "vif",
                        "mif",
                        "kind",
                        "packets",
                        "bytes",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=25,
    ),
)
def test_formatting_raises_only_output_error(kind: str, data: object) -> None:
    for detail in (False, True):
        with contextlib.suppress(OutputError):
            format_show(kind, data, detail=detail, plain=True, headings=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps's own spelling
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=2)
    ),
    max_leaves=25,
)


@given(json_values)
def test_format_json_is_json_dumps(value: object) -> None:
    """The documents print as json.dumps(indent=2) does, byte for byte, whatever
    they hold (what the fast path does not know goes to json.dumps)."""
    want = json.dumps(value, indent=2, ensure_ascii=True) + "\n"
    assert format_json(value, detail=True) == want
