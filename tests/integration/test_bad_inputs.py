"""Bad inputs are refused before mounting: non-zero exit, a message naming the
file (and the tensor where there is one), nothing mounted."""
import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama

V, HD, INTER, L, KV = 64, 16, 32, 1, 16


def make_pair(root, nshards=1, tag=""):
    rng = np.random.default_rng(61)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "base" + tag), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"),
                         nshards=nshards)
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res" + tag), d, vocab=V)
    return base, res


@pytest.fixture
def pair(tmp_path):
    return make_pair(str(tmp_path))


@pytest.fixture
def spair(tmp_path):
    return make_pair(str(tmp_path), nshards=2)


def rewrite_delta(res, deltas, header=None):
    """Rewrites the residuals' model.safetensors with our writer (@header: raw JSON)."""
    items = H.writer_order(list(deltas.items()))
    H.write_file(os.path.join(res.path, "model.safetensors"), H.st_bytes(items, None, header=header))


def refuse_both(refuser, spec, names, rc=None):
    """mount is refused, and so is export (nothing written) and inspect."""
    r = refuser.refuse(spec, names=names, rc=rc)
    out = os.path.join(refuser.tmp, "export-out")
    e = H.run(["export", spec, out, "--quiet"])
    assert e.returncode != 0, e
    for n in names:
        assert n in e.stderr, f"export's error does not name {n!r}: {e}"
    assert not os.path.exists(out) or os.listdir(out) == [], os.listdir(out)
    i = H.run(["inspect", spec])
    assert i.returncode != 0, i
    return r


# ---- damaged safetensors files ---------------------------------------------------------------

def test_truncated_shard(refuser, spair):
    base, res = spair
    p = os.path.join(base.path, "model-00002-of-00002.safetensors")
    os.truncate(p, os.path.getsize(p) - 10)
    refuse_both(refuser, f"{base.path}+{res.path}", ("model-00002-of-00002.safetensors",))


def test_file_shorter_than_length_prefix(refuser, pair):
    base, res = pair
    H.write_file(os.path.join(res.path, "model.safetensors"), b"\x10\x00\x00")
    refuse_both(refuser, f"{base.path}+{res.path}", ("res/model.safetensors",))


def test_header_length_beyond_file(refuser, pair):
    base, res = pair
    p = os.path.join(base.path, "model.safetensors")
    data = bytearray(H.read_file(p))
    data[:8] = struct.pack("<Q", len(data) + 100)
    H.write_file(p, bytes(data))
    refuse_both(refuser, f"{base.path}+{res.path}", ("base/model.safetensors",))


def test_header_length_over_limit(refuser, pair):
    base, res = pair
    p = os.path.join(base.path, "model.safetensors")
    data = bytearray(H.read_file(p))
    data[:8] = struct.pack("<Q", 100_000_001)
    H.write_file(p, bytes(data))
    refuse_both(refuser, f"{base.path}+{res.path}", ("base/model.safetensors",))


def _layout_header(deltas, offsets):
    hdr = {}
    for (n, t), (b, e) in zip(deltas, offsets):
        hdr[n] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [b, e]}
    js = json.dumps(hdr, separators=(",", ":")).encode()
    return js + b" " * (-len(js) % 8)


@pytest.mark.parametrize("kind", ["hole", "overlap", "trailing", "wrong_length", "not_json", "not_utf8"])
def test_bad_header(kind, refuser, pair):
    base, res = pair
    items = H.writer_order(list(res.tensors.items()))
    offs, pos = [], 0
    for k, (n, t) in enumerate(items):
        if kind == "hole" and k == 2:
            pos += 16
        if kind == "overlap" and k == 2:
            pos -= 4
        ln = t.nbytes - (2 if kind == "wrong_length" and k == 1 else 0)
        offs.append((pos, pos + ln))
        pos += ln
    js = _layout_header(items, offs)
    if kind == "not_json":
        js = b'{"a": [1, 2' + b" " * 5
    if kind == "not_utf8":
        js = js.replace(b"model.norm", b"model.n\xff\xferm", 1)
    data = struct.pack("<Q", len(js)) + js
    body = bytearray(pos)
    for (n, t), (b, e) in zip(items, offs):
        body[b:e] = t.raw[:e - b]
    data += bytes(body) + (b"\0" * 24 if kind == "trailing" else b"")
    H.write_file(os.path.join(res.path, "model.safetensors"), data)
    refuse_both(refuser, f"{base.path}+{res.path}", ("res/model.safetensors",))


# ---- deltas that do not fit ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["I32", "I64", "U8", "BOOL", "F64"])
def test_delta_not_f32_bf16_f16(dtype, refuser, pair):
    base, res = pair
    d = dict(res.tensors)
    n = "model.layers.0.mlp.up_proj.weight"
    t = d[n]
    d[n] = H.T(dtype, t.shape, bytes(t.numel * H.DTYPE_SIZE[dtype]))
    rewrite_delta(res, d)
    refuse_both(refuser, f"{base.path}+{res.path}", ("res/model.safetensors", n))


def test_delta_unknown_dtype(refuser, pair):
    base, res = pair
    items = H.writer_order(list(res.tensors.items()))
    js = H.st_header(items).replace(b'"F32"', b'"Q9"', 1)
    rewrite_delta(res, res.tensors, header=js)
    refuse_both(refuser, f"{base.path}+{res.path}", ("res/model.safetensors", "Q9"))


@pytest.mark.parametrize("how", ["cols", "fewer_rows", "ndim"])
def test_shape_mismatch(how, refuser, pair):
    base, res = pair
    d = dict(res.tensors)
    if how == "cols":
        n, shape = "model.layers.0.self_attn.q_proj.weight", [HD, HD + 1]
    elif how == "fewer_rows":
        n, shape = "model.embed_tokens.weight", [V - 1, HD]
    else:
        n, shape = "model.norm.weight", [1, HD]
    d[n] = H.T.from_f32("F32", shape, np.zeros(int(np.prod(shape))))
    rewrite_delta(res, d)
    r = refuse_both(refuser, f"{base.path}+{res.path}", (n,))
    want_base = base.tensors[n].shape
    for shp in (want_base, shape):
        pat = r"[\[(]\s*" + r"\s*[,x×]\s*".join(str(x) for x in shp) + r"\s*[\])]"
        assert re.search(pat, r.stderr), f"the error does not show the shape {shp}: {r.stderr}"


def test_delta_for_non_float_base_tensor(refuser, pair, tmp_path):
    rng = np.random.default_rng(3)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    bt["model.position_ids"] = H.T("I64", [1, 4], np.arange(4, dtype=np.int64).tobytes())
    base = H.write_model(os.path.join(str(tmp_path), "ibase"), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    d = {n: H.T.from_f32("F32", t.shape, np.zeros(t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(str(tmp_path), "ires"), d)
    refuse_both(refuser, f"{base.path}+{res.path}", ("model.position_ids",))


# ---- directories -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["base", "res"])
def test_missing_config(which, refuser, pair):
    base, res = pair
    d = base.path if which == "base" else res.path
    os.unlink(os.path.join(d, "config.json"))
    # the SPEC form cannot tell what the term is: use the long flags
    r = refuser.refuse("--base", base.path, "--delta", res.path, names=(d, "config.json"))
    assert r.returncode != 0


def test_config_neither_model_nor_residuals(refuser, pair):
    base, res = pair
    H.write_file(os.path.join(res.path, "config.json"), json.dumps({"hello": 1}))
    refuser.refuse("--base", base.path, "--delta", res.path, names=(os.path.join(res.path, "config.json"),))


def test_no_weights(refuser, pair):
    base, res = pair
    os.unlink(os.path.join(res.path, "model.safetensors"))
    refuse_both(refuser, f"{base.path}+{res.path}", (res.path,))


def test_index_names_missing_shard(refuser, spair):
    base, res = spair
    os.unlink(os.path.join(base.path, "model-00002-of-00002.safetensors"))
    refuse_both(refuser, f"{base.path}+{res.path}", ("model-00002-of-00002.safetensors",))


@pytest.mark.parametrize("bad", ["../res/model.safetensors", "sub/model-00001-of-00002.safetensors",
                                 "/etc/passwd", "..", ""])
def test_index_bad_shard_name(bad, refuser, spair):
    base, res = spair
    p = os.path.join(base.path, "model.safetensors.index.json")
    idx = json.loads(H.read_file(p))
    os.makedirs(os.path.join(base.path, "sub"), exist_ok=True)
    shutil.copy(os.path.join(base.path, "model-00001-of-00002.safetensors"), os.path.join(base.path, "sub"))
    name = next(iter(idx["weight_map"]))
    idx["weight_map"][name] = bad
    H.write_file(p, json.dumps(idx))
    refuse_both(refuser, f"{base.path}+{res.path}", ("model.safetensors.index.json",))


def test_index_maps_tensor_to_wrong_shard(refuser, spair):
    base, res = spair
    p = os.path.join(base.path, "model.safetensors.index.json")
    idx = json.loads(H.read_file(p))
    n = "model.norm.weight"
    assert idx["weight_map"][n] == "model-00002-of-00002.safetensors"
    idx["weight_map"][n] = "model-00001-of-00002.safetensors"
    H.write_file(p, json.dumps(idx))
    refuse_both(refuser, f"{base.path}+{res.path}", (n,))


def test_tensor_in_two_shards(refuser, spair):
    base, res = spair
    n = "model.norm.weight"
    names1 = base.shards[0][1]
    items = [(x, base.tensors[x]) for x in names1 + [n]]
    H.write_file(os.path.join(base.path, "model-00001-of-00002.safetensors"), H.st_bytes(items, {"format": "pt"}))
    refuse_both(refuser, f"{base.path}+{res.path}", (n,))


# ---- SPECs ----------------------------------------------------------------------------------------

def test_term_does_not_exist(refuser, pair, tmp_path):
    base, res = pair
    missing = os.path.join(str(tmp_path), "no-such-residuals")
    refuser.refuse(f"{base.path}+{missing}", names=("no-such-residuals",))
    refuser.refuse("--base", base.path, "--delta", missing, names=("no-such-residuals",))
    refuser.refuse(f"{missing}+{res.path}", names=("no-such-residuals",))


def test_model_plus_model(refuser, pair, tmp_path):
    base, res = pair
    other, _ = make_pair(str(tmp_path), tag="2")
    r = refuser.refuse(f"{base.path}+{other.path}", names=(other.path,), rc=2)
    assert "model" in r.stderr
    refuser.refuse("--base", base.path, "--delta", other.path, names=(other.path,), rc=2)


def test_first_term_residuals(refuser, pair, tmp_path):
    base, res = pair
    _, res2 = make_pair(str(tmp_path), tag="2")
    refuser.refuse(f"{res.path}+{res2.path}", names=(res.path,), rc=2)
    refuser.refuse(f"{res.path}-{base.path}", names=(res.path,), rc=2)
    refuser.refuse("--base", res.path, "--delta", res2.path, names=(res.path,), rc=2)
    refuser.refuse("--instruct", res.path, "--base", base.path, names=(res.path,), rc=2)


def test_usage_errors(refuser, pair):
    base, res = pair
    for args in (["mount"], ["mount", f"{base.path}+{res.path}"], ["frobnicate"],
                 ["mount", "--dtype", "int8", f"{base.path}+{res.path}", refuser.tmp],
                 ["mount", "--rounding", "up", f"{base.path}+{res.path}", refuser.tmp]):
        r = H.run(args)
        assert r.returncode == 2, r
        assert "residfs: error:" in r.stderr or "usage" in r.stderr.lower(), r
    assert not H.is_mounted(refuser.tmp)


# ---- compute mode ----------------------------------------------------------------------------------

def test_compute_instruct_vocab_smaller(refuser, tmp_path):
    rng = np.random.default_rng(71)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    base = H.write_model(os.path.join(str(tmp_path), "cb"), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    it = dict(bt)
    n = "model.embed_tokens.weight"
    it[n] = H.T.from_f32("BF16", [V - 4, HD], rng.normal(0, 0.02, (V - 4) * HD))
    ins = H.write_model(os.path.join(str(tmp_path), "ci"), it, H.llama_config(V - 4, HD, INTER, L, KV, False, "BF16"))
    r = refuse_both(refuser, f"{ins.path}-{base.path}", (n,))
    assert f"{V - 4}" in r.stderr and f"{V}" in r.stderr, r


def test_compute_instruct_lacks_tensor(refuser, tmp_path):
    rng = np.random.default_rng(72)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    base = H.write_model(os.path.join(str(tmp_path), "cb"), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    n = "model.layers.0.mlp.down_proj.weight"
    it = {k: t for k, t in bt.items() if k != n}
    ins = H.write_model(os.path.join(str(tmp_path), "ci"), it, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    refuse_both(refuser, f"{ins.path}-{base.path}", (n,))
