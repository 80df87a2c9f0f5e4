"""S3 terms (s3://BUCKET/PREFIX) against moto's S3 with signature checking on.

The server is tests/remote/s3server.py (moto in this process, SigV4 checked, S3's
strictness about canonical paths and queries, a request log, injected faults).  The
small models of test_remote.py (base, res, res2, instruct) are stored as
s3://models/NAME/ (private: signed requests only) and s3://public-models/NAME/ (a
public bucket), and every s3:// mount is compared byte for byte with the mount of the
same SPEC built from the local directories (README.md excepted: it names the s3://
terms, and is checked for them instead).

What is checked:
  1. bytes: every way of reading (child process, as in test_remote.py) of
     s3://models/base+s3://models/res; export; compute mode; s3 and local terms mixed
     (in either order in a SPEC); the long flags; inspect --json's `resolved`.
  2. credentials: session credentials (AWS_SESSION_TOKEN), a profile of a credentials
     file with its region from a config file (and ~/.aws/ as the default), anonymous
     access to a public bucket; anonymous access to a private bucket refused saying
     that no credentials were found; the secret never printed.
  3. refused at mount, naming the term: a wrong secret, an unknown key id, an unknown
     bucket, a prefix with no config.json, an expired or invalid session token, no
     server at the endpoint, a wrong region.
  4. keys with spaces, '+', '&', '%' and non-ASCII characters (prefixes and file names).
  5. a prefix with more than 1000 objects: every listing page read (the extra objects
     are .txt files: a .bin file is taken for weights and not shown).
  6. an object overwritten under the mount: the next uncached read fails with EIO
     (the server answers 412 to the If-Match), never new bytes; it keeps failing.
  7. laziness counted from the server's log: mounting reads headers and small files,
     reading one tensor its ranges plus bounded overhead.
  8. faults: 503 SlowDown on the listing and on a range GET, a reset mid-body:
     retried, the bytes right.

Every residfs process gets an environment with nothing of the caller's AWS_* (HOME,
AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE point into the test's temporary
directory) and the server's endpoint, region and credentials unless a test says
otherwise.  moto copies a whole object for each ranged GET: the objects stay at a
few MiB.
"""
import json
import os
import sys
import time

import numpy as np
import pytest

import rfshelp as H
from test_remote import (BLOCK, SHARD1, SHARD2, TARGET, M, MiB, Models,  # noqa: F401 - M, ref, fg: fixtures
                         MountFailed, check_card, compare, expect_eio, fg, free_port, guarded, local,
                         make_env, rand_bf16, ref, refused, rfs, st_offsets, target_last_models)

sys.path.insert(0, os.path.join(H.REPO, "tests", "remote"))
from s3server import S3Server  # noqa: E402

BASE_RES = "s3://models/base+s3://models/res"
LAZY_OPTS = ("--cache-size", "0", "--remote-cache-size", "0")
NO_DISK = ("--remote-cache-size", "0")                # every inspect asks the server
ODD_PREFIX = "odd dir+x/\u00e9/"                    # space, '+', non-ASCII
ODD_RES = "odd res+1 &%/"                            # '+', '&' (XML), '%' (URL)
ODD_FILE = "read me +\u00e9&%;.txt"                  # a passthrough file of the odd base
MANY = 1100                                          # extra objects beside a model's files
PART = 8 * MiB                                       # RFS_TUNE_REMOTE_PART


# ---- the server and the environment -------------------------------------------------------

def upload(s3, bucket, prefix, d, extra=None):
    """The regular files at the top of @d as PREFIX+NAME, and @extra {key: bytes}, straight
    into moto's backend (nothing logged); returns {key: ETag}."""
    items = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(p) and not os.path.islink(p):
            items[prefix + name] = H.read_file(p)
    items.update(extra or {})
    return s3.put_many(bucket, items)


@pytest.fixture(scope="module")
def lazy(tmp_path_factory):
    """A bf16 model of about 15 MiB (2 shards) and bf16 residuals as large, TARGET (1 MiB)
    the last tensor of the base's first shard and of the residuals' file, so that no
    prefetch past its end can hide in the counts (test_remote.py's `big`, smaller)."""
    return target_last_models(str(tmp_path_factory.mktemp("s3-lazy")), 77, (3072, 512, 1024, 2, 256),
                              lambda names: (len(names) + 2) // 2 - 1)


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    """A bf16 base of about 28 MiB in one shard and float32 residuals of about 57 MiB,
    both in the same (name) order, so that reading the merged model from its start reads
    each file from its start to its end."""
    root = str(tmp_path_factory.mktemp("s3-seq"))
    rng = np.random.default_rng(99)
    V, Hd, I, L, KV = 8192, 512, 1376, 2, 512
    shapes = dict(H.llama_shapes(V, Hd, I, L, KV, False))
    b = Models()
    bt = {n: rand_bf16(rng, shapes[n], 0x3C00) for n in sorted(shapes)}
    b.base = H.write_model(os.path.join(root, "base"), bt, H.llama_config(V, Hd, I, L, KV, False, "BF16"),
                           order=sorted(shapes), flavour="base")
    b.res = H.write_residuals(os.path.join(root, "res"),
                              {n: H.T.from_f32("F32", shapes[n], rng.normal(0, 0.01, bt[n].numel))
                               for n in sorted(shapes)}, vocab=V)
    b.sizes = {d: {fn: os.path.getsize(os.path.join(root, d, fn)) for fn in os.listdir(os.path.join(root, d))}
               for d in ("base", "res")}
    return b


@pytest.fixture(scope="module")
def s3(M, lazy, seq):
    """One server for the module (moto's state is process-global)."""
    with S3Server() as srv:
        srv.make_bucket("models")
        srv.make_bucket("public-models", public=True)
        etags = {}
        for n in ("base", "res", "res2", "ins"):
            d = getattr(M, n).path
            name = "instruct" if n == "ins" else n
            etags.update(upload(srv, "models", name + "/", d))
        for n in ("base", "res"):
            upload(srv, "public-models", n + "/", getattr(M, n).path)
        # a model behind keys with odd characters, with a passthrough file of such a name
        odd = H.read_file(os.path.join(M.base.path, "notes.txt"))[::-1] + "\u00e9".encode()
        upload(srv, "models", ODD_PREFIX, M.base.path, {ODD_PREFIX + ODD_FILE: odd})
        upload(srv, "models", ODD_RES, M.res.path)
        # a model directory among more than 1000 objects (and some that are not its own)
        srv.many = {f"extra-{i:04d}.txt": b"object %d\n" % i * (1 + i % 7) for i in range(MANY)}
        upload(srv, "models", "many/", M.base.path,
               {**{"many/" + k: v for k, v in srv.many.items()},
                "many/sub/deep.bin": b"not the model's", "many/.hidden": b"hidden"})
        # the victim of the overwrite test (its own copy of the residuals)
        etags.update(upload(srv, "models", "victim/", M.res.path))
        for n in ("base", "res"):
            upload(srv, "models", f"lazy/{n}/", getattr(lazy, n).path)
            upload(srv, "models", f"seq/{n}/", getattr(seq, n).path)
        srv.etags = etags
        srv.odd = odd
        yield srv


@pytest.fixture(autouse=True)
def _fresh_s3(request):
    """Each test starts with no fault and an empty log."""
    if "s3" not in request.fixturenames:
        yield
        return
    srv = request.getfixturevalue("s3")
    srv.wait_idle(10)
    srv.clear_faults()
    srv.clear_requests()
    yield
    srv.clear_faults()


def s3_env(tmp, srv=None, creds=None, **over):
    """The environment of a residfs process for @srv (its endpoint, region and key, or
    @creds' session credentials; None: no AWS_* at all): nothing of the caller's AWS_*,
    HOME and the AWS files in @tmp (absent); @over on top (None: unset)."""
    env = make_env(tmp)
    for k in [k for k in env if k.startswith("AWS_")]:
        del env[k]
    env.update(HOME=tmp, AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "no-aws", "credentials"),
               AWS_CONFIG_FILE=os.path.join(tmp, "no-aws", "config"))
    if srv is not None:
        env.update(srv.env(creds))
    for k, v in over.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def describe(reqs, n=40):
    return "\n".join(f"  {r['method']} {r['path'][-60:]}?{r['query'][-60:]} {r['range']} "
                     f"if-match={r['if_match']} -> {r['status']} {r['sent']}" for r in reqs[:n])


def is_listing(r):
    return r["method"] == "GET" and "list-type=2" in r["query"]


def object_gets(srv, key_prefix=None, bucket="models"):
    """The logged GETs of objects (not listings) of @bucket, under @key_prefix."""
    out = []
    for r in srv.requests():
        if r["method"] != "GET" or is_listing(r):
            continue
        k = S3Server.key_of(r["path"], bucket)
        if k is not None and (key_prefix is None or k.startswith(key_prefix)):
            out.append(r)
    return out


def check_requests(srv, *, signed=True, token=None):
    """Every object GET was a signed (or anonymous) range read answered 206 with
    If-Match the listed ETag; every request had the session token when given."""
    reqs = srv.requests()
    assert reqs, "no request at all"
    for r in reqs:
        if signed:
            assert r["auth"] and r["auth"].startswith("AWS4-HMAC-SHA256 "), f"unsigned: {r}"
        else:
            assert r["auth"] is None and "X-Amz-Signature" not in r["query"], f"signed: {r}"
        assert r["token"] == token, f"x-amz-security-token {r['token']!r}, expected {token!r}: {r}"
    gets = [r for r in reqs if r["method"] == "GET" and not is_listing(r)]
    assert gets, describe(reqs)
    for r in gets:
        assert r["range"] and r["status"] == 206, f"not a range read answered 206: {r}"
        key = S3Server.key_of(r["path"], "models")
        if key in srv.etags:
            assert r["if_match"] == srv.etags[key], f"If-Match {r['if_match']}, listed {srv.etags[key]}: {r}"
        else:
            assert r["if_match"], f"no If-Match: {r}"


def no_secret(srv, *texts):
    for t in texts:
        assert srv.secret_key not in t, f"the secret is printed: {t[-2000:]}"


# ---- 1. the same bytes as the local directories ------------------------------------------

def test_s3_apply_every_byte(M, s3, ref, fg, tmp_path):
    """s3://models/base+s3://models/res: every file, every way of reading, equals the
    local mount; signed range GETs with If-Match only; README.md names the s3:// terms
    and not the secret."""
    want = ref(local(M, "base", "res"))
    fm = fg(BASE_RES, env=s3_env(str(tmp_path), s3))
    compare(fm, want, thorough=True)
    H.concurrent_preads(fm.path(SHARD1), want[SHARD1], nthreads=4, per_thread=10)
    card = H.read_file(fm.path("README.md")).decode()
    check_card(card, "s3://models/base", "s3://models/res")
    json.loads(H.read_file(fm.path(".residfs-stats")))
    assert fm.alive()
    check_requests(s3)
    lists = [r for r in s3.requests() if is_listing(r)]
    assert len(lists) == 2 and all(r["status"] == 200 for r in lists), describe(lists)
    assert fm.stop()
    no_secret(s3, card, fm.log())


def test_s3_export_equals_local(M, s3, tmp_path):
    env = s3_env(str(tmp_path), s3)
    a, b = str(tmp_path / "local-out"), str(tmp_path / "s3-out")
    r = rfs(["export", local(M, "base", "res"), a, "--quiet"], env)
    assert r.returncode == 0, r
    r = rfs(["export", BASE_RES, b, "--quiet"], env)
    assert r.returncode == 0, r
    H.compare_dirs(a, b, skip=("README.md",))
    card = H.read_file(os.path.join(b, "README.md")).decode()
    check_card(card, "s3://models/base", "s3://models/res")
    no_secret(s3, card, r.stdout, r.stderr)


def test_s3_compute_mode(M, s3, ref, fg, tmp_path):
    """s3://models/instruct-s3://models/base gives the residuals the local compute mode
    gives (config.json apart from the names of the models and created_at)."""
    want = ref(local(M, "ins", "base", sep="-"))
    fm = fg("s3://models/instruct-s3://models/base", env=s3_env(str(tmp_path), s3))
    compare(fm, want, skip=("README.md", "config.json"))
    got_cfg = json.loads(H.read_file(fm.path("config.json")))
    want_cfg = json.loads(want["config.json"])
    names = {k for k in want_cfg if k.endswith("_model_name") or k == "tokenizer_name"} | {"created_at"}
    assert {k: v for k, v in got_cfg.items() if k not in names} == \
        {k: v for k, v in want_cfg.items() if k not in names}
    assert list(got_cfg) == list(want_cfg)
    assert not got_cfg["created_at"].startswith("1970"), got_cfg["created_at"]
    check_card(H.read_file(fm.path("README.md")).decode(), "s3://models/instruct", "s3://models/base")


def test_s3_local_mixed_and_long_flags(M, s3, ref, fg, tmp_path):
    """A local base with s3 residuals, and the long form (--base/--delta/--scale) with
    s3 and local terms."""
    env = s3_env(str(tmp_path), s3)
    fm = fg(f"{M.base.path}+s3://models/res", env=env)
    compare(fm, ref(local(M, "base", "res")))
    want3 = ref(f"{M.base.path}+{M.res.path}+0.5*{M.res2.path}")
    fm = fg("--base", "s3://models/base", "--delta", M.res.path, "--delta", "s3://models/res2",
            "--scale", "0.5", env=env)
    compare(fm, want3)
    fm = fg("--base", "s3://models/base", "--delta", "s3://models/res", "--delta", "s3://models/res2/",
            "--scale", "0.5", env=env)
    compare(fm, want3)
    for fn in os.listdir(fm.mp):
        assert os.stat(fm.path(fn)).st_mtime > 1e9, f"{fn}: mtime {os.stat(fm.path(fn)).st_mtime}"


def test_s3_then_local_in_spec(M, s3, ref, fg, tmp_path):
    """An s3 term followed by a local directory in a SPEC: s3://models/base+/ABS/res
    (and +0.5*s3://models/res2), as hf://org/base+/ABS/res works for the Hub.  The
    reading 's3://models/base+/ABS/res' (one S3 prefix "base+/ABS/res/") has no object
    (and no config.json): it does not resolve, so the SPEC is not ambiguous."""
    env = s3_env(str(tmp_path), s3)
    want3 = ref(f"{M.base.path}+{M.res.path}+0.5*{M.res2.path}")
    try:
        fm = fg(f"s3://models/base+{M.res.path}+0.5*s3://models/res2", env=env)
    except MountFailed as ex:
        raise AssertionError("an s3 term followed by a local directory is refused (residfs: the S3 "
                             "prefix 'base+/ABS/res/' is taken as resolving on its form alone: "
                             f"core/tdir.c rfs_tdir_probe -> rfs_s3_form):\n{ex.text[-1500:]}") from None
    compare(fm, want3)


def test_s3_inspect_json_resolved(M, s3, tmp_path):
    """inspect --json: the files and sizes of the local SPEC; each s3 term's `resolved`
    names it, the endpoint and how it was signed; only listings and range GETs of the
    headers and small files were made."""
    env = s3_env(str(tmp_path), s3)
    r = rfs(["inspect", BASE_RES, "--json"], env)
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    no_secret(s3, r.stdout, r.stderr)
    r = rfs(["inspect", local(M, "base", "res"), "--json"], env)
    assert r.returncode == 0, r
    want = json.loads(r.stdout)
    sizes = lambda j: {f["name"]: f["size"] for f in j["files"] if f["name"] != "README.md"}  # noqa: E731
    assert sizes(got) == sizes(want)
    res = [s.get("resolved") or "" for s in got["sources"]]
    assert len(res) == 2, got["sources"]
    for term, text in zip(("s3://models/base", "s3://models/res"), res):
        assert term in text and s3.endpoint in text and "signed" in text, got["sources"]
    check_requests(s3)
    st = sum(os.path.getsize(os.path.join(d, f)) for d in (M.base.path, M.res.path)
             for f in os.listdir(d) if f.endswith(".safetensors"))
    assert s3.bytes_sent() < st / 4, f"inspect fetched {s3.bytes_sent()} bytes:\n{describe(s3.requests())}"


# ---- 2. credentials ---------------------------------------------------------------------

def test_s3_session_credentials(M, s3, ref, fg, tmp_path):
    """AWS_SESSION_TOKEN: every request carries it (x-amz-security-token), the bytes
    are right, inspect says "session credentials"; neither secret nor token printed."""
    creds = s3.session_credentials()
    env = s3_env(str(tmp_path), s3, creds)
    fm = fg(BASE_RES, env=env)
    compare(fm, ref(local(M, "base", "res")))
    check_requests(s3, token=creds["session_token"])
    card = H.read_file(fm.path("README.md")).decode()
    r = rfs(["inspect", BASE_RES, "--json"], env)
    assert r.returncode == 0, r
    assert all("session credentials" in s["resolved"] for s in json.loads(r.stdout)["sources"]), r.stdout
    assert fm.stop()
    for t in (card, fm.log(), r.stdout, r.stderr):
        assert creds["secret_key"] not in t and creds["session_token"] not in t, t[-2000:]


def write_aws_files(d, creds_text, config_text):
    os.makedirs(d, exist_ok=True)
    H.write_file(os.path.join(d, "credentials"), creds_text, mode=0o600)
    H.write_file(os.path.join(d, "config"), config_text)
    return os.path.join(d, "credentials"), os.path.join(d, "config")


def test_s3_profile_from_files(M, s3, ref, fg, tmp_path):
    """AWS_PROFILE=other with its keys in the credentials file only (no AWS_ACCESS_KEY_ID)
    and its region in the config file ([profile other]): the region is the file's (a
    wrong one there is refused, AWS_REGION overrides it); the default profile from
    ~/.aws/ with nothing set; a session token in the credentials file."""
    t = str(tmp_path)
    sess = s3.session_credentials()
    creds_text = (f"[default]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n\n"
                  f"[other]\n  aws_access_key_id={s3.access_key}\naws_secret_access_key =  {s3.secret_key}  \n"
                  f"[wrong]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = not-the-secret\n"
                  f"[sess]\naws_access_key_id = {sess['access_key']}\n"
                  f"aws_secret_access_key = {sess['secret_key']}\naws_session_token = {sess['session_token']}\n")
    cred_file, cfg_file = write_aws_files(
        os.path.join(t, "aws"), creds_text,
        "[default]\nregion = eu-west-1\n\n[profile other]\nregion = us-east-1\n"
        "[profile wrong]\nregion = us-east-1\n[profile sess]\nregion = us-east-1\n")
    base = s3_env(t, s3, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_REGION=None,
                  AWS_DEFAULT_REGION=None, AWS_SHARED_CREDENTIALS_FILE=cred_file,
                  AWS_CONFIG_FILE=cfg_file)
    env = dict(base, AWS_PROFILE="other")
    fm = fg(BASE_RES, env=env)
    compare(fm, ref(local(M, "base", "res")))
    check_requests(s3)
    card = H.read_file(fm.path("README.md")).decode()
    assert fm.stop()
    no_secret(s3, card, fm.log())
    # the region is read from [profile other]: a wrong one there is refused...
    write_aws_files(os.path.join(t, "aws"), creds_text, "[default]\nregion = us-east-1\n"
                    "[profile other]\nregion = eu-west-1\n")
    r = refused(env, BASE_RES, "s3://models/base", tmp=t, max_s=30)
    no_secret(s3, r.stdout, r.stderr)
    # ...unless AWS_REGION says otherwise
    r = rfs(["inspect", *NO_DISK, BASE_RES, "--json"], dict(env, AWS_REGION=s3.region))
    assert r.returncode == 0, r
    # the default profile ([default]: its region eu-west-1 from the config file) is
    # not the one named: AWS_PROFILE=other's keys and region are
    write_aws_files(os.path.join(t, "aws"), creds_text, "[default]\nregion = eu-west-1\n"
                    "[profile other]\nregion = us-east-1\n")
    r = rfs(["inspect", *NO_DISK, BASE_RES, "--json"], env)
    assert r.returncode == 0, r
    no_secret(s3, r.stdout, r.stderr)
    # the profile's secret is used, not another's
    r = refused(dict(base, AWS_PROFILE="wrong"), BASE_RES, "s3://models/base", "secret", tmp=t, max_s=30)
    assert "not-the-secret" not in r.stderr and "not-the-secret" not in r.stdout, r
    # a session token in the credentials file
    s3.clear_requests()
    r = rfs(["inspect", *NO_DISK, BASE_RES, "--json"], dict(base, AWS_PROFILE="sess"))
    assert r.returncode == 0, r
    assert all("session credentials" in s["resolved"] for s in json.loads(r.stdout)["sources"]), r.stdout
    assert all(q["token"] == sess["session_token"] for q in s3.requests()), describe(s3.requests())
    assert sess["session_token"] not in r.stdout + r.stderr and sess["secret_key"] not in r.stdout + r.stderr
    # an AWS_PROFILE with no keys in the file: refused, naming the term and the profile
    r = refused(dict(base, AWS_PROFILE="nobody"), BASE_RES, "s3://models/base", "nobody", tmp=t, max_s=30)
    # ~/.aws/credentials and ~/.aws/config, profile "default", nothing set
    home = os.path.join(t, "home")
    write_aws_files(os.path.join(home, ".aws"), creds_text, "[default]\nregion = us-east-1\n")
    s3.clear_requests()
    r = rfs(["inspect", *NO_DISK, BASE_RES, "--json"], dict(base, HOME=home, AWS_SHARED_CREDENTIALS_FILE=None,
                                                  AWS_CONFIG_FILE=None))
    assert r.returncode == 0, r
    check_requests(s3)
    no_secret(s3, r.stdout, r.stderr)


def test_s3_anonymous_public(M, s3, ref, fg, tmp_path):
    """No credentials at all: a public bucket mounts with unsigned requests; inspect says
    "anonymous"; a private bucket is refused, naming the term and saying that no
    credentials were found."""
    t = str(tmp_path)
    env = s3_env(t, None, AWS_ENDPOINT_URL=s3.endpoint)
    fm = fg("s3://public-models/base+s3://public-models/res", env=env)
    compare(fm, ref(local(M, "base", "res")))
    check_requests(s3, signed=False)
    check_card(H.read_file(fm.path("README.md")).decode(), "s3://public-models/base")
    r = rfs(["inspect", "s3://public-models/base+s3://public-models/res", "--json"], env)
    assert r.returncode == 0, r
    assert all("anonymous" in s["resolved"] for s in json.loads(r.stdout)["sources"]), r.stdout
    r = refused(env, BASE_RES, "s3://models/base", tmp=t, max_s=30)
    assert "no credentials" in r.stderr, r
    # AWS_ENDPOINT_URL_S3 is preferred to AWS_ENDPOINT_URL
    r = rfs(["inspect", "s3://public-models/base+s3://public-models/res", "--json"],
            dict(env, AWS_ENDPOINT_URL="http://127.0.0.1:9/", AWS_ENDPOINT_URL_S3=s3.endpoint + "/"))
    assert r.returncode == 0, r


# ---- 3. refused at mount ------------------------------------------------------------------

def test_s3_refused(s3, tmp_path):
    """Refused at mount, at once, naming the term: a wrong secret, an unknown key id, an
    unknown bucket, a prefix without config.json, an expired session token, an invalid
    session token, no server at the endpoint, a region the bucket is not in; no secret
    printed."""
    t = str(tmp_path)
    env = s3_env(t, s3)
    wrong = "wrong-secret-9876543210zyxwvutsrqponmlkjihg"
    r = refused(dict(env, AWS_SECRET_ACCESS_KEY=wrong), BASE_RES, "s3://models/base", tmp=t, max_s=20)
    assert "secret" in r.stderr, r
    assert wrong not in r.stderr + r.stdout, r
    no_secret(s3, r.stderr, r.stdout)
    r = refused(dict(env, AWS_ACCESS_KEY_ID="AKIDNOTKNOWN0000"), BASE_RES, "s3://models/base", tmp=t, max_s=20)
    assert "access key" in r.stderr, r
    no_secret(s3, r.stderr, r.stdout)
    r = refused(env, "s3://no-such-bucket/base+s3://models/res", "s3://no-such-bucket/base", tmp=t, max_s=20)
    assert "no-such-bucket" in r.stderr, r
    r = refused(env, "s3://models/base+s3://models/nothing", "s3://models/nothing", "config.json",
                tmp=t, max_s=20)
    # a prefix that names a file, not a directory of objects
    refused(env, "s3://models/base/config.json+s3://models/res", "s3://models/base/config.json",
            tmp=t, max_s=20)
    creds = s3.session_credentials()
    s3.expire_session(creds)
    r = refused(s3_env(t, s3, creds), BASE_RES, "s3://models/base", tmp=t, max_s=20)
    assert "expired" in r.stderr, r
    assert creds["session_token"] not in r.stderr and creds["secret_key"] not in r.stderr, r
    creds = s3.session_credentials()
    r = refused(s3_env(t, s3, dict(creds, session_token=creds["session_token"][:-4] + "AAAA")), BASE_RES,
                "s3://models/base", tmp=t, max_s=20)
    assert "token" in r.stderr, r
    # no server at the endpoint
    r = refused(dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"), BASE_RES, "s3://models/base",
                tmp=t, max_s=30)
    assert "127.0.0.1" in r.stderr, r
    # the bucket is in us-east-1; requests signed for eu-west-1 are answered
    # AuthorizationHeaderMalformed (S3 names the bucket's region)
    r = refused(dict(env, AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1"), BASE_RES,
                "s3://models/base", tmp=t, max_s=20)
    assert "region" in r.stderr and "eu-west-1" in r.stderr, r
    # nothing but listings and (of the base resolved before s3://models/nothing was
    # refused) the headers and small files
    for q in s3.requests():
        assert is_listing(q) or (q["range"] or "").startswith("bytes=0-"), describe(s3.requests())


# ---- 4. odd keys ------------------------------------------------------------------------

def test_s3_odd_keys(M, s3, ref, fg, tmp_path):
    """Prefixes with spaces, '+', '&', '%' and 'é', and a passthrough file named so:
    mounted (SPEC and long form) and read right."""
    want = dict(ref(local(M, "base", "res")))
    want[ODD_FILE] = s3.odd
    env = s3_env(str(tmp_path), s3)
    base = "s3://models/" + ODD_PREFIX
    fm = fg(f"{base}+s3://models/res", env=env)
    compare(fm, want)
    check_card(H.read_file(fm.path("README.md")).decode(), base)
    check_requests(s3)
    fm = fg("--base", base.rstrip("/"), "--delta", "s3://models/" + ODD_RES, env=env)
    compare(fm, want)
    gets = {S3Server.key_of(r["path"], "models") for r in object_gets(s3)}
    assert ODD_PREFIX + ODD_FILE in gets and ODD_RES + "model.safetensors" in gets, gets


# ---- 5. more than 1000 objects --------------------------------------------------------

def test_s3_many_objects(M, s3, ref, fg, tmp_path):
    """A prefix with 1100 objects beside the model's files (the model's weights listed
    after the first page): every page is read, the mount shows every top-level object
    (not those below, not the dot file), and they read right."""
    want = ref(local(M, "base", "res"))
    fm = fg("s3://models/many+s3://models/res", env=s3_env(str(tmp_path), s3))
    names = sorted(os.listdir(fm.mp))
    assert names == sorted(list(want) + list(s3.many)), \
        f"{len(names)} files; missing {sorted((set(want) | set(s3.many)) - set(names))[:10]}, " \
        f"extra {sorted(set(names) - set(want) - set(s3.many))[:10]}"
    for fn in want:
        if fn != "README.md":
            H.assert_same(guarded(fm, fn, lambda: H.read_file(fm.path(fn))), want[fn], fn)
    keys = sorted(s3.many)
    for fn in (keys[0], keys[500], keys[996], keys[998], keys[1000], keys[-1]):
        assert guarded(fm, fn, lambda: H.read_file(fm.path(fn))) == s3.many[fn], fn
    lists = [r for r in s3.requests() if is_listing(r) and "prefix=many" in r["query"]]
    assert len(lists) >= 2 and all(r["status"] == 200 for r in lists), describe(lists)
    assert any("continuation-token=" in r["query"] for r in lists), describe(lists)


# ---- 6. an object overwritten under the mount ---------------------------------------------

def test_s3_overwritten_under_mount(M, s3, fg, tmp_path):
    """The residuals' object replaced (same size, other bytes) while mounted, no disk
    cache: the next uncached read fails with EIO (412 to the If-Match of the listed
    ETag), never the new bytes, and keeps failing; the daemon logs it."""
    key = "victim/model.safetensors"
    old_etag = s3.etags[key]
    fm = fg(*LAZY_OPTS, "s3://models/base+s3://models/victim", env=s3_env(str(tmp_path), s3))
    # a tensor of the first shard far from the header blocks of both files
    path = os.path.join(M.res.path, "model.safetensors")
    name = max(M.base.shards[0][1], key=lambda n: st_offsets(path, n)[0])
    lo, hi = st_offsets(path, name)
    assert lo >= 2 * BLOCK, (name, lo)
    raw = bytearray(H.read_file(path))
    raw[lo:hi] = bytes(x ^ 0x01 for x in raw[lo:hi])
    new_etag = s3.overwrite("models", key, bytes(raw))
    assert new_etag != old_etag
    t_over = time.monotonic()
    blo, bhi = st_offsets(os.path.join(M.base.path, SHARD1), name)
    expect_eio(fm, fm.path(SHARD1), blo, bhi - blo, 30, "a read after the object changed")
    time.sleep(1.2)   # a failed range answers at once for a second
    expect_eio(fm, fm.path(SHARD1), blo, 4096, 30, "a second read after the object changed")
    expect_eio(fm, fm.path(SHARD1), blo + (bhi - blo) // 2, 4096, 30, "a third read after the object changed")
    assert fm.alive()
    after = [r for r in object_gets(s3, key) if r["t"] >= t_over]
    assert after, "no request for the changed object (the test means nothing)"
    assert any(r["status"] == 412 for r in after), describe(after)
    for r in after:
        assert r["if_match"] == old_etag, f"If-Match {r['if_match']}, listed {old_etag}: {r}"
        assert r["status"] == 412 or r["sent"] == 0, f"bytes of the new object were sent: {r}"
    assert "victim" in fm.log(), fm.log()[-2000:]


# ---- 7. laziness ------------------------------------------------------------------------

def lazy_bound(b, *, tensor=True):
    """What reading TARGET may cost: every safetensors file's first MiB (headers), the
    small files whole, and with @tensor its base and residual ranges rounded out to
    1 MiB blocks (TARGET ends both files: no prefetch past it), plus one block of each
    source for the first tensor of the merged file: the kernel reads the merged header
    in whole pages, and its last page holds that tensor's first bytes."""
    small = sum(s for d in b.sizes.values() for fn, s in d.items() if not fn.endswith(".safetensors"))
    nst = sum(1 for d in b.sizes.values() for fn in d if fn.endswith(".safetensors"))
    bound = nst * BLOCK + small
    if tensor:
        for lo, hi in (b.base_range, b.res_range):
            bound += (hi + BLOCK - 1) // BLOCK * BLOCK - lo // BLOCK * BLOCK
        bound += 2 * BLOCK
    return bound


def test_s3_lazy_one_tensor(lazy, s3, fg, tmp_path):
    """Mounting fetches the headers and small files; reading one tensor fetches its base
    and residual ranges on top, in range GETs: far below the model's size."""
    fm = fg(*LAZY_OPTS, "s3://models/lazy/base+s3://models/lazy/res", env=s3_env(str(tmp_path), s3))
    time.sleep(0.3)
    sent = s3.bytes_sent()
    bound = lazy_bound(lazy, tensor=False)
    assert sent <= bound, (f"mounting fetched {sent / MiB:.2f} MiB of a {lazy.total / MiB:.1f} MiB model; "
                           f"the headers and small files are {bound / MiB:.2f} MiB:\n{describe(s3.requests())}")
    p = fm.path(SHARD1)

    def read_target():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no kernel readahead
            n = int.from_bytes(os.pread(fd, 8, 0), "little")
            hdr = json.loads(os.pread(fd, n, 8))
            b, e = hdr[TARGET]["data_offsets"]
            return os.pread(fd, e - b, 8 + n + b)
        finally:
            os.close(fd)

    data = guarded(fm, "reading one tensor", read_target)
    H.assert_same(data, lazy.expected, f"{p}: {TARGET}")
    time.sleep(0.3)   # prefetches started by the read
    reqs = sorted(s3.requests(), key=lambda r: r["t"])
    sent = sum(r["sent"] for r in reqs)
    bound = lazy_bound(lazy)
    assert bound * 3 < lazy.total, "the model is too small for this test to mean something"
    assert sent <= bound, (f"reading one {len(data) / MiB:.1f} MiB tensor fetched {sent / MiB:.2f} MiB "
                           f"of a {lazy.total / MiB:.1f} MiB model (bound {bound / MiB:.2f} MiB):\n"
                           f"{describe(reqs, 80)}")
    assert sum(is_listing(r) for r in reqs) == 2, describe(reqs)
    # nothing of the base before the tensor but the header's first MiB
    lo = lazy.base_range[0] // BLOCK * BLOCK
    for r in object_gets(s3, f"lazy/base/{SHARD1}"):
        a = int(r["range"].split("=")[1].split("-")[0])
        assert a < BLOCK or a >= lo, f"fetched base bytes from {a}, before the tensor ({lo}): {r}"
    assert not object_gets(s3, f"lazy/base/{SHARD2}")[1:], describe(object_gets(s3, f"lazy/base/{SHARD2}"))


def test_s3_whole_read_in_parts(seq, s3, fg, tmp_path):
    """Reading the merged model from its start (4 MiB reads, the kernel's readahead
    sending several requests at once) fetches every byte of its files once, and past the
    first part (where the stream is recognised, from requests that may arrive out of
    order) in whole aligned 8 MiB parts, one GET each (GETs cost per request on object
    stores)."""
    fm = fg(*LAZY_OPTS, "s3://models/seq/base+s3://models/seq/res", env=s3_env(str(tmp_path), s3))
    names = sorted(n for n in os.listdir(fm.mp) if n.endswith(".safetensors"))
    assert names, os.listdir(fm.mp)
    for name in names:
        with open(fm.path(name), "rb", buffering=0) as f:
            while f.read(4 * MiB):
                pass
    time.sleep(0.3)   # prefetches started by the reads
    for d in ("base", "res"):
        for fn, size in seq.sizes[d].items():
            if not fn.endswith(".safetensors"):
                continue
            key = f"seq/{d}/{fn}"
            gets = object_gets(s3, key)
            spans = sorted(tuple(int(x) for x in r["range"].split("=")[1].split("-")) for r in gets)
            assert sum(b - a + 1 for a, b in spans) == size, f"{key}: {size} bytes:\n{describe(gets)}"
            for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
                assert a1 > b0, f"{key}: bytes {a1}-{min(b0, b1)} fetched twice:\n{describe(gets)}"
            later = [(a, b) for a, b in spans if b >= PART]
            assert len(later) == -(-size // PART) - 1 >= 3 and all(
                a % PART == 0 and b + 1 == min(a + PART, size) for a, b in later), (
                f"{key}: not one GET per part past the first:\n{describe(gets)}")


# ---- 8. faults --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["503-list", "503-get", "reset"])
def test_s3_fault_retried(M, s3, ref, fg, tmp_path, fault):
    """503 SlowDown on the first listing, 503 SlowDown on the first range GET of the
    residuals, a connection reset after part of a body: retried, every byte right."""
    want = ref(local(M, "base", "res"))
    obj = "/models/res/model.safetensors"
    if fault == "503-list":
        s3.add_fault(503, "SlowDown", count=1, method="GET", path_contains="/models")
    elif fault == "503-get":
        s3.add_fault(503, "SlowDown", count=1, method="GET", path_contains=obj)
    else:
        s3.add_fault(reset=True, keep=65536, count=1, method="GET", path_contains=obj)
    fm = fg("--remote-cache-size", "0", "--remote-timeout", "20", BASE_RES, env=s3_env(str(tmp_path), s3))
    compare(fm, want)
    assert fm.alive()
    reqs = sorted(s3.requests(), key=lambda r: r["t"])
    if fault == "503-list":
        lists = [r for r in reqs if is_listing(r) and "prefix=base" in r["query"]]
        assert [r["status"] for r in lists] == [503, 200], describe(lists)
        assert lists[1]["query"] == lists[0]["query"]
        return
    hits = [r for r in reqs if r["path"] == obj]
    if fault == "503-get":
        bad = [r for r in hits if r["status"] == 503]
        assert len(bad) == 1, describe(hits)
        again = [r for r in hits if r["t"] > bad[0]["t"] and r["range"] == bad[0]["range"]]
        assert any(r["status"] == 206 for r in again), describe(hits)
    else:
        cut = [r for r in hits if r["sent"] == 65536]
        assert len(cut) == 1, describe(hits)
        again = [r for r in hits if r["t"] > cut[0]["t"] and r["range"] == cut[0]["range"]]
        assert any(r["status"] == 206 and r["sent"] > 65536 for r in again), describe(hits)
