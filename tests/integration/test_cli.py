"""The command line: long flags, odd directory names, ambiguous SPECs, export."""
import json
import os
import re
import shutil

import numpy as np
import pytest

import rfshelp as H
from conftest import _llama, export


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small bf16 model and two residuals, in directories with '-' and '+' in their names."""
    root = str(tmp_path_factory.mktemp("names"))
    rng = np.random.default_rng(51)
    V, Hd, I, L, KV = 128, 32, 64, 1, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(root, "Meta-Llama-x+y"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                         nshards=2)
    d1 = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    d2 = {n: H.T.from_f32("BF16", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    r1 = H.write_residuals(os.path.join(root, "res-1+2-it"), d1, vocab=V)
    r2 = H.write_residuals(os.path.join(root, "delta+v2"), d2, vocab=V, tokenizer=False)
    return root, base, r1, r2


def test_long_flags_equal_spec(mounter, small, tmp_path):
    root, base, r1, r2 = small
    spec = [f"{base.path}+0.3*{r1.path}-{r2.path}"]
    flags = ["--base", base.path, "--delta", r1.path, "--scale", "0.3", "--delta", r2.path, "--scale", "-1"]
    mp = mounter.mount(*flags)
    exp = H.expected_apply(base, [(r1, 0.3), (r2, -1.0)])
    H.verify_dir(mp, exp, seed=51)
    a = export(spec, os.path.join(str(tmp_path), "spec"))
    b = export(flags, os.path.join(str(tmp_path), "flags"))
    H.compare_dirs(a, b)
    H.compare_dirs(mp, b)


def test_plus_and_hyphen_names(mounter, small, tmp_path):
    root, base, r1, r2 = small
    exp = H.expected_apply(base, [(r1, 1.0), (r2, 0.5)])
    # absolute
    mp = mounter.mount(f"{base.path}+{r1.path}+0.5*{r2.path}")
    H.verify_dir(mp, exp, seed=52)
    # relative, from the directory that holds them
    mp2 = mounter.mount("Meta-Llama-x+y+res-1+2-it+0.5*delta+v2", cwd=root)
    H.compare_dirs(mp, mp2, skip=("README.md",))
    fm = H.front_matter(H.read_file(os.path.join(mp2, "README.md")).decode())
    assert "base_model_relation: merge" in fm
    # negation with hyphens everywhere
    mp3 = mounter.mount("Meta-Llama-x+y-res-1+2-it", cwd=root)
    H.verify_dir(mp3, H.expected_apply(base, [(r1, -1.0)]), seed=53, reads=False)


def test_ambiguous_spec(refuser, small, tmp_path):
    """'a+b+c' where a, a+b (models) and b+c, c (residuals) all exist: two readings."""
    root, base, r1, r2 = small
    w = str(tmp_path)
    for name, src in (("a", base.path), ("a+b", base.path), ("b+c", r1.path), ("c", r1.path)):
        shutil.copytree(src, os.path.join(w, name))
    r = refuser.refuse("a+b+c", rc=2, cwd=w)
    msg = r.stderr
    assert "ambiguous" in msg.lower(), msg
    # both readings are shown (beyond the SPEC itself): a + (b+c) and (a+b) + c
    rest = msg.replace("a+b+c", "")
    for part in ("b+c", "a+b"):
        assert part in rest, f"the readings are not listed: {msg}"
    assert "--base" in msg and "--delta" in msg, f"the flag form is not shown: {msg}"
    # the same through export and inspect
    for cmd in (["inspect", "a+b+c"], ["export", "a+b+c", os.path.join(w, "out")]):
        r = H.run(cmd, cwd=w)
        assert r.returncode == 2 and "ambiguous" in r.stderr.lower(), r
    assert not os.path.exists(os.path.join(w, "out")) or os.listdir(os.path.join(w, "out")) == []
    # the long flags say what is meant
    out = export(["--base", "a+b", "--delta", "c"], os.path.join(w, "out2"), cwd=w)
    assert "config.json" in os.listdir(out)


def test_export_refuses_non_empty_outdir(small, tmp_path):
    root, base, r1, _ = small
    spec = f"{base.path}+{r1.path}"
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)
    H.write_file(os.path.join(out, "keep.txt"), "mine\n")
    H.write_file(os.path.join(out, "config.json"), "stale\n")
    r = H.run(["export", spec, out, "--quiet"])
    assert r.returncode != 0, r
    assert "residfs: error:" in r.stderr and out in r.stderr and "--force" in r.stderr, r
    assert sorted(os.listdir(out)) == ["config.json", "keep.txt"], os.listdir(out)
    assert H.read_file(os.path.join(out, "config.json")) == b"stale\n"
    export([spec], out, force=True)
    ref = export([spec], os.path.join(str(tmp_path), "fresh"))
    names = sorted(os.listdir(ref))
    assert sorted(os.listdir(out)) == sorted(names + ["keep.txt"]), os.listdir(out)
    for fn in names:
        assert H.read_file(os.path.join(out, fn)) == H.read_file(os.path.join(ref, fn)), fn
    assert H.read_file(os.path.join(out, "keep.txt")) == b"mine\n"


def test_export_without_mount(small, tmp_path):
    """export works without FUSE and leaves only the final files."""
    root, base, r1, r2 = small
    out = export([f"{base.path}+{r1.path}"], os.path.join(str(tmp_path), "x"))
    exp = H.expected_apply(base, [(r1, 1.0)])
    assert not [f for f in os.listdir(out) if f.startswith(".") or "tmp" in f], os.listdir(out)
    H.verify_dir(out, exp, reads=False)


def test_inspect_json(small):
    root, base, r1, r2 = small
    r = H.run(["inspect", f"{base.path}+{r1.path}", "--json"])
    assert r.returncode == 0, r
    info = json.loads(r.stdout)
    assert info["mode"] == "apply"
    assert {t["name"] for t in info["tensors"]} == set(base.tensors)
    for t in info["tensors"]:
        assert t["sources"] == [0, 1] and t["how"] == "merged", t
    exp = H.expected_apply(base, [(r1, 1.0)])
    sizes = {f["name"]: f["size"] for f in info["files"]}
    for fn, items in exp.st.items():
        hlen = len(exp.st_header[fn])
        assert sizes[fn] == 8 + hlen + sum(t.nbytes for _, t in items), fn


def test_relative_mountpoint_and_export_threads(mounter, small, tmp_path):
    root, base, r1, r2 = small
    w = str(tmp_path)
    os.makedirs(os.path.join(w, "rel-mnt"))
    spec = f"{base.path}+{r1.path}"
    r = H.run(["mount", spec, "rel-mnt"], cwd=w)
    mp = os.path.join(w, "rel-mnt")
    mounter.mps.append(mp)  # unmounted in teardown whatever happens
    assert r.returncode == 0, r
    assert H.is_mounted(mp), r
    H.verify_dir(mp, H.expected_apply(base, [(r1, 1.0)]), reads=False)
    for t in ("1", "3"):
        out = os.path.join(w, f"t{t}")
        r = H.run(["export", spec, out, "--quiet", "--threads", t])
        assert r.returncode == 0, r
        H.compare_dirs(mp, out)


def test_export_failure_leaves_nothing_partial(small, tmp_path):
    """An export that fails while writing (here: a file size limit, EFBIG)
    exits non-zero naming the file, and leaves neither a final file nor a
    temporary one behind."""
    import resource
    import signal
    import subprocess
    root, base, r1, r2 = small
    out = os.path.join(str(tmp_path), "x")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    p = subprocess.run([H.residfs_bin(), "export", f"{base.path}+{r1.path}", out, "--quiet"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, preexec_fn=limit,
                       timeout=120)
    assert p.returncode != 0, p
    assert "residfs: error:" in p.stderr and ".safetensors" in p.stderr, p.stderr
    assert os.listdir(out) == [], f"a failed export left {os.listdir(out)}"


def test_export_large_files(tmp_path):
    """Files larger than an export block (8 MiB), with a tail that is not a
    multiple of 4 KiB: the bulk is written with O_DIRECT, the tail buffered;
    every byte must equal the reference."""
    rng = np.random.default_rng(99)
    V, Hd, I, L, KV = 8200, 512, 1024, 1, 256  # two 8.4 MB embeddings in one file
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(str(tmp_path), "base"), bt,
                         H.llama_config(V, Hd, I, L, KV, False, "BF16"), nshards=1)
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    r = H.write_residuals(os.path.join(str(tmp_path), "res"), d, vocab=V)
    out = export([f"{base.path}+{r.path}"], os.path.join(str(tmp_path), "x"))
    exp = H.expected_apply(base, [(r, 1.0)])
    sizes = [os.path.getsize(os.path.join(out, f)) for f in exp.st]
    assert max(sizes) > 16 << 20 and any(s % 4096 for s in sizes), sizes
    H.verify_dir(out, exp, reads=False)


def test_help_matches_docs():
    """Every option of `residfs --help` is documented in docs/cli.md and every option
    documented there is in --help (but --help and --version themselves)."""
    import re
    r = H.run(["--help"])
    assert r.returncode == 0, r
    opt = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
    with open(os.path.join(H.REPO, "docs", "cli.md")) as f:
        doc = f.read()
    in_help, in_doc = set(opt.findall(r.stdout)), set(opt.findall(doc))
    assert in_help - in_doc == set(), f"in --help but not in docs/cli.md: {sorted(in_help - in_doc)}"
    assert in_doc - in_help - {"--help", "--version"} == set(), \
        f"in docs/cli.md but not in --help: {sorted(in_doc - in_help)}"
    env = re.compile(r"RESIDFS_[A-Z_]+")
    assert set(env.findall(r.stdout)) <= set(env.findall(doc))


# ---- options: accumulated, refused when out of range ----------------------------------------

def _mountinfo(mp):
    """(source, super options) of the mount at mp, from /proc/self/mountinfo."""
    real = os.path.realpath(mp)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), pre.split()[4]) == real:
                fstype, source, sopts = post.split(" ", 2)
                return source, sopts.split(",")
    return None


def test_repeated_o_options_add_up(mounter, small):
    """-o A -o B passes both, as mount(8) does (allow_other was dropped before)."""
    root, base, r1, _ = small
    mp = mounter.mount(f"{base.path}+{r1.path}", "-o", "allow_other", "-o", "fsname=rfs-two-o")
    source, sopts = _mountinfo(mp)
    assert source == "rfs-two-o", (source, sopts)
    assert "allow_other" in sopts, sopts
    mp2 = mounter.mount(f"{base.path}+{r1.path}", "-o", "fsname=rfs-one-o,allow_other")
    assert _mountinfo(mp2) == ("rfs-one-o", sopts), _mountinfo(mp2)


BAD_NUMBERS = [
    ("--cache-size", v) for v in ("nan", "inf", "-1", "1e15", "1e3", "0x10", "", " 1", "0.5", "1.1K",
                                   "12Q", "4iB", "99999999T", "1.K", "+5")
] + [
    ("--readahead-kb", v) for v in ("-1", "1.5", "", "4k", " 5", "+5", "1048577", "99999999999999999999")
] + [
    ("--threads", v) for v in ("0", "65", "-1", "x", "1e3", "", "4294967297")
]


def _cmd_of(opt, root):
    """A command line the option belongs to that fails after parsing (a missing
    mountpoint or OUTDIR parent): exit status 1, not 2, when the value is taken."""
    missing = "/proc/residfs-no-such/dir"  # nothing can be made there
    return ["export", "SPEC", missing] if opt == "--threads" else ["mount", "SPEC", missing]


@pytest.mark.parametrize("opt,value", BAD_NUMBERS)
def test_numeric_options_refused(small, opt, value):
    root, base, r1, _ = small
    args = [a if a != "SPEC" else f"{base.path}+{r1.path}" for a in _cmd_of(opt, root)]
    r = H.run([*args, opt, value])
    assert r.returncode == 2, r
    assert "residfs: error:" in r.stderr and opt in r.stderr and f"'{value}'" in r.stderr, r


@pytest.mark.parametrize("opt,value", [("--cache-size", v) for v in ("0", "512M", "1.5G", "4KiB", "1048576", "2MB")]
                         + [("--readahead-kb", v) for v in ("0", "4096", "1048576")]
                         + [("--threads", v) for v in ("1", "64")])
def test_numeric_options_accepted(small, opt, value):
    root, base, r1, _ = small
    args = [a if a != "SPEC" else f"{base.path}+{r1.path}" for a in _cmd_of(opt, root)]
    r = H.run([*args, opt, value])
    assert r.returncode == 1 and "residfs-no-such" in r.stderr, r


def test_options_of_other_commands_are_refused(small):
    """An option that means nothing to the command is a usage error that names both."""
    root, base, r1, _ = small
    spec = f"{base.path}+{r1.path}"
    for args, opt in ((["inspect", spec, "--force"], "--force"), (["inspect", spec, "--cache-size", "1G"], "--cache-size"),
                      (["export", spec, root + "/x", "--interval", "5"], "--interval"),
                      (["stats", root, "--threads", "2"], "--threads"), (["demo", "--json"], "--json"),
                      (["prefetch", spec, "--config", "x.yml"], "--config")):
        r = H.run(args)
        assert r.returncode == 2 and f"{opt} does not apply to {args[0]}" in r.stderr, r


def test_cache_size_above_memory_is_refused(small):
    root, base, r1, _ = small
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGESIZE")
    over = str(mem // 1024 + 1) + "K"
    r = H.run(["mount", f"{base.path}+{r1.path}", root, "--cache-size", over])
    assert r.returncode == 2 and "memory" in r.stderr and over in r.stderr, r


@pytest.mark.parametrize("scale", ["1e39", "-1e39", "3.5e38", "1e-46", "1e-40", "-1e-39", "1e-999", "nan", "inf"])
def test_scales_that_float32_cannot_hold_are_refused(small, scale):
    """Both forms: --scale S and BASE+S*DELTA; the message names the scale."""
    root, base, r1, _ = small
    r = H.run(["inspect", "--base", base.path, "--delta", r1.path, "--scale", scale])
    assert r.returncode == 2, r
    assert "--scale" in r.stderr and f"'{scale}'" in r.stderr, r
    if scale[0] == "-" or scale in ("nan", "inf"):
        return
    r = H.run(["inspect", f"{base.path}+{scale}*{r1.path}"])
    assert r.returncode == 2, r
    assert f"'{scale}'" in r.stderr and "float32" in r.stderr, r


def test_scale_zero_adds_nothing(small, tmp_path):
    """0 is a scale like any other: the delta's values add nothing (float32 x + 0*d)."""
    root, base, r1, _ = small
    exp = H.expected_apply(base, [(r1, 0.0)])
    out = export([f"{base.path}+0*{r1.path}"], os.path.join(str(tmp_path), "spec"))
    H.verify_dir(out, exp, reads=False)
    out2 = export(["--base", base.path, "--delta", r1.path, "--scale", "0"], os.path.join(str(tmp_path), "flags"))
    H.compare_dirs(out, out2)


# ---- the mountpoint -------------------------------------------------------------------------

def test_mountpoint_must_be_an_existing_directory(small, tmp_path):
    root, base, r1, _ = small
    spec = f"{base.path}+{r1.path}"
    f = os.path.join(str(tmp_path), "file")
    H.write_file(f, "not a directory\n")
    r = H.run(["mount", spec, f])
    assert r.returncode == 1, r
    assert "residfs: error:" in r.stderr and f in r.stderr and "regular file, not a directory" in r.stderr, r
    assert "Invalid argument" not in r.stderr, r
    missing = os.path.join(str(tmp_path), "no-such-dir")
    r = H.run(["mount", spec, missing])
    assert r.returncode == 1, r
    assert missing in r.stderr and "does not exist" in r.stderr, r
    assert not H.is_mounted(f) and not os.path.exists(missing)
    assert H.read_file(f) == b"not a directory\n"


# ---- many shards ----------------------------------------------------------------------------

def test_many_shards_under_a_low_soft_fd_limit(tmp_path):
    """Every shard stays open: residfs raises the soft RLIMIT_NOFILE to the hard one
    (a soft 1024 stopped 1500 shards). Here: 84 shards under a soft limit of 40."""
    import resource
    import subprocess
    rng = np.random.default_rng(57)
    V, Hd, I, L, KV = 64, 16, 32, 9, 16
    bt = _llama(rng, "BF16", V, Hd, I, L, KV, tied=False)
    base = H.write_model(os.path.join(str(tmp_path), "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                         nshards=84)  # one tensor each
    d = {n: H.T.from_f32("F32", t.shape, rng.normal(0, 0.01, t.numel)) for n, t in bt.items()}
    res = H.write_residuals(os.path.join(str(tmp_path), "res"), d, vocab=V)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 200:
        pytest.skip(f"the hard limit of open files is {hard}")
    out = os.path.join(str(tmp_path), "out")
    p = subprocess.run([H.residfs_bin(), "export", f"{base.path}+{res.path}", out, "--quiet"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, hard)))
    assert p.returncode == 0, p.stderr
    H.verify_dir(out, H.expected_apply(base, [(res, 1.0)]), reads=False)
