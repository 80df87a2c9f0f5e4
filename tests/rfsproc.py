"""Running residfs and handling its mounts, for both pytest suites (tests/integration and
tests/hf). Standard library only: each suite has its own Python environment."""
import os
import re
import subprocess
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def residfs_bin():
    return os.environ.get("RESIDFS_BIN") or os.path.join(REPO, "build", "fs", "residfs")


class Result:
    def __init__(self, args, rc, out, err):
        self.args, self.returncode, self.stdout, self.stderr = args, rc, out, err

    def __repr__(self):
        return (f"residfs {' '.join(self.args)} -> {self.returncode}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-4000:]}")


def run(args, cwd=None, timeout=120, env=None):
    """Runs residfs; output goes through files (a daemon must not hold a pipe open).
    env: variables to set (None as a value: unset) on top of this process's."""
    full = None
    if env is not None:
        full = dict(os.environ)
        for k, v in env.items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        p = subprocess.run([residfs_bin(), *args], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                           cwd=cwd, timeout=timeout, env=full)
        o.seek(0)
        e.seek(0)
        return Result([str(a) for a in args], p.returncode, o.read().decode(errors="replace"),
                      e.read().decode(errors="replace"))


def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts():
    with open("/proc/self/mountinfo") as f:
        return [_unescape_mountinfo(line.split()[4]) for line in f]


def is_mounted(mp):
    return os.path.realpath(mp) in mounts()


def unmount(mp):
    """fusermount3 -u, then -uz, then umount -l; True when nothing is mounted there any more."""
    for flag in ("-u", "-uz"):
        if not is_mounted(mp):
            return True
        subprocess.run(["fusermount3", flag, mp], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    if is_mounted(mp):
        subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    return not is_mounted(mp)


def daemon_pids(mp):
    """PIDs of the residfs processes serving mountpoint mp (by their command line)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mp) in args and any(a.endswith(b"residfs") for a in args):
            out.append(int(pid))
    return out
