"""Sources changed under a mount.

residfs records each source file's identity (device, inode, size, mtime,
ctime) when it mounts. When a source file is then changed in place (same size,
a valid file, tensors in another order or other bytes), replaced by rename,
truncated, deleted, or a FIFO or a directory is put at its path:

(a) opening a mounted file derived from it fails with EIO;
(b) reads of already-open files derived from it (pread, and page faults of a
    mapping, which then raise SIGBUS in the reader) fail with EIO at the latest
    about a second after the change;
(c) no read ever returns bytes that mix old and new: a read that succeeds
    returns exactly the old merged bytes;
(d) the daemon stays alive, and the mounted files not derived from the changed
    source (README.md, config.json, the other shards) keep reading right;
(e) the daemon logs a line naming the changed file.

The mounts run in the foreground (residfs mount -f) so that the test reads
what the daemon logs on stderr and holds its process: a daemon that hangs
(on a FIFO, say) is killed by the test instead of hanging it.
"""
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rfshelp as H
from conftest import _ALL_MOUNTS, _instruct_of, _llama, need_fuse

SETTLE = 1.5          # seconds after a change by which every read must fail
HANG = 30             # seconds after which an operation on the mount counts as hung
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


# ---- a mount in the foreground ---------------------------------------------------------

class FgMount:
    """residfs mount -f ARGS MP, its stderr in a file."""

    def __init__(self, tmp, args):
        self.mp = os.path.join(tmp, "mnt")
        os.makedirs(self.mp, exist_ok=True)
        self.log_path = os.path.join(tmp, "residfs.log")
        self.log_file = open(self.log_path, "wb")
        _ALL_MOUNTS.append(self.mp)
        self.proc = subprocess.Popen([H.residfs_bin(), "mount", "-f", *args, self.mp],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file)
        deadline = time.time() + 60
        while not H.is_mounted(self.mp):
            if self.proc.poll() is not None:
                self.log_file.close()
                raise AssertionError(f"residfs mount -f exited {self.proc.returncode}: {self.log()}")
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"nothing mounted at {self.mp} after 60 s: {self.log()}")
            time.sleep(0.02)
        guarded(self, f"listing {self.mp}", lambda: os.listdir(self.mp))  # answers

    def path(self, fn):
        return os.path.join(self.mp, fn)

    def log(self, start=0):
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def log_size(self):
        return os.path.getsize(self.log_path)

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self):
        ok = H.unmount(self.mp)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            ok = False
        self.log_file.close()
        return ok


@pytest.fixture
def fgmount(tmp_path, binary):
    need_fuse()
    made = []

    def mount(*args):
        d = os.path.join(str(tmp_path), f"fg{len(made)}")
        os.makedirs(d)
        fm = FgMount(d, args)
        made.append(fm)
        return fm

    yield mount
    bad = [fm.mp for fm in made if not fm.stop()]
    assert not bad, f"could not unmount (or the daemon did not end) at {bad}"


def guarded(fm, what, fn, timeout=HANG):
    """Runs fn() and returns its result; if it takes longer than @timeout the
    daemon is killed (which fails what waits on it) and the test fails."""
    box = {}

    def run():
        try:
            box["r"] = fn()
        except BaseException as ex:  # noqa: BLE001 - re-raised below
            box["e"] = ex

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        fm.kill()
        t.join(30)
        raise AssertionError(f"{what}: no answer from the mount in {timeout} s (the daemon hangs; killed it)")
    if "e" in box:
        raise box["e"]
    return box.get("r")


# ---- models ------------------------------------------------------------------------------

class Pair:
    pass


@pytest.fixture(scope="module")
def apair(tmp_path_factory):
    """A bf16 base in two shards (with notes.txt and LICENSE) and f32 residuals
    (with the instruct tokenizer); the merged bytes of each shard, computed here."""
    root = str(tmp_path_factory.mktemp("faults"))
    rng = np.random.default_rng(2024)
    V, Hd, I, L, KV = 2000, 128, 256, 2, 64
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    p = Pair()
    p.base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                           nshards=2, flavour="base",
                           others={"LICENSE": "Apache-2.0 (test)\n", "notes.txt": b"\x00\x01notes\xff" * 300})
    p.res = H.write_residuals(os.path.join(root, "res"),
                              {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.003, t.numel))
                               for n, t in bt.items()}, vocab=V)
    exp = H.expected_apply(p.base, [(p.res, 1.0)])
    p.ref = {}
    for fn, items in exp.st.items():
        hdr = exp.st_header[fn]
        assert hdr is not None, "same dtypes: the base's header is expected"
        p.ref[fn] = struct.pack("<Q", len(hdr)) + hdr + b"".join(t.raw for _, t in items)
    for fn, data in exp.files.items():
        p.ref[fn] = data
    for fn, (_, exact) in exp.json.items():
        if exact is not None:
            p.ref[fn] = exact
    assert set(p.ref) >= {SHARD1, SHARD2, "tokenizer.json", "notes.txt", "config.json"}
    return p


def copy_pair(p, tmp_path):
    b = shutil.copytree(p.base.path, os.path.join(str(tmp_path), "base"))
    d = shutil.copytree(p.res.path, os.path.join(str(tmp_path), "res"))
    return b, d


# ---- changes -------------------------------------------------------------------------

def _flip_data(raw):
    """The same safetensors file with other tensor bytes (still valid: floats)."""
    n = struct.unpack("<Q", raw[:8])[0]
    data = np.frombuffer(raw[8 + n:], dtype=np.uint8) ^ np.uint8(0x01)
    return raw[:8 + n] + data.tobytes()


def _reordered(raw):
    """The same tensors stored in another order, in a file of the same size
    (the header padded with spaces to its old length)."""
    n, hdr, ents, doff = H.parse_st(raw)
    meta = hdr.get("__metadata__")
    items = [(nm, H.T(dt, shape, raw[doff + b:doff + e])) for nm, dt, shape, b, e in ents]
    cands = [items[::-1]] + [items[k:] + items[:k] for k in range(1, len(items))]
    for order in cands:
        js = H.st_header(order, meta, pad=False)
        if len(js) <= n:
            out = struct.pack("<Q", n) + js + b" " * (n - len(js)) + b"".join(t.raw for _, t in order)
            assert len(out) == len(raw) and out != raw
            return out
    raise AssertionError("no other order of the tensors fits the old header length")


def _other_text(raw):
    """Other bytes of the same length (a passthrough file)."""
    out = bytes(b ^ 0x20 if 0x41 <= (b & 0xDF) <= 0x5A else b for b in raw)
    if out == raw:
        out = bytes([raw[0] ^ 1]) + raw[1:]
    return out


def change(path, how):
    """Changes source file @path in the way @how names."""
    raw = H.read_file(path)
    if how == "inplace_reordered":
        new = _reordered(raw)
        with open(path, "r+b") as f:
            f.write(new)
    elif how == "inplace_bytes":
        new = _flip_data(raw) if path.endswith(".safetensors") else _other_text(raw)
        with open(path, "r+b") as f:
            f.write(new)
    elif how == "renamed":
        new = _flip_data(raw) if path.endswith(".safetensors") else _other_text(raw)
        H.write_file(path + ".new", new)
        os.rename(path + ".new", path)
    elif how == "truncated":
        os.truncate(path, len(raw) // 2)
    elif how == "deleted":
        os.unlink(path)
    elif how == "fifo":
        os.unlink(path)
        os.mkfifo(path)
    elif how == "directory":
        os.unlink(path)
        os.mkdir(path)
    else:
        raise ValueError(how)


# ---- mapped reader in a child process ------------------------------------------------

_MAP_CHILD = r"""
import mmap, os, sys, zlib
path, private, offs = sys.argv[1], sys.argv[2] == "1", [int(x) for x in sys.argv[3].split(",")]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
if private:
    m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
else:
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
print("ready", flush=True)
sys.stdin.readline()
out = []
for off in offs:
    out.append("%d:%s" % (off, m[off:off + 64].hex()))  # the page fault
print(" ".join(out), flush=True)
"""


class MapReader:
    """A child process that maps @path before the change and touches the pages
    at @offs when told to: a failed page fault kills it with SIGBUS."""

    def __init__(self, path, offs, private):
        self.offs = offs
        self.proc = subprocess.Popen([sys.executable, "-c", _MAP_CHILD, path, "1" if private else "0",
                                      ",".join(str(o) for o in offs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", f"the mapping reader did not start: {line!r} {self.proc.stderr.read()!r}"

    def touch(self, fm, what, old):
        """Tells the child to fault the pages in; must die of SIGBUS."""
        try:
            out, err = self.proc.communicate(b"go\n", timeout=HANG)
        except subprocess.TimeoutExpired:
            fm.kill()
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"{what}: the page faults got no answer in {HANG} s (killed the daemon)")
        if self.proc.returncode == -signal.SIGBUS:
            return
        mixed = []
        for item in out.decode().split():
            off, hx = item.split(":")
            off = int(off)
            if bytes.fromhex(hx) != old[off:off + 64]:
                mixed.append(off)
        raise AssertionError(
            f"{what}: page faults of a mapping made before the change did not raise SIGBUS "
            f"(exit {self.proc.returncode}); bytes read at {self.offs}"
            + (f", not the old ones at {mixed}" if mixed else ", all the old ones") + f"; stderr {err[-500:]!r}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# ---- the checks ----------------------------------------------------------------------

def data_offsets(old, n=6):
    """@n offsets spread over the tensor data of a safetensors file (or over a file)."""
    try:
        _, _, _, doff = H.parse_st(old)
    except Exception:  # noqa: BLE001 - not a safetensors file
        doff = 0
    span = len(old) - doff
    return [doff + (span * k) // n + 13 for k in range(n)]


def read_all(fm, fn):
    def go():
        fd = os.open(fm.path(fn), os.O_RDONLY)
        try:
            H.drop_cache(fd)
            parts, off = [], 0
            while True:
                b = os.pread(fd, 1 << 20, off)
                if not b:
                    return b"".join(parts)
                parts.append(b)
                off += len(b)
        finally:
            os.close(fd)
    return guarded(fm, f"reading {fn}", go)


def expect_eio(fm, what, fn):
    try:
        guarded(fm, what, fn)
    except OSError as ex:
        assert ex.errno == errno.EIO, f"{what}: {ex!r}, expected EIO"
        return
    raise AssertionError(f"{what}: succeeded, expected EIO")


def scenario(fm, src, how, affected, unaffected, old, *, private=False, preread=True, map_file=None):
    """The whole sequence around one change of source file @src; fails listing
    every property, (a) to (e), that did not hold.

    affected: mounted files derived from @src; unaffected: the others checked;
    old: {mounted name: bytes it showed before the change}."""
    base = os.path.basename(src)
    # before: everything reads right
    for fn in affected + unaffected:
        H.assert_same(read_all(fm, fn), old[fn], f"{fn} before the change", H.locator(old[fn]))
    fds = {fn: os.open(fm.path(fn), os.O_RDONLY) for fn in affected}
    map_file = map_file or affected[0]
    mapper = MapReader(fm.path(map_file), data_offsets(old[map_file], 4)[1:], private)
    fails = []

    def soft(label, fn):
        try:
            fn()
        except (AssertionError, OSError) as ex:
            fails.append(f"({label}) {ex}")

    try:
        if preread:
            # small reads over the first half: blocks in the daemon's cache too
            for fn, fd in fds.items():
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                for off in range(0, len(old[fn]) // 2, 200_000):
                    assert os.pread(fd, 4096, off) == old[fn][off:off + 4096]
                H.drop_cache(fd)
        log0 = fm.log_size()
        t0 = time.monotonic()
        change(src, how)

        # (c) reads at once (before any open could tell the daemon): EIO, or
        # exactly the old bytes
        def at_once():
            for fn, fd in fds.items():
                H.drop_cache(fd)
                for off in data_offsets(old[fn]):
                    for ln in (1, 4096, 100_000):
                        if time.monotonic() - t0 > 1.0:
                            return  # later reads belong to (b) (a loaded machine)
                        what = f"pread({ln}, {off}) of {fn} at once after {base} was {how}"
                        try:
                            got = guarded(fm, what, lambda fd=fd, off=off, ln=ln: os.pread(fd, ln, off))
                        except OSError as ex:
                            assert ex.errno == errno.EIO, f"{what}: {ex!r}, expected EIO or the old bytes"
                            continue
                        H.assert_same(got, old[fn][off:off + ln], f"{what}: neither EIO nor the old bytes",
                                      H.locator(old[fn]), off)
        soft("c: no mixed bytes", at_once)

        # (a) opening a derived file fails
        def opens():
            for fn in affected:
                expect_eio(fm, f"open({fn}) after {base} was {how}",
                           lambda fn=fn: os.close(os.open(fm.path(fn), os.O_RDONLY)))
        soft("a: open fails", opens)

        # (b) a second or so later, already-open files fail: pread and page faults
        time.sleep(max(0.0, SETTLE - (time.monotonic() - t0)))

        def preads():
            for fn, fd in fds.items():
                H.drop_cache(fd)
                for off in data_offsets(old[fn], 4):
                    expect_eio(fm, f"pread(4096, {off}) of an open {fn} {SETTLE} s after {base} was {how}",
                               lambda fd=fd, off=off: os.pread(fd, 4096, off))
        soft("b: reads of open files fail", preads)

        def faults():
            H.drop_cache(fds[map_file])
            mapper.touch(fm, f"{'MAP_PRIVATE' if private else 'MAP_SHARED'} mapping of {map_file} "
                         f"{SETTLE} s after {base} was {how}", old[map_file])
        soft("b: page faults raise SIGBUS", faults)

        # (d) the daemon is alive and the other files read right
        def others():
            assert fm.alive(), f"the daemon died: {fm.log()}"
            for fn in unaffected:
                H.assert_same(read_all(fm, fn), old[fn], f"{fn} (not derived from the changed {base}) "
                              "after the change", H.locator(old[fn]))
            for fn in affected:  # and opening still fails, later too
                expect_eio(fm, f"open({fn}) later", lambda fn=fn: os.close(os.open(fm.path(fn), os.O_RDONLY)))
            assert fm.alive(), f"the daemon died: {fm.log()}"
        soft("d: the daemon and other files live on", others)

        # (e) the daemon said which file changed
        def logged():
            names = {src, os.path.realpath(src)}
            deadline = time.time() + 2
            while not any(n in fm.log(log0) for n in names) and time.time() < deadline:
                time.sleep(0.05)
            log = fm.log(log0)
            assert any(n in line for line in log.splitlines() for n in names), \
                f"no line of the daemon's log names {src}; it logged after the change:\n{log[-3000:]}"
        soft("e: the log names the file", logged)
    finally:
        mapper.close()
        for fd in fds.values():
            os.close(fd)
    if fails:
        raise AssertionError(f"after {src} was {how}, {len(fails)} checks failed:\n" + "\n".join(fails))


def mounted_old(fm, p, names):
    """What the mount shows before any change: the reference bytes (shards,
    exact files) or, for generated files, what it reads now."""
    out = {}
    for fn in names:
        out[fn] = p.ref[fn] if fn in p.ref else read_all(fm, fn)
    return out


UNAFFECTED = ["README.md", "config.json", "model.safetensors.index.json"]


# ---- apply mode ----------------------------------------------------------------------

HOWS = ["inplace_reordered", "inplace_bytes", "renamed", "truncated", "deleted", "fifo", "directory"]


@pytest.mark.parametrize("how", HOWS)
def test_base_shard_changed(how, fgmount, apair, tmp_path):
    """The first base shard changed: the first merged shard fails, the second
    shard and the small files read on."""
    b, d = copy_pair(apair, tmp_path)
    fm = fgmount(f"{b}+{d}")
    unaffected = [SHARD2] + UNAFFECTED + ["tokenizer.json", "notes.txt"]
    old = mounted_old(fm, apair, [SHARD1] + unaffected)
    scenario(fm, os.path.join(b, SHARD1), how, [SHARD1], unaffected, old,
             private=HOWS.index(how) % 2 == 1)


@pytest.mark.parametrize("how", ["inplace_bytes", "renamed"])
def test_delta_changed(how, fgmount, apair, tmp_path):
    """The delta's weights changed: both merged shards derive from it and fail;
    the tokenizer (from the delta directory, another file) still reads."""
    b, d = copy_pair(apair, tmp_path)
    fm = fgmount(f"{b}+{d}")
    unaffected = UNAFFECTED + ["tokenizer.json", "notes.txt", "LICENSE"]
    old = mounted_old(fm, apair, [SHARD1, SHARD2] + unaffected)
    scenario(fm, os.path.join(d, "model.safetensors"), how, [SHARD1, SHARD2], unaffected, old,
             private=how == "renamed", map_file=SHARD2)


@pytest.mark.parametrize("which,how", [("delta:tokenizer.json", "inplace_bytes"),
                                       ("base:notes.txt", "renamed"),
                                       ("base:notes.txt", "truncated")])
def test_passthrough_changed(which, how, fgmount, apair, tmp_path):
    """A file passed through (the delta's tokenizer.json, a base file) changed."""
    b, d = copy_pair(apair, tmp_path)
    fm = fgmount(f"{b}+{d}")
    side, fn = which.split(":")
    unaffected = [SHARD1, SHARD2] + UNAFFECTED + [x for x in ("tokenizer.json", "notes.txt") if x != fn]
    old = mounted_old(fm, apair, [fn] + unaffected)
    scenario(fm, os.path.join(b if side == "base" else d, fn), how, [fn], unaffected, old, preread=False)


def test_truncated_reads_past_cut_fail(fgmount, apair, tmp_path):
    """A base shard truncated under the mount: reads of merged bytes whose base
    bytes lie past the cut fail with EIO at once (never zeros, never stale bytes),
    before and after the change is noticed; reads before the cut give EIO or the
    old bytes. Nothing of the shard was read before the cut."""
    b, d = copy_pair(apair, tmp_path)
    fm = fgmount(f"{b}+{d}")
    src = os.path.join(b, SHARD1)
    old = apair.ref[SHARD1]
    src_raw = H.read_file(src)
    _, _, sents, sdoff = H.parse_st(src_raw)
    _, _, ments, mdoff = H.parse_st(old)
    # the cut falls inside a tensor in the middle of the file
    cut = sdoff + sents[len(sents) // 2][3] + 1000
    # merged tensors wholly past the cut in the source, and wholly before it
    spans = {nm: (mdoff + mb, mdoff + me) for nm, _, _, mb, me in ments}
    past = [spans[nm] for nm, _, _, sb, _ in sents if sdoff + sb >= cut]
    before = [spans[nm] for nm, _, _, _, se in sents if sdoff + se <= cut]
    assert past and before
    fd = guarded(fm, "open", lambda: os.open(fm.path(SHARD1), os.O_RDONLY))
    try:
        os.truncate(src, cut)
        for rnd in range(2):
            H.drop_cache(fd)
            for a, e in past:
                for off, ln in ((a, 1), ((a + e) // 2, 4096), (e - 300_000 if e - a > 300_000 else a, 300_000)):
                    expect_eio(fm, f"pread({ln}, {off}) of {SHARD1}, past the cut, "
                               f"{'at once' if rnd == 0 else 'later'}",
                               lambda off=off, ln=ln: os.pread(fd, ln, off))
            for a, e in before:
                what = f"pread(4096, {a}) of {SHARD1}, before the cut"
                try:
                    got = guarded(fm, what, lambda a=a: os.pread(fd, 4096, a))
                except OSError as ex:
                    assert ex.errno == errno.EIO, f"{what}: {ex!r}"
                    continue
                H.assert_same(got, old[a:a + 4096], what, H.locator(old), a)
            if rnd == 0:
                time.sleep(SETTLE)
    finally:
        os.close(fd)
    assert fm.alive(), f"the daemon died: {fm.log()}"
    H.assert_same(read_all(fm, SHARD2), apair.ref[SHARD2], f"{SHARD2} after {SHARD1}'s base was truncated")
    assert src in fm.log() or os.path.realpath(src) in fm.log(), \
        f"the daemon's log does not name {src}:\n{fm.log()[-3000:]}"


# ---- compute mode ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpair(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cfaults"))
    rng = np.random.default_rng(77)
    V, Hd, I, L, KV = 1500, 128, 256, 2, 64
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=True)
    cfg = H.llama_config(V, Hd, I, L, KV, True, "BF16")
    p = Pair()
    p.base = H.write_model(os.path.join(root, "base"), bt, cfg, flavour="base")
    p.ins = H.write_model(os.path.join(root, "instruct"), _instruct_of(rng, bt, "BF16"), cfg,
                          nshards=2, flavour="instruct")
    exp = H.expected_compute(p.ins, p.base)
    p.ref = dict(exp.files)
    return p


def test_compute_instruct_changed(fgmount, cpair, tmp_path):
    """Compute mode: an instruct shard rewritten in place with its tensors in
    another order: the residuals file fails, the rest reads on."""
    b = shutil.copytree(cpair.base.path, os.path.join(str(tmp_path), "base"))
    i = shutil.copytree(cpair.ins.path, os.path.join(str(tmp_path), "instruct"))
    fm = fgmount(f"{i}-{b}")
    unaffected = ["README.md", "config.json", "tokenizer.json"]
    old = mounted_old(fm, cpair, ["model.safetensors"] + unaffected)
    assert json.loads(old["config.json"])["param_count"] >= 1
    scenario(fm, os.path.join(i, SHARD1), "inplace_reordered", ["model.safetensors"], unaffected, old)
