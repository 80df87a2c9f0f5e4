"""residfs as a mount tool among others: the form mount.fuse3 runs (mount -t
fuse.residfs, /etc/fstab), -o options, systemd's notify protocol and a clean
stop, `residfs stats`, the log file, --version.

The fstab tests run mount(8) for real in a private mount namespace
(unshare -m), where a bind mount puts the residfs under test first on the
PATH that mount(8) gives its helpers (/usr/local/bin): mount(8) finds
/sbin/mount.fuse (fuse3's mount.fuse3), which runs `residfs SPEC MP -o OPTS`.
Nothing outside the namespace changes; the script unmounts before it ends
(and lazily on any failure).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import rfshelp as H
from conftest import _ALL_MOUNTS, export, need_fuse


@pytest.fixture(scope="module")
def pair(llama, tmp_path_factory):
    """SPEC of base+f32 residuals and the bytes of every file of its export."""
    spec = f"{llama.base.path}+{llama.resA.path}"
    out = str(tmp_path_factory.mktemp("eco-export") / "out")
    export([spec], out)
    want = {fn: H.read_file(os.path.join(out, fn)) for fn in sorted(os.listdir(out))}
    return spec, want


def same_as_export(mp, want):
    got = sorted(os.listdir(mp))
    assert got == sorted(want), (got, sorted(want))
    for fn, data in want.items():
        assert H.read_file(os.path.join(mp, fn)) == data, fn


def stats(mp, *args):
    r = H.run(["stats", mp, *args], timeout=30)
    assert r.returncode == 0, r
    return r


# ---- the helper form and -o -----------------------------------------------------------

def test_helper_form_mounts_like_mount(mounter, pair, tmp_path):
    """residfs SPEC MP -o rw,...,dev,suid (what mount.fuse3 runs) mounts the same files."""
    need_fuse()
    spec, want = pair
    mp = str(tmp_path / "helper")
    os.makedirs(mp)
    mounter.mps.append(mp)
    _ALL_MOUNTS.append(mp)
    r = H.run([spec, mp, "-o", "rw,allow_other,cache_size=64M,dev,suid"], timeout=60)
    assert r.returncode == 0, r
    assert H.is_mounted(mp), r
    same_as_export(mp, want)
    js = json.loads(stats(mp, "--json").stdout)
    assert js["cache_budget"] == 64 << 20, js


def test_helper_form_errors_are_mounts(refuser, llama, tmp_path):
    """A missing source in the helper form: the error residfs mount gives, exit 2."""
    mp = str(tmp_path / "m")
    os.makedirs(mp)
    spec = f"{llama.base.path}+{tmp_path}/missing-residuals"
    a = H.run([spec, mp, "-o", "rw"])
    b = H.run(["mount", spec, mp])
    assert a.returncode == b.returncode == 2, (a, b)
    assert a.stderr == b.stderr and "missing-residuals" in a.stderr, (a, b)
    assert not H.is_mounted(mp)
    # a word that is no path and no command stays an unknown command
    r = H.run(["mout", spec, mp])
    assert r.returncode == 2 and "unknown command 'mout'" in r.stderr, r


def test_o_residfs_options(mounter, pair):
    """-o NAME=VALUE reaches every residfs mount option ('_' or '-')."""
    spec, want = pair
    mp = mounter.mount(spec, "-o", "cache_size=48M,backend=cpu", "-o", "readahead-kb=1024,log_level=debug",
                       "-o", "remote_timeout=5,remote_connections=2,remote_memory=64M")
    same_as_export(mp, want)
    js = json.loads(stats(mp, "--json").stdout)
    assert js["cache_budget"] == 48 << 20, js
    assert js["backend"].startswith("cpu"), js


def test_o_generic_options_are_ignored(mounter, pair):
    """What fstab, mount(8) and systemd pass along is accepted; FUSE flags reach the kernel."""
    spec, want = pair
    mp = mounter.mount(spec, "-o", "defaults,noauto,nofail,_netdev,user,rw,comment=x-gvfs-show",
                       "-o", "x-systemd.automount,x-systemd.requires=network-online.target,nosuid,nodev")
    same_as_export(mp, want)
    with open("/proc/self/mounts") as f:
        opts = [ln.split()[3] for ln in f if ln.split()[1] == os.path.realpath(mp)][-1].split(",")
    assert "ro" in opts and "nosuid" in opts and "nodev" in opts, opts


@pytest.mark.parametrize("opts,names", [
    ("bogus", ["-o bogus", "unknown mount option"]),
    ("allow_other,cache_sise=1G", ["-o cache_sise=1G", "unknown mount option"]),
    ("cache_size", ["-o cache_size needs a value"]),
    ("cache_size=", ["-o cache_size needs a value"]),
    ("passthrough=1", ["-o passthrough takes no value"]),
    ("cache_size=12Q", ["-o cache_size", "12Q"]),
    ("backend=gpu", ["-o backend", "gpu"]),
    ("log_level=loud", ["-o log_level", "loud"]),
    ("force", ["-o force", "unknown mount option"]),
])
def test_o_bad_options_refused(refuser, pair, opts, names):
    spec, _ = pair
    refuser.refuse(spec, "-o", opts, names=names, rc=2)


# ---- mount(8) and /etc/fstab, for real -------------------------------------------------

def _in_namespace(tmp_path, script):
    """Runs @script (sh) in a private mount namespace whose /usr/local/bin holds
    only a link to the residfs under test.  Returns the CompletedProcess."""
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is missing")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(os.path.abspath(H.residfs_bin()), bindir / "residfs")
    full = f"set -e\nmount --bind {bindir} /usr/local/bin\n{script}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", full],
                          capture_output=True, text=True, timeout=180)


def _sums(want):
    import hashlib
    return {fn: hashlib.sha256(d).hexdigest() for fn, d in want.items()}


def _parse_sums(text, mp):
    out = {}
    for line in text.splitlines():
        if line.startswith("SUM "):
            h, path = line[4:].split("  ", 1)
            out[os.path.relpath(path, mp)] = h
    return out


def test_fstab_line_mounts_for_real(pair, tmp_path):
    """An fstab line of type fuse.residfs: `mount MP` mounts it through mount.fuse3,
    every file equals the export, the -o options arrive, `umount MP` ends it."""
    need_fuse()
    spec, want = pair
    mp = str(tmp_path / "fstab-mnt")
    os.makedirs(mp)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# residfs\n{spec} {mp} fuse.residfs "
                     "ro,noauto,nofail,_netdev,allow_other,cache_size=96M,x-systemd.requires=x.mount 0 0\n")
    r = _in_namespace(tmp_path, f"""
trap 'umount -l {mp} 2>/dev/null || true' EXIT
mount -T {fstab} {mp}
grep " {mp} fuse.residfs " /proc/self/mounts | sed 's/^/MOUNTS /'
for f in {mp}/*; do echo "SUM $(sha256sum "$f")"; done
echo "STATS $(residfs stats {mp} --json)"
umount {mp}
if grep -q " {mp} " /proc/self/mounts; then echo STILL-MOUNTED; fi
echo DONE
""")
    assert r.returncode == 0 and "DONE" in r.stdout, (r.stdout, r.stderr)
    assert "STILL-MOUNTED" not in r.stdout, r.stdout
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("MOUNTS ")]
    assert line and "allow_other" in line[0] and " ro," in line[0], r.stdout
    assert _parse_sums(r.stdout, mp) == _sums(want)
    js = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("STATS ")][0][6:])
    assert js["cache_budget"] == 96 << 20, js
    assert not H.is_mounted(mp)


def test_mount_t_fuse_residfs(pair, tmp_path):
    """mount -t fuse.residfs SPEC MP -o ...; a bad option fails mount(8) with residfs's message."""
    need_fuse()
    spec, want = pair
    mp = str(tmp_path / "mnt-t")
    os.makedirs(mp)
    r = _in_namespace(tmp_path, f"""
trap 'umount -l {mp} 2>/dev/null || true' EXIT
if mount -t fuse.residfs '{spec}' {mp} -o cache_sise=1G 2>&1; then echo BAD-OPTION-MOUNTED; fi
mount -t fuse.residfs '{spec}' {mp} -o allow_other,cache_size=32M
for f in {mp}/*; do echo "SUM $(sha256sum "$f")"; done
umount {mp}
echo DONE
""")
    assert r.returncode == 0 and "DONE" in r.stdout, (r.stdout, r.stderr)
    assert "BAD-OPTION-MOUNTED" not in r.stdout
    assert "-o cache_sise=1G: unknown mount option" in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert _parse_sums(r.stdout, mp) == _sums(want)
    assert not H.is_mounted(mp)


def test_mount_t_residfs_runs_mount_residfs(pair, llama, tmp_path):
    """mount -t residfs (and an fstab line of type residfs) runs /sbin/mount.residfs, the
    link meson installs: mount(8)'s -n and -t are taken, the files equal the export,
    `mount -f` checks without mounting, and a missing source fails mount(8) with
    residfs's message."""
    need_fuse()
    spec, want = pair
    mp = str(tmp_path / "mnt-r")
    os.makedirs(mp)
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    for n in os.listdir("/usr/sbin"):
        os.symlink(os.path.join("/usr/sbin", n), sbin / n)
    os.symlink(os.path.abspath(H.residfs_bin()), sbin / "mount.residfs")
    bad = f"{llama.base.path}+{tmp_path}/no-such-residuals"
    fstab = tmp_path / "fstab-r"
    fstab.write_text(f"{spec} {mp} residfs ro,cache_size=40M,nofail 0 0\n")
    r = _in_namespace(tmp_path, f"""
mount --bind {sbin} /usr/sbin
trap 'umount -l {mp} 2>/dev/null || true' EXIT
mount -f -t residfs '{spec}' {mp} && echo FAKE-OK
if grep -q " {mp} " /proc/self/mounts; then echo FAKE-MOUNTED; fi
if mount -t residfs '{bad}' {mp} 2>&1; then echo BAD-MOUNTED; fi
mount -T {fstab} {mp}
for f in {mp}/*; do echo "SUM $(sha256sum "$f")"; done
echo "STATS $(residfs stats {mp} --json)"
umount {mp}
echo DONE
""")
    assert r.returncode == 0 and "DONE" in r.stdout, (r.stdout, r.stderr)
    assert "FAKE-OK" in r.stdout and "FAKE-MOUNTED" not in r.stdout, r.stdout
    assert "BAD-MOUNTED" not in r.stdout and "no-such-residuals" in r.stdout, r.stdout
    assert _parse_sums(r.stdout, mp) == _sums(want)
    js = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("STATS ")][0][6:])
    assert js["cache_budget"] == 40 << 20, js
    assert not H.is_mounted(mp)


# ---- systemd: Type=notify and a clean stop --------------------------------------------

def test_foreground_notifies_systemd_and_stops_cleanly(pair, tmp_path):
    """residfs mount -f under NOTIFY_SOCKET sends READY=1 (with MAINPID) once the
    mount answers, and on SIGTERM (systemctl stop) unmounts, says STOPPING=1 and exits 0."""
    need_fuse()
    spec, want = pair
    mp = str(tmp_path / "svc")
    os.makedirs(mp)
    _ALL_MOUNTS.append(mp)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    log = tmp_path / "svc.log"
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    with open(log, "wb") as lf:
        p = subprocess.Popen([H.residfs_bin(), "mount", "-f", spec, mp, "--log-file", str(tmp_path / "file.log")],
                             env=env, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
    try:
        msg = sock.recv(4096).decode()
        fields = dict(kv.split("=", 1) for kv in msg.split("\n") if "=" in kv)
        assert fields.get("READY") == "1" and fields.get("MAINPID") == str(p.pid), msg
        assert H.is_mounted(mp), "READY=1 came before the mount answered"
        same_as_export(mp, want)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, log.read_text()
        msg = sock.recv(4096).decode()
        assert "STOPPING=1" in msg, msg
        assert not H.is_mounted(mp)
        text = (tmp_path / "file.log").read_text()
        assert "info: mounted at " + os.path.realpath(mp) in text, text
        assert "info: unmounted " + os.path.realpath(mp) in text, text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        H.unmount(mp)
        sock.close()


def test_systemd_units_are_valid(tmp_path):
    """contrib/systemd's units pass `systemd-analyze verify` with the residfs under
    test in ExecStart=; the service is Type=notify and runs the mount in the foreground."""
    units = os.path.join(H.REPO, "contrib", "systemd")
    names = sorted(n for n in os.listdir(units) if ".service" in n or n.endswith(".mount"))
    assert "residfs@.service.in" in names and any(n.endswith(".mount") for n in names), names
    for n in names:
        text = open(os.path.join(units, n)).read()
        if ".service" in n:
            assert "Type=notify" in text and "residfs mount -f " in text, n
            text = text.replace("@BINDIR@", os.path.dirname(os.path.abspath(H.residfs_bin())))
            n = n.replace("@.service.in", "@mnt-merged.service")
        else:
            assert "Type=fuse.residfs" in text, n
        (tmp_path / n).write_text(text)
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        *sorted(str(tmp_path / f) for f in os.listdir(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


# ---- residfs stats ----------------------------------------------------------------------

def test_stats_table_json_and_watch(mounter, pair, tmp_path):
    spec, want = pair
    mp = mounter.mount(spec, "--cache-size", "64M")
    shard = sorted(f for f in want if f.endswith(".safetensors"))[0]
    H.read_file(os.path.join(mp, shard))
    js = json.loads(stats(mp, "--json").stdout)
    assert js["bytes"] >= len(want[shard]) and js["requests"] > 0, js
    assert js["computed_bytes"] > 0 and js["errors"] == 0 and js["files"] == len(want), js
    assert "remote" not in js, js   # local terms only
    raw = json.loads(H.read_file(os.path.join(mp, ".residfs-stats")))
    assert set(raw) == set(js), (raw, js)
    table = stats(mp).stdout
    for word in ("backend", "block cache", "computed", "errors", "reads", os.path.realpath(mp)):
        assert word in table, table
    assert "64.00 MiB" in table, table
    # --watch: a new object per interval, until SIGINT
    p = subprocess.Popen([H.residfs_bin(), "stats", mp, "--json", "--watch", "--interval", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert len(lines) >= 4, out
    p = subprocess.Popen([H.residfs_bin(), "stats", mp, "--watch", "--interval", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0 and out.count("block cache") >= 3, (out, err)
    assert "/s" in out, out   # rates from the second screen on


def test_stats_refuses_what_is_no_mount(tmp_path):
    r = H.run(["stats", str(tmp_path)])
    assert r.returncode == 1 and "is not a residfs mount" in r.stderr, r
    r = H.run(["stats"])
    assert r.returncode == 2 and "expected MOUNTPOINT" in r.stderr, r
    r = H.run(["stats", str(tmp_path), "--interval", "0"])
    assert r.returncode == 2 and "--interval" in r.stderr, r


# ---- logs and --version -----------------------------------------------------------------

def test_log_file_of_a_daemon(mounter, pair, tmp_path):
    """A backgrounded mount writes its lines to --log-file with time, pid and level."""
    spec, _ = pair
    log = tmp_path / "rfs.log"
    mp = mounter.mount(spec, "--log-file", str(log), "--log-level", "info")
    deadline = time.time() + 10
    while "mounted at" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    line = [ln for ln in text.splitlines() if "mounted at" in ln][0]
    assert line.endswith("Z residfs[" + line.split("residfs[")[1].split("]")[0] + "] info: "
                         + line.split("info: ")[1]), line
    assert line[:4].isdigit() and "T" in line[:20], line
    mounter.unmount(mp)
    deadline = time.time() + 10
    while "unmounted" not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "info: unmounted " + os.path.realpath(mp) in log.read_text()


def test_log_level_error_keeps_info_out(mounter, pair, tmp_path):
    spec, _ = pair
    log = tmp_path / "quiet.log"
    mp = mounter.mount(spec, "--log-file", str(log), "--log-level", "error")
    mounter.unmount(mp)
    time.sleep(0.3)
    assert log.read_text() == ""


def test_log_options_refused(refuser, pair, tmp_path):
    spec, _ = pair
    refuser.refuse(spec, "--log-level", "verbose", names=["--log-level", "verbose"], rc=2)
    refuser.refuse(spec, "--log-file", str(tmp_path / "no" / "such" / "dir" / "x.log"),
                   names=["--log-file", "x.log"], rc=1)


def test_version_names_the_libraries():
    r = H.run(["--version"])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].startswith("residfs "), r.stdout
    assert any(ln.startswith("libfuse 3.") for ln in lines), r.stdout
    assert any(ln.startswith("libcurl/") for ln in lines), r.stdout
    kern = [ln for ln in lines if ln.startswith("CPU kernels ")]
    assert kern and kern[0].split()[2] in ("scalar", "avx2", "avx512"), r.stdout
    assert "CUDA" in kern[0], r.stdout
