"""webserve - an nginx serving a directory, for tests of remote web sources.

    with Nginx(root_dir, tls=True) as web:
        web.url        # https://127.0.0.1:PORT/
        web.ca_file    # the self-signed certificate to trust (tls only)
        web.requests() # the access log: [{status, sent, range, uri, method, if_match}]

Runs /usr/sbin/nginx (or $NGINX) unprivileged-style: config, pid, logs and
temp paths in a private temporary directory, `daemon off`, one worker, on
127.0.0.1 and a port picked by binding port 0 (tried again when nginx cannot
bind it).  Static files with nginx's defaults: strong ETags, Last-Modified,
single and multiple byte ranges, If-Match/If-Range; autoindex and gzip off.
latency_ms > 0 delays every request (an auth_request subrequest that runs
echo_sleep: needs the echo module, libnginx-mod-http-echo, which Debian's
nginx-light depends on).  TLS needs the openssl tool.
Needs Debian packages nginx-light (or nginx) and openssl.
"""
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

_CONF = """\
{load}{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/json json; text/plain txt md; }}
    default_type application/octet-stream;
    log_format residfs escape=json '{{"status":$status,"sent":$body_bytes_sent,'
        '"range":"$http_range","uri":"$request_uri","method":"$request_method",'
        '"if_match":"$http_if_match"}}';
    access_log {tmp}/access.log residfs;
    sendfile on;
    gzip off;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port}{ssl};
        server_name 127.0.0.1 localhost;
        root "{root}";
        autoindex off;
        etag on;
{tls}{delay}        location / {{ {auth} }}
    }}
}}
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx serving @root_dir on 127.0.0.1 (https with a self-signed
    certificate for 127.0.0.1 and localhost when @tls), every request
    delayed by @latency_ms.  start() returns once the port accepts; stop()
    ends the process it started (SIGTERM, then SIGKILL after 5 s), waits for
    it and removes the temporary directory.  Run as root, the worker runs as
    root too (so that it can read root_dir)."""

    def __init__(self, root_dir, tls=False, latency_ms=0, nginx=None):
        self.root = os.path.abspath(root_dir)
        self.tls, self.latency_ms = tls, latency_ms
        self.nginx = nginx or os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
        self.tmp = self.proc = self.port = None
        self.ca_file = None

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def start(self, timeout=10):
        self.tmp = tempfile.mkdtemp(prefix="residfs-nginx-")
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout):
        tls = ""
        if self.tls:
            key, crt = f"{self.tmp}/key.pem", f"{self.tmp}/cert.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                           check=True, capture_output=True)
            self.ca_file = crt
            tls = f"        ssl_certificate {crt};\n        ssl_certificate_key {key};\n"
        delay = auth = load = user = ""
        if os.geteuid() == 0:   # the worker would run as nobody, unable to read root_dir
            user = (f"user {pwd.getpwuid(os.getuid()).pw_name} "
                    f"{grp.getgrgid(os.getgid()).gr_name};\n")
        if self.latency_ms:
            if not os.path.exists(ECHO_MODULE):
                raise RuntimeError(f"latency_ms needs {ECHO_MODULE} (libnginx-mod-http-echo)")
            load = f"load_module {ECHO_MODULE};\n"
            delay = (f"        location = /__delay {{ internal; echo_sleep "
                     f"{self.latency_ms / 1000:.3f}; echo_status 204; }}\n")
            auth = "auth_request /__delay;"
        for _ in range(10):
            self.port = _free_port()
            with open(f"{self.tmp}/nginx.conf", "w") as f:
                f.write(_CONF.format(load=load, user=user, tmp=self.tmp, port=self.port,
                                     root=self.root, ssl=" ssl" if self.tls else "", tls=tls,
                                     delay=delay, auth=auth))
            errf = open(f"{self.tmp}/stderr", "wb")
            self.proc = subprocess.Popen([self.nginx, "-p", self.tmp, "-c", "nginx.conf",
                                          "-e", f"{self.tmp}/error.log", "-g", "daemon off;"],
                                         stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
            errf.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return self
                except OSError:
                    time.sleep(0.02)
            log = self._errors()
            self._kill()
            if "Address already in use" not in log:
                raise RuntimeError(f"nginx did not start: {log[-2000:]}")
        raise RuntimeError("nginx: no free port after 10 tries")

    def _errors(self):
        out = ""
        for name in ("stderr", "error.log"):
            try:
                with open(f"{self.tmp}/{name}", errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # fast shutdown: the worker ends too
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _cleanup(self):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def stop(self):
        self._kill()
        self._cleanup()

    def requests(self, min_count=0, timeout=2.0):
        """The access log so far, oldest first: dicts with status and sent
        (ints), range, uri, method and if_match (strings, "" when absent).
        nginx logs a request after answering it: waits up to @timeout for
        @min_count lines."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(f"{self.tmp}/access.log") as f:
                    out = [json.loads(line) for line in f if line.endswith("\n")]
            except FileNotFoundError:
                out = []
            if len(out) >= min_count or time.monotonic() > deadline:
                return out
            time.sleep(0.01)

    def bytes_sent(self):
        return sum(r["sent"] for r in self.requests())

    def error_log(self):
        return self._errors()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
