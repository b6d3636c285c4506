"""The generated grammar: committed file is fresh, the parse is complete and agrees with
stellar-sdk type by type (random valid values decoded by the SDK and skipped natively)."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcbackfill import _lcm, lcm
from rpcbackfill.errors import XdrError
from tests.lib.lcm_support import REPO, HypothesisChooser, RandomChooser, RandomXdr, load_generator

gen = load_generator()
GRAMMAR = gen.load_grammar()
ANALYSIS = gen.Analysis(GRAMMAR)


def test_committed_grammar_is_fresh():
    committed = (REPO / "ext" / "_lcm_grammar.h").read_text()
    assert committed == gen.generate(), "ext/_lcm_grammar.h is stale: run python tools/gen_xdr_grammar.py"


def test_generation_is_deterministic():
    assert gen.generate() == gen.generate()


def test_extension_built_from_current_grammar():
    import stellar_sdk

    assert lcm.SDK_VERSION == stellar_sdk.__version__ == GRAMMAR.sdk_version
    assert _lcm.TYPE_NAMES == tuple(ANALYSIS.reachable)
    assert lcm.MIN_LCM_SIZE == ANALYSIS.minsz["LedgerCloseMeta"]


def test_every_sdk_definition_parsed():
    from stellar_sdk import xdr

    named = set()
    for cname, obj in vars(xdr).items():
        if inspect.isclass(obj) and obj.__doc__ and "XDR Source Code::" in obj.__doc__:
            text = inspect.cleandoc(obj.__doc__.split("XDR Source Code::", 1)[1]).split()
            if not (text[0] in ("struct", "union") and text[1] in ("{", "switch")):
                named.add(cname)
    assert set(GRAMMAR.classes.values()) == named
    assert len(GRAMMAR.defs) == len(named) > 400


def test_parser_forms():
    p = gen._Parser(
        "struct S { unsigned hyper a; opaque b[3]; string c<MAXC>; T d<>; T *e; "
        "union switch (int v) { case 0: void; case 1: case 2: int x; default: bool y; } f; };",
        {"MAXC": 7},
    )
    name, d = p.definition()
    assert name == "S"
    f = dict(d.fields)
    assert f["a"] == gen.Prim("uhyper")
    assert f["b"] == gen.Opaque(True, 3)
    assert f["c"] == gen.String(7)
    assert f["d"] == gen.Array(gen.Ref("T"), False, None)
    assert f["e"] == gen.Optional(gen.Ref("T"))
    u = f["f"]
    assert [vs for vs, _, _ in u.arms] == [(0,), (1, 2)]
    assert u.default == ("y", gen.Prim("bool"))
    with pytest.raises(SyntaxError):
        gen._Parser("struct S { int a; ", {}).definition()
    with pytest.raises(SyntaxError):
        gen._Parser("typedef opaque X[NOPE];", {}).definition()


def test_capture_paths_are_the_spec_ones():
    paths = ANALYSIS.check_captures()
    assert sorted(paths["SEQ"]) == [f"v{i}.ledgerHeader.header.ledgerSeq" for i in range(3)]
    assert sorted(paths["HEADER_HASH"]) == [f"v{i}.ledgerHeader.hash" for i in range(3)]
    for p in paths["HASH"]:
        assert ".txProcessing[]." in p
    assert len(paths["HASH"]) == 6  # outer + fee-bump inner, for V0, V1 and V2


def test_batch_definition_matches_hand_written_split():
    # split_batch parses LedgerCloseMetaBatch by hand; make sure the grammar still says so
    d = GRAMMAR.defs["LedgerCloseMetaBatch"]
    assert d == gen.Struct(
        (
            ("startSequence", gen.Ref("uint32")),
            ("endSequence", gen.Ref("uint32")),
            ("ledgerCloseMetas", gen.Array(gen.Ref("LedgerCloseMeta"), False, None)),
        )
    )
    assert GRAMMAR.defs["uint32"] == gen.Prim("uint")


def test_recursive_types_are_depth_checked():
    assert {"SCVal", "ClaimPredicate"} <= ANALYSIS.recursive
    header = (REPO / "ext" / "_lcm_grammar.h").read_text()
    for name in ANALYSIS.recursive:
        body = header.split(f"*xs_skip_{name}(const uint8_t *p, xs_ctx *c, int depth)\n{{", 1)[1][:400]
        assert "XS_E_DEPTH" in body, name


def _sdk_class(name):
    from stellar_sdk import xdr

    return getattr(xdr, GRAMMAR.classes[name])


# Types the per-type test draws (every reachable type; hypothesis picks among them).
TYPES = [n for n in ANALYSIS.reachable if not isinstance(GRAMMAR.defs[n], gen.Enum)]


def _check_type_value(name, value, cut):
    cls = _sdk_class(name)
    obj = cls.from_xdr_bytes(value)  # the SDK accepts what our grammar produced...
    assert obj.to_xdr_bytes() == value  # ...and encodes it back identically
    assert _lcm._skip_type(name, value) == len(value)  # the native skip consumes exactly it
    assert _lcm._skip_type(name, b"\xee" * 3 + value + b"\xff", 3) == len(value)
    if len(value):
        with pytest.raises(XdrError):
            _lcm._skip_type(name, value[: cut % len(value)])


@pytest.mark.parametrize("name", TYPES)
def test_every_type_random_values_agree_with_sdk(name):
    # deterministic sweep: every reachable type, a few seeded random values each
    for seed in range(6):
        ch = RandomChooser(f"{name}/{seed}")
        value = RandomXdr(ch, budget=10, max_len=2).value(name)
        _check_type_value(name, value, ch.int(0, 1 << 30))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), name=st.sampled_from(TYPES))
def test_random_value_of_each_type_agrees_with_sdk(data, name):
    value = RandomXdr(HypothesisChooser(data.draw), budget=12, max_len=2).value(name)
    _check_type_value(name, value, data.draw(st.integers(0, 1 << 30)))


def test_below_minimum_size_is_truncated():
    for n in _lcm.TYPE_NAMES:
        k = ANALYSIS.minsz[n]
        assert k > 0, n
        with pytest.raises(XdrError):
            _lcm._skip_type(n, b"\0" * (k - 1))


def test_unknown_type_name():
    with pytest.raises(KeyError):
        _lcm._skip_type("NoSuchType", b"")
