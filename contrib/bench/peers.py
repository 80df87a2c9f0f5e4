#!/usr/bin/env python3
"""residfs side by side with the `residuals` package, in one run.

Builds (once; cached under ~/.cache/residfs/bench-peers) a Llama-shaped bf16
base of at least 100M parameters and an instruct variant the way the tests in
tests/hf build theirs (random weights, fixed seeds, vocabulary grown by three
special tokens, chat template, generation config), computes the residuals with
the package (Residuals.from_models(...).save_pretrained(...), float32), then
measures, each in its own process:

  package-f32   Residuals.from_pretrained(res).apply(base, out_dir=...): the
                package's default path (float32 load, float32 output)
  package-bf16  the same with model_dtype=torch.bfloat16 (bf16 output)
  export        residfs export BASE+RES OUT (bf16, the base's dtype)
  export-f32    residfs export BASE+RES OUT --dtype float32
  mount+load    residfs mount -f BASE+RES MP, then in another process
                AutoModelForCausalLM.from_pretrained(MP, dtype=bf16) and one
                forward pass; the daemon and the loader are measured apart
  disk+load     from_pretrained of the exported directory (the same loader on
                an ordinary directory, for comparison)
  imports       python importing torch, transformers and residuals, nothing
                else: the part of the Python rows that is start-up

For each: wall time, peak RSS (VmHWM of the process, sampled every 3 ms),
bytes written by the process (os.wait4's ru_oublock x 512: the pages it
dirtied) and the size of the output directory.  Inputs are read once before every step so that every
step starts with them in the page cache.  Prints a markdown table, then JSON.

    python3 contrib/bench/peers.py [--residfs BIN] [--python PY] [--json FILE]

PY must have torch, transformers, safetensors and residuals
(tests/hf/run.sh installs such an environment).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "hf"))

SHAPE = dict(hidden=768, layers=12, heads=12, kv_heads=4, inter=2048, positions=2048)
NWORDS = 32000 - 3      # + <unk> <s> </s> = 32000; the instruct adds 3 more
SEED = 4242
SHARD = "200MB"


def cache_dir():
    tag = "llama-h{hidden}-l{layers}-kv{kv_heads}-i{inter}".format(**SHAPE) + f"-v{NWORDS + 3}-s{SEED}"
    return os.path.join(os.path.expanduser("~/.cache/residfs/bench-peers"), tag)


def build(root):
    """base/, instruct/, res/ under @root; a marker file once complete."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(root, ignore_errors=True)
    import torch
    import hfmodels as M
    torch.set_num_threads(os.cpu_count() or 2)
    t = time.time()
    p = M.build_models(root, "llama", "bf16", True, SEED, nwords=NWORDS, shard_size=SHARD,
                       second=False, **SHAPE)
    from residuals import Residuals
    Residuals.from_models(p.base, p.ins).save_pretrained(os.path.join(root, "res"))
    with open(done, "w") as f:
        f.write(f"built in {time.time() - t:.1f} s\n")


def params_of(base):
    """Parameters in the safetensors files of @base, from their headers (no numpy here:
    this process stays small)."""
    n = 0
    for fn in sorted(os.listdir(base)):
        if fn.endswith(".safetensors"):
            with open(os.path.join(base, fn), "rb") as f:
                hdr = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            for k, v in hdr.items():
                if k != "__metadata__":
                    c = 1
                    for x in v["shape"]:
                        c *= x
                    n += c
    return n


def dir_bytes(d):
    if not d or not os.path.isdir(d):
        return 0
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if os.path.isfile(os.path.join(d, f)))


def warm(*dirs):
    for d in dirs:
        for fn in os.listdir(d):
            p = os.path.join(d, fn)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    while f.read(1 << 24):
                        pass


class HWM:
    """Samples VmHWM of /proc/PID/status every few milliseconds while PID lives: the
    peak RSS of that process image alone (ru_maxrss would also count the peak of this
    script at the time it started the child: Linux keeps it across fork and exec)."""

    def __init__(self, pid):
        self.pid, self.peak = pid, 0
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while True:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    st = f.read()
            except OSError:
                return
            hwm = [ln for ln in st.splitlines() if ln.startswith("VmHWM:")]
            if not hwm:   # a zombie: the image is gone
                return
            self.peak = max(self.peak, int(hwm[0].split()[1]) * 1024)
            time.sleep(0.003)

    def stop(self):
        self.th.join(timeout=1)
        return self.peak


def measure(argv, env=None):
    """Runs @argv to completion: (wall s, peak RSS bytes, bytes written, exit status)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    h = HWM(p.pid)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, max(h.stop(), 1), ru.ru_oublock * 512, p.returncode


PKG_APPLY = r"""
import sys, torch
from residuals import Residuals
torch.set_num_threads(int(sys.argv[4]))
dt = {"f32": torch.float32, "bf16": torch.bfloat16}[sys.argv[3]]
Residuals.from_pretrained(sys.argv[2]).apply(sys.argv[1], out_dir=sys.argv[5], model_dtype=dt)
"""

LOAD = r"""
import sys, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(int(sys.argv[2]))
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
with torch.no_grad():
    out = m(input_ids=torch.tensor([[1, 5, 9, 32001, 32002]])).logits
assert out.shape[-1] == int(sys.argv[3]), out.shape
"""

IMPORTS = "import torch, transformers, residuals\nfrom transformers import AutoModelForCausalLM"


def is_mounted(mp):
    mp = os.path.realpath(mp)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mp for line in f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residfs", default=os.environ.get("RESIDFS_BIN") or os.path.join(REPO, "build", "fs", "residfs"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--work", default=None, help="where outputs are written (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--build-into", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.build_into:
        build(a.build_into)
        return
    root = cache_dir()
    # built in a child of its own: this process stays small (a few tens of MiB)
    if not os.path.exists(os.path.join(root, ".complete")):
        subprocess.run([a.python, os.path.abspath(__file__), "--build-into", root], check=True)
    base, ins, res = (os.path.join(root, x) for x in ("base", "instruct", "res"))
    nparams = params_of(base)
    assert nparams >= 100_000_000, nparams
    vocab = json.load(open(os.path.join(ins, "config.json")))["vocab_size"]
    threads = str(os.cpu_count() or 2)
    work = a.work or tempfile.mkdtemp(prefix="residfs-peers-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    rows = []

    def row(name, what, wall, rss, written, out_dir, extra=None):
        r = {"step": name, "what": what, "wall_s": round(wall, 2), "peak_rss_bytes": rss,
             "bytes_written": written, "output_bytes": dir_bytes(out_dir)}
        r.update(extra or {})
        rows.append(r)
        print(f"  {name}: {r}", file=sys.stderr)

    def step(name, what, argv, out_dir):
        if out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        warm(base, res)
        wall, rss, wr, rc = measure(argv, env)
        if rc != 0:
            sys.exit(f"{name}: exit status {rc}: {argv}")
        row(name, what, wall, rss, wr, out_dir)

    spec = f"{base}+{res}"
    measure([a.python, "-c", IMPORTS], env)   # once unmeasured: the imports' files into the page cache
    step("imports", "python: import torch, transformers, residuals", [a.python, "-c", IMPORTS], None)
    step("package-f32", "residuals: Residuals.from_pretrained + apply(base, out_dir) (float32, its default)",
         [a.python, "-c", PKG_APPLY, base, res, "f32", threads, os.path.join(work, "pkg-f32")],
         os.path.join(work, "pkg-f32"))
    step("package-bf16", "residuals: the same with model_dtype=torch.bfloat16",
         [a.python, "-c", PKG_APPLY, base, res, "bf16", threads, os.path.join(work, "pkg-bf16")],
         os.path.join(work, "pkg-bf16"))
    step("export", "residfs export BASE+RES (bf16)",
         [a.residfs, "export", spec, os.path.join(work, "export"), "--quiet"], os.path.join(work, "export"))
    step("export-f32", "residfs export BASE+RES --dtype float32",
         [a.residfs, "export", spec, os.path.join(work, "export-f32"), "--dtype", "float32", "--quiet"],
         os.path.join(work, "export-f32"))

    # mount (foreground, so that its rusage is ours to collect) + from_pretrained(mountpoint)
    mp = os.path.join(work, "mnt")
    os.makedirs(mp, exist_ok=True)
    warm(base, res)
    t0 = time.perf_counter()
    daemon = subprocess.Popen([a.residfs, "mount", "-f", spec, mp], stdin=subprocess.DEVNULL)
    dh = HWM(daemon.pid)
    while not is_mounted(mp):
        if daemon.poll() is not None:
            sys.exit(f"residfs mount exited with {daemon.returncode}")
        time.sleep(0.005)
    t_mount = time.perf_counter() - t0
    lwall, lrss, lwr, rc = measure([a.python, "-c", LOAD, mp, threads, str(vocab)], env)
    wall = time.perf_counter() - t0
    subprocess.run(["fusermount3", "-u", mp], check=True)
    _, status, ru = os.wait4(daemon.pid, 0)
    drss = dh.stop()
    if rc != 0:
        sys.exit(f"loading from the mount failed: {rc}")
    row("mount+load", "residfs mount + AutoModelForCausalLM.from_pretrained(mountpoint) + one forward",
        wall, lrss + drss, lwr + ru.ru_oublock * 512, None,
        {"mount_s": round(t_mount, 3), "loader_wall_s": round(lwall, 2), "loader_peak_rss_bytes": lrss,
         "daemon_peak_rss_bytes": drss})

    warm(os.path.join(work, "export"))
    wall, rss, wr, rc = measure([a.python, "-c", LOAD, os.path.join(work, "export"), threads, str(vocab)], env)
    if rc != 0:
        sys.exit("loading the export failed")
    row("disk+load", "from_pretrained(exported directory) + one forward (for comparison)",
        wall, rss, wr, None)

    mib = 1 << 20
    print(f"\nmodel: Llama-shaped, {nparams / 1e6:.1f}M parameters, bf16 base "
          f"{dir_bytes(base) / mib:.0f} MiB, float32 residuals {dir_bytes(res) / mib:.0f} MiB; "
          f"{os.cpu_count()} CPUs\n")
    print("| step | what | wall s | peak RSS MiB | bytes written MiB | output MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        rss = f"{r['peak_rss_bytes'] / mib:.0f}"
        if "daemon_peak_rss_bytes" in r:
            rss = (f"{r['daemon_peak_rss_bytes'] / mib:.0f} daemon + "
                   f"{r['loader_peak_rss_bytes'] / mib:.0f} loader")
        wall = f"{r['wall_s']:.2f}"
        if "mount_s" in r:
            wall += f" (mount {r['mount_s']:.2f}, load {r['loader_wall_s']:.2f})"
        print(f"| {r['step']} | {r['what']} | {wall} | {rss} | {r['bytes_written'] / mib:.0f} | "
              f"{r['output_bytes'] / mib:.0f} |")
    result = {"params": nparams, "cpus": os.cpu_count(), "base_bytes": dir_bytes(base),
              "residuals_bytes": dir_bytes(res), "rows": rows}
    print("\n" + json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
