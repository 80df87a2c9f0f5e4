"""Model directories as a hostile stranger would ship them: links out of the
directory, FIFOs, narrow permissions, shapes that try to grow the model,
shard names that collide with generated files, config files with junk.
Each case is either refused before anything is mounted or written (the
message names the file and says what is wrong) or handled as docs/security.md
describes; none may hang, leak a file or give wrong bytes."""
import json
import os
import stat
import struct
import subprocess
import tempfile

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama
from test_bad_inputs import make_pair, pair, refuse_both, spair  # noqa: F401 (fixtures)

V, HD, INTER, L, KV = 64, 16, 32, 1, 16


def secret(tmp_path):
    """A file outside every model directory, standing for /etc/shadow."""
    p = os.path.join(str(tmp_path), "secret.txt")
    H.write_file(p, b"root:$6$not-for-you\n", mode=0o600)
    return p


# ---- links out of the directory ------------------------------------------------------------

def test_other_file_linking_outside_is_not_shown(mounter, pair, tmp_path):
    base, res = pair
    os.symlink(secret(tmp_path), os.path.join(base.path, "notes.txt"))
    spec = f"{base.path}+{res.path}"
    mp = mounter.mount(spec)
    assert "notes.txt" not in os.listdir(mp)
    out = os.path.join(str(tmp_path), "out")
    e = H.run(["export", spec, out, "--quiet"])
    assert e.returncode == 0, e
    assert "notes.txt" not in os.listdir(out)
    i = H.run(["inspect", spec])
    assert i.returncode == 0 and "notes.txt" in i.stdout + i.stderr and "outside" in i.stdout + i.stderr, i


def test_other_file_linking_inside_is_shown(mounter, pair):
    base, res = pair
    H.write_file(os.path.join(base.path, "real.txt"), b"inside\n")
    os.symlink("real.txt", os.path.join(base.path, "alias.txt"))
    mp = mounter.mount(f"{base.path}+{res.path}")
    assert H.read_file(os.path.join(mp, "alias.txt")) == b"inside\n"


@pytest.mark.parametrize("victim", ["model-00001-of-00002.safetensors", "config.json",
                                    "model.safetensors.index.json"])
def test_model_file_linking_outside_is_refused(refuser, spair, tmp_path, victim):
    base, res = spair
    p = os.path.join(base.path, victim)
    outside = os.path.join(str(tmp_path), "elsewhere-" + victim)
    os.rename(p, outside)  # a valid file, but not inside the directory
    os.symlink(outside, p)
    r = refuse_both(refuser, f"{base.path}+{res.path}", (victim,))
    assert "outside" in r.stderr, r


def test_tokenizer_linking_outside_is_refused(refuser, pair, tmp_path):
    base, res = pair
    p = os.path.join(res.path, "tokenizer.json")
    os.unlink(p)
    os.symlink(secret(tmp_path), p)
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("tokenizer.json",))
    assert "outside" in r.stderr, r


def test_hf_cache_snapshot_links_into_blobs(mounter, tmp_path):
    """The Hugging Face cache stores files as snapshots/REV/NAME -> ../../blobs/HASH:
    links into the repository's blobs/ are inside."""
    root = str(tmp_path)
    base, res = make_pair(os.path.join(root, "src"))
    for m, repo in ((base.path, "models--org--base"), (res.path, "models--org--res")):
        snap = os.path.join(root, "hub", repo, "snapshots", "0123abcd")
        blobs = os.path.join(root, "hub", repo, "blobs")
        os.makedirs(snap)
        os.makedirs(blobs)
        for fn in os.listdir(m):
            h = "blob-" + fn.replace(".", "-")
            os.rename(os.path.join(m, fn), os.path.join(blobs, h))
            os.symlink(os.path.join("..", "..", "blobs", h), os.path.join(snap, fn))
    hb = os.path.join(root, "hub", "models--org--base", "snapshots", "0123abcd")
    hr = os.path.join(root, "hub", "models--org--res", "snapshots", "0123abcd")
    base.path, res.path = hb, hr
    exp = H.expected_apply(base, [(res, 1.0)])
    mp = mounter.mount(f"{hb}+{hr}")
    H.verify_dir(mp, exp, seed=3)


# ---- FIFOs and other non-files ---------------------------------------------------------------

@pytest.mark.parametrize("victim", ["model-00002-of-00002.safetensors", "config.json",
                                    "model.safetensors.index.json"])
def test_fifo_as_input_is_refused_without_hanging(refuser, spair, victim):
    base, res = spair
    p = os.path.join(base.path, victim)
    os.unlink(p)
    os.mkfifo(p)
    # a hang here would end in the run() timeout, failing the test
    refuse_both(refuser, f"{base.path}+{res.path}", (victim,))


def test_fifo_as_delta_file_is_refused(refuser, pair):
    base, res = pair
    p = os.path.join(res.path, "model.safetensors")
    os.unlink(p)
    os.mkfifo(p)
    refuse_both(refuser, f"{base.path}+{res.path}", ("model.safetensors",))


def test_fifo_as_tokenizer_is_refused(refuser, pair):
    base, res = pair
    p = os.path.join(res.path, "tokenizer_config.json")
    os.unlink(p)
    os.mkfifo(p)
    refuse_both(refuser, f"{base.path}+{res.path}", ("tokenizer_config.json",))


def test_fifo_among_other_files_is_skipped(mounter, pair):
    base, res = pair
    os.mkfifo(os.path.join(base.path, "pipe.txt"))
    mp = mounter.mount(f"{base.path}+{res.path}")
    assert "pipe.txt" not in os.listdir(mp)


# ---- permissions ---------------------------------------------------------------------------

def test_modes_are_never_widened(mounter, pair, tmp_path):
    base, res = pair
    H.write_file(os.path.join(base.path, "private.txt"), b"mine\n", mode=0o600)
    os.chmod(os.path.join(base.path, "model.safetensors"), 0o640)
    os.chmod(os.path.join(res.path, "model.safetensors"), 0o644)
    os.chmod(os.path.join(res.path, "tokenizer.json"), 0o600)
    spec = f"{base.path}+{res.path}"
    # a mountpoint another user can reach (pytest's own tmp is 0700)
    mp = tempfile.mkdtemp(prefix="residfs-modes-", dir="/tmp")
    os.chmod(mp, 0o755)
    try:
        _check_modes(mounter, spec, mp, tmp_path)
    finally:
        H.unmount(mp)
        os.rmdir(mp)


def _check_modes(mounter, spec, mp, tmp_path):
    mounter.mount(spec, "-o", "allow_other", mp=mp)
    mode = {fn: stat.S_IMODE(os.stat(os.path.join(mp, fn)).st_mode) for fn in os.listdir(mp)}
    assert mode["private.txt"] == 0o400, mode
    assert mode["tokenizer.json"] == 0o400, mode
    assert mode["model.safetensors"] == 0o440, mode      # base 0640, delta 0644
    assert mode["config.json"] == 0o444, mode
    # another user cannot read the narrowed files through an allow_other mount
    code = ("import sys\n"
            "for fn, want in (('private.txt', False), ('config.json', True)):\n"
            "    try:\n"
            "        open(sys.argv[1] + '/' + fn, 'rb').read(); ok = True\n"
            "    except PermissionError:\n"
            "        ok = False\n"
            "    assert ok == want, (fn, ok)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, mp], cwd="/", preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # export keeps the permission bits of the sources, never wider
    out = os.path.join(str(tmp_path), "out")
    e = H.run(["export", spec, out, "--quiet"])
    assert e.returncode == 0, e
    emode = {fn: stat.S_IMODE(os.stat(os.path.join(out, fn)).st_mode) for fn in os.listdir(out)}
    assert emode["private.txt"] == 0o600, emode
    assert emode["tokenizer.json"] == 0o600, emode
    assert emode["model.safetensors"] == 0o640, emode


# ---- shapes that would change the model ---------------------------------------------------

def _pair_with_delta(root, change):
    """base + residuals where change(deltas) alters the deltas first."""
    rng = np.random.default_rng(71)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    change(d, rng)
    res = H.write_residuals(os.path.join(root, "res"), d, vocab=V)
    return base, res


def _grow(d, rng, name, rows):
    t = d[name]
    shape = [rows] + list(t.shape[1:])
    d[name] = H.T.from_f32("F32", shape, rng.normal(0, 0.01, int(np.prod(shape))))


@pytest.mark.parametrize("name,rows", [("model.norm.weight", 4 * HD),
                                       ("model.layers.0.self_attn.k_proj.weight", 2 * KV)])
def test_only_vocabulary_tensors_grow(refuser, tmp_path, name, rows):
    base, res = _pair_with_delta(str(tmp_path), lambda d, rng: _grow(d, rng, name, rows))
    r = refuse_both(refuser, f"{base.path}+{res.path}", (name,))
    assert "vocab" in r.stderr, r
    assert f"[{rows}" in r.stderr, r  # both shapes named


def test_vocabulary_tensors_must_grow_alike(refuser, tmp_path):
    def change(d, rng):
        _grow(d, rng, "model.embed_tokens.weight", V + 8)
        _grow(d, rng, "lm_head.weight", V + 16)
    base, res = _pair_with_delta(str(tmp_path), change)
    refuse_both(refuser, f"{base.path}+{res.path}", ("model.embed_tokens.weight",))


def test_vocabulary_growth_still_works(mounter, tmp_path):
    def change(d, rng):
        _grow(d, rng, "model.embed_tokens.weight", V + 8)
        _grow(d, rng, "lm_head.weight", V + 8)
    base, res = _pair_with_delta(str(tmp_path), change)
    mp = mounter.mount(f"{base.path}+{res.path}")
    cfg = json.loads(H.read_file(os.path.join(mp, "config.json")))
    assert cfg["vocab_size"] == V + 8
    H.verify_dir(mp, H.expected_apply(base, [(res, 1.0)]), seed=5)


def test_compute_mode_only_vocabulary_grows(refuser, tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(72)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    cfg = H.llama_config(V, HD, INTER, L, KV, False, "BF16")
    base = H.write_model(os.path.join(root, "base"), bt, cfg)
    it = dict(bt)
    it["model.norm.weight"] = H.T.from_f32("BF16", [2 * HD], rng.normal(0, 1, 2 * HD))
    ins = H.write_model(os.path.join(root, "ins"), it, cfg)
    refuse_both(refuser, f"{ins.path}-{base.path}", ("model.norm.weight",))


# ---- names that collide with generated files ----------------------------------------------

@pytest.mark.parametrize("shard", ["config.json", "README.md", "model.safetensors.index.json",
                                   "generation_config.json", "model.safetensors", "x/../y.safetensors",
                                   ".safetensors"])
def test_index_shard_names_are_checked(refuser, spair, shard):
    base, res = spair
    p = os.path.join(base.path, "model.safetensors.index.json")
    idx = json.loads(H.read_file(p))
    first = next(iter(idx["weight_map"]))
    idx["weight_map"][first] = shard
    H.write_file(p, json.dumps(idx))
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("model.safetensors.index.json",))
    assert "shard name" in r.stderr, r


# ---- config files ------------------------------------------------------------------------

@pytest.mark.parametrize("tail,what", [(b"}junk", "after the JSON"), (b"\x00", "NUL"),
                                       (b"\n\n", None)])
def test_config_trailing_bytes(refuser, mounter, pair, tail, what):
    base, res = pair
    p = os.path.join(base.path, "config.json")
    H.write_file(p, H.read_file(p).rstrip() + tail)
    if what is None:  # white space after the object is fine
        mounter.mount(f"{base.path}+{res.path}")
        return
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("config.json",))
    assert what in r.stderr, r


@pytest.mark.parametrize("value", ["1e300", "-5", "0", "12.5", "\"64\"", "4294967296"])
def test_config_vocab_size_must_be_a_count(refuser, pair, value):
    base, res = pair
    p = os.path.join(base.path, "config.json")
    cfg = json.loads(H.read_file(p))
    text = json.dumps(cfg).replace(f'"vocab_size": {V}', f'"vocab_size": {value}')
    assert value in text
    H.write_file(p, text)
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("config.json",))
    assert "vocab_size" in r.stderr, r


@pytest.mark.parametrize("key,value", [("param_count", "\"many\""), ("param_count", "1.5"),
                                       ("tags", "[1, 2]"), ("residuals_version", "{}"),
                                       ("dtype", "[\"float32\"]")])
def test_residuals_config_types(refuser, pair, key, value):
    base, res = pair
    p = os.path.join(res.path, "config.json")
    cfg = json.loads(H.read_file(p))
    cfg[key] = json.loads(value)
    H.write_file(p, json.dumps(cfg))
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("config.json", key))


def test_tie_word_embeddings_must_be_boolean(refuser, pair):
    base, res = pair
    p = os.path.join(base.path, "config.json")
    cfg = json.loads(H.read_file(p))
    cfg["tie_word_embeddings"] = "yes"
    H.write_file(p, json.dumps(cfg))
    refuse_both(refuser, f"{base.path}+{res.path}", ("config.json", "tie_word_embeddings"))


# ---- messages say what is wrong -------------------------------------------------------------

def test_not_a_safetensors_file(refuser, pair, tmp_path):
    base, res = pair
    H.write_file(os.path.join(res.path, "model.safetensors"), b"root:$6$abcdefgh:19000:0:99999:7:::\n")
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("model.safetensors",))
    assert "not a safetensors file" in r.stderr, r


def _rewrite_header(path, edit):
    data = H.read_file(path)
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n])
    edit(hdr)
    text = json.dumps(hdr).encode()
    text += b" " * (-(8 + len(text)) % 8)
    H.write_file(path, struct.pack("<Q", len(text)) + text + data[8 + n:])


def test_huge_dimension_is_called_too_large(refuser, pair):
    base, res = pair
    p = os.path.join(res.path, "model.safetensors")
    name = "model.norm.weight"
    _rewrite_header(p, lambda h: h[name].__setitem__("shape", [2 ** 62]))
    r = refuse_both(refuser, f"{base.path}+{res.path}", (name,))
    assert "too large" in r.stderr, r


def test_offsets_past_the_end_are_called_so(refuser, pair):
    base, res = pair
    p = os.path.join(res.path, "model.safetensors")

    def edit(h):
        last = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][1])
        b, e = h[last]["data_offsets"]
        h[last]["data_offsets"] = [b + 4096, e + 4096]
    _rewrite_header(p, edit)
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("model.safetensors",))
    assert "past the end" in r.stderr and "hole" not in r.stderr, r


def test_delta_for_f64_tensor_names_dtypes(refuser, tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(73)
    bt = _llama(rng, "BF16", V, HD, INTER, L, KV, tied=False)
    bt["model.rope_scale"] = H.T("F64", [4], np.arange(4, dtype=np.float64).tobytes())
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, HD, INTER, L, KV, False, "BF16"))
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res"), d, vocab=V)
    r = refuse_both(refuser, f"{base.path}+{res.path}", ("model.rope_scale", "F64"))
    assert "not a floating type" not in r.stderr and "F32, BF16 and F16" in r.stderr, r


def test_mountpoint_is_a_file(tmp_path, pair, binary):
    base, res = pair
    f = os.path.join(str(tmp_path), "file")
    H.write_file(f, b"x")
    r = H.run(["mount", f"{base.path}+{res.path}", f])
    assert r.returncode != 0 and "Invalid argument" not in r.stderr and "not a directory" in r.stderr, r
