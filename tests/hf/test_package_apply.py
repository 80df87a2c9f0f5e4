"""Mounts against the `residuals` package's own apply (issue item 2).

- `--dtype float32` equals what Residuals.apply writes on its default path
  (base loaded in float32, float32 sums, saved float32);
- `--rounding cast-first` equals Residuals.apply on a bf16 / fp16 model
  instance (`t.add_((d * scale).to(t.dtype))`).
"""
import os

import pytest

import hfcheck as C
import hfmodels as M
from conftest import ALL, SHARDED


def _spec(p, rdt, scale):
    return f"{p.base}+{'' if scale == 1 else f'{scale}*'}{p.res[rdt]}"


def _package_apply_dir(p, rdt, scale, out):
    """Residuals.apply(base path, out_dir=...): the package's default float32 path."""
    from residuals import Residuals
    res = Residuals.from_pretrained(p.res[rdt])
    res.apply(p.base, out_dir=out, scale=scale)
    return out


def _package_apply_instance(p, rdt, scale, dtype):
    """Residuals.apply on a model instance loaded in @dtype; its state_dict after."""
    from residuals import Residuals
    model = C.load_model(p.base, dtype)
    res = Residuals.from_pretrained(p.res[rdt])
    model = res.apply(model, scale=scale)
    return model.state_dict()


# (residuals dtype, scale, rounding of the mount).  A float32 delta times a scale is a
# float32 product in both; a bf16/fp16 delta times a scale other than 1 is rounded to the
# delta's dtype by torch (d * scale keeps d's dtype), which is what cast-first reproduces.
F32_CASES = [("f32", 1, "single"), ("f32", 0.3, "single"), ("bf16", 1, "single"),
             ("fp16", 1, "single"), ("bf16", 0.3, "cast-first"), ("fp16", 0.3, "cast-first")]


def _grid(keys, cases, idf):
    """Every key with the first case; the sharded keys with all cases."""
    return [pytest.param(k, c, id=f"{k}-{idf(c)}") for k in keys for c in cases
            if c == cases[0] or k in SHARDED]


@pytest.mark.parametrize("key,case", _grid(ALL, F32_CASES, lambda c: f"{c[0]}x{c[1]}-{c[2]}"))
def test_dtype_float32_equals_package_apply(zoo, mounter, tmp_path, key, case):
    rdt, scale, rounding = case
    p = zoo(key)
    want = C.read_dir(_package_apply_dir(p, rdt, scale, str(tmp_path / "pkg")))
    mp = mounter.mount(_spec(p, rdt, scale), "--dtype", "float32", "--rounding", rounding)
    got = C.read_dir(mp, check_metadata={"format": "pt"})
    # save_pretrained drops the tied lm_head.weight, as the base file does
    C.assert_same_tensors(got, want, f"{key}: --dtype float32 mount vs Residuals.apply out_dir")
    pc = C.read_json(tmp_path / "pkg" / "config.json")
    mc = C.read_json(os.path.join(mp, "config.json"))
    assert mc["vocab_size"] == pc["vocab_size"] == p.ins_vocab
    assert mc.get("dtype", mc.get("torch_dtype")) == pc["dtype"] == "float32"


def test_single_rounding_of_scaled_low_precision_delta_differs_from_package(zoo, mounter, tmp_path):
    """Documented in docs/peers.md: for a bf16 delta and a scale other than 1 the package
    rounds d*scale to bf16 before adding (torch keeps d's dtype); residfs's default single
    rounding does not.  --rounding cast-first is the mode that matches (test above)."""
    p = zoo("llama_bf16_sharded")
    want = C.read_dir(_package_apply_dir(p, "bf16", 0.3, str(tmp_path / "pkg")))
    mp = mounter.mount(_spec(p, "bf16", 0.3), "--dtype", "float32")
    got = C.read_dir(mp)
    ndiff = sum(C.diff_count(got[k], want[k]) for k in want)
    assert ndiff > 0, "single rounding was expected to differ from the package here"


CAST_CASES = [("f32", 1), ("f32", 0.3), ("bf16", 1), ("bf16", 0.3), ("fp16", 1), ("fp16", 0.3)]


@pytest.mark.parametrize("key,case", _grid([k for k in ALL if "_fp32_" not in k], CAST_CASES,
                                           lambda c: f"{c[0]}x{c[1]}"))
def test_cast_first_equals_package_on_model_instance(zoo, mounter, key, case):
    """bf16 base: Residuals.apply on a bf16 instance; fp16 base: on an fp16 instance."""
    rdt, scale = case
    p = zoo(key)
    sd = _package_apply_instance(p, rdt, scale, p.torch_dtype)
    mp = mounter.mount(_spec(p, rdt, scale), "--rounding", "cast-first")
    got = C.read_dir(mp, check_metadata={"format": "pt"})
    assert sorted(got) == sorted(C.read_dir(p.base))
    C.assert_same_tensors(got, sd, f"{key}: cast-first mount vs Residuals.apply on a "
                          f"{p.dtype} instance", keys=sorted(got))


def _package_apply_model_dtype(p, rdt, scale, dtype):
    """Residuals.apply(base path, model_dtype=dtype): the package loads the base in
    @dtype (rounding its weights to @dtype) and applies there."""
    from residuals import Residuals
    res = Residuals.from_pretrained(p.res[rdt])
    return res.apply(p.base, scale=scale, model_dtype=dtype).state_dict()


@pytest.mark.parametrize("key,out", [("llama_bf16_sharded", "fp16"), ("tied_fp16_sharded", "bf16"),
                                     ("gpt2_fp32_sharded", "bf16"), ("gpt2_fp32_sharded", "fp16")])
def test_cast_first_other_dtype_equals_package_model_dtype(zoo, mounter, key, out):
    """`--dtype X --rounding cast-first` vs Residuals.apply(base, model_dtype=X), the
    package's way to merge in X.  The package rounds the base weights to X when it loads
    them, then adds the delta rounded to X: two roundings of the base side too.

    residfs's cast-first therefore rounds the base to X first (docs/arithmetic.md);
    without that step about 28% of the elements differed by one ulp when the base was
    wider than X (fp32 -> bf16/fp16, fp16 -> bf16)."""
    p = zoo(key)
    sd = _package_apply_model_dtype(p, "f32", 1, M.DTYPES[out])
    mp = mounter.mount(_spec(p, "f32", 1), "--dtype", out, "--rounding", "cast-first")
    got = C.read_dir(mp)
    C.assert_same_tensors(got, sd, f"{key}: --dtype {out} cast-first mount vs Residuals.apply("
                          f"model_dtype={out})", keys=sorted(got))


@pytest.mark.parametrize("key", [k for k in SHARDED if "_fp32_" not in k])
def test_package_low_precision_apply_is_not_the_instruct_model(zoo, mounter, key):
    """Documented in docs/peers.md: the package's apply on a bf16/fp16 instance rounds the
    float32 delta first, so it does not give the instruct weights back; residfs's default
    single rounding does (test_merge.test_logits_equal_instruct)."""
    p = zoo(key)
    sd = _package_apply_instance(p, "f32", 1, p.torch_dtype)
    ins = C.read_dir(p.ins)
    n = sum(C.diff_count(sd[k], ins[k]) for k in ins)
    total = sum(t.numel() for t in ins.values())
    assert 0 < n < total, f"{key}: {n} of {total} elements differ"
    mp = mounter.mount(_spec(p, "f32", 1))
    C.assert_same_tensors(C.read_dir(mp), ins, f"{key}: default mount vs instruct")
