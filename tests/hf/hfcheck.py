"""Helpers of the tests against the real packages: running residfs, mounting and
unmounting, reading every safetensors file of a directory both ways the
safetensors package offers, bit-exact comparison of torch tensors, and the
docs/arithmetic.md formula computed with torch in float32."""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rfsproc as P  # noqa: E402
from rfsproc import REPO, Result, is_mounted, residfs_bin, unmount  # noqa: E402,F401

INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16,
            torch.float64: torch.int64}


def run(args, timeout=300, cwd=None):
    return P.run(args, cwd=cwd, timeout=timeout)


def export(args, outdir):
    r = run(["export", *args, outdir, "--quiet"])
    assert r.returncode == 0, f"export failed: {r}"
    return outdir


# ---- mounts ----------------------------------------------------------------------------

class Mounter:
    """Mounts under @tmp; every mount is unmounted by cleanup() (and by the
    session hook if a test dies before)."""
    registry = []

    def __init__(self, tmp):
        self.tmp = tmp
        self.mps = []

    def mount(self, *args):
        mp = os.path.join(self.tmp, f"mnt{len(self.mps)}")
        os.makedirs(mp, exist_ok=True)
        self.mps.append(mp)
        Mounter.registry.append(mp)
        r = run(["mount", *args, mp], timeout=120)
        assert r.returncode == 0, f"mount failed: {r}"
        assert is_mounted(mp), f"residfs mount returned 0 but nothing is mounted at {mp}: {r}"
        self.last = r
        return mp

    def cleanup(self):
        return [mp for mp in self.mps if not unmount(mp)]


# ---- tensors ----------------------------------------------------------------------------

def st_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


def read_dir(d, check_metadata=None):
    """{name: tensor} of every safetensors file in @d, read with safe_open(framework="pt")
    (get_tensor and get_slice) and with load_file; both must agree bit for bit.
    @check_metadata: the __metadata__ every file must have (None: not checked)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    out = {}
    files = st_files(d)
    assert files, f"{d}: no safetensors file"
    for fn in files:
        p = os.path.join(d, fn)
        lf = load_file(p)
        with safe_open(p, framework="pt") as f:
            keys = list(f.keys())
            if check_metadata is not None:
                assert f.metadata() == check_metadata, f"{p}: metadata {f.metadata()!r}"
            assert sorted(keys) == sorted(lf), f"{p}: safe_open keys {keys} vs load_file {list(lf)}"
            for k in keys:
                t = f.get_tensor(k)
                assert_bits(t, lf[k], f"{p}: {k}: safe_open vs load_file")
                if t.dim() and t.shape[0] > 1:
                    half = t.shape[0] // 2
                    assert_bits(f.get_slice(k)[half:half + 1], t[half:half + 1],
                                f"{p}: {k}: get_slice row {half}")
                assert k not in out, f"{d}: tensor {k} in two files"
                out[k] = t
    return out


def index_map(d):
    p = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def bits(t):
    t = t.detach().contiguous()
    return t.view(INT_VIEW[t.dtype]) if t.dtype in INT_VIEW else t


def diff_count(a, b):
    """Number of elements whose bits differ (same shape and dtype assumed)."""
    return int((bits(a) != bits(b)).sum())


def assert_bits(got, want, what):
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if torch.equal(bits(got), bits(want)):
        return
    ne = (bits(got) != bits(want)).reshape(-1)
    i = int(ne.nonzero()[0])
    g, w = got.reshape(-1)[i], want.reshape(-1)[i]
    raise AssertionError(f"{what}: {int(ne.sum())} of {ne.numel()} elements differ; first at flat "
                         f"index {i}: got {g.item()!r} (bits {bits(g.reshape(1)).item():#x}) "
                         f"expected {w.item()!r} (bits {bits(w.reshape(1)).item():#x})")


def assert_same_tensors(got, want, what, keys=None):
    """Same names (or @keys) and the same bits for each."""
    if keys is None:
        assert sorted(got) == sorted(want), \
            f"{what}: names differ: only got {sorted(set(got) - set(want))}, only expected {sorted(set(want) - set(got))}"
        keys = sorted(want)
    for k in keys:
        assert k in got, f"{what}: {k} missing"
        assert_bits(got[k], want[k], f"{what}: {k}")


def formula(base, terms, out_dtype=None):
    """docs/arithmetic.md with torch: to_out(f32(base) + s1*f32(d1) + s2*f32(d2) ...),
    float32, left to right, each product and each sum rounded (separate torch ops, no
    fused multiply-add); s == 1: no multiply; base rows missing (grown vocabulary) are 0.
    @terms: [(scale, delta tensor)]. Output dtype: @out_dtype or the base's."""
    acc = base.float()
    for s, d in terms:
        x = d.float()
        if x.shape != acc.shape:
            assert x.shape[1:] == acc.shape[1:] and x.shape[0] > acc.shape[0], (x.shape, acc.shape)
            acc = torch.cat([acc, torch.zeros((x.shape[0] - acc.shape[0], *acc.shape[1:]))])
        if s != 1:
            x = x * s  # a Python float: torch multiplies by float32(s)
        acc = torch.add(acc, x)
    return acc.to(out_dtype or base.dtype)


# ---- transformers -----------------------------------------------------------------------

def prompt_ids(vocab):
    """A batch of token ids that uses the grown rows of the vocabulary too."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    ids[0, -3:] = torch.tensor([vocab - 3, vocab - 2, vocab - 1])
    return ids


def load_model(path, dtype):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    m.eval()
    return m


def logits(path, dtype, ids):
    m = load_model(path, dtype)
    with torch.no_grad():
        return m(input_ids=ids).logits


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()
