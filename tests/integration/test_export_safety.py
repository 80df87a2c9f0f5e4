"""export is all or nothing and never writes into its own sources.

- a killed export leaves a staging directory (.residfs-export-PID) that the next
  export into the same directory removes, saying so;
- OUTDIR may not be a directory of the SPEC nor hold a source file, --force or not;
- a failure while the files are moved into place (RESIDFS_TEST_FAIL_RENAME, a test
  hook of core/export.c) leaves the previous files, complete; a kill there
  ("N,kill") is undone by the next export;
- temporary names are never longer than the final ones (a 250-byte file name);
- exported files get the sources' permission bits whatever the umask.
"""
import hashlib
import os
import signal
import stat
import subprocess
import time

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama, export

STAGING = ".residfs-export-"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A small bf16 model (two shards, an extra file) and a float32 residuals."""
    root = str(tmp_path_factory.mktemp("safety"))
    rng = np.random.default_rng(77)
    V, Hd, I, L, KV = 96, 32, 64, 1, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                         nshards=2, others={"LICENSE": "test licence\n"})
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res"), d, vocab=V)
    os.chmod(os.path.join(res.path, "model.safetensors"), 0o644)  # the package's writer makes it 0600
    return base, res


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A model whose export takes a moment (about 50 MB written)."""
    root = str(tmp_path_factory.mktemp("big"))
    rng = np.random.default_rng(78)
    V, Hd, I, L, KV = 12288, 512, 1024, 1, 256
    bt = {n: H.T("BF16", s, rng.integers(0x3c00, 0x3c80, int(np.prod(s)), dtype=np.uint16).tobytes())
          for n, s in H.llama_shapes(V, Hd, I, L, KV, False)}
    base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                         nshards=2)
    d = {n: H.T("F32", t.shape, rng.integers(0x3a000000, 0x3a100000, t.numel, dtype=np.uint32).tobytes())
         for n, t in bt.items()}
    res = H.write_residuals(os.path.join(root, "res"), d, vocab=V)
    return base, res


def digest_tree(d):
    """name -> sha256 of every file under d (relative names), and each file's mode."""
    out = {}
    for dirpath, _, files in os.walk(d):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = (hashlib.sha256(f.read()).hexdigest(),
                                              stat.S_IMODE(os.lstat(p).st_mode))
    return out


def leftovers(d):
    return [f for f in os.listdir(d) if f.startswith(".")]


def dead_pid():
    """The pid of a process that has ended."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ---- a killed export ------------------------------------------------------------------

def _writing(out):
    """True once a hidden entry of OUTDIR holds bytes: a temporary file, or a
    directory with a file somewhere below it."""
    for fn in leftovers(out):
        p = os.path.join(out, fn)
        try:
            if os.path.isfile(p) and os.path.getsize(p) > 0:
                return True
            if os.path.isdir(p) and any(files for _, _, files in os.walk(p)):
                return True
        except OSError:
            pass
    return False


def kill_mid_export(spec, out, reset, extra=()):
    """Starts an export and SIGKILLs it once it has written something under a
    temporary name. Returns the hidden entries of OUTDIR then. When an export
    ends first, reset() puts OUTDIR back as it was and it starts over."""
    for _ in range(5):
        p = subprocess.Popen([H.residfs_bin(), "export", spec, out, "--quiet", "--threads", "1", *extra],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while p.poll() is None and not _writing(out):
            time.sleep(0.0005)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            p.stderr.close()
            left = leftovers(out)
            assert left, os.listdir(out)
            return left
        err = p.stderr.read().decode()
        p.stderr.close()
        assert p.returncode == 0, err
        reset()
    pytest.fail("every export ended before it could be killed")


def test_killed_export_leftovers_are_removed(big, tmp_path):
    base, res = big
    spec = f"{base.path}+{res.path}"
    ref = export([spec], os.path.join(str(tmp_path), "ref"))
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)

    def reset():
        for fn in os.listdir(out):
            os.unlink(os.path.join(out, fn))

    left = kill_mid_export(spec, out, reset)
    # the next export (no --force needed: only a dead export's leftovers are there)
    r = H.run(["export", spec, out, "--quiet"])
    assert r.returncode == 0, r
    assert leftovers(out) == [], os.listdir(out)
    assert "residfs: note:" in r.stderr and "removed" in r.stderr, r
    for fn in left:
        assert fn in r.stderr, r
    assert digest_tree(out) == digest_tree(ref)


def test_killed_force_export_leftovers_are_removed(big, tmp_path):
    """Killed while re-exporting over a complete export: the previous files stay
    complete; a --force re-export then leaves no temporary file."""
    base, res = big
    spec = f"{base.path}+{res.path}"
    spec2 = f"{base.path}+0.5*{res.path}"
    out = export([spec], os.path.join(str(tmp_path), "out"))
    before = digest_tree(out)
    left = kill_mid_export(spec2, out, lambda: export([spec], out, force=True), extra=("--force",))
    assert {k: v for k, v in digest_tree(out).items() if not k.startswith(".")} == before
    r = H.run(["export", spec2, out, "--quiet", "--force"])
    assert r.returncode == 0, r
    assert leftovers(out) == [], os.listdir(out)
    for fn in left:
        assert fn in r.stderr, r
    assert digest_tree(out) == digest_tree(export([spec2], os.path.join(str(tmp_path), "ref")))


def test_old_temporary_files_of_dead_exports_are_removed(pair, tmp_path):
    """Temporary files of earlier residfs versions (.NAME.residfs-tmp-PID)."""
    base, res = pair
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)
    stale = f".model-00001-of-00002.safetensors.residfs-tmp-{dead_pid()}"
    H.write_file(os.path.join(out, stale), b"\0" * 4096)
    r = H.run(["export", f"{base.path}+{res.path}", out, "--quiet"])
    assert r.returncode == 0, r
    assert stale in r.stderr, r
    assert leftovers(out) == [], os.listdir(out)


def test_running_export_is_not_disturbed(pair, tmp_path):
    """A staging directory of a live process: refused, left alone."""
    base, res = pair
    out = os.path.join(str(tmp_path), "out")
    live = os.path.join(out, f"{STAGING}{os.getpid()}")
    os.makedirs(os.path.join(live, "new"))
    H.write_file(os.path.join(live, "new", "config.json"), "{}")
    r = H.run(["export", f"{base.path}+{res.path}", out, "--quiet", "--force"])
    assert r.returncode != 0, r
    assert "residfs: error:" in r.stderr and str(os.getpid()) in r.stderr and "running" in r.stderr, r
    assert os.listdir(out) == [os.path.basename(live)]
    assert os.listdir(os.path.join(live, "new")) == ["config.json"]


# ---- never into the sources -----------------------------------------------------------

@pytest.mark.parametrize("which", ["base", "delta", "link-to-base"])
def test_force_into_a_source_directory_is_refused(pair, tmp_path, which):
    base, res = pair
    spec = f"{base.path}+{res.path}"
    before = {p: digest_tree(p) for p in (base.path, res.path)}
    lists = {p: sorted(os.listdir(p)) for p in (base.path, res.path)}
    target = {"base": base.path, "delta": res.path}.get(which)
    if target is None:
        target = os.path.join(str(tmp_path), "link")
        os.symlink(base.path, target)
    for force in ([], ["--force"]):
        r = H.run(["export", spec, target, "--quiet", *force])
        assert r.returncode != 0, r
        assert "residfs: error:" in r.stderr and target in r.stderr, r
        assert "directory of the SPEC" in r.stderr, r
    for p in (base.path, res.path):
        assert sorted(os.listdir(p)) == lists[p], p
        assert digest_tree(p) == before[p], p


def test_force_into_a_directory_holding_a_source_file_is_refused(pair, tmp_path):
    base, res = pair
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)
    shard = os.path.join(base.path, "model-00002-of-00002.safetensors")
    os.link(shard, os.path.join(out, "model-00002-of-00002.safetensors"))
    before = digest_tree(base.path)
    r = H.run(["export", f"{base.path}+{res.path}", out, "--quiet", "--force"])
    assert r.returncode != 0, r
    assert "residfs: error:" in r.stderr and "model-00002-of-00002.safetensors" in r.stderr, r
    assert "source" in r.stderr, r
    assert digest_tree(base.path) == before
    assert os.listdir(out) == ["model-00002-of-00002.safetensors"]


# ---- all or nothing -------------------------------------------------------------------

def test_failed_move_leaves_the_previous_export(pair, tmp_path):
    """A move into place that fails (the N-th, for the first, a middle and the last
    file) leaves exactly the previous files; without the hook the same export works."""
    base, res = pair
    spec_old = f"{base.path}+{res.path}"
    spec_new = f"{base.path}+0.25*{res.path}"
    out = export([spec_old], os.path.join(str(tmp_path), "out"))
    H.write_file(os.path.join(out, "keep.txt"), "mine\n")
    before = digest_tree(out)
    nfiles = len(os.listdir(out)) - 1
    for n in sorted({1, nfiles // 2, nfiles}):
        r = H.run(["export", spec_new, out, "--quiet", "--force"], env={"RESIDFS_TEST_FAIL_RENAME": str(n)})
        assert r.returncode != 0, r
        assert "residfs: error:" in r.stderr and "RESIDFS_TEST_FAIL_RENAME" in r.stderr, r
        assert digest_tree(out) == before, f"a failure at move {n} changed the previous export"
        assert leftovers(out) == [], os.listdir(out)
    r = H.run(["export", spec_new, out, "--quiet", "--force"])
    assert r.returncode == 0, r
    ref = digest_tree(export([spec_new], os.path.join(str(tmp_path), "ref")))
    ref["keep.txt"] = before["keep.txt"]
    assert digest_tree(out) == ref


def test_failed_move_removes_new_names(pair, tmp_path):
    """Files that did not exist before are taken away again; unrelated and stale
    files of the same name are as they were."""
    base, res = pair
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)
    H.write_file(os.path.join(out, "keep.txt"), "mine\n")
    H.write_file(os.path.join(out, "config.json"), "stale\n")
    before = digest_tree(out)
    nfiles = len(os.listdir(export([f"{base.path}+{res.path}"], os.path.join(str(tmp_path), "ref"))))
    r = H.run(["export", f"{base.path}+{res.path}", out, "--quiet", "--force"],
              env={"RESIDFS_TEST_FAIL_RENAME": str(nfiles)})
    assert r.returncode != 0, r
    assert digest_tree(out) == before
    assert sorted(os.listdir(out)) == ["config.json", "keep.txt"]


def test_kill_while_moving_is_undone_by_the_next_export(pair, tmp_path):
    """Killed after some files were moved into place: the next export puts the
    previous files back first (shown here by making that export fail too)."""
    base, res = pair
    out = export([f"{base.path}+{res.path}"], os.path.join(str(tmp_path), "out"))
    before = digest_tree(out)
    spec_new = f"{base.path}-{res.path}"
    nfiles = len(os.listdir(out))
    r = H.run(["export", spec_new, out, "--quiet", "--force"],
              env={"RESIDFS_TEST_FAIL_RENAME": f"{nfiles},kill"})
    assert r.returncode == -signal.SIGKILL, r
    assert len(leftovers(out)) == 1 and leftovers(out)[0].startswith(STAGING), os.listdir(out)
    assert {k: v for k, v in digest_tree(out).items() if not k.startswith(".")} != before
    r = H.run(["export", spec_new, out, "--quiet", "--force"], env={"RESIDFS_TEST_FAIL_RENAME": "1"})
    assert r.returncode != 0 and "put back" in r.stderr, r
    assert digest_tree(out) == before
    assert leftovers(out) == [], os.listdir(out)


# ---- names and modes ------------------------------------------------------------------

def test_longest_file_name_exports(pair, tmp_path):
    base, res = pair
    b2 = os.path.join(str(tmp_path), "base")
    H.write_model(b2, base.tensors, base.config, nshards=2)
    long_name = "n" * 246 + ".txt"
    assert len(long_name) == 250
    H.write_file(os.path.join(b2, long_name), b"a file with a long name\n")
    out = export([f"{b2}+{res.path}"], os.path.join(str(tmp_path), "out"))
    assert H.read_file(os.path.join(out, long_name)) == b"a file with a long name\n"
    assert leftovers(out) == []


def _export_with_umask(spec, out, umask):
    p = subprocess.run([H.residfs_bin(), "export", spec, out, "--quiet"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask))
    assert p.returncode == 0, p.stderr
    return {fn: stat.S_IMODE(os.stat(os.path.join(out, fn)).st_mode) for fn in os.listdir(out)}


def test_modes_do_not_follow_the_umask(pair, tmp_path):
    base, res = pair
    b2 = os.path.join(str(tmp_path), "base")
    H.write_model(b2, base.tensors, base.config, nshards=2)
    H.write_file(os.path.join(b2, "private.txt"), b"mine\n", mode=0o600)
    spec = f"{b2}+{res.path}"
    # a narrow umask does not narrow the sources' 0644
    modes = _export_with_umask(spec, os.path.join(str(tmp_path), "narrow"), 0o077)
    assert modes["config.json"] == 0o644 and modes["model-00001-of-00002.safetensors"] == 0o644, modes
    assert modes["private.txt"] == 0o600, modes
    # an open umask does not widen a 0600 source
    modes = _export_with_umask(spec, os.path.join(str(tmp_path), "open"), 0)
    assert modes["private.txt"] == 0o600, modes
    assert modes["config.json"] == 0o644, modes
