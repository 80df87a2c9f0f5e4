"""Stress: many threads reading a mounted safetensors file at once with small,
odd-sized preads and page faults of shared and private mappings, aimed at the
edges of 1 MiB cache blocks and of tensors, checked byte for byte against a
reference computed here in numpy.

It guards the block cache: blocks are 1 MiB of the virtual file, a block
holds the parts of several tensors, and two tensors may share one computed
recipe (compute mode writes lm_head.weight as a copy of the embedding's
delta when the base ties them). A cache keyed by (recipe, block) gives the
tensor read second the bytes of the one read first, in the block where one
ends and the other starts; only partial-block requests (small reads, page
faults, POSIX_FADV_RANDOM) go through the cache, so that is what this reads.

Cases: apply and compute mode, tied and untied embeddings, BF16/F16/F32
bases, F32/BF16 deltas (compute mode: output dtype), cache budgets 0, 2M
(evicting) and the default, sharded and single-file inputs. Fixed seeds and
bounded counts: the whole file takes well under a minute on two cores.
"""
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import rfshelp as H
from conftest import _instruct_of, _llama

MIB = 1 << 20
# vocab 1000 x hidden 300: the embedding (and lm_head) is 600 KB in bf16, 1.2 MB
# in f32, so tensors straddle 1 MiB blocks and adjacent tensors meet inside one
V, HD, INTER, LAYERS, KV = 1000, 300, 520, 2, 100

# (mode, tied, base dtype, delta dtype (compute mode: output dtype), --cache-size, shards)
CASES = [
    ("compute", True, "BF16", "F32", None, 1),
    ("compute", True, "BF16", "F32", "2M", 2),
    ("compute", True, "F16", "BF16", None, 1),
    ("compute", True, "F32", "F32", "0", 2),
    ("compute", False, "BF16", "F32", "2M", 1),
    ("compute", False, "F16", "F32", None, 2),
    ("apply", True, "BF16", "F32", None, 2),
    ("apply", True, "F16", "BF16", "2M", 1),
    ("apply", True, "F32", "F32", "0", 1),
    ("apply", False, "BF16", "BF16", "2M", 2),
    ("apply", False, "F32", "BF16", None, 2),
    ("apply", False, "F16", "F32", "0", 1),
]


def _case_id(c):
    mode, tied, bdt, ddt, cache, shards = c
    return (f"{mode}-{'tied' if tied else 'untied'}-{bdt.lower()}-{ddt.lower()}-"
            f"cache{cache if cache is not None else 'default'}-{'sharded' if shards > 1 else 'single'}")


# ---- reading -------------------------------------------------------------------------

def _interesting_points(want):
    """File offsets worth aiming at: tensor starts and ends, 1 MiB block edges."""
    size = len(want)
    _, _, ents, doff = H.parse_st(want)
    pts = {0, doff, size}
    for _, _, _, b, e in ents:
        pts.add(doff + b)
        pts.add(doff + e)
    pts.update(range(MIB, size, MIB))
    return sorted(pts)


def _pick(rng, size, points):
    ln = rng.choice([1, 2, 3, 5, 7, 8, 13, 511, 4095, 4096, 4097, 12289, 65535, 65537,
                     rng.randrange(1, 300 * 1024), rng.randrange(1, 300 * 1024),
                     rng.randrange(1, 16 * 1024)])
    if rng.random() < 0.65:
        # around an edge: ending just before it, straddling it, or starting just after
        off = rng.choice(points) + rng.randrange(-ln - 4096, 4097)
    else:
        off = rng.randrange(0, size)
    off = max(0, min(size - 1, off))
    return off, ln


def _explain(want, where, probe):
    """Where wrong bytes (@probe, from the first wrong one on) came from, when
    they are found once, and only once, elsewhere in the expected file (deltas
    of low-precision models repeat short runs of values)."""
    if len(probe) < 64:
        return ""
    j = want.find(probe)
    if j < 0:
        return "; the bytes read are found nowhere in the expected file"
    if want.find(probe, j + 1) >= 0:
        return ""
    return f"; the bytes read are the expected file's at {j} ({where(j) if where else '?'})"


def _wrong(what, want, where, off, i, probe):
    return (f"{what}: first wrong byte at file offset {off + i} ({where(off + i) if where else '?'}): "
            f"got {probe[:16].hex()} expected {want[off + i:off + i + 16].hex()}"
            + _explain(want, where, probe))


# The mapping readers run in a child process: a page fault the daemon fails (or a
# daemon that died) raises SIGBUS, which must fail the test, not kill pytest.
# Standard library only, so that it starts fast; the parent chooses every read.
_MMAP_CHILD = r"""
import ctypes, json, os, sys, threading
job = json.load(open(sys.argv[1]))
with open(job["want"], "rb") as f:
    want = f.read()
size = len(want)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
out, done, lock = [], [0], threading.Lock()

def work(t):
    fd = os.open(job["path"], os.O_RDONLY)
    addr = libc.mmap(None, size, t["prot"], t["flags"], fd, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        with lock:
            out.append({"kind": t["kind"], "error": "mmap: " + os.strerror(ctypes.get_errno())})
        return
    if t["advice"] is not None:
        libc.madvise(addr, size, t["advice"])
    for off, ln in t["reads"]:
        buf = ctypes.create_string_buffer(ln)
        ctypes.memmove(buf, addr + off, ln)  # the page faults, without the GIL
        got = buf.raw
        exp = want[off:off + ln]
        if got != exp:
            i = next(k for k in range(ln) if got[k] != exp[k])
            with lock:
                out.append({"kind": t["kind"], "off": off, "len": ln, "i": i, "got": got[i:i + 512].hex()})
        with lock:
            done[0] += 1
    libc.munmap(addr, size)
    os.close(fd)

ths = [threading.Thread(target=work, args=(t,)) for t in job["threads"]]
for t in ths:
    t.start()
for t in ths:
    t.join()
print(json.dumps({"errors": out, "reads": done[0]}))
"""


def _mmap_threads(rng, size, points, nmap, per_thread):
    """nmap mapping readers: MAP_SHARED and MAP_PRIVATE (writable, copy on write),
    half of them with MADV_RANDOM (single-page faults, no read-around)."""
    out = []
    for k in range(nmap):
        shared = k % 2 == 0
        rand = k % 4 >= 2
        reads = []
        for _ in range(per_thread):
            off, ln = _pick(rng, size, points)
            reads.append((off, min(ln, size - off)))
        out.append({
            "kind": f"mmap thread {k} " + ("MAP_SHARED" if shared else "MAP_PRIVATE") + ("+MADV_RANDOM" if rand else ""),
            "prot": mmap.PROT_READ if shared else mmap.PROT_READ | mmap.PROT_WRITE,
            "flags": mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE,
            "advice": mmap.MADV_RANDOM if rand else None,
            "reads": reads,
        })
    return out


def stress_file(path, want, workdir, *, seed, rounds=3, npread=8, nmap=4, per_thread=50):
    """Concurrent preads (half of the descriptors with POSIX_FADV_RANDOM) and
    page faults of MAP_SHARED and MAP_PRIVATE mappings (half with MADV_RANDOM, in
    a child process), the page cache dropped between rounds and now and then
    within one. Every byte must equal @want; fails naming the first wrong byte
    (file, offset, tensor) and where the bytes read belong, with a count."""
    size = len(want)
    try:
        st = os.stat(path)
    except OSError as ex:
        raise AssertionError(f"{path}: {ex!r}: the mount does not answer (did the daemon die?)") from ex
    assert st.st_size == size, f"{path}: stat size {st.st_size}, expected {size}"
    where = H.locator(want)
    points = _interesting_points(want)
    _, _, ents, doff = H.parse_st(want)
    inner = sorted({doff + b for _, _, _, b, e in ents if b and (doff + b) % MIB})
    errors = []
    nreads = [0]
    lock = threading.Lock()
    want_path = os.path.join(workdir, f"want-{seed}")
    H.write_file(want_path, want)

    def preader(k, rnd):
        rng = random.Random(seed * 7919 + rnd * 101 + k)
        fd = os.open(path, os.O_RDONLY)
        try:
            if k % 2:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for i in range(per_thread):
                if i % 10 == 9:
                    H.drop_cache(fd)
                off, ln = _pick(rng, size, points)
                what = f"{path}: round {rnd} pread thread {k} pread({ln}, {off})"
                try:
                    got = os.pread(fd, ln, off)
                except OSError as ex:
                    with lock:
                        errors.append(f"{what} ({where(off)}): {ex!r}")
                    continue
                exp = want[off:off + ln]
                if got != exp:
                    if len(got) != len(exp):
                        msg = f"{what}: {len(got)} bytes read, {len(exp)} expected"
                    else:
                        i = H.first_diff(got, exp)
                        msg = _wrong(what, want, where, off, i, got[i:i + 512])
                    with lock:
                        errors.append(msg)
                with lock:
                    nreads[0] += 1
        finally:
            os.close(fd)

    def edge_probes(rnd):
        """Single-page reads on both sides of each place where two tensors meet
        inside a block, the second tensor's side first in even rounds (so that
        its block is the one cached first), then a read across."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            H.drop_cache(fd)
            for x in inner:
                after = (x + 4095) // 4096 * 4096 + 8
                before = x // 4096 * 4096 - 24
                reads = [(16, after), (16, before)] if rnd % 2 == 0 else [(16, before), (16, after)]
                for ln, off in reads + [(8192, x - 4096)]:
                    off = max(0, min(size - 1, off))
                    exp = want[off:off + ln]
                    got = os.pread(fd, ln, off)
                    if got != exp:
                        i = H.first_diff(got, exp)
                        errors.append(_wrong(f"{path}: round {rnd} edge probe pread({ln}, {off})",
                                             want, where, off, i, got[i:i + 512]))
        except OSError as ex:
            errors.append(f"{path}: round {rnd} edge probes: {ex!r}")
        finally:
            os.close(fd)

    for rnd in range(rounds):
        edge_probes(rnd)
        fd = os.open(path, os.O_RDONLY)
        H.drop_cache(fd)
        os.close(fd)
        job = os.path.join(workdir, f"job-{seed}-{rnd}.json")
        rng = random.Random(seed * 104729 + rnd)
        H.write_file(job, json.dumps({"path": path, "want": want_path,
                                      "threads": _mmap_threads(rng, size, points, nmap, per_thread)}))
        child = subprocess.Popen([sys.executable, "-c", _MMAP_CHILD, job], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        ths = [threading.Thread(target=preader, args=(k, rnd)) for k in range(npread)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        try:
            out, err = child.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise AssertionError(f"{path}: round {rnd}: the mapping readers hang")
        if child.returncode == -signal.SIGBUS:
            errors.append(f"{path}: round {rnd}: a mapping reader died of SIGBUS (a page fault failed)")
        elif child.returncode != 0:
            errors.append(f"{path}: round {rnd}: the mapping readers exited {child.returncode}: {err[-2000:]!r}")
        else:
            res = json.loads(out)
            nreads[0] += res["reads"]
            for e in res["errors"]:
                if "error" in e:
                    errors.append(f"{path}: {e['kind']}: {e['error']}")
                else:
                    errors.append(_wrong(f"{path}: round {rnd} {e['kind']} [{e['off']}:{e['off'] + e['len']}]",
                                         want, where, e["off"], e["i"], bytes.fromhex(e["got"])))
    if errors:
        try:
            os.stat(path)
            alive = ""
        except OSError as ex:
            alive = f"\n(the mount no longer answers: {ex!r}; did the daemon die?)"
        raise AssertionError(f"{len(errors)} wrong or failed reads, {nreads[0]} right, of "
                             f"{rounds * (npread + nmap) * per_thread}; the first:\n"
                             + "\n".join(errors[:3]) + alive)
    assert nreads[0] == rounds * (npread + nmap) * per_thread, "some readers did not finish"
    # and one plain sequential read after all that
    fd = os.open(path, os.O_RDONLY)
    try:
        H.drop_cache(fd)
        parts, off = [], 0
        while True:
            b = os.pread(fd, 131071, off)
            if not b:
                break
            parts.append(b)
            off += len(b)
    finally:
        os.close(fd)
    H.assert_same(b"".join(parts), want, f"{path}: sequential 131071-byte reads after the stress", where)


# ---- models --------------------------------------------------------------------------

def _build(root, case):
    """-> (mount args, {safetensors file name: expected bytes, or None: from
    the Expected}, the Expected)."""
    mode, tied, bdt, ddt, _, shards = case
    seed = 1000 + CASES.index(case)
    rng = np.random.default_rng(seed)
    bt = _llama(rng, bdt, V, HD, INTER, LAYERS, KV, tied)
    cfg = H.llama_config(V, HD, INTER, LAYERS, KV, tied, bdt)
    base = H.write_model(os.path.join(root, "base"), bt, cfg, nshards=shards, flavour="base")
    if mode == "compute":
        it = _instruct_of(rng, bt, bdt)
        ins = H.write_model(os.path.join(root, "instruct"), it, cfg, nshards=1 if shards > 1 else 2,
                            flavour="instruct")
        exp = H.expected_compute(ins, base, ddt)
        if tied:
            # the reference writes the tied head as a copy of the embedding's delta
            assert "lm_head.weight" not in bt
            assert exp.st_tensors["lm_head.weight"].raw == exp.st_tensors["model.embed_tokens.weight"].raw
        args = [f"{ins.path}-{base.path}"] + (["--dtype", "bf16"] if ddt == "BF16" else [])
        return args, {"model.safetensors": exp.files["model.safetensors"]}, exp
    deltas = {n: H.T.from_f32(ddt, t.shape, rng.normal(0, 0.003, t.numel)) for n, t in bt.items()}
    if tied:
        # as the residuals package writes it: a delta for the tied head too (ignored)
        deltas["lm_head.weight"] = deltas["model.embed_tokens.weight"]
    res = H.write_residuals(os.path.join(root, "res"), deltas, vocab=V)
    exp = H.expected_apply(base, [(res, 1.0)])
    return [f"{base.path}+{res.path}"], {fn: None for fn in exp.st}, exp


def _want_apply(path, exp, fn):
    """Expected bytes of a merged shard: its header as read (checked against the
    expected tensors, order, dtypes and offsets) and the reference tensor data."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        head += f.read(n)
    hdr = H.check_st_header(path, head, exp.st[fn], exp.st_meta[fn], exp.st_header[fn])
    return head[:8] + hdr + b"".join(t.raw for _, t in exp.st[fn])


def _check_layout(want, case):
    """The shapes chosen must put tensor edges inside 1 MiB blocks, or the test
    would not test what it is for."""
    _, hdr, ents, doff = H.parse_st(want)
    spans = [(n, doff + b, doff + e) for n, _, _, b, e in ents]
    assert any(b // MIB != (e - 1) // MIB for _, b, e in spans), "no tensor straddles a block edge"
    inner = [(a[0], c[0]) for a, c in zip(spans, spans[1:]) if a[2] == c[1] and a[2] % MIB]
    assert inner, "no two adjacent tensors meet inside a block"
    mode, tied = case[0], case[1]
    if mode == "compute" and tied:
        assert ("lm_head.weight", "model.embed_tokens.weight") in inner, \
            f"lm_head.weight and the embedding are not adjacent inside a block: {inner}"
    return spans


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_concurrent_small_reads(case, mounter, tmp_path):
    root = str(tmp_path / "m")
    args, files, exp = _build(root, case)
    cache = case[4]
    opts = ["--cache-size", cache] if cache is not None else []
    mp = mounter.mount(*args, *opts)
    assert sorted(f for f in os.listdir(mp) if f.endswith(".safetensors")) == sorted(files)
    total = 0
    for k, fn in enumerate(sorted(files)):
        p = os.path.join(mp, fn)
        want = files[fn] if files[fn] is not None else _want_apply(p, exp, fn)
        total += len(want)
        _check_layout(want, case)
        stress_file(p, want, str(tmp_path), seed=CASES.index(case) * 10 + k)
    assert total >= 3 * MIB, f"the model is only {total} bytes: too small to stress the blocks"
    # the reads went through the daemon's cache as intended (partial blocks)
    with open(os.path.join(mp, ".residfs-stats")) as f:
        st = json.load(f)
    if cache == "0":
        assert st["cache_used"] == 0, st
    else:
        budget = 2 * MIB if cache == "2M" else st["cache_budget"]
        assert st["cache_budget"] == budget and st["cache_used"] <= budget, st
        assert st["misses"] > 0 and st["hits"] > 0, f"the block cache was not used: {st}"
        if cache == "2M":
            assert st["evictions"] > 0, f"a 2 MiB cache did not evict: {st}"
    # the daemon is alive and the small files still read
    assert H.read_file(os.path.join(mp, "config.json"))
