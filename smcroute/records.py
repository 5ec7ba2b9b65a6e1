"""`dataclass`, `field` and `NamedTuple` for the daemon's start-up path, at a
tenth of the cost (and without importing `typing`).

The standard decorator compiles six to eight generated methods per class
(`exec` of their source): about 0.8 ms per frozen, slotted class here, 1.5 ms
on a cold start, some 40 ms of CPU before smcrouted could read its
configuration (about 30 classes on that path).  This one makes only the
same `__init__`, at its first call (a class not instantiated before the
routes are in costs nothing more at start), compiled once per shape and
given each class's names (a cold `exec` was ~0.3 ms: instances are made as
fast as with the standard ones), compares and hashes the same tuple of
fields with a C `attrgetter` (the same hash values), and shares generic
`__repr__`, frozen `__setattr__`/`__delattr__` and pickling methods.

Behaves as `dataclasses.dataclass` for what this code base uses: fields from
the class's annotations (not `ClassVar`, inherited from a base made here),
defaults, `field(default=..., default_factory=..., repr=..., compare=...)`,
`frozen`, `slots`, `eq`, `repr`, the same repr text, equality only between
instances of one class, hashing of frozen classes, `__hash__ = None` for
mutable ones, `__match_args__`, and methods the class defines itself left as
they are.  Not supported (none is used): `order`, `unsafe_hash`, `kw_only`,
`InitVar`, `__post_init__`; `dataclasses.fields()`/`replace()` do not know
these classes.  Type checkers see the standard decorator.

`NamedTuple` is `typing.NamedTuple`'s class syntax (annotated fields,
defaults, methods, docstring) on `collections.namedtuple`, without `typing`
(~5 ms with `re` on the daemon's start, which needs neither) and without
its `ForwardRef` per field (a `compile` each, the annotations being text
here).  Type checkers see `typing.NamedTuple`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # spelt out: `typing` is not needed at run time
if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
    from typing import NamedTuple as NamedTuple
else:
    from collections import namedtuple as _namedtuple
    from operator import attrgetter

    _MISSING = type("MISSING", (), {"__repr__": lambda self: "<MISSING>"})()

    class FrozenInstanceError(AttributeError):
        """Assignment to a field of a frozen instance (as dataclasses' own)."""

    class Field:
        __slots__ = ("compare", "default", "default_factory", "name", "repr")

        def __init__(self, default, default_factory, repr, compare):
            if default is not _MISSING and default_factory is not _MISSING:
                raise ValueError("cannot specify both default and default_factory")
            self.name = ""
            self.default, self.default_factory = default, default_factory
            self.repr, self.compare = repr, compare

    def field(*, default=_MISSING, default_factory=_MISSING, repr=True, compare=True):
        return Field(default, default_factory, repr, compare)

    def _own_fields(cls):
        out = []
        # (not inspect.get_annotations: `inspect` is not needed at run time either)
        for name, ann in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            if isinstance(ann, str) and ann.startswith(("ClassVar", "typing.ClassVar")):
                continue
            value = cls.__dict__.get(name, _MISSING)
            f = value if isinstance(value, Field) else Field(value, _MISSING, True, True)
            if isinstance(f.default, (list, dict, set)):
                raise ValueError(
                    f"mutable default {type(f.default)} for field {name} is not allowed: "
                    "use default_factory"
                )
            f.name = name
            out.append(f)
        return out

    def _compare_methods(names):
        """__eq__ and __hash__ on the tuple of the compared fields, as dataclasses
        writes them (`(self.a, self.b,) == (other.a, other.b,)`, the same hash
        values), with a C attrgetter instead of compiled source."""
        if not names:

            def key(_obj):
                return ()
        elif len(names) == 1:
            one = attrgetter(names[0])

            def key(obj):
                return (one(obj),)
        else:
            key = attrgetter(*names)

        def __eq__(self, other):
            if other.__class__ is self.__class__:
                return key(self) == key(other)
            return NotImplemented

        def __hash__(self):
            return hash(key(self))

        return __eq__, __hash__

    def _generic_repr(self):
        parts = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__class__.__record_repr__)
        return f"{self.__class__.__qualname__}({parts})"

    def _frozen_methods(cls, names):
        def __setattr__(self, name, value):
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot assign to field {name!r}")
            super(cls, self).__setattr__(name, value)

        def __delattr__(self, name):
            if type(self) is cls or name in names:
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            super(cls, self).__delattr__(name)

        return __setattr__, __delattr__

    def _getstate(self):
        return [getattr(self, n) for n in self.__class__.__record_fields__]

    def _setstate(self, state):
        for n, v in zip(self.__class__.__record_fields__, state, strict=True):
            object.__setattr__(self, n, v)

    def _process(cls, frozen, slots, eq, repr):
        fields = []
        for base in reversed(cls.__mro__[1:]):
            fields += [f for f in getattr(base, "__record_fieldobjs__", ()) if f not in fields]
        own = _own_fields(cls)
        known = {f.name: i for i, f in enumerate(fields)}
        for f in own:
            if f.name in known:
                fields[known[f.name]] = f
            else:
                fields.append(f)
        names = tuple(f.name for f in fields)
        seen_default = False
        for f in fields:
            has = f.default is not _MISSING or f.default_factory is not _MISSING
            if seen_default and not has:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            seen_default = seen_default or has
        body = dict(cls.__dict__)
        if slots:
            if "__slots__" in body:
                raise TypeError(f"{cls.__name__} already specifies __slots__")
            inherited = {s for b in cls.__mro__[1:] for s in b.__dict__.get("__slots__", ())}
            body["__slots__"] = tuple(n for n in names if n not in inherited)
            for n in names:
                body.pop(n, None)
            body.pop("__dict__", None)
            body.pop("__weakref__", None)
            qualname = cls.__qualname__
            cls = type(cls)(cls.__name__, cls.__bases__, body)
            cls.__qualname__ = qualname
        else:
            for f in own:
                if f.default is _MISSING:
                    if isinstance(cls.__dict__.get(f.name), Field):
                        delattr(cls, f.name)
                else:
                    setattr(cls, f.name, f.default)
        cls.__record_fieldobjs__ = tuple(fields)
        cls.__record_fields__ = names
        cls.__record_repr__ = tuple(f.name for f in fields if f.repr)

        compared = [f.name for f in fields if f.compare]
        eq_fn, hash_fn = _compare_methods(compared)
        explicit_hash = "__hash__" in body and not (body["__hash__"] is None and "__eq__" in body)
        if "__init__" not in body:
            cls.__init__ = _lazy_init(cls, fields, frozen)
        if eq and "__eq__" not in body:
            cls.__eq__ = eq_fn
        if eq and not explicit_hash:
            cls.__hash__ = hash_fn if frozen else None
        if repr and "__repr__" not in body:
            cls.__repr__ = _generic_repr
        if frozen:
            if "__setattr__" in body or "__delattr__" in body:
                raise TypeError(f"cannot overwrite attribute __setattr__ in class {cls.__name__}")
            cls.__setattr__, cls.__delattr__ = _frozen_methods(cls, names)
            if slots:
                cls.__getstate__, cls.__setstate__ = _getstate, _setstate
        if "__match_args__" not in body:
            cls.__match_args__ = names
        return cls

    # (frozen, each field's kind) -> the code of its __init__, names as placeholders
    _init_codes = {}

    def _make_init(fields, frozen):
        """`__init__` as dataclasses writes it (`self.a = a`, or
        `_set(self, 'a', a)` when frozen; a factory called when the argument is
        missing), compiled once per shape -- whether frozen, which fields have a
        default or a factory -- and given each class's names and defaults
        (compiling was ~0.3 ms a class, ~9 ms of smcrouted's start)."""
        kinds = tuple(
            "f" if f.default_factory is not _MISSING else "d" if f.default is not _MISSING else "p"
            for f in fields
        )
        code = _init_codes.get((frozen, kinds))
        if code is None:
            params, lines = [], []
            for i, kind in enumerate(kinds):
                name = f"_x{i}"
                params.append(name if kind == "p" else f"{name}=_MISSING")
                value = f"_f_{name}() if {name} is _MISSING else {name}" if kind == "f" else name
                lines.append(
                    f" _set(self, {name!r}, {value})" if frozen else f" self.{name} = {value}"
                )
            env = {"_MISSING": _MISSING}
            src = [f"def __init__(self, {', '.join(params)}):", *(lines or [" pass"])]
            exec("\n".join(src), env)
            code = _init_codes[(frozen, kinds)] = env["__init__"].__code__
        names = {}
        env = {"_MISSING": _MISSING, "_set": object.__setattr__}
        for i, f in enumerate(fields):
            names[f"_x{i}"] = f.name
            names[f"_f__x{i}"] = f"_f_{f.name}"
            if f.default_factory is not _MISSING:
                env[f"_f_{f.name}"] = f.default_factory
        code = code.replace(
            co_varnames=tuple(names.get(n, n) for n in code.co_varnames),
            co_names=tuple(names.get(n, n) for n in code.co_names),
            co_consts=tuple(names.get(c, c) if type(c) is str else c for c in code.co_consts),
        )
        defaults = tuple(
            f.default if k == "d" else _MISSING
            for f, k in zip(fields, kinds, strict=True)
            if k != "p"
        )
        return _FunctionType(code, env, "__init__", defaults or None)

    _FunctionType = type(_make_init)

    def _lazy_init(cls, fields, frozen):
        """`cls.__init__` until its first call, which makes the real one
        (`_make_init`) and puts it in its place: a class never instantiated
        before smcrouted has its routes in (most operations, counters, show)
        costs nothing more then."""

        def __init__(self, *args, **kwargs):
            init = _make_init(fields, frozen)
            if cls.__dict__.get("__init__") is __init__:
                cls.__init__ = init
            init(self, *args, **kwargs)

        return __init__

    def dataclass(cls=None, /, *, frozen=False, slots=False, eq=True, repr=True):
        def wrap(c):
            return _process(c, frozen, slots, eq, repr)

        return wrap if cls is None else wrap(cls)

    class _NamedTupleMeta(type):
        """What typing's NamedTupleMeta does, annotations left as they are."""

        def __new__(mcls, typename, bases, ns):
            fields = tuple(ns.get("__annotations__", {}))
            defaults = [name for name in fields if name in ns]
            if defaults and defaults != list(fields[len(fields) - len(defaults) :]):
                raise TypeError(f"{typename}: a field without a default follows one with")
            nt = _namedtuple(
                typename, fields, defaults=[ns[n] for n in defaults], module=ns["__module__"]
            )
            nt.__annotations__ = dict(ns.get("__annotations__", {}))
            for key, value in ns.items():
                if key not in ("__module__", "__annotations__") and key not in fields:
                    setattr(nt, key, value)
            return nt

    _NamedTuple = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})

    def NamedTuple(typename, fields=None, /):  # (typing's name)
        """Class syntax only (`class Point(NamedTuple): ...`)."""
        raise TypeError("smcroute.records.NamedTuple supports the class syntax only")

    NamedTuple.__mro_entries__ = lambda bases: (_NamedTuple,)
