"""smcroute.records: the start-up path's `dataclass` behaves as the standard one.

Each class shape the code base uses is declared twice, once with each
decorator, and the two are compared: constructor, defaults and factories,
repr text, equality and hashing, frozen assignment, slots, pickling and
copying, `__match_args__`, methods the class defines itself, inheritance.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from typing import Any

import pytest
from netns import run

from smcroute import records

IMPLS = {"stdlib": (dataclasses.dataclass, dataclasses.field), "records": records.__dict__}


def shapes(impl: str) -> dict[str, type]:
    if impl == "stdlib":
        dc, field = dataclasses.dataclass, dataclasses.field
    else:
        dc, field = records.dataclass, records.field

    @dc(frozen=True, slots=True)
    class Where:
        file: str
        line: int

        def __str__(self) -> str:
            return f"{self.file}:{self.line}"

    @dc(frozen=True, slots=True)
    class Route:
        iif: str
        source: int | None
        oifs: tuple[str, ...]
        where: Any = field(default=Where("<ipc>", 0), compare=False)

        @property
        def family(self) -> int:
            return 4

    @dc(slots=True)
    class Config:
        routes: list[int] = field(default_factory=list)
        name: str = "x"

    @dc
    class Engine:
        families: tuple[int, ...] = (4, 6)
        zero_loss: bool = False
        vifs: dict[int, dict[str, int]] = field(default_factory=lambda: {4: {}, 6: {}})
        secret: str = field(default="s", repr=False)

    @dc(frozen=True, slots=True)
    class Empty:
        pass

    @dc
    class Base:
        a: int
        b: int = 2

    @dc
    class Child(Base):
        c: int = 3

    @dc(repr=False, eq=False)
    class Plain:
        a: int

        def __repr__(self) -> str:
            return "mine"

    return {c.__name__: c for c in (Where, Route, Config, Engine, Empty, Base, Child, Plain)}


STD, OURS = shapes("stdlib"), shapes("records")


def build(cls: dict[str, type]) -> dict[str, list[Any]]:
    w = cls["Where"]("a.conf", 3)
    return {
        "Where": [w, cls["Where"](file="b", line=1)],
        "Route": [
            cls["Route"]("a1", 5, ("a2",), w),
            cls["Route"]("a1", 5, ("a2",)),
            cls["Route"]("a1", None, (), where=w),
        ],
        "Config": [cls["Config"](), cls["Config"]([1, 2], "y")],
        "Engine": [cls["Engine"](), cls["Engine"]((4,), True)],
        "Empty": [cls["Empty"]()],
        "Base": [cls["Base"](1), cls["Base"](1, b=5)],
        "Child": [cls["Child"](1), cls["Child"](a=1, b=2, c=9)],
        "Plain": [cls["Plain"](1)],
    }


def test_same_repr_str_and_fields() -> None:
    std, ours = build(STD), build(OURS)
    for name, objs in std.items():
        for a, b in zip(objs, ours[name], strict=True):
            assert repr(a) == repr(b), name
            assert str(a) == str(b), name
            assert STD[name].__match_args__ == OURS[name].__match_args__
            for f in dataclasses.fields(a):
                assert repr(getattr(a, f.name)) == repr(getattr(b, f.name))


def test_same_equality_and_hashing() -> None:
    std, ours = build(STD), build(OURS)
    for name, objs in std.items():
        theirs = ours[name]
        for i, a in enumerate(objs):
            for j, b in enumerate(objs):
                assert (a == b) == (theirs[i] == theirs[j]), (name, i, j)
                assert (a != b) == (theirs[i] != theirs[j]), (name, i, j)
            hashable = STD[name].__hash__ is not None
            assert hashable == (OURS[name].__hash__ is not None), name
            if hashable and name != "Plain":
                assert hash(a) == hash(theirs[i]), name
    # compare=False fields take no part; another class is never equal
    r1, r2 = ours["Route"][0], ours["Route"][1]
    assert r1 == r2 and hash(r1) == hash(r2)
    assert ours["Base"][0] != ours["Child"][0]
    assert ours["Where"][0] != ("a.conf", 3)
    assert ours["Plain"][0] != OURS["Plain"](1)  # eq=False: identity


def test_defaults_and_factories_are_fresh() -> None:
    a, b = OURS["Config"](), OURS["Config"]()
    a.routes.append(1)
    assert b.routes == []
    e1, e2 = OURS["Engine"](), OURS["Engine"]()
    e1.vifs[4]["x"] = 1
    assert e2.vifs == {4: {}, 6: {}}
    assert OURS["Engine"].zero_loss is False  # defaults stay class attributes, as there
    assert not hasattr(OURS["Engine"], "vifs")
    with pytest.raises(TypeError):
        OURS["Where"]("only-file")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        OURS["Where"]("f", 1, 2)  # type: ignore[call-arg]


def test_frozen_and_slots() -> None:
    w = OURS["Where"]("f", 1)
    with pytest.raises(AttributeError):
        w.line = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del w.line  # type: ignore[misc]
    with pytest.raises(AttributeError):
        w.other = 1  # type: ignore[attr-defined]
    assert not hasattr(w, "__dict__")
    assert OURS["Where"].__slots__ == ("file", "line")
    c = OURS["Config"]()
    c.name = "z"  # not frozen
    assert c.name == "z"
    assert OURS["Route"]("a", None, ()).family == 4  # properties survive the slots class


def test_pickle_and_copy() -> None:
    for objs in build(OURS).values():
        for o in objs:
            assert copy.copy(o) == o or type(o).__eq__ is object.__eq__
            assert copy.deepcopy(o) == o or type(o).__eq__ is object.__eq__
    mod = sys.modules[__name__]
    for name in ("Where", "Route"):
        cls = OURS[name]
        cls.__qualname__ = cls.__name__ = f"_Pickled{name}"
        setattr(mod, f"_Pickled{name}", cls)
    r = OURS["Route"]("a1", 5, ("a2",), OURS["Where"]("f", 9))
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.where.line == 9


def test_bad_declarations_refused() -> None:
    with pytest.raises(TypeError):

        @records.dataclass
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(ValueError):

        @records.dataclass
        class Mutable:
            a: list[int] = []  # type: ignore[misc]

    with pytest.raises(ValueError):
        records.field(default=1, default_factory=int)


def test_start_up_classes_are_made_here() -> None:
    """The point of the module: no class on the daemon's start-up path pays for
    the standard decorator (a new module there should import this one)."""
    import smcroute.daemon
    import smcroute.daemon_cli  # noqa: F401

    ours = [
        m
        for name, m in sorted(sys.modules.items())
        if name.startswith("smcroute.") and name not in ("smcroute.records", "smcroute.metrics")
    ]
    made = [
        obj
        for m in ours
        for obj in vars(m).values()
        if isinstance(obj, type) and obj.__module__ == m.__name__ and "__annotations__" in vars(obj)
    ]
    assert not [c for c in made if dataclasses.is_dataclass(c)]
    assert len([c for c in made if hasattr(c, "__record_fields__")]) >= 25


def named_tuples(base: Any) -> type:
    class Response(base):  # type: ignore[misc, valid-type]
        """A reply."""

        ok: bool
        data: Any = None
        warnings: tuple[str, ...] = ()

        @classmethod
        def success(cls, data: Any = None) -> Any:
            return cls(True, data)

        def failed(self) -> bool:
            return not self.ok

    return Response


def test_named_tuple_behaves_as_typings() -> None:
    import typing

    theirs, ours = named_tuples(typing.NamedTuple), named_tuples(records.NamedTuple)
    assert ours._fields == theirs._fields == ("ok", "data", "warnings")
    assert ours._field_defaults == theirs._field_defaults
    for cls in (theirs, ours):
        r = cls.success([1])
        assert r == (True, [1], ()) and isinstance(r, tuple)
        assert hash(cls(False, 2)) == hash((False, 2, ()))
        assert r._replace(ok=False).failed() and not r.failed()
        assert r._asdict() == {"ok": True, "data": [1], "warnings": ()}
        assert cls.__doc__ == "A reply." and cls.__qualname__.endswith("Response")
        assert cls.__module__ == __name__
        with pytest.raises(AttributeError):
            r.ok = False  # type: ignore[misc]
    assert repr(ours(True)) == repr(theirs(True)) == "Response(ok=True, data=None, warnings=())"
    assert list(ours.__annotations__) == list(theirs.__annotations__)
    with pytest.raises(TypeError):

        class Bad(records.NamedTuple):  # type: ignore[misc]
            a: int = 1
            b: int

    with pytest.raises(TypeError):
        records.NamedTuple("Functional", [("a", int)])  # type: ignore[call-arg]


def test_daemon_start_path_does_not_import_typing() -> None:
    """`typing` (with `re`, ~5 ms) is for type checkers only on smcrouted's path
    to its routes; a module there uses `TYPE_CHECKING = False` as the others."""
    code = (
        "import sys\n"
        "import smcroute.daemon_cli, smcroute.daemon, smcroute.privsep.client\n"
        "import smcroute.privsep.mroute, smcroute.privsep.janitor\n"
        "smcroute.daemon_cli.warm_up()\n"
        "print('typing' in sys.modules)\n"
    )
    assert run([sys.executable, "-c", code]).stdout.strip() == "False"


def test_init_made_at_first_call_from_a_shared_shape() -> None:
    """__init__ is compiled once per shape and only when first called; a plain
    subclass calling it first puts the real one on the class that has it."""

    @records.dataclass(frozen=True, slots=True)
    class A:
        x: int
        y: tuple[int, ...] = ()

    @records.dataclass(frozen=True, slots=True)
    class B:  # the same shape, other names
        p: str
        q: tuple[int, ...] = (1,)

    class C(A):
        __slots__ = ()

    assert C(1).y == () and A.__init__.__code__.co_varnames[:3] == ("self", "x", "y")
    assert A(y=(2,), x=3) == A(3, (2,)) and B("a") == B("a", (1,)) and B(q=(), p="b").q == ()
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'p'"):
        B()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        A(1, z=2)  # type: ignore[call-arg]

    @records.dataclass
    class D:
        items: list[int] = records.field(default_factory=list)

    d1, d2 = D(), D()
    assert d1.items == [] and d1.items is not d2.items and D([1]).items == [1]
