"""Tiny Llama models, mergekit recipes, and a runner for mergekit 0.1.5.

Used by the tests in this folder (pins in tests/requirements-merge.txt).
Nothing is downloaded: configs are written in code, weights are random with
fixed seeds, tokenizers are word-level `tokenizers` models wrapped in
PreTrainedTokenizerFast.

The zoo (build_zoo) holds, each as a model directory saved with
save_pretrained (sharded into several safetensors files, index.json,
config.json, tokenizer files):

  base_f32, ft1_f32, ft2_f32, ft3_f32   float32 weights
  base_bf16, ft1_bf16, ft2_bf16, ft3_bf16   the same weights rounded to bf16
  vocab_bf16                            a fine-tune with another vocabulary:
                                        six new words x0..x5 at ids 3..8, every
                                        shared word moved up by six (128 -> 134)
  vocab2_bf16, vocab3_bf16              a third vocabulary: the base's without w7,
                                        then x5..x0 and y0 appended (134 tokens);
                                        two fine-tunes with it

ftN = base + N(0, FT_SCALES[ftN]) on every tensor (float32 noise from a
seeded generator, added in float32 before any rounding).

recipe(name, zoo) gives the YAML text of each recipe in RECIPES; run_merge()
runs mergekit on a YAML text (in process by default, or the mergekit-yaml
command) and returns the output tensors as numpy arrays.
"""
import dataclasses
import json
import os
import struct
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")       # mergekit's tokenizer progress bars

import numpy as np  # noqa: E402

SEED = 20240611
LAYERS = 4
HIDDEN = 64
INTER = 128
HEADS = 4
KV_HEADS = 2
NWORDS = 125                    # <unk> <s> </s> + 125 words = 128 tokens
NEW_WORDS = 6                   # vocab_bf16: x0..x5 inserted at ids 3..8
FT_SCALES = {"ft1": 0.004, "ft2": 0.008, "ft3": 0.002}
SHARD_SIZE = "100KB"            # the bf16 models come out in 4 files, the f32 in 8
DTYPES = ("f32", "bf16")


# ---- safetensors, read with numpy only ----------------------------------------------

_ST_NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def bf16_to_f32(u16):
    """bf16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path, raw=False):
    """{name: array} of one .safetensors file; BF16 comes back as float32 (exact), or as
    its uint16 bit patterns with @raw.  Also returns the header's __metadata__."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        dt = info["dtype"]
        if dt == "BF16":
            arr = np.frombuffer(data[a:b], dtype=np.uint16)
            if not raw:
                arr = bf16_to_f32(arr)
        else:
            arr = np.frombuffer(data[a:b], dtype=_ST_NP[dt])
        out[name] = (arr.reshape(info["shape"]), dt)
    return out, meta


def st_files(model_dir):
    return sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))


def read_model(model_dir, raw=False):
    """{name: float32 array} (or bf16 bits with @raw) of every tensor of a model
    directory, and {name: safetensors dtype string}."""
    tensors, dtypes = {}, {}
    for f in st_files(model_dir):
        part, _ = read_safetensors(os.path.join(model_dir, f), raw=raw)
        for k, (arr, dt) in part.items():
            assert k not in tensors, f"{k} twice in {model_dir}"
            tensors[k], dtypes[k] = arr, dt
    return tensors, dtypes


# ---- tokenizers and models -----------------------------------------------------------

def word_tokenizer(words):
    """WordLevel tokenizer: <unk>=0, <s>=1, </s>=2, then @words in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in words:
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", clean_up_tokenization_spaces=False)


def base_words():
    return [f"w{i}" for i in range(NWORDS)]


def vocab_words():
    return [f"x{i}" for i in range(NEW_WORDS)] + base_words()


def llama_config(vocab):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, max_position_embeddings=64,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def base_weights():
    """{name: float32 torch tensor}: transformers' own random init (seeded), with the
    norm weights (all ones at init) moved off 1 so that they carry information."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(SEED)
    m = AutoModelForCausalLM.from_config(llama_config(3 + NWORDS), dtype=torch.float32)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(SEED + 99)
    for k in sorted(sd):
        if k.endswith("norm.weight"):
            sd[k] += torch.randn(sd[k].shape, generator=g) * 0.05
    return sd


def perturbed(sd, seed, scale):
    import torch
    g = torch.Generator().manual_seed(seed)
    return {k: sd[k] + torch.randn(sd[k].shape, generator=g, dtype=torch.float32) * scale
            for k in sorted(sd)}


def vocab2_words():
    return [w for w in base_words() if w != "w7"] + [f"x{i}" for i in reversed(range(NEW_WORDS))] + ["y0"]


def with_vocab(sd, seed, words=None):
    """The base's weights moved to the ids of @words (default vocab_words()), each
    word's row the base's row of it, new words' rows random (std 0.02)."""
    import torch
    words = words or vocab_words()
    g = torch.Generator().manual_seed(seed)
    old_id = {w: 3 + i for i, w in enumerate(base_words())}
    out = dict(sd)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        old = sd[k]
        new = torch.randn((3 + len(words), old.shape[1]), generator=g) * 0.02
        new[:3] = old[:3]
        for i, w in enumerate(words):
            if w in old_id:
                new[3 + i] = old[old_id[w]]
        out[k] = new
    return out


def save_model(sd, tok, path, dtype):
    """save_pretrained of @sd in @dtype ('f32'/'bf16'), sharded at SHARD_SIZE."""
    import torch
    from transformers import AutoModelForCausalLM
    tdt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    cfg = llama_config(len(tok.get_vocab()))
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    m.load_state_dict(sd, strict=True)
    m.to(tdt).save_pretrained(path, max_shard_size=SHARD_SIZE)
    tok.save_pretrained(path)
    assert len(st_files(path)) >= 2, path
    return path


@dataclasses.dataclass
class Zoo:
    root: str
    paths: dict                    # name -> directory

    def __getitem__(self, name):
        return self.paths[name]


def build_zoo(root):
    """Builds every model of the zoo under @root (once: a finished zoo is reused)."""
    import torch
    marker = os.path.join(root, ".zoo-complete-2")
    names = [f"{m}_{d}" for m in ("base", *FT_SCALES) for d in DTYPES] + ["vocab_bf16", "vocab2_bf16", "vocab3_bf16"]
    paths = {n: os.path.join(root, n) for n in names}
    if os.path.exists(marker):
        return Zoo(root, paths)
    os.makedirs(root, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok = word_tokenizer(base_words())
    base = base_weights()
    sds = {"base": base}
    for i, (name, scale) in enumerate(FT_SCALES.items()):
        sds[name] = perturbed(base, SEED + 1 + i, scale)
    for name, sd in sds.items():
        for d in DTYPES:
            save_model(sd, tok, paths[f"{name}_{d}"], d)
    vsd = perturbed(with_vocab(base, SEED + 10), SEED + 11, FT_SCALES["ft1"])
    save_model(vsd, word_tokenizer(vocab_words()), paths["vocab_bf16"], "bf16")
    vsd2 = perturbed(with_vocab(base, SEED + 12, vocab2_words()), SEED + 13, FT_SCALES["ft2"])
    save_model(vsd2, word_tokenizer(vocab2_words()), paths["vocab2_bf16"], "bf16")
    vsd3 = perturbed(with_vocab(base, SEED + 14, vocab2_words()), SEED + 15, FT_SCALES["ft3"])
    save_model(vsd3, word_tokenizer(vocab2_words()), paths["vocab3_bf16"], "bf16")
    open(marker, "w").close()
    return Zoo(root, paths)


# ---- recipes ----------------------------------------------------------------------------

#: name -> YAML template; {name} fields are zoo model names, filled with their paths.
#: Every model reference is an absolute local path (a relative one that exists makes
#: mergekit's model card ask the Hub whether it is a repository).
RECIPES = {
    # three task vectors, weights that do not sum to 1, one negative; float32 compute
    "task_arithmetic_f32": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.7}}
  - model: {ft2_bf16}
    parameters: {{weight: 0.3}}
  - model: {ft3_bf16}
    parameters: {{weight: -0.45}}
dtype: float32
out_dtype: bfloat16
""",
    # the same in bfloat16 (every operation rounded to bf16), with normalize and lambda
    "task_arithmetic_bf16": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.7}}
  - model: {ft2_bf16}
    parameters: {{weight: 0.3}}
  - model: {ft3_bf16}
    parameters: {{weight: 0.45}}
parameters:
  normalize: true
  lambda: 1.3
dtype: bfloat16
""",
    # float32 models and output: where a fused multiply-add would show
    "linear": """\
merge_method: linear
models:
  - model: {base_f32}
    parameters: {{weight: 0.2}}
  - model: {ft1_f32}
    parameters: {{weight: 0.5}}
  - model: {ft2_f32}
    parameters: {{weight: 0.3}}
""",
    # bf16 inputs: computed in float32, rounded once; normalize off
    "linear_bf16": """\
merge_method: linear
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.6}}
  - model: {ft2_bf16}
    parameters: {{weight: 0.9}}
parameters:
  normalize: false
""",
    # the classic slerp recipe: gradients of t per module, a default
    "slerp": """\
merge_method: slerp
base_model: {base_bf16}
models:
  - model: {base_bf16}
  - model: {ft2_bf16}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
""",
    "ties": """\
merge_method: ties
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{density: 0.5, weight: 0.5}}
  - model: {ft2_bf16}
    parameters: {{density: 0.7, weight: 0.3}}
  - model: {ft3_bf16}
    parameters: {{density: 0.3, weight: 0.6}}
dtype: float32
out_dtype: bfloat16
""",
    # ties on float32 models, lambda, no normalize: ties are rare there
    "ties_f32": """\
merge_method: ties
base_model: {base_f32}
models:
  - model: {ft1_f32}
    parameters: {{density: 0.4, weight: 0.8}}
  - model: {ft2_f32}
    parameters: {{density: 0.6, weight: 0.5}}
parameters:
  normalize: false
  lambda: 0.9
""",
    "breadcrumbs": """\
merge_method: breadcrumbs
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{density: 0.8, gamma: 0.05, weight: 0.5}}
  - model: {ft2_bf16}
    parameters: {{density: 0.6, gamma: 0.1, weight: 0.5}}
dtype: float32
out_dtype: bfloat16
""",
    "breadcrumbs_ties": """\
merge_method: breadcrumbs_ties
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{density: 0.8, gamma: 0.05, weight: 0.6}}
  - model: {ft2_bf16}
    parameters: {{density: 0.6, gamma: 0.02, weight: 0.4}}
  - model: {ft3_bf16}
    parameters: {{density: 0.9, weight: 0.3}}
dtype: float32
out_dtype: bfloat16
""",
    "dare_ties": """\
merge_method: dare_ties
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{density: 0.5, weight: 0.5}}
  - model: {ft2_bf16}
    parameters: {{density: 0.7, weight: 0.5}}
dtype: float32
out_dtype: bfloat16
""",
    "dare_linear": """\
merge_method: dare_linear
base_model: {base_f32}
models:
  - model: {ft1_f32}
    parameters: {{density: 0.6, weight: 0.7}}
  - model: {ft2_f32}
    parameters: {{density: 0.4, weight: 0.3}}
""",
    # dare in bf16 (no dtype: the inputs' own): bernoulli drawn in bf16
    "dare_linear_bf16": """\
merge_method: dare_linear
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{density: 0.3, weight: 0.7}}
  - model: {ft2_bf16}
    parameters: {{density: 0.6, weight: 0.3}}
""",
    # precedence model > global, filters (first match, '*', fall-through when no
    # filter matches), gradients of a per-model and of a shared parameter
    "gradient_filters": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters:
      weight:
        - filter: self_attn
          value: [0.2, 0.8]
        - filter: mlp
          value: [1.0, 0.5, 0.1]
        - filter: "*"
          value: 0.5
  - model: {ft2_bf16}
    parameters:
      weight:
        - filter: down_proj
          value: -0.3
  - model: {ft3_bf16}
parameters:
  weight: [0.25, 0.75, 0.4]
  lambda:
    - filter: norm
      value: 2.0
    - value: [1.0, 0.5]
dtype: float32
out_dtype: bfloat16
""",
    # ties with a density gradient (k per layer) and a filter
    "ties_gradient": """\
merge_method: ties
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters:
      density: [0.2, 0.9]
      weight: 1.0
  - model: {ft2_bf16}
    parameters:
      density:
        - filter: mlp
          value: 0.1
        - value: 0.6
      weight: 1.0
dtype: float32
out_dtype: bfloat16
""",
    # a vocabulary union: vocab_bf16 has 6 new tokens and every shared token moved
    "union": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.6}}
  - model: {vocab_bf16}
    parameters: {{weight: 0.4}}
tokenizer_source: union
dtype: float32
out_dtype: bfloat16
""",
    # rows a model lacks: the base's (w7), or the average of the models that have it
    # (x0..x5: three models; y0: two), each operation rounded to bf16
    "union_avg": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {vocab_bf16}
    parameters: {{weight: 0.5}}
  - model: {vocab2_bf16}
    parameters: {{weight: 0.7}}
  - model: {vocab3_bf16}
    parameters: {{weight: 0.3}}
tokenizer_source: union
dtype: bfloat16
""",
    # the base's vocabulary: the other models' rows permuted to it, the tokens it lacks dropped
    "vocab_base": """\
merge_method: task_arithmetic
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.6}}
  - model: {vocab2_bf16}
    parameters: {{weight: 0.4}}
tokenizer_source: base
dtype: float32
out_dtype: bfloat16
""",
    # one model's vocabulary: the base's and ft1's rows permuted to vocab2's ids
    "vocab_model": """\
merge_method: ties
base_model: {base_bf16}
models:
  - model: {ft1_bf16}
    parameters: {{weight: 0.6, density: 1}}
  - model: {vocab2_bf16}
    parameters: {{weight: 0.4, density: 1}}
tokenizer_source: {vocab2_bf16}
dtype: float32
out_dtype: bfloat16
""",
}


def recipe(name, zoo):
    """The YAML text of recipe @name with the zoo's paths filled in."""
    return RECIPES[name].format(**zoo.paths)


def recipe_models(text):
    """(base path or None, [model paths in config order]) of a recipe text."""
    import yaml
    cfg = yaml.safe_load(text)
    return cfg.get("base_model"), [m["model"] for m in cfg.get("models", [])]


# ---- running mergekit -------------------------------------------------------------------

def run_merge(text, out, *, seed=None, shard_size=None, cli=False, threads=None):
    """Runs mergekit 0.1.5 on the YAML @text into directory @out.  In process through
    mergekit.merge.run_merge (the same path mergekit-yaml takes) unless @cli.  @seed:
    MergeOptions.random_seed (the dare methods); @shard_size: out_shard_size in bytes.
    Returns {name: float32 array} of the output tensors, {name: dtype string}."""
    if cli:
        path = os.path.join(os.path.dirname(out.rstrip("/")) or ".",
                            os.path.basename(out.rstrip("/")) + ".yml")
        with open(path, "w") as f:
            f.write(text)
        cmd = [os.path.join(os.path.dirname(sys.executable), "mergekit-yaml"), path, out,
               "--quiet"]
        if seed is not None:
            cmd += ["--random-seed", str(seed)]
        if shard_size is not None:
            cmd += ["--out-shard-size", str(shard_size)]
        if threads is not None:
            cmd += ["-j", str(threads)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    else:
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions
        from mergekit.merge import run_merge as mk_run_merge
        cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
        kw = {"quiet": True}
        if seed is not None:
            kw["random_seed"] = seed
        if shard_size is not None:
            kw["out_shard_size"] = int(shard_size)
        if threads is not None:
            kw["num_threads"] = threads
        mk_run_merge(cfg, out, MergeOptions(**kw), config_source=text)
    return read_model(out)


class Merges:
    """Runs each recipe once per session, into @root/<recipe name>."""

    def __init__(self, zoo, root):
        self.zoo, self.root, self.done = zoo, root, {}

    def __call__(self, name, **kw):
        key = (name, tuple(sorted(kw.items())))
        if key not in self.done:
            out = os.path.join(self.root, name + "".join(f"-{k}{v}" for k, v in key[1]))
            self.done[key] = (out, run_merge(recipe(name, self.zoo), out, **kw))
        return self.done[key]
