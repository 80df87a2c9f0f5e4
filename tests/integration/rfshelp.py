"""Helpers of the residfs integration tests.

Everything the tests expect is computed here, independently of residfs:
safetensors files are written by a small writer of our own (and by the
`safetensors` package), the merged bytes by numpy in float32 (numpy's
float32 add and multiply are each rounded, never fused), bf16 rounding by
the formula of docs/arithmetic.md, fp16 rounding by numpy's astype(float16).
"""
import contextlib
import hashlib
import json
import mmap
import os
import random
import struct
import sys
import threading

import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy (safetensors' numpy framework needs it)
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from rfsproc import (REPO, Result, daemon_pids, is_mounted, mounts, residfs_bin,  # noqa: E402,F401
                     run, unmount)


# ---- dtypes and rounding ---------------------------------------------------

DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
FLOATS = ("F32", "BF16", "F16")
NP_OF = {
    "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}
TORCH_NAME = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
USER_DTYPE = {"fp32": "F32", "float32": "F32", "bf16": "BF16", "fp16": "F16", "float16": "F16",
              "bfloat16": "BF16", "f32": "F32"}


def bf16_to_f32(bits):
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(a):
    """Round-to-nearest-even float32 -> bf16 bits; NaN stays a quiet NaN with its sign."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    r = r.astype(np.uint16)
    r[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return r


def encode(dtype, a):
    """float32 values -> raw bytes of @dtype (rounded once)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "BF16":
        return f32_to_bf16(a).tobytes()
    if dtype == "F16":
        with np.errstate(over="ignore", invalid="ignore"):
            return a.astype(np.float16).tobytes()
    raise ValueError(dtype)


def decode(dtype, raw):
    """raw bytes of a float dtype -> float32 values (exact widening), flat."""
    if dtype == "F32":
        return np.frombuffer(raw, dtype=np.float32).copy()
    if dtype == "BF16":
        return bf16_to_f32(np.frombuffer(raw, dtype=np.uint16))
    if dtype == "F16":
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    raise ValueError(dtype)


def round_to(dtype, a):
    """float32 values rounded to @dtype and widened back to float32."""
    return decode(dtype, encode(dtype, a))


class T:
    """A tensor: safetensors dtype name, shape, raw little-endian bytes."""

    def __init__(self, dtype, shape, raw):
        self.dtype = dtype
        self.shape = [int(x) for x in shape]
        self.raw = bytes(raw)
        assert len(self.raw) == self.numel * DTYPE_SIZE[dtype], (dtype, shape, len(raw))

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self):
        return len(self.raw)

    def f32(self):
        return decode(self.dtype, self.raw)

    def array(self):
        """numpy array as safetensors' numpy framework returns it (bf16: raw bits)."""
        return np.frombuffer(self.raw, dtype=NP_OF[self.dtype]).reshape(self.shape)

    @staticmethod
    def from_f32(dtype, shape, values):
        return T(dtype, shape, encode(dtype, np.asarray(values, dtype=np.float32).reshape(-1)))

    def __repr__(self):
        return f"T({self.dtype}, {self.shape})"


# ---- safetensors files -------------------------------------------------------

def st_header(tensors, metadata=None, pad=True):
    """Header JSON bytes for [(name, T)] in the given order, contiguous offsets."""
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    pos = 0
    for name, t in tensors:
        hdr[name] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [pos, pos + t.nbytes]}
        pos += t.nbytes
    js = json.dumps(hdr, separators=(",", ":")).encode()
    if pad and len(js) % 8:
        js += b" " * (8 - len(js) % 8)
    return js


def st_bytes(tensors, metadata=None, header=None):
    """A safetensors file: tensors stored in the order given."""
    js = header if header is not None else st_header(tensors, metadata)
    return struct.pack("<Q", len(js)) + js + b"".join(t.raw for _, t in tensors)


def writer_order(tensors):
    """The safetensors writer's order: dtype alignment descending, then name (bytewise)."""
    return sorted(tensors, key=lambda nt: (-DTYPE_SIZE[nt[1].dtype], nt[0].encode()))


def parse_st(data):
    """-> (header_len, header dict, [(name, dtype, shape, begin, end)] by offset, data_off)."""
    assert len(data) >= 8, "file shorter than 8 bytes"
    n = struct.unpack("<Q", data[:8])[0]
    assert 8 + n <= len(data), f"header length {n} beyond the file ({len(data)} bytes)"
    hdr = json.loads(data[8:8 + n])
    ents = []
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        ents.append((k, v["dtype"], v["shape"], v["data_offsets"][0], v["data_offsets"][1]))
    ents.sort(key=lambda e: (e[3], e[4]))
    return n, hdr, ents, 8 + n


def write_file(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


# ---- models ------------------------------------------------------------------

class Model:
    """A model directory on disk with what it holds in memory."""

    def __init__(self, path):
        self.path = path
        self.config = {}
        self.tensors = {}       # name -> T
        self.shards = []        # [(file name, [names in file order], metadata or None)]
        self.sharded = False
        self.others = {}        # other file name -> bytes

    @property
    def tied(self):
        return bool(self.config.get("tie_word_embeddings", True))

    def file_of(self, name):
        for fn, names, _ in self.shards:
            if name in names:
                return fn
        raise KeyError(name)


def llama_shapes(vocab, hidden, inter, layers, kv, tied):
    out = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", [hidden, hidden]),
            (p + "self_attn.k_proj.weight", [kv, hidden]),
            (p + "self_attn.v_proj.weight", [kv, hidden]),
            (p + "self_attn.o_proj.weight", [hidden, hidden]),
            (p + "mlp.gate_proj.weight", [inter, hidden]),
            (p + "mlp.up_proj.weight", [inter, hidden]),
            (p + "mlp.down_proj.weight", [hidden, inter]),
            (p + "input_layernorm.weight", [hidden]),
            (p + "post_attention_layernorm.weight", [hidden]),
        ]
    out.append(("model.norm.weight", [hidden]))
    if not tied:
        out.append(("lm_head.weight", [vocab, hidden]))
    return out


def llama_config(vocab, hidden, inter, layers, kv, tied, dtype, extra=None):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "max_position_embeddings": 256,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_key_value_heads": max(1, 4 * kv // hidden),
        "rms_norm_eps": 1e-05,
        "tie_word_embeddings": tied,
        "torch_dtype": TORCH_NAME[dtype],
        "transformers_version": "4.44.0",
        "vocab_size": vocab,
    }
    if extra:
        cfg.update(extra)
    return cfg


def tokenizer_files(flavour, vocab):
    """Small but plausible tokenizer files; @flavour makes base and instruct differ."""
    # the specials are the first three ids of the model's vocabulary, as tokenizers saves them
    vocab_map = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab_map.update({f"tok{i}": i for i in range(3, vocab)})
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                         {"id": 1, "content": "<s>", "special": True},
                         {"id": 2, "content": "</s>", "special": True}],
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"},
        "flavour": flavour,
    }
    tcfg = {"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 256,
            "tokenizer_class": "PreTrainedTokenizerFast"}
    if flavour == "instruct":
        tcfg["chat_template"] = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}"
    gen = {"bos_token_id": 1, "eos_token_id": [2] if flavour == "instruct" else 2,
           "do_sample": flavour == "instruct"}
    return {
        "tokenizer.json": json.dumps(tok, indent=2),
        "tokenizer_config.json": json.dumps(tcfg, indent=2),
        "special_tokens_map.json": json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                              "flavour": flavour}),
    }, json.dumps(gen, indent=2) + "\n"


def random_weights(rng, dtype, shapes):
    out = {}
    for name, shape in shapes:
        n = int(np.prod(shape))
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            v = 1.0 + rng.normal(0.0, 0.05, n)
        else:
            v = rng.normal(0.0, 0.02, n)
        out[name] = T.from_f32(dtype, shape, v.astype(np.float32))
    return out


def write_model(path, tensors, config, *, nshards=1, order=None, metadata=("pt",),
                flavour="base", gen=True, others=None, use_package_writer=False,
                config_text=None):
    """Writes a model directory.

    tensors: dict name -> T; order: names in file order (default: insertion order);
    metadata: ("pt",) for {"format": "pt"}, None for no __metadata__, or a dict.
    nshards > 1 writes model-0000K-of-0000N.safetensors + index.json.
    """
    os.makedirs(path, exist_ok=True)
    m = Model(path)
    m.config = config
    m.tensors = dict(tensors)
    names = list(order) if order is not None else list(tensors)
    if metadata == ("pt",):
        meta = {"format": "pt"}
    else:
        meta = metadata
    if nshards == 1:
        groups = [("model.safetensors", names)]
    else:
        per = (len(names) + nshards - 1) // nshards
        groups = [(f"model-{k + 1:05d}-of-{nshards:05d}.safetensors", names[k * per:(k + 1) * per])
                  for k in range(nshards)]
    for fn, ns in groups:
        items = [(n, tensors[n]) for n in ns]
        if use_package_writer:
            import safetensors.numpy as stn
            arrs = {n: package_array(t) for n, t in items}
            data = stn.save(arrs, metadata=meta)
            _, _, ents, _ = parse_st(data)
            ns = [e[0] for e in ents]
        else:
            data = st_bytes(items, meta)
        write_file(os.path.join(path, fn), data)
        m.shards.append((fn, list(ns), meta))
    if nshards > 1:
        m.sharded = True
        total = sum(t.nbytes for t in tensors.values())
        idx = {"metadata": {"total_size": total},
               "weight_map": {n: fn for fn, ns in groups for n in ns}}
        write_file(os.path.join(path, "model.safetensors.index.json"), json.dumps(idx, indent=2) + "\n")
    write_file(os.path.join(path, "config.json"),
               config_text if config_text is not None else json.dumps(config, indent=2) + "\n")
    tok, genc = tokenizer_files(flavour, config.get("vocab_size", 0))
    for fn, text in tok.items():
        write_file(os.path.join(path, fn), text)
    if gen:
        write_file(os.path.join(path, "generation_config.json"), genc)
    for fn, data in (others or {}).items():
        write_file(os.path.join(path, fn), data)
        m.others[fn] = data.encode() if isinstance(data, str) else data
    return m


def package_array(t):
    """numpy array for safetensors.numpy.save (bf16 through ml_dtypes)."""
    if t.dtype == "BF16":
        return np.frombuffer(t.raw, dtype=np.uint16).view(ml_dtypes.bfloat16).reshape(t.shape)
    return t.array()


RESIDUALS_KEYS = [
    "residuals_version", "format", "dtype", "param_count", "shapes_hash",
    "parameter_names_hash", "tokenizer_name", "created_at", "library", "base_model_name",
    "instruct_model_name", "pipeline_tag", "license", "language", "tags", "base_model_relation",
]


def names_hash(names):
    return hashlib.sha256("|".join(sorted(names)).encode()).hexdigest()


def shapes_hash(shapes):
    """shapes: dict name -> list of ints; the residuals package's repr of a list."""
    return hashlib.sha256("|".join(f"{n}:{list(shapes[n])}" for n in sorted(shapes)).encode()).hexdigest()


class Residuals:
    def __init__(self, path, tensors):
        self.path = path
        self.tensors = tensors


def write_residuals(path, deltas, *, base_name="base", instruct_name="instruct", vocab=None,
                    tokenizer=True, gen=True, dtype_name=None):
    """A residuals directory as the `residuals` package writes it: one
    model.safetensors (safetensors writer, no __metadata__), its own config.json,
    the instruct tokenizer files and a README.md model card."""
    import safetensors.numpy as stn
    os.makedirs(path, exist_ok=True)
    arrs = {n: package_array(t) for n, t in deltas.items()}
    stn.save_file(arrs, os.path.join(path, "model.safetensors"))
    dts = [t.dtype for t in deltas.values()]
    main = max(set(dts), key=dts.count) if dts else "F32"
    cfg = {
        "residuals_version": "0.3.2",
        "format": "pytorch",
        "dtype": dtype_name or TORCH_NAME[main],
        "param_count": len(deltas),
        "shapes_hash": shapes_hash({n: t.shape for n, t in deltas.items()}),
        "parameter_names_hash": names_hash(deltas),
        "tokenizer_name": instruct_name,
        "created_at": "2024-06-01T12:00:00",
        "library": {"package": "residuals", "version": "0.3.2"},
        "base_model_name": base_name,
        "instruct_model_name": instruct_name,
        "pipeline_tag": "text-generation",
        "license": "apache-2.0",
        "language": ["en"],
        "tags": ["residuals", "task-arithmetic"],
        "base_model_relation": "adapter",
    }
    write_file(os.path.join(path, "config.json"), json.dumps(cfg, indent=2))
    if tokenizer:
        tok, genc = tokenizer_files("instruct", vocab or 0)
        for fn, text in tok.items():
            write_file(os.path.join(path, fn), text)
        if gen:
            write_file(os.path.join(path, "generation_config.json"), genc)
    write_file(os.path.join(path, "README.md"),
               "---\nlibrary_name: residuals\nbase_model: %s\nbase_model_relation: adapter\n"
               "instruct_model: %s\npipeline_tag: text-generation\ntags:\n- residuals\n---\n\n"
               "# residuals\n" % (base_name, instruct_name))
    return Residuals(path, dict(deltas))


def delta_from(base_t, ins_t, dtype="F32"):
    """instruct - base in float32 (base rows beyond its end count as 0), rounded to @dtype."""
    ins = ins_t.f32()
    b = np.zeros(ins.size, np.float32)
    b[:base_t.numel] = base_t.f32()
    return T.from_f32(dtype, ins_t.shape, ins - b)


def inject_ties(rng, base_t, delta_f32, frac=0.1):
    """Sets some delta elements to exactly half an ulp of the base value in the
    base's dtype, so that base + delta is a tie that round-to-nearest-even decides."""
    sig = {"BF16": 8, "F16": 11, "F32": 24}[base_t.dtype]
    b = base_t.f32()
    d = delta_f32.copy()
    n = min(b.size, d.size)
    idx = rng.choice(n, size=max(1, int(n * frac)), replace=False)
    for i in idx:
        v = float(b[i])
        if v == 0.0 or not np.isfinite(v):
            continue
        _, e = np.frexp(v)
        half = np.ldexp(1.0, int(e) - sig - 1)
        d[i] = np.float32(half if rng.random() < 0.5 else -half)
    return d


# ---- expected arithmetic -------------------------------------------------------

def merge_tensor(base_t, terms, out_dtype, cast_first=False):
    """out = to_out(f32(base) + s1*f32(d1) + ...), left to right in float32.

    terms: [(T delta, float scale)]. Base rows beyond its end count as 0 (grown
    vocabulary). cast_first: the base is first rounded to the output dtype, then per
    delta x = s*d rounded to d's dtype when s != 1, then to the output dtype, then
    acc = to_out(acc + x)."""
    rows = base_t.shape[0] if base_t.shape else None
    for d, _ in terms:
        if d.shape and d.shape[0] > rows:
            rows = d.shape[0]
    shape = list(base_t.shape)
    if shape:
        shape[0] = rows
    n = int(np.prod(shape)) if shape else 1
    acc = np.zeros(n, np.float32)
    acc[:base_t.numel] = base_t.f32()
    with np.errstate(over="ignore", invalid="ignore"):
        return _merge(acc, n, shape, terms, out_dtype, cast_first)


def _merge(acc, n, shape, terms, out_dtype, cast_first):
    if cast_first:
        acc = round_to(out_dtype, acc)  # the package casts the model to its dtype first
    for d, s in terms:
        x = np.zeros(n, np.float32)
        x[:d.numel] = d.f32()
        s32 = np.float32(s)
        if cast_first:
            if s32 != np.float32(1.0):
                x = round_to(d.dtype, s32 * x)
            x = round_to(out_dtype, x)
            acc = round_to(out_dtype, acc + x)
        else:
            if s32 != np.float32(1.0):
                x = s32 * x
            acc = acc + x
    return T.from_f32(out_dtype, shape, acc)


def compute_tensor(ins_t, base_t, out_dtype="F32"):
    """delta = to_out(f32(instruct) - f32(base)); base rows beyond its end count as 0."""
    acc = ins_t.f32()
    b = np.zeros(acc.size, np.float32)
    b[:base_t.numel] = base_t.f32()
    return T.from_f32(out_dtype, ins_t.shape, acc + (np.float32(-1.0) * b))


class Expected:
    """What a mount must show: file name -> bytes, or a checker for generated files."""

    def __init__(self):
        self.files = {}         # name -> exact bytes
        self.st = {}            # safetensors file name -> [(name, T)] in file order
        self.st_meta = {}       # file name -> __metadata__ expected (None: no key)
        self.st_header = {}     # file name -> exact header bytes, or None (rebuilt)
        self.json = {}          # name -> (dict expected, exact bytes or None)
        self.generated = set()  # README.md etc.: presence and content checks elsewhere

    def names(self):
        return set(self.files) | set(self.st) | set(self.json) | self.generated


TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def has_tokenizer(path):
    return any(os.path.isfile(os.path.join(path, f))
               for f in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json"))


def expected_apply(base, terms, out_dtype=None, cast_first=False):
    """terms: [(Residuals, scale)]. out_dtype: None (the base tensor's) or 'F32'/'BF16'/'F16'."""
    e = Expected()
    total = 0
    vocab = base.config.get("vocab_size")
    new_vocab = vocab
    for fn, names, meta in base.shards:
        items, changed = [], meta is None
        for n in names:
            bt = base.tensors[n]
            if bt.dtype not in FLOATS:
                items.append((n, bt))
                total += bt.nbytes
                continue
            od = out_dtype or bt.dtype
            ts = [(r.tensors[n], s) for r, s in terms if n in r.tensors]
            if not ts and od == bt.dtype:
                out = bt
            else:
                out = merge_tensor(bt, ts, od, cast_first)
            if out.dtype != bt.dtype or out.shape != bt.shape:
                changed = True
            if out.shape and bt.shape and out.shape[0] != bt.shape[0] and bt.shape[0] == vocab:
                new_vocab = max(new_vocab, out.shape[0])
            items.append((n, out))
            total += out.nbytes
        e.st[fn] = items
        e.st_meta[fn] = meta if meta is not None else {"format": "pt"}
        if changed:
            e.st_header[fn] = None
        else:
            raw = read_file(os.path.join(base.path, fn))
            e.st_header[fn] = raw[8:8 + struct.unpack("<Q", raw[:8])[0]]
    cfg_bytes = read_file(os.path.join(base.path, "config.json"))
    cfg = json.loads(cfg_bytes)
    cfg_changed = False
    if new_vocab != vocab:
        cfg["vocab_size"] = new_vocab
        cfg_changed = True
    if out_dtype is not None:
        for k in ("torch_dtype", "dtype"):
            if k in cfg:
                cfg[k] = TORCH_NAME[out_dtype]
                cfg_changed = True
    e.json["config.json"] = (cfg, None if cfg_changed else cfg_bytes)
    if base.sharded:
        ib = read_file(os.path.join(base.path, "model.safetensors.index.json"))
        idx = json.loads(ib)
        same = idx["metadata"]["total_size"] == total
        idx["metadata"]["total_size"] = total
        e.json["model.safetensors.index.json"] = (idx, ib if same else None)
    tok_dir = base.path
    for r, _ in terms:
        if has_tokenizer(r.path):
            tok_dir = r.path
            break
    for fn in TOKENIZER_NAMES:
        p = os.path.join(tok_dir, fn)
        if os.path.isfile(p):
            e.files[fn] = read_file(p)
    gen_dir = None
    for r, _ in terms:
        if os.path.isfile(os.path.join(r.path, "generation_config.json")):
            gen_dir = r.path
            break
    if gen_dir is None and os.path.isfile(os.path.join(base.path, "generation_config.json")):
        gen_dir = base.path
    if gen_dir:
        e.files["generation_config.json"] = read_file(os.path.join(gen_dir, "generation_config.json"))
    for fn, data in base.others.items():
        if fn != "README.md":
            e.files[fn] = data
    e.generated.add("README.md")
    return e


def expected_compute(ins, base, out_dtype="F32"):
    """INSTRUCT-BASE: one model.safetensors (writer layout, no __metadata__)."""
    import safetensors.numpy as stn
    e = Expected()
    out = {}
    for n, bt in base.tensors.items():
        it = ins.tensors[n]
        if bt.dtype not in FLOATS or it.dtype not in FLOATS:
            continue
        out[n] = compute_tensor(it, bt, out_dtype)
    if base.tied and "lm_head.weight" not in base.tensors and "model.embed_tokens.weight" in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    data = stn.save({n: package_array(t) for n, t in out.items()})
    e.files["model.safetensors"] = data
    e.st_tensors = out
    for fn in TOKENIZER_NAMES:
        p = os.path.join(ins.path, fn)
        if os.path.isfile(p):
            e.files[fn] = read_file(p)
    p = os.path.join(ins.path, "generation_config.json")
    if os.path.isfile(p):
        e.files["generation_config.json"] = read_file(p)
    e.generated |= {"README.md", "config.json"}
    return e


# ---- reading a file every way ------------------------------------------------------

def first_diff(a, b):
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def assert_same(got, exp, what, where=None, off=0):
    """got == exp, else an error giving the first differing byte (@off: where
    @exp starts in the file, for @where to name the tensor)."""
    if got == exp:
        return
    i = first_diff(got, exp)
    loc = f" (file byte {off + i}: {where(off + i)})" if where else ""
    raise AssertionError(
        f"{what}: {len(got)} bytes read, {len(exp)} expected; first difference at byte {i}{loc}: "
        f"got {got[i:i + 16].hex()} expected {exp[i:i + 16].hex()}")


def drop_cache(fd):
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def locator(data):
    """offset -> 'tensor NAME +k' for a safetensors file's bytes (diagnostics)."""
    try:
        _, _, ents, doff = parse_st(data)
    except Exception:
        return None

    def where(i):
        if i < doff:
            return "header"
        for n, _, _, b, en in ents:
            if doff + b <= i < doff + en:
                return f"tensor {n} byte {i - doff - b}"
        return "past the tensors"
    return where


def check_reads(path, expected, seed=0, npreads=48):
    """Reads @path by whole-file read, random preads, shared and private mmap;
    every byte must equal @expected."""
    where = locator(expected) if path.endswith(".safetensors") else None
    size = len(expected)
    st = os.stat(path)
    assert st.st_size == size, f"{path}: stat size {st.st_size}, expected {size}"
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        drop_cache(fd)
        for i in range(npreads):
            if i % 4 == 3:
                drop_cache(fd)  # more of them go to the daemon, not the page cache
            off = rng.randrange(0, size + 1)
            ln = rng.choice([1, 2, 3, 7, 8, 4095, 4096, 4097, 65537, 131072, 131073,
                             rng.randrange(1, 1 << 21)])
            got = os.pread(fd, ln, off)
            assert_same(got, expected[off:off + ln], f"{path}: pread({ln}, {off})", where, off)
        assert os.pread(fd, 16, size) == b"", f"{path}: read at EOF returned bytes"
        drop_cache(fd)
        with open(path, "rb", buffering=0) as f:
            got = f.read()
        assert_same(got, expected, f"{path}: whole-file read", where)
        # sequential reads of an odd size
        drop_cache(fd)
        parts, off = [], 0
        while True:
            b = os.pread(fd, 12289, off)
            if not b:
                break
            parts.append(b)
            off += len(b)
        assert_same(b"".join(parts), expected, f"{path}: sequential 12289-byte reads", where)
        if size:
            drop_cache(fd)
            m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            try:
                for _ in range(16):
                    a = rng.randrange(0, size)
                    b = min(size, a + rng.randrange(1, 1 << 18))
                    assert_same(m[a:b], expected[a:b], f"{path}: MAP_SHARED [{a}:{b}]", where, a)
                assert_same(m[:], expected, f"{path}: MAP_SHARED whole", where)
            finally:
                m.close()
            drop_cache(fd)
            m = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                assert_same(m[:], expected, f"{path}: MAP_PRIVATE whole", where)
                m[0] = m[0] ^ 0xFF  # copy-on-write: the file must not change
                assert os.pread(fd, 1, 0) == expected[:1], f"{path}: private mapping write leaked"
            finally:
                m.close()
    finally:
        os.close(fd)


def concurrent_preads(path, expected, nthreads=8, per_thread=40, seed=1):
    errors = []
    fd = os.open(path, os.O_RDONLY)
    drop_cache(fd)
    size = len(expected)
    where = locator(expected)

    def work(k):
        rng = random.Random(seed * 1000 + k)
        try:
            for _ in range(per_thread):
                off = rng.randrange(0, size)
                ln = rng.randrange(1, 1 << 20)
                assert_same(os.pread(fd, ln, off), expected[off:off + ln],
                            f"{path}: thread {k} pread({ln}, {off})", where, off)
        except BaseException as ex:  # noqa: BLE001 - reported below
            errors.append(ex)

    ths = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    os.close(fd)
    if errors:
        raise errors[0]


# ---- running residfs ----------------------------------------------------------

# ---- verifying a mounted or exported directory ----------------------------------------

def front_matter(text):
    """YAML front matter of a model card as a list of lines (between the --- lines)."""
    assert text.startswith("---\n"), "README.md does not start with front matter"
    end = text.find("\n---", 4)
    assert end > 0, "README.md front matter is not closed"
    return text[4:end].split("\n")


def check_st_header(path, data, items, meta, exact_header):
    """Checks the header of a safetensors file as read; returns the header bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    hdr = data[8:8 + n]
    if exact_header is not None:
        assert_same(hdr, exact_header, f"{path}: header (unchanged: must be the base's bytes)")
        return hdr
    assert n % 8 == 0, f"{path}: header length {n} is not padded to a multiple of 8"
    h = json.loads(hdr)
    assert h.get("__metadata__") == meta, f"{path}: __metadata__ {h.get('__metadata__')!r}, expected {meta!r}"
    _, _, ents, _ = parse_st(data)
    assert [e[0] for e in ents] == [nm for nm, _ in items], \
        f"{path}: tensor order {[e[0] for e in ents]} differs from the base's {[nm for nm, _ in items]}"
    pos = 0
    for (nm, dt, shape, b, en), (_, t) in zip(ents, items):
        assert (dt, list(shape)) == (t.dtype, t.shape), f"{path}: {nm} is {dt} {shape}, expected {t.dtype} {t.shape}"
        assert (b, en) == (pos, pos + t.nbytes), f"{path}: {nm} offsets [{b}, {en}], expected [{pos}, {pos + t.nbytes}]"
        pos = en
    return hdr


def check_safe_open(path, items, meta):
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == sorted(n for n, _ in items), f"{path}: safe_open keys {f.keys()}"
        if meta is not None:
            assert f.metadata() == meta, f"{path}: safe_open metadata {f.metadata()!r}"
        for n, t in items:
            a = f.get_tensor(n)
            assert list(a.shape) == t.shape, f"{path}: {n} shape {a.shape} via safe_open, expected {t.shape}"
            assert a.dtype.itemsize == DTYPE_SIZE[t.dtype], f"{path}: {n} dtype {a.dtype}"
            assert np.ascontiguousarray(a).tobytes() == t.raw, f"{path}: {n} differs via safe_open"
            if t.shape and t.shape[0] > 1:
                s = f.get_slice(n)
                half = t.shape[0] // 2
                part = np.ascontiguousarray(s[half:half + 1]).tobytes()
                row = t.nbytes // t.shape[0]
                assert part == t.raw[half * row:(half + 1) * row], f"{path}: {n} get_slice row {half} differs"


def verify_dir(d, exp, *, reads=True, seed=0, safe_open=True):
    """Checks a mounted (or exported) directory against an Expected. Returns
    {name: bytes} of everything read, for comparisons between directories."""
    got_names = set(os.listdir(d))
    assert got_names == exp.names(), \
        f"{d}: files {sorted(got_names)}, expected {sorted(exp.names())}"
    seen = {}
    for fn, items in exp.st.items():
        p = os.path.join(d, fn)
        data = read_file(p)
        hdr = check_st_header(p, data, items, exp.st_meta[fn], exp.st_header[fn])
        want = struct.pack("<Q", len(hdr)) + hdr + b"".join(t.raw for _, t in items)
        if reads:
            check_reads(p, want, seed=seed)
        else:
            assert_same(data, want, p, locator(want))
        if safe_open:
            check_safe_open(p, items, exp.st_meta[fn])
        seen[fn] = want
    for fn, (obj, exact) in exp.json.items():
        p = os.path.join(d, fn)
        data = read_file(p)
        got = json.loads(data)
        assert got == obj, f"{p}: {got!r}\nexpected {obj!r}"
        assert list(got) == list(obj), f"{p}: key order {list(got)} differs from {list(obj)}"
        if exact is not None:
            assert_same(data, exact, f"{p} (must be byte for byte the source's)")
        if reads:
            check_reads(p, data, seed=seed, npreads=8)
        seen[fn] = data
    for fn, want in exp.files.items():
        p = os.path.join(d, fn)
        if reads:
            check_reads(p, want, seed=seed, npreads=8)
        else:
            assert_same(read_file(p), want, p)
        seen[fn] = want
    for fn in exp.generated:
        p = os.path.join(d, fn)
        data = read_file(p)
        if reads:
            check_reads(p, data, seed=seed, npreads=4)
        seen[fn] = data
    return seen


def compare_dirs(a, b, skip=()):
    na, nb = sorted(os.listdir(a)), sorted(os.listdir(b))
    assert na == nb, f"{a} has {na}, {b} has {nb}"
    for fn in na:
        if fn in skip:
            continue
        assert_same(read_file(os.path.join(b, fn)), read_file(os.path.join(a, fn)),
                    f"{b}/{fn} vs {a}/{fn}", locator(read_file(os.path.join(a, fn))) if fn.endswith(".safetensors") else None)

