"""Compute mode: INSTRUCT-BASE shows a residuals directory as the `residuals`
package writes it."""
import json
import os

import numpy as np
import pytest

import rfshelp as H
from conftest import _instruct_of, _llama, export


@pytest.fixture(scope="module")
def tiedpair(tmp_path_factory):
    """bf16, tied embeddings (no lm_head saved), sharded base, single-file instruct
    with 12 more vocabulary rows, an instruct-only tensor and an I64 buffer."""
    root = str(tmp_path_factory.mktemp("cpair"))
    rng = np.random.default_rng(31)
    V, G, Hd, I, L, KV = 300, 12, 32, 64, 2, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=True)
    bt["model.position_ids"] = H.T("I64", [1, 8], np.arange(8, dtype=np.int64).tobytes())
    base = H.write_model(os.path.join(root, "Base-Model"), bt, H.llama_config(V, Hd, I, L, KV, True, "BF16"),
                         nshards=2, flavour="base")
    it = _instruct_of(rng, bt, "BF16", grow=G)
    it["model.extra_ins.weight"] = H.T.from_f32("BF16", [4, 4], rng.normal(0, 1, 16))
    ins = H.write_model(os.path.join(root, "Instruct-Model"), it,
                        H.llama_config(V + G, Hd, I, L, KV, True, "BF16"), flavour="instruct")
    return base, ins


def check_config(mp, exp):
    cfg_text = H.read_file(os.path.join(mp, "config.json"))
    cfg = json.loads(cfg_text)
    assert list(cfg) == H.RESIDUALS_KEYS, f"config.json keys {list(cfg)}"
    t = exp.st_tensors
    assert cfg["param_count"] == len(t)
    assert cfg["parameter_names_hash"] == H.names_hash(t)
    assert cfg["shapes_hash"] == H.shapes_hash({n: x.shape for n, x in t.items()})
    dts = [x.dtype for x in t.values()]
    assert cfg["dtype"] == H.TORCH_NAME[max(set(dts), key=dts.count)]
    for k in ("residuals_version", "tokenizer_name", "base_model_name", "instruct_model_name", "created_at"):
        assert isinstance(cfg[k], str) and cfg[k], (k, cfg[k])
    return cfg


def test_compute_tied_grown(mounter, tiedpair, tmp_path):
    base, ins = tiedpair
    spec = f"{ins.path}-{base.path}"
    mp = mounter.mount(spec)
    exp = H.expected_compute(ins, base)
    # the tied lm_head is written as a copy of the embedding delta; the instruct-only
    # tensor and the I64 buffer are left out; the embedding grew to the instruct's rows
    assert exp.st_tensors["lm_head.weight"].raw == exp.st_tensors["model.embed_tokens.weight"].raw
    assert exp.st_tensors["model.embed_tokens.weight"].shape == [312, 32]
    assert "model.extra_ins.weight" not in exp.st_tensors and "model.position_ids" not in exp.st_tensors
    H.verify_dir(mp, exp, seed=31)
    data = H.read_file(os.path.join(mp, "model.safetensors"))
    _, hdr, ents, _ = H.parse_st(data)
    assert "__metadata__" not in hdr
    assert [e[0] for e in ents] == sorted(exp.st_tensors), "not sorted by name"
    assert all(e[1] == "F32" for e in ents)
    H.check_safe_open(os.path.join(mp, "model.safetensors"), sorted(exp.st_tensors.items()), None)
    cfg = check_config(mp, exp)
    assert cfg["dtype"] == "float32"
    for fn in H.TOKENIZER_NAMES + ("generation_config.json",):
        assert H.read_file(os.path.join(mp, fn)) == H.read_file(os.path.join(ins.path, fn)), fn
    fm = H.front_matter(H.read_file(os.path.join(mp, "README.md")).decode())
    assert "base_model_relation: adapter" in fm, fm
    out = os.path.join(str(tmp_path), "residuals")
    export([spec], out)
    H.compare_dirs(mp, out)


def test_compute_roundtrip(mounter, tiedpair, tmp_path):
    """Residuals computed by residfs, then BASE+RESIDUALS: the instruct weights, bit for bit."""
    base, ins = tiedpair
    rdir = os.path.join(str(tmp_path), "res-of-instruct")
    export([f"{ins.path}-{base.path}"], rdir)
    exp_c = H.expected_compute(ins, base)
    res = H.Residuals(rdir, exp_c.st_tensors)
    mp = mounter.mount(f"{base.path}+{res.path}")
    exp = H.expected_apply(base, [(res, 1.0)])
    H.verify_dir(mp, exp, seed=4)
    for fn, items in exp.st.items():
        for n, t in items:
            assert t.raw == ins.tensors[n].raw, f"{n}: merged differs from the instruct"
    assert json.loads(H.read_file(os.path.join(mp, "config.json")))["vocab_size"] == 312
    r = H.run(["inspect", f"{base.path}+{res.path}", "--json"])
    assert any("lm_head.weight" in x for x in json.loads(r.stdout)["ignored"]), r


@pytest.fixture(scope="module")
def fp16pair(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cpair16"))
    rng = np.random.default_rng(41)
    V, Hd, I, L, KV = 200, 32, 48, 1, 32
    bt = _llama(rng, "F16", V, Hd, I, L, KV, tied=False)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "F16")
    base = H.write_model(os.path.join(root, "b16"), bt, cfg, use_package_writer=True, metadata=None)
    it = _instruct_of(rng, bt, "F16")
    ins = H.write_model(os.path.join(root, "i16"), it, cfg, nshards=2, flavour="instruct")
    return base, ins


@pytest.mark.parametrize("dtype", [None, "fp16", "bf16"])
def test_compute_dtype_and_long_flags(dtype, mounter, fp16pair, tmp_path):
    base, ins = fp16pair
    opt = ["--dtype", dtype] if dtype else []
    mp = mounter.mount(f"{ins.path}-{base.path}", *opt)
    exp = H.expected_compute(ins, base, H.USER_DTYPE[dtype] if dtype else "F32")
    assert "lm_head.weight" in exp.st_tensors
    H.verify_dir(mp, exp, seed=41)
    cfg = check_config(mp, exp)
    assert cfg["dtype"] == H.TORCH_NAME[H.USER_DTYPE[dtype] if dtype else "F32"]
    # the long-flag form shows the same directory
    mp2 = mounter.mount("--instruct", ins.path, "--base", base.path, *opt)
    H.compare_dirs(mp, mp2)
    out = os.path.join(str(tmp_path), "e")
    export(["--instruct", ins.path, "--base", base.path] + opt, out)
    H.compare_dirs(mp, out)
