"""The S3 test server (tests/remote/s3server.py) as residfs's s3:// terms will
meet it, asked by curl (the CLI) with --aws-sigv4: libcurl's signer, the one
residfs uses (CURLOPT_AWS_SIGV4).  What a request must look like for the
signature to match is written in the helpers below (s3_path, s3_query,
curl); each test checks one thing residfs relies on: ranged GETs with ETags,
refused signatures, If-Match, ListObjectsV2 with its pages, odd keys, session
credentials, anonymous access to public buckets, the request log and faults.

The rules (curl 7.88.1, which signs the path and the query exactly as they are
in the URL: no encoding, no sorting of its own; S3 signs its own canonical
form, which the server checks for as S3 would - moto alone signs what was
sent):
  - header x-amz-content-sha256 on every request (UNSIGNED-PAYLOAD, or the
    sha256 of the empty body); without it S3 answers 400 InvalidRequest;
  - the path: /BUCKET/KEY with every byte of the key's UTF-8 other than
    A-Z a-z 0-9 - _ . ~ and / written %XX (upper-case hex); "+" too, and
    CURLOPT_PATH_AS_IS so that "." and ".." segments stay as they are;
  - the query: each name and value encoded the same way ("/" too: %2F),
    sorted by name, joined with & (a name without value: "name=").
"""
import hashlib
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "remote"))
from s3server import S3Server  # noqa: E402

CURL = "/usr/bin/curl" if os.path.exists("/usr/bin/curl") else "curl"
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
UNSIGNED = "UNSIGNED-PAYLOAD"
ODD_KEY = "dir/a b+c\u00e9&=?#%;'\"<x>.bin"      # space, +, non-ASCII, XML and URL specials


def s3_quote(s, slash=False):
    """AWS SigV4 URI encoding: UTF-8, every byte but A-Za-z0-9-_.~ (and /
    in a path) as %XX with upper-case hex."""
    return quote(s.encode(), safe="-_.~" + ("/" if slash else ""))


def s3_path(bucket, key=""):
    return f"/{bucket}/{s3_quote(key, slash=True)}" if key else f"/{bucket}"


def s3_query(params):
    """The query string as the canonical request has it: names and values
    encoded, sorted by encoded name (then value)."""
    return "&".join(f"{k}={v}" for k, v in
                    sorted((s3_quote(k), s3_quote(str(v))) for k, v in params.items()))


class Answer:
    def __init__(self, rc, raw, stderr):
        self.rc, self.stderr = rc, stderr
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def xml(self):
        return ET.fromstring(self.body)

    def code(self):
        """The <Code> of an S3 error answer."""
        return self.xml().findtext("Code")

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.body[:300]!r} {self.stderr!r}>"


def curl(s3, path, query="", *, creds=None, sign=True, sha256=UNSIGNED, token=None,
         headers=(), rng=None, head=False):
    """One request as residfs makes it: GET (or HEAD) endpoint+path?query,
    signed by libcurl (aws:amz:REGION:s3) with @creds (default: the
    server's), Range through CURLOPT_RANGE (-r: not a signed header)."""
    url = s3.endpoint + path + (f"?{query}" if query else "")
    cmd = [CURL, "-sS", "-i", "-g", "--path-as-is", "--max-time", "20"]
    if sign:
        key, secret = creds or (s3.access_key, s3.secret_key)
        cmd += ["--aws-sigv4", f"aws:amz:{s3.region}:s3", "--user", f"{key}:{secret}"]
    if sha256:
        cmd += ["-H", f"x-amz-content-sha256: {sha256}"]
    if token:
        cmd += ["-H", f"x-amz-security-token: {token}"]
    for h in headers:
        cmd += ["-H", h]
    if rng:
        cmd += ["-r", rng]
    if head:
        cmd += ["-I"]
    r = subprocess.run(cmd + [url], capture_output=True, timeout=30)
    return Answer(r.returncode, r.stdout, r.stderr.decode(errors="replace"))


def listing(ans):
    """(keys {key: (size, etag)}, common prefixes, IsTruncated, token) of a
    ListObjectsV2 answer."""
    root = ans.xml()
    assert root.tag == NS + "ListBucketResult", ans
    keys = {c.findtext(NS + "Key"): (int(c.findtext(NS + "Size")), c.findtext(NS + "ETag"))
            for c in root.findall(NS + "Contents")}
    prefixes = [p.findtext(NS + "Prefix") for p in root.findall(NS + "CommonPrefixes")]
    return (keys, prefixes, root.findtext(NS + "IsTruncated"),
            root.findtext(NS + "NextContinuationToken"))


DATA = bytes(range(256)) * 4 + b"tail"        # 1028 bytes
OTHER = b"other bytes\n" * 10


@pytest.fixture(scope="module")
def s3():
    with S3Server() as srv:
        srv.make_bucket("models")
        srv.make_bucket("public", public=True)
        srv.put("models", "base/model.safetensors", DATA)
        srv.put("models", "base/config.json", OTHER)
        srv.put("models", "base/sub/deep.bin", b"deep")
        srv.put("models", ODD_KEY, OTHER)
        srv.put("models", "dots/./x/../k", b"dots")
        srv.put("public", "m/w.bin", DATA)
        srv.put_many("models", {f"many/k{i:05d}": b"%d" % i for i in range(1105)})
        yield srv


@pytest.fixture(autouse=True)
def _fresh(s3):
    s3.clear_faults()
    s3.clear_requests()
    yield


def test_ranged_get(s3):
    a = curl(s3, s3_path("models", "base/model.safetensors"), rng="10-19")
    assert a.status == 206, a
    assert a.body == DATA[10:20]
    assert a.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
    assert a.headers["etag"] == S3Server.etag(DATA) == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert a.headers["content-length"] == "10"
    assert "last-modified" in a.headers
    # a suffix range, and the whole file
    a = curl(s3, s3_path("models", "base/model.safetensors"), rng="-4")
    assert (a.status, a.body, a.headers["content-range"]) == (206, b"tail", "bytes 1024-1027/1028")
    a = curl(s3, s3_path("models", "base/model.safetensors"))
    assert (a.status, a.body) == (200, DATA)
    # past the end: 416 InvalidRange
    a = curl(s3, s3_path("models", "base/model.safetensors"), rng="5000-5001")
    assert (a.status, a.code()) == (416, "InvalidRange"), a
    # HEAD: size and ETag, no body
    a = curl(s3, s3_path("models", "base/model.safetensors"), head=True)
    assert (a.status, a.headers["content-length"], a.headers["etag"]) == \
        (200, str(len(DATA)), S3Server.etag(DATA)), a
    # the same with the sha256 of the empty body instead of UNSIGNED-PAYLOAD
    a = curl(s3, s3_path("models", "base/config.json"), sha256=hashlib.sha256(b"").hexdigest())
    assert (a.status, a.body) == (200, OTHER), a


def test_refused_signatures(s3):
    p = s3_path("models", "base/model.safetensors")
    a = curl(s3, p, creds=(s3.access_key, s3.secret_key + "x"), rng="0-9")
    assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
    a = curl(s3, p, creds=("AKIDNOSUCHKEY", s3.secret_key))
    assert (a.status, a.code()) == (403, "InvalidAccessKeyId"), a
    a = curl(s3, p, creds=(s3.access_key, s3.secret_key), sha256=None)
    assert (a.status, a.code()) == (400, "InvalidRequest"), a
    assert b"x-amz-content-sha256" in a.body
    # another region in the credential scope: S3's 400 naming the right one
    a = subprocess.run([CURL, "-s", "-i", "--aws-sigv4", "aws:amz:eu-west-1:s3",
                        "--user", f"{s3.access_key}:{s3.secret_key}",
                        "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", s3.endpoint + p],
                       capture_output=True)
    a = Answer(a.returncode, a.stdout, a.stderr)
    assert (a.status, a.code(), a.xml().findtext("Region")) == \
        (400, "AuthorizationHeaderMalformed", s3.region), a
    assert a.headers["x-amz-bucket-region"] == s3.region
    # not signed at all, on a private bucket
    a = curl(s3, p, sign=False)
    assert (a.status, a.code()) == (403, "AccessDenied"), a


def test_not_found(s3):
    a = curl(s3, s3_path("nosuchbucket", "k"))
    assert (a.status, a.code(), a.xml().findtext("BucketName")) == (404, "NoSuchBucket",
                                                                    "nosuchbucket"), a
    a = curl(s3, s3_path("nosuchbucket"), s3_query({"list-type": 2}))
    assert (a.status, a.code()) == (404, "NoSuchBucket"), a
    a = curl(s3, s3_path("models", "base/nosuchkey"))
    assert (a.status, a.code(), a.xml().findtext("Key")) == (404, "NoSuchKey", "base/nosuchkey"), a
    a = curl(s3, s3_path("models", "base/nosuchkey"), head=True)
    assert (a.status, a.body) == (404, b""), a


def test_if_match(s3):
    p = s3_path("models", "base/model.safetensors")
    a = curl(s3, p, rng="0-3", headers=['If-Match: "0123456789abcdef0123456789abcdef"'])
    assert (a.status, a.code()) == (412, "PreconditionFailed"), a
    a = curl(s3, p, rng="0-3", headers=[f"If-Match: {S3Server.etag(DATA)}"])
    assert (a.status, a.body) == (206, DATA[:4]), a
    assert s3.requests()[-1]["if_match"] == S3Server.etag(DATA)


def test_overwrite(s3):
    s3.put("models", "tmp/changing.bin", DATA)
    old = S3Server.etag(DATA)
    new = s3.overwrite("models", "tmp/changing.bin", OTHER)
    assert new == S3Server.etag(OTHER) != old
    p = s3_path("models", "tmp/changing.bin")
    a = curl(s3, p, rng="0-3", headers=[f"If-Match: {old}"])
    assert a.status == 412, a
    a = curl(s3, p, rng="0-3")
    assert (a.status, a.body, a.headers["etag"]) == (206, OTHER[:4], new)
    with pytest.raises(KeyError):
        s3.overwrite("models", "tmp/never-made", b"x")


def test_list(s3):
    q = s3_query({"list-type": 2, "prefix": "base/", "delimiter": "/"})
    assert q == "delimiter=%2F&list-type=2&prefix=base%2F"
    a = curl(s3, s3_path("models"), q)
    assert a.status == 200, a
    keys, prefixes, truncated, token = listing(a)
    assert keys == {"base/model.safetensors": (len(DATA), S3Server.etag(DATA)),
                    "base/config.json": (len(OTHER), S3Server.etag(OTHER))}
    assert (prefixes, truncated, token) == (["base/sub/"], "false", None)
    root = a.xml()
    assert (root.findtext(NS + "KeyCount"), root.findtext(NS + "Prefix"),
            root.findtext(NS + "Delimiter")) == ("3", "base/", "/")
    # the ETag element holds the quotes; the answer says "..." where S3
    # itself writes &quot;...&quot;: both parse to the same text
    assert b'<ETag>"' in a.body
    # no delimiter: everything under the prefix
    keys, prefixes, _, _ = listing(curl(s3, s3_path("models"),
                                        s3_query({"list-type": 2, "prefix": "base/"})))
    assert set(keys) == {"base/model.safetensors", "base/config.json", "base/sub/deep.bin"}
    assert prefixes == []
    # "/" not encoded in a value: refused (S3 signs %2F)
    a = curl(s3, s3_path("models"), "delimiter=/&list-type=2&prefix=base/")
    assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
    assert "canonical: delimiter=%2F" in a.xml().findtext("Residfs-Not-Canonical")
    # curl 7.x signs the query as written: unsorted, the signature differs
    # from the canonical one (later curls sort it themselves)
    unsorted = "list-type=2&prefix=base%2F&delimiter=%2F"
    a = curl(s3, s3_path("models"), unsorted)
    version = subprocess.run([CURL, "--version"], capture_output=True, text=True).stdout
    if re.match(r"curl 7\.", version):
        assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
    else:
        assert a.status == 200, a


def test_list_pages(s3):
    q = {"list-type": 2, "prefix": "many/"}
    a = curl(s3, s3_path("models"), s3_query(q))
    keys, _, truncated, token = listing(a)
    assert (len(keys), truncated) == (1000, "true"), a
    assert token and re.search(r"[+/=]", token), token   # S3-like: base64, needs encoding
    assert max(keys) == "many/k00999"
    a = curl(s3, s3_path("models"), s3_query({**q, "continuation-token": token}))
    keys2, _, truncated, token2 = listing(a)
    assert (len(keys2), truncated, token2) == (105, "false", None), a
    assert min(keys2) == "many/k01000" and max(keys2) == "many/k01104"
    assert keys2["many/k01104"] == (4, S3Server.etag(b"1104"))
    # the token written as it came: not what S3 signs (and "+" would read
    # as a space)
    a = curl(s3, s3_path("models"), f"continuation-token={token}&list-type=2&prefix=many%2F")
    assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
    # a token the server never gave: S3's 400
    a = curl(s3, s3_path("models"), s3_query({**q, "continuation-token": "AAAA+/=="}))
    assert (a.status, a.code()) == (400, "InvalidArgument"), a
    # smaller pages with max-keys
    a = curl(s3, s3_path("models"), s3_query({**q, "max-keys": 7}))
    keys, _, truncated, token = listing(a)
    assert (len(keys), truncated, a.xml().findtext(NS + "MaxKeys")) == (7, "true", "7")


def test_odd_keys(s3):
    path = s3_path("models", ODD_KEY)
    assert path == "/models/dir/a%20b%2Bc%C3%A9%26%3D%3F%23%25%3B%27%22%3Cx%3E.bin"
    a = curl(s3, path)
    assert (a.status, a.body) == (200, OTHER), a
    assert s3.requests()[-1]["path"] == path
    assert S3Server.key_of(path, "models") == ODD_KEY
    # listed with the key's text entity-escaped (&amp; &lt; &gt;) and UTF-8
    a = curl(s3, s3_path("models"), s3_query({"list-type": 2, "prefix": "dir/a b+c\u00e9"}))
    keys, _, _, _ = listing(a)
    assert list(keys) == [ODD_KEY], a
    assert "&amp;".encode() in a.body and "\u00e9".encode() in a.body
    # encoding-type=url: keys and prefix percent-encoded in the answer
    a = curl(s3, s3_path("models"), s3_query({"list-type": 2, "prefix": "dir/",
                                              "encoding-type": "url"}))
    root = a.xml()
    assert root.findtext(NS + "EncodingType") == "url", a
    assert root.find(NS + "Contents").findtext(NS + "Key") == quote(ODD_KEY)
    # what S3 refuses (it signs its own canonical form; moto alone would not
    # see the difference): "+" and " " not encoded, lower-case hex
    for bad in ("/models/dir/a%20b+c%C3%A9%26%3D%3F%23%25%3B%27%22%3Cx%3E.bin",
                "/models/dir/a%20b%2bc%c3%a9%26%3d%3f%23%25%3b%27%22%3cx%3e.bin"):
        a = curl(s3, bad)
        assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
        assert a.xml().findtext("Residfs-Not-Canonical").startswith("path "), a
    # "." and ".." segments are kept with CURLOPT_PATH_AS_IS
    a = curl(s3, s3_path("models", "dots/./x/../k"))
    assert (a.status, a.body) == (200, b"dots"), a


def test_session_credentials(s3):
    c = s3.session_credentials()
    assert c["access_key"].startswith("ASIA") and c["session_token"]
    creds = (c["access_key"], c["secret_key"])
    p = s3_path("models", "base/model.safetensors")
    a = curl(s3, p, creds=creds, token=c["session_token"], rng="0-7")
    assert (a.status, a.body) == (206, DATA[:8]), a
    assert s3.requests()[-1]["token"] == c["session_token"]
    a = curl(s3, s3_path("models"), s3_query({"list-type": 2, "prefix": "base/"}),
             creds=creds, token=c["session_token"])
    assert a.status == 200, a
    a = curl(s3, p, creds=creds)                                   # no token
    assert (a.status, a.code()) == (403, "InvalidAccessKeyId"), a
    a = curl(s3, p, creds=creds, token=c["session_token"][:-4] + "AAAA")
    assert (a.status, a.code()) == (400, "InvalidToken"), a
    a = curl(s3, p, creds=(c["access_key"], "wrong"), token=c["session_token"])
    assert (a.status, a.code()) == (403, "SignatureDoesNotMatch"), a
    s3.expire_session(c)
    a = curl(s3, p, creds=creds, token=c["session_token"])
    assert (a.status, a.code()) == (400, "ExpiredToken"), a
    # the server's own key still works
    assert curl(s3, p, rng="0-0").status == 206


def test_anonymous(s3):
    a = curl(s3, s3_path("public", "m/w.bin"), sign=False, sha256=None, rng="1-2")
    assert (a.status, a.body) == (206, DATA[1:3]), a
    a = curl(s3, s3_path("public", "m/w.bin"), sign=False, sha256=None, head=True)
    assert (a.status, a.headers["etag"]) == (200, S3Server.etag(DATA)), a
    a = curl(s3, s3_path("public"), s3_query({"list-type": 2}), sign=False, sha256=None)
    assert list(listing(a)[0]) == ["m/w.bin"], a
    a = curl(s3, s3_path("public", "m/nokey"), sign=False, sha256=None)
    assert (a.status, a.code()) == (404, "NoSuchKey"), a
    a = curl(s3, s3_path("models", "base/config.json"), sign=False, sha256=None)
    assert (a.status, a.code()) == (403, "AccessDenied"), a
    a = curl(s3, s3_path("models"), s3_query({"list-type": 2}), sign=False, sha256=None)
    assert (a.status, a.code()) == (403, "AccessDenied"), a
    a = curl(s3, s3_path("models", "base/config.json"), sign=False, sha256=None, head=True)
    assert (a.status, a.body) == (403, b""), a
    # signed requests to a public bucket work as well
    a = curl(s3, s3_path("public", "m/w.bin"), rng="0-0")
    assert a.status == 206, a


def test_log_and_faults(s3):
    p = s3_path("models", "base/model.safetensors")
    s3.put("models", "tmp/admin-only", b"x")            # the fixture's own: not logged
    assert s3.requests() == [] and s3.requests(admin=True)
    curl(s3, p, rng="100-199")
    curl(s3, p, rng="0-9")
    r = s3.requests()
    assert [(x["method"], x["path"], x["range"], x["status"], x["sent"]) for x in r] == \
        [("GET", p, "bytes=100-199", 206, 100), ("GET", p, "bytes=0-9", 206, 10)]
    assert r[0]["auth"].startswith(f"AWS4-HMAC-SHA256 Credential={s3.access_key}/")
    assert s3.bytes_sent() == 110
    s3.clear_requests()
    s3.add_fault(503, "SlowDown", count=2, path_contains="model.safetensors")
    for _ in range(2):
        a = curl(s3, p, rng="0-9")
        assert (a.status, a.code()) == (503, "SlowDown"), a
    assert curl(s3, p, rng="0-9").status == 206
    s3.add_fault(reset=True)
    a = curl(s3, p, rng="0-9")
    assert a.rc == 56 and a.status is None, a          # "Connection reset by peer"
    s3.add_fault(reset=True, keep=100)
    a = curl(s3, p)
    assert a.rc in (18, 56) and a.body == DATA[:100], a
    assert [x["status"] for x in s3.requests()] == [503, 503, 206, None, 200]
    assert [x["sent"] for x in s3.requests()][2:] == [10, 0, 100]
