"""The helper's rule table (`Engine.helper_rules`) and the engine's side of an
install the helper made by a rule (`Engine.upcall(..., installed=...)`).

The table must hold a rule only where the engine's own decision on a new
source is "install (S,G) as this template says", and its first match must be
the template the engine would pick; everything else stays the engine's.
"""

from __future__ import annotations

from smcroute.privsep import validate, wire
from smcroute.privsep.wire import MAX_RULES
from test_engine import NOCACHE, WRONGVIF, A, engine, route

from smcroute.engine.core import Engine, Mfc
from smcroute.engine.ops import AddMfc, AddVif, DelMfc, Log, Op, Rule, RunHook
from smcroute.helper_wire import records
from smcroute.model import Config, MRoute


def loaded(*routes: MRoute, names: tuple[str, ...] = ("a1", "a2", "a3")) -> Engine:
    e = engine(*names)
    e.load_config(Config(routes=list(routes)))
    return e


def first_rule(e: Engine, fam: int, vif: int, source: str, group: str) -> Rule | None:
    """The rule the helper would apply (its first match), from the engine's table."""
    s, g = A(source), A(group)
    for r in e.helper_rules():
        bits = 32 if fam == 4 else 128
        if (r.family, r.parent) != (fam, vif):
            continue
        if int(s) >> (bits - r.source_len) != int(r.source) >> (bits - r.source_len):
            continue
        if int(g) >> (bits - r.group_len) == int(r.group) >> (bits - r.group_len):
            return r
    return None


def test_one_rule_per_template_and_inbound_vif_in_match_order() -> None:
    e = loaded(
        route("a1", None, "225.1.0.0", "a2", glen=16),
        route("a+", None, "225.1.2.0", "a3", glen=24),  # more specific group: first
        route("a1", "10.1.0.0", "225.1.0.0", "a3", slen=16, glen=16),  # a source: before (*,G/16)
        route("a1", None, "ff2e::1", "a2"),
    )
    rules = e.helper_rules()
    v = {n: e.vif_of(4, n) for n in ("a1", "a2", "a3")}
    assert [(r.family, r.parent, str(r.source), r.source_len, str(r.group), r.group_len,
             r.ttls) for r in rules] == [
        (6, e.vif_of(6, "a1"), "::", 0, "ff2e::1", 128, ((e.vif_of(6, "a2"), 1),)),  # /128 first
        (4, v["a1"], "0.0.0.0", 0, "225.1.2.0", 24, ((v["a3"], 1),)),  # a+: one rule per VIF
        (4, v["a2"], "0.0.0.0", 0, "225.1.2.0", 24, ((v["a3"], 1),)),
        (4, v["a3"], "0.0.0.0", 0, "225.1.2.0", 24, ((v["a3"], 1),)),  # as the engine has it
        (4, v["a1"], "10.1.0.0", 16, "225.1.0.0", 16, ((v["a3"], 1),)),
        (4, v["a1"], "0.0.0.0", 0, "225.1.0.0", 16, ((v["a2"], 1),)),
    ]  # fmt: skip
    assert e.helper_rules() is rules  # the same table until something changes


def test_first_rule_is_the_engines_decision() -> None:
    def fresh() -> Engine:
        return loaded(
            route("a1", None, "225.1.0.0", "a2", glen=16),
            route("a+", None, "225.1.2.0", "a3", glen=24),
            route("a1", "10.1.0.0", "225.1.0.0", "a3", slen=16, glen=16),
            route("a2", "10.2.0.0", "225.1.0.0", "a1", "a3", slen=16, glen=16),
        )

    cases = [(n, s, g) for n in ("a1", "a2", "a3")
             for s in ("10.1.2.3", "10.2.0.9", "10.9.9.9")
             for g in ("225.1.2.7", "225.1.9.9", "225.2.0.1")]  # fmt: skip
    for name, s, g in cases:
        e = fresh()  # each case a new source
        vif = e.vif_of(4, name)
        assert vif is not None
        rule = first_rule(e, 4, vif, s, g)
        ops = e.upcall(4, NOCACHE, vif, A(s), A(g), 0.0)
        adds = [op for op in ops if isinstance(op, AddMfc)]
        if rule is None:  # no template: a stop filter, the engine's business
            assert adds == [AddMfc(4, A(s), A(g), vif, ())], (name, s, g)
        else:
            assert adds == [AddMfc(4, A(s), A(g), vif, rule.ttls)], (name, s, g)


def test_a_template_covering_an_exact_route_ends_the_table() -> None:
    covered = route("a1", None, "225.1.2.3", "a2")
    later = route("a1", None, "225.1.0.0", "a2", glen=16)  # ranks after: no rule either
    v6 = route("a1", None, "ff2e::1", "a2")  # another family: unaffected
    exact = route("a1", "10.0.0.1", "225.1.2.3", "a3")
    e = loaded(covered, later, v6, exact)
    assert [r.family for r in e.helper_rules()] == [6]
    e.remove_route(route("a1", "10.0.0.1", "225.1.2.3"))
    assert sorted(r.family for r in e.helper_rules()) == [4, 4, 6]
    # a stop filter (the exact route without OIFs) is covered the same way
    e.add_route(route("a1", "10.0.0.1", "225.1.2.3", "a3"))
    e.remove_route(route("a1", "10.0.0.1", "225.1.2.3", "a3"))  # only the OIF: none left
    assert (4, A("10.0.0.1"), A("225.1.2.3")) in e.mfc
    assert [r.family for r in e.helper_rules()] == [6]
    # an exact route outside every template changes nothing
    before = e.helper_rules()
    e.add_route(route("a1", "10.0.0.2", "225.9.9.9", "a2"))
    assert e.helper_rules() is before


def test_prefix_template_covering_an_exact_route_and_source_prefixes() -> None:
    e = loaded(
        route("a1", "10.1.0.0", "225.1.0.0", "a2", slen=16, glen=16),
        route("a1", "10.9.9.9", "225.1.2.3", "a3"),  # outside the source prefix
    )
    assert len(e.helper_rules()) == 1
    e.add_route(route("a1", "10.1.7.7", "225.1.7.7", "a3"))  # inside both prefixes
    assert e.helper_rules() == ()


def test_table_follows_templates_vifs_and_links() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    t1 = e.helper_rules()
    assert len(t1) == 1
    e.add_route(route("a1", None, "225.1.2.4", "a3"))
    t2 = e.helper_rules()
    assert len(t2) == 2 and t2 is not t1
    e.remove_route(route("a1", None, "225.1.2.4"))
    assert e.helper_rules() == t1
    # a1 goes away: its VIF too, and so its rules
    e.set_links([link for link in e.links.values() if link.name != "a1"])
    assert e.helper_rules() == ()
    # reload without templates
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.2.3", "a2")]))
    assert e.helper_rules() == ()


def test_table_is_bounded_and_a_first_part_of_the_whole() -> None:
    names = tuple(f"a{i}" for i in range(1, 31))
    tmpls = [route("a+", None, f"225.1.{i}.0", "a1", glen=24) for i in range(20)]
    e = loaded(*tmpls, names=names)
    rules = e.helper_rules()
    assert len(rules) == MAX_RULES  # 20 templates x 30 inbound VIFs = 600 rules
    assert {str(r.group) for r in rules} == {f"225.1.{i}.0" for i in range(9)}


def test_helper_install_with_the_same_decision_writes_nothing() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    (rule,) = e.helper_rules()
    done = Mfc(rule.parent, rule.ttls, "learned")
    ops = e.upcall(4, NOCACHE, rule.parent, A("10.0.0.1"), A("225.1.2.3"), 0.0, done)
    assert ops == [RunHook("install", 4, A("10.0.0.1"), A("225.1.2.3"))]  # the hook only
    assert e.mfc[(4, A("10.0.0.1"), A("225.1.2.3"))] == done
    assert (4, A("10.0.0.1"), A("225.1.2.3")) in e.learned
    # expiry and flush treat it as any learned entry
    assert e.flush() == [DelMfc(4, A("10.0.0.1"), A("225.1.2.3"), rule.parent)]


def test_helper_install_the_engine_disagrees_with_is_corrected() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    (rule,) = e.helper_rules()
    s, g = A("10.0.0.1"), A("225.1.2.3")
    # a rule of a table the daemon forgot: the engine writes its own decision
    unknown = Mfc(rule.parent, (), "unknown")
    assert e.upcall(4, NOCACHE, rule.parent, s, g, 0.0, unknown)[0] == AddMfc(
        4, s, g, rule.parent, rule.ttls
    )
    # an old table said otherwise (the template changed meanwhile)
    s2 = A("10.0.0.2")
    old = Mfc(rule.parent, ((7, 1),), "learned")
    assert e.upcall(4, NOCACHE, rule.parent, s2, g, 0.0, old)[0] == AddMfc(
        4, s2, g, rule.parent, rule.ttls
    )
    # no template any more: a stop filter replaces the helper's entry
    e.load_config(Config(routes=[]))
    e.load_config(Config(routes=[route("a1", None, "225.9.9.9", "a2")]))
    s3 = A("10.0.0.3")
    vif = e.vif_of(4, "a1")
    assert vif is not None
    assert e.upcall(4, NOCACHE, vif, s3, g, 0.0, old) == [AddMfc(4, s3, g, vif, ())]
    # the engine's own entry for the (S,G) stands (our write and the helper's crossed)
    e.add_route(route("a1", "10.0.0.4", "225.1.2.3", "a2"))
    s4 = A("10.0.0.4")
    have = e.mfc[(4, s4, g)]
    assert e.upcall(4, NOCACHE, vif, s4, g, 0.0, have) == []
    assert e.upcall(4, NOCACHE, vif, s4, g, 0.0, old) == [AddMfc(4, s4, g, have.parent, have.ttls)]
    # an install on a VIF the engine no longer has is taken back
    assert e.upcall(4, NOCACHE, 17, s, g, 0.0, old) == [DelMfc(4, s, g, 17)]
    # WRONGVIF is never the helper's
    assert e.upcall(4, WRONGVIF, vif, s, g, 0.0) == []


def test_helper_installs_beyond_the_learned_limit_are_taken_back() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    e.max_learned = 1
    (rule,) = e.helper_rules()
    done = Mfc(rule.parent, rule.ttls, "learned")
    g = A("225.1.2.3")
    assert e.upcall(4, NOCACHE, rule.parent, A("10.0.0.1"), g, 0.0, done) != []
    ops: list[Op] = e.upcall(4, NOCACHE, rule.parent, A("10.0.0.2"), g, 0.0, done)
    assert ops[0] == DelMfc(4, A("10.0.0.2"), g, rule.parent)
    assert isinstance(ops[1], Log) and "limit" in ops[1].text and len(ops) == 2
    assert len(e.learned) == 1 and (4, A("10.0.0.2"), g) not in e.mfc


def test_expiry_gives_a_new_table_for_the_budget() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    t1 = e.helper_rules()
    e.upcall(4, NOCACHE, t1[0].parent, A("10.0.0.1"), A("225.1.2.3"), 0.0)
    assert e.helper_rules() is t1  # learning alone changes nothing
    e.expire({})
    assert e.helper_rules() is not t1 and e.helper_rules() == t1


def test_rule_records_are_what_the_helper_accepts() -> None:
    from smcroute.engine.ops import SetRules

    e = loaded(
        route("a+", "10.1.0.0", "225.1.0.0", "a2", "a3", slen=16, glen=16),
        route("a1", None, "ff2e::1:0", "a2", glen=112),
    )
    recs = records(SetRules(3, 100, e.helper_rules()))
    assert recs[0] == wire.Rules(3, 100) and len(recs) == 1 + len(e.helper_rules())
    for rec, rule in zip(recs[1:], e.helper_rules(), strict=True):
        cmd = validate.check(rec)
        assert isinstance(cmd, validate.Rule), cmd
        assert (cmd.family, cmd.parent) == (rule.family, rule.parent)
    assert not [op for op in e.load_config(Config(routes=[])) if isinstance(op, AddVif)]


def test_install_by_the_current_table_is_recorded_as_it_is() -> None:
    e = loaded(route("a1", None, "225.1.2.3", "a2"))
    rules = e.helper_rules()
    assert e.current_rules(rules)
    done = Mfc(rules[0].parent, rules[0].ttls, "learned")
    s, g = A("10.0.0.1"), A("225.1.2.3")
    assert e.upcall(4, NOCACHE, rules[0].parent, s, g, 0.0, done, True) == [
        RunHook("install", 4, s, g)
    ]
    assert e.mfc[(4, s, g)] is done  # shared by every entry the rule installed
    assert e.learned[(4, s, g)].iif == "a1"
    e.add_route(route("a1", None, "225.1.2.4", "a3"))
    assert not e.current_rules(rules)  # a report from it is compared again
    e.max_learned = 1  # full: even an install by the current table is taken back
    s2 = A("10.0.0.2")
    ops = e.upcall(4, NOCACHE, rules[0].parent, s2, g, 0.0, done, True)
    assert ops[0] == DelMfc(4, s2, g, rules[0].parent)
