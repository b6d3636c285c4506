#!/usr/bin/env python3
"""Generate the LedgerCloseMeta scanner's XDR grammar (ext/_lcm_grammar.h) from stellar-sdk.

Source of truth: every class in ``stellar_sdk.xdr`` carries its XDR definition in its docstring
after ``XDR Source Code::``; XDR constants (``MAX_SIGNERS`` ...) are module attributes.  This script
parses those definitions with a small recursive-descent XDR parser (RFC 4506 syntax plus the
anonymous inline ``struct {...} name;`` / ``union switch (...) {...} name;`` that Stellar's .x files
use), builds a typed grammar, and emits C skip functions for every type reachable from
``LedgerCloseMeta``:

* ``xs_skip_<T>(p, ctx, depth)`` validates one ``T`` at ``p`` and returns the pointer after it
  (NULL on error, with ``ctx->err`` set);
* ``xs_scan_<T>`` is the same walk for the few types on the way to a *capture* (transaction
  hashes, ledger header fields), recording what it finds in ``ctx``.

Usage::

    python tools/gen_xdr_grammar.py            # rewrite ext/_lcm_grammar.h
    python tools/gen_xdr_grammar.py --check    # exit 1 if the committed file is stale
    python tools/gen_xdr_grammar.py --stdout   # print instead of writing

The output is deterministic (sorted, no timestamps) and records the stellar-sdk version.
On a protocol upgrade: upgrade stellar-sdk, run this script, rebuild ``_lcm``, run the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_PATH = REPO / "ext" / "_lcm_grammar.h"

ROOT = "LedgerCloseMeta"

# (struct type, field) -> capture kind.  HASH fields are appended, in walk order, to the hash list;
# the others are single slots that must be written exactly once per LedgerCloseMeta.
CAPTURES: dict[tuple[str, str], str] = {
    ("TransactionResultPair", "transactionHash"): "HASH",
    ("InnerTransactionResultPair", "transactionHash"): "HASH",
    ("LedgerHeaderHistoryEntry", "hash"): "HEADER_HASH",
    ("LedgerHeader", "previousLedgerHash"): "PREV_HASH",
    ("LedgerHeader", "ledgerSeq"): "SEQ",
}
SLOTS = ("SEQ", "HEADER_HASH", "PREV_HASH")
# Every path to a HASH capture must go through one of these fields (spec section 8: the
# TransactionResultPairs of txProcessing, and the inner pair of fee-bump results).
HASH_PATH_FIELD = "txProcessing"

# ---------------------------------------------------------------------------------------------
# Grammar model


@dataclass(frozen=True)
class Prim:
    kind: str  # int uint hyper uhyper bool float double


@dataclass(frozen=True)
class Opaque:
    fixed: bool
    n: int | None  # None = unbounded variable-length


@dataclass(frozen=True)
class String:
    n: int | None


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Array:
    elem: Decl
    fixed: bool
    n: int | None


@dataclass(frozen=True)
class Optional:
    elem: Decl


@dataclass(frozen=True)
class Void:
    pass


@dataclass(frozen=True)
class Struct:
    fields: tuple  # ((name, Decl), ...)


@dataclass(frozen=True)
class Union:
    dtype: Decl  # Prim('int'|'uint'|'bool') or Ref(enum)
    dname: str
    arms: tuple  # ((values tuple[int|str,...], arm name|None, Decl), ...)
    default: tuple | None  # (arm name|None, Decl)


@dataclass(frozen=True)
class Enum:
    members: tuple  # ((name, value), ...)


Decl = Prim | Opaque | String | Ref | Array | Optional | Void | Struct | Union | Enum

# ---------------------------------------------------------------------------------------------
# Parser

_TOKEN = re.compile(r"\s*(?:(-?0[xX][0-9a-fA-F]+|-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\S))")


def _tokenize(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    toks, pos = [], 0
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            break
        toks.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    if text[pos:].strip():
        raise SyntaxError(f"cannot tokenize {text[pos : pos + 40]!r}")
    return toks


class _Parser:
    def __init__(self, text: str, consts: dict[str, int]):
        self.t = _tokenize(text)
        self.i = 0
        self.consts = consts

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def next(self) -> str:
        if self.i >= len(self.t):
            raise SyntaxError("unexpected end of definition")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise SyntaxError(f"expected {tok!r}, got {got!r} near {' '.join(self.t[self.i - 5 : self.i + 5])}")

    def value(self) -> int | str:
        tok = self.next()
        if re.fullmatch(r"-?0[xX][0-9a-fA-F]+|-?\d+", tok):
            return int(tok, 0)
        return tok  # a named constant or enum member, resolved later

    def size(self) -> int:
        v = self.value()
        if isinstance(v, str):
            if v not in self.consts:
                raise SyntaxError(f"unknown constant {v}")
            v = self.consts[v]
        return v

    def definition(self) -> tuple[str, Decl]:
        kw = self.next()
        if kw == "typedef":
            name, decl = self.declaration()
        elif kw == "struct":
            name = self.next()
            decl = self.struct_body()
        elif kw == "union":
            name = self.next()
            decl = self.union_body()
        elif kw == "enum":
            name = self.next()
            decl = self.enum_body()
        else:
            raise SyntaxError(f"unexpected {kw!r}")
        self.expect(";")
        if self.peek() is not None:
            raise SyntaxError(f"trailing tokens after {name}: {self.t[self.i :]}")
        return name, decl

    def struct_body(self) -> Struct:
        self.expect("{")
        fields = []
        while self.peek() != "}":
            fields.append(self.declaration())
            self.expect(";")
        self.expect("}")
        return Struct(tuple(fields))

    def union_body(self) -> Union:
        self.expect("switch")
        self.expect("(")
        dname, dtype = self.declaration()
        self.expect(")")
        self.expect("{")
        arms, default = [], None
        while self.peek() != "}":
            if self.peek() == "default":
                self.next()
                self.expect(":")
                default = self.declaration()
                self.expect(";")
                continue
            values = []
            while self.peek() == "case":
                self.next()
                values.append(self.value())
                self.expect(":")
            if not values:
                raise SyntaxError(f"expected case near {self.t[self.i : self.i + 5]}")
            aname, adecl = self.declaration()
            self.expect(";")
            arms.append((tuple(values), aname, adecl))
        self.expect("}")
        return Union(dtype, dname, tuple(arms), default)

    def enum_body(self) -> Enum:
        self.expect("{")
        members = []
        while True:
            name = self.next()
            self.expect("=")
            members.append((name, self.value()))
            if self.peek() == ",":
                self.next()
                continue
            break
        self.expect("}")
        return Enum(tuple(members))

    def type_spec(self) -> Decl:
        tok = self.next()
        if tok == "unsigned":
            if self.peek() in ("int", "hyper"):
                return Prim("u" + self.next())
            return Prim("uint")
        if tok in ("int", "hyper", "bool", "float", "double"):
            return Prim(tok)
        if tok == "struct":
            return self.struct_body()
        if tok == "union":
            return self.union_body()
        if tok == "enum":
            return self.enum_body()
        if not re.fullmatch(r"[A-Za-z_]\w*", tok):
            raise SyntaxError(f"bad type {tok!r}")
        return Ref(tok)

    def declaration(self) -> tuple[str | None, Decl]:
        if self.peek() == "void":
            self.next()
            return None, Void()
        if self.peek() in ("opaque", "string"):
            kind = self.next()
            name = self.next()
            if self.peek() == "[" and kind == "opaque":
                self.next()
                n = self.size()
                self.expect("]")
                return name, Opaque(True, n)
            self.expect("<")
            n = None if self.peek() == ">" else self.size()
            self.expect(">")
            return name, (Opaque(False, n) if kind == "opaque" else String(n))
        ts = self.type_spec()
        if self.peek() == "*":
            self.next()
            return self.next(), Optional(ts)
        name = self.next()
        if self.peek() == "[":
            self.next()
            n = self.size()
            self.expect("]")
            return name, Array(ts, True, n)
        if self.peek() == "<":
            self.next()
            n = None if self.peek() == ">" else self.size()
            self.expect(">")
            return name, Array(ts, False, n)
        return name, ts


# ---------------------------------------------------------------------------------------------
# Loading from stellar-sdk


@dataclass
class Grammar:
    sdk_version: str
    defs: dict[str, Decl]  # XDR name -> definition (enum/union values resolved to ints)
    consts: dict[str, int]
    enum_values: dict[str, int]  # enum member name -> value
    classes: dict[str, str]  # XDR name -> stellar_sdk.xdr class name


def _resolve(decl: Decl, enum_values: dict[str, int], consts: dict[str, int]) -> Decl:
    def val(v):
        if isinstance(v, int):
            return v
        if v in enum_values:
            return enum_values[v]
        if v in consts:
            return consts[v]
        raise SyntaxError(f"unknown case value {v}")

    r = lambda d: _resolve(d, enum_values, consts)  # noqa: E731
    if isinstance(decl, Struct):
        return Struct(tuple((n, r(d)) for n, d in decl.fields))
    if isinstance(decl, Union):
        arms = tuple((tuple(val(v) for v in vs), n, r(d)) for vs, n, d in decl.arms)
        default = None if decl.default is None else (decl.default[0], r(decl.default[1]))
        return Union(r(decl.dtype), decl.dname, arms, default)
    if isinstance(decl, Enum):
        return Enum(tuple((n, val(v)) for n, v in decl.members))
    if isinstance(decl, Array):
        return Array(r(decl.elem), decl.fixed, decl.n)
    if isinstance(decl, Optional):
        return Optional(r(decl.elem))
    return decl


def load_grammar() -> Grammar:
    """Parse every XDR definition carried by stellar-sdk's XDR classes."""
    import stellar_sdk
    import stellar_sdk.xdr as x

    consts = {n: v for n, v in vars(x).items() if n.isupper() and isinstance(v, int) and not isinstance(v, bool)}
    consts.pop("DEFAULT_XDR_MAX_DEPTH", None)  # stellar-sdk's decoder setting, not an XDR constant
    raw: dict[str, Decl] = {}
    classes: dict[str, str] = {}
    for cname, obj in sorted(vars(x).items()):
        if not inspect.isclass(obj) or not (obj.__doc__ and "XDR Source Code::" in obj.__doc__):
            continue
        text = inspect.cleandoc(obj.__doc__.split("XDR Source Code::", 1)[1])
        first = text.split(None, 2)
        if first[0] in ("struct", "union") and first[1] in ("{", "switch"):
            continue  # anonymous member type: parsed inline within its parent
        name, decl = _Parser(text, consts).definition()
        if name in raw and raw[name] != decl:
            raise SyntaxError(f"conflicting definitions of {name}")
        raw[name] = decl
        classes[name] = cname
    enum_values: dict[str, int] = {}

    def collect(d):
        if isinstance(d, Enum):
            for n, v in d.members:
                v = v if isinstance(v, int) else enum_values.get(v, consts.get(v))
                if v is None:
                    raise SyntaxError(f"enum member {n}: unknown value")
                if enum_values.get(n, v) != v:
                    raise SyntaxError(f"enum member {n} defined twice")
                enum_values[n] = v

    for d in raw.values():
        collect(d)
    defs = {n: _resolve(d, enum_values, consts) for n, d in raw.items()}
    return Grammar(stellar_sdk.__version__, defs, consts, enum_values, classes)


# ---------------------------------------------------------------------------------------------
# Analysis


class Analysis:
    def __init__(self, g: Grammar, root: str = ROOT):
        self.g = g
        self.defs = g.defs
        self.reachable = self._reachable([root])
        self.recursive = self._recursive()
        self.minsz = self._min_sizes()
        self.scan_types = self._scan_types()

    # -- type graph
    def refs(self, d: Decl) -> list[str]:
        if isinstance(d, Ref):
            return [d.name]
        if isinstance(d, (Array, Optional)):
            return self.refs(d.elem)
        if isinstance(d, Struct):
            return [r for _, f in d.fields for r in self.refs(f)]
        if isinstance(d, Union):
            out = self.refs(d.dtype)
            for _, _, a in d.arms:
                out += self.refs(a)
            if d.default:
                out += self.refs(d.default[1])
            return out
        return []

    def _reachable(self, roots: list[str]) -> list[str]:
        seen, todo = set(), list(roots)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            if n not in self.defs:
                raise SyntaxError(f"undefined type {n}")
            seen.add(n)
            todo.extend(self.refs(self.defs[n]))
        return sorted(seen)

    def _recursive(self) -> set[str]:
        """Named types on a cycle of the type graph (Tarjan's SCC)."""
        index, low, stack, on, out = {}, {}, [], set(), set()
        counter = [0]
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))  # DFS depth ~ number of types

        def strong(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            succ = self.refs(self.defs[v])
            for w in succ:
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in succ:
                    out.update(comp)

        for v in self.reachable:
            if v not in index:
                strong(v)
        return out

    # -- sizes
    def _min_sizes(self) -> dict[str, int]:
        ms = {n: 0 for n in self.reachable}
        for _ in range(len(ms) + 2):
            changed = False
            for n in self.reachable:
                v = self._min(self.defs[n], ms)
                if v != ms[n]:
                    ms[n], changed = v, True
            if not changed:
                return ms
        raise SyntaxError("minimum sizes do not converge (a type contains itself unconditionally)")

    def _min(self, d: Decl, ms: dict[str, int]) -> int:
        if isinstance(d, Prim):
            return 8 if d.kind in ("hyper", "uhyper", "double") else 4
        if isinstance(d, Opaque):
            return pad4(d.n) if d.fixed else 4
        if isinstance(d, String):
            return 4
        if isinstance(d, Ref):
            return ms[d.name]
        if isinstance(d, Array):
            return d.n * self._min(d.elem, ms) if d.fixed else 4
        if isinstance(d, Optional):
            return 4
        if isinstance(d, Void):
            return 0
        if isinstance(d, Struct):
            return sum(self._min(f, ms) for _, f in d.fields)
        if isinstance(d, Union):
            arms = [self._min(a, ms) for _, _, a in d.arms]
            if d.default:
                arms.append(self._min(d.default[1], ms))
            return 4 + min(arms)
        if isinstance(d, Enum):
            return 4
        raise TypeError(d)

    def min_size(self, d: Decl) -> int:
        return self._min(d, self.minsz)

    def const_size(self, d: Decl) -> int | None:
        """Byte size if every encoding of ``d`` has the same size (it may still need validation:
        enum values, discriminants, bools, padding), else None.  Recursive types are never
        constant-size here, so they always go through their depth-checked function."""
        if isinstance(d, Prim):
            return 8 if d.kind in ("hyper", "uhyper", "double") else 4
        if isinstance(d, Opaque):
            return pad4(d.n) if d.fixed else None
        if isinstance(d, Ref):
            if d.name in self.recursive:
                return None
            return self.const_size(self.defs[d.name])
        if isinstance(d, Enum):
            return 4
        if isinstance(d, Array):
            if not d.fixed:
                return None
            if d.n > 8 and self.pure_size(d.elem) is None:
                return None  # would unroll n element checks: keep the loop instead
            e = self.const_size(d.elem)
            return None if e is None else e * d.n
        if isinstance(d, Void):
            return 0
        if isinstance(d, Struct):
            total = 0
            for _, f in d.fields:
                s = self.const_size(f)
                if s is None:
                    return None
                total += s
            return total
        if isinstance(d, Union):
            arms = [a for _, _, a in d.arms] + ([d.default[1]] if d.default else [])
            sizes = {self.const_size(a) for a in arms}
            if len(sizes) != 1 or None in sizes:
                return None
            return 4 + sizes.pop()
        return None

    def pure_size(self, d: Decl) -> int | None:
        """Byte size if ``d`` has a constant size and needs no validation beyond bounds, else None."""
        if isinstance(d, Prim):
            return None if d.kind == "bool" else (8 if d.kind in ("hyper", "uhyper", "double") else 4)
        if isinstance(d, Opaque):
            return d.n if d.fixed and d.n % 4 == 0 else None
        if isinstance(d, Ref):
            if d.name in self.recursive:
                return None
            return self.pure_size(self.defs[d.name])
        if isinstance(d, Array):
            if not d.fixed:
                return None
            e = self.pure_size(d.elem)
            return None if e is None else e * d.n
        if isinstance(d, Void):
            return 0
        if isinstance(d, Struct):
            total = 0
            for _, f in d.fields:
                s = self.pure_size(f)
                if s is None:
                    return None
                total += s
            return total
        return None

    # -- captures
    def contains_capture(self, d: Decl, seen: frozenset = frozenset()) -> bool:
        if isinstance(d, Ref):
            if d.name in seen:
                return False
            nd = self.defs[d.name]
            if isinstance(nd, Struct) and any((d.name, f) in CAPTURES for f, _ in nd.fields):
                return True
            return self.contains_capture(nd, seen | {d.name})
        if isinstance(d, (Array, Optional)):
            return self.contains_capture(d.elem, seen)
        if isinstance(d, Struct):
            return any(self.contains_capture(f, seen) for _, f in d.fields)
        if isinstance(d, Union):
            arms = [a for _, _, a in d.arms] + ([d.default[1]] if d.default else [])
            return any(self.contains_capture(a, seen) for a in arms)
        return False

    def _scan_types(self) -> set[str]:
        out = {n for n in self.reachable if self.contains_capture(Ref(n))}
        bad = out & self.recursive
        if bad:
            raise SyntaxError(f"captures inside recursive types are not supported: {sorted(bad)}")
        return out

    def capture_paths(self) -> dict[str, list[str]]:
        """Every path from the root to each capture kind, e.g. 'v1.txProcessing[].result.transactionHash'."""
        out: dict[str, list[str]] = {}

        def walk(d: Decl, owner: str | None, path: str):
            if isinstance(d, Ref):
                if d.name not in self.scan_types:
                    return
                walk(self.defs[d.name], d.name, path)
            elif isinstance(d, Array):
                walk(d.elem, None, path + "[]")
            elif isinstance(d, Optional):
                walk(d.elem, None, path + "?")
            elif isinstance(d, Struct):
                for fname, f in d.fields:
                    p = f"{path}.{fname}" if path else fname
                    if owner is not None and (owner, fname) in CAPTURES:
                        out.setdefault(CAPTURES[(owner, fname)], []).append(p)
                    walk(f, None, p)
            elif isinstance(d, Union):
                for _, aname, a in d.arms:
                    walk(a, None, f"{path}.{aname}" if path else aname)

        walk(self.defs[ROOT], ROOT, "")
        return out

    def check_captures(self) -> dict[str, list[str]]:
        paths = self.capture_paths()
        for kind in set(CAPTURES.values()):
            if kind not in paths:
                raise SyntaxError(f"capture {kind} is unreachable from {ROOT}")
        arms = [a for _, a, _ in self.defs[ROOT].arms]
        for kind in SLOTS:
            for p in paths[kind]:
                if "[]" in p or "?" in p:
                    raise SyntaxError(f"slot capture {kind} inside an array/optional: {p}")
            heads = sorted(p.split(".")[0] for p in paths[kind])
            if heads != sorted(arms):
                raise SyntaxError(f"slot capture {kind} must occur exactly once per {ROOT} arm: {paths[kind]}")
        for p in paths["HASH"]:
            if f".{HASH_PATH_FIELD}[]" not in p:
                raise SyntaxError(f"transaction hash captured outside {HASH_PATH_FIELD}: {p}")
        return paths


def pad4(n: int) -> int:
    return (n + 3) & ~3


# ---------------------------------------------------------------------------------------------
# C emission


def cname(n: str) -> str:
    return re.sub(r"\W", "_", n)


class Emitter:
    def __init__(self, a: Analysis):
        self.a = a
        self.g = a.g
        self.var = 0
        self.type_ids = {n: i for i, n in enumerate(a.reachable)}
        # named types that get their own function: everything not folded into a constant skip.
        self.funcs = [n for n in a.reachable if a.pure_size(Ref(n)) is None]

    def fresh(self, base: str) -> str:
        self.var += 1
        return f"{base}{self.var}"

    def fail(self, code: str, tid: int, at: str = "p") -> str:
        return f"return xs_fail(c, {code}, {at}, {tid});"

    def call(self, name: str, mode: str) -> list[str]:
        fn = "scan" if (mode == "scan" and name in self.a.scan_types) else "skip"
        return [f"p = xs_{fn}_{cname(name)}(p, c, depth);", "if (XS_UNLIKELY(p == NULL)) return NULL;"]

    def checks(self, d: Decl, off: int, mode: str, tid: int, owner: str | None = None) -> list[str]:
        """Validation (and captures) of a constant-size value at ``p + off``; bounds already checked."""
        a = self.a
        at = f"p + {off}" if off else "p"
        if a.pure_size(d) is not None and not (mode == "scan" and self._has_capture(d, owner)):
            return []
        if isinstance(d, Prim):
            assert d.kind == "bool"
            return [f"if (XS_UNLIKELY(xs_u32({at}) > 1u)) {self.fail('XS_E_BOOL', tid, at)}"]
        if isinstance(d, Opaque):
            pad = pad4(d.n) - d.n
            q = f"p + {off + d.n}"
            return [f"if (XS_UNLIKELY(!xs_pad_ok({q}, {pad}))) {self.fail('XS_E_PAD', tid, q)}"]
        if isinstance(d, Ref):
            nd = self.g.defs[d.name]
            if isinstance(nd, Enum):
                return [
                    f"if (XS_UNLIKELY(!xs_enum_{cname(d.name)}((int32_t)xs_u32({at})))) "
                    f"{self.fail('XS_E_ENUM', self.type_ids[d.name], at)}"
                ]
            return self.checks(nd, off, mode, self.type_ids[d.name], owner=d.name)
        if isinstance(d, Array):
            es = a.const_size(d.elem)
            out = []
            for i in range(d.n):
                out += self.checks(d.elem, off + i * es, mode, tid)
            return out
        if isinstance(d, Struct):
            out = []
            for fname, f in d.fields:
                cap = CAPTURES.get((owner, fname)) if (mode == "scan" and owner) else None
                if cap == "HASH":
                    out.append(f"if (XS_UNLIKELY(xs_push_hash(c, p + {off}) != 0)) {self.fail('XS_E_NOMEM', tid)}")
                elif cap:
                    out.append(f"c->slot[XS_SLOT_{cap}] = p + {off}; c->slot_hits[XS_SLOT_{cap}]++;")
                out += self.checks(f, off, mode, tid)
                off += a.const_size(f)
            return out
        if isinstance(d, Union):
            ctype = self._disc_ctype(d)
            lines = [f"switch (({ctype})xs_u32({at})) {{"]
            arms = list(d.arms)
            for values, _, arm in arms:
                for val in values:
                    lines.append(f"case {self._lit(val, ctype)}:")
                body = self.checks(arm, off + 4, mode, tid)
                if body:
                    lines += ["    {"] + ["        " + x for x in body] + ["    }"]
                lines.append("    break;")
            lines.append("default:")
            if d.default is not None:
                body = self.checks(d.default[1], off + 4, mode, tid)
                lines += (["    {"] + ["        " + x for x in body] + ["    }"]) if body else []
                lines.append("    break;")
            else:
                lines.append(f"    {self.fail('XS_E_ARM', tid, at)}")
            lines.append("}")
            return lines
        if isinstance(d, Void):
            return []
        raise TypeError(d)

    def _has_capture(self, d: Decl, owner: str | None) -> bool:
        if isinstance(d, Ref):
            return self.a.contains_capture(d)
        if isinstance(d, Struct) and owner and any((owner, f) in CAPTURES for f, _ in d.fields):
            return True
        return self.a.contains_capture(d)

    def _disc_ctype(self, d: Union) -> str:
        dt = d.dtype
        if isinstance(dt, Ref):
            dt = Prim("int") if isinstance(self.g.defs[dt.name], Enum) else self.g.defs[dt.name]
        if not (isinstance(dt, Prim) and dt.kind in ("int", "uint", "bool")):
            raise SyntaxError(f"unsupported discriminant {d.dtype}")
        return "uint32_t" if dt.kind == "uint" else "int32_t"

    @staticmethod
    def _lit(val: int, ctype: str) -> str:
        if ctype == "uint32_t":
            return f"{val}u"
        return f"{val}" if val >= -0x7FFFFFFF else "INT32_MIN"

    def emit(self, d: Decl, mode: str, tid: int, owner: str | None = None) -> list[str]:
        a = self.a
        k = a.const_size(d)
        if k is not None:
            # one bounds check for the whole value, then validation at constant offsets
            if k == 0:
                return []
            return [f"XS_NEED({k});"] + self.checks(d, 0, mode, tid, owner) + [f"p += {k};"]
        if isinstance(d, Prim):  # bool
            assert d.kind == "bool"
            return ["XS_NEED(4);", f"if (XS_UNLIKELY(xs_u32(p) > 1u)) {self.fail('XS_E_BOOL', tid)}", "p += 4;"]
        if isinstance(d, Opaque) and d.fixed:
            n = d.n
            return [
                f"XS_NEED({pad4(n)});",
                f"if (XS_UNLIKELY(!xs_pad_ok(p + {n}, {pad4(n) - n}))) {self.fail('XS_E_PAD', tid, f'p + {n}')}",
                f"p += {pad4(n)};",
            ]
        if isinstance(d, (Opaque, String)):
            v = self.fresh("len")
            lines = ["XS_NEED(4);", f"uint32_t {v} = xs_u32(p); p += 4;"]
            if d.n is not None and d.n < 0xFFFFFFFF:
                lines.append(f"if (XS_UNLIKELY({v} > {d.n}u)) {self.fail('XS_E_MAXLEN', tid, 'p - 4')}")
            lines += [
                f"XS_NEED(xs_pad4({v}));",
                f"if (XS_UNLIKELY(!xs_pad_ok(p + {v}, xs_pad4({v}) - {v}))) {self.fail('XS_E_PAD', tid, f'p + {v}')}",
                f"p += xs_pad4({v});",
            ]
            return ["{"] + ["    " + x for x in lines] + ["}"]
        if isinstance(d, Ref):
            nd = self.g.defs[d.name]
            if isinstance(nd, Enum):
                return [
                    "XS_NEED(4);",
                    f"if (XS_UNLIKELY(!xs_enum_{cname(d.name)}((int32_t)xs_u32(p)))) "
                    f"{self.fail('XS_E_ENUM', self.type_ids[d.name])}",
                    "p += 4;",
                ]
            if not isinstance(nd, (Struct, Union)) and d.name not in a.recursive:
                # typedef of an array/opaque/string/alias: emit its body here instead of a call
                return self.emit(nd, mode, self.type_ids[d.name])
            return self.call(d.name, mode)
        if isinstance(d, Array):
            es = a.pure_size(d.elem)
            v, i = self.fresh("n"), self.fresh("i")
            body = self.emit(d.elem, mode, tid)
            if d.fixed:
                return [f"for (uint32_t {i} = 0; {i} < {d.n}u; {i}++) {{"] + ["    " + x for x in body] + ["}"]
            ms = a.min_size(d.elem)
            if ms <= 0:
                raise SyntaxError(f"array of zero-size elements in type #{tid}")
            lines = ["XS_NEED(4);", f"uint32_t {v} = xs_u32(p); p += 4;"]
            if d.n is not None:
                lines.append(f"if (XS_UNLIKELY({v} > {d.n}u)) {self.fail('XS_E_MAXLEN', tid, 'p - 4')}")
            # count x minimum element size must fit in what is left before looping
            lines.append(
                f"if (XS_UNLIKELY((uint64_t){v} * {ms}u > (uint64_t)(end - p))) {self.fail('XS_E_COUNT', tid, 'p - 4')}"
            )
            if es is not None:
                lines.append(f"p += (size_t){v} * {es}u;")
            else:
                lines += [f"for (uint32_t {i} = 0; {i} < {v}; {i}++) {{"] + ["    " + x for x in body] + ["}"]
            return ["{"] + ["    " + x for x in lines] + ["}"]
        if isinstance(d, Optional):
            v = self.fresh("opt")
            body = self.emit(d.elem, mode, tid)
            lines = (
                [
                    "XS_NEED(4);",
                    f"uint32_t {v} = xs_u32(p);",
                    f"if (XS_UNLIKELY({v} > 1u)) {self.fail('XS_E_OPT', tid)}",
                    "p += 4;",
                    f"if ({v}) {{",
                ]
                + ["    " + x for x in body]
                + ["}"]
            )
            return ["{"] + ["    " + x for x in lines] + ["}"]
        if isinstance(d, Struct):
            lines: list[str] = []
            run: list = []  # consecutive constant-size fields: one bounds check for all of them

            def flush():
                nonlocal run
                total = sum(a.const_size(f) for _, f in run)
                if total:
                    part = Struct(tuple(run))
                    lines.append(f"XS_NEED({total});")
                    lines.extend(self.checks(part, 0, mode, tid, owner))
                    lines.append(f"p += {total};")
                run = []

            for fname, f in d.fields:
                if a.const_size(f) is not None:
                    run.append((fname, f))
                    continue
                if mode == "scan" and owner and (owner, fname) in CAPTURES:
                    raise SyntaxError(f"capture field {owner}.{fname} is not fixed-size")
                flush()
                lines += self.emit(f, mode, tid)
            flush()
            return lines
        if isinstance(d, Union):
            ctype = self._disc_ctype(d)
            v = self.fresh("disc")
            lines = ["XS_NEED(4);", f"{ctype} {v} = ({ctype})xs_u32(p); p += 4;", f"switch ({v}) {{"]
            for values, _, arm in d.arms:
                for val in values:
                    lines.append(f"case {self._lit(val, ctype)}:")
                lines += ["    {"] + ["        " + x for x in self.emit(arm, mode, tid)] + ["    }", "    break;"]
            lines.append("default:")
            if d.default is not None:
                lines += (
                    ["    {"] + ["        " + x for x in self.emit(d.default[1], mode, tid)] + ["    }", "    break;"]
                )
            else:
                lines.append(f"    {self.fail('XS_E_ARM', tid, 'p - 4')}")
            lines.append("}")
            return ["{"] + ["    " + x for x in lines] + ["}"]
        if isinstance(d, Enum):
            raise AssertionError("enums are emitted as checks at their use")
        raise TypeError(d)

    def function(self, name: str, mode: str) -> list[str]:
        tid = self.type_ids[name]
        d = self.g.defs[name]
        self.var = 0
        body = []
        if name in self.a.recursive:
            body += [
                "if (XS_UNLIKELY(depth <= 0)) " + self.fail("XS_E_DEPTH", tid),
                "depth--;",
            ]
        if isinstance(d, Enum):
            body += [
                "XS_NEED(4);",
                f"if (XS_UNLIKELY(!xs_enum_{cname(name)}((int32_t)xs_u32(p)))) {self.fail('XS_E_ENUM', tid)}",
                "p += 4;",
            ]
        else:
            body += self.emit(d, mode, tid, owner=name)
        sig = f"static const uint8_t *xs_{mode}_{cname(name)}(const uint8_t *p, xs_ctx *c, int depth)"
        pre = [
            "    const uint8_t *const end = c->end;",
            f"    const int xs_tid = {tid}; /* {name} */",
            "    (void)end; (void)xs_tid;",
        ]
        if "depth" not in " ".join(body):
            pre.append("    (void)depth;")
        return [sig, "{"] + pre + ["    " + x for x in body] + ["    return p;", "}", ""]

    def enum_check(self, name: str) -> list[str]:
        vals = sorted({v for _, v in self.g.defs[name].members})
        sig = f"static inline int xs_enum_{cname(name)}(int32_t v)"
        lo, hi = vals[0], vals[-1]
        if vals == list(range(lo, hi + 1)):
            # unsigned subtraction: one compare for the whole range, no signed overflow
            return [sig, "{", f"    return (uint32_t)v - (uint32_t)({lo}) <= {hi - lo}u;", "}", ""]
        cases = " ".join(f"case {v}:" for v in vals)
        return [sig, "{", f"    switch (v) {{ {cases} return 1; default: return 0; }}", "}", ""]

    def render(self) -> str:
        a, g = self.a, self.g
        paths = a.check_captures()
        grammar_text = repr(sorted((n, g.defs[n]) for n in a.reachable)).encode()
        out = [
            "/* GENERATED FILE - DO NOT EDIT.",
            " * Generated by tools/gen_xdr_grammar.py from the XDR definitions carried by",
            f" * stellar-sdk {g.sdk_version} (stellar_sdk.xdr class docstrings and constants).",
            f" * Root type: {ROOT}; {len(a.reachable)} reachable types, {len(self.funcs)} skip functions,",
            f" * {len(a.recursive)} recursive types (depth-checked), {len(a.scan_types)} scan types.",
            f" * Grammar digest (sha256 of the parsed definitions): {hashlib.sha256(grammar_text).hexdigest()}",
            " *",
            " * Capture paths (verified by the generator):",
        ]
        for kind in sorted(paths):
            for p in paths[kind]:
                out.append(f" *   {kind:<11} {ROOT}.{p}")
        out += [
            " */",
            "#ifndef RPCBACKFILL_LCM_GRAMMAR_H",
            "#define RPCBACKFILL_LCM_GRAMMAR_H",
            '#include "_lcm_rt.h"',
            "",
            f'#define XS_SDK_VERSION "{g.sdk_version}"',
            f"#define XS_NUM_TYPES {len(a.reachable)}",
            f"#define XS_MIN_SIZE_{ROOT} {a.minsz[ROOT]}u",
            "",
            "static const char *const xs_type_names[XS_NUM_TYPES] = {",
        ]
        out += [f'    "{n}",' for n in a.reachable]
        out += ["};", ""]
        for n in a.reachable:
            if isinstance(g.defs[n], Enum):
                out += self.enum_check(n)
        decls = []
        bodies = []
        for n in self.funcs:
            modes = ["skip"] + (["scan"] if n in a.scan_types else [])
            for m in modes:
                f = self.function(n, m)
                decls.append(f[0] + ";")
                bodies += f
        out += decls + [""] + bodies
        # per-type entry points (tests validate every type on its own against stellar-sdk)
        out += [
            "typedef const uint8_t *(*xs_skip_fn)(const uint8_t *, xs_ctx *, int);",
            "/* skip function of each type, NULL for constant-size types (see xs_const_size) */",
            "static const xs_skip_fn xs_skip_table[XS_NUM_TYPES] = {",
        ]
        out += [f"    xs_skip_{cname(n)}," if n in self.funcs else "    NULL," for n in a.reachable]
        out += ["};", "static const int32_t xs_const_size[XS_NUM_TYPES] = {"]
        out += [f"    {a.pure_size(Ref(n)) if n not in self.funcs else -1}," for n in a.reachable]
        out += ["};", ""]
        out += ["#endif /* RPCBACKFILL_LCM_GRAMMAR_H */", ""]
        return "\n".join(out)


def generate() -> str:
    return Emitter(Analysis(load_grammar())).render()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    ap.add_argument("--stdout", action="store_true", help="print the generated header")
    ap.add_argument("--out", type=Path, default=OUT_PATH)
    args = ap.parse_args(argv)
    text = generate()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        cur = args.out.read_text() if args.out.exists() else ""
        if cur != text:
            print(f"{args.out} is stale: run tools/gen_xdr_grammar.py", file=sys.stderr)
            return 1
        return 0
    _write_atomic(args.out, text)
    print(f"wrote {args.out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
