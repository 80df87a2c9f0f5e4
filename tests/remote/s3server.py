"""s3server - an S3 server for tests of residfs's s3:// terms (moto, in-process).

    with S3Server() as s3:                       # SigV4 signatures checked
        s3.make_bucket("models")                 # private: signed requests only
        s3.put_dir("models", "base/", "/path/to/model")
        s3.endpoint                              # http://127.0.0.1:PORT
        s3.access_key, s3.secret_key, s3.region  # the credentials it accepts
        s3.requests()                            # what clients other than the
        s3.bytes_sent()                          # fixture's own asked and got

What it is: moto's S3 (and the IAM and STS it needs), served by werkzeug in a
thread of this process (moto's own app, as `moto_server` and moto's
ThreadedMotoServer serve it), behind a small WSGI middleware that logs every
request (moto keeps no access log), injects faults and answers a few things
moto gets wrong (below).  The `moto_server` process would check signatures
the same way but could neither log nor take chosen credentials.  Port: 0,
bound by the server itself (the kernel's pick; no race).

Signature checking (check_auth=True): moto checks SigV4 once more requests
have been served than settings.INITIAL_NO_AUTH_ACTION_COUNT (the environment
variable of that name, read when moto is imported; default infinity: never;
0: from the first request).  start() serves the first requests with it at
infinity to make, through the IAM API, a user with an allow-everything inline
policy and one access key (then given the chosen access_key/secret_key in
moto's IAM backend: the API only makes random ones), and a role for session
credentials; then it switches checking on (POST /moto-api/reset-auth with
body "0", the endpoint behind moto's set_initial_no_auth_action_count).  From
then on moto looks the key up among IAM users' keys (or, with an
x-amz-security-token, among STS's assumed roles), recomputes the signature
with botocore's S3SigV4Auth over the request as it arrived - the path exactly
as sent, the query as sent with its parameters sorted, the headers listed in
SignedHeaders, the payload hash given by x-amz-content-sha256 - and answers
403 SignatureDoesNotMatch when it differs, 403 InvalidAccessKeyId for an
unknown key, 400 InvalidToken for a wrong session token.

What the middleware answers itself, as S3 would (moto would not):
  - a signed S3 request without x-amz-content-sha256: 400 InvalidRequest
    (moto hashes its own idea of the body: SignatureDoesNotMatch);
  - a credential scope naming another region than @region: 400
    AuthorizationHeaderMalformed with <Region> and x-amz-bucket-region
    (moto accepts any region);
  - credentials passed to expire_session(): 400 ExpiredToken (moto never
    expires sessions);
  - a signed request whose path or query is not written the way S3 signs
    it (see _not_canonical: every byte but A-Za-z0-9-_.~ and the path's /
    as %XX in upper-case hex, a name without value as "name="): 403
    SignatureDoesNotMatch, with a <Residfs-Not-Canonical> element saying
    what (strict=True).  moto signs the path and query exactly as sent, and
    curl 7.88 signs them as written in the URL, so moto alone would accept a
    raw "+", "/" in a query value or lower-case hex that S3 refuses;
  - anonymous requests (no Authorization, with checking on): GET and HEAD of
    the objects and listings of a public bucket (make_bucket(public=True):
    a bucket policy allowing s3:GetObject and s3:ListBucket to "*") go to
    moto with its checks skipped for that request - moto itself answers them
    500 (KeyError 'HTTP_AUTHORIZATION') once checking is on; those of a
    bucket that does not exist go the same way (404 NoSuchBucket); anything
    else: 403 AccessDenied (HEAD: no body).
  - continuation tokens look like S3's (base64: '+', '/', '='; moto's are
    hex digits) and an unknown one is 400 InvalidArgument (moto: 500).

moto's state (buckets, IAM users) is process-global: one S3Server may run at a
time in a process (start() refuses a second), and stop() resets moto.  The
werkzeug server closes the connection after every answer (no keep-alive),
and a ranged GET costs a copy of the whole object (moto slices it in
memory): keep objects to a few MiB.

Needs moto[server] and boto3 (tests/requirements-core.txt).
Run by hand: python3 s3server.py --bucket NAME[:DIR] [--public] [--no-auth]
"""
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import uuid
from urllib.parse import unquote, unquote_to_bytes
from xml.sax.saxutils import escape

DEFAULT_SECRET = "residfs-test-secret-0123456789abcdefghij"
ADMIN_AGENT = "residfs-s3server-admin"
_ACCOUNT = "123456789012"          # moto's default account
_USER = "residfs"
_ROLE = "residfs-session"
_ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})

_active = None
_active_lock = threading.Lock()
_tls = threading.local()          # .anonymous: this thread's request skips moto's auth


def _install_patches():
    """Three changes to moto's classes, made once per process, inert unless
    an S3Server runs: (1) auth checks skipped for a request the middleware
    let through as anonymous (moto itself fails those with a 500, KeyError
    'HTTP_AUTHORIZATION', once checking is on); (2) continuation tokens
    made like S3's, base64 with '+', '/' and '=' (moto's are md5 hex digits,
    which would hide a client that does not encode them), mapped to moto's;
    (3) an unknown continuation token answered 400 InvalidArgument as S3
    does (moto: a 500, TypeError)."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.models import S3Backend

    auth = ActionAuthenticatorMixin._authenticate_and_authorize_action
    if not getattr(auth, "_residfs", False):
        def checked(self, *a, **k):
            if getattr(_tls, "anonymous", False):
                return None
            return auth(self, *a, **k)
        checked._residfs = True
        ActionAuthenticatorMixin._authenticate_and_authorize_action = checked

    from_token = S3Backend._get_results_from_token
    if not getattr(from_token, "_residfs", False):
        def results_from_token(self, result_keys, token):
            if token is None:       # an unknown continuation token: S3's 400
                from moto.s3.exceptions import InvalidContinuationToken
                raise InvalidContinuationToken()
            return from_token(self, result_keys, token)
        results_from_token._residfs = True
        S3Backend._get_results_from_token = results_from_token

    trunc = S3Backend._truncate_result
    if not getattr(trunc, "_residfs", False):
        def truncate(self, result_keys, max_keys):
            keys, is_truncated, token = trunc(self, result_keys, max_keys)
            if token and _active is not None and _active.s3_tokens:
                # 0xfb 0xff: "+/" first; 19 bytes: "==" last
                s3tok = base64.b64encode(b"\xfb\xff" + bytes.fromhex(token) + b"\xfe").decode()
                self._pagination_tokens[s3tok] = self._pagination_tokens[token]
                token = s3tok
            return keys, is_truncated, token
        truncate._residfs = True
        S3Backend._truncate_result = truncate


def _error_xml(code, message, extra=None):
    extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in (extra or {}).items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message>{extra}<RequestId>{uuid.uuid4().hex[:16].upper()}"
            f"</RequestId></Error>").encode()


_SIG_MESSAGE = ("The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def aws_quote(data, slash=False):
    """SigV4's URI encoding of @data (str: its UTF-8): every byte but
    A-Za-z0-9-_.~ (and / when @slash) as %XX, upper-case hex."""
    if isinstance(data, str):
        data = data.encode()
    return "".join(chr(c) if c in _UNRESERVED or (slash and c == 0x2F) else f"%{c:02X}"
                   for c in data)


def _not_canonical(path, query):
    """What of a request's path and query (as sent) differs from the form S3
    signs (each decoded, then encoded with aws_quote; query names given "="
    when without value): a curl that signs the URL as written (7.x) has its
    signature refused by S3 then.  "" when both are canonical."""
    want = aws_quote(unquote_to_bytes(path), slash=True)
    if want != path:
        return f"path {path} (canonical: {want})"
    for part in query.split("&") if query else ():
        name, eq, value = part.partition("=")
        want = f"{aws_quote(unquote_to_bytes(name))}={aws_quote(unquote_to_bytes(value))}"
        if want != part:
            return f"query part {part} (canonical: {want})"
    return ""


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _error(start, status, code, message, extra=None, headers=()):
    body = _error_xml(code, message, extra)
    start(f"{status} {_REASONS.get(status, 'Error')}",
          [("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
           *headers])
    return [body]


class _Fault:
    def __init__(self, status, code, count, method, path_contains, reset, keep):
        self.status, self.code, self.count = status, code, count
        self.method, self.path_contains = method, path_contains
        self.reset, self.keep = reset, keep

    def matches(self, method, path):
        return ((self.method is None or self.method == method)
                and (self.path_contains is None or self.path_contains in path))


class _Reset(ConnectionAbortedError):
    pass


class _LogMiddleware:
    """WSGI middleware in front of moto: logs each request once its answer
    is written (or abandoned); answers injected faults, expired sessions,
    signed S3 requests without x-amz-content-sha256 and anonymous requests
    itself."""

    def __init__(self, app, server):
        self.app, self.server = app, server

    def __call__(self, environ, start_response):
        srv = self.server
        raw = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
        path, _, query = raw.partition("?")
        entry = {
            "t": time.monotonic(),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": path,
            "query": query,
            "range": environ.get("HTTP_RANGE"),
            "if_match": environ.get("HTTP_IF_MATCH"),
            "auth": environ.get("HTTP_AUTHORIZATION"),
            "token": environ.get("HTTP_X_AMZ_SECURITY_TOKEN"),
            "admin": ADMIN_AGENT in environ.get("HTTP_USER_AGENT", ""),
            "status": None,
            "sent": 0,
        }
        with srv._lock:
            srv._inflight += 1
        status_box = []

        def start(status, headers, exc_info=None):
            status_box[:] = [int(status.split(None, 1)[0])]
            return start_response(status, headers, exc_info)

        try:
            body, cut = self._answer(environ, entry, start)
            try:
                for chunk in body:
                    if cut is not None:
                        chunk = chunk[:max(cut - entry["sent"], 0)]
                    if chunk:
                        entry["sent"] += len(chunk)
                        yield chunk
                    if cut is not None and entry["sent"] >= cut:
                        break
            finally:
                close = getattr(body, "close", None)
                if close:
                    close()
            if cut is not None:
                self._reset(environ)
        finally:
            entry["status"] = status_box[0] if status_box else None
            with srv._lock:
                srv._log.append(entry)
                srv._inflight -= 1

    def _reset(self, environ):
        """Ends the connection with a TCP RST (linger 0, no FIN first: see
        _Server.shutdown_request)."""
        sock = environ["werkzeug.socket"]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.server._lock:
            self.server._resets.add(sock.fileno())
        raise _Reset("injected reset")

    def _answer(self, environ, entry, start):
        """(body iterable, None or the count of body bytes after which the
        connection is reset)."""
        srv = self.server
        fault = None
        if not entry["admin"]:
            with srv._lock:
                for f in srv._faults:
                    if f.count != 0 and f.matches(entry["method"], entry["path"]):
                        f.count -= 1
                        fault = f
                        break
        if fault is not None:
            if fault.reset and not fault.keep:
                return [], 0
            if not fault.reset:
                return _error(start, fault.status, fault.code, "injected fault"), None
        cut = fault.keep if fault is not None else None
        if not srv.check_auth or entry["path"].startswith("/moto-api/"):
            return self.app(environ, start), cut
        auth = entry["auth"] or ""
        scope = auth.partition("Credential=")[2].partition(",")[0].split("/")
        if scope[0] and scope[0] in srv._expired:
            return _error(start, 400, "ExpiredToken", "The provided token has expired.",
                          {"Token-0": entry["token"] or ""}), cut
        if (auth.startswith("AWS4-HMAC-SHA256 ") and len(scope) > 3 and scope[3] == "s3"
                and "HTTP_X_AMZ_CONTENT_SHA256" not in environ):
            # what S3 answers; moto would hash its own idea of the body and
            # answer SignatureDoesNotMatch
            return _error(start, 400, "InvalidRequest",
                          "Missing required header for this request: x-amz-content-sha256"), cut
        if (auth.startswith("AWS4-HMAC-SHA256 ") and len(scope) > 3 and scope[3] == "s3"
                and scope[2] != srv.region):
            # moto would check the signature with any region; S3 tells the
            # bucket's region (every bucket here is in srv.region)
            return _error(start, 400, "AuthorizationHeaderMalformed",
                          f"The authorization header is malformed; the region '{scope[2]}' "
                          f"is wrong; expecting '{srv.region}'", {"Region": srv.region},
                          [("x-amz-bucket-region", srv.region)]), cut
        if (srv.strict and not entry["admin"] and auth.startswith("AWS4-HMAC-SHA256 ")
                and len(scope) > 3 and scope[3] == "s3"):
            bad = _not_canonical(entry["path"], entry["query"])
            if bad:
                # S3 signs its own canonical form of the path and query;
                # moto the form as sent: S3's answer to one not canonical
                return _error(start, 403, "SignatureDoesNotMatch", _SIG_MESSAGE,
                              {"Residfs-Not-Canonical": bad}), cut
        if auth or "X-Amz-Signature=" in entry["query"]:
            return self.app(environ, start), cut
        # anonymous: GET and HEAD of a public bucket's objects and listings
        # (or of a bucket that does not exist: 404 NoSuchBucket), else 403
        bucket = unquote(entry["path"].lstrip("/").partition("/")[0])
        if not (entry["method"] in ("GET", "HEAD") and bucket
                and (bucket in srv._public or not srv._bucket_exists(bucket))):
            if entry["method"] == "HEAD":
                start("403 Forbidden", [("Content-Length", "0")])
                return [], cut
            return _error(start, 403, "AccessDenied", "Access Denied"), cut
        _tls.anonymous = True
        try:
            return list(self.app(environ, start)), cut
        finally:
            _tls.anonymous = False


class S3Server:
    """moto's S3 on http://127.0.0.1:PORT (an ephemeral port), answering
    requests signed (SigV4, service "s3", @region) with @access_key and
    @secret_key, or with session credentials from session_credentials().
    check_auth=False: nothing is checked (moto's default; the middleware
    only logs and injects faults; moto still refuses anonymous reads of
    private objects, with an empty 403).  s3_tokens=False: moto's own
    continuation tokens (hex).  strict=False: signed requests whose path
    or query is not in S3's canonical form are left to moto (which signs
    them as sent, so they pass)."""

    def __init__(self, access_key="AKIDTESTRESIDFS", secret_key=DEFAULT_SECRET,
                 region="us-east-1", check_auth=True, s3_tokens=True, strict=True):
        self.access_key, self.secret_key = access_key, secret_key
        self.region, self.check_auth, self.s3_tokens = region, check_auth, s3_tokens
        self.strict = strict
        self._public = set()
        self.port = None
        self._server = self._thread = None
        self._lock = threading.Lock()
        self._log = []
        self._inflight = 0
        self._faults = []
        self._expired = set()
        self._resets = set()
        self._sessions = []

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    # -- life ---------------------------------------------------------------
    def start(self):
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("an S3Server is already running in this process "
                                   "(moto's state is process-global)")
            _active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin
        from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                                   MotoRequestHandler, create_backend_app)
        from werkzeug.serving import ThreadedWSGIServer

        _install_patches()
        self._reset_moto()
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        ActionAuthenticatorMixin.request_count = 0
        app = _LogMiddleware(DomainDispatcherApplication(create_backend_app), self)
        resets, lock = self._resets, self._lock

        class Handler(MotoRequestHandler):
            def log_request(self, *a, **k):     # the log is ours
                pass

            def connection_dropped(self, error, environ=None):
                self.close_connection = True    # else it waits for another request

        class Server(ThreadedWSGIServer):
            def shutdown_request(self, request):
                fd = request.fileno()
                with lock:
                    reset = fd in resets
                    resets.discard(fd)
                if reset:       # no shutdown(SHUT_WR): its FIN would come before the RST
                    self.close_request(request)
                else:
                    super().shutdown_request(request)

        # port 0: the kernel picks a free port and the socket stays bound (no race)
        self._server = Server("127.0.0.1", 0, app, handler=Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"s3server-{self.port}", daemon=True)
        self._thread.start()
        self._bootstrap()
        if self.check_auth:
            self._set_auth_count(0)

    def _bootstrap(self):
        """The IAM user and key, and the role of session credentials, made
        through the API while nothing is checked; the key is then given the
        chosen id and secret in moto's IAM backend."""
        from moto.iam.models import iam_backends

        iam = self._admin_client("iam", "AKIDBOOTSTRAP", "bootstrap")
        iam.create_user(UserName=_USER)
        iam.put_user_policy(UserName=_USER, PolicyName="all", PolicyDocument=_ALLOW_ALL)
        made = iam.create_access_key(UserName=_USER)["AccessKey"]["AccessKeyId"]
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": f"arn:aws:iam::{_ACCOUNT}:user/{_USER}"}}]})
        iam.create_role(RoleName=_ROLE, AssumeRolePolicyDocument=trust)
        iam.put_role_policy(RoleName=_ROLE, PolicyName="all", PolicyDocument=_ALLOW_ALL)
        backend = iam_backends[_ACCOUNT]["aws"]
        key = backend.access_keys.pop(made)
        key.access_key_id = self.access_key
        key.secret_access_key = self.secret_key
        backend.access_keys[self.access_key] = key

    def _set_auth_count(self, count):
        import urllib.request
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth",
                                     data=str(count).encode(), method="POST",
                                     headers={"User-Agent": ADMIN_AGENT,   # not a form: moto reads
                                              "Content-Type": "text/plain"})  # the raw body
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    @staticmethod
    def _bucket_exists(name):
        from moto.s3.models import s3_backends
        return name in s3_backends[_ACCOUNT]["aws"].buckets

    @staticmethod
    def _reset_moto():
        from moto.moto_api import _internal
        _internal.moto_api_backend.reset()

    def stop(self):
        global _active
        try:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._thread.join(10)
                self._server = self._thread = None
                from moto import settings
                settings.INITIAL_NO_AUTH_ACTION_COUNT = float(
                    os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT", float("inf")))
                self._reset_moto()
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc):
        self.stop()

    # -- clients and credentials ----------------------------------------------
    def _admin_client(self, service, access_key, secret_key, session_token=None):
        import boto3
        from botocore.config import Config
        cfg = Config(s3={"addressing_style": "path"}, user_agent_extra=ADMIN_AGENT,
                     retries={"max_attempts": 1}, request_checksum_calculation="when_required",
                     response_checksum_validation="when_required")
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            aws_session_token=session_token, config=cfg)

    def client(self, access_key=None, secret_key=None, session_token=None, service="s3"):
        """A boto3 client of @service (S3: path-style addressing) signing
        with the server's credentials, or the ones given.  Its requests are
        the fixture's own: left out of requests() unless admin=True."""
        return self._admin_client(service, access_key or self.access_key,
                                  secret_key or self.secret_key, session_token)

    def session_credentials(self, duration=3600):
        """Temporary credentials (STS AssumeRole of the fixture's role, signed
        with the server's key): {access_key, secret_key, session_token,
        expiration (datetime)}.  S3 requests with them must carry the
        token in x-amz-security-token (a signed header: curl signs every
        header it is given)."""
        sts = self.client(service="sts")
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{_ACCOUNT}:role/{_ROLE}",
                            RoleSessionName=f"residfs-{len(self._sessions)}",
                            DurationSeconds=duration)["Credentials"]
        creds = {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"],
                 "session_token": c["SessionToken"], "expiration": c["Expiration"]}
        self._sessions.append(creds)
        return creds

    def expire_session(self, creds):
        """From now on, requests signed with @creds' access key are answered
        400 ExpiredToken, as S3 answers expired session credentials (moto
        itself never expires them)."""
        with self._lock:
            self._expired.add(creds["access_key"])

    def env(self, creds=None):
        """AWS_* environment variables for a client of this server: the
        server's credentials, or @creds from session_credentials()."""
        e = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region,
             "AWS_DEFAULT_REGION": self.region,
             "AWS_ACCESS_KEY_ID": creds["access_key"] if creds else self.access_key,
             "AWS_SECRET_ACCESS_KEY": creds["secret_key"] if creds else self.secret_key}
        if creds:
            e["AWS_SESSION_TOKEN"] = creds["session_token"]
        return e

    # -- content --------------------------------------------------------------
    def make_bucket(self, name, public=False):
        """Creates bucket @name (public: see set_public)."""
        s3 = self.client()
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={
                "LocationConstraint": self.region})
        self.set_public(name, public)
        return name

    def set_public(self, name, public=True):
        """public: a bucket policy allowing s3:GetObject and s3:ListBucket to
        Principal "*", and anonymous GET/HEAD let through; False: the policy
        deleted, anonymous requests answered 403 AccessDenied."""
        s3 = self.client()
        if not public:
            self._public.discard(name)
            s3.delete_bucket_policy(Bucket=name)
        else:
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                     # s3:HeadObject: not an S3 action, but what moto
                     # looks for on an anonymous HEAD
                     "Action": ["s3:GetObject", "s3:HeadObject"],
                     "Resource": f"arn:aws:s3:::{name}/*"},
                    {"Sid": "PublicList", "Effect": "Allow", "Principal": "*",
                     "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{name}"}]}))
            self._public.add(name)

    def put(self, bucket, key, data, part_size=None):
        """Stores @data (bytes) under @key; returns its ETag as S3 answers it
        (quoted).  part_size: a multipart upload in parts of that many bytes
        (at least 5 MiB but the last), whose ETag is "<md5 of md5s>-N"."""
        s3 = self.client()
        if not part_size:
            return s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, off in enumerate(range(0, max(len(data), 1), part_size), 1):
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                               Body=data[off:off + part_size])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                            MultipartUpload={"Parts": parts})["ETag"]

    def put_many(self, bucket, items):
        """Stores {key: bytes} straight into moto's backend (no HTTP: about
        100 times quicker than put() for thousands of small objects; nothing
        logged); returns {key: ETag}."""
        from moto.s3.models import s3_backends
        backend = s3_backends[_ACCOUNT]["aws"]
        return {k: f'"{backend.put_object(bucket, k, bytes(v)).etag.strip(chr(34))}"'
                for k, v in items.items()}

    def put_dir(self, bucket, prefix, local_dir):
        """Uploads the regular files at the top of @local_dir as
        PREFIX/NAME (a "/" added to a non-empty @prefix without one);
        returns {key: ETag}."""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        out = {}
        for name in sorted(os.listdir(local_dir)):
            p = os.path.join(local_dir, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    out[prefix + name] = self.put(bucket, prefix + name, f.read())
        return out

    def overwrite(self, bucket, key, data):
        """Replaces the existing object @key (KeyError when there is none)
        with @data: a new ETag (unless @data is the same) and Last-Modified.
        Returns the new ETag."""
        s3 = self.client()
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as e:
            raise KeyError(f"s3://{bucket}/{key}: {e}") from None
        return self.put(bucket, key, data)

    @staticmethod
    def etag(data):
        """The ETag S3 gives @data put in one piece: the quoted md5."""
        return f'"{hashlib.md5(data).hexdigest()}"'

    # -- faults -----------------------------------------------------------------
    def add_fault(self, status=503, code="SlowDown", count=1, method=None,
                  path_contains=None, reset=False, keep=0):
        """The next @count (-1: every) requests not made by the fixture's own
        clients, of @method (None: any) whose path contains @path_contains
        (None: any), are answered @status with an S3 error @code (XML)
        instead of moto's answer; reset: the connection is reset (TCP RST)
        before any answer, or after moto's headers and @keep body bytes."""
        with self._lock:
            self._faults.append(_Fault(status, code, count, method, path_contains, reset,
                                       keep))

    def clear_faults(self):
        with self._lock:
            self._faults = []

    # -- the request log ----------------------------------------------------------
    def wait_idle(self, timeout=2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._inflight == 0:
                    return True
            time.sleep(0.005)
        return False

    def requests(self, admin=False):
        """The requests answered so far, oldest first (once those in progress
        finished, at most 2 s): dicts with t (time.monotonic() at arrival),
        method, path (as sent, percent-encoded), query (as sent), range,
        if_match, auth (the Authorization header), token
        (x-amz-security-token) - None when absent - status (int; None when
        the answer was never started), sent (body bytes written) and admin
        (made by this fixture's own clients: left out unless @admin)."""
        self.wait_idle(2.0)
        with self._lock:
            return [dict(r) for r in self._log if admin or not r["admin"]]

    def bytes_sent(self, admin=False):
        return sum(r["sent"] for r in self.requests(admin))

    def clear_requests(self):
        self.wait_idle(2.0)
        with self._lock:
            self._log = []

    @staticmethod
    def key_of(path, bucket):
        """The object key of a logged path-style @path of @bucket (None when
        it names another bucket)."""
        head = f"/{bucket}/"
        return unquote(path[len(head):]) if path.startswith(head) else None


def main():
    import argparse
    ap = argparse.ArgumentParser(description="Serve moto's S3 with signature checking.")
    ap.add_argument("--bucket", action="append", default=[], help="BUCKET[:DIR] to make (and fill)")
    ap.add_argument("--public", action="store_true", help="make the buckets public")
    ap.add_argument("--no-auth", action="store_true")
    args = ap.parse_args()
    with S3Server(check_auth=not args.no_auth) as s3:
        for spec in args.bucket:
            name, _, d = spec.partition(":")
            s3.make_bucket(name, public=args.public)
            if d:
                s3.put_dir(name, "", d)
        print(json.dumps({"endpoint": s3.endpoint, "access_key": s3.access_key,
                          "secret_key": s3.secret_key, "region": s3.region}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
