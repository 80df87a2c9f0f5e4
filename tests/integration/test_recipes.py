"""mergekit recipes (`--config`) against a numpy reference of docs/merges.md's arithmetic.

tests/merge compares residfs with mergekit itself; these tests need only numpy, so the
sanitizer builds run them too (tests/sanitize.sh): the merge arithmetic, the
whole-tensor numbers computed once under a lock while other threads read the same
tensor, and the plan of a recipe (files, refusals).
"""
import json
import os
import re
import shutil
import threading

import numpy as np
import pytest

import rfshelp as H
from conftest import export

F32 = np.float32
LAYERS = 2


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A bf16 base (2 shards), two fine-tunes (1 shard each) and an f32 pair."""
    root = str(tmp_path_factory.mktemp("recipes"))
    rng = np.random.default_rng(77)
    V, Hd, I, KV = 512, 64, 128, 32
    cfg = H.llama_config(V, Hd, I, LAYERS, KV, False, "BF16")
    bt = H.random_weights(rng, "BF16", H.llama_shapes(V, Hd, I, LAYERS, KV, False))
    z = {"base": H.write_model(os.path.join(root, "base"), bt, cfg, nshards=2, flavour="base").path}
    for name, sc in (("m1", 0.01), ("m2", 0.02)):
        mt = {n: H.T.from_f32("BF16", t.shape, t.f32() + rng.normal(0, sc, t.numel).astype(F32))
              for n, t in bt.items()}
        z[name] = H.write_model(os.path.join(root, name), mt, cfg, nshards=1, flavour="base").path
    z["root"] = root
    return z


def load(d):
    from safetensors.numpy import load_file
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, f)))
    return out


def f32(a):
    return H.bf16_to_f32(a.view(np.uint16)).ravel() if a.dtype == np.uint16 or str(a.dtype) == "bfloat16" \
        else np.asarray(a, F32).ravel()


def write(tmp_path, text, name="r.yml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def recipe(zoo, method, p1, p2, extra=""):
    return (f"merge_method: {method}\nbase_model: {zoo['base']}\nmodels:\n"
            f"  - model: {zoo['m1']}\n    parameters: {p1}\n"
            f"  - model: {zoo['m2']}\n    parameters: {p2}\n" + extra)


def merged(tmp_path, text, mounter=None):
    cfg = write(tmp_path, text)
    if mounter:
        return load(mounter.mount("--config", cfg)), cfg
    out = str(tmp_path / "out")
    export(["--config", cfg], out)
    return load(out), cfg


def layer_w(name, grad):
    m = re.search(r"layers\.(\d+)\.", name)
    t = int(m.group(1)) / (LAYERS - 1) if m else 0.0
    s = t * (len(grad) - 1)
    i0 = int(s)
    return (1 - (s - i0)) * grad[i0] + (s - i0) * grad[min(len(grad) - 1, i0 + 1)]


def test_task_arithmetic_f32(zoo, tmp_path, mounter):
    text = recipe(zoo, "task_arithmetic", "{weight: 0.7}", "{weight: [0.2, 0.5]}",
                  "dtype: float32\nout_dtype: bfloat16\n")
    got, _ = merged(tmp_path, text, mounter)
    b, m1, m2 = load(zoo["base"]), load(zoo["m1"]), load(zoo["m2"])
    for n in b:
        bb, x1, x2 = f32(b[n]), f32(m1[n]), f32(m2[n])
        w2 = F32(layer_w(n, [0.2, 0.5]))
        want = H.f32_to_bf16((bb + (F32(0.7) * (x1 - bb) + w2 * (x2 - bb))).astype(F32))
        assert (got[n].view(np.uint16).ravel() == want).all(), n


def _ties_like(method, b, xs, ws, ds, gamma=0.01, normalize=None):
    """docs/merges.md's ties/breadcrumbs in float32, every element tied at a threshold kept."""
    n = b.size
    wds = []
    for x, w, dens in zip(xs, ws, ds):
        d = (x - b).astype(F32)
        a = np.abs(d)
        s = np.sort(a)
        if method.startswith("ties"):
            keep = a >= s[n - max(1, int(dens * n))]
        else:
            target, top = int(n * dens), int(n * gamma)
            bot = max(n - target - top, 0)
            keep = a >= s[bot]
            if bot + target < n:
                keep &= a < s[bot + target]
        wds.append((F32(w) * np.where(keep, d, F32(0))).astype(F32))
    consensus = method in ("ties", "breadcrumbs_ties")
    if consensus:
        tot = F32(0) + wds[0]
        for wd in wds[1:]:
            tot = (tot + wd).astype(F32)
        plus = tot >= 0
        mixed = np.zeros(n, F32)
        div = np.zeros(n, F32)
        for wd, w in zip(wds, ws):
            k = np.where(plus, wd > 0, wd < 0)
            mixed = (mixed + np.where(k, wd, F32(0))).astype(F32)
            div = (div + np.where(k, F32(w), F32(0))).astype(F32)
        div = np.where(div == 0, F32(1), div)
    else:
        mixed = np.zeros(n, F32)
        for wd in wds:
            mixed = (mixed + wd).astype(F32)
        div = F32(sum(F32(w) for w in ws))
    if normalize if normalize is not None else method == "ties":
        mixed = (mixed / div).astype(F32)
    return (b + mixed).astype(F32)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs", "breadcrumbs_ties"])
def test_sparsifying_methods(zoo, tmp_path, method):
    text = recipe(zoo, method, "{weight: 0.7, density: 0.5, gamma: 0.05}", "{weight: 0.3, density: 0.3}",
                  "dtype: float32\n")
    got, _ = merged(tmp_path, text)
    b, m1, m2 = load(zoo["base"]), load(zoo["m1"]), load(zoo["m2"])
    for n in b:
        want = _ties_like(method, f32(b[n]), [f32(m1[n]), f32(m2[n])], [0.7, 0.3], [0.5, 0.3],
                          gamma=None or 0.01)
        if method != "ties":
            # per-model gamma: m1 0.05, m2 the default 0.01
            bb = f32(b[n])
            xs = [f32(m1[n]), f32(m2[n])]
            want = _breadcrumbs_pm(method, bb, xs)
        g = got[n].view(np.uint32).ravel()
        assert (g == want.view(np.uint32)).all(), (n, int((g != want.view(np.uint32)).sum()))


def test_inspect_numbers(zoo, tmp_path, refuser):
    """inspect --numbers computes each tensor's whole-tensor numbers: ties's kept
    magnitude is the k-th largest |delta| of the tensor; breadcrumbs's band is
    [sorted[bot], sorted[bot + target]); a model at density 1 keeps all."""
    b, m1, m2 = load(zoo["base"]), load(zoo["m1"]), load(zoo["m2"])
    name = "model.layers.1.mlp.up_proj.weight"
    for method in ("ties", "breadcrumbs"):
        text = recipe(zoo, method, "{weight: 0.7, density: 0.5, gamma: 0.05}", "{weight: 0.3, density: 1}",
                      "dtype: float32\n")
        cfg = write(tmp_path, text, f"{method}.yml")
        r = H.run(["inspect", "--config", cfg, "--numbers", "--json"])
        assert r.returncode == 0, r
        t = [x for x in json.loads(r.stdout)["tensors"] if x["name"] == name][0]["merge"]
        s = np.sort(np.abs((f32(m1[name]) - f32(b[name])).astype(F32)))
        n = s.size
        if method == "ties":
            assert t["kept_abs_delta"] == [{"min": float(s[n - int(0.5 * n)])}, None], t
        else:
            target, top = int(n * 0.5), int(n * 0.05)
            bot = n - target - top
            assert t["kept_abs_delta"] == [{"min": float(s[bot]), "below": float(s[bot + target])}, None], t
        r = H.run(["inspect", "--config", cfg, "--numbers"])
        assert r.returncode == 0 and "kept|d|=" in r.stdout, r
        r = H.run(["inspect", "--config", cfg])
        assert r.returncode == 0 and "kept|d|=" not in r.stdout, "computed only when asked"
    text = recipe(zoo, "dare_linear", "{weight: 0.7, density: 0.5}", "{weight: 0.3, density: 0.8}")
    r = H.run(["inspect", "--config", write(tmp_path, text, "dare.yml"), "--numbers", "--json"])
    assert r.returncode == 0, r
    t = [x for x in json.loads(r.stdout)["tensors"] if x["name"] == name][0]["merge"]
    assert len(t["l1_rescale"]) == 2 and all(x > 1 for x in t["l1_rescale"]), t
    r = H.run(["inspect", zoo["base"], "--numbers"])
    assert r.returncode == 2 and "--numbers goes with --config" in r.stderr, r


def _breadcrumbs_pm(method, b, xs):
    n = b.size
    wds = []
    for x, w, dens, gamma in zip(xs, [0.7, 0.3], [0.5, 0.3], [0.05, 0.01]):
        d = (x - b).astype(F32)
        a = np.abs(d)
        s = np.sort(a)
        target, top = int(n * dens), int(n * gamma)
        bot = max(n - target - top, 0)
        keep = a >= s[bot]
        if bot + target < n:
            keep &= a < s[bot + target]
        wds.append((F32(w) * np.where(keep, d, F32(0))).astype(F32))
    if method == "breadcrumbs_ties":
        tot = (wds[0] + wds[1]).astype(F32)
        plus = tot >= 0
        mixed = np.zeros(n, F32)
        for wd in wds:
            mixed = (mixed + np.where(np.where(plus, wd > 0, wd < 0), wd, F32(0))).astype(F32)
    else:
        mixed = (wds[0] + wds[1]).astype(F32)
    return (b + mixed).astype(F32)


def test_concurrent_first_reads(zoo, tmp_path, mounter):
    """Many threads read a fresh ties mount at once: the whole-tensor numbers are computed
    once per tensor while the others wait, and every read equals the export."""
    text = recipe(zoo, "ties", "{weight: 0.5, density: 0.4}", "{weight: 0.5, density: 0.6}",
                  "dtype: float32\nout_dtype: bfloat16\n")
    cfg = write(tmp_path, text)
    out = str(tmp_path / "exp")
    export(["--config", cfg], out)
    mp = mounter.mount("--config", cfg)
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            H.concurrent_preads(os.path.join(mp, f), H.read_file(os.path.join(out, f)), nthreads=8,
                                per_thread=30)
    errors = []

    def whole(f):
        try:
            if H.read_file(os.path.join(mp, f)) != H.read_file(os.path.join(out, f)):
                errors.append(f)
        except OSError as e:
            errors.append(f"{f}: {e}")
    ts = [threading.Thread(target=whole, args=(f,)) for f in os.listdir(out) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_dare_and_slerp_run_and_repeat(zoo, tmp_path, mounter):
    """dare: the same bytes from the mount and the export (another process, another read
    order); slerp: the formula of docs/merges.md, within one ulp (double sums)."""
    text = recipe(zoo, "dare_ties", "{weight: 0.5, density: 0.5}", "{weight: 0.5, density: 0.7}",
                  "random_seed: 7\n")
    a, cfg = merged(tmp_path, text, mounter)
    out = str(tmp_path / "dare-out")
    export(["--config", cfg], out)
    b = load(out)
    assert all((a[n] == b[n]).all() for n in a)
    s = (f"merge_method: slerp\nbase_model: {zoo['m1']}\nmodels:\n  - model: {zoo['m1']}\n"
         f"  - model: {zoo['m2']}\nparameters:\n  t: 0.3\ndtype: float32\n")
    got, _ = merged(tmp_path, s)
    m1, m2 = load(zoo["m1"]), load(zoo["m2"])
    exact = total = 0
    for n in m1:
        x, y, g = f32(m1[n]), f32(m2[n]), np.asarray(got[n], F32).ravel()
        # docs/merges.md: norms and cosine over the tensor (in double here and in residfs)
        na, nb = np.sqrt((x.astype(np.float64) ** 2).sum()), np.sqrt((y.astype(np.float64) ** 2).sum())
        dot = (x.astype(np.float64) * y).sum() / (na * nb)
        t = float(F32(0.3))  # mergekit takes t as a float32
        if abs(dot) > 0.9995:
            ca, cb = F32(1) - F32(t), F32(t)
        else:
            th = np.arccos(dot)
            ca, cb = F32(np.sin((1 - t) * th) / np.sin(th)), F32(np.sin(t * th) / np.sin(th))
        want = ((ca * x).astype(F32) + (cb * y).astype(F32)).astype(F32)
        ulps = np.abs(g.view(np.int32).astype(np.int64) - want.view(np.int32))
        assert ulps.max() <= 1, (n, int(ulps.max()))
        exact += int((ulps == 0).sum())
        total += g.size
    assert exact >= total * 0.999, (exact, total)


def test_recipe_files_and_inspect(zoo, tmp_path):
    text = recipe(zoo, "task_arithmetic", "{weight: 0.5}", "{weight: 0.5}", "out_dtype: float16\n")
    cfg = write(tmp_path, text)
    r = H.run(["inspect", "--config", cfg, "--json"])
    assert r.returncode == 0, r
    js = json.loads(r.stdout)
    assert js["mode"] == "merge" and js["merge_method"] == "task_arithmetic"
    names = [f["name"] for f in js["files"]]
    assert "mergekit_config.yml" in names and "README.md" in names and "config.json" in names
    t = [x for x in js["tensors"] if x["name"] == "model.layers.1.mlp.up_proj.weight"][0]
    assert t["dtype"] == "F16" and t["merge"]["weight"] == [0.5, 0.5], t
    out = str(tmp_path / "o")
    export(["--config", cfg], out)
    assert open(os.path.join(out, "mergekit_config.yml")).read() == text
    assert json.load(open(os.path.join(out, "config.json")))["torch_dtype"] == "float16"


@pytest.mark.parametrize("text,names", [
    ("merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {m1}\n", ["models[0]", "no weight"]),
    ("merge_method: slerp\nbase_model: {base}\nmodels:\n  - model: {m1}\n  - model: {m2}\nparameters: {{t: 0.5}}\n",
     ["slerp merges exactly two models"]),
    ("merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {m1}\n    parameters: {{weight: 1, density: 0}}\n",
     ["density", "outside (0, 1]"]),
    ("merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {root}/nope\n    parameters: {{weight: 1}}\n",
     ["nope"]),
])
def test_bad_recipes(zoo, tmp_path, refuser, text, names):
    cfg = write(tmp_path, text.format(**zoo))
    refuser.refuse("--config", cfg, names=names)


def test_tokenizer_source_with_one_vocabulary(zoo, tmp_path):
    """tokenizer_source aligns rows by token; with the base's tokenizer everywhere that
    changes nothing, and the merge is the plain one."""
    plain = recipe(zoo, "task_arithmetic", "{weight: 0.5}", "{weight: 0.5}", "dtype: float32\n")
    a, _ = merged(tmp_path, plain)
    for src in ("base", "union"):
        cfg = write(tmp_path, plain + f"tokenizer_source: {src}\n", f"{src}.yml")
        out = str(tmp_path / f"out-{src}")
        export(["--config", cfg], out)
        b = load(out)
        assert all((a[n] == b[n]).all() for n in a), src


def _permuted_vocab_model(zoo, root, name, new_words, seed):
    """A fine-tune of the base whose tokenizer orders the words differently: the
    specials at 0..2, tok3..tok511 in reverse, then @new_words; its
    vocabulary rows are the base's rows of the same words plus noise, new rows random."""
    rng = np.random.default_rng(seed)
    b = load(zoo["base"])
    V = b["model.embed_tokens.weight"].shape[0]
    order = [0, 1, 2] + list(range(V - 1, 2, -1))      # its id -> the base's id
    tensors = {}
    for n, a in b.items():
        x = f32(a).reshape(a.shape)
        if n in ("model.embed_tokens.weight", "lm_head.weight"):
            x = np.concatenate([x[order], rng.normal(0, 0.02, (len(new_words), x.shape[1])).astype(F32)])
        x = x + rng.normal(0, 0.01, x.shape).astype(F32)
        tensors[n] = H.T.from_f32("BF16", list(x.shape), x.astype(F32).ravel())
    cfg = H.llama_config(V + len(new_words), 64, 128, LAYERS, 32, False, "BF16")
    path = H.write_model(os.path.join(root, name), tensors, cfg, nshards=1, flavour="base").path
    tj = json.load(open(os.path.join(path, "tokenizer.json")))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"tok{order[i]}": i for i in range(3, V)})
    vocab.update({w: V + i for i, w in enumerate(new_words)})
    tj["model"]["vocab"] = vocab
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    return path, order


def _mm_name(n):
    """A Llama tensor's name in a multimodal checkpoint's language model (Gemma-3 style)."""
    return "language_model." + n


def _as_multimodal(src, dst):
    """@src rewritten as a multimodal checkpoint's language model: tensors under
    language_model., the vocabulary size only in config.json's text_config."""
    t = load(src)
    cfg = json.load(open(os.path.join(src, "config.json")))
    tensors = {_mm_name(n): H.T.from_f32("BF16", list(a.shape), f32(a)) for n, a in t.items()}
    cfg["text_config"] = {"vocab_size": cfg.pop("vocab_size"), "model_type": "llama"}
    path = H.write_model(dst, tensors, cfg, nshards=1, flavour="base").path
    shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(path, "tokenizer.json"))
    return path


@pytest.mark.parametrize("layout", ["llama", "multimodal"])
def test_tokenizer_union_rows_by_token(zoo, tmp_path, mounter, layout):
    """tokenizer_source: union over a model whose tokenizer moves every word and adds
    four: the base's ids first, the new words appended; each model's rows taken by
    token; a row a model lacks is the only model's that has it (docs/merges.md).  The
    same with the names and config of a multimodal checkpoint (language_model.*,
    text_config.vocab_size)."""
    new = ["new0", "new1", "new2", "new3"]
    m3, order = _permuted_vocab_model(zoo, str(tmp_path), "m3", new, 5)
    dirs = {"base": zoo["base"], "m1": zoo["m1"], "m3": m3}
    name = (lambda n: n) if layout == "llama" else _mm_name
    if layout == "multimodal":
        dirs = {k: _as_multimodal(d, str(tmp_path / f"mm-{k}")) for k, d in dirs.items()}
    text = (f"merge_method: task_arithmetic\nbase_model: {dirs['base']}\nmodels:\n"
            f"  - model: {dirs['m1']}\n    parameters: {{weight: 0.7}}\n"
            f"  - model: {dirs['m3']}\n    parameters: {{weight: 0.4}}\n"
            "tokenizer_source: union\ndtype: float32\nout_dtype: bfloat16\n")
    got, _ = merged(tmp_path, text, mounter)
    b, m1, x3 = load(zoo["base"]), load(zoo["m1"]), load(m3)
    V = b["model.embed_tokens.weight"].shape[0]
    inv = {o: i for i, o in enumerate(order)}            # the base's id -> m3's id
    for n in b:
        bb, x1, y = f32(b[n]), f32(m1[n]), f32(x3[n])
        if n in ("model.embed_tokens.weight", "lm_head.weight"):
            h = b[n].shape[1]
            y = y.reshape(V + len(new), h)
            yp = np.concatenate([y[[inv[i] for i in range(V)]], y[V:]])
            # the new words: only m3 has them, every input takes its row
            bb = np.concatenate([bb.reshape(V, h), y[V:]]).ravel()
            x1 = np.concatenate([x1.reshape(V, h), y[V:]]).ravel()
            y = yp.ravel()
        want = H.f32_to_bf16((bb + (F32(0.7) * (x1 - bb) + F32(0.4) * (y - bb))).astype(F32))
        g = got[name(n)]
        assert g.size == want.size and (g.view(np.uint16).ravel() == want).all(), n
    if layout == "multimodal":
        out = str(tmp_path / "out")
        export(["--config", write(tmp_path, text, "u.yml")], out)
        cfg = json.load(open(os.path.join(out, "config.json")))
        assert cfg["text_config"]["vocab_size"] == V + len(new) and "vocab_size" not in cfg, cfg
        return
    out = str(tmp_path / "out")
    export(["--config", write(tmp_path, text, "u.yml")], out)
    assert json.load(open(os.path.join(out, "config.json")))["vocab_size"] == V + len(new)
    tj = json.load(open(os.path.join(out, "tokenizer.json")))
    added = {a["content"]: a for a in tj["added_tokens"]}
    assert [added[w]["id"] for w in new] == list(range(V, V + len(new)))
    assert not any(added[w]["special"] for w in new) and all(added[w]["normalized"] for w in new)
    assert tj["model"] == json.load(open(os.path.join(zoo["base"], "tokenizer.json")))["model"]


@pytest.mark.parametrize("mutate,names", [
    (lambda t: t["model"].pop("vocab"), ["tokenizer.json", "no model.vocab"]),
    (lambda t: t["model"]["vocab"].update({"tok5": "five"}), ["tok5", "not a number"]),
    (lambda t: t["model"]["vocab"].update({"tok5": -1}), ["tok5", "whole number"]),
    (lambda t: t["model"]["vocab"].update({"big": 2 ** 40}), ["big", "whole number"]),
    (lambda t: t["added_tokens"].append({"id": 3}), ["added token without an id or content"]),
    (lambda t: t.update({"added_tokens": {"a": 1}}), ["added_tokens is not a list"]),
    # ids that tokenizers would not give: the file's rows would not be its tokens
    (lambda t: t["added_tokens"].append({"id": 700, "content": "<x>"}), ["'<x>' says id 700", "gives it id 512"]),
    (lambda t: t["added_tokens"].append({"id": 3, "content": "tok9"}), ["'tok9' says id 3", "gives it id 9"]),
    (lambda t: t["model"]["vocab"].update({"a\u0000b": 600}), ["NUL"]),
    (lambda t: t["model"]["vocab"].update({"dup5": 5}), ["id 5 is both"]),
    # 300k keys at the top: checked for duplicates in linear time (pairwise took 33 s
    # for 100k, so this one would pass the 60 s limit), then refused for its vocab
    (lambda t: t.update({f"k{i}": 0 for i in range(300000)}, model={**t["model"],
                                                               "vocab": {"tok5": "five"}}),
     ["tok5", "not a number"]),
])
def test_tokenizer_source_hostile_tokenizers(zoo, tmp_path, refuser, mutate, names):
    """A model's tokenizer.json is read only to align by: anything malformed is refused
    before mounting, naming the file."""
    m = str(tmp_path / "bad")
    shutil.copytree(zoo["m2"], m)
    tj = json.load(open(os.path.join(m, "tokenizer.json")))
    mutate(tj)
    with open(os.path.join(m, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    text = recipe(zoo, "task_arithmetic", "{weight: 0.5}", "{weight: 0.5}", "tokenizer_source: union\n")
    cfg = write(tmp_path, text.replace(zoo["m2"], m))
    refuser.refuse("--config", cfg, names=[m + "/tokenizer.json"] + names)


@pytest.mark.parametrize("cfg_update,names", [
    ({"pad_token": "<pad>"}, ["pad_token", "'<pad>'", "tokenizer.json lacks"]),
    ({"additional_special_tokens": ["<|im_start|>"]}, ["additional_special_tokens", "<|im_start|>"]),
    ({"added_tokens_decoder": {"5": {"content": "<s>", "special": True}}},
     ["added_tokens_decoder puts '<s>' at id 5", "at 1"]),
])
def test_tokenizer_config_special_tokens_checked(zoo, tmp_path, refuser, cfg_update, names):
    """Special tokens that tokenizer_config.json names and tokenizer.json lacks would be
    added by transformers at load, at ids of its own: such a model is refused."""
    m = str(tmp_path / "m")
    shutil.copytree(zoo["m2"], m)
    cfg = json.load(open(os.path.join(m, "tokenizer_config.json")))
    cfg.update(cfg_update)
    with open(os.path.join(m, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    text = recipe(zoo, "task_arithmetic", "{weight: 0.5}", "{weight: 0.5}", "tokenizer_source: union\n")
    refuser.refuse("--config", write(tmp_path, text.replace(zoo["m2"], m)),
                   names=[m + "/tokenizer_config.json"] + names)


def test_unknown_vocabulary_tensor_refused(zoo, tmp_path, refuser):
    """A tensor with a row per token that residfs does not know to align (here
    'model.output_proj.weight') is refused when the vocabularies differ, never merged
    row for row."""
    m3, _ = _permuted_vocab_model(zoo, str(tmp_path), "m3", ["new0"], 6)
    dirs = {}
    for k, d in (("base", zoo["base"]), ("m3", m3)):
        t = {n: H.T.from_f32("BF16", list(a.shape), f32(a)) for n, a in load(d).items()}
        V = t["model.embed_tokens.weight"].shape[0]
        t["model.output_proj.weight"] = H.T.from_f32("BF16", [V, 8], np.zeros(V * 8, F32))
        cfg = json.load(open(os.path.join(d, "config.json")))
        dirs[k] = H.write_model(str(tmp_path / f"x-{k}"), t, cfg, nshards=1, flavour="base").path
        shutil.copy(os.path.join(d, "tokenizer.json"), os.path.join(dirs[k], "tokenizer.json"))
    text = (f"merge_method: task_arithmetic\nbase_model: {dirs['base']}\nmodels:\n"
            f"  - model: {dirs['m3']}\n    parameters: {{weight: 0.5}}\ntokenizer_source: union\n")
    refuser.refuse("--config", write(tmp_path, text), names=["model.output_proj.weight", "row per token"])


def test_tokenizer_source_base_with_padding_tokens(zoo, tmp_path, refuser):
    """A base whose tokenizer has tokens past its config's vocab_size: mergekit strips
    them from its tokenizer; residfs refuses, saying so."""
    bdir = str(tmp_path / "base")
    shutil.copytree(zoo["base"], bdir)
    tj = json.load(open(os.path.join(bdir, "tokenizer.json")))
    tj["added_tokens"].append({"id": 512, "content": "<pad>", "special": True})
    with open(os.path.join(bdir, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    text = recipe(zoo, "task_arithmetic", "{weight: 0.5}", "{weight: 0.5}", "tokenizer_source: base\n")
    cfg = write(tmp_path, text.replace(zoo["base"], bdir))
    refuser.refuse("--config", cfg, names=["vocab_size 512", "512..512", "does not strip"])


def test_config_and_spec_do_not_mix(zoo, tmp_path, refuser):
    cfg = write(tmp_path, recipe(zoo, "task_arithmetic", "{weight: 1}", "{weight: 1}"))
    r = H.run(["inspect", "--config", cfg, f"{zoo['base']}+{zoo['m1']}"])
    assert r.returncode == 2 and "--config FILE: expected no other argument" in r.stderr, r
    r = H.run(["inspect", f"{zoo['base']}+{zoo['m1']}", "--random-seed", "3"])
    assert r.returncode == 2 and "--random-seed goes with --config" in r.stderr, r
