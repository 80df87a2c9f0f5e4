"""--backend and RESIDFS_BACKEND: every backend gives the same bytes, batches of many small
tensors included, and --backend cuda is refused cleanly where no CUDA device answers.

RESIDFS_GPU_MIN_ELEMENTS=1 sends every batch, however small, through the GPU decision
(auto's measurement, or the GPU itself with --backend cuda), so these small models take the
same path a large one does.  Without a GPU the same tests check the refusal and the CPU
fallback of auto."""
import json
import os

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama, export

ALL_GPU = {"RESIDFS_GPU_MIN_ELEMENTS": "1"}
NO_CUDA = ("--backend cuda: no CUDA device answers", "--backend cuda: this residfs was built without CUDA")


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A bf16 model of many small tensors (16 layers, hidden 24: more tensors per file than a batch holds: norm weights of 24 elements
    next to larger matrices), an F32 and an F16 residual."""
    root = str(tmp_path_factory.mktemp("backend"))
    rng = np.random.default_rng(77)
    V, Hd, I, L, KV = 96, 24, 40, 16, 8
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                         nshards=2)
    d1 = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.02, t.numel)) for n, t in bt.items()}
    d2 = {n: H.T.from_f32("F16", t.shape, rng.normal(0, 0.02, t.numel)) for n, t in bt.items()}
    r1 = H.write_residuals(os.path.join(root, "r1"), d1, vocab=V)
    r2 = H.write_residuals(os.path.join(root, "r2"), d2, vocab=V, tokenizer=False)
    return base, r1, r2


def spec_of(many):
    base, r1, r2 = many
    return f"{base.path}+{r1.path}+0.5*{r2.path}"


def expected(many, cast_first):
    base, r1, r2 = many
    return H.expected_apply(base, [(r1, 1.0), (r2, 0.5)], cast_first=cast_first)


def is_refusal(r):
    return r.returncode == 1 and any(m in r.stderr for m in NO_CUDA)


@pytest.mark.parametrize("rounding", ["single", "cast-first"])
def test_export_same_bytes_on_every_backend(many, tmp_path, rounding):
    exp = expected(many, rounding == "cast-first")
    runs = {
        "default": ([], {"RESIDFS_BACKEND": None}),
        "cpu": (["--backend", "cpu"], ALL_GPU),
        "auto": (["--backend", "auto"], ALL_GPU),
        "env-cpu": ([], {"RESIDFS_BACKEND": "cpu", **ALL_GPU}),
        "env-auto": ([], {"RESIDFS_BACKEND": "auto", **ALL_GPU}),
    }
    outs = []
    for name, (flags, env) in runs.items():
        out = os.path.join(str(tmp_path), name)
        r = H.run(["export", spec_of(many), out, "--rounding", rounding, *flags], env=env)
        assert r.returncode == 0, r
        assert "residfs: backend " in r.stderr, r
        if name.endswith("cpu"):
            assert "residfs: backend cpu (" in r.stderr, r
        else:
            assert "residfs: backend auto: cpu (" in r.stderr or "residfs: backend auto: cuda" in r.stderr, r
        outs.append(out)
    H.verify_dir(outs[0], exp, reads=False)
    for o in outs[1:]:
        H.compare_dirs(outs[0], o)

    # cuda: the same bytes where a device answers, else a clear refusal and no output
    out = os.path.join(str(tmp_path), "cuda")
    r = H.run(["export", spec_of(many), out, "--rounding", rounding, "--backend", "cuda", "--quiet"],
              env=ALL_GPU)
    if r.returncode == 0:
        H.compare_dirs(outs[0], out)
    else:
        assert is_refusal(r), r
        assert not os.path.exists(out), r


def stats(mp):
    return json.loads(H.read_file(os.path.join(mp, ".residfs-stats")))


@pytest.mark.parametrize("cache", ["256M", "0"])
def test_mount_reads_through_batches(mounter, many, tmp_path, cache):
    """Random preads (edge elements, pieces of many tensors in one request) and whole reads
    equal the reference with the cache on and off, on the CPU and under auto."""
    exp = expected(many, False)
    for flags, env, want in ((["--backend", "cpu"], ALL_GPU, "cpu ("),
                             ([], {"RESIDFS_BACKEND": "auto", **ALL_GPU}, "auto: ")):
        mp = mounter._mp(None)
        r = H.run(["mount", spec_of(many), mp, "--cache-size", cache, *flags], env=env, timeout=60)
        assert r.returncode == 0, r
        assert H.is_mounted(mp), r
        H.verify_dir(mp, exp, reads=True, seed=3)
        st = stats(mp)
        assert st["backend"].startswith(want), st
        assert st["computed_bytes"] > 0, st
        assert H.unmount(mp), mp


def test_mount_backend_cuda(mounter, many, tmp_path):
    mp = mounter._mp(None)
    r = H.run(["mount", spec_of(many), mp, "--backend", "cuda"], env=ALL_GPU, timeout=60)
    if r.returncode == 0:
        assert H.is_mounted(mp), r
        H.verify_dir(mp, expected(many, False), reads=True, seed=4)
        assert stats(mp)["backend"].startswith("cuda ("), stats(mp)
    else:
        assert is_refusal(r), r
        assert not H.is_mounted(mp), r


def test_backend_bad_values(many, tmp_path):
    out = os.path.join(str(tmp_path), "x")
    r = H.run(["export", spec_of(many), out, "--backend", "gpu"])
    assert r.returncode == 2 and "--backend: 'gpu' is not one of auto, cpu, cuda" in r.stderr, r
    r = H.run(["export", spec_of(many), out], env={"RESIDFS_BACKEND": "gpu"})
    assert r.returncode == 2 and "RESIDFS_BACKEND: 'gpu' is not one of auto, cpu, cuda" in r.stderr, r
    assert not os.path.exists(out)
    # the flag wins over the environment
    r = H.run(["export", spec_of(many), out, "--backend", "cpu"], env={"RESIDFS_BACKEND": "gpu"})
    assert r.returncode == 0 and "residfs: backend cpu (" in r.stderr, r


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """float32 tensors that start 2 bytes past a multiple of 4 (after bf16 tensors of odd
    length), one longer than an export block: every FUSE request, cache block and export
    block boundary inside them cuts an element in two."""
    root = str(tmp_path_factory.mktemp("cut"))
    rng = np.random.default_rng(78)
    shapes = {"model.a.weight": ("BF16", (3,)), "model.b.weight": ("F32", (3_000_001,)),
              "model.c.weight": ("BF16", (5,)), "model.d.weight": ("F32", (70_001,))}
    bt = {n: H.T.from_f32(dt, sh, rng.normal(0, 1, int(np.prod(sh)))) for n, (dt, sh) in shapes.items()}
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(16, 8, 8, 1, 8, False, "BF16"))
    d = {n: H.T.from_f32("BF16", t.shape, rng.normal(0, 0.1, t.numel)) for n, t in bt.items()}
    r = H.write_residuals(os.path.join(root, "r"), d, vocab=16, tokenizer=False)
    return base, r


def test_elements_cut_by_request_edges(mounter, cut, tmp_path):
    base, r = cut
    spec = f"{base.path}+0.5*{r.path}"
    exp = H.expected_apply(base, [(r, 0.5)])
    out = os.path.join(str(tmp_path), "x")
    res = H.run(["export", spec, out, "--quiet"], env=ALL_GPU)
    assert res.returncode == 0, res
    data = H.read_file(os.path.join(out, "model.safetensors"))
    n = int.from_bytes(data[:8], "little")
    start_b = 8 + n + json.loads(data[8:8 + n])["model.b.weight"]["data_offsets"][0]
    assert start_b % 4 == 2, start_b  # the layout this test is about
    H.verify_dir(out, exp, reads=False)
    for cache in ("256M", "0"):
        mp = mounter._mp(None)
        res = H.run(["mount", spec, mp, "--cache-size", cache], env=ALL_GPU, timeout=60)
        assert res.returncode == 0, res
        H.verify_dir(mp, exp, reads=True, seed=5)
        H.compare_dirs(mp, out)
        assert H.unmount(mp), mp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3000 bf16 tensors of 16 to 39 elements: a 4 KiB page holds over 64 whole tensors
    (more than a batch) and cuts the next one."""
    root = str(tmp_path_factory.mktemp("tiny"))
    rng = np.random.default_rng(79)
    bt = {f"model.t{i:04d}.weight": H.T.from_f32("BF16", (int(n),), rng.normal(0, 1, int(n)))
          for i, n in enumerate(rng.integers(16, 40, 3000))}
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(16, 8, 8, 1, 8, False, "BF16"))
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.1, t.numel)) for n, t in bt.items()}
    r = H.write_residuals(os.path.join(root, "r"), d, vocab=16, tokenizer=False)
    return base, r


def test_page_reads_across_many_tiny_tensors(mounter, tiny, tmp_path):
    """Page-sized reads, each over more tensors than a batch holds and ending inside a
    tensor (a partial cache block): the right bytes, and no operand mapping left behind in
    the daemon (every window of every batch is unmapped)."""
    base, r = tiny
    spec = f"{base.path}+{r.path}"
    out = export([spec], os.path.join(str(tmp_path), "x"))
    mp = mounter.mount(spec)
    fn = "model.safetensors"
    want = H.read_file(os.path.join(out, fn))
    fd = os.open(os.path.join(mp, fn), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in range(0, len(want), 4096):
            got = os.pread(fd, 4096, page)
            assert got == want[page:page + 4096], f"{fn}: page at {page} differs"
    finally:
        os.close(fd)
    pids = H.daemon_pids(mp)
    assert pids, "no daemon found for the mount"
    for pid in pids:
        with open(f"/proc/{pid}/maps") as f:
            left = [line for line in f if ".safetensors" in line]
        assert not left, f"the daemon still maps source files after the reads: {left[:3]}"
