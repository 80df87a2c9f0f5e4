#!/usr/bin/env python3
"""residfs benchmark: every figure of the speed/memory issue in one run.

Usage:  python3 contrib/bench/bench.py [--build build] [--cache-dir DIR] [--json OUT]

Builds (once, cached) a Llama-shaped bf16 base of about 1 GiB in three shards
and a float32 delta of about 2 GiB, plus a 70B-shaped model whose files are
sparse (real headers, holes for data).  Then, with the inputs in the page
cache, measures against baselines taken in the same run:

  cold   sequential read of every merged shard on a fresh mount
         vs the FUSE ceiling: residfs-stubfs serving a file of the same size
  warm   re-read through the mount vs reading an exported copy (page cache)
  8 readers on different tensors at once vs one reader
  peak RSS of the daemon after everything was read vs its cache budget
  export vs cp (+sync) of the same output bytes
  mount time for the 1 GiB model and the 70B-shaped one

Standard library only; needs root for the readahead setting (as residfs).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def st_write(path, tensors, data_fn=None, sparse=False):
    """tensors: list of (name, dtype, shape). data_fn(name, nbytes) -> bytes."""
    size = {"BF16": 2, "F16": 2, "F32": 4}
    order = sorted(tensors, key=lambda t: (-size[t[1]], t[0]))
    hdr, off = {}, 0
    for name, dt, shape in order:
        n = size[dt]
        for d in shape:
            n *= d
        hdr[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hdr = {"__metadata__": {"format": "pt"}, **hdr}
    js = json.dumps(hdr, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        if sparse:
            f.truncate(8 + len(js) + off)
        else:
            for name, dt, shape in order:
                a, b = hdr[name]["data_offsets"]
                f.write(data_fn(name, b - a))
    os.replace(tmp, path)
    return {n: path for n, _, _ in tensors}, off


def llama_tensors(hidden, inter, layers, vocab, kv, dtype):
    t = [("model.embed_tokens.weight", dtype, (vocab, hidden)),
         ("lm_head.weight", dtype, (vocab, hidden)),
         ("model.norm.weight", dtype, (hidden,))]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", dtype, (hidden,)),
              (p + "post_attention_layernorm.weight", dtype, (hidden,)),
              (p + "self_attn.q_proj.weight", dtype, (hidden, hidden)),
              (p + "self_attn.k_proj.weight", dtype, (kv, hidden)),
              (p + "self_attn.v_proj.weight", dtype, (kv, hidden)),
              (p + "self_attn.o_proj.weight", dtype, (hidden, hidden)),
              (p + "mlp.gate_proj.weight", dtype, (inter, hidden)),
              (p + "mlp.up_proj.weight", dtype, (inter, hidden)),
              (p + "mlp.down_proj.weight", dtype, (hidden, inter))]
    return t


def write_model(d, cfg, nshards, sparse):
    os.makedirs(d, exist_ok=True)
    tens = llama_tensors(cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
                         cfg["vocab_size"], cfg["kv_dim"], "BF16")
    per = (len(tens) + nshards - 1) // nshards
    wmap, total = {}, 0
    for s in range(nshards):
        name = f"model-{s + 1:05d}-of-{nshards:05d}.safetensors"
        m, n = st_write(os.path.join(d, name), tens[s * per:(s + 1) * per],
                        lambda _n, nb: os.urandom(nb), sparse)
        wmap.update({k: name for k in m})
        total += n
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2, sort_keys=True)
    conf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
            "tie_word_embeddings": False, **{k: v for k, v in cfg.items() if k != "kv_dim"}}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    return tens


def write_delta(d, tens, sparse):
    os.makedirs(d, exist_ok=True)
    st_write(os.path.join(d, "model.safetensors"), [(n, "F32", s) for n, _, s in tens],
             lambda _n, nb: small_f32(nb), sparse)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"residuals_version": "1.0", "format": "pytorch", "dtype": "float32",
                   "param_count": len(tens)}, f, indent=2)


def small_f32(nb):
    # random float32 bit patterns with a small exponent: realistic deltas, no NaN
    raw = bytearray(os.urandom(nb))
    raw[3::4] = raw[3::4].translate(_SMALL_EXP)
    return bytes(raw)


_SMALL_EXP = bytes((b & 0x80) | 0x3A for b in range(256))


def workload_1g(cache):
    """The 1 GiB bf16 base in three shards and its float32 delta (built once)."""
    base, delta = os.path.join(cache, "base-1g"), os.path.join(cache, "delta-1g")
    cfg = {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 8,
           "vocab_size": 32000, "kv_dim": 2048, "num_attention_heads": 16,
           "num_key_value_heads": 16}
    stamp = os.path.join(cache, "ok-1g")
    if not os.path.exists(stamp):
        print("building the 1 GiB workload (once) ...", file=sys.stderr)
        tens = write_model(base, cfg, 3, False)
        write_delta(delta, tens, False)
        open(stamp, "w").close()
    return base, delta


def workload(cache):
    base, delta = workload_1g(cache)
    big_b, big_d = os.path.join(cache, "base-70b"), os.path.join(cache, "delta-70b")
    stamp = os.path.join(cache, "ok-70b")
    if not os.path.exists(stamp):
        print("building the sparse 70B-shaped workload (once) ...", file=sys.stderr)
        cfg70 = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                 "vocab_size": 32000, "kv_dim": 1024, "num_attention_heads": 64,
                 "num_key_value_heads": 8}
        tens = write_model(big_b, cfg70, 29, True)
        write_delta(big_d, tens, True)
        open(stamp, "w").close()
    return base, delta, big_b, big_d


def warm(paths):
    for p in paths:
        for root, _, files in os.walk(p):
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    while fh.read(16 << 20):
                        pass


def read_files(paths, bs=4 << 20):
    """Sequential read of each file with a reused buffer (readinto)."""
    buf = bytearray(bs)
    mv = memoryview(buf)
    n = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                k = f.readinto(mv)
                if not k:
                    break
                n += k
    return n, time.perf_counter() - t0


def read_ranges(ranges, bs=1 << 20):
    buf = bytearray(bs)
    n = 0
    for path, a, b in ranges:
        with open(path, "rb", buffering=0) as f:
            f.seek(a)
            off = a
            while off < b:
                k = f.readinto(memoryview(buf)[:min(bs, b - off)])
                if not k:
                    break
                off += k
                n += k
    return n


class Mount:
    def __init__(self, args, mp):
        self.mp = mp
        os.makedirs(mp, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run(args + [mp], check=True)
        self.mount_s = time.perf_counter() - t0

    def pid(self):
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
                except OSError:
                    continue
                if self.mp.encode() in cmd and (b"mount" in cmd or len(cmd) >= 3 and cmd[-2] == self.mp.encode()):
                    return int(d)
        return None

    def hwm_mib(self):
        pid = self.pid()
        if pid is None:
            return None
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def close(self):
        subprocess.run(["fusermount3", "-u", self.mp], check=False)
        time.sleep(0.2)


def tensor_ranges(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return [(path, 8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1], k) for k, v in h.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/residfs/bench"))
    ap.add_argument("--cache-size", default="256M")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rfs = os.path.join(a.build, "fs", "residfs")
    stub = os.path.join(a.build, "contrib", "bench", "residfs-stubfs")
    os.makedirs(a.cache_dir, exist_ok=True)
    base, delta, big_b, big_d = workload(a.cache_dir)
    work = os.path.join(a.cache_dir, "run")
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    warm([base, delta])
    spec = f"{base}+{delta}"
    mcmd = [rfs, "mount", spec, "--cache-size", a.cache_size]
    res = {"machine": f"{os.cpu_count()} cores", "cache_size": a.cache_size}

    # mount time (1 GiB, then 70B-shaped sparse)
    times = []
    for _ in range(5):
        m = Mount(mcmd, os.path.join(work, "mnt"))
        times.append(m.mount_s)
        m.close()
    res["mount_ms_1g"] = 1e3 * sorted(times)[len(times) // 2]
    times = []
    for _ in range(5):
        m = Mount([rfs, "mount", f"{big_b}+{big_d}"], os.path.join(work, "mnt70"))
        times.append(m.mount_s)
        m.close()
    res["mount_ms_70b"] = 1e3 * sorted(times)[len(times) // 2]

    # cold sequential read: residfs vs stub of the same size
    # cold (fresh mount) and warm (second read) sequential reads, 3 rounds
    # alternating with the stub; medians
    cold, warm_, stubr = [], [], []
    for i in range(3):
        m = Mount(mcmd, os.path.join(work, "mnt"))
        shards = sorted(os.path.join(m.mp, f) for f in os.listdir(m.mp) if f.endswith(".safetensors"))
        total = sum(os.path.getsize(p) for p in shards)
        n, t = read_files(shards)
        cold.append(n / t / 1e9)
        # re-reads: the first one also moves the pages to the active LRU list,
        # the later ones are the steady state; both are compared below with
        # the same reads of an exported copy
        w = []
        for _ in range(3):
            n, t = read_files(shards)
            w.append(n / t / 1e9)
        warm_.append(w)
        res["daemon_peak_rss_MiB"] = m.hwm_mib()
        res["stats_after_reads"] = json.loads(open(os.path.join(m.mp, ".residfs-stats")).read())
        ranges = [r for p in shards for r in tensor_ranges(p)]
        m.close()
        sm = Mount([stub, str(total)], os.path.join(work, "stub"))
        n, t = read_files([os.path.join(sm.mp, "data")])
        stubr.append(n / t / 1e9)
        sm.close()
    res["cold_residfs_GBps"] = sorted(cold)[1]
    res["warm_first_residfs_GBps"] = sorted(w[0] for w in warm_)[1]
    res["warm_residfs_GBps"] = sorted(max(w[1:]) for w in warm_)[1]
    res["cold_stub_GBps"] = sorted(stubr)[1]
    res["cold_rounds"] = {"residfs": cold, "stub": stubr, "warm": warm_}
    res["cold_ratio"] = res["cold_residfs_GBps"] / res["cold_stub_GBps"]

    # export vs cp(+sync); warm read of the exported copy
    # export (which fsyncs every file) and cp + sync, alternated, medians of 3
    out = os.path.join(work, "export")
    ex, cp = [], []
    for i in range(3):
        subprocess.run(["rm", "-rf", out, out + "-cp"], check=True)
        subprocess.run(["sync"], check=True)
        t0 = time.perf_counter()
        subprocess.run([rfs, "export", spec, out, "--quiet"], check=True)
        ex.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", out, out + "-cp"], check=True)
        subprocess.run(["sync", "-f", out + "-cp"], check=True)
        cp.append(time.perf_counter() - t0)
    res["export_s"] = sorted(ex)[1]
    res["cp_sync_s"] = sorted(cp)[1]
    out_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    res["export_GBps"] = out_bytes / res["export_s"] / 1e9
    res["cp_sync_GBps"] = out_bytes / res["cp_sync_s"] / 1e9
    res["export_ratio"] = res["cp_sync_s"] / res["export_s"]
    exp_shards = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".safetensors"))
    w = []
    for _ in range(3):
        n, t = read_files(exp_shards)
        w.append(n / t / 1e9)
    res["warm_first_export_copy_GBps"] = w[0]
    res["warm_export_copy_GBps"] = max(w[1:])
    res["warm_ratio"] = res["warm_residfs_GBps"] / res["warm_export_copy_GBps"]
    res["warm_first_ratio"] = res["warm_first_residfs_GBps"] / res["warm_first_export_copy_GBps"]
    subprocess.run(["rm", "-rf", out + "-cp"], check=True)

    # small requests (readahead off, 128 KiB reads): the block cache and
    # prefetch at work; then the daemon's peak RSS against its budget
    m = Mount(mcmd, os.path.join(work, "mnt"))
    n = 0
    t0 = time.perf_counter()
    buf = bytearray(128 << 10)
    for p in sorted(os.path.join(m.mp, f) for f in os.listdir(m.mp) if f.endswith(".safetensors")):
        with open(p, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                n += k
    res["small_reads_GBps"] = n / (time.perf_counter() - t0) / 1e9
    res["stats_small_reads"] = json.loads(open(os.path.join(m.mp, ".residfs-stats")).read())
    res["daemon_peak_rss_MiB"] = max(res["daemon_peak_rss_MiB"] or 0, m.hwm_mib() or 0)
    m.close()

    # 8 readers on different tensors vs one reader (fresh mounts)
    big = sorted(ranges, key=lambda r: r[1] - r[2])[:8]
    m = Mount(mcmd, os.path.join(work, "mnt"))
    t0 = time.perf_counter()
    n1 = read_ranges([(p, a_, b_) for p, a_, b_, _ in big])
    res["one_reader_GBps"] = n1 / (time.perf_counter() - t0) / 1e9
    m.close()
    m = Mount(mcmd, os.path.join(work, "mnt"))
    th = [threading.Thread(target=read_ranges, args=([(p, a_, b_)],)) for p, a_, b_, _ in big]
    t0 = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    res["eight_readers_GBps"] = n1 / (time.perf_counter() - t0) / 1e9
    res["readers_ratio"] = res["eight_readers_GBps"] / res["one_reader_GBps"]
    m.close()
    subprocess.run(["rm", "-rf", out], check=True)

    budget = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(a.cache_size[-1].lower(), 1)
    budget_mib = float(a.cache_size.rstrip("kKmMgG")) * budget / (1 << 20)
    res["rss_limit_MiB"] = budget_mib + 64
    rows = [
        ("cold sequential read (GB/s)", res["cold_residfs_GBps"], res["cold_stub_GBps"], res["cold_ratio"], ">= 0.85"),
        ("warm re-read, steady (GB/s)", res["warm_residfs_GBps"], res["warm_export_copy_GBps"], res["warm_ratio"], ">= 0.5"),
        ("warm, first re-read (GB/s)", res["warm_first_residfs_GBps"], res["warm_first_export_copy_GBps"], res["warm_first_ratio"], ""),
        ("8 readers vs 1 (GB/s)", res["eight_readers_GBps"], res["one_reader_GBps"], res["readers_ratio"], ">= 1.0"),
        ("export vs cp+sync (GB/s)", res["export_GBps"], res["cp_sync_GBps"], res["export_ratio"], ">= 0.5"),
    ]
    print(f"\nresidfs benchmark ({res['machine']}, merged shards {total / 2**30:.2f} GiB)\n")
    print(f"| measurement | residfs | baseline | ratio | target |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]} |")
    print(f"| 128 KiB reads, readahead off (GB/s) | {res['small_reads_GBps']:.2f} | | | |")
    print(f"| daemon peak RSS (MiB) | {res['daemon_peak_rss_MiB']:.0f} | budget {budget_mib:.0f} + 64 | | <= {res['rss_limit_MiB']:.0f} |")
    print(f"| mount time, 1 GiB model (ms) | {res['mount_ms_1g']:.1f} | | | < 100 |")
    print(f"| mount time, 70B-shaped sparse (ms) | {res['mount_ms_70b']:.1f} | | | < 300 |")
    print()
    print(json.dumps(res, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
