"""Filesystem behaviour of a mount: read-only, stat, inodes, mtimes, concurrency."""
import errno
import os
import shutil
import subprocess
import time

import pytest

import rfshelp as H


@pytest.fixture
def merged(mounter, llama):
    s = llama
    mp = mounter.mount(f"{s.base.path}+{s.resA.path}")
    return mp, H.expected_apply(s.base, [(s.resA, 1.0)])


def _erofs(fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == errno.EROFS, f"{fn.__name__}{args}: {ei.value!r}, expected EROFS"


def test_read_only(merged):
    mp, exp = merged
    f = os.path.join(mp, "config.json")
    before = H.read_file(f)
    _erofs(os.open, f, os.O_WRONLY)
    _erofs(os.open, f, os.O_RDWR)
    _erofs(os.open, f, os.O_RDONLY | os.O_TRUNC)
    _erofs(os.open, os.path.join(mp, "new.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    _erofs(os.unlink, f)
    _erofs(os.mkdir, os.path.join(mp, "d"))
    _erofs(os.rename, f, os.path.join(mp, "c2.json"))
    _erofs(os.truncate, f, 0)
    _erofs(os.chmod, f, 0o600)
    _erofs(os.symlink, "config.json", os.path.join(mp, "link"))
    _erofs(os.utime, f, (0, 0))
    assert H.read_file(f) == before
    assert sorted(os.listdir(mp)) == sorted(exp.names())


def test_stat_sizes_inodes_mtimes(mounter, llama):
    s = llama
    mp = mounter.mount(f"{s.base.path}+0.5*{s.resT.path}", "--dtype", "fp32")
    names = sorted(os.listdir(mp))
    first = {n: os.stat(os.path.join(mp, n)) for n in names}   # before any read
    for n in names:
        data = H.read_file(os.path.join(mp, n))
        assert first[n].st_size == len(data), f"{n}: first stat says {first[n].st_size}, read {len(data)}"
    second = {n: os.stat(os.path.join(mp, n)) for n in names}
    for n in names:
        a, b = first[n], second[n]
        assert (a.st_ino, a.st_mtime_ns, a.st_size) == (b.st_ino, b.st_mtime_ns, b.st_size), n
        assert a.st_mode & 0o170000 == 0o100000, f"{n}: not a regular file"
    inos = [first[n].st_ino for n in names]
    assert len(set(inos)) == len(inos), f"inode numbers not unique: {inos}"
    root = os.stat(mp)
    assert root.st_ino not in inos
    # the safetensors module maps the whole file and checks its length: every stat must agree
    with os.scandir(mp) as it:
        for e in it:
            assert e.stat().st_size == first[e.name].st_size


def test_mtime_is_newest_input(mounter, tmp_path, llama):
    """mtimes are stable and are the newest input mtime (docs/architecture.md): here the
    inputs are given known mtimes, the newest being the delta's weights."""
    s = llama
    b = shutil.copytree(s.base.path, os.path.join(str(tmp_path), "b"))
    d = shutil.copytree(s.resA.path, os.path.join(str(tmp_path), "d"))
    t0 = 1_600_000_000
    for k, (dd, fn) in enumerate((dd, fn) for dd in (b, d) for fn in sorted(os.listdir(dd))):
        os.utime(os.path.join(dd, fn), ns=((t0 + k) * 10**9, (t0 + k) * 10**9))
    newest = (t0 + 10**6) * 10**9 + 123456789
    os.utime(os.path.join(d, "model.safetensors"), ns=(newest, newest))
    mp = mounter.mount(f"{b}+{d}")
    for n in os.listdir(mp):
        assert os.stat(os.path.join(mp, n)).st_mtime_ns == newest, n


def test_mtime_counts_config(mounter, tmp_path, llama):
    """config.json is an input of the mount's config.json: when it is the newest
    input file, the mount's mtime is its mtime."""
    s = llama
    b = shutil.copytree(s.base.path, os.path.join(str(tmp_path), "b"))
    d = shutil.copytree(s.resA.path, os.path.join(str(tmp_path), "d"))
    t0 = 1_600_000_000
    for dd in (b, d):
        for fn in os.listdir(dd):
            os.utime(os.path.join(dd, fn), ns=(t0 * 10**9, t0 * 10**9))
    newest = (t0 + 5000) * 10**9
    os.utime(os.path.join(b, "config.json"), ns=(newest, newest))
    mp = mounter.mount(f"{b}+{d}")
    got = os.stat(os.path.join(mp, "config.json")).st_mtime_ns
    assert got == newest, f"config.json of the mount has mtime {got}, the newest input (base config.json) {newest}"


def test_concurrent_preads(mounter, llama):
    s = llama
    mp = mounter.mount(f"{s.base.path}+0.5*{s.resT.path}+{s.resB.path}")
    exp = H.expected_apply(s.base, [(s.resT, 0.5), (s.resB, 1.0)])
    for fn, items in exp.st.items():
        p = os.path.join(mp, fn)
        data = H.read_file(p)
        hdr = H.check_st_header(p, data, items, exp.st_meta[fn], exp.st_header[fn])
        want = data[:8] + hdr + b"".join(t.raw for _, t in items)
        H.concurrent_preads(p, want, nthreads=8, per_thread=40, seed=len(fn))


def test_unmount_ends_daemon(mounter, llama):
    s = llama
    mp = mounter.mount(f"{s.base.path}+{s.resA.path}")
    H.read_file(os.path.join(mp, "config.json"))

    def daemons():
        return H.daemon_pids(mp)

    assert daemons(), "no residfs daemon serves the mount"
    r = subprocess.run(["fusermount3", "-u", mp], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not H.is_mounted(mp)
    deadline = time.time() + 10
    while daemons() and time.time() < deadline:
        time.sleep(0.05)
    assert not daemons(), "the daemon is still running after fusermount3 -u"


def test_source_truncated_after_mount(mounter, tmp_path, llama):
    """A delta truncated after the mount was built: reads of the tensors it
    feeds fail with EIO (never zeros, never a dead daemon), the other files
    still read, and the daemon says which file and tensor."""
    s = llama
    b = shutil.copytree(s.base.path, os.path.join(str(tmp_path), "b"))
    d = shutil.copytree(s.resA.path, os.path.join(str(tmp_path), "d"))
    mp = mounter.mount(f"{b}+{d}", "--cache-size", "0")
    shard = sorted(f for f in os.listdir(mp) if f.endswith(".safetensors"))[0]
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(4096)
    with pytest.raises(OSError) as ei:
        H.read_file(os.path.join(mp, shard))
    assert ei.value.errno == errno.EIO, f"reading {shard}: {ei.value!r}, expected EIO"
    # the daemon is alive and the untouched files still read
    assert H.read_file(os.path.join(mp, "config.json")) == H.read_file(os.path.join(b, "config.json"))
    assert shard in os.listdir(mp)


def test_stats_file(mounter, llama):
    """.residfs-stats is not listed, reads as JSON, and counts what was read."""
    import json
    s = llama
    mp = mounter.mount(f"{s.base.path}+{s.resA.path}")
    assert ".residfs-stats" not in os.listdir(mp)
    total = 0
    for fn in os.listdir(mp):
        total += len(H.read_file(os.path.join(mp, fn)))
    with open(os.path.join(mp, ".residfs-stats")) as f:
        st = json.load(f)
    for key in ("requests", "bytes", "hits", "misses", "prefetched", "computed_bytes",
                "cache_used", "cache_budget"):
        assert key in st, f"{key} missing from the stats: {st}"
    assert st["requests"] > 0 and st["bytes"] >= total // 2, st
    assert st["computed_bytes"] > 0, st
    assert st["cache_used"] <= st["cache_budget"], st
    with pytest.raises(OSError) as ei:
        open(os.path.join(mp, ".residfs-stats"), "w")
    assert ei.value.errno == errno.EROFS


def test_block_cache_under_small_reads(mounter, tmp_path):
    """Small, random, concurrent reads with readahead off go through the block
    cache: with a 4 MiB budget over ~10 MiB of merged shards blocks are
    evicted, prefetched, hit and waited for; every byte must still be right
    and the cache must stay within its budget."""
    import json
    import random
    import threading
    import numpy as np
    rng = np.random.default_rng(77)
    V, Hd, I, L, KV = 2048, 512, 1024, 2, 256
    shapes = H.llama_shapes(V, Hd, I, L, KV, False)
    bt = H.random_weights(rng, "BF16", shapes)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "BF16")
    base = H.write_model(os.path.join(str(tmp_path), "base"), bt, cfg, nshards=2)
    res = H.write_residuals(os.path.join(str(tmp_path), "res"),
                            {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel))
                             for n, t in bt.items()}, vocab=V)
    mp = mounter.mount(f"{base.path}+{res.path}", "--cache-size", "4M")
    exp = H.expected_apply(base, [(res, 1.0)])
    errors = []
    for fn, items in exp.st.items():
        p = os.path.join(mp, fn)
        # one sequential read, checked against the reference, is what the
        # random readers must see
        want = H.read_file(p)
        data = b"".join(t.raw for _, t in items)
        H.assert_same(want[len(want) - len(data):], data, f"{fn}: tensor data")

        def work(k, p=p, want=want):
            r = random.Random(k)
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                for _ in range(60):
                    if r.random() < 0.2:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    off = r.randrange(0, len(want))
                    ln = r.choice([1, 7, 4096, 65536, 300000])
                    got = os.pread(fd, ln, off)
                    if got != want[off:off + ln]:
                        errors.append(f"{p}: pread({ln}, {off}) differs")
            except BaseException as ex:  # noqa: BLE001 - reported below
                errors.append(repr(ex))
            finally:
                os.close(fd)

        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        ths = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    assert not errors, errors[:5]
    with open(os.path.join(mp, ".residfs-stats")) as f:
        st = json.load(f)
    assert st["cache_used"] <= st["cache_budget"] == 4 << 20, st
    assert st["hits"] > 0 and st["misses"] > 0 and st["evictions"] > 0, st
    assert st["prefetched"] > 0, st
