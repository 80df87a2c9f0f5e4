"""Compute mode (INSTRUCT-BASE) against the `residuals` package (issue item 3):
the mount is a residuals directory that Residuals.from_pretrained loads, with
the tensors of Residuals.from_models bit for bit and the package's config keys;
residfs export of it loads the same way."""
import dataclasses
import os

import pytest

import hfcheck as C
from conftest import ALL, SHARDED


def _package(p):
    from residuals import Residuals
    return Residuals.from_models(p.base, p.ins)


def _check_loaded(got, want, p, what):
    C.assert_same_tensors(got.state_dict, want.state_dict, what)
    assert len(got.instruct_tokenizer) == p.ins_vocab
    a, b = dataclasses.asdict(got.config), dataclasses.asdict(want.config)
    for k in ("created_at", "library"):
        a.pop(k)
        b.pop(k)
    assert a == b, f"{what}: config {a}\nthe package's {b}"
    assert isinstance(got.config.library, dict)


@pytest.mark.parametrize("key", ALL)
def test_compute_mount_loads_with_package(zoo, mounter, tmp_path, key):
    from residuals import Residuals
    from residuals.config import ResidualsConfig
    p = zoo(key)
    want = _package(p)
    mp = mounter.mount(f"{p.ins}-{p.base}")
    got = Residuals.from_pretrained(mp)
    _check_loaded(got, want, p, f"{key}: Residuals.from_pretrained(compute mount)")
    # the config's keys are exactly the package's, in its order
    fields = [f.name for f in dataclasses.fields(ResidualsConfig)]
    cfg = C.read_json(os.path.join(mp, "config.json"))
    assert list(cfg) == fields, f"config.json keys {list(cfg)}, the package's {fields}"
    assert list(C.read_json(os.path.join(p.res["f32"], "config.json"))) == fields
    # safetensors reads it both ways; no __metadata__, as the package's save_file writes
    C.read_dir(mp)
    from safetensors import safe_open
    with safe_open(os.path.join(mp, "model.safetensors"), framework="pt") as f:
        assert f.metadata() is None
    # export writes the same bytes, and the package loads the export the same way
    out = C.export([f"{p.ins}-{p.base}"], str(tmp_path / "exp"))
    assert sorted(os.listdir(out)) == sorted(os.listdir(mp))
    for fn in os.listdir(mp):
        assert C.read_bytes(os.path.join(out, fn)) == C.read_bytes(os.path.join(mp, fn)), fn
    _check_loaded(Residuals.from_pretrained(out), want, p, f"{key}: Residuals.from_pretrained(export)")


@pytest.mark.parametrize("key", SHARDED)
def test_compute_file_is_the_package_file(zoo, mounter, key):
    """model.safetensors of the mount is byte for byte the one Residuals.save_pretrained
    writes (safetensors' writer layout, no __metadata__)."""
    p = zoo(key)
    mp = mounter.mount(f"{p.ins}-{p.base}")
    a = C.read_bytes(os.path.join(mp, "model.safetensors"))
    b = C.read_bytes(os.path.join(p.res["f32"], "model.safetensors"))
    assert a == b, f"{key}: compute mount model.safetensors ({len(a)} bytes) differs from the package's ({len(b)} bytes)"


@pytest.mark.parametrize("key", SHARDED)
def test_compute_mount_applies_back_to_instruct(zoo, mounter, key):
    """The package applies the mounted residuals (loaded from the mount) to the base;
    and residfs mounts BASE + (the mounted residuals): both give the instruct weights."""
    from residuals import Residuals
    p = zoo(key)
    res_mp = mounter.mount(f"{p.ins}-{p.base}")
    ins = C.read_dir(p.ins)
    sd = Residuals.from_pretrained(res_mp).apply(p.base).state_dict()   # float32 path
    for k, t in ins.items():
        C.assert_bits(sd[k].to(t.dtype), t, f"{key}: package apply of the mounted residuals: {k}")
    mp = mounter.mount(f"{p.base}+{res_mp}")
    C.assert_same_tensors(C.read_dir(mp), ins, f"{key}: base + compute mount")


@pytest.mark.parametrize("key", SHARDED)
def test_compute_mount_dtypes(zoo, mounter, key):
    """--dtype bf16 / fp16 in compute mode equal the package's .to(dtype=...) residuals."""
    from residuals import Residuals
    p = zoo(key)
    for name, dt in (("bf16", "bf16"), ("fp16", "fp16")):
        mp = mounter.mount(f"{p.ins}-{p.base}", "--dtype", dt)
        got = Residuals.from_pretrained(mp)
        want = Residuals.from_pretrained(p.res[name])
        C.assert_same_tensors(got.state_dict, want.state_dict, f"{key}: compute --dtype {dt}")
        assert got.config.dtype == want.config.dtype
        assert got.config.shapes_hash == want.config.shapes_hash
        # documented in docs/peers.md: the package's Residuals.to() rebuilds the config
        # without base_model_name, instruct_model_name and tags; residfs keeps them
        assert want.config.base_model_name is None and want.config.tags is None
        assert got.config.base_model_name == p.base and got.config.instruct_model_name == p.ins
        assert got.config.tags == _package(p).config.tags
