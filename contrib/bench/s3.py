#!/usr/bin/env python3
"""residfs remote benchmark, S3 part: s3:// terms against curl --aws-sigv4.

Usage:  python contrib/bench/s3.py [--build build] [--json OUT] [--rounds 3]
                                   [--connections 8] [--curl /usr/bin/curl]

Run with the integration tests' Python environment (it needs moto and boto3):
tests/venv.sh prints its path.  Run as root (like bench.py: FUSE readahead).

tests/remote/s3server.py serves moto's S3 in this process on 127.0.0.1, with
SigV4 signatures checked.  moto copies a whole object for every ranged GET
and closes the connection after every answer, so the model is small: a
Llama-shaped bf16 base of about 28 MB in three shards and its float32 delta
(one model.safetensors of about 55 MB), deterministic data, built once per
run under a temporary directory and uploaded as s3://models/base/ and
s3://models/delta/.  Measured, as the median of --rounds rounds with the two
sides alternated:

  1. curl --parallel --parallel-max N --aws-sigv4 "aws:amz:REGION:s3" fetching
     exactly the source bytes residfs fetches (every byte of the base shards
     and of the delta's model.safetensors), one ranged GET per 8 MiB part
     (a config file with url/range/output/fail entries, `next` between them).
  2. residfs mount --remote-cache-size 0 s3://models/base+s3://models/delta
     with the server's AWS_* environment; every merged shard read
     sequentially (4 MiB reads), timed from the first read to the last byte.

Bytes and requests come from the server's own log (S3Server.requests()).
Network traffic stays on 127.0.0.1.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "remote"))

import bench  # noqa: E402
from remote import Mount, children_cpu, clean_env, median, q, secs, version  # noqa: E402
from s3server import S3Server  # noqa: E402

PART = 8 << 20                 # RFS_TUNE_REMOTE_PART
MIB = 1 << 20
BUCKET = "models"
CFG = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 3,
       "vocab_size": 4096, "kv_dim": 512, "num_attention_heads": 8,
       "num_key_value_heads": 8}
NSHARDS = 3


def det_bytes(seed, nb, f32=False):
    """@nb deterministic bytes: a 1 MiB block of chained sha256 digests of
    @seed, repeated; each float (bf16, or f32 with @f32) given a small
    exponent (finite values, as in a real model and delta)."""
    import hashlib
    blk = bytearray()
    h = hashlib.sha256(seed.encode()).digest()
    while len(blk) < MIB:
        h = hashlib.sha256(h).digest()
        blk += h
    blk = bytes(blk[:MIB])
    out = bytearray((blk * (nb // MIB + 1))[:nb])
    if f32:
        out[3::4] = out[3::4].translate(bench._SMALL_EXP)
    else:   # bf16: keep the high byte's exponent small too (finite values)
        out[1::2] = out[1::2].translate(bench._SMALL_EXP)
    return bytes(out)


def make_models(work):
    """The base (NSHARDS bf16 shards) and its f32 delta under @work."""
    base, delta = os.path.join(work, "base"), os.path.join(work, "delta")
    os.makedirs(base)
    os.makedirs(delta)
    c = CFG
    tens = bench.llama_tensors(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                               c["vocab_size"], c["kv_dim"], "BF16")
    per = (len(tens) + NSHARDS - 1) // NSHARDS
    wmap, total = {}, 0
    for s in range(NSHARDS):
        name = f"model-{s + 1:05d}-of-{NSHARDS:05d}.safetensors"
        m, n = bench.st_write(os.path.join(base, name), tens[s * per:(s + 1) * per],
                              lambda k, nb: det_bytes("base:" + k, nb))
        wmap.update({k: name for k in m})
        total += n
    with open(os.path.join(base, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2,
                  sort_keys=True)
    conf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            **{k: v for k, v in c.items() if k != "kv_dim"}}
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    bench.st_write(os.path.join(delta, "model.safetensors"),
                   [(n, "F32", sh) for n, _, sh in tens],
                   lambda k, nb: det_bytes("delta:" + k, nb, True))
    with open(os.path.join(delta, "config.json"), "w") as f:
        json.dump({"residuals_version": "1.0", "format": "pytorch", "dtype": "float32",
                   "param_count": len(tens)}, f, indent=2)
    return base, delta


def source_files(base, delta):
    """(key, size) of every source byte a full read needs."""
    out = []
    for prefix, d in (("base", base), ("delta", delta)):
        for name in sorted(os.listdir(d)):
            if name.endswith(".safetensors"):
                out.append((f"{prefix}/{name}", os.path.getsize(os.path.join(d, name))))
    return out


def curl_config(path, s3, files):
    """One entry per 8 MiB part.  `next` resets every option, those given on
    the command line too: the signing options are repeated in each entry
    (with them on the command line only the first entry is signed)."""
    n = 0
    sign = (f'aws-sigv4 = "aws:amz:{s3.region}:s3"\nuser = "{s3.access_key}:{s3.secret_key}"\n'
            f'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n')
    endpoint = s3.endpoint
    with open(path, "w") as f:
        for key, size in files:
            url = f"{endpoint}/{BUCKET}/{quote(key, safe='/-_.~')}"
            for a in range(0, size, PART):
                b = min(a + PART, size) - 1
                if n:
                    f.write("next\n")
                f.write(f'url = "{url}"\nrange = "{a}-{b}"\noutput = "/dev/null"\nfail\n' + sign)
                n += 1
    return n


def summarize(reqs):
    st, hist = {}, {}
    for r in reqs:
        st[r["status"]] = st.get(r["status"], 0) + 1
        if r["status"] == 206:
            k = f"{(r['sent'] + MIB - 1) // MIB} MiB"
            hist[k] = hist.get(k, 0) + 1
    return {"requests": len(reqs), "bytes_sent": sum(r["sent"] for r in reqs),
            "statuses": {str(k): v for k, v in sorted(st.items(), key=lambda kv: str(kv[0]))},
            "ranged_gets": sum(1 for r in reqs if r["method"] == "GET" and r["range"]),
            "sizes": dict(sorted(hist.items(), key=lambda kv: int(kv[0].split()[0]))),
            "log": [f"{r['t'] - reqs[0]['t']:.3f} {r['method']} {r['path']} {r['range']} "
                    f"{r['status']} {r['sent']}" for r in reqs],
            "other": sorted({f"{r['method']} {r['path']}{'?' + r['query'] if r['query'] else ''}"
                             for r in reqs if not (r["method"] == "GET" and r["range"])})[:20]}


def overlap_bytes(reqs):
    """Bytes of 206 answers asked for more than once."""
    seen, dup = {}, 0
    for r in reqs:
        if r["status"] != 206 or not (r["range"] or "").startswith("bytes="):
            continue
        try:
            a, b = (int(x) for x in r["range"][6:].split("-"))
        except ValueError:
            continue
        s = seen.setdefault(r["path"], [])
        for x, y in s:
            lo, hi = max(a, x), min(b, y)
            if hi >= lo:
                dup += hi - lo + 1
        s.append((a, b))
    return dup


def run_curl(curl, s3, work, files, conns):
    cfg = os.path.join(work, "curl.cfg")
    parts = curl_config(cfg, s3, files)
    cmd = [curl, "--parallel", "--parallel-max", str(conns), "-s", "-S", "-K", cfg]
    s3.clear_requests()
    c0 = children_cpu()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    t = time.perf_counter() - t0
    cpu = children_cpu() - c0
    if r.returncode != 0:
        raise RuntimeError(f"curl failed ({r.returncode}): {r.stderr[-2000:]}")
    s = summarize(s3.requests())
    with open(cfg) as f:
        head = "".join(f.readlines()[:15]).replace(s3.secret_key, "SECRET")
    s.update(seconds=t, parts=parts, cpu_s=cpu, config_head=head,
             command=q(cmd))
    if s["statuses"] != {"206": parts}:
        raise RuntimeError(f"curl: unexpected answers {s['statuses']}")
    return s


def run_residfs(rfs, s3, work, src_size):
    mp = os.path.join(work, "mnt")
    xdg = tempfile.mkdtemp(prefix="xdg-", dir=work)
    env = {**s3.env(), "XDG_CACHE_HOME": xdg}
    args = [rfs, "mount", "--remote-cache-size", "0", f"s3://{BUCKET}/base+s3://{BUCKET}/delta"]
    s3.clear_requests()
    m = Mount(args, mp, env=clean_env(env))
    shown = {k: ("SECRET" if k == "AWS_SECRET_ACCESS_KEY" else v) for k, v in env.items()}
    res = {"command": q(args + [mp], shown), "mount_s": m.mount_s}
    mreqs = s3.requests()
    res["mount_requests"], res["mount_bytes"] = len(mreqs), sum(r["sent"] for r in mreqs)
    try:
        shards = sorted(os.path.join(mp, f) for f in os.listdir(mp) if f.endswith(".safetensors"))
        wd = m.watchdog(120, "cold read (s3)")
        u0, s0 = m.cpu_s()
        try:
            n, t = bench.read_files(shards)
        finally:
            wd.cancel()
        u1, s1 = m.cpu_s()
        res.update(read_bytes=n, seconds=t, shards=len(shards),
                   daemon_cpu_s=(u1 + s1 - u0 - s0) if u0 is not None else None,
                   peak_rss_MiB=m.hwm_mib(), stats=m.stats())
    finally:
        m.close()
        shutil.rmtree(xdg, ignore_errors=True)
    if m.aborted:
        raise RuntimeError("residfs read (s3) hung and was killed")
    reqs = s3.requests()
    res.update(summarize(reqs))
    res["refetched_bytes"] = overlap_bytes(reqs)
    res["fetched_ratio"] = res["bytes_sent"] / src_size
    return res


def expected_output(base):
    """Bytes of the merged shards: same names and shapes as the base's."""
    return sum(os.path.getsize(os.path.join(base, f)) for f in os.listdir(base)
               if f.endswith(".safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--curl", default="/usr/bin/curl")
    ap.add_argument("--connections", type=int, default=8,
                    help="curl --parallel-max (residfs's --remote-connections default: 8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rfs = os.path.abspath(os.path.join(a.build, "fs", "residfs"))
    if os.geteuid() != 0:
        print("note: not root: residfs may not set the mount's readahead", file=sys.stderr)

    work = tempfile.mkdtemp(prefix="residfs-s3-bench-")
    res = {"machine": f"{os.cpu_count()} cores", "residfs_version": version([rfs, "--version"]),
           "curl_version": version([a.curl, "--version"]).splitlines()[0],
           "connections": a.connections, "config": CFG}
    try:
        t0 = time.perf_counter()
        base, delta = make_models(work)
        files = source_files(base, delta)
        src_size = sum(z for _, z in files)
        res.update(source_bytes=src_size, source_files=[f"{k} {z}" for k, z in files],
                   build_s=time.perf_counter() - t0)
        print(f"residfs: {res['residfs_version'].splitlines()[0]}  ({rfs})")
        print(f"curl:    {res['curl_version']}")
        print(f"source:  {len(files)} objects, {src_size} bytes ({src_size / MIB:.1f} MiB)")
        with S3Server() as s3:
            s3.make_bucket(BUCKET)
            s3.put_dir(BUCKET, "base", base)
            s3.put_dir(BUCKET, "delta", delta)
            print(f"\n-- moto S3 {s3.endpoint} (SigV4 checked)", flush=True)
            cr, rr = [], []
            for i in range(a.rounds):
                cr.append(run_curl(a.curl, s3, work, files, a.connections))
                rr.append(run_residfs(rfs, s3, work, src_size))
                c, r = cr[-1], rr[-1]
                print(f"  round {i + 1}: curl {c['seconds']:.2f} s ({c['requests']} requests), "
                      f"residfs {r['seconds']:.2f} s ({r['requests']} requests, fetched "
                      f"{r['fetched_ratio']:.3f}x, mount {r['mount_s']:.2f} s)", flush=True)
                if r["read_bytes"] != expected_output(base):
                    raise RuntimeError(f"residfs read {r['read_bytes']} bytes, expected "
                                       f"{expected_output(base)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    c, r = median(cr), median(rr)
    ratio = c["seconds"] / r["seconds"]
    res.update(curl=c, residfs=r, ratio=ratio, curl_rounds=cr, residfs_rounds=rr)

    def row(name, rv, bv, rt, target, note=""):
        print(f"| {name} | {rv} | {bv} | {rt} | {target} | {note} |")

    print(f"\nresidfs S3 benchmark ({res['machine']}, source {src_size / MIB:.1f} MiB: "
          f"{NSHARDS} bf16 base shards + f32 delta; moto S3 on loopback, SigV4 checked; "
          f"medians of {a.rounds} rounds; ratio = baseline time / residfs time)\n")
    print("| measurement | residfs | baseline | ratio | target | notes |\n|---|---|---|---|---|---|")
    row("cold read, S3 (moto), disk cache off (s)", f"{r['seconds']:.2f}",
        f"{c['seconds']:.2f} (curl)", f"{ratio:.2f}", ">= 0.8",
        f"{'met' if ratio >= 0.8 else 'missed'}; {r['bytes_sent'] / r['seconds'] / 1e6:.0f} vs "
        f"{c['bytes_sent'] / c['seconds'] / 1e6:.0f} MB/s of source bytes; mount "
        f"{r['mount_s']:.2f} s, not counted ({r['mount_bytes']} bytes in "
        f"{r['mount_requests']} requests); rounds residfs {secs(rr)}, curl {secs(cr)}")
    row("  source bytes fetched", f"{r['bytes_sent']}", f"{c['bytes_sent']}",
        f"{r['fetched_ratio']:.3f}", "1.000",
        f"source {src_size}; re-fetched {r['refetched_bytes']}; residfs statuses "
        f"{r['statuses']}, {r['ranged_gets']} ranged GETs, sizes {r['sizes']}; curl sizes "
        f"{c['sizes']}")
    row("  requests", f"{r['requests']}", f"{c['requests']} (curl)", "", "",
        f"residfs {r['mount_requests']} while mounting; other than ranged GETs: "
        f"{'; '.join(r['other']) or 'none'}")
    row("  CPU seconds during the read", f"{r['daemon_cpu_s']:.2f}" if r["daemon_cpu_s"] is not None
        else "?", f"{c['cpu_s']:.2f} (curl)", "", "", "residfs daemon; the server is this process")
    print(f"\n{' / '.join(res['residfs_version'].splitlines())}\n{res['curl_version']} (the CLI)")
    print(f"\ncommands (ports and temporary paths are the run's; the curl config has one "
          f"url/range/output/fail/aws-sigv4/user/header entry per 8 MiB part, `next` "
          f"between them (`next` resets command-line options too); "
          f"{c['parts']} entries), the config begins:")
    for line in c["config_head"].splitlines():
        print(f"    {line}")
    print(f"  {c['command']}")
    print(f"  {r['command']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"\njson: {a.json}")


if __name__ == "__main__":
    main()
