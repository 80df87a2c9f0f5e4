"""Tiny real models built with transformers, and the `residuals` package's own
residuals of them.  Used by the tests in this folder and by
contrib/bench/peers.py (which builds a large one the same way).

Nothing is downloaded: configs are written in code, weights are random with
fixed seeds, tokenizers are built with the `tokenizers` library and wrapped in
PreTrainedTokenizerFast (tokenizer_config.json names "PreTrainedTokenizerFast",
so AutoTokenizer.from_pretrained(path, use_fast=False), which the package
calls, loads it too).

A pair is a base model and an "instruct" variant: the same weights plus noise,
three added special tokens (the vocabulary grows: pad and the two chat
markers), a chat template and a generation config with an extra eos id
(<|im_end|>).  A second instruct variant with the same tokenizer gives a
second delta for BASE+D1+D2.
"""
import copy
import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ST_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
ARCHS = ("llama", "tied", "gpt2")
ADDED = ["<|im_start|>", "<|im_end|>"]
PAD = "<pad>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}"
    "<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")
SHARD_SIZE = "24KB"   # several shards even for the smallest bf16 model
NOISE = 0.003         # instruct = base + N(0, NOISE) on every floating parameter


# ---- tokenizers ----------------------------------------------------------------------

def _words(n):
    return [f"w{i}" for i in range(n)]


def word_tokenizer(nwords=125):
    """WordLevel tokenizer: <unk>=0, <s>=1, </s>=2, then w0..w{nwords-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in _words(nwords):
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", clean_up_tokenization_spaces=False)


def bpe_tokenizer(vocab_size=300):
    """GPT-2 style byte-level BPE, trained here on a fixed corpus; <|endoftext|>=0."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    words = ("alpha", "beta", "gamma", "delta", "residual", "model", "merge", "weights")
    corpus = [" ".join(words[i % 8:] + words[:i % 8]) for i in range(64)]
    corpus += [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(64)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False)


def instruct_tokenizer(tok):
    """The instruct tokenizer: three added special tokens and a chat template."""
    t = copy.deepcopy(tok)
    t.add_special_tokens({"pad_token": PAD, "additional_special_tokens": list(ADDED)})
    t.chat_template = CHAT_TEMPLATE
    return t


# ---- models --------------------------------------------------------------------------

def model_config(arch, vocab, tok, hidden=32, layers=2, heads=4, kv_heads=2, inter=64, positions=64):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config
    bos, eos = tok.bos_token_id, tok.eos_token_id
    if arch == "llama":   # untied embeddings
        return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                           num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=kv_heads, max_position_embeddings=positions,
                           tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos)
    if arch == "tied":    # Qwen2: tied embeddings, q/k/v biases
        return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                           num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=kv_heads, max_position_embeddings=positions,
                           tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos)
    if arch == "gpt2":    # tied, Conv1D weights stored [in, out], transformer.* names
        return GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                          n_positions=positions, bos_token_id=bos, eos_token_id=eos)
    raise ValueError(arch)


def perturb(model, seed, scale=NOISE):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale)
    return model


def save_model(model, tok, path, dtype, shard_size, gen):
    """save_pretrained in @dtype, sharded at @shard_size (None: one file)."""
    model = copy.deepcopy(model).to(dtype)
    model.generation_config = gen
    kw = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(path, **kw)
    tok.save_pretrained(path)
    return path


@dataclasses.dataclass
class Pair:
    """A base/instruct pair on disk and the package's residuals of it."""
    key: str
    arch: str
    dtype: str            # bf16 / fp16 / fp32: the models' dtype
    sharded: bool
    root: str
    base: str = ""
    ins: str = ""
    ins2: str = ""        # second instruct variant (same tokenizer as ins)
    res: dict = dataclasses.field(default_factory=dict)   # f32/bf16/fp16 -> residuals dir
    res2: str = ""        # float32 residuals of ins2 - base
    base_vocab: int = 0
    ins_vocab: int = 0

    @property
    def torch_dtype(self):
        return DTYPES[self.dtype]

    @property
    def tied(self):
        return self.arch != "llama"


def build_models(root, arch, dtype, sharded, seed, *, nwords=125, shard_size=SHARD_SIZE,
                 second=True, **shape):
    """Writes base/, instruct/ and (@second) instruct2/ under @root. Returns a Pair (no
    residuals). @nwords: words of the word-level tokenizer (llama, tied); @shape: the
    sizes model_config takes."""
    from transformers import AutoModelForCausalLM, GenerationConfig
    key = f"{arch}_{dtype}_{'sharded' if sharded else 'single'}"
    p = Pair(key=key, arch=arch, dtype=dtype, sharded=sharded, root=root)
    os.makedirs(root, exist_ok=True)
    tok = bpe_tokenizer() if arch == "gpt2" else word_tokenizer(nwords)
    itok = instruct_tokenizer(tok)
    p.base_vocab, p.ins_vocab = len(tok), len(itok)
    torch.manual_seed(seed)
    cfg = model_config(arch, len(tok), tok, **shape)
    base = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    base.eval()
    eos = tok.eos_token_id
    p.base = save_model(base, tok, os.path.join(root, "base"), p.torch_dtype,
                        shard_size if sharded else None,
                        GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos))
    gen_i = GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=itok.pad_token_id,
                             eos_token_id=[eos, itok.convert_tokens_to_ids("<|im_end|>")],
                             max_new_tokens=32)
    for name, s in (("instruct", seed + 1), ("instruct2", seed + 2))[:2 if second else 1]:
        m = copy.deepcopy(base)
        torch.manual_seed(s)
        m.resize_token_embeddings(len(itok), mean_resizing=False)
        perturb(m, s)
        path = save_model(m, itok, os.path.join(root, name), p.torch_dtype, None, gen_i)
        del m
        if name == "instruct":
            p.ins = path
        else:
            p.ins2 = path
    return p


def build_residuals(p):
    """The package's residuals: from_models(base, instruct) in float32 (its default),
    saved with save_pretrained, and cast with .to(dtype=...) to bf16 and fp16."""
    from residuals import Residuals
    r = Residuals.from_models(p.base, p.ins)
    p.res["f32"] = os.path.join(p.root, "res_f32")
    r.save_pretrained(p.res["f32"])
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        p.res[name] = os.path.join(p.root, f"res_{name}")
        r.to(dtype=dt).save_pretrained(p.res[name])
    r2 = Residuals.from_models(p.base, p.ins2)
    p.res2 = os.path.join(p.root, "res2_f32")
    r2.save_pretrained(p.res2)
    return p


def build_pair(root, arch, dtype, sharded, seed):
    return build_residuals(build_models(root, arch, dtype, sharded, seed))
