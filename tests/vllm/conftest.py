"""Fixtures of the tests with vLLM (tests/vllm; the packages are pinned in
tests/requirements-vllm.txt and tests/requirements-vllm-nodeps.txt).

Once per session, in a temporary directory:
- a tiny Llama pair built with transformers (random weights, fixed seeds, bf16):
  `base/` sharded in several safetensors files with a word-level fast tokenizer
  made with the `tokenizers` library, and `instruct/` = base + small noise, its
  vocabulary grown by three special tokens (pad and two chat markers), its own
  tokenizer with a chat template, one safetensors file;
- `residuals/`, computed by residfs itself: `residfs export instruct-base
  residuals --quiet` (compute mode);
- two mounts made with `residfs mount`: `base+residuals` (must load in vLLM as
  the instruct model does) and `base+0.5*residuals` (a control that must not);
- greedy generations, each by a vLLM engine of its own in a subprocess
  (vllm_generate.py), kept per model directory.

The model's head size is 80 on purpose: vLLM CPU 0.32.0 picks its AMX
attention kernel for bf16 with head sizes divisible by 32 on a CPU that has
AMX, and that kernel runs AMX instructions without asking the kernel for AMX
state (arch_prctl ARCH_REQ_XCOMP_PERM) first; the engine's worker then dies of
SIGILL unless something else in the process asked earlier (oneDNN does, for
some matrix shapes only), so it failed or not from one run to the next. Head
size 80 takes the vec16 kernel, which every x86-64 CPU with AVX2 runs.

Nothing is downloaded (HF_HUB_OFFLINE=1, no usage statistics).  Tests that
mount skip only when /dev/fuse is missing; every mount is unmounted at the end
of the session (fusermount3 -u, then -uz), also when a test fails.
"""
import copy
import json
import os
import signal
import subprocess
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["VLLM_NO_USAGE_STATS"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB of KV cache

import pytest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rfsproc as R  # noqa: E402

WORDS = 250             # w0..w249 after <unk>, <s>, </s>
ADDED = ["<|im_start|>", "<|im_end|>"]
PAD = "<pad>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}"
    "<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
SHAPE = dict(hidden_size=320, intermediate_size=640, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
SHARD_SIZE = "2MB"      # the base in 4 files
NOISE = 0.003           # instruct = base + N(0, NOISE) on every parameter
SEED = 20240611
ENGINE_TIMEOUT = 600    # seconds for one engine's start, generation and exit

_mounted = []


def pytest_sessionfinish(session, exitstatus):
    for mp in _mounted:
        R.unmount(mp)


def tail(path, n=6000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError as e:
        return f"({path}: {e})"


def kill_group(p):
    """Ends what is left of the process group that subprocess @p leads (it was started
    with start_new_session): vLLM's engine and worker processes, should they outlive it."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


# ---- the model pair --------------------------------------------------------------------

def build_pair(root):
    """Writes root/base (sharded) and root/instruct; returns their paths."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM,
                              PreTrainedTokenizerFast)
    torch.set_num_threads(2)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for i in range(WORDS):
        vocab[f"w{i}"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", clean_up_tokenization_spaces=False)
    itok = copy.deepcopy(tok)
    itok.add_special_tokens({"pad_token": PAD, "additional_special_tokens": list(ADDED)})
    itok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(SEED)
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **SHAPE)
    model = LlamaForCausalLM(cfg).eval()
    paths = {"base": os.path.join(root, "base"), "instruct": os.path.join(root, "instruct")}

    base = copy.deepcopy(model).to(torch.bfloat16)
    base.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id,
                                              eos_token_id=tok.eos_token_id)
    base.save_pretrained(paths["base"], max_shard_size=SHARD_SIZE)
    tok.save_pretrained(paths["base"])

    ins = copy.deepcopy(model)
    ins.resize_token_embeddings(len(itok), mean_resizing=False)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for _, p in sorted(ins.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32) * NOISE)
    ins = ins.to(torch.bfloat16)
    ins.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=itok.pad_token_id,
        eos_token_id=[tok.eos_token_id, itok.convert_tokens_to_ids("<|im_end|>")])
    ins.save_pretrained(paths["instruct"])
    itok.save_pretrained(paths["instruct"])
    return paths


def st_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))


class Pair:
    def __init__(self, root):
        self.root = root
        p = build_pair(root)
        self.base, self.instruct = p["base"], p["instruct"]
        self.residuals = os.path.join(root, "residuals")


class Mount:
    def __init__(self, spec, path):
        self.spec, self.path = spec, path

    def stats(self):
        with open(os.path.join(self.path, ".residfs-stats")) as f:
            return json.load(f)

    def shard_bytes(self):
        return sum(os.path.getsize(os.path.join(self.path, f)) for f in st_files(self.path))


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def binary():
    b = R.residfs_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"residfs binary not found at {b}: build it or set RESIDFS_BIN")
    return b


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("vllm"))


@pytest.fixture(scope="session")
def pair(root, binary):
    """The model pair and residfs's residuals of it (instruct - base)."""
    p = Pair(root)
    r = R.run(["export", "instruct-base", "residuals", "--quiet"], cwd=root, timeout=300)
    assert r.returncode == 0, f"export of the residuals failed: {r}"
    return p


@pytest.fixture(scope="session")
def mounts(root, pair):
    """{"full": base+residuals, "half": base+0.5*residuals}, mounted for the session."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: cannot mount")
    out = {}
    try:
        for name, spec in (("full", "base+residuals"), ("half", "base+0.5*residuals")):
            mp = os.path.join(root, f"mnt-{name}")
            os.makedirs(mp, exist_ok=True)
            _mounted.append(mp)
            r = R.run(["mount", spec, mp], cwd=root, timeout=120)
            assert r.returncode == 0, f"mount {spec} failed: {r}"
            assert R.is_mounted(mp), f"residfs mount returned 0 but nothing is mounted: {r}"
            out[name] = Mount(spec, mp)
        yield out
    finally:
        leaked = [m for m in _mounted if not R.unmount(m)]
        _mounted.clear()
    assert not leaked, f"could not unmount {leaked}"


class Generations:
    """Runs vllm_generate.py on a model directory, once per directory per session."""

    def __init__(self, root):
        self.root = root
        self.done = {}

    def __call__(self, model):
        if model not in self.done:
            tag = f"gen{len(self.done)}"
            out = os.path.join(self.root, tag + ".json")
            log = os.path.join(self.root, tag + ".log")
            t0 = time.monotonic()
            with open(log, "wb") as lf:
                p = subprocess.Popen([sys.executable, os.path.join(HERE, "vllm_generate.py"),
                                      model, out], stdout=lf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
                try:
                    rc = p.wait(timeout=ENGINE_TIMEOUT)
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                finally:
                    kill_group(p)
            assert rc == 0 and os.path.exists(out), (
                f"vLLM on {model}: exit {rc}; the end of its log ({log}):\n{tail(log)}")
            with open(out) as f:
                res = json.load(f)
            res["wall_s"] = round(time.monotonic() - t0, 1)
            res["log"] = log
            print(f"vLLM on {model}: {res['wall_s']} s in all (engine up in {res['load_s']} s)")
            self.done[model] = res
        return self.done[model]


@pytest.fixture(scope="session")
def generate(root):
    return Generations(root)
