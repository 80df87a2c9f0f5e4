"""BASE+DELTA mounts against transformers and the formula of docs/arithmetic.md.

Issue items 1 (logits of the mount equal the instruct model's, bit for bit)
and 6 (scaled, negated and multi-delta mounts equal the formula computed with
torch in float32)."""
import os

import pytest

import hfcheck as C
from conftest import ALL, SHARDED


def _base_layout(p, mp):
    """The mount shows the base's safetensors files, the same tensors in each."""
    assert C.st_files(mp) == C.st_files(p.base)
    bi, mi = C.index_map(p.base), C.index_map(mp)
    if bi is None:
        assert mi is None, f"{mp}: index.json of a single-file base"
    else:
        assert mi["weight_map"] == bi["weight_map"]
        total = sum(os.path.getsize(os.path.join(mp, f)) for f in C.st_files(mp))
        assert 0 < mi["metadata"]["total_size"] < total


@pytest.mark.parametrize("key", ALL)
def test_logits_equal_instruct(zoo, mounter, key):
    """from_pretrained(mount of BASE+DELTA) gives the instruct model's logits bit for bit
    (float32 delta made by Residuals.from_models; every architecture, dtype, layout)."""
    p = zoo(key)
    mp = mounter.mount(f"{p.base}+{p.res['f32']}")
    _base_layout(p, mp)
    cfg = C.read_json(os.path.join(mp, "config.json"))
    assert cfg["vocab_size"] == p.ins_vocab, f"config.json vocab_size {cfg['vocab_size']}"
    got = C.read_dir(mp, check_metadata={"format": "pt"})
    want = C.read_dir(p.ins)
    # the instruct file holds exactly the base file's names (no lm_head when tied)
    C.assert_same_tensors(got, want, f"{key}: mount vs instruct weights")
    ids = C.prompt_ids(p.ins_vocab)
    C.assert_bits(C.logits(mp, p.torch_dtype, ids), C.logits(p.ins, p.torch_dtype, ids),
                  f"{key}: logits of the mount vs the instruct model")


def _spec_terms(p, form):
    """(SPEC, [(scale, residuals dir)])"""
    r, r2 = p.res["f32"], p.res2
    if form == "half":
        return f"{p.base}+0.5*{r}", [(0.5, r)]
    if form == "two":
        return f"{p.base}+{r}+{r2}", [(1, r), (1, r2)]
    if form == "neg":
        return f"{p.base}-{r}", [(-1, r)]
    if form == "mixed":   # low-precision deltas, odd scales, a subtraction
        return (f"{p.base}+0.3*{p.res['bf16']}+1.5*{p.res['fp16']}-0.25*{r2}",
                [(0.3, p.res["bf16"]), (1.5, p.res["fp16"]), (-0.25, r2)])
    raise ValueError(form)


@pytest.mark.parametrize("form", ["half", "two", "neg", "mixed"])
@pytest.mark.parametrize("key", ALL)
def test_scaled_and_multi_delta_equal_formula(zoo, mounter, key, form):
    p = zoo(key)
    spec, terms = _spec_terms(p, form)
    mp = mounter.mount(spec)
    got = C.read_dir(mp, check_metadata={"format": "pt"})
    base = C.read_dir(p.base)
    deltas = [(s, C.read_dir(d)) for s, d in terms]
    assert sorted(got) == sorted(base)
    for k, b in base.items():
        want = C.formula(b, [(s, d[k]) for s, d in deltas])
        C.assert_bits(got[k], want, f"{key} {form}: {k}")
    cfg = C.read_json(os.path.join(mp, "config.json"))
    assert cfg["vocab_size"] == p.ins_vocab
    # and transformers loads it
    C.load_model(mp, p.torch_dtype)


@pytest.mark.parametrize("key", SHARDED)
def test_long_flags_equal_spec(zoo, mounter, key):
    """--base/--delta/--scale give the same bytes as the SPEC shorthand."""
    p = zoo(key)
    a = mounter.mount(f"{p.base}+0.5*{p.res['f32']}+{p.res2}")
    b = mounter.mount("--base", p.base, "--delta", p.res["f32"], "--scale", "0.5", "--delta", p.res2)
    for fn in sorted(os.listdir(a)):
        if fn == "README.md":
            continue
        assert C.read_bytes(os.path.join(a, fn)) == C.read_bytes(os.path.join(b, fn)), fn
