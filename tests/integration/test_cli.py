"""The command line: long flags, odd directory names, ambiguous SPECs, export."""
import json
import os
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
