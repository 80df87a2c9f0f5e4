"""Apply mode: BASE + s1*DELTA1 + ... mounted, read every way, compared with
bytes computed here in numpy; export must equal the mount byte for byte."""
import json
import os
import zlib

import numpy as np
import pytest

import rfshelp as H
from conftest import _instruct_of, _llama, export


def export_equals_mount(mp, args, tmp_path, name="export"):
    out = os.path.join(str(tmp_path), name)
    export(args, out)
    H.compare_dirs(mp, out)  # same names (no temporary files left), same bytes
    return out


def readme_front(mp):
    with open(os.path.join(mp, "README.md")) as f:
        return H.front_matter(f.read())


# ---- the main case ---------------------------------------------------------------------

def test_sharded_bf16_plus_f32_delta(mounter, llama, tmp_path):
    s = llama
    spec = f"{s.base.path}+{s.resA.path}"
    mp = mounter.mount(spec)
    exp = H.expected_apply(s.base, [(s.resA, 1.0)])
    # the base's shard layout; headers unchanged (same dtypes and shapes): the base's bytes
    assert set(exp.st) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert all(h is not None for h in exp.st_header.values())
    H.verify_dir(mp, exp, seed=11)
    # base + (instruct - base) in float32 gives the instruct weights back, bit for bit
    from safetensors import safe_open
    for fn in exp.st:
        with safe_open(os.path.join(mp, fn), framework="numpy") as f:
            for n in f.keys():
                want = s.ins.tensors[n].raw
                assert np.ascontiguousarray(f.get_tensor(n)).tobytes() == want, f"{fn}: {n} != instruct"
    # non-float tensor passed through from the base
    assert H.read_file(os.path.join(mp, "model-00002-of-00002.safetensors")).endswith(
        s.base.tensors["model.position_ids"].raw)
    # config.json is the base's, byte for byte; the index is the base's (nothing changed)
    assert H.read_file(os.path.join(mp, "config.json")) == H.read_file(os.path.join(s.base.path, "config.json"))
    assert H.read_file(os.path.join(mp, "model.safetensors.index.json")) == \
        H.read_file(os.path.join(s.base.path, "model.safetensors.index.json"))
    # tokenizer and generation config: the delta's (instruct), not the base's
    for fn in ("tokenizer_config.json", "tokenizer.json", "generation_config.json"):
        got = H.read_file(os.path.join(mp, fn))
        assert got == H.read_file(os.path.join(s.resA.path, fn))
        assert got != H.read_file(os.path.join(s.base.path, fn))
    # other base files pass through; the base README is replaced by a merge card
    assert H.read_file(os.path.join(mp, "LICENSE")) == s.base.others["LICENSE"]
    assert H.read_file(os.path.join(mp, "notes.txt")) == s.base.others["notes.txt"]
    fm = readme_front(mp)
    assert "base_model_relation: merge" in fm, fm
    assert any(line.startswith("base_model:") for line in fm), fm
    # the delta's config.json never shows as the model's
    assert "residuals_version" not in json.loads(H.read_file(os.path.join(mp, "config.json")))
    export_equals_mount(mp, [spec], tmp_path)


# ---- variants on the same base -------------------------------------------------------------

def _variants():
    b = lambda s: s.base.path  # noqa: E731
    return {
        "half": (lambda s: [f"{b(s)}+0.5*{s.resA.path}"], lambda s: [(s.resA, 0.5)], None, False),
        "two_deltas": (lambda s: [f"{b(s)}+{s.resA.path}+{s.resC.path}"],
                       lambda s: [(s.resA, 1.0), (s.resC, 1.0)], None, False),
        "negated": (lambda s: [f"{b(s)}-{s.resA.path}"], lambda s: [(s.resA, -1.0)], None, False),
        "mixed_scales": (lambda s: [f"{b(s)}-0.5*{s.resB.path}+2*{s.resC.path}"],
                         lambda s: [(s.resB, -0.5), (s.resC, 2.0)], None, False),
        "ties": (lambda s: [f"{b(s)}+{s.resT.path}"], lambda s: [(s.resT, 1.0)], None, False),
        "fp16_delta_base_tokenizer": (lambda s: [f"{b(s)}+{s.resC.path}"],
                                      lambda s: [(s.resC, 1.0)], None, False),
        "dtype_float32": (lambda s: [f"{b(s)}+{s.resA.path}", "--dtype", "float32"],
                          lambda s: [(s.resA, 1.0)], "F32", False),
        "dtype_fp32": (lambda s: [f"{b(s)}+{s.resT.path}", "--dtype", "fp32"],
                       lambda s: [(s.resT, 1.0)], "F32", False),
        "dtype_fp16": (lambda s: [f"{b(s)}+0.5*{s.resT.path}", "--dtype", "fp16"],
                       lambda s: [(s.resT, 0.5)], "F16", False),
        "cast_first": (lambda s: [f"{b(s)}+{s.resT.path}", "--rounding", "cast-first"],
                       lambda s: [(s.resT, 1.0)], None, True),
        "cast_first_half": (lambda s: [f"{b(s)}+0.5*{s.resT.path}", "--rounding", "cast-first"],
                            lambda s: [(s.resT, 0.5)], None, True),
        "cast_first_two": (lambda s: [f"{b(s)}+{s.resT.path}+0.5*{s.resB.path}", "--rounding", "cast-first"],
                           lambda s: [(s.resT, 1.0), (s.resB, 0.5)], None, True),
    }


@pytest.mark.parametrize("case", list(_variants()))
def test_variant(case, mounter, llama, tmp_path):
    args_f, terms_f, dtype, cast_first = _variants()[case]
    s = llama
    args, terms = args_f(s), terms_f(s)
    exp = H.expected_apply(s.base, terms, out_dtype=dtype, cast_first=cast_first)
    if cast_first:
        single = H.expected_apply(s.base, terms, out_dtype=dtype)
        assert any(a[1].raw != b[1].raw for fn in exp.st for a, b in zip(exp.st[fn], single.st[fn])), \
            "test data do not tell cast-first from single rounding"
    if case == "ties":
        # the ties must be decided by round-to-nearest-even: rounding halves up would differ
        n = "model.layers.0.mlp.up_proj.weight"
        base_t, d = s.base.tensors[n], s.resT.tensors[n]
        acc = base_t.f32() + d.f32()
        up = ((acc.view(np.uint32) + np.uint32(0x8000)) >> np.uint32(16)).astype(np.uint16)
        assert (up != H.f32_to_bf16(acc)).sum() > 10
    mp = mounter.mount(*args)
    H.verify_dir(mp, exp, seed=zlib.crc32(case.encode()))
    if dtype is not None:
        cfg = json.loads(H.read_file(os.path.join(mp, "config.json")))
        assert cfg["torch_dtype"] == H.TORCH_NAME[dtype]
        idx = json.loads(H.read_file(os.path.join(mp, "model.safetensors.index.json")))
        assert idx["metadata"]["total_size"] == sum(
            t.nbytes for items in exp.st.values() for _, t in items)
    if case == "fp16_delta_base_tokenizer":
        for fn in ("tokenizer_config.json", "generation_config.json"):
            assert H.read_file(os.path.join(mp, fn)) == H.read_file(os.path.join(s.base.path, fn))
    export_equals_mount(mp, args, tmp_path)


def test_dtype_spellings_agree(llama, tmp_path):
    s = llama
    spec = f"{s.base.path}+{s.resA.path}"
    a = export([spec, "--dtype", "float32"], os.path.join(str(tmp_path), "a"))
    b = export([spec, "--dtype", "fp32"], os.path.join(str(tmp_path), "b"))
    H.compare_dirs(a, b, skip=("README.md",))


# ---- other base dtypes and layouts ------------------------------------------------------------

@pytest.fixture(scope="module")
def fp16model(tmp_path_factory):
    """Single-file fp16 base written by the safetensors package (no __metadata__)."""
    root = str(tmp_path_factory.mktemp("fp16"))
    rng = np.random.default_rng(77)
    V, Hd, I, L, KV = 300, 32, 64, 2, 16
    bt = _llama(rng, "F16", V, Hd, I, L, KV, tied=False)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "F16")
    base = H.write_model(os.path.join(root, "base16"), bt, cfg, metadata=None, use_package_writer=True)
    d = {n: H.T("F32", t.shape, H.encode("F32", H.inject_ties(rng, t, rng.normal(0, 0.003, t.numel)
                                                                .astype(np.float32), 0.2)))
         for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res16"), d, vocab=V)
    dh = {n: H.T.from_f32("F16", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    resh = H.write_residuals(os.path.join(root, "res16h"), dh, vocab=V)
    return base, res, resh


@pytest.mark.parametrize("rounding", ["single", "cast-first"])
def test_single_file_fp16(rounding, mounter, fp16model, tmp_path):
    base, res, resh = fp16model
    args = [f"{base.path}+{res.path}+0.5*{resh.path}", "--rounding", rounding]
    mp = mounter.mount(*args)
    exp = H.expected_apply(base, [(res, 1.0), (resh, 0.5)], cast_first=rounding == "cast-first")
    # the base had no __metadata__: the header is rebuilt with {"format": "pt"}
    assert exp.st_header["model.safetensors"] is None
    assert exp.st_meta["model.safetensors"] == {"format": "pt"}
    H.verify_dir(mp, exp, seed=5)
    assert "model.safetensors.index.json" not in os.listdir(mp)
    export_equals_mount(mp, args, tmp_path)


def test_fp32_base_bf16_delta(mounter, tmp_path):
    rng = np.random.default_rng(5)
    V, Hd, I, L, KV = 256, 32, 48, 1, 32
    bt = _llama(rng, "F32", V, Hd, I, L, KV, tied=False)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "F32")
    base = H.write_model(os.path.join(str(tmp_path), "base32"), bt, cfg,
                         order=sorted(bt, reverse=True))
    d = {n: H.T.from_f32("BF16", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(str(tmp_path), "resbf"), d, vocab=V)
    mp = mounter.mount(f"{base.path}+{res.path}")
    exp = H.expected_apply(base, [(res, 1.0)])
    H.verify_dir(mp, exp, seed=3)
    export_equals_mount(mp, [f"{base.path}+{res.path}"], tmp_path)


def test_tied_embeddings(mounter, tmp_path):
    """Base ties lm_head to the embeddings and has no lm_head.weight: the delta's
    lm_head.weight (the package always writes one) is ignored and reported."""
    rng = np.random.default_rng(9)
    V, Hd, I, L, KV = 320, 32, 64, 2, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=True)
    assert "lm_head.weight" not in bt
    cfg = H.llama_config(V, Hd, I, L, KV, True, "BF16")
    base = H.write_model(os.path.join(str(tmp_path), "tied-base"), bt, cfg)
    d = {n: H.T("F32", t.shape, H.encode("F32", H.inject_ties(rng, t, rng.normal(0, 0.003, t.numel)
                                                                .astype(np.float32))))
         for n, t in bt.items()}
    d["lm_head.weight"] = d["model.embed_tokens.weight"]
    res = H.write_residuals(os.path.join(str(tmp_path), "tied-res"), d, vocab=V)
    spec = f"{base.path}+{res.path}"
    r = H.run(["inspect", spec, "--json"])
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert any("lm_head.weight" in x for x in info["ignored"]), info["ignored"]
    assert all("lm_head.weight" != t["name"] for t in info["tensors"])
    mp = mounter.mount(spec)
    exp = H.expected_apply(base, [(res, 1.0)])
    H.verify_dir(mp, exp, seed=9)
    from safetensors import safe_open
    with safe_open(os.path.join(mp, "model.safetensors"), framework="numpy") as f:
        assert "lm_head.weight" not in f.keys()
    export_equals_mount(mp, [spec], tmp_path)


def test_grown_vocabulary(mounter, tmp_path):
    """The instruct tokenizer is longer: the deltas of the embedding and lm_head have
    more rows; the output grows, base rows beyond its end count as 0, config.json's
    vocab_size follows and the index total_size is recomputed."""
    rng = np.random.default_rng(21)
    V, G, Hd, I, L, KV = 300, 12, 32, 64, 2, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "BF16")
    base = H.write_model(os.path.join(str(tmp_path), "grow-base"), bt, cfg, nshards=3)
    it = _instruct_of(rng, bt, "BF16", grow=G)
    res = H.write_residuals(os.path.join(str(tmp_path), "grow-res"),
                            {n: H.delta_from(bt[n], it[n]) for n in bt}, vocab=V + G)
    spec = f"{base.path}+{res.path}"
    exp = H.expected_apply(base, [(res, 1.0)])
    cfg_exp, _ = exp.json["config.json"]
    assert cfg_exp["vocab_size"] == V + G
    mp = mounter.mount(spec)
    H.verify_dir(mp, exp, seed=21)
    cfg_got = json.loads(H.read_file(os.path.join(mp, "config.json")))
    assert cfg_got["vocab_size"] == V + G
    # apart from vocab_size, config.json is the base's text
    base_text = H.read_file(os.path.join(base.path, "config.json")).decode()
    assert H.read_file(os.path.join(mp, "config.json")).decode() == \
        base_text.replace(f'"vocab_size": {V}', f'"vocab_size": {V + G}')
    idx = json.loads(H.read_file(os.path.join(mp, "model.safetensors.index.json")))
    assert idx["metadata"]["total_size"] == sum(t.nbytes for items in exp.st.values() for _, t in items)
    assert idx["metadata"]["total_size"] == sum(t.nbytes for t in bt.values()) + 2 * G * Hd * 2
    # merged = instruct, grown rows included
    from safetensors import safe_open
    for fn in exp.st:
        with safe_open(os.path.join(mp, fn), framework="numpy") as f:
            for n in f.keys():
                assert np.ascontiguousarray(f.get_tensor(n)).tobytes() == it[n].raw, n
    r = H.run(["inspect", spec, "--json"])
    assert r.returncode == 0, r
    grown = {t["name"]: t["grown_rows"] for t in json.loads(r.stdout)["tensors"] if t["grown_rows"]}
    assert grown == {"model.embed_tokens.weight": G, "lm_head.weight": G}, grown
    export_equals_mount(mp, [spec], tmp_path)


def test_passthrough(mounter, refuser, llama, tmp_path):
    """A base float tensor that no delta names: an error naming it, unless --passthrough."""
    s = llama
    d = {n: t for n, t in s.resA.tensors.items() if n != "model.norm.weight"}
    res = H.write_residuals(os.path.join(str(tmp_path), "res-partial"), d, vocab=4200)
    spec = f"{s.base.path}+{res.path}"
    refuser.refuse(spec, names=("model.norm.weight",))
    r = H.run(["export", spec, os.path.join(str(tmp_path), "out-refused"), "--quiet"])
    assert r.returncode != 0 and "model.norm.weight" in r.stderr, r
    mp = mounter.mount(spec, "--passthrough")
    exp = H.expected_apply(s.base, [(res, 1.0)])
    H.verify_dir(mp, exp, seed=2)
    raw = H.read_file(os.path.join(mp, s.base.file_of("model.norm.weight")))
    assert s.base.tensors["model.norm.weight"].raw in raw
    export_equals_mount(mp, [spec, "--passthrough"], tmp_path)
    # with another output dtype the tensor without delta is converted
    mp2 = mounter.mount(spec, "--passthrough", "--dtype", "fp16")
    exp2 = H.expected_apply(s.base, [(res, 1.0)], out_dtype="F16")
    H.verify_dir(mp2, exp2, seed=3)
    norm = dict(exp2.st[s.base.file_of("model.norm.weight")])["model.norm.weight"]
    assert norm.raw == s.base.tensors["model.norm.weight"].f32().astype(np.float16).tobytes()


# ---- special values ----------------------------------------------------------------------------

def _special_pair(rng):
    b16 = np.array([0x7F80, 0xFF80, 0x7FC1, 0xFFC0, 0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x8000, 0x0000,
                    0x3F80, 0xBF80, 0x0080, 0x7F00, 0x3F81, 0x3F82], dtype=np.uint16)
    f32 = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-45, -1e-45, 1.1754942e-38,
                    2.0 ** -8, -(2.0 ** -8), 2.0 ** -9, 65504.0, 65520.0, 1e-8], dtype=np.float32)
    base = np.repeat(b16, f32.size)
    delta = np.tile(f32, b16.size)
    return base, delta


@pytest.mark.parametrize("dtype", [None, "fp16", "fp32"])
def test_special_values(dtype, mounter, tmp_path):
    """inf, NaN, overflow, subnormals and signed zeros: non-NaN results bit for bit,
    NaN compared as a class."""
    rng = np.random.default_rng(3)
    bbits, dvals = _special_pair(rng)
    n = bbits.size  # 256
    shape = [n // 16, 16]
    bt = {"model.embed_tokens.weight": H.T("BF16", shape, bbits.tobytes()),
          "model.norm.weight": H.T.from_f32("BF16", [16], np.ones(16)),
          "lm_head.weight": H.T("BF16", shape, bbits[::-1].copy().tobytes())}
    cfg = H.llama_config(shape[0], 16, 32, 0, 16, False, "BF16")
    base = H.write_model(os.path.join(str(tmp_path), "sp-base"), bt, cfg)
    d = {"model.embed_tokens.weight": H.T("F32", shape, dvals.tobytes()),
         "model.norm.weight": H.T.from_f32("F32", [16], np.full(16, 2.0 ** -9)),
         "lm_head.weight": H.T("F32", shape, dvals[::-1].copy().tobytes())}
    res = H.write_residuals(os.path.join(str(tmp_path), "sp-res"), d, vocab=shape[0])
    args = [f"{base.path}+{res.path}"] + (["--dtype", dtype] if dtype else [])
    mp = mounter.mount(*args)
    od = H.USER_DTYPE[dtype] if dtype else None
    exp = H.expected_apply(base, [(res, 1.0)], out_dtype=od)
    got = H.read_file(os.path.join(mp, "model.safetensors"))
    _, _, ents, doff = H.parse_st(got)
    byname = {e[0]: e for e in ents}
    for name, t in exp.st["model.safetensors"]:
        _, dt, shp, b0, b1 = byname[name]
        assert (dt, list(shp)) == (t.dtype, t.shape), name
        g, w = H.decode(dt, got[doff + b0:doff + b1]), t.f32()
        gn, wn = np.isnan(g), np.isnan(w)
        assert (gn == wn).all(), f"{name}: NaN at {np.nonzero(gn != wn)[0][:8]}"
        ut = np.uint32 if dt == "F32" else np.uint16
        gb, wb = np.frombuffer(got[doff + b0:doff + b1], dtype=ut), np.frombuffer(t.raw, dtype=ut)
        bad = np.nonzero((gb != wb) & ~wn)[0]
        assert bad.size == 0, f"{name}: {bad.size} elements differ, first at {bad[0]}: " \
                              f"got {gb[bad[0]]:#x} expected {wb[bad[0]]:#x} " \
                              f"(base {bbits[bad[0] % n]:#06x}, delta {dvals[bad[0] % n]!r})"
        if dt == "BF16":
            # NaN stays a quiet NaN
            nanbits = gb[gn.reshape(-1)]
            assert ((nanbits & 0x0040) != 0).all(), [hex(x) for x in nanbits]


def test_grown_vocabulary_tied_two_deltas(mounter, tmp_path):
    """Tied base, one delta grows the vocabulary and the other does not: the
    embedding grows to the longest delta, rows a delta lacks count as 0 in it,
    the grown lm_head of the delta is ignored."""
    rng = np.random.default_rng(22)
    V, G, Hd, I, L, KV = 200, 8, 32, 48, 1, 32
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=True)
    base = H.write_model(os.path.join(str(tmp_path), "tg-base"), bt, H.llama_config(V, Hd, I, L, KV, True, "BF16"),
                         nshards=2)
    it = _instruct_of(rng, bt, "BF16", grow=G)
    d1 = {n: H.delta_from(bt[n], it[n]) for n in bt}
    d1["lm_head.weight"] = d1["model.embed_tokens.weight"]
    r1 = H.write_residuals(os.path.join(str(tmp_path), "tg-r1"), d1, vocab=V + G)
    d2 = {n: H.T.from_f32("BF16", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    d2["lm_head.weight"] = d2["model.embed_tokens.weight"]
    r2 = H.write_residuals(os.path.join(str(tmp_path), "tg-r2"), d2, vocab=V)
    for spec, terms in ((f"{base.path}+{r1.path}+0.5*{r2.path}", [(r1, 1.0), (r2, 0.5)]),
                        (f"{base.path}-{r2.path}+{r1.path}", [(r2, -1.0), (r1, 1.0)])):
        exp = H.expected_apply(base, terms)
        assert dict(exp.st["model-00001-of-00002.safetensors"])["model.embed_tokens.weight"].shape == [V + G, Hd]
        mp = mounter.mount(spec)
        H.verify_dir(mp, exp, seed=22)
        assert json.loads(H.read_file(os.path.join(mp, "config.json")))["vocab_size"] == V + G
        export_equals_mount(mp, [spec], tmp_path, name=f"e{len(terms)}{spec[-3:]}")
