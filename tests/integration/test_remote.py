"""Remote terms: Hugging Face Hub repositories and web directories.

A SPEC term may be a Hub repository (hf://ORG/NAME[@REV], or a bare ORG/NAME that is no
local path) or a web directory (http(s)://HOST/PATH/).  These tests serve copies of small
models through the Hub emulator (tests/remote/hubemu.py: a hub and a CDN on 127.0.0.1) and
through nginx (tests/remote/webserve.py), and compare every remote mount byte for byte with
the mount of the same SPEC built from the local directories (README.md excepted: it names
the sources, so it is checked for the hf:// terms and the commit instead).

What is checked:
  1. bytes: read(), preads at random offsets and lengths (small ones too) and mmap of
     hf://org/base+hf://org/res; export; inspect; compute mode; local and remote terms
     mixed; long flags; bare ids; @REV with a tag, a commit and refs with '/'; web
     directories over http and https; a daemonized mount; the least remote memory with
     one connection; a CDN with md5 ETags; main moving on while mounted.
  2. laziness: mounting fetches the headers only; reading one tensor fetches that
     tensor's ranges plus a bounded overhead; the local HF cache is used with no
     request; HF_HUB_OFFLINE; the disk block cache serves a second mount (a fresh
     process), survives a damaged block and sharing, and `residfs prefetch` fills it.
  3. faults (503 with Retry-After, 429, reset, short body, 200 ignoring Range, wrong
     Content-Range, a stalled body, an expired CDN URL, content replaced under a mount,
     a web file rewritten): correct bytes or a clean EIO, never a hang, never wrong bytes.
  4. auth: gated and private repositories, HF_TOKEN and the token file; the token never
     reaches the CDN nor residfs's output.
  5. bad input refused at mount with a message naming the term.

Thorough reads (mmap) run in a child process: a page fault holds the GIL, and the
emulator serving the page runs in the test's process.

Every residfs process gets XDG_CACHE_HOME and HF_HOME in the test's temporary directory
(nothing touches the real home), no token, no proxy and no CA bundle unless a test sets
them.  Remote mounts run in the foreground (mount -f) so that the test holds the process,
reads its stderr, and kills it when a read hangs.
"""
import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rfshelp as H
from conftest import _ALL_MOUNTS, _instruct_of, _llama, need_fuse

sys.path.insert(0, os.path.join(H.REPO, "tests", "remote"))
from hubemu import HubEmu  # noqa: E402
from webserve import Nginx  # noqa: E402

MiB = 1 << 20
BLOCK = MiB                 # RFS_TUNE_REMOTE_BLOCK
WINDOW = 64 * MiB           # RFS_TUNE_REMOTE_WINDOW
HANG = 60                   # seconds after which an operation counts as hung
MIN_MEMORY = "32M"          # the least --remote-memory (four parts of 8 MiB)
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"

# variables of the caller's environment that must not reach residfs
_SCRUB = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_HUB_CACHE",
          "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HOME", "XDG_CACHE_HOME", "CURL_CA_BUNDLE",
          "SSL_CERT_FILE", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
          "all_proxy", "no_proxy", "NO_PROXY")


# ---- running residfs -------------------------------------------------------------------

def make_env(tmp, emu=None, **over):
    """The environment of a residfs process: HF_HOME and XDG_CACHE_HOME under @tmp,
    HF_ENDPOINT the emulator, nothing else of the Hub's or curl's; @over on top
    (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(HF_HOME=os.path.join(tmp, "hfhome"), XDG_CACHE_HOME=os.path.join(tmp, "xdg"),
               NO_PROXY="*", no_proxy="*")
    if emu is not None:
        env["HF_ENDPOINT"] = emu.endpoint
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    os.makedirs(env["HF_HOME"], exist_ok=True)
    return env


def rfs(args, env, cwd=None, timeout=120):
    """residfs ARGS with @env; output through files (a daemon must not hold a pipe)."""
    r = H.run(args, cwd=cwd, timeout=timeout, env={k: env.get(k) for k in set(env) | set(os.environ)})
    return r


class FgMount:
    """residfs mount -f ARGS MP with @env, its stdout and stderr in a file."""

    def __init__(self, tmp, name, args, env, cwd=None):
        self.mp = os.path.join(tmp, name)
        os.makedirs(self.mp, exist_ok=True)
        self.log_path = os.path.join(tmp, name + ".log")
        self.log_file = open(self.log_path, "wb")
        self.args = list(args)
        _ALL_MOUNTS.append(self.mp)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([H.residfs_bin(), "mount", "-f", *args, self.mp], env=env,
                                     cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file)
        deadline = time.monotonic() + HANG
        while not H.is_mounted(self.mp):
            if self.proc.poll() is not None:
                self.log_file.close()
                raise MountFailed(self.proc.returncode, self.log())
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nothing mounted at {self.mp} after {HANG} s: {self.log()}")
            time.sleep(0.02)
        self.mount_s = time.monotonic() - self.t0

    def path(self, fn):
        return os.path.join(self.mp, fn)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self):
        ok = H.unmount(self.mp)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
            ok = False
        if not self.log_file.closed:
            self.log_file.close()
        return ok


class MountFailed(AssertionError):
    def __init__(self, rc, log):
        super().__init__(f"residfs mount -f exited {rc}: {log[-3000:]}")
        self.rc, self.text = rc, log


@pytest.fixture
def fg(tmp_path, binary):
    """fg(ARGS..., env=ENV, cwd=None) -> a live FgMount; all stopped at teardown."""
    need_fuse()
    made = []

    def mount(*args, env, cwd=None):
        fm = FgMount(str(tmp_path), f"mnt{len(made)}", args, env, cwd=cwd or str(tmp_path))
        made.append(fm)
        return fm

    yield mount
    bad = [fm.mp for fm in made if not fm.stop()]
    assert not bad, f"could not unmount (or the daemon did not end) at {bad}"


def guarded(fm, what, fn, timeout=HANG):
    """fn() in a thread; past @timeout the daemon is killed and the test fails."""
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
        raise AssertionError(f"{what}: no answer from the mount in {timeout} s (the daemon hangs; "
                             f"killed it): {fm.log()[-2000:]}")
    if "e" in box:
        raise box["e"]
    return box.get("r")


def read_all(d):
    return {fn: H.read_file(os.path.join(d, fn)) for fn in sorted(os.listdir(d))}


_CHECK_READS = ("import sys; sys.path.insert(0, sys.argv[4]); import rfshelp as H; "
                "H.check_reads(sys.argv[1], open(sys.argv[2], 'rb').read(), seed=int(sys.argv[3]))")


def check_reads_apart(fm, path, want, seed):
    """H.check_reads in a child process.  Its mmap reads fault pages in while holding
    the GIL, and the emulator that serves those pages runs in this process: done here,
    a fault that needs the network would wait for the daemon's deadline."""
    exp = os.path.join(os.path.dirname(fm.mp), "expected.bin")
    H.write_file(exp, want)
    try:
        r = subprocess.run([sys.executable, "-c", _CHECK_READS, path, exp, str(seed), H.HERE],
                           capture_output=True, text=True, timeout=HANG + 60)
    except subprocess.TimeoutExpired:
        fm.kill()
        raise AssertionError(f"reading {path} every way: no end in {HANG + 60} s (the daemon hangs; "
                             f"killed it): {fm.log()[-2000:]}") from None
    assert r.returncode == 0, f"reading {path} every way:\n{r.stderr[-4000:]}"


def compare(fm, ref, *, thorough=False, skip=("README.md",), names=None):
    """Every file of the mount equals @ref (name -> bytes), README.md apart;
    @thorough: every way of reading (H.check_reads), else whole-file reads."""
    got = sorted(os.listdir(fm.mp))
    want = sorted(ref if names is None else names)
    assert got == want, f"{fm.mp}: files {got}, expected {want}"
    for fn in got:
        if fn in skip:
            continue
        p = fm.path(fn)
        if thorough:
            check_reads_apart(fm, p, ref[fn], seed=len(fn))
        else:
            data = guarded(fm, f"reading {p}", lambda: H.read_file(p))
            H.assert_same(data, ref[fn], p, H.locator(ref[fn]) if fn.endswith(".safetensors") else None)


def check_card(text, *needles):
    """The model card names each of @needles (terms, commits)."""
    H.front_matter(text)
    for n in needles:
        assert n in text, f"README.md does not name {n!r}:\n{text}"


def rand_bf16(rng, shape, exp_bits):
    """Finite bf16 values quickly: random sign and mantissa, one exponent."""
    n = int(np.prod(shape))
    b = (rng.integers(0, 1 << 16, n, dtype=np.uint16) & np.uint16(0x807F)) | np.uint16(exp_bits)
    return H.T("BF16", shape, b.tobytes())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cdn_path(emu, repo, fn):
    return "/cdn/" + emu.file(repo, fn).sha256


def st_offsets(path_or_bytes, name):
    """(data start in the file, end) of tensor @name of a safetensors file."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        head = bytes(path_or_bytes[:8])
        n = struct.unpack("<Q", head)[0]
        hdr = json.loads(path_or_bytes[8:8 + n])
    else:
        with open(path_or_bytes, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
    b, e = hdr[name]["data_offsets"]
    return 8 + n + b, 8 + n + e


# ---- models and servers ------------------------------------------------------------------

class Models:
    pass


@pytest.fixture(scope="module")
def M(tmp_path_factory):
    """The small bf16 models: base (2 shards and an index, extra files), instruct
    (one shard), res (f32 residuals of instruct - base), res2 (bf16 residuals)."""
    root = str(tmp_path_factory.mktemp("remote-models"))
    rng = np.random.default_rng(4321)
    V, Hd, I, L, KV = 10240, 256, 512, 2, 128
    m = Models()
    m.root = root
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    cfg = H.llama_config(V, Hd, I, L, KV, False, "BF16")
    m.base = H.write_model(os.path.join(root, "base"), bt, cfg, nshards=2, flavour="base",
                           others={"LICENSE": "Apache-2.0 (test)\n", "README.md": "# base model\n",
                                   "notes.txt": b"\x00\x01binary-ish\xff" * 100})
    it = _instruct_of(rng, bt, "BF16")
    m.ins = H.write_model(os.path.join(root, "instruct"), it, cfg, nshards=1, flavour="instruct")
    m.res = H.write_residuals(os.path.join(root, "res"),
                              {n: H.delta_from(bt[n], it[n], "F32") for n in bt}, vocab=V)
    m.res2 = H.write_residuals(os.path.join(root, "res2"),
                               {n: H.T.from_f32("BF16", bt[n].shape, rng.normal(0, 0.003, bt[n].numel))
                                for n in bt}, vocab=V, gen=False)
    # a base whose first shard's header length points past the end of the file
    bad = os.path.join(root, "corrupt")
    shutil.copytree(m.base.path, bad)
    raw = bytearray(H.read_file(os.path.join(bad, SHARD1)))
    raw[:8] = struct.pack("<Q", len(raw) + 100)
    H.write_file(os.path.join(bad, SHARD1), bytes(raw))
    m.corrupt = bad
    return m


@pytest.fixture(scope="module")
def emu(M):
    """The emulator, serving copies of the small models under several names."""
    e = HubEmu().start()
    c = {}
    c["base"] = e.add_repo_dir("org/base", M.base.path)
    c["res"] = e.add_repo_dir("org/res", M.res.path)
    c["res2"] = e.add_repo_dir("org/res2", M.res2.path)
    c["instruct"] = e.add_repo_dir("org/instruct", M.ins.path)
    # revisions: v1 (a tag) and commit A are the base, main moved on to the instruct model
    c["revs_a"] = e.add_repo_dir("org/revs", M.base.path)
    e.add_ref("org/revs", "v1", c["revs_a"])
    c["revs_b"] = e.add_repo_dir("org/revs", M.ins.path)
    # names with '-' for the SPEC splitter
    e.add_repo_dir("org/x", M.base.path)
    e.add_repo_dir("org/x-y", M.ins.path)
    e.add_repo_dir("y-org/z", M.base.path)
    e.add_repo_dir("org/z", M.base.path)
    # access
    c["gated"] = e.add_repo_dir("org/gated", M.base.path, gated=True)
    c["private"] = e.add_repo_dir("org/private", M.res.path, private=True)
    e.add_repo_dir("org/corrupt", M.corrupt)
    e.commits = c
    yield e
    e.stop()


@pytest.fixture(autouse=True)
def _fresh_emu(request):
    """Each test starts with no fault, an empty log and the emulator's defaults."""
    if "emu" not in request.fixturenames:
        yield
        return
    e = request.getfixturevalue("emu")
    e.wait_idle(20)
    e.clear_faults()
    e.clear_log()
    e.cdn_ttl, e.latency_ms, e.cdn_reject_auth, e.cdn_etag = 3600, 0, False, "sha256"
    yield
    e.clear_faults()
    e.cdn_ttl, e.latency_ms, e.cdn_reject_auth, e.cdn_etag = 3600, 0, False, "sha256"


@pytest.fixture(scope="module")
def ref(M, tmp_path_factory):
    """ref(SPEC, *opts) -> {name: bytes} of the mount of a SPEC of local directories."""
    need_fuse()
    root = str(tmp_path_factory.mktemp("remote-refs"))
    memo = {}

    def get(spec, *opts):
        key = (spec, opts)
        if key not in memo:
            fm = FgMount(root, f"ref{len(memo)}", [*opts, spec], make_env(root))
            try:
                memo[key] = guarded(fm, f"reading the local mount of {spec}", lambda: read_all(fm.mp))
            finally:
                assert fm.stop(), f"cannot unmount {fm.mp}"
        return memo[key]

    return get


def local(M, *names, sep="+"):
    """The SPEC of local directories: local(M, "base", "res") is BASE+RES."""
    return sep.join(getattr(M, n).path for n in names)


# ---- 1. the same bytes as the local directories ------------------------------------------

def test_hub_apply_every_byte(M, emu, ref, fg, tmp_path):
    """hf://org/base+hf://org/res: every file, every way of reading, equals the
    local mount; README.md names the hf:// terms and the commits."""
    want = ref(local(M, "base", "res"))
    fm = fg("hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    compare(fm, want, thorough=True)
    H.concurrent_preads(fm.path(SHARD1), want[SHARD1], nthreads=6, per_thread=20)
    card = H.read_file(fm.path("README.md")).decode()
    check_card(card, "hf://org/base", "hf://org/res", emu.commits["base"], emu.commits["res"])
    json.loads(H.read_file(fm.path(".residfs-stats")))
    assert fm.alive()
    # every byte came through range requests: no 200 with a whole file
    for r in emu.requests():
        if "/resolve/" in r["path"] or r["server"] == "cdn":
            assert r["range"] and r["status"] in (206, 302), f"a request that is no range read: {r}"


def test_hub_export_equals_local(M, emu, tmp_path):
    env = make_env(str(tmp_path), emu)
    a, b = str(tmp_path / "local-out"), str(tmp_path / "hub-out")
    r = rfs(["export", local(M, "base", "res"), a, "--quiet"], env)
    assert r.returncode == 0, r
    r = rfs(["export", "hf://org/base+hf://org/res", b, "--quiet"], env)
    assert r.returncode == 0, r
    H.compare_dirs(a, b, skip=("README.md",))
    check_card(H.read_file(os.path.join(b, "README.md")).decode(), "hf://org/base", "hf://org/res",
               emu.commits["base"], emu.commits["res"])


def test_inspect_json_resolved(M, emu, tmp_path):
    """inspect --json names each remote term's resolution (commit, endpoint), and the
    files and sizes the local SPEC gives."""
    env = make_env(str(tmp_path), emu)
    r = rfs(["inspect", "hf://org/base+hf://org/res", "--json"], env)
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    r = rfs(["inspect", local(M, "base", "res"), "--json"], env)
    assert r.returncode == 0, r
    want = json.loads(r.stdout)
    sizes = lambda j: {f["name"]: f["size"] for f in j["files"] if f["name"] != "README.md"}  # noqa: E731
    assert sizes(got) == sizes(want)
    res = [s.get("resolved") or "" for s in got["sources"]]
    assert emu.commits["base"] in res[0] and emu.commits["res"] in res[1], got["sources"]
    # nothing but the revision API, the small files and the headers was asked for
    assert all(r["range"] or r["path"].startswith("/api/") for r in emu.requests()), describe(emu.requests())


def test_hub_compute_mode(M, emu, ref, fg, tmp_path):
    """hf://org/instruct-hf://org/base gives the residuals the local compute mode gives."""
    want = ref(local(M, "ins", "base", sep="-"))
    fm = fg("hf://org/instruct-hf://org/base", env=make_env(str(tmp_path), emu))
    compare(fm, want, skip=("README.md", "config.json"))
    # config.json names the models; everything else of it is the local one's
    got_cfg = json.loads(H.read_file(fm.path("config.json")))
    want_cfg = json.loads(want["config.json"])
    # (created_at: the sources' newest mtime, test_remote_mtime)
    names = {k for k in want_cfg if k.endswith("_model_name") or k == "tokenizer_name"} | {"created_at"}
    assert {k: v for k, v in got_cfg.items() if k not in names} == \
        {k: v for k, v in want_cfg.items() if k not in names}
    assert list(got_cfg) == list(want_cfg)
    check_card(H.read_file(fm.path("README.md")).decode(), "hf://org/instruct", "hf://org/base",
               emu.commits["instruct"], emu.commits["base"])


def test_remote_mtime(M, emu, fg, tmp_path):
    """Files of remote terms have a modification time (the Hub's lastModified): the
    mount's files and the computed residuals' created_at are not the epoch."""
    fm = fg("hf://org/instruct-hf://org/base", env=make_env(str(tmp_path), emu))
    cfg = json.loads(H.read_file(fm.path("config.json")))
    assert not cfg["created_at"].startswith("1970"), f"created_at {cfg['created_at']}"
    for fn in os.listdir(fm.mp):
        assert os.stat(fm.path(fn)).st_mtime > 1e9, f"{fn}: mtime {os.stat(fm.path(fn)).st_mtime}"


def test_local_and_remote_mixed(M, emu, ref, fg, tmp_path):
    env = make_env(str(tmp_path), emu)
    want = ref(local(M, "base", "res"))
    fm = fg(f"{M.base.path}+hf://org/res", env=env)
    compare(fm, want)
    want3 = ref(f"{M.base.path}+{M.res.path}+0.5*{M.res2.path}")
    fm = fg(f"hf://org/base+{M.res.path}+0.5*hf://org/res2", env=env)
    compare(fm, want3)


def test_long_flags_and_negation(M, emu, ref, fg, tmp_path):
    """Remote terms in the long form (--base/--delta/--scale), and BASE-DELTA (a
    residuals repository subtracted: negation, not compute mode)."""
    env = make_env(str(tmp_path), emu)
    fm = fg("--base", "hf://org/base", "--delta", "hf://org/res", "--delta", "hf://org/res2",
            "--scale", "0.5", env=env)
    compare(fm, ref(f"{M.base.path}+{M.res.path}+0.5*{M.res2.path}"))
    fm = fg("hf://org/base-hf://org/res2", env=env)
    compare(fm, ref(f"{M.base.path}-{M.res2.path}"))


def test_bare_ids(M, emu, ref, fg, tmp_path):
    """org/base+org/res (no such local paths): Hub repositories."""
    want = ref(local(M, "base", "res"))
    fm = fg("org/base+org/res", env=make_env(str(tmp_path), emu), cwd=str(tmp_path))
    compare(fm, want)
    check_card(H.read_file(fm.path("README.md")).decode(), "org/base", emu.commits["base"])
    # a local directory org/res (here: the other residuals) is the term, not the repository
    cwd = tmp_path / "cwd"
    shutil.copytree(M.res2.path, cwd / "org" / "res")
    emu.clear_log()
    fm = fg("org/base+org/res", env=make_env(str(tmp_path), emu), cwd=str(cwd))
    compare(fm, ref(local(M, "base", "res2")))
    asked = {r["path"] for r in emu.requests()}
    assert not any("org/res/" in a or a.endswith("org/res") for a in asked), asked


def test_revision_tag_and_commit(M, emu, ref, fg, tmp_path):
    env = make_env(str(tmp_path), emu)
    a = emu.commits["revs_a"]
    base_res = ref(local(M, "base", "res"))
    fm = fg("hf://org/revs@v1+hf://org/res", env=env)
    compare(fm, base_res)
    check_card(H.read_file(fm.path("README.md")).decode(), "hf://org/revs@v1", a)
    fm = fg(f"hf://org/revs@{a}+hf://org/res", env=env)
    compare(fm, base_res)
    check_card(H.read_file(fm.path("README.md")).decode(), a)
    # refs with slashes: a pull request, a branch
    emu.add_ref("org/revs", "refs/pr/1", a)
    fm = fg("hf://org/revs@refs/pr/1+hf://org/res", env=env)
    compare(fm, base_res)
    emu.add_ref("org/revs", "release/v1", a)
    fm = fg("hf://org/revs@release/v1+hf://org/res", env=env)
    compare(fm, base_res)
    # main moved on: the instruct model's files
    fm = fg("hf://org/revs+hf://org/res", env=env)
    compare(fm, ref(local(M, "ins", "res")))
    check_card(H.read_file(fm.path("README.md")).decode(), emu.commits["revs_b"])


def test_recipe_with_hub_models(M, emu, fg, tmp_path):
    """A mergekit recipe (--config) whose models are Hub ids (hf://, bare, @tag): the
    mount equals the export of the same recipe over local copies, the vocabularies are
    aligned from the remote tokenizer.json files, and the model card names the commits."""
    env = make_env(str(tmp_path), emu)
    base2 = str(tmp_path / "base2")
    shutil.copytree(M.base.path, base2)
    body = ("    parameters: {weight: 0.5}\n  - model: %s\n    parameters: {weight: 0.25}\n"
            "tokenizer_source: union\ndtype: float32\n")
    hub = str(tmp_path / "hub.yml")
    with open(hub, "w") as f:
        f.write("merge_method: task_arithmetic\nbase_model: hf://org/base\nmodels:\n"
                "  - model: org/instruct\n" + body % "hf://org/revs@v1")
    loc = str(tmp_path / "local.yml")
    with open(loc, "w") as f:
        f.write(f"merge_method: task_arithmetic\nbase_model: {M.base.path}\nmodels:\n"
                f"  - model: {M.ins.path}\n" + body % base2)
    out = str(tmp_path / "local-out")
    r = rfs(["export", "--config", loc, out, "--quiet"], env)
    assert r.returncode == 0, r
    fm = fg("--config", hub, env=env, cwd=str(tmp_path))
    for fn in os.listdir(out):
        if fn not in ("README.md", "mergekit_config.yml"):
            assert H.read_file(fm.path(fn)) == H.read_file(os.path.join(out, fn)), fn
    check_card(H.read_file(fm.path("README.md")).decode(), "hf://org/base", "org/instruct",
               emu.commits["base"], emu.commits["instruct"], emu.commits["revs_a"])


@pytest.fixture(scope="module")
def webroot(M, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("webroot"))
    for n in ("base", "res"):
        shutil.copytree(getattr(M, n).path, os.path.join(root, n))
    shutil.copytree(M.base.path, os.path.join(root, "base-v1"))
    return root


@pytest.fixture(scope="module")
def web_http(webroot):
    with Nginx(webroot) as w:
        yield w


@pytest.fixture(scope="module")
def web_https(webroot):
    with Nginx(webroot, tls=True) as w:
        yield w


# a web server lists nothing: a web directory offers the model files residfs knows by name
WEB_ABSENT = ("LICENSE", "notes.txt")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_web_directory(M, ref, fg, tmp_path, tls, request):
    web = request.getfixturevalue("web_https" if tls else "web_http")
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), None, CURL_CA_BUNDLE=web.ca_file if tls else None)
    spec = f"{web.url}base/+{web.url}res/"
    fm = fg(spec, env=env)
    compare(fm, want, names=[n for n in want if n not in WEB_ABSENT])
    check_card(H.read_file(fm.path("README.md")).decode(), f"{web.url}base/")
    reqs = web.requests()
    ranged = [r for r in reqs if r["uri"].endswith(".safetensors") and not r["uri"].endswith("/model.safetensors")
              or r["uri"].endswith("/res/model.safetensors")]
    assert ranged and all(r["status"] == 206 and r["range"] for r in ranged), ranged[:5]
    # reads after the probe carry the ETag the mount resolved
    assert any(r["if_match"] for r in ranged), ranged[:5]
    if not tls:   # a directory name with '-': the SPEC splits at the '+' only
        fm = fg(f"{web.url}base-v1/+{web.url}res/", env=env)
        compare(fm, want, names=[n for n in want if n not in WEB_ABSENT])


def test_web_https_untrusted_refused(M, web_https, tmp_path):
    """Without CURL_CA_BUNDLE the self-signed certificate is refused, at mount."""
    env = make_env(str(tmp_path), None)
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    t0 = time.monotonic()
    r = rfs(["mount", f"{web_https.url}base/+{web_https.url}res/", mp], env, timeout=90)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "residfs: error:" in r.stderr and web_https.url in r.stderr, r
    assert time.monotonic() - t0 < 30, f"the refusal took {time.monotonic() - t0:.1f} s"


# ---- 2. laziness and caches ---------------------------------------------------------------

TARGET = "model.layers.0.mlp.up_proj.weight"


def target_last_models(root, seed, dims, place):
    """bf16 base (2 shards) and bf16 residuals under @root, llama @dims (V, Hd, I, L,
    KV), TARGET the last tensor of the base's first shard (the base's tensors other
    than TARGET in order, TARGET at index place(names)) and of the residuals' file;
    with the expected merged bytes of TARGET, its byte ranges in both files and the
    files' sizes."""
    rng = np.random.default_rng(seed)
    V, Hd, I, L, KV = dims
    shapes = dict(H.llama_shapes(V, Hd, I, L, KV, False))
    names = list(shapes)
    names.remove(TARGET)
    at = place(names)
    order = names[:at] + [TARGET] + names[at:]
    bt = {n: rand_bf16(rng, shapes[n], 0x3C00) for n in order}
    cfg = H.llama_config(V, Hd, I, L, KV, False, "BF16")
    b = Models()
    b.root = root
    b.base = H.write_model(os.path.join(root, "base"), bt, cfg, nshards=2, order=order, flavour="base")
    assert b.base.shards[0][1][-1] == TARGET, b.base.shards[0][1]
    dt = {n: rand_bf16(rng, shapes[n], 0x3A00) for n in order}
    b.res = H.write_residuals(os.path.join(root, "res"), {n: dt[n] for n in sorted(dt)}, vocab=V)
    # the residuals' file with TARGET last (the writer sorts by name)
    items = [(n, dt[n]) for n in sorted(dt) if n != TARGET] + [(TARGET, dt[TARGET])]
    H.write_file(os.path.join(b.res.path, "model.safetensors"), H.st_bytes(items))
    b.expected = H.merge_tensor(bt[TARGET], [(dt[TARGET], 1.0)], "BF16").raw
    b.base_range = st_offsets(os.path.join(b.base.path, SHARD1), TARGET)
    b.res_range = st_offsets(os.path.join(b.res.path, "model.safetensors"), TARGET)
    b.sizes = {d: {fn: os.path.getsize(os.path.join(root, d, fn)) for fn in os.listdir(os.path.join(root, d))}
               for d in ("base", "res")}
    b.total = sum(sum(s.values()) for s in b.sizes.values())
    return b


@pytest.fixture(scope="module")
def big(emu, tmp_path_factory):
    """A bf16 model of about 230 MiB (tensors of 16 and 32 MiB) and bf16 residuals as
    large, served as org/bigbase and org/bigres.  TARGET (16 MiB) is the last tensor of
    the base's first shard and of the residuals' file, so that no prefetch past its end
    can hide in the counts."""
    b = target_last_models(str(tmp_path_factory.mktemp("remote-big")), 99,
                           (16384, 1024, 8192, 3, 1024), lambda names: 14)
    emu.add_repo_dir("org/bigbase", b.base.path)
    emu.add_repo_dir("org/bigres", b.res.path)
    return b


def lazy_bound(b, *, tensor=True):
    """What reading TARGET may cost: every safetensors file's first MiB (headers), the
    small files whole, and with @tensor its base and residual ranges rounded out to
    1 MiB blocks plus one prefetch window."""
    small = sum(s for d in b.sizes.values() for fn, s in d.items() if not fn.endswith(".safetensors"))
    nst = sum(1 for d in b.sizes.values() for fn in d if fn.endswith(".safetensors"))
    bound = nst * BLOCK + small
    if tensor:
        for lo, hi in (b.base_range, b.res_range):
            bound += (hi + BLOCK - 1) // BLOCK * BLOCK - lo // BLOCK * BLOCK
        bound += WINDOW
    return bound


def fetched(emu):
    """Body bytes the emulator sent, and its log."""
    reqs = emu.requests()
    return sum(r["sent"] for r in reqs), reqs


def describe(reqs, n=40):
    return "\n".join(f"  {r['server']} {r['method']} {r['path'][-60:]} {r['range']} -> {r['status']} "
                     f"{r['sent']}" for r in reqs[:n])


# daemon options of the laziness tests: no block cache of the mount (its readahead of the
# merged file is another layer than the remote engine measured here), no disk cache
LAZY_OPTS = ("--cache-size", "0", "--remote-cache-size", "0")


def test_lazy_mount_fetches_headers_only(big, emu, fg, tmp_path):
    """Mounting fetches the safetensors headers (the first MiB of each file) and the
    small files, nothing of the tensors."""
    fm = fg(*LAZY_OPTS, "hf://org/bigbase+hf://org/bigres", env=make_env(str(tmp_path), emu))
    time.sleep(0.5)   # what the mount started
    sent, reqs = fetched(emu)
    bound = lazy_bound(big, tensor=False)
    assert sent <= bound, (f"mounting fetched {sent / MiB:.1f} MiB of a {big.total / MiB:.0f} MiB model; "
                           f"the headers and small files are {bound / MiB:.1f} MiB:\n{describe(reqs)}")
    assert fm.alive()


@pytest.mark.parametrize("opts", [LAZY_OPTS, ()], ids=["no-mount-cache", "defaults"])
def test_lazy_one_tensor(big, emu, fg, tmp_path, opts):
    """Reading one tensor of the mount fetches that tensor's ranges of the base and the
    residuals, plus the headers, the small files, block rounding and at most one
    prefetch window: far below the model's size.  Also with the mount's defaults (its
    block cache reads ahead in the merged file, the disk cache is written)."""
    fm = fg(*opts, "hf://org/bigbase+hf://org/bigres", env=make_env(str(tmp_path), emu))
    p = fm.path(SHARD1)

    def read_target():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no kernel readahead
            n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
            hdr = json.loads(os.pread(fd, n, 8))
            b, e = hdr[TARGET]["data_offsets"]
            return os.pread(fd, e - b, 8 + n + b)
        finally:
            os.close(fd)

    data = guarded(fm, "reading one tensor", read_target)
    H.assert_same(data, big.expected, f"{p}: {TARGET}")
    time.sleep(0.5)   # prefetches started by the read
    sent, reqs = fetched(emu)
    bound = lazy_bound(big)
    assert bound * 3 < big.total, "the model is too small for this test to mean something"
    assert sent <= bound, (f"reading one {len(data) / MiB:.0f} MiB tensor fetched {sent / MiB:.1f} MiB "
                           f"of a {big.total / MiB:.0f} MiB model (bound {bound / MiB:.1f} MiB):\n"
                           f"{describe(sorted(reqs, key=lambda r: r['t']), 80)}")
    if opts != LAZY_OPTS:
        return   # the mount's own readahead after the header read computes the first tensors
    # nothing before the tensor but the header's first MiB
    base_sha = emu.file("org/bigbase", SHARD1).sha256
    lo = big.base_range[0] // BLOCK * BLOCK
    for r in reqs:
        if r["server"] == "cdn" and base_sha in r["path"] and r["range"]:
            a = int(r["range"].split("=")[1].split("-")[0])
            assert a < BLOCK or a >= lo, f"fetched base bytes from {a}, before the tensor ({lo}): {r}"


def snapshot_cache(emu, cache, repo, leave_out=()):
    """An HF cache entry as huggingface_hub makes it for what the emulator serves as
    @repo's main: refs/main, the snapshot of the commit as symbolic links into blobs/
    named by each file's etag."""
    commit = emu.repos[repo].refs["main"]
    files = emu.repos[repo].commits[commit]
    d = os.path.join(cache, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(d, "refs"), exist_ok=True)
    os.makedirs(os.path.join(d, "blobs"), exist_ok=True)
    snap = os.path.join(d, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    with open(os.path.join(d, "refs", "main"), "w") as f:
        f.write(commit)
    for fn, fobj in files.items():
        if fn in leave_out:
            continue
        blob = os.path.join(d, "blobs", fobj.etag)
        H.write_file(blob, fobj.data)
        os.symlink(os.path.join("..", "..", "blobs", fobj.etag), os.path.join(snap, fn))
    return commit


def test_hf_cache_no_request(M, emu, ref, fg, tmp_path):
    """Repositories whose snapshots are in the HF cache: mounted and read whole with no
    request at all."""
    cache = str(tmp_path / "hub")
    snapshot_cache(emu, cache, "org/base")
    snapshot_cache(emu, cache, "org/res")
    want = ref(local(M, "base", "res"))
    fm = fg("hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu, HF_HUB_CACHE=cache))
    compare(fm, want)
    check_card(H.read_file(fm.path("README.md")).decode(), "hf://org/base", emu.commits["base"])
    assert emu.requests() == [], f"requests with everything in the HF cache:\n{describe(emu.requests())}"
    # $HF_HOME/hub is the default cache
    home = str(tmp_path / "home2")
    shutil.copytree(cache, os.path.join(home, "hub"), symlinks=True)
    fm = fg("org/base+org/res", env=make_env(str(tmp_path), emu, HF_HOME=home, HF_HUB_OFFLINE="1"),
            cwd=str(tmp_path))
    compare(fm, want)
    assert emu.requests() == [], describe(emu.requests())


def test_hf_cache_link_outside(M, emu, ref, fg, tmp_path):
    """A snapshot entry linking outside the repository's cache directory (to a file
    of the user's) is not shown by the mount."""
    cache = str(tmp_path / "hub")
    snapshot_cache(emu, cache, "org/base")
    snapshot_cache(emu, cache, "org/res")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model file\n")
    snap = os.path.join(cache, "models--org--base", "snapshots", emu.commits["base"])
    os.symlink(str(secret), os.path.join(snap, "extra.txt"))
    fm = fg("hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu, HF_HUB_CACHE=cache,
                                                        HF_HUB_OFFLINE="1"))
    names = os.listdir(fm.mp)
    if "extra.txt" in names:
        try:
            data = H.read_file(fm.path("extra.txt"))
        except OSError:
            data = None
        assert data != secret.read_bytes(), "a file outside the HF cache is shown through the mount"
    want = ref(local(M, "base", "res"))
    for fn in want:
        if fn != "README.md":
            H.assert_same(H.read_file(fm.path(fn)), want[fn], fn)


def test_hf_cache_offline_partial(M, emu, tmp_path):
    """HF_HUB_OFFLINE=1 and a snapshot without the second shard: refused at mount,
    naming the missing file, with no request."""
    cache = str(tmp_path / "hub")
    snapshot_cache(emu, cache, "org/base", leave_out=(SHARD2,))
    snapshot_cache(emu, cache, "org/res")
    env = make_env(str(tmp_path), emu, HF_HUB_CACHE=cache, HF_HUB_OFFLINE="1")
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    r = rfs(["mount", "hf://org/base+hf://org/res", mp], env, timeout=60)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "residfs: error:" in r.stderr and SHARD2 in r.stderr and "org/base" in r.stderr, r
    # offline with no snapshot at all
    r = rfs(["mount", f"{M.base.path}+hf://org/res2", mp], env, timeout=60)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "org/res2" in r.stderr and "HF_HUB_OFFLINE" in r.stderr, r
    assert emu.requests() == [], describe(emu.requests())


def test_hf_cache_partial_online(M, emu, ref, fg, tmp_path):
    """A snapshot lacking one shard: the others are read from the cache, the missing
    one from the Hub at the cached commit."""
    cache = str(tmp_path / "hub")
    snapshot_cache(emu, cache, "org/base", leave_out=(SHARD2,))
    snapshot_cache(emu, cache, "org/res")
    want = ref(local(M, "base", "res"))
    fm = fg("hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu, HF_HUB_CACHE=cache))
    compare(fm, want)
    cdn = {r["path"] for r in emu.requests("cdn")}
    assert cdn <= {cdn_path(emu, "org/base", SHARD2)}, f"CDN requests for cached files: {cdn}"
    assert cdn, "the missing shard was not fetched from the Hub"


def read_everything(fm):
    return guarded(fm, f"reading all of {fm.mp}", lambda: read_all(fm.mp))


def test_disk_cache_second_mount(M, emu, ref, fg, tmp_path):
    """A second mount (a fresh process) with the same --remote-cache-dir reads every
    byte with no CDN request."""
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), emu)
    opts = ("--remote-cache-dir", str(tmp_path / "blocks"))
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    first = read_everything(fm)
    assert fm.stop()
    assert os.listdir(tmp_path / "blocks"), "nothing in the disk cache"
    emu.clear_log()
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    second = read_everything(fm)
    for fn in want:
        if fn != "README.md":
            H.assert_same(second[fn], want[fn], f"second mount: {fn}")
            H.assert_same(first[fn], want[fn], f"first mount: {fn}")
    cdn = emu.requests("cdn")
    assert cdn == [], f"the second mount went to the CDN:\n{describe(cdn)}"
    assert sum(r["sent"] for r in emu.requests() if "/resolve/" in r["path"]) == 0, \
        describe(emu.requests())


def test_disk_cache_shared_and_small(M, emu, ref, fg, tmp_path):
    """Two mounts at once sharing one disk cache of 4 MiB (blocks evicted all the
    time), read concurrently: every byte right in both."""
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), emu)
    opts = ("--remote-cache-dir", str(tmp_path / "blocks"), "--remote-cache-size", "4M",
            "--remote-memory", MIN_MEMORY, "--cache-size", "0")
    fms = [fg(*opts, "hf://org/base+hf://org/res", env=env) for _ in range(2)]
    got, errs = {}, []

    def rd(i):
        try:
            got[i] = read_all(fms[i].mp)
        except BaseException as ex:  # noqa: BLE001 - reported below
            errs.append(ex)

    ths = [threading.Thread(target=rd, args=(i,), daemon=True) for i in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(HANG)
    assert not any(t.is_alive() for t in ths), "concurrent reads hang"
    assert not errs, errs
    for i in range(2):
        for fn in want:
            if fn != "README.md":
                H.assert_same(got[i][fn], want[fn], f"mount {i}: {fn}")
    used = sum(p.stat().st_size for p in (tmp_path / "blocks").rglob("*") if p.is_file())
    assert used <= 2 * (4 * MiB + 2 * BLOCK), f"the disk cache holds {used} bytes"


def test_prefetch_fills_disk_cache(M, emu, ref, fg, tmp_path):
    """residfs prefetch SPEC, then a mount with the same cache: no CDN request."""
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), emu)
    opts = ("--remote-cache-dir", str(tmp_path / "blocks"))
    r = rfs(["prefetch", "hf://org/base+hf://org/res", "--remote-cache-size", "0"], env, timeout=60)
    assert r.returncode == 2 and "residfs: error:" in r.stderr, r
    r = rfs(["prefetch", "hf://org/base+hf://org/res", *opts, "--quiet"], env, timeout=120)
    assert r.returncode == 0, r
    assert r.stderr.strip() == "", f"--quiet printed: {r}"
    assert emu.bytes_sent("cdn") >= sum(os.path.getsize(os.path.join(d, f))
                                        for d in (M.base.path, M.res.path) for f in os.listdir(d)
                                        if f.endswith(".safetensors"))
    emu.clear_log()
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    got = read_everything(fm)
    for fn in want:
        if fn != "README.md":
            H.assert_same(got[fn], want[fn], fn)
    cdn = emu.requests("cdn")
    assert cdn == [], f"a mount after prefetch went to the CDN:\n{describe(cdn)}"


def test_prefetch_mountpoint(M, emu, ref, fg, tmp_path):
    """residfs prefetch MOUNTPOINT reads the mount whole: a later mount with the same
    disk cache makes no CDN request."""
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), emu)
    opts = ("--remote-cache-dir", str(tmp_path / "blocks"))
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    r = rfs(["prefetch", fm.mp, "--quiet"], env, timeout=120)
    assert r.returncode == 0, r
    assert fm.stop()
    emu.clear_log()
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    got = read_everything(fm)
    for fn in want:
        if fn != "README.md":
            H.assert_same(got[fn], want[fn], fn)
    assert emu.requests("cdn") == [], describe(emu.requests("cdn"))


# ---- 3. faults --------------------------------------------------------------------------

# Each fault hits the first requests of the residuals' blob on the CDN (made when the
# mount reads the header, and after): the mount must come up, and every byte be right.
FAULTS = [
    ("503-retry-after", dict(kind="status", code=503, retry_after=1, count=2)),
    ("429", dict(kind="status", code=429, count=2)),
    ("reset", dict(kind="reset", count=2)),
    ("short", dict(kind="short", count=2)),
    ("ignore-range", dict(kind="ignore_range", count=2)),
    ("wrong-range", dict(kind="wrong_range", count=2)),
    ("expire", dict(kind="expire", count=2)),
    ("latency", dict(kind="latency", ms=1500, count=3)),
]


@pytest.mark.parametrize("fault", [f[1] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_fault_recovered(M, emu, ref, fg, tmp_path, fault):
    want = ref(local(M, "base", "res"))
    fault = dict(fault)
    kind = fault.pop("kind")
    blob = cdn_path(emu, "org/res", "model.safetensors")
    emu.add_fault(kind, match=blob, server="cdn", **fault)
    t0 = time.monotonic()
    fm = fg("--remote-cache-size", "0", "--remote-timeout", "6", "hf://org/base+hf://org/res",
            env=make_env(str(tmp_path), emu))
    compare(fm, want)
    took = time.monotonic() - t0
    assert fm.alive()
    if kind == "stall":
        emu.wait_idle(20)   # the stalled answer is logged when its handler gives up
    hits = sorted((r for r in emu.requests("cdn") if r["path"] == blob), key=lambda r: r["t"])
    if kind == "status":
        bad = [r for r in hits if r["status"] == fault["code"]]
        assert len(bad) == fault["count"], describe(hits)
        if fault.get("retry_after"):
            # the same range asked again no sooner than Retry-After said
            for b in bad:
                again = [r for r in hits if r["t"] > b["t"] and r["range"] == b["range"]]
                assert again and again[0]["t"] - b["t"] >= 0.95, \
                    f"retried after {again[0]['t'] - b['t'] if again else None} s:\n{describe(hits)}"
    elif kind == "expire":
        assert sum(r["status"] == 403 for r in hits) == fault["count"], describe(hits)
        resolves = [r for r in emu.requests("hub") if r["path"].endswith("/model.safetensors")
                    and "/org/res/" in r["path"]]
        assert len(resolves) >= 2, f"the expired URL was not resolved again:\n{describe(resolves)}"
    elif kind in ("reset", "short", "stall"):
        assert any(r["status"] == 206 and r["sent"] < r_len(r) for r in hits), describe(hits)
    elif kind == "ignore_range":
        assert any(r["status"] == 200 for r in hits), describe(hits)
    assert took < 60, f"took {took:.1f} s"


def r_len(r):
    a, b = r["range"].split("=")[1].split("-")
    return int(b) - int(a) + 1


def test_fault_stall_retried(M, emu, ref, fg, tmp_path):
    """One answer whose body stalls (half of it sent, then nothing for 16 s), with
    --remote-timeout 20: the stalled attempt is abandoned (stall detection, not the
    end of the server's stall) and retried within the deadline; every byte is right.
    (With a --remote-timeout under about 10 s no retry fits: libcurl's low-speed
    check averages over about 5 s, so a stall after a burst is seen late.)"""
    blob = cdn_path(emu, "org/res", "model.safetensors")
    emu.add_fault("stall", match=blob, server="cdn", seconds=16, count=1)
    t0 = time.monotonic()
    try:
        fm = fg("--remote-cache-size", "0", "--remote-timeout", "20", "hf://org/base+hf://org/res",
                env=make_env(str(tmp_path), emu))
    except MountFailed as ex:
        raise AssertionError(f"one stalled answer failed the mount after {time.monotonic() - t0:.1f} s "
                             f"instead of being retried: {ex.text[-1500:]}") from None
    compare(fm, ref(local(M, "base", "res")))
    assert fm.mount_s < 16, f"the mount waited for the server's stall to end ({fm.mount_s:.1f} s)"
    emu.wait_idle(30)   # the stalled answer is logged when its handler gives up
    hits = [r for r in emu.requests("cdn") if r["path"] == blob]
    assert any(r["sent"] < r_len(r) for r in hits), describe(hits)


def test_small_memory_one_connection(M, emu, ref, fg, tmp_path):
    """--remote-memory at its least and one connection, no disk cache: every way of
    reading still gives the local mount's bytes (blocks are evicted and fetched again)."""
    want = ref(local(M, "base", "res"))
    fm = fg("--remote-memory", MIN_MEMORY, "--remote-connections", "1", "--remote-cache-size", "0",
            "--cache-size", "0", "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    compare(fm, want, thorough=True)
    H.concurrent_preads(fm.path(SHARD2), want[SHARD2], nthreads=4, per_thread=10)


def test_daemon_mount(M, emu, ref, tmp_path, binary):
    """A daemonized mount (no -f: residfs forks once the plan is built, with the remote
    engine's threads started) reads remote bytes after the fork: small remote memory,
    no caches, so that most reads go to the network from the daemon."""
    need_fuse()
    want = ref(local(M, "base", "res"))
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    _ALL_MOUNTS.append(mp)
    env = make_env(str(tmp_path), emu)
    r = rfs(["mount", "--remote-memory", MIN_MEMORY, "--cache-size", "0", "--remote-cache-size", "0",
             "--remote-timeout", "20", "hf://org/base+hf://org/res", mp], env, timeout=60)
    assert r.returncode == 0 and H.is_mounted(mp), r
    try:
        emu.clear_log()
        box = {}

        def rd():
            box["got"] = read_all(mp)

        t = threading.Thread(target=rd, daemon=True)
        t.start()
        t.join(HANG)
        assert not t.is_alive(), "reading the daemonized mount hangs"
        got = box["got"]
        assert sorted(got) == sorted(want)
        for fn in want:
            if fn != "README.md":
                H.assert_same(got[fn], want[fn], fn)
        assert emu.requests("cdn"), "the daemon read nothing from the network (the test means nothing)"
    finally:
        assert H.unmount(mp), f"cannot unmount {mp}"


def test_cdn_md5_etag(M, emu, ref, fg, tmp_path):
    """A CDN whose ETag is the md5 of the content (S3 behind CloudFront), not the
    sha256: reads work."""
    emu.cdn_etag = "md5"
    try:
        fm = fg("--remote-cache-size", "0", "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
        compare(fm, ref(local(M, "base", "res")))
    finally:
        emu.cdn_etag = "sha256"


def test_new_commit_does_not_move_mount(M, emu, ref, fg, tmp_path):
    """main moves to a new commit while mounted: the mount keeps reading the commit it
    resolved (CDN URLs expire, blocks are evicted and fetched again: same old bytes);
    a new mount shows the new commit."""
    emu.add_repo_dir("org/moving", M.res.path)
    emu.cdn_ttl = 2
    env = make_env(str(tmp_path), emu)
    opts = ("--remote-memory", MIN_MEMORY, "--cache-size", "0", "--remote-cache-size", "0")
    fm = fg(*opts, "hf://org/base+hf://org/moving", env=env)
    emu.add_repo_dir("org/moving", M.res2.path)   # a new commit on main
    time.sleep(2.5)
    emu.clear_log()
    compare(fm, ref(local(M, "base", "res")))
    assert any(r["status"] == 403 for r in emu.requests("cdn")), \
        "no read went to the network after the commit moved (the test means nothing)"
    fm2 = fg(*opts, "hf://org/base+hf://org/moving", env=env)
    compare(fm2, ref(local(M, "base", "res2")))


def test_disk_cache_corrupt_block(M, emu, ref, fg, tmp_path):
    """A block file of the disk cache damaged between two mounts: the second mount
    fetches that block again and every byte is right."""
    want = ref(local(M, "base", "res"))
    env = make_env(str(tmp_path), emu)
    blocks = tmp_path / "blocks"
    opts = ("--remote-cache-dir", str(blocks))
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    read_everything(fm)
    assert fm.stop()
    files = sorted((p for p in blocks.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    assert files, "nothing in the disk cache"
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    files[0].write_bytes(bytes(raw))
    emu.clear_log()
    fm = fg(*opts, "hf://org/base+hf://org/res", env=env)
    got = read_everything(fm)
    for fn in want:
        if fn != "README.md":
            H.assert_same(got[fn], want[fn], fn)
    assert emu.requests("cdn"), "the damaged block was served from disk"


def test_fault_size_change_sticky(M, emu, ref, fg, tmp_path):
    """An answer whose Content-Range gives another total size: the file changed on the
    server.  The mount fails naming it, or its reads fail with EIO; never other bytes."""
    want = ref(local(M, "base", "res"))
    blob = cdn_path(emu, "org/res", "model.safetensors")
    emu.add_fault("wrong_range", match=blob, server="cdn", shift=0, count=1)
    try:
        fm = fg("--remote-cache-size", "0", "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    except MountFailed as ex:
        assert "org/res" in ex.text and "model.safetensors" in ex.text, ex.text
        return
    failed = 0
    for fn in sorted(os.listdir(fm.mp)):
        try:
            data = guarded(fm, fn, lambda: H.read_file(fm.path(fn)))
        except OSError as ex:
            assert ex.errno == errno.EIO, ex
            failed += 1
            continue
        if fn != "README.md":
            H.assert_same(data, want[fn], fn)
    assert failed, "the size change went unnoticed"


def test_fault_hub_api_retried(M, emu, ref, fg, tmp_path):
    """The revision API answering 503 (Retry-After 1) then 500: retried, then fine."""
    emu.add_fault("status", match="/api/models/org/res", server="hub", code=503, retry_after=1)
    emu.add_fault("status", match="/api/models/org/res", server="hub", code=500)
    fm = fg("hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    compare(fm, ref(local(M, "base", "res")))


def test_fault_persistent_503_fails_cleanly(M, emu, fg, tmp_path):
    """Every CDN answer a 503: the mount (which reads the headers) fails within the
    deadline with an error naming the file, or a read fails with EIO; never a hang."""
    blob = cdn_path(emu, "org/res", "model.safetensors")
    emu.add_fault("status", match=blob, server="cdn", code=503, count=1000)
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    t0 = time.monotonic()
    r = rfs(["mount", "--remote-timeout", "4", "--remote-cache-size", "0", "hf://org/base+hf://org/res", mp],
            make_env(str(tmp_path), emu), timeout=90)
    took = time.monotonic() - t0
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "residfs: error:" in r.stderr and "org/res" in r.stderr, r
    assert took < 4 + 15, f"the failure took {took:.1f} s with --remote-timeout 4"


def expect_eio(fm, path, off, length, deadline_s, what):
    """Opening @path or a pread of it fails with EIO within @deadline_s (a failed
    source fails the open of the files made from it, as for local sources); returns
    the time it took."""
    def rd():
        t0 = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as ex:
            return ex, time.monotonic() - t0
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            try:
                data = os.pread(fd, length, off)
            except OSError as ex:
                return ex, time.monotonic() - t0
            return data, time.monotonic() - t0
        finally:
            os.close(fd)

    got, took = guarded(fm, what, rd, timeout=deadline_s + 60)
    assert isinstance(got, OSError), f"{what}: the read returned {len(got)} bytes instead of failing"
    assert got.errno == errno.EIO, f"{what}: {got!r}, expected EIO"
    assert took <= deadline_s, f"{what}: EIO came after {took:.1f} s (at most {deadline_s} s)"
    return took


def test_fault_stall_deadline(big, emu, fg, tmp_path):
    """A body that stalls on every attempt: with --remote-timeout 6 the read fails with
    EIO within the deadline and a few seconds; the mount lives on, and once the server
    answers again the same read gives the right bytes."""
    fm = fg(*LAZY_OPTS, "--remote-timeout", "6", "hf://org/bigbase+hf://org/bigres",
            env=make_env(str(tmp_path), emu))
    emu.add_fault("stall", match=cdn_path(emu, "org/bigres", "model.safetensors"), server="cdn",
                  seconds=12, count=1000)
    lo, hi = big.base_range
    expect_eio(fm, fm.path(SHARD1), lo, hi - lo, 6 + 5, "a read of a stalled range")
    assert fm.alive(), "the daemon died"
    emu.clear_faults()
    # a failed range answers at once for a second (docs/remote.md: the kernel
    # retries a failed read right away); a read after that asks the server again
    time.sleep(1.5)

    def again():
        with open(fm.path(SHARD1), "rb") as f:
            return os.pread(f.fileno(), hi - lo, lo)

    data = guarded(fm, "the read again", again)
    H.assert_same(data, big.expected, f"{TARGET} after the stall")
    assert "bigres" in fm.log() and "model.safetensors" in fm.log(), \
        f"the daemon did not log the failure naming the file: {fm.log()[-2000:]}"


def test_fault_cdn_url_expires(M, emu, ref, fg, tmp_path):
    """Signed CDN URLs valid for 2 s: reads after they expired resolve again and
    give the right bytes."""
    emu.cdn_ttl = 2
    fm = fg("--remote-cache-size", "0", "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    time.sleep(2.5)
    emu.clear_log()
    compare(fm, ref(local(M, "base", "res")))
    cdn = emu.requests("cdn")
    assert cdn, "nothing was read from the CDN after the mount (the test means nothing)"
    assert any(r["status"] == 403 for r in cdn), f"no expired URL was used:\n{describe(cdn)}"
    again = [r for r in emu.requests("hub") if "/resolve/" in r["path"] and r["path"].endswith(".safetensors")]
    assert again, f"the expired URLs were not resolved again:\n{describe(emu.requests())}"


def test_fault_replaced_under_mount(big, emu, fg, tmp_path):
    """The Hub serves other bytes (same size) for a file of the mounted commit: the next
    uncached read fails with EIO, never the new bytes, and keeps failing."""
    emu.add_repo_dir("org/victim", big.res.path)
    emu.cdn_ttl = 2
    fm = fg(*LAZY_OPTS, "hf://org/bigbase+hf://org/victim", env=make_env(str(tmp_path), emu))
    raw = bytearray(H.read_file(os.path.join(big.res.path, "model.safetensors")))
    lo, hi = big.res_range
    raw[lo:lo + 64] = bytes(x ^ 0x01 for x in raw[lo:lo + 64])
    emu.replace_file("org/victim", "model.safetensors", bytes(raw))
    time.sleep(2.5)   # the CDN URL the mount holds has expired: the next read asks the Hub
    blo, bhi = big.base_range
    expect_eio(fm, fm.path(SHARD1), blo, bhi - blo, 30, "a read after the content changed")
    expect_eio(fm, fm.path(SHARD1), blo, 4096, 30, "a second read after the content changed")
    assert fm.alive()
    assert "victim" in fm.log(), fm.log()[-2000:]


def test_fault_web_file_rewritten(big, fg, tmp_path):
    """A web directory's file rewritten on disk under nginx (its ETag changes): the
    next uncached read fails with EIO, never the new bytes."""
    root = str(tmp_path / "www")
    for d in ("base", "res"):
        os.makedirs(os.path.join(root, d))
        for fn in os.listdir(os.path.join(big.root, d)):
            os.link(os.path.join(big.root, d, fn), os.path.join(root, d, fn))
    with Nginx(root) as web:
        fm = fg(*LAZY_OPTS, f"{web.url}base/+{web.url}res/", env=make_env(str(tmp_path), None))
        p = os.path.join(root, "res", "model.safetensors")
        raw = bytearray(H.read_file(p))
        lo, hi = big.res_range
        raw[lo:lo + 64] = bytes(x ^ 0x01 for x in raw[lo:lo + 64])
        H.write_file(p + ".new", bytes(raw))
        st = os.stat(p)
        os.utime(p + ".new", ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
        os.rename(p + ".new", p)   # a new inode: the hard-linked original stays as it was
        blo, bhi = big.base_range
        expect_eio(fm, fm.path(SHARD1), blo, bhi - blo, 30, "a read after the web file changed")
        assert fm.alive()
        statuses = [r["status"] for r in web.requests() if r["uri"].endswith("res/model.safetensors")]
        assert 412 in statuses, f"no If-Match refused by nginx: {statuses}"


@pytest.mark.parametrize("how", ["unmount", "SIGTERM"])
def test_stop_during_stalled_prefetch(emu, big, fg, tmp_path, how):
    """Unmounting (or stopping the daemon) while prefetches are stalled on the CDN (and
    the kernel's readahead waits on them) ends the daemon at once, quietly: its waits and fetches are cancelled,
    not left to the stall limit and retried until their one-minute deadline."""
    fm = fg(*LAZY_OPTS, "hf://org/bigbase+hf://org/bigres", env=make_env(str(tmp_path), emu))
    with open(fm.path(SHARD1), "rb", buffering=0) as f:
        guarded(fm, "reading the first MiBs", lambda: [f.read(MiB) for _ in range(3)])
        emu.wait_idle(20)
        emu.add_fault("stall", server="cdn", count=1000, seconds=8)
        # served from what the stream fetched ahead; moving on sends the next window
        guarded(fm, "reading prefetched MiBs", lambda: [f.read(MiB) for _ in range(11)])
    time.sleep(0.5)
    assert not emu.wait_idle(0.1), "no prefetch in flight: the test means nothing"
    t0 = time.monotonic()
    if how == "SIGTERM":   # systemctl stop
        fm.proc.send_signal(signal.SIGTERM)
        try:
            fm.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    assert fm.stop(), f"could not unmount: {fm.log()[-2000:]}"
    took = time.monotonic() - t0
    emu.clear_faults()
    assert took < 5, f"unmounting took {took:.1f} s with stalled prefetches: {fm.log()[-2000:]}"
    assert "error" not in fm.log(), fm.log()[-2000:]


# ---- 4. auth ----------------------------------------------------------------------------

def test_gated_needs_token(M, emu, tmp_path):
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    r = rfs(["mount", "hf://org/gated+hf://org/res", mp], make_env(str(tmp_path), emu), timeout=90)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "residfs: error:" in r.stderr and "org/gated" in r.stderr and "HF_TOKEN" in r.stderr, r
    r = rfs(["mount", "hf://org/base+hf://org/private", mp], make_env(str(tmp_path), emu), timeout=90)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "org/private" in r.stderr and "HF_TOKEN" in r.stderr, r


def check_token_use(emu, token):
    reqs = emu.requests()
    assert reqs
    for r in reqs:
        if r["server"] == "cdn":
            assert r["auth"] is None, f"the token went to the CDN: {r}"
        else:
            assert r["auth"] == f"Bearer {token}", f"a Hub request without the token: {r}"


@pytest.mark.parametrize("how", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "token-file", "HF_TOKEN_PATH"])
def test_token(M, emu, ref, fg, tmp_path, how):
    """A gated base and a private residuals repository with the token: the same bytes;
    the token goes to the Hub only (the CDN answers 400 to a request with one), never
    into residfs's output."""
    tok = emu.token
    over = {}
    if how in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        over[how] = tok
    elif how == "token-file":
        os.makedirs(tmp_path / "hfhome", exist_ok=True)
        H.write_file(str(tmp_path / "hfhome" / "token"), tok + "\n", mode=0o600)
    else:
        H.write_file(str(tmp_path / "tok"), "  " + tok + "\n", mode=0o600)
        over["HF_TOKEN_PATH"] = str(tmp_path / "tok")
    emu.cdn_reject_auth = True
    env = make_env(str(tmp_path), emu, **over)
    fm = fg("hf://org/gated+hf://org/private", env=env)
    compare(fm, ref(local(M, "base", "res")))
    card = H.read_file(fm.path("README.md")).decode()
    check_card(card, "hf://org/gated", emu.commits["gated"])
    assert tok not in card
    r = rfs(["inspect", "hf://org/gated+hf://org/private", "--json"], env)
    assert r.returncode == 0, r
    assert tok not in r.stdout and tok not in r.stderr
    check_token_use(emu, tok)
    assert fm.stop()
    assert tok not in fm.log(), "the token is in the mount's output"
    # nor in an error
    mp = str(tmp_path / "mnt-refused")
    os.makedirs(mp)
    r = rfs(["mount", "hf://org/gated@nope+hf://org/private", mp], env, timeout=60)
    assert r.returncode != 0 and "org/gated" in r.stderr, r
    assert tok not in r.stderr and tok not in r.stdout


def test_wrong_token(M, emu, tmp_path):
    """A token the Hub refuses: a clean error that does not print it."""
    bad = "hf_notTheRightTokenAtAll0123"
    mp = str(tmp_path / "mnt")
    os.makedirs(mp)
    r = rfs(["mount", "hf://org/base+hf://org/res", mp], make_env(str(tmp_path), emu, HF_TOKEN=bad),
            timeout=90)
    assert r.returncode != 0 and not H.is_mounted(mp), r
    assert "residfs: error:" in r.stderr and "org/base" in r.stderr, r
    assert bad not in r.stderr and bad not in r.stdout


# ---- 5. bad input at mount ----------------------------------------------------------------

def refused(env, spec, *names, tmp, timeout=90, max_s=None, cwd=None):
    mp = os.path.join(tmp, "mnt-refused")
    os.makedirs(mp, exist_ok=True)
    t0 = time.monotonic()
    r = rfs(["mount", spec, mp], env, timeout=timeout, cwd=cwd)
    took = time.monotonic() - t0
    assert not H.is_mounted(mp), f"a refused mount left {mp} mounted: {r}"
    assert r.returncode != 0, f"mount was expected to fail: {r}"
    assert "residfs: error:" in r.stderr, r
    for n in names:
        assert n in r.stderr, f"the error does not name {n!r}: {r}"
    assert os.listdir(mp) == []
    if max_s is not None:
        assert took < max_s, f"the refusal took {took:.1f} s: {r}"
    return r


def test_unknown_repo_and_revision(emu, tmp_path):
    env = make_env(str(tmp_path), emu)
    t = str(tmp_path)
    refused(env, "hf://org/nope+hf://org/res", "org/nope", tmp=t, max_s=20)
    refused(env, "hf://org/base@nope+hf://org/res", "org/base", "nope", tmp=t, max_s=20)
    refused(env, "hf://org/base@" + "0" * 40 + "+hf://org/res", "org/base", "0" * 40, tmp=t, max_s=20)


def test_malformed_api_answer(emu, tmp_path):
    emu.add_fault("bad_json", match="/api/models/org/base", server="hub", count=10)
    refused(make_env(str(tmp_path), emu), "hf://org/base+hf://org/res", "org/base",
            tmp=str(tmp_path), max_s=30)


def test_no_network(tmp_path):
    """HF_ENDPOINT on a closed port: refused, naming the term, in bounded time."""
    env = make_env(str(tmp_path), None, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    refused(env, "hf://org/base+hf://org/res", "org/base", tmp=str(tmp_path), max_s=40)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    r = refused(env, f"http://127.0.0.1:{free_port()}/base/+hf://org/res", tmp=str(tmp_path), max_s=40)
    assert "127.0.0.1" in r.stderr, r


def test_web_directory_refused(M, web_http, tmp_path):
    """A web directory without config.json, and a web server that ignores Range
    (Python's http.server): refused at mount, naming the URL."""
    env = make_env(str(tmp_path), None)
    r = refused(env, f"{web_http.url}nothing/+{web_http.url}res/", f"{web_http.url}nothing/",
                tmp=str(tmp_path), max_s=30)
    assert "config.json" in r.stderr, r
    import http.server

    class NoRanges(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=M.root, **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoRanges)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/"
        r = refused(env, f"{url}base/+{url}res/", f"{url}base/", tmp=str(tmp_path), max_s=30)
        assert "Range" in r.stderr or "range" in r.stderr, r
    finally:
        srv.shutdown()
        srv.server_close()


def test_corrupt_header(M, emu, tmp_path):
    """A shard whose header length points past its end: refused, naming the file."""
    refused(make_env(str(tmp_path), emu), "hf://org/corrupt+hf://org/res", "org/corrupt", SHARD1,
            tmp=str(tmp_path), max_s=30)


def test_split_with_dashes(M, emu, ref, fg, tmp_path):
    """hf://org/x-y-hf://org/z (repos org/x-y and org/z exist, org/x too) reads as
    org/x-y minus org/z: compute mode."""
    fm = fg("hf://org/x-y-hf://org/z", env=make_env(str(tmp_path), emu))
    want = ref(local(M, "ins", "base", sep="-"))
    compare(fm, want, skip=("README.md", "config.json"))
    check_card(H.read_file(fm.path("README.md")).decode(), "hf://org/x-y", "hf://org/z")


def test_ambiguous_bare_spec(emu, tmp_path):
    """org/x-y-org/z with repos org/x, y-org/z, org/x-y and org/z: two readings
    (org/x - y-org/z and org/x-y - org/z), refused with both."""
    r = refused(make_env(str(tmp_path), emu), "org/x-y-org/z", "ambiguous", tmp=str(tmp_path),
                max_s=30, cwd=str(tmp_path))
    assert "y-org/z" in r.stderr and "org/x-y" in r.stderr, r


# ---- 7. residfs stats and the log of a remote mount ------------------------------------

def test_stats_per_source(M, emu, ref, fg, tmp_path):
    """residfs stats: the remote counters in all and per term (named as the SPEC
    and messages name it), which add up; the table names each term."""
    want = ref(local(M, "base", "res"))
    fm = fg("--remote-cache-size", "0", "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    compare(fm, want)
    r = H.run(["stats", fm.mp, "--json"])
    assert r.returncode == 0, r
    rem = json.loads(r.stdout)["remote"]
    names = [s["source"] for s in rem["sources"]]
    assert names == ["hf://org/base@main", "hf://org/res@main"], names
    for k in ("requests", "bytes", "misses", "retries", "errors", "disk_hits", "memory_hits"):
        assert rem[k] == sum(s[k] for s in rem["sources"]), (k, rem)
    assert all(s["requests"] > 0 and s["bytes"] > 0 for s in rem["sources"]), rem
    assert rem["errors"] == 0 and rem["memory_peak"] > 0, rem
    # what the servers sent for ranges is what the counters say was fetched
    emu.wait_idle(10)
    sent = sum(r["sent"] for r in emu.requests() if r["status"] == 206)
    assert rem["bytes"] == sent, (rem["bytes"], sent, describe(emu.requests()))
    table = H.run(["stats", fm.mp]).stdout
    assert all(n in table for n in names) and "remote" in table, table


def test_read_error_logged_once_per_range(M, emu, fg, tmp_path):
    """A range the CDN keeps failing: each read gets EIO, the log file has one line
    for that file and block with the cause (not one per attempt, per read or per
    retry of the kernel), the stats count the errors; another failing block gets
    its own line."""
    blob = cdn_path(emu, "org/res", "model.safetensors")
    log = tmp_path / "remote.log"
    fm = fg("--remote-cache-size", "0", "--remote-timeout", "2", "--log-file", str(log),
            "hf://org/base+hf://org/res", env=make_env(str(tmp_path), emu))
    emu.add_fault("status", match=blob, server="cdn", code=500, count=10 ** 6)
    try:
        size = os.path.getsize(fm.path(SHARD1))
        fd = os.open(fm.path(SHARD1), os.O_RDONLY)
        try:
            for off in (size - 4096, size - 4096, size - 4096, size // 2):
                with pytest.raises(OSError) as e:
                    os.pread(fd, 4096, off)
                assert e.value.errno == errno.EIO, e.value
        finally:
            os.close(fd)
    finally:
        emu.clear_faults()
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if " error: reading " + SHARD1 in ln]
    assert len(lines) == 2, text
    assert all("bytes " in ln and "500" in ln for ln in lines), text
    assert len({ln.split("error: ")[1] for ln in lines}) == 2, text
    js = json.loads(H.run(["stats", fm.mp, "--json"]).stdout)
    assert js["errors"] >= 4 and js["remote"]["errors"] >= 1, js
