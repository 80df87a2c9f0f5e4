"""hubemu - a Hugging Face Hub emulator for tests (Python standard library only).

Two HTTP/1.1 servers (keep-alive, one thread per connection) on 127.0.0.1:

  hub  http://127.0.0.1:PORT       (HubEmu.endpoint: what HF_ENDPOINT names)
  cdn  http://localhost:CDNPORT    (another host name, so that a client that
                                    drops Authorization on cross-host
                                    redirects is exercised)

What it emulates (as huggingface_hub 0.36 expects it):

  GET  /api/models/{repo}[/revision/{rev}][?blobs=true]  model info: id, sha,
       siblings (size, blobId and lfs {sha256, size, pointerSize} only with
       blobs=true), private, gated (false, "auto" or "manual")
  GET  /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]  file and
       directory entries ({type, oid, size, path, lfs {oid, size,
       pointerSize}}), pages of `tree_page_size` linked by
       `Link: <absolute url>; rel="next"`
  HEAD/GET /{repo}/resolve/{rev}/{path}  X-Repo-Commit, ETag (the git blob
       id; for an LFS file the id of its pointer), and for LFS files
       X-Linked-Etag ("<sha256>"), X-Linked-Size and a 302 to a signed CDN
       URL /cdn/<sha256>?expires=T&sig=S (valid `cdn_ttl` seconds; expired
       or bad signature: 403; its answers carry ETag "<sha256>", or the md5
       of the content with cdn_etag = "md5", like S3).  Other
       files are answered by the hub itself.
  Ranges (hub files and CDN): one `bytes=a-b`, `bytes=a-` or `bytes=-n` is
       206 with Content-Range; unsatisfiable: 416 `bytes */total`; several
       ranges or a malformed header: 200 with everything.  If-Match (412 when
       no tag matches) and If-Range (a stale one gets 200).  Never compressed.
  Revisions: branch and tag names (any ref, "refs/pr/1" too; quoted as
       `refs%2Fpr%2F1` or not) and 40-hex commit ids.
  Errors: X-Error-Code, X-Error-Message and {"error": ...}: unknown repo 401
       RepoNotFound anonymously (404 with the token); unknown revision 404
       RevisionNotFound; missing file 404 EntryNotFound (with X-Repo-Commit);
       gated repo: files need the token (401 GatedRepo), the API answers;
       private repo: everything needs the token (401 RepoNotFound); any other
       token: 401 "Invalid credentials in Authorization header", no code.  The
       CDN never looks at Authorization (`cdn_reject_auth = True` makes it
       answer 400 to requests carrying one, as S3 does for signed URLs).
  A request log: `log`, one dict per request in the order answered: t
       (time.monotonic() at its start), server ("hub"/"cdn"), method, path
       (as sent, quoted), query, range (the Range header or None), status,
       sent (body bytes written), auth (Authorization or None); requests()
       and bytes_sent() wait for answers in progress first.
  Fault injection (`add_fault`: status, reset, short, ignore_range,
       wrong_range, stall, latency, expire, bad_json; the body faults apply
       to GET only), latency (`latency_ms`) and content that changes under a
       commit (`replace_file`).

What it does not emulate: uploads and every write API, Xet (no X-Xet-*
headers: clients use the LFS path), datasets and spaces, repo renames
(relative redirects), refs listing, commits history, `expand=`,
securityStatus, the real Hub's ordering of fields and rate limits.

    with HubEmu() as emu:
        commit = emu.add_repo("org/m", {"model.safetensors": b"..."})
        os.environ["HF_ENDPOINT"] = emu.endpoint

Run by hand: python3 hubemu.py --root DIR --port N  (DIR/org/name/* are repos)
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote

LFS_THRESHOLD = 10 * 1024 * 1024
FAULTS = ("status", "reset", "short", "ignore_range", "wrong_range", "stall", "latency",
          "expire", "bad_json")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_REV = r"(?P<rev>refs/(?:pr|convert)/[^/]+|[^/]+)"
_ROUTES = [
    ("info", re.compile(rf"^/api/models/{_REPO}(?:/revision/{_REV})?/?$")),
    ("tree", re.compile(rf"^/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?$")),
    ("resolve", re.compile(rf"^/{_REPO}/resolve/{_REV}/(?P<path>.+)$")),
]


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class File:
    path: str
    data: bytes
    lfs: bool
    sha256: str
    blob_id: str          # git blob id of the data, or of the LFS pointer
    pointer_size: int     # 0 for plain files

    @classmethod
    def make(cls, path, data):
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        if path.endswith(".safetensors") or len(data) > LFS_THRESHOLD:
            ptr = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                   f"size {len(data)}\n").encode()
            return cls(path, data, True, sha, git_blob_id(ptr), len(ptr))
        return cls(path, data, False, sha, git_blob_id(data), 0)

    @property
    def etag(self):         # what huggingface_hub keeps as the file's etag
        return self.sha256 if self.lfs else self.blob_id


class Repo:
    def __init__(self, repo_id):
        self.id, self.commits, self.refs = repo_id, {}, {}
        self.gated, self.private, self.created = False, False, time.time()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler):
        self.conns, self.conns_lock = set(), threading.Lock()
        super().__init__(addr, handler)

    def close_all(self):
        with self.conns_lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Abort(Exception):
    """The connection is gone (a fault closed it or the client left)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubemu/1"
    timeout = 120
    emu = role = None   # set by HubEmu.start

    def setup(self):
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._handle()

    do_HEAD = do_GET

    # -- plumbing -------------------------------------------------------
    def _handle(self):
        path, _, query = self.path.partition("?")
        self.q = {k: v[-1] for k, v in parse_qs(query).items()}
        self.rec = dict(t=time.monotonic(), server=self.role, method=self.command,
                        path=path, query=query,
                        range=self.headers.get("Range"), status=None, sent=0,
                        auth=self.headers.get("Authorization"))
        with self.emu._lock:
            self.emu._busy += 1
        try:
            self.fault = self.emu._take_fault(self.role, path)
            kind = self.fault["kind"] if self.fault else None
            delay = self.emu.latency_ms + (self.fault.get("ms", 0) if kind == "latency" else 0)
            if delay:
                time.sleep(delay / 1000)
            if kind == "status":
                code = self.fault.get("code", 503)
                hdrs = {}
                if self.fault.get("retry_after") is not None:
                    hdrs["Retry-After"] = str(self.fault["retry_after"])
                self._json(code, {"error": f"injected {code}"}, hdrs)
            elif kind == "expire" and self.role == "cdn":
                self._send(403, b"Request has expired", {}, "text/plain")
            elif self.role == "cdn":
                self._cdn(path)
            else:
                self._hub(path)
        except (_Abort, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.emu._record(self.rec)

    def _send(self, status, body, headers, ctype="application/json; charset=utf-8"):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.rec["status"] = status
        if self.command != "HEAD":
            self._body(body)
        else:
            self.wfile.flush()

    def _body(self, body):
        kind = self.fault["kind"] if self.fault else None
        if kind in ("reset", "short", "stall"):
            part = body[: self.fault.get("keep", len(body) // 2)]
            self._write(part)
            if kind == "stall":
                self.emu._stopping.wait(self.fault.get("seconds", 5))
            if kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.rfile.close()
                self.connection.close()
            raise _Abort()
        self._write(body)

    def _write(self, data):
        for i in range(0, len(data), 1 << 16):
            self.wfile.write(data[i:i + (1 << 16)])
            self.rec["sent"] += len(data[i:i + (1 << 16)])
        self.wfile.flush()

    def _json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        if self.fault and self.fault["kind"] == "bad_json":
            body = body[: len(body) // 2] + b"\x00}"
        self._send(status, body, headers or {})

    def _error(self, status, code, message, headers=None):
        h = {"X-Error-Message": message, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._json(status, {"error": message}, h)

    # -- bytes with ranges -------------------------------------------------
    def _bytes(self, data, etag, headers):
        total, rng = len(data), self.headers.get("Range")
        kind = self.fault["kind"] if self.fault else None
        headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes", **headers}
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() != "*" and \
                f'"{etag}"' not in [t.strip() for t in if_match.split(",")]:
            return self._send(412, b"Precondition Failed", headers, "text/plain")
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range.strip() != f'"{etag}"':
            rng = None
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if not m or kind == "ignore_range" or (not m[1] and not m[2]):
            if kind != "wrong_range":
                return self._send(200, data, headers, "application/octet-stream")
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", f"bytes=0-{max(total - 1, 0)}")
        if m[1]:
            a, b = int(m[1]), int(m[2]) if m[2] else total - 1
            if m[2] and b < a:
                return self._send(200, data, headers, "application/octet-stream")
        else:
            a, b = max(total - int(m[2]), 0), total - 1
            if int(m[2]) == 0:
                a = total
        if a >= total:
            headers["Content-Range"] = f"bytes */{total}"
            return self._send(416, b"", headers, "text/plain")
        b, shown_total = min(b, total - 1), total
        if kind == "wrong_range":
            shift, n = self.fault.get("shift", 1), b - a + 1
            s = a + shift if a + shift + n <= total else max(0, a - shift)
            if s == a:
                shown_total = total + 1
            a, b = s, s + n - 1
        headers["Content-Range"] = f"bytes {a}-{b}/{shown_total}"
        self._send(206, data[a:b + 1], headers, "application/octet-stream")

    # -- the CDN ----------------------------------------------------------
    def _cdn(self, path):
        if self.emu.cdn_reject_auth and self.headers.get("Authorization"):
            return self._send(400, b"Only one auth mechanism allowed", {}, "text/plain")
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
        if not m:
            return self._send(404, b"Not Found", {}, "text/plain")
        sha, exp = m[1], self.q.get("expires", "")
        sig = self.q.get("sig", "").encode()
        if not (exp.isdigit() and hmac.compare_digest(sig, self.emu._sign(sha, exp).encode())
                and int(exp) >= time.time()):
            return self._send(403, b"Request has expired", {}, "text/plain")
        with self.emu._lock:
            data = self.emu._blobs.get(sha)
        if data is None:
            return self._send(404, b"Not Found", {}, "text/plain")
        tag = sha if self.emu.cdn_etag == "sha256" else hashlib.md5(data).hexdigest()
        self._bytes(data, tag, {})

    # -- the Hub ----------------------------------------------------------
    def _hub(self, path):
        for name, rx in _ROUTES:
            m = rx.match(path)
            if m:
                break
        else:
            return self._error(404, None, "Not Found")
        emu = self.emu
        auth = self.headers.get("Authorization")
        if auth and auth != f"Bearer {emu.token}":
            return self._error(401, None, "Invalid credentials in Authorization header")
        with emu._lock:
            repo = emu.repos.get(unquote(m["repo"]))
            rev = unquote(m["rev"] or "main")
            commit = files = None
            if repo is not None:
                commit = repo.refs.get(rev) or (rev if rev in repo.commits else None)
                files = repo.commits.get(commit)
        if repo is None or (repo.private and not auth):
            return self._error(404 if auth else 401, "RepoNotFound", "Repository not found")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if name == "info":
            blobs = self.q.get("blobs", "").lower() == "true"
            return self._json(200, emu._info(repo, commit, files, blobs))
        p = unquote(m["path"] or "")
        if name == "tree":
            return self._tree(rev, commit, files, p.strip("/"))
        if repo.gated and not auth:
            return self._error(401, "GatedRepo", f"Access to model {repo.id} is restricted. "
                               "You must have access to it and be authenticated to access it. "
                               "Please log in.", {"X-Repo-Commit": commit})
        f = files.get(p)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        h = {"X-Repo-Commit": commit}
        if not f.lfs:
            return self._bytes(f.data, f.blob_id, h)
        loc = emu.cdn_url(f.sha256)
        h.update({"ETag": f'"{f.blob_id}"', "X-Linked-Etag": f'"{f.sha256}"',
                  "X-Linked-Size": str(len(f.data)), "Location": loc, "Accept-Ranges": "bytes"})
        self._send(302, f"Found. Redirecting to {loc}".encode(), h, "text/plain; charset=utf-8")

    def _tree(self, rev, commit, files, p):
        recursive = self.q.get("recursive", "false").lower() in ("true", "1")
        pre = p + "/" if p else ""
        if p and not any(k.startswith(pre) for k in files):
            return self._error(404, "EntryNotFound", f"{p} does not exist on \"{rev}\"",
                               {"X-Repo-Commit": commit})
        entries = {}
        for k, f in files.items():
            if not k.startswith(pre):
                continue
            parts = k[len(pre):].split("/")
            for i in range(1, len(parts)):
                d = pre + "/".join(parts[:i])
                if recursive or i == 1:
                    entries[d] = {"type": "directory", "oid": hashlib.sha1(
                        f"{commit}:{d}".encode()).hexdigest(), "size": 0, "path": d}
            if recursive or len(parts) == 1:
                e = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": k}
                if f.lfs:
                    e["lfs"] = {"oid": f.sha256, "size": len(f.data),
                                "pointerSize": f.pointer_size}
                entries[k] = e
        items = [entries[k] for k in sorted(entries)]
        start = int(self.q.get("cursor", "0") or 0)
        n = self.emu.tree_page_size
        h = {}
        if start + n < len(items):
            q = dict(self.q, cursor=str(start + n))
            url = self.emu.endpoint + self.path.partition("?")[0] + "?" + "&".join(
                f"{k}={quote(v, safe='')}" for k, v in q.items())
            h["Link"] = f'<{url}>; rel="next"'
        self._json(200, items[start:start + n], h)


class HubEmu:
    """The emulator; see the module's docstring.  Everything may be changed
    while it serves (repos, faults, latency_ms, tree_page_size, cdn_ttl)."""

    def __init__(self, token="hf_emuTokenForTests0123456789"):
        self.token = token
        self.repos = {}
        self.tree_page_size = 1000
        self.cdn_ttl = 3600
        self.latency_ms = 0
        self.cdn_reject_auth = False
        self.cdn_etag = "sha256"    # or "md5", as S3 behind CloudFront sends
        self.log = []
        self.endpoint = self.cdn_endpoint = None
        self._blobs = {}
        self._faults = []
        self._key = os.urandom(16)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._servers = []

    # -- content ----------------------------------------------------------
    def add_repo(self, repo_id, files, revision="main", commit=None, gated=None,
                 private=None):
        """Makes @files ({path: bytes}) the whole tree of a new commit that
        @revision (a branch or tag name) points to; returns the commit id
        (@commit, or a sha1 of the repo, revision and contents).  gated: True
        ("auto"), "manual" or False; gated and private: None keeps the repo's
        (False for a new repo)."""
        entries = {p: File.make(p, d) for p, d in files.items()}
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id))
            if gated is not None:
                repo.gated = "auto" if gated is True else gated
            if private is not None:
                repo.private = private
            if commit is None:
                h = hashlib.sha1(f"{repo_id}\0{revision}\0{repo.refs.get(revision, '')}\0"
                                 f"{len(repo.commits)}\0".encode())
                for p in sorted(entries):
                    h.update(f"{p}\0{entries[p].sha256}\0".encode())
                commit = h.hexdigest()
            if not _HEX40.match(commit):
                raise ValueError(f"commit {commit!r} is not 40 lowercase hex digits")
            repo.commits[commit] = entries
            repo.refs[revision] = commit
            for f in entries.values():
                if f.lfs:
                    self._blobs[f.sha256] = f.data
        return commit

    def add_repo_dir(self, repo_id, local_dir, **kw):
        """add_repo with the regular files at the top of @local_dir."""
        files = {}
        for name in sorted(os.listdir(local_dir)):
            full = os.path.join(local_dir, name)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as fh:
                    files[name] = fh.read()
        return self.add_repo(repo_id, files, **kw)

    def add_ref(self, repo_id, name, commit):
        """Points branch or tag @name at an existing @commit."""
        with self._lock:
            repo = self.repos[repo_id]
            if commit not in repo.commits:
                raise KeyError(commit)
            repo.refs[name] = commit

    def replace_file(self, repo_id, path, new_bytes, keep_commit=True, revision="main"):
        """Serves @new_bytes for @path of @revision's commit (keep_commit), or
        in a new commit on @revision.  Returns the commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            commit = repo.refs.get(revision, revision)
            if not keep_commit:
                files = {p: f.data for p, f in repo.commits[commit].items()}
                files[path] = new_bytes
                return self.add_repo(repo_id, files, revision)
            f = File.make(path, new_bytes)
            repo.commits[commit] = {**repo.commits[commit], path: f}
            if f.lfs:
                self._blobs[f.sha256] = f.data
            return commit

    def file(self, repo_id, path, revision="main"):
        """The File served for @path at @revision."""
        with self._lock:
            repo = self.repos[repo_id]
            return repo.commits[repo.refs.get(revision, revision)][path]

    def _info(self, repo, commit, files, blobs):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo.created))
        sib = []
        for p in sorted(files):
            f, s = files[p], {"rfilename": p}
            if blobs:
                s.update(size=len(f.data), blobId=f.blob_id)
                if f.lfs:
                    s["lfs"] = {"sha256": f.sha256, "size": len(f.data),
                                "pointerSize": f.pointer_size}
            sib.append(s)
        return {"_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24], "id": repo.id,
                "modelId": repo.id, "author": repo.id.split("/")[0] if "/" in repo.id else None,
                "sha": commit, "lastModified": stamp, "createdAt": stamp,
                "private": repo.private, "gated": repo.gated, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                "siblings": sib}

    # -- CDN URLs ---------------------------------------------------------
    def _sign(self, sha, expires):
        return hmac.new(self._key, f"{sha}:{expires}".encode(), "sha256").hexdigest()[:32]

    def cdn_url(self, sha256, ttl=None):
        """A signed CDN URL for the blob @sha256 valid for @ttl seconds
        (default cdn_ttl; a negative ttl gives an already expired one)."""
        exp = str(int(time.time() + (self.cdn_ttl if ttl is None else ttl)))
        return f"{self.cdn_endpoint}/cdn/{sha256}?expires={exp}&sig={self._sign(sha256, exp)}"

    # -- faults and the log -------------------------------------------------
    def add_fault(self, kind, match="", server="cdn", count=1, **args):
        """The next @count requests to @server ("hub" or "cdn") whose path
        contains @match get fault @kind.  Arguments: status: code=503,
        retry_after=None; reset/short/stall: keep=len//2 body bytes sent,
        stall: seconds=5; latency: ms; wrong_range: shift=1.  bad_json only
        applies to /api/ paths.  Rules are tried in the order added."""
        if kind not in FAULTS or server not in ("hub", "cdn"):
            raise ValueError(f"unknown fault {kind!r} or server {server!r}")
        with self._lock:
            self._faults.append(dict(args, kind=kind, match=match, server=server, count=count))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def _take_fault(self, server, path):
        with self._lock:
            for r in self._faults:
                if r["server"] == server and r["count"] > 0 and \
                        (r["match"] in path or r["match"] in unquote(path)) and \
                        (r["kind"] != "bad_json" or path.startswith("/api/")):
                    r["count"] -= 1
                    return r
        return None

    def _record(self, rec):
        with self._lock:
            self.log.append(rec)
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout=5.0):
        """Waits until no request is being answered (a client may have its
        answer before the server logged it); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def clear_log(self):
        with self._lock:
            self.log.clear()

    def requests(self, server=None):
        """A copy of the log, of one server or both, once requests being
        answered have finished (at most 2 s)."""
        self.wait_idle(2.0)
        with self._lock:
            return [dict(r) for r in self.log if server in (None, r["server"])]

    def bytes_sent(self, server=None):
        return sum(r["sent"] for r in self.requests(server))

    # -- life ---------------------------------------------------------------
    def start(self, port=0, cdn_port=0):
        """Starts both servers on 127.0.0.1 (ports 0: ephemeral ones)."""
        host = "127.0.0.1"
        self._stopping.clear()
        for role, p in (("hub", port), ("cdn", cdn_port)):
            handler = type(f"{role}Handler", (_Handler,), {"emu": self, "role": role})
            srv = _Server((host, p), handler)
            threading.Thread(target=srv.serve_forever, args=(0.05,), name=f"hubemu-{role}",
                             daemon=True).start()
            self._servers.append(srv)
        self.endpoint = f"http://{host}:{self._servers[0].server_address[1]}"
        self.cdn_endpoint = f"http://localhost:{self._servers[1].server_address[1]}"
        return self

    def stop(self):
        self._stopping.set()
        for srv in self._servers:
            srv.shutdown()
            srv.close_all()
            srv.server_close()
        self._servers = []

    def __enter__(self):
        return self.start() if not self._servers else self

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description="Serve DIR/org/name/* as Hub repos.")
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cdn-port", type=int, default=0)
    ap.add_argument("--gated", action="append", default=[], help="a repo id to gate")
    a = ap.parse_args()
    emu = HubEmu()
    for org in sorted(os.listdir(a.root)):
        for name in sorted(os.listdir(os.path.join(a.root, org))):
            d = os.path.join(a.root, org, name)
            if os.path.isdir(d):
                rid = f"{org}/{name}"
                print(rid, emu.add_repo_dir(rid, d, gated=rid in a.gated), flush=True)
    emu.start(a.port, a.cdn_port)
    print(f"HF_ENDPOINT={emu.endpoint} cdn={emu.cdn_endpoint} token={emu.token}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
