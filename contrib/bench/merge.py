#!/usr/bin/env python3
"""residfs merge benchmark: a mergekit recipe mounted and exported, against mergekit.

Usage:  MERGE_VENV/bin/python contrib/bench/merge.py [--build build] [--cache-dir DIR]
            [--methods task_arithmetic,ties] [--json OUT]

Run it with the Python of the tests' mergekit environment (tests/merge/run.sh makes it
under ~/.cache/residfs/venv-merge-*): it builds (once, cached under --cache-dir) a
Llama-shaped bf16 base of about 117M parameters (hidden 768, 12 layers, vocabulary
32000, untied head) and two fine-tunes (the base plus noise), then for each method:

  mergekit   `mergekit-yaml RECIPE OUT` (the command, imports included) and mergekit's
             run_merge in this process (the arithmetic without the imports): wall time,
             peak RSS (the command's, from GNU time; in process: the growth of this
             process's peak), bytes written
  export     `residfs export --config RECIPE OUT`: wall time, peak RSS, bytes written
  mount      `residfs mount --config RECIPE MP` then a sequential read of every shard
             (4 MiB reads): wall time, the daemon's peak RSS (VmHWM), bytes written (0)

The inputs are read once before each run, so every side starts with them in the page
cache.  Ratios are against the mergekit command measured in the same run.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "contrib", "bench"))

import bench  # noqa: E402  (Mount: the daemon's pid and VmHWM)

HIDDEN, LAYERS, INTER, VOCAB, HEADS, KV = 768, 12, 2048, 32000, 12, 4


def build_models(root):
    """base, ft1, ft2 under @root (once): bf16, sharded at 100 MB."""
    marker = os.path.join(root, ".complete")
    paths = {n: os.path.join(root, n) for n in ("base", "ft1", "ft2")}
    if os.path.exists(marker):
        return paths
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(1234)
    cfg = LlamaConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, intermediate_size=INTER,
                      vocab_size=VOCAB, num_attention_heads=HEADS, num_key_value_heads=KV,
                      tie_word_embeddings=False, max_position_embeddings=2048)
    base = LlamaForCausalLM(cfg).to(torch.bfloat16)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    nparams = sum(v.numel() for v in sd.values())
    for i, name in enumerate(("base", "ft1", "ft2")):
        if name != "base":
            g = torch.Generator().manual_seed(99 + i)
            for k, v in base.state_dict().items():
                v.copy_((sd[k].float() + 0.004 * i * torch.randn(v.shape, generator=g)).to(v.dtype))
        base.save_pretrained(paths[name], max_shard_size="100MB")
        for k, v in base.state_dict().items():
            v.copy_(sd[k])
    with open(marker, "w") as f:
        f.write(f"{nparams}\n")
    return paths


def recipe(method, p):
    dens = "" if method == "task_arithmetic" else ", density: 0.5"
    return (f"merge_method: {method}\nbase_model: {p['base']}\nmodels:\n"
            f"  - model: {p['ft1']}\n    parameters: {{weight: 0.6{dens}}}\n"
            f"  - model: {p['ft2']}\n    parameters: {{weight: 0.4{dens}}}\n"
            "dtype: float32\nout_dtype: bfloat16\n")


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))


def warm(paths):
    for d in paths.values():
        for f in os.listdir(d):
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def timed_cmd(cmd):
    """(wall s, peak RSS MiB) of a command.  The peak comes from GNU time's %M: a child
    forked from this process (which may hold torch and a model by then) would count the
    parent's pages until its exec in wait4's ru_maxrss."""
    timer = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r") as tf:
        t0 = time.perf_counter()
        p = subprocess.run([timer, "-f", "%M", "-o", tf.name, *cmd], stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        if p.returncode:
            raise SystemExit(f"{cmd[0]} failed ({p.returncode})")
        return wall, int(tf.read().split()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/residfs/bench-merge"))
    ap.add_argument("--methods", default="task_arithmetic,ties")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rfs = os.path.join(a.build, "fs", "residfs")
    mk = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
    paths = build_models(a.cache_dir)
    nparams = int(open(os.path.join(a.cache_dir, ".complete")).read())
    results = {"params": nparams, "methods": {}}
    print(f"model: {nparams / 1e6:.1f}M parameters, bf16, {dir_bytes(paths['base']) / 1e6:.0f} MB per model")
    for method in a.methods.split(","):
        tmp = tempfile.mkdtemp(prefix="rfs-merge-bench-")
        cfg = os.path.join(tmp, "recipe.yml")
        with open(cfg, "w") as f:
            f.write(recipe(method, paths))
        r = {}
        # mergekit, the command
        warm(paths)
        out = os.path.join(tmp, "mk")
        wall, rss = timed_cmd([mk, cfg, out, "--quiet", "-j", "2"])
        r["mergekit_cmd"] = {"s": wall, "rss_mib": rss, "written": dir_bytes(out)}
        shutil.rmtree(out)
        # mergekit in process (imports done): the arithmetic and the writing
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
        warm(paths)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        run_merge(MergeConfiguration.model_validate(yaml.safe_load(open(cfg).read())), out,
                  MergeOptions(quiet=True, num_threads=2), config_source=open(cfg).read())
        r["mergekit_inproc"] = {"s": time.perf_counter() - t0,
                                "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                                "written": dir_bytes(out)}
        shutil.rmtree(out)
        # residfs export
        warm(paths)
        out = os.path.join(tmp, "rfs")
        wall, rss = timed_cmd([rfs, "export", "--config", cfg, out, "--quiet"])
        r["residfs_export"] = {"s": wall, "rss_mib": rss, "written": dir_bytes(out)}
        shutil.rmtree(out)
        # residfs mount + a full read
        warm(paths)
        mp = os.path.join(tmp, "mnt")
        t0 = time.perf_counter()
        m = bench.Mount([rfs, "mount", "--config", cfg], mp)
        total = 0
        for f in sorted(os.listdir(mp)):
            with open(os.path.join(mp, f), "rb") as fh:
                while True:
                    b = fh.read(4 << 20)
                    if not b:
                        break
                    total += len(b)
        wall = time.perf_counter() - t0
        r["residfs_mount_read"] = {"s": wall, "rss_mib": m.hwm_mib(), "written": 0, "read": total}
        m.close()
        shutil.rmtree(tmp, ignore_errors=True)
        base = r["mergekit_cmd"]["s"]
        print(f"\n{method}:")
        print(f"  {'':28} {'wall s':>8} {'vs cmd':>7} {'peak RSS MiB':>13} {'written MB':>11}")
        for k, label in (("mergekit_cmd", "mergekit-yaml (command)"), ("mergekit_inproc", "mergekit run_merge (in process)"),
                         ("residfs_export", "residfs export --config"), ("residfs_mount_read", "residfs mount + full read")):
            v = r[k]
            rss = v.get("rss_mib", v.get("rss_growth_mib"))
            print(f"  {label:28} {v['s']:8.2f} {v['s'] / base:6.2f}x {rss:13.0f} {v['written'] / 1e6:11.1f}"
                  + ("  (growth of this process)" if k == "mergekit_inproc" else ""))
        results["methods"][method] = r
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
