"""Fidelity of the Hub emulator (tests/remote/hubemu.py) and the nginx fixture
(tests/remote/webserve.py), the servers residfs's remote sources are tested
against.

huggingface_hub's own client is pointed at the emulator: each check runs in a
subprocess of this venv's Python with HF_ENDPOINT set before huggingface_hub
is imported (constants.ENDPOINT is read once, at import; this process has
HF_HUB_OFFLINE=1 from conftest.py and transformers imported it already),
HF_HUB_DISABLE_XET=1 and a private HF_HOME.  Ranges, faults and nginx are
checked with urllib.  Nothing leaves 127.0.0.1/localhost.
"""
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import safetensors.numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "remote"))
import hubemu  # noqa: E402
import webserve  # noqa: E402

# no proxy from the environment, for urllib here and requests in the subprocesses
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DROP = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
         "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_ENDPOINT",
         "HF_TOKEN_PATH", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
         "all_proxy", "ALL_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def st_bytes(seed, shapes):
    rng = np.random.default_rng(seed)
    return safetensors.numpy.save({k: rng.standard_normal(s).astype(np.float32)
                                   for k, s in shapes.items()})


def tiny_files(seed):
    s1 = st_bytes(seed, {"embed.weight": (64, 32), "layers.0.w": (32, 32)})
    s2 = st_bytes(seed + 1, {"layers.1.w": (32, 32), "lm_head.weight": (64, 32)})
    index = {"metadata": {"total_size": len(s1) + len(s2)},
             "weight_map": {"embed.weight": "model-00001-of-00002.safetensors",
                            "layers.0.w": "model-00001-of-00002.safetensors",
                            "layers.1.w": "model-00002-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    return {
        "model-00001-of-00002.safetensors": s1,
        "model-00002-of-00002.safetensors": s2,
        "model.safetensors.index.json": json.dumps(index).encode(),
        "config.json": json.dumps({"model_type": "llama", "vocab_size": 64,
                                   "seed": seed}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"vocab": {}}}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 128}',
        "special_tokens_map.json": b'{"bos_token": "<s>"}',
        "sub/notes.txt": b"a file below a directory\n",
    }


BIG = random.Random(7).randbytes(24 << 20)     # > 10 MiB: LFS by size


@pytest.fixture(scope="module")
def emu():
    e = hubemu.HubEmu()
    e.files = {"main": tiny_files(1), "v1": tiny_files(2), "pr": tiny_files(3)}
    e.commits = {
        "main": e.add_repo("org/tiny", e.files["main"]),
        "v1": e.add_repo("org/tiny", e.files["v1"], revision="v1"),
        "pr": e.add_repo("org/tiny", e.files["pr"], revision="refs/pr/1"),
    }
    e.add_repo("org/gated", tiny_files(4), gated=True)
    e.add_repo("org/private", {"config.json": b"{}", "w.safetensors": st_bytes(5, {"a": (8,)})},
               private=True)
    e.add_repo("org/big", {"big.bin": BIG})
    e.add_repo("org/faults", {"w.safetensors": random.Random(9).randbytes(256 << 10),
                              "plain.txt": b"0123456789" * 100})
    with e:
        yield e


@pytest.fixture(autouse=True)
def clean(emu):
    emu.clear_faults()
    emu.latency_ms = 0
    emu.tree_page_size = 1000
    emu.cdn_etag, emu.cdn_reject_auth = "sha256", False
    emu.wait_idle()
    emu.clear_log()
    yield


CATCH = """
import huggingface_hub as H
from huggingface_hub.utils import (GatedRepoError, RepositoryNotFoundError,
    RevisionNotFoundError, EntryNotFoundError)
def catch(f, *a, **k):
    try:
        f(*a, **k)
        return "ok"
    except Exception as e:
        return type(e).__name__
"""


def hf(emu, tmp_path, code, timeout=30, **args):
    """Runs @code (after CATCH) with huggingface_hub pointed at @emu in a fresh
    interpreter; @code sets OUT, returned (through JSON).  ARGS holds @args."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(HF_ENDPOINT=emu.endpoint, HF_HOME=str(tmp_path / "hfhome"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", HUBEMU_ARGS=json.dumps(args))
    env.update({k: str(v) for k, v in args.pop("_env", {}).items()})
    script = ("import json, os\nARGS = json.loads(os.environ['HUBEMU_ARGS'])\nOUT = None\n"
              + CATCH + textwrap.dedent(code) + "\nprint('\\nHUBEMU-OUT ' + json.dumps(OUT))\n")
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.rsplit("HUBEMU-OUT ", 1)[1])




def read(path):
    with open(path, "rb") as f:
        return f.read()


def head(url):
    """The headers of a HEAD, redirects not followed."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("HEAD", u.path)
        r = conn.getresponse()
        r.read()
        return r.status, r.headers
    finally:
        conn.close()


def get(url, headers=None, method=None, timeout=10, context=None):
    """(status, headers, body) with urllib; HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = OPENER if context is None else urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# -- huggingface_hub against the emulator ------------------------------------------

def test_snapshot_download(emu, tmp_path):
    cache = tmp_path / "cache"
    out = hf(emu, tmp_path, """
        from huggingface_hub import snapshot_download
        OUT = snapshot_download("org/tiny", cache_dir=ARGS["cache"])
    """, cache=str(cache))
    commit = emu.commits["main"]
    repo_dir = cache / "models--org--tiny"
    assert out == str(repo_dir / "snapshots" / commit)
    assert (repo_dir / "refs" / "main").read_text() == commit
    for path, data in emu.files["main"].items():
        link = repo_dir / "snapshots" / commit / path
        assert link.is_symlink(), path
        target = os.path.realpath(link)
        assert os.path.dirname(target) == str(repo_dir / "blobs")
        f = emu.file("org/tiny", path)
        assert os.path.basename(target) == (f.sha256 if f.lfs else f.blob_id)
        assert f.lfs == path.endswith(".safetensors")
        assert link.read_bytes() == data
    log = emu.requests()
    assert all(r["status"] in (200, 302) for r in log), log
    cdn = [r for r in log if r["server"] == "cdn"]
    assert len(cdn) == 2 and all(r["status"] == 200 and r["auth"] is None for r in cdn)
    assert any(r["path"] == "/api/models/org/tiny/revision/main" for r in log)


def test_download_at_tag_commit_and_pr(emu, tmp_path):
    shard = "model-00001-of-00002.safetensors"
    out = hf(emu, tmp_path, """
        from huggingface_hub import hf_hub_download
        # a commit already in the cache would be answered without a request
        OUT = {rev: hf_hub_download("org/tiny", ARGS["f"], revision=rev,
                                    cache_dir=ARGS["c"] + ("-by-commit" if len(rev) == 40 else ""))
               for rev in ARGS["revs"]}
    """, f=shard, c=str(tmp_path / "c"),
        revs=["v1", emu.commits["v1"], "refs/pr/1", "main"])
    assert read(out["v1"]) == emu.files["v1"][shard]
    assert read(out[emu.commits["v1"]]) == emu.files["v1"][shard]
    assert read(out["refs/pr/1"]) == emu.files["pr"][shard]
    assert read(out["main"]) == emu.files["main"][shard]
    assert f"/snapshots/{emu.commits['pr']}/" in out["refs/pr/1"]
    refs = tmp_path / "c" / "models--org--tiny" / "refs"
    assert (refs / "v1").read_text() == emu.commits["v1"]
    assert (refs / "refs" / "pr" / "1").read_text() == emu.commits["pr"]
    paths = [r["path"] for r in emu.requests("hub")]
    assert f"/org/tiny/resolve/refs%2Fpr%2F1/{shard}" in paths
    assert f"/org/tiny/resolve/{emu.commits['v1']}/{shard}" in paths


def test_model_info_and_tree(emu, tmp_path):
    emu.tree_page_size = 3
    out = hf(emu, tmp_path, """
        api = H.HfApi()
        info = api.model_info("org/tiny", files_metadata=True)
        plain = api.model_info("org/tiny", revision="v1")
        def lfs(x):
            return x.lfs.sha256 if x.lfs else None
        OUT = {
            "sha": info.sha, "v1": plain.sha, "gated": info.gated, "private": info.private,
            "siblings": {s.rfilename: [s.size, s.blob_id, lfs(s)] for s in info.siblings},
            "plain": [[s.rfilename, s.size, s.blob_id, s.lfs] for s in plain.siblings],
            "tree": [[type(e).__name__, e.path, getattr(e, "size", None),
                      getattr(e, "blob_id", None), getattr(e, "lfs", None) and lfs(e)]
                     for e in api.list_repo_tree("org/tiny", recursive=True)],
            "sub": [e.path for e in api.list_repo_tree("org/tiny", path_in_repo="sub")],
            "top": [e.path for e in api.list_repo_tree("org/tiny", revision="refs/pr/1")],
            "gated_info": [api.model_info("org/gated").gated],
        }
    """)
    assert out["sha"] == emu.commits["main"] and out["v1"] == emu.commits["v1"]
    assert out["gated"] is False and out["private"] is False
    assert out["gated_info"] == ["auto"]
    files = emu.files["main"]
    want = {}
    for p in files:
        f = emu.file("org/tiny", p)
        want[p] = [len(files[p]), f.blob_id, f.sha256 if f.lfs else None]
    assert out["siblings"] == want
    # without blobs=true the Hub sends rfilename only
    assert all(s[1:] == [None, None, None] for s in out["plain"])
    tree_files = {t[1]: t[2:] for t in out["tree"] if t[0] == "RepoFile"}
    assert tree_files == want
    assert [t[1] for t in out["tree"] if t[0] == "RepoFolder"] == ["sub"]
    assert out["sub"] == ["sub/notes.txt"]
    assert sorted(out["top"]) == sorted([p for p in files if "/" not in p] + ["sub"])
    tree_gets = [r for r in emu.requests("hub") if "/tree/main" in r["path"] and
                 "recursive=True" in r["query"]]
    assert len(tree_gets) == 3 and "cursor=" in tree_gets[-1]["query"]   # 9 entries, pages of 3


def test_metadata_auth_and_errors(emu, tmp_path):
    shard = "model-00001-of-00002.safetensors"
    out = hf(emu, tmp_path, """
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, hf_hub_download
        def meta(repo, f, **k):
            m = get_hf_file_metadata(hf_hub_url(repo, f), **k)
            return [m.commit_hash, m.etag, m.size, m.location]
        c = ARGS["c"]
        OUT = {
            "lfs": meta("org/tiny", ARGS["shard"]),
            "plain": meta("org/tiny", "config.json"),
            "big": meta("org/big", "big.bin"),
            "gated_anon": catch(hf_hub_download, "org/gated", ARGS["shard"], cache_dir=c),
            "gated_meta_anon": catch(meta, "org/gated", "config.json"),
            "gated_token": H.snapshot_download("org/gated", cache_dir=c, token=ARGS["token"]),
            "private_anon": catch(H.model_info, "org/private"),
            "private_dl_anon": catch(hf_hub_download, "org/private", "config.json", cache_dir=c),
            "private_token": catch(hf_hub_download, "org/private", "w.safetensors",
                                   cache_dir=c, token=ARGS["token"]),
            "no_repo": catch(hf_hub_download, "org/nothing", "config.json", cache_dir=c),
            "no_repo_info": catch(H.model_info, "org/nothing"),
            "no_repo_token": catch(H.model_info, "org/nothing", token=ARGS["token"]),
            "no_rev": catch(hf_hub_download, "org/tiny", "config.json", revision="nope",
                            cache_dir=c),
            "no_rev_info": catch(H.model_info, "org/tiny", revision="nope"),
            "no_file": catch(hf_hub_download, "org/tiny", "missing.bin", cache_dir=c),
            "bad_token": catch(H.model_info, "org/tiny", token="hf_wrong"),
        }
    """, shard=shard, token=emu.token, c=str(tmp_path / "c"))
    commit = emu.commits["main"]
    f = emu.file("org/tiny", shard)
    assert out["lfs"][:3] == [commit, f.sha256, len(f.data)]
    assert out["lfs"][3].startswith(f"{emu.cdn_endpoint}/cdn/{f.sha256}?expires=")
    cfg = emu.file("org/tiny", "config.json")
    assert out["plain"] == [commit, cfg.blob_id, len(cfg.data),
                            f"{emu.endpoint}/org/tiny/resolve/main/config.json"]
    big = emu.file("org/big", "big.bin")
    assert big.lfs and out["big"][1:3] == [hashlib.sha256(BIG).hexdigest(), len(BIG)]
    assert out["gated_anon"] == "GatedRepoError"
    assert out["gated_meta_anon"] == "GatedRepoError"
    snap = out["gated_token"]
    for p, data in tiny_files(4).items():
        assert read(os.path.join(snap, p)) == data
    assert out["private_anon"] == "RepositoryNotFoundError"
    assert out["private_dl_anon"] == "RepositoryNotFoundError"
    assert out["private_token"] == "ok"
    assert out["no_repo"] == out["no_repo_info"] == "RepositoryNotFoundError"
    assert out["no_repo_token"] == "RepositoryNotFoundError"
    assert out["no_rev"] == out["no_rev_info"] == "RevisionNotFoundError"
    assert out["no_file"] == "EntryNotFoundError"
    assert out["bad_token"] == "HfHubHTTPError"
    log = emu.requests()
    bearer = f"Bearer {emu.token}"
    gated_hub = [r for r in log if r["server"] == "hub" and "org/gated" in r["path"]]
    assert any(r["auth"] == bearer and r["status"] == 302 for r in gated_hub)
    cdn = [r for r in log if r["server"] == "cdn"]
    assert len(cdn) == 3 and all(r["auth"] is None and r["status"] == 200 for r in cdn)
    statuses = {(r["path"], r["status"]) for r in log}
    assert ("/api/models/org/nothing", 401) in statuses
    assert ("/api/models/org/nothing", 404) in statuses      # with a token
    assert ("/api/models/org/tiny/revision/nope", 404) in statuses


def test_hf_resumes_a_stalled_cdn_download(emu, tmp_path):
    """A CDN body that stalls past HF_HUB_DOWNLOAD_TIMEOUT: huggingface_hub
    resumes with `Range: bytes=N-` on the same signed URL and gets 206."""
    sha = hashlib.sha256(BIG).hexdigest()
    emu.add_fault("stall", match=sha, keep=12 << 20, seconds=3)
    out = hf(emu, tmp_path, """
        from huggingface_hub import hf_hub_download
        OUT = hf_hub_download("org/big", "big.bin", cache_dir=ARGS["c"])
    """, c=str(tmp_path / "c"), _env={"HF_HUB_DOWNLOAD_TIMEOUT": 1})
    assert hashlib.sha256(read(out)).hexdigest() == sha
    emu.wait_idle(5)
    cdn = sorted(emu.requests("cdn"), key=lambda r: r["t"])
    assert [(r["range"], r["status"]) for r in cdn] == [(None, 200), ("bytes=10485760-", 206)]
    assert cdn[0]["sent"] == 12 << 20 and cdn[1]["sent"] == len(BIG) - (10 << 20)
    assert cdn[0]["query"] == cdn[1]["query"]


# -- ranges and faults, with urllib ------------------------------------------------

def lfs_url(emu):
    return f"{emu.endpoint}/org/faults/resolve/main/w.safetensors"


def test_ranges(emu):
    w = emu.file("org/faults", "w.safetensors").data
    n = len(w)
    for rng, first, last in (("bytes=100-199", 100, 199), ("bytes=1000-", 1000, n - 1),
                             ("bytes=-10", n - 10, n - 1), (f"bytes=5-{n + 50}", 5, n - 1)):
        st, h, body = get(lfs_url(emu), {"Range": rng})
        assert st == 206 and h["Content-Range"] == f"bytes {first}-{last}/{n}", rng
        assert body == w[first:last + 1] and int(h["Content-Length"]) == len(body)
        assert h.get("Content-Encoding") is None
    st, h, _ = get(lfs_url(emu), {"Range": f"bytes={n}-"})
    assert st == 416 and h["Content-Range"] == f"bytes */{n}"
    st, h, body = get(lfs_url(emu))
    assert st == 200 and body == w and h["Accept-Ranges"] == "bytes"
    # the hub's own answer: 302 with the headers
    st, h = head(lfs_url(emu))
    sha = hashlib.sha256(w).hexdigest()
    assert st == 302 and h["X-Linked-Etag"] == f'"{sha}"' and h["X-Linked-Size"] == str(n)
    assert h["X-Repo-Commit"] == emu.repos["org/faults"].refs["main"]
    assert h["ETag"] == f'"{emu.file("org/faults", "w.safetensors").blob_id}"'
    assert h["Location"].startswith(f"{emu.cdn_endpoint}/cdn/{sha}?expires=")
    assert emu.cdn_endpoint.startswith("http://localhost:")
    # a plain file is answered by the hub, ranges too
    st, h, body = get(f"{emu.endpoint}/org/faults/resolve/main/plain.txt", {"Range": "bytes=3-6"})
    assert st == 206 and body == b"3456" and h["Content-Range"] == "bytes 3-6/1000"
    assert h["ETag"] == f'"{emu.file("org/faults", "plain.txt").blob_id}"'
    # conditional requests on the CDN
    url = emu.cdn_url(sha)
    assert get(url, {"If-Match": '"nope"'})[0] == 412
    st, _, body = get(url, {"If-Match": f'"{sha}"', "Range": "bytes=0-3"})
    assert st == 206 and body == w[:4]
    st, _, body = get(url, {"If-Range": '"old"', "Range": "bytes=0-3"})
    assert st == 200 and body == w
    assert get(url, {"Range": "bytes=0-3"})[1]["ETag"] == f'"{sha}"'
    emu.cdn_etag = "md5"
    try:
        assert get(url, {"Range": "bytes=0-3"})[1]["ETag"] == f'"{hashlib.md5(w).hexdigest()}"'
    finally:
        emu.cdn_etag = "sha256"
    # signed URLs: expired, forged, and auth refused when asked to
    assert get(emu.cdn_url(sha, ttl=-5))[0] == 403
    assert get(url.replace("sig=", "sig=0"))[0] == 403
    emu.cdn_reject_auth = True
    try:
        assert get(url, {"Authorization": f"Bearer {emu.token}"})[0] == 400
    finally:
        emu.cdn_reject_auth = False
    log = emu.requests()
    assert [r["sent"] for r in log
            if r["range"] == "bytes=100-199" and r["server"] == "cdn"] == [100]


@pytest.mark.parametrize("code,retry_after", [(503, 7), (429, 1), (500, None), (408, None)])
def test_fault_status(emu, code, retry_after):
    emu.add_fault("status", code=code, retry_after=retry_after)
    st, h, body = get(lfs_url(emu))
    assert st == code and h.get("Retry-After") == (None if retry_after is None
                                                    else str(retry_after))
    assert json.loads(body)["error"]
    assert get(lfs_url(emu))[0] == 200       # count=1: the next one is served


def test_fault_status_on_hub(emu):
    emu.add_fault("status", match="/api/", server="hub", code=503, retry_after=2, count=2)
    url = f"{emu.endpoint}/api/models/org/faults"
    assert [get(url)[0] for _ in range(3)] == [503, 503, 200]


def test_fault_reset_and_short(emu):
    w = emu.file("org/faults", "w.safetensors").data
    emu.add_fault("reset")
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        get(lfs_url(emu))
    emu.add_fault("short")
    with pytest.raises(http.client.IncompleteRead) as e:
        get(lfs_url(emu), {"Range": "bytes=0-999"})
    assert len(e.value.partial) == 500
    log = emu.requests("cdn")
    assert [(r["status"], r["sent"]) for r in log] == [(200, len(w) // 2), (206, 500)]


def test_fault_ranges(emu):
    w = emu.file("org/faults", "w.safetensors").data
    emu.add_fault("ignore_range")
    st, h, body = get(lfs_url(emu), {"Range": "bytes=100-199"})
    assert st == 200 and body == w and "Content-Range" not in h
    emu.add_fault("wrong_range")
    st, h, body = get(lfs_url(emu), {"Range": "bytes=100-199"})
    assert st == 206 and h["Content-Range"] != f"bytes 100-199/{len(w)}"
    a, b = map(int, h["Content-Range"].split()[1].split("/")[0].split("-"))
    assert body == w[a:b + 1] and len(body) == 100


def test_fault_stall_latency_expire(emu):
    emu.add_fault("stall", seconds=1)
    with pytest.raises((TimeoutError, socket.timeout)):     # not IncompleteRead: still open
        get(lfs_url(emu), timeout=0.3)
    emu.add_fault("latency", ms=300)
    t = time.monotonic()
    assert get(lfs_url(emu))[0] == 200
    assert time.monotonic() - t >= 0.3
    emu.latency_ms = 100
    t = time.monotonic()
    assert get(lfs_url(emu))[0] == 200       # hub and cdn: two requests
    assert time.monotonic() - t >= 0.2
    emu.latency_ms = 0
    emu.add_fault("expire")
    st, _, body = get(lfs_url(emu))
    assert st == 403 and b"expired" in body
    assert get(lfs_url(emu))[0] == 200


def test_fault_bad_json(emu):
    emu.add_fault("bad_json", server="hub")
    st, _, body = get(f"{emu.endpoint}/org/faults/resolve/main/plain.txt")   # not an API call
    assert st == 200 and body == b"0123456789" * 100
    st, _, body = get(f"{emu.endpoint}/api/models/org/faults")
    assert st == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert json.loads(get(f"{emu.endpoint}/api/models/org/faults")[2])["id"] == "org/faults"


def test_replace_file(emu, tmp_path):
    e = hubemu.HubEmu()
    c = e.add_repo("o/r", {"w.safetensors": b"old" * 100, "a.txt": b"a"})
    with e:
        def hd(path):
            return head(f"{e.endpoint}/o/r/resolve/main/{path}")[1]
        h1 = hd("w.safetensors")
        assert e.replace_file("o/r", "w.safetensors", b"new" * 101) == c
        h2 = hd("w.safetensors")
        assert h2["X-Repo-Commit"] == h1["X-Repo-Commit"] == c
        assert h2["X-Linked-Etag"] == f'"{hashlib.sha256(b"new" * 101).hexdigest()}"'
        assert h2["X-Linked-Etag"] != h1["X-Linked-Etag"] and h2["X-Linked-Size"] == "303"
        assert get(f"{e.endpoint}/o/r/resolve/main/w.safetensors")[2] == b"new" * 101
        # the old signed URL still names the old blob (content addressed)
        assert get(h1["Location"])[2] == b"old" * 100
        e.replace_file("o/r", "a.txt", b"b")
        assert hd("a.txt")["ETag"] == f'"{hubemu.git_blob_id(b"b")}"'
        c2 = e.replace_file("o/r", "a.txt", b"c", keep_commit=False)
        assert c2 != c and hd("a.txt")["X-Repo-Commit"] == c2
        st, h, _ = get(f"{e.endpoint}/o/r/resolve/{c}/a.txt")
        assert st == 200 and h["ETag"] == f'"{hubemu.git_blob_id(b"b")}"'
    assert hubemu.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"   # git's


def test_add_repo_dir_and_determinism(tmp_path):
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "m.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ignored").write_bytes(b"")
    a, b = hubemu.HubEmu(), hubemu.HubEmu()
    ca, cb = a.add_repo_dir("o/r", tmp_path), b.add_repo_dir("o/r", tmp_path)
    assert ca == cb and len(ca) == 40
    assert sorted(a.repos["o/r"].commits[ca]) == ["config.json", "m.safetensors"]
    assert a.add_repo("o/r", {"x": b""}, revision="t", commit="1" * 40) == "1" * 40
    with pytest.raises(ValueError):
        a.add_fault("nonsense")


# -- nginx ---------------------------------------------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_nginx(tmp_path, tls):
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        pytest.skip("nginx is not installed (contrib/bootstrap.sh: nginx-light)")
    if tls and not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    root = tmp_path / "www"
    root.mkdir()
    data = random.Random(3).randbytes(300_000)
    (root / "w.safetensors").write_bytes(data)
    with webserve.Nginx(root, tls=tls, latency_ms=0 if tls else 100) as web:
        ctx = ssl.create_default_context(cafile=web.ca_file) if tls else None
        assert web.url.startswith("https://" if tls else "http://")
        t = time.monotonic()
        st, h, body = get(web.url + "w.safetensors", {"Range": "bytes=1000-1999"}, context=ctx)
        assert st == 206 and body == data[1000:2000]
        assert h["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        etag = h["ETag"]
        assert etag.startswith('"') and h.get("Content-Encoding") is None
        if not tls:
            assert time.monotonic() - t >= 0.1
        assert get(web.url + "w.safetensors", {"If-Match": '"wrong"', "Range": "bytes=0-9"},
                   context=ctx)[0] == 412
        st, _, body = get(web.url + "w.safetensors", {"If-Match": etag, "Range": "bytes=0-9"},
                          context=ctx)
        assert st == 206 and body == data[:10]
        assert get(web.url + "missing", context=ctx)[0] == 404
        assert get(web.url, context=ctx)[0] == 403          # autoindex off
        if tls:   # the certificate names localhost too
            st, _, _ = get(f"https://localhost:{web.port}/w.safetensors",
                           {"Range": "bytes=0-0"}, context=ctx)
            assert st == 206
        log = web.requests(min_count=5 + tls)
        assert [(r["status"], r["sent"], r["range"]) for r in log[:3]] == [
            (206, 1000, "bytes=1000-1999"), (412, log[1]["sent"], "bytes=0-9"),
            (206, 10, "bytes=0-9")]
        assert log[1]["if_match"] == '"wrong"' and log[0]["uri"] == "/w.safetensors"
        assert web.bytes_sent() == sum(r["sent"] for r in log)
        tmp, pid = web.tmp, web.proc.pid
    assert not os.path.exists(tmp)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
