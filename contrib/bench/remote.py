#!/usr/bin/env python3
"""residfs remote-source benchmark: remote terms against curl and huggingface_hub.

Usage:  python3 contrib/bench/remote.py [--build build] [--cache-dir DIR] [--json OUT]
                [--rounds 3] [--connections 8] [--latency-ms 20] [--no-hub] [--no-cold]

Reuses bench.py's 1 GiB bf16 base (three shards) and its ~2 GiB float32
delta (built once under ~/.cache/residfs/bench) and measures, against
baselines taken in the same run:

  1. cold remote read: nginx (tests/remote/webserve.py) serves the base and
     the delta as two web directories; every merged shard is read
     sequentially (4 MiB reads) on a fresh `residfs mount` of
     http://.../base/+http://.../delta/ with the disk block cache off, then
     once with it on, against `curl --parallel` fetching exactly the source
     bytes (every byte of the base shards and of the delta file, one ranged
     GET per 8 MiB part, as many connections as residfs).  Once without
     added latency, once with nginx delaying every request (latency_ms).
     Bytes and requests come from nginx's access log.  Each figure is the
     median of --rounds rounds, curl and residfs alternated.
  2. time to first tensor: the Hub emulator (tests/remote/hubemu.py) serves
     the same directories as org/base and org/delta; `residfs mount
     hf://org/base+hf://org/delta` plus the read of one merged tensor (the
     one nearest 64 MiB) against huggingface_hub.snapshot_download of both
     repos (the hf test venv's python).  Same server on both sides.
  3. the daemon's peak RSS (VmHWM) after a full cold read, against its
     budgets (--cache-size 256M + --remote-memory 256M).

Standard library only; run as root (like bench.py: FUSE readahead setting).
Network traffic stays on 127.0.0.1.
"""
import argparse
import glob
import json
import os
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "remote"))

import bench  # noqa: E402  (workload_1g, warm, read_files, Mount)
from webserve import Nginx  # noqa: E402

PART = 8 << 20                 # RFS_TUNE_REMOTE_PART
MIB = 1 << 20
CACHE_BUDGET = 256 * MIB       # --cache-size default
REMOTE_MEMORY = 256 * MIB      # --remote-memory default
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE")


def q(cmd, env=None):
    """A shell command line for @cmd (with @env assignments in front)."""
    pre = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return (pre + " " if pre else "") + " ".join(shlex.quote(str(c)) for c in cmd)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENV}
    env.update(extra or {})
    return env


class Mount(bench.Mount):
    """bench.Mount with a watchdog and a check that the daemon is gone."""

    def __init__(self, args, mp, env=None, timeout=120):
        self.mp = mp
        os.makedirs(mp, exist_ok=True)
        self.cmd = args + [mp]
        t0 = time.perf_counter()
        subprocess.run(self.cmd, check=True, env=env, timeout=timeout)
        self.mount_s = time.perf_counter() - t0
        self.daemon = self.pid()
        self.aborted = False

    def hwm_mib(self):
        if self.daemon is None:
            return None
        try:
            for line in open(f"/proc/{self.daemon}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def mem_status(self):
        """VmHWM, VmRSS, RssAnon, RssFile (MiB) of the daemon now."""
        out = {}
        try:
            for line in open(f"/proc/{self.daemon}/status"):
                k = line.split(":")[0]
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    v = int(line.split()[1])
                    out[k] = v if k == "Threads" else round(v / 1024, 1)
        except (OSError, TypeError, ValueError):
            pass
        return out

    def cpu_s(self):
        """user and system CPU seconds of the daemon so far."""
        try:
            f = open(f"/proc/{self.daemon}/stat").read().rsplit(")", 1)[1].split()
            tck = os.sysconf("SC_CLK_TCK")
            return int(f[11]) / tck, int(f[12]) / tck
        except (OSError, TypeError, IndexError):
            return None, None

    def stats(self):
        try:
            with open(os.path.join(self.mp, ".residfs-stats")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def watchdog(self, seconds, what):
        """A timer that, when it fires, kills the daemon (reads then fail
        with ENOTCONN instead of hanging) and notes it."""
        def fire():
            self.aborted = True
            print(f"!! {what}: no result after {seconds} s; killing residfs "
                  f"(pid {self.daemon})", file=sys.stderr)
            if self.daemon:
                try:
                    os.kill(self.daemon, signal.SIGKILL)
                except OSError:
                    pass
        t = threading.Timer(seconds, fire)
        t.daemon = True
        t.start()
        return t

    def close(self):
        r = subprocess.run(["fusermount3", "-u", self.mp], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)
        if self.daemon:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(f"/proc/{self.daemon}"):
                try:
                    st = open(f"/proc/{self.daemon}/stat").read().rsplit(")", 1)[1].split()[0]
                    if st == "Z":
                        break
                except OSError:
                    break
                time.sleep(0.05)
            else:
                if os.path.exists(f"/proc/{self.daemon}"):
                    print(f"!! residfs daemon {self.daemon} still running 10 s after the "
                          f"unmount; killing it", file=sys.stderr)
                    try:
                        os.kill(self.daemon, signal.SIGKILL)
                    except OSError:
                        pass


def proc_cpu(pid):
    """user + system CPU seconds of process @pid (0 when gone)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def nginx_cpu(web):
    """CPU seconds of nginx's master and worker so far."""
    pids = [web.proc.pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == web.proc.pid:
                    pids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return sum(proc_cpu(p) for p in pids)


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError as e:
        return f"({e})"


def link_tree(src, dst):
    """dst/NAME -> src/NAME for the regular files of @src: hard links when
    the file system allows, symlinks otherwise (nginx follows both)."""
    os.makedirs(dst)
    kind = "hard links"
    for name in sorted(os.listdir(src)):
        s = os.path.join(src, name)
        if not os.path.isfile(s):
            continue
        try:
            os.link(s, os.path.join(dst, name))
        except OSError:
            os.symlink(s, os.path.join(dst, name))
            kind = "symlinks"
    return kind


def source_files(base, delta):
    """Every remote byte a full read needs: the base shards and the delta
    file(s), as (subdir, name, size)."""
    out = []
    for sub, d in (("base", base), ("delta", delta)):
        for name in sorted(os.listdir(d)):
            if name.endswith(".safetensors"):
                out.append((sub, name, os.path.getsize(os.path.join(d, name))))
    return out


def curl_config(path, url, files):
    n = 0
    with open(path, "w") as f:
        for sub, name, size in files:
            for a in range(0, size, PART):
                b = min(a + PART, size) - 1
                if n:
                    f.write("next\n")
                f.write(f'url = "{url}{sub}/{name}"\nrange = "{a}-{b}"\n'
                        f'output = "/dev/null"\nfail\n')
                n += 1
    return n


def log_slice(web, start, min_count=0):
    reqs = web.requests(min_count=start + min_count, timeout=5.0)
    return reqs[start:]


def summarize(reqs):
    st, hist = {}, {}
    for r in reqs:
        st[r["status"]] = st.get(r["status"], 0) + 1
        if r["status"] == 206 and r["range"] != "bytes=0-0":
            k = f"{(r['sent'] + MIB - 1) // MIB} MiB"
            hist[k] = hist.get(k, 0) + 1
    return {"requests": len(reqs), "bytes_sent": sum(r["sent"] for r in reqs),
            "statuses": {str(k): v for k, v in sorted(st.items())},
            "ranged_gets": sum(1 for r in reqs if r["range"] and r["range"] != "bytes=0-0"),
            "probes": sum(1 for r in reqs if r["range"] == "bytes=0-0"),
            "sizes": dict(sorted(hist.items(), key=lambda kv: int(kv[0].split()[0])))}


def overlap_bytes(reqs):
    """Bytes asked for more than once (ranges of 206 answers that overlap
    an earlier one of the same file)."""
    seen, dup = {}, 0
    for r in reqs:
        if r["status"] != 206 or not r["range"].startswith("bytes="):
            continue
        try:
            a, b = r["range"][6:].split("-")
            a, b = int(a), int(b)
        except ValueError:
            continue
        if b - a < 1:
            continue
        s = seen.setdefault(r["uri"], [])
        for x, y in s:
            lo, hi = max(a, x), min(b, y)
            if hi >= lo:
                dup += hi - lo + 1
        s.append((a, b))
    return dup


def run_curl(curl, web, tmp, files, conns, lat):
    cfg = os.path.join(tmp, f"curl-{lat}ms.cfg")
    parts = curl_config(cfg, web.url, files)
    cmd = [curl, "--parallel", "--parallel-max", str(conns), "-s", "-S", "-K", cfg]
    n0 = len(web.requests())
    c0, g0 = children_cpu(), nginx_cpu(web)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    t = time.perf_counter() - t0
    cpu, ng = children_cpu() - c0, nginx_cpu(web) - g0
    if r.returncode != 0:
        raise RuntimeError(f"curl failed ({r.returncode}): {r.stderr[-2000:]}")
    reqs = log_slice(web, n0, parts)
    s = summarize(reqs)
    with open(cfg) as f:
        head = "".join(f.readlines()[:9])
    s.update(seconds=t, parts=parts, command=q(cmd), cpu_s=cpu, nginx_cpu_s=ng, config_head=head)
    if s["statuses"] != {"206": parts}:
        raise RuntimeError(f"curl: unexpected answers {s['statuses']}")
    return s


def run_residfs(rfs, web, work, conns, lat, disk_cache, src_size, tag):
    mp = os.path.join(work, "mnt")
    spec = f"{web.url}base/+{web.url}delta/"
    args = [rfs, "mount", "--remote-connections", str(conns)]
    blocks = None
    if disk_cache:
        blocks = os.path.join(work, f"blocks-{tag}")
        args += ["--remote-cache-dir", blocks]
    else:
        args += ["--remote-cache-size", "0"]
    args.append(spec)
    n0 = len(web.requests())
    m = Mount(args, mp)
    res = {"command": q(args + [mp]), "mount_s": m.mount_s}
    mreqs = web.requests()[n0:]
    n_mount = n0 + len(mreqs)
    res["mount_bytes"] = sum(r["sent"] for r in mreqs)
    try:
        shards = sorted(os.path.join(mp, f) for f in os.listdir(mp) if f.endswith(".safetensors"))
        wd = m.watchdog(300, f"cold read ({tag})")
        u0, s0 = m.cpu_s()
        g0, r0 = nginx_cpu(web), resource.getrusage(resource.RUSAGE_SELF)
        try:
            n, t = bench.read_files(shards)
        finally:
            wd.cancel()
        u1, s1 = m.cpu_s()
        g1, r1 = nginx_cpu(web), resource.getrusage(resource.RUSAGE_SELF)
        res.update(read_bytes=n, seconds=t, out_GBps=n / t / 1e9, nginx_cpu_s=g1 - g0,
                   reader_cpu_s=r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
                   daemon_cpu_user_s=(u1 - u0) if u0 is not None else None,
                   daemon_cpu_sys_s=(s1 - s0) if s0 is not None else None,
                   peak_rss_MiB=m.hwm_mib(), daemon_memory=m.mem_status(), stats=m.stats())
    finally:
        m.close()
    if m.aborted:
        raise RuntimeError(f"residfs read ({tag}) hung and was killed")
    reqs = log_slice(web, n0)
    s = summarize(reqs)
    s["refetched_bytes"] = overlap_bytes(reqs)
    s["mount_requests"] = n_mount - n0
    res.update(s)
    res["fetched_ratio"] = res["bytes_sent"] / src_size
    if blocks:
        du = 0
        for root, _, fs in os.walk(blocks):
            for f in fs:
                try:
                    du += os.lstat(os.path.join(root, f)).st_blocks * 512
                except OSError:
                    pass
        res["disk_cache_bytes"] = du
        shutil.rmtree(blocks, ignore_errors=True)
    return res


HF_SCRIPT = r"""
import json, sys, time
from huggingface_hub import snapshot_download
t0 = time.perf_counter()
for r in sys.argv[2:]:
    snapshot_download(r, cache_dir=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def first_tensor(mp):
    """Picks, from the merged shards' headers read through the mount, the
    tensor whose size is nearest 64 MiB; reads its bytes (4 MiB reads)."""
    best = None
    for f in sorted(os.listdir(mp)):
        if not f.endswith(".safetensors"):
            continue
        p = os.path.join(mp, f)
        with open(p, "rb", buffering=0) as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            h = json.loads(fh.read(n))
        h.pop("__metadata__", None)
        for k, v in h.items():
            a, b = v["data_offsets"]
            key = (abs((b - a) - 64 * MIB), k)
            if best is None or key < best[0]:
                best = (key, p, 8 + n + a, 8 + n + b, k, v["dtype"])
    _, p, a, b, name, dt = best
    got = bench.read_ranges([(p, a, b)], 4 << 20)
    if got != b - a:
        raise RuntimeError(f"short read of {name}: {got} of {b - a}")
    return {"tensor": name, "shard": os.path.basename(p), "dtype": dt, "bytes": b - a}


def operand_bytes(base, delta, name):
    """Bytes of @name's operands in the source directories (what reading the
    merged tensor needs from the server)."""
    n = 0
    for d in (base, delta):
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                for path, a, b, k in bench.tensor_ranges(os.path.join(d, f)):
                    if k == name:
                        n += b - a
    return n


def hub_residfs(rfs, emu, base, delta, work, conns):
    """One fresh `residfs mount hf://...` + the read of one merged tensor."""
    res = {}
    emu.clear_log()
    mp = os.path.join(work, "mnt-hub")
    hf_home = os.path.join(work, "hf-home-residfs")
    blocks = os.path.join(work, "blocks-hub")
    env = {"HF_ENDPOINT": emu.endpoint, "HF_HOME": hf_home}
    args = [rfs, "mount", "--remote-connections", str(conns), "--remote-cache-dir", blocks,
            "hf://org/base+hf://org/delta"]
    res["command"] = q(args + [mp], env)
    t0 = time.perf_counter()
    m = Mount(args, mp, env=clean_env(env))
    t_mount = time.perf_counter()
    mreqs = emu.requests()
    res["mount_requests"], res["mount_bytes"] = len(mreqs), sum(r["sent"] for r in mreqs)
    try:
        wd = m.watchdog(300, "time to first tensor")
        try:
            info = first_tensor(mp)
        finally:
            wd.cancel()
        t1 = time.perf_counter()
        res.update(info)
        res["operand_bytes"] = operand_bytes(base, delta, info["tensor"])
        res["seconds"] = t1 - t0
        res["mount_s"] = t_mount - t0
        res["tensor_s"] = t1 - t_mount
        res["peak_rss_MiB"] = m.hwm_mib()
        res["stats"] = m.stats()
    finally:
        m.close()
    if m.aborted:
        raise RuntimeError("residfs (hub) hung and was killed")
    reqs = emu.requests()
    res["requests"] = len(reqs)
    res["requests_by_server"] = {x: sum(1 for r in reqs if r["server"] == x) for x in ("hub", "cdn")}
    res["bytes_sent"] = sum(r["sent"] for r in reqs)
    shutil.rmtree(blocks, ignore_errors=True)
    shutil.rmtree(hf_home, ignore_errors=True)
    return res


def hub_snapshot(hfpy, emu, work):
    """huggingface_hub.snapshot_download of both repos into a fresh cache."""
    res = {}
    emu.clear_log()
    hf_home = os.path.join(work, "hf-home-snapshot")
    dl = os.path.join(work, "hf-download")
    env = {"HF_ENDPOINT": emu.endpoint, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": hf_home}
    cmd = [hfpy, "-c", HF_SCRIPT, dl, "org/base", "org/delta"]
    res["command"] = q(env=env, cmd=[hfpy, "-c",
                                     "from huggingface_hub import snapshot_download as s; "
                                     f"[s(r, cache_dir={dl!r}) for r in ('org/base', 'org/delta')]"])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(env), timeout=600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"snapshot_download failed: {r.stderr[-3000:]}")
    res["seconds"] = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
    res["wall_s"] = wall
    reqs = emu.requests()
    res["requests"] = len(reqs)
    res["bytes_sent"] = sum(r["sent"] for r in reqs)
    shutil.rmtree(dl, ignore_errors=True)
    shutil.rmtree(hf_home, ignore_errors=True)
    return res


def secs(rounds):
    """'1.23, 1.30, ...' for rounds (dicts with seconds, or numbers)."""
    return ", ".join(f"{x['seconds'] if isinstance(x, dict) else x:.2f}" for x in rounds)


def median(rounds):
    """The round with the median time (the lower one of two)."""
    return sorted(rounds, key=lambda r: r["seconds"])[(len(rounds) - 1) // 2]


def run_hub(rfs, base, delta, work, conns, hfpy, rounds):
    from hubemu import HubEmu
    res = {"emulator": "tests/remote/hubemu.py: pure Python (ThreadingHTTPServer, 64 KiB "
                       "writes); slow next to a real Hub/CDN: both sides use it"}
    emu = HubEmu()
    t0 = time.perf_counter()
    emu.add_repo_dir("org/base", base)
    emu.add_repo_dir("org/delta", delta)
    res["emulator_load_s"] = time.perf_counter() - t0
    emu.start()
    rr, sr = [], []
    try:
        for i in range(rounds):
            rr.append(hub_residfs(rfs, emu, base, delta, work, conns))
            print(f"  round {i + 1}: residfs {rr[-1]['seconds']:.2f} s "
                  f"({rr[-1]['bytes_sent'] / 1e6:.0f} MB fetched)", end="", flush=True)
            if hfpy is not None:
                sr.append(hub_snapshot(hfpy, emu, work))
                print(f"; snapshot_download {sr[-1]['seconds']:.2f} s", end="")
            print(flush=True)
    finally:
        emu.stop()
    res["residfs_rounds"], res["residfs"] = rr, median(rr)
    if hfpy is None:
        res["snapshot_skipped"] = ("no hf test venv (~/.cache/residfs/venv-hf-*; tests/run.sh "
                                   "creates it)")
    else:
        res["snapshot_rounds"], res["snapshot"] = sr, median(sr)
        res["ratio"] = res["snapshot"]["seconds"] / res["residfs"]["seconds"]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/residfs/bench"))
    ap.add_argument("--connections", type=int, default=8, help="--remote-connections (8)")
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--curl", default="/usr/bin/curl")
    ap.add_argument("--no-hub", action="store_true", help="skip the time-to-first-tensor part")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold reads (and memory)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each figure (medians)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rfs = os.path.abspath(os.path.join(a.build, "fs", "residfs"))
    if os.geteuid() != 0:
        print("note: not root: residfs may not set the mount's readahead", file=sys.stderr)
    base, delta = bench.workload_1g(a.cache_dir)
    files = source_files(base, delta)
    src_size = sum(s for _, _, s in files)
    hfpy = sorted(glob.glob(os.path.expanduser("~/.cache/residfs/venv-hf-*/bin/python")))
    hfpy = hfpy[-1] if hfpy else None

    res = {"machine": f"{os.cpu_count()} cores",
           "residfs_version": version([rfs, "--version"]),
           "curl_version": version([a.curl, "--version"]).splitlines()[0],
           "nginx": version(["/usr/sbin/nginx", "-v"]) or
           subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip(),
           "connections": a.connections, "source_bytes": src_size,
           "source_files": [f"{s}/{n} {z}" for s, n, z in files]}
    print(f"residfs: {res['residfs_version'].splitlines()[0]}  ({rfs})")
    print(f"curl:    {res['curl_version']}")
    print(f"nginx:   {res['nginx']}")
    print(f"source:  {len(files)} files, {src_size} bytes ({src_size / 2**30:.2f} GiB)")

    work = tempfile.mkdtemp(prefix="residfs-remote-bench-")
    try:
        srv = os.path.join(work, "srv")
        res["served_as"] = link_tree(base, os.path.join(srv, "base"))
        link_tree(delta, os.path.join(srv, "delta"))
        bench.warm([base, delta])

        # 1 + 3: cold remote reads, curl baseline
        cold = {}
        for lat in (() if a.no_cold else (0, a.latency_ms)):
            with Nginx(srv, latency_ms=lat) as web:
                print(f"\n-- nginx {web.url} latency {lat} ms", flush=True)
                cr, rr, dr = [], [], []
                for i in range(a.rounds):
                    cr.append(run_curl(a.curl, web, work, files, a.connections, lat))
                    rr.append(run_residfs(rfs, web, work, a.connections, lat, False, src_size,
                                          f"{lat}ms"))
                    c, r = cr[-1], rr[-1]
                    print(f"  round {i + 1}: curl {c['seconds']:.2f} s, residfs "
                          f"{r['seconds']:.2f} s ({r['requests']} requests, fetched "
                          f"{r['fetched_ratio']:.3f}x, peak RSS {r['peak_rss_MiB']:.0f} MiB)",
                          end="", flush=True)
                    if lat == 0:
                        dr.append(run_residfs(rfs, web, work, a.connections, lat, True, src_size,
                                              "disk"))
                        d = dr[-1]
                        print(f", disk cache on {d['seconds']:.2f} s (peak RSS "
                              f"{d['peak_rss_MiB']:.0f} MiB)", end="")
                    print(flush=True)
                c, r = median(cr), median(rr)
                ent = {"latency_ms": lat, "curl": c, "residfs": r,
                       "ratio": c["seconds"] / r["seconds"],
                       "curl_rounds_s": [x["seconds"] for x in cr],
                       "residfs_rounds": rr}
                if dr:
                    d = median(dr)
                    ent["residfs_disk_cache"] = d
                    ent["ratio_disk_cache"] = c["seconds"] / d["seconds"]
                    ent["residfs_disk_cache_rounds"] = dr
                # the probes of absent optional files are expected 404s
                err = [x for x in web.error_log().splitlines()
                       if x.strip() and "No such file or directory" not in x]
                if err:
                    ent["nginx_errors"] = err[-20:]
                    print("  nginx errors:\n    " + "\n    ".join(err[-5:]), flush=True)
                cold[str(lat)] = ent
        res["cold"] = cold

        # 2: time to first tensor
        if not a.no_hub:
            print("\n-- Hub emulator (pure Python: slow; same server for both sides)", flush=True)
            res["first_tensor"] = run_hub(rfs, base, delta, work, a.connections, hfpy, a.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # 3: memory
    budget = (CACHE_BUDGET + REMOTE_MEMORY) / MIB
    def top(rounds):
        return max([x["peak_rss_MiB"] for x in rounds if x["peak_rss_MiB"] is not None] or [0])
    peaks = {f"+{k} ms": top(v["residfs_rounds"]) for k, v in res["cold"].items()}
    if "0" in res["cold"]:
        peaks["+0 ms disk cache"] = top(res["cold"]["0"]["residfs_disk_cache_rounds"])
    peak = max([p for p in peaks.values() if p is not None] or [0])
    res["memory"] = {"peak_rss_MiB": peak, "per_run_MiB": peaks, "budget_MiB": budget,
                     "within": peak <= budget}

    # the table
    def row(name, rv, bv, ratio, target, note=""):
        print(f"| {name} | {rv} | {bv} | {ratio} | {target} | {note} |")

    print(f"\nresidfs remote benchmark ({res['machine']}, source {src_size / 1e9:.2f} GB: "
          f"3 bf16 base shards + f32 delta; {a.connections} connections; nginx on loopback; "
          f"medians of {a.rounds} rounds; ratio = baseline time / residfs time)\n")
    print("| measurement | residfs | baseline | ratio | target | notes |\n|---|---|---|---|---|---|")
    for lat in (() if a.no_cold else (0, a.latency_ms)):
        e = res["cold"][str(lat)]
        c, r = e["curl"], e["residfs"]
        met = "met" if e["ratio"] >= (0.8 if lat == 0 else 0.6) else "missed"
        row(f"cold read, nginx +{lat} ms, disk cache off (s)", f"{r['seconds']:.2f}",
            f"{c['seconds']:.2f} (curl)", f"{e['ratio']:.2f}", ">= 0.8" if lat == 0 else ">= 0.6",
            f"{met}; {r['bytes_sent'] / r['seconds'] / 1e6:.0f} vs "
            f"{c['bytes_sent'] / c['seconds'] / 1e6:.0f} MB/s of source bytes; "
            f"merged output {r['read_bytes'] / r['seconds'] / 1e6:.0f} MB/s; "
            f"mount {r['mount_s']:.2f} s, not counted ({r['mount_bytes'] / 1e6:.0f} MB in "
            f"{r['mount_requests']} requests); rounds residfs "
            f"{secs(e['residfs_rounds'])}, curl {secs(e['curl_rounds_s'])}")
        row(f"  source bytes fetched, +{lat} ms", f"{r['bytes_sent']}", f"{c['bytes_sent']}",
            f"{r['fetched_ratio']:.3f}", "1.000",
            f"source {src_size}; re-fetched {r['refetched_bytes']}; residfs {r['requests']} "
            f"requests ({r['mount_requests']} while mounting, {r['probes']} probes, statuses "
            f"{r['statuses']}), sizes {r['sizes']}; curl {c['requests']}")
        row(f"  CPU seconds during the read, +{lat} ms", f"{r['daemon_cpu_user_s'] + r['daemon_cpu_sys_s']:.2f}",
            f"{c['cpu_s']:.2f} (curl)", "", "",
            f"residfs daemon user {r['daemon_cpu_user_s']:.2f} + sys {r['daemon_cpu_sys_s']:.2f}, "
            f"reader {r['reader_cpu_s']:.2f}, nginx {r['nginx_cpu_s']:.2f}; curl's nginx "
            f"{c['nginx_cpu_s']:.2f}")
        if "residfs_disk_cache" in e:
            d = e["residfs_disk_cache"]
            row(f"cold read, nginx +{lat} ms, disk cache on (s)", f"{d['seconds']:.2f}",
                f"{c['seconds']:.2f} (curl)", f"{e['ratio_disk_cache']:.2f}", "",
                f"{d['bytes_sent'] / d['seconds'] / 1e6:.0f} MB/s; {d['requests']} requests; "
                f"fetched {d['fetched_ratio']:.3f}x; {d.get('disk_cache_bytes', 0) / 1e6:.0f} MB "
                f"written to the cache; daemon CPU user {d['daemon_cpu_user_s']:.2f} + sys "
                f"{d['daemon_cpu_sys_s']:.2f}; rounds "
                f"{secs(e['residfs_disk_cache_rounds'])}")
    if "first_tensor" in res:
        h = res["first_tensor"]
        r = h["residfs"]
        note = (f"{r['tensor']} {r['bytes'] / MIB:.1f} MiB (operands {r['operand_bytes'] / MIB:.1f} "
                f"MiB); mount {r['mount_s']:.2f} s ({r['mount_bytes'] / 1e6:.0f} MB in "
                f"{r['mount_requests']} requests) + read {r['tensor_s']:.2f} s; residfs fetched "
                f"{r['bytes_sent'] / 1e6:.0f} MB in {r['requests']} requests")
        if "snapshot" in h:
            sn = h["snapshot"]
            row("time to first tensor, Hub emulator (s)", f"{r['seconds']:.2f}",
                f"{sn['seconds']:.2f} (snapshot_download)", f"{h['ratio']:.2f}", "",
                note + f", snapshot_download {sn['bytes_sent'] / 1e6:.0f} MB in "
                f"{sn['requests']}; rounds residfs "
                f"{secs(h['residfs_rounds'])}, snapshot {secs(h['snapshot_rounds'])}; "
                f"the emulator is pure Python (slow)")
        else:
            row("time to first tensor, Hub emulator (s)", f"{r['seconds']:.2f}", "skipped", "",
                "", note + "; " + h["snapshot_skipped"])
    mm = res["memory"]
    if not a.no_cold:
        row("daemon peak RSS after a full cold read (MiB)", f"{mm['peak_rss_MiB']:.0f}",
            f"budget {budget:.0f} (256M cache + 256M remote)", "", f"<= {budget:.0f}",
            ("within" if mm["within"] else "OVER") + "; per run " +
            ", ".join(f"{k}: {v:.0f}" for k, v in mm["per_run_MiB"].items() if v is not None))
    print(f"\n{' / '.join(res['residfs_version'].splitlines())}\n{res['curl_version']} (the CLI)")
    print("\ncommands (ports and temporary paths are the run's; the curl config has one "
          "url/range/output/fail entry per 8 MiB part of each file, `next` between them):")
    if not a.no_cold:
        print("  the curl config begins (" + str(res["cold"]["0"]["curl"]["parts"]) + " entries):")
        for line in res["cold"]["0"]["curl"]["config_head"].splitlines():
            print(f"    {line}")
    for lat in (() if a.no_cold else (0, a.latency_ms)):
        e = res["cold"][str(lat)]
        print(f"  +{lat} ms: {e['curl']['command']}")
        print(f"  +{lat} ms: {e['residfs']['command']}")
        if "residfs_disk_cache" in e:
            print(f"  +{lat} ms: {e['residfs_disk_cache']['command']}")
    if "first_tensor" in res:
        h = res["first_tensor"]
        print(f"  hub: {h['residfs']['command']}")
        if "snapshot" in h:
            print(f"  hub: {h['snapshot']['command']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"\njson: {a.json}")


if __name__ == "__main__":
    main()
