"""Fixtures of the residfs integration tests.

The binary is $RESIDFS_BIN (default <repo>/build/fs/residfs). Tests that mount
skip only when /dev/fuse is missing; every mount is unmounted in teardown
(fusermount3 -u, then -uz), and a session hook unmounts anything left.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rfshelp as H  # noqa: E402

_ALL_MOUNTS = []


def pytest_sessionfinish(session, exitstatus):
    for mp in _ALL_MOUNTS:
        H.unmount(mp)


@pytest.fixture(scope="session")
def binary():
    b = H.residfs_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"residfs binary not found at {b}: build it or set RESIDFS_BIN")
    return b


def need_fuse():
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: cannot mount")


class Mounter:
    def __init__(self, tmp):
        self.tmp = tmp
        self.mps = []

    def _mp(self, mp):
        if mp is None:
            mp = os.path.join(self.tmp, f"mnt{len(self.mps)}")
        os.makedirs(mp, exist_ok=True)
        self.mps.append(mp)
        _ALL_MOUNTS.append(mp)
        return mp

    def mount(self, *args, mp=None, cwd=None):
        """residfs mount ARGS... MP; must succeed and be live when it returns."""
        mp = self._mp(mp)
        r = H.run(["mount", *args, mp], cwd=cwd, timeout=60)
        assert r.returncode == 0, f"mount failed: {r}"
        assert H.is_mounted(mp), f"residfs mount returned 0 but nothing is mounted at {mp}: {r}"
        return mp

    def refuse(self, *args, names=(), rc=None, cwd=None):
        """residfs mount ARGS... MP must fail before mounting: non-zero exit, an
        error naming each of @names, nothing mounted. Returns the Result."""
        mp = self._mp(None)
        r = H.run(["mount", *args, mp], cwd=cwd, timeout=60)
        mounted = H.is_mounted(mp)
        assert not mounted, f"a refused mount left {mp} mounted: {r}"
        assert r.returncode != 0, f"mount was expected to fail: {r}"
        if rc is not None:
            assert r.returncode == rc, f"exit status {r.returncode}, expected {rc}: {r}"
        assert "residfs: error:" in r.stderr, f"no error message: {r}"
        for n in names:
            assert n in r.stderr, f"the error does not name {n!r}: {r}"
        assert os.listdir(mp) == [], f"{mp} is not empty after a refused mount"
        return r

    def unmount(self, mp):
        assert H.unmount(mp), f"cannot unmount {mp}"

    def cleanup(self):
        return [mp for mp in self.mps if not H.unmount(mp)]


@pytest.fixture
def mounter(tmp_path, binary):
    need_fuse()
    m = Mounter(str(tmp_path))
    yield m
    leaked = m.cleanup()
    assert not leaked, f"could not unmount {leaked}"


@pytest.fixture
def refuser(tmp_path, binary):
    """Like mounter, for mounts that must be refused: also works without /dev/fuse
    (the inputs are rejected before any mount is tried)."""
    m = Mounter(str(tmp_path))
    yield m
    m.cleanup()


def export(args, outdir, force=False, cwd=None):
    r = H.run(["export", *args, outdir, "--quiet"] + (["--force"] if force else []), cwd=cwd)
    assert r.returncode == 0, f"export failed: {r}"
    return outdir


# ---- shared models -------------------------------------------------------------------

class Scen:
    pass


def _llama(rng, dtype, vocab, hidden, inter, layers, kv, tied):
    return H.random_weights(rng, dtype, H.llama_shapes(vocab, hidden, inter, layers, kv, tied))


def _instruct_of(rng, base_tensors, dtype, grow=0):
    """Instruct weights: base + small noise, in @dtype; embedding/lm_head grown by @grow rows."""
    out = {}
    for n, t in base_tensors.items():
        if t.dtype not in H.FLOATS:
            out[n] = t
            continue
        b = t.f32()
        shape = list(t.shape)
        if grow and n in ("model.embed_tokens.weight", "lm_head.weight"):
            shape[0] += grow
            b = np.concatenate([b, rng.normal(0, 0.02, grow * shape[1]).astype(np.float32)])
        noise = rng.normal(0, 0.002, b.size).astype(np.float32)
        out[n] = H.T.from_f32(dtype, shape, b + noise)
    return out


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    """The main bf16 pair: sharded base (2 shards, base order not the writer's,
    an I64 tensor, extra files), instruct, and residuals in f32/bf16/fp16."""
    root = str(tmp_path_factory.mktemp("llama"))
    rng = np.random.default_rng(1234)
    V, Hd, I, L, KV = 4200, 64, 128, 2, 32
    s = Scen()
    s.root = root
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    bt["model.position_ids"] = H.T("I64", [1, 16], np.arange(16, dtype=np.int64).tobytes())
    cfg = H.llama_config(V, Hd, I, L, KV, False, "BF16")
    s.base = H.write_model(os.path.join(root, "base"), bt, cfg, nshards=2, flavour="base",
                           others={"LICENSE": "Apache-2.0 (test)\n", "README.md": "# base model\n",
                                   "notes.txt": b"\x00\x01binary-ish\xff" * 100})
    it = _instruct_of(rng, {n: t for n, t in bt.items()}, "BF16")
    s.ins = H.write_model(os.path.join(root, "instruct"), it, cfg, nshards=1, flavour="instruct")
    floats = [n for n, t in bt.items() if t.dtype in H.FLOATS]
    # the package's residuals: f32(instruct) - f32(base) in float32
    s.resA = H.write_residuals(os.path.join(root, "res-f32"),
                               {n: H.delta_from(bt[n], it[n], "F32") for n in floats}, vocab=V)
    # bf16 deltas, random
    s.resB = H.write_residuals(os.path.join(root, "res-bf16"),
                               {n: H.T.from_f32("BF16", bt[n].shape, rng.normal(0, 0.003, bt[n].numel))
                                for n in floats}, vocab=V, gen=False)
    # fp16 deltas, no tokenizer nor generation config
    s.resC = H.write_residuals(os.path.join(root, "res-fp16"),
                               {n: H.T.from_f32("F16", bt[n].shape, rng.normal(0, 0.003, bt[n].numel))
                                for n in floats}, vocab=V, tokenizer=False)
    # f32 deltas with many exact bf16 ties
    s.resT = H.write_residuals(os.path.join(root, "res-ties"),
                               {n: H.T("F32", bt[n].shape, H.encode("F32", H.inject_ties(
                                   rng, bt[n], rng.normal(0, 0.004, bt[n].numel).astype(np.float32), 0.2)))
                                for n in floats}, vocab=V)
    return s
