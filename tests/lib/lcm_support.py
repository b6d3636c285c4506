"""Helpers of the tests/test_lcm_*.py files: a grammar-driven generator of random valid XDR
(hypothesis or a seeded random); the stellar-sdk reference decoding is in ``oracle``."""

from __future__ import annotations

import importlib.util
import struct
import sys

from . import REPO

REGRESSIONS = REPO / "tests" / "regressions" / "lcm"


def load_generator():
    """tools/gen_xdr_grammar.py as a module (tools/ is not a package)."""
    name = "gen_xdr_grammar"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "gen_xdr_grammar.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_batch(start: int, metas: list[bytes], end: int | None = None, count: int | None = None) -> bytes:
    end = start + len(metas) - 1 if end is None else end
    count = len(metas) if count is None else count
    return struct.pack(">III", start, end, count) + b"".join(metas)


class HypothesisChooser:
    """Choices drawn from hypothesis (shrinkable)."""

    def __init__(self, draw):
        self.draw = draw

    def int(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        return self.draw(st.integers(lo, hi))

    def bytes(self, n: int) -> bytes:
        from hypothesis import strategies as st

        return self.draw(st.binary(min_size=n, max_size=n))

    def choice(self, seq):
        from hypothesis import strategies as st

        return self.draw(st.sampled_from(seq))


class RandomChooser:
    """Choices from a seeded random.Random (deterministic sweeps, fuzz seeds)."""

    def __init__(self, seed):
        import random

        self.r = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def bytes(self, n: int) -> bytes:
        return self.r.randbytes(n)

    def choice(self, seq):
        return self.r.choice(seq)


class RandomXdr:
    """Random *valid* XDR bytes of a grammar type, walking the generated grammar.

    ``budget`` bounds the total number of array elements/optional bodies drawn so values stay
    small; once it is spent every array is empty and every optional absent (which always
    terminates: recursion in the Stellar grammar only goes through arrays and optionals).
    ``prefer`` maps a union's dotted path suffix to arm values drawn with priority (used to
    make fee-bump results and V2 ledgers common).
    """

    def __init__(self, chooser, budget: int = 60, max_len: int = 3):
        self.gen = load_generator()
        self.g = _grammar()
        self.c = chooser
        self.budget = budget
        self.max_len = max_len

    def value(self, name: str) -> bytes:
        out = bytearray()
        self._emit(self.g.defs[name], out)
        return bytes(out)

    def _count(self, hi: int | None) -> int:
        hi = self.max_len if hi is None else min(hi, self.max_len)
        if self.budget <= 0 or hi <= 0:
            return 0
        n = self.c.int(0, hi)
        self.budget -= n
        return n

    def _emit(self, d, out: bytearray) -> None:
        gen, c = self.gen, self.c
        if isinstance(d, gen.Prim):
            if d.kind == "bool":
                out += struct.pack(">I", c.int(0, 1))
            elif d.kind in ("int", "uint"):
                out += c.bytes(4)
            else:
                out += c.bytes(8)
        elif isinstance(d, (gen.Opaque, gen.String)):
            fixed = isinstance(d, gen.Opaque) and d.fixed
            n = d.n if fixed else c.int(0, min(d.n if d.n is not None else 9, 9))
            if not fixed:
                out += struct.pack(">I", n)
            out += c.bytes(n) + b"\0" * (-n % 4)
        elif isinstance(d, gen.Ref):
            self._emit(self.g.defs[d.name], out)
        elif isinstance(d, gen.Array):
            n = d.n if d.fixed else self._count(d.n)
            if not d.fixed:
                out += struct.pack(">I", n)
            for _ in range(n):
                self._emit(d.elem, out)
        elif isinstance(d, gen.Optional):
            present = self._count(1)
            out += struct.pack(">I", present)
            if present:
                self._emit(d.elem, out)
        elif isinstance(d, gen.Void):
            pass
        elif isinstance(d, gen.Struct):
            for _, f in d.fields:
                self._emit(f, out)
        elif isinstance(d, gen.Union):
            v, arm = c.choice(_arms(d))
            out += struct.pack(">i" if v < 0 else ">I", v)
            self._emit(arm, out)
        elif isinstance(d, gen.Enum):
            v = c.choice([v for _, v in d.members])
            out += struct.pack(">i" if v < 0 else ">I", v)
        else:
            raise TypeError(d)


_G = None


def _grammar():
    global _G
    if _G is None:
        _G = load_generator().load_grammar()
    return _G


def _arms(u):
    return [(v, a) for vs, _, a in u.arms for v in vs]
