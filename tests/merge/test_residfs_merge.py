"""residfs mounts of mergekit recipes against mergekit 0.1.5's own output.

The models and recipes are tests/merge/mkmerge.py's (tiny Llamas, bf16 and float32,
sharded); mergekit runs each recipe once per session in process.  residfs mounts the
same recipe (`residfs mount --config`), and every tensor read through the mount is
compared with what mergekit wrote:

- task_arithmetic (float32 and bfloat16 compute), linear (float32 and bf16), and a
  recipe of gradients and filters: equal bit for bit;
- slerp: within one unit in the last place (mergekit's coefficients come from torch's
  float32 reductions and MKL's acos; residfs computes them in double): the test
  reports how many elements differ;
- ties and breadcrumbs: equal at every element where no model's |delta| equals a
  threshold of its tensor; the rest (the tie set) is counted and shown to be the only
  difference;
- dare: mergekit's random stream is torch's; residfs's mask is a hash of (seed, tensor,
  model, element).  The kept fraction is within binomial bounds, the L1 rescale is exact,
  and the bytes are the same on every mount, read order and seed, and change with it;
- transformers loads the mount, and its logits equal those of mergekit's output;
- bad recipes are refused before mounting, naming the key, model and tensor.

Run with tests/merge/run.sh (the environment of tests/requirements-merge.txt).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import mkmerge as M  # noqa: E402
import rfsproc as P  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")
F32 = np.float32


# ---- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def binary():
    b = P.residfs_bin()
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"residfs binary not found at {b}: build it or set RESIDFS_BIN")
    return b


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    root = os.environ.get("RESIDFS_MERGE_ZOO") or str(tmp_path_factory.mktemp("zoo"))
    return M.build_zoo(root)


@pytest.fixture(scope="session")
def merges(zoo, tmp_path_factory):
    return M.Merges(zoo, str(tmp_path_factory.mktemp("merged")))


class Mounts:
    """residfs mounts of recipes, one per (recipe, args); unmounted at the end."""

    def __init__(self, root):
        self.root, self.mps, self.done = root, [], {}

    def __call__(self, name, text, *args):
        key = (name, args)
        if key in self.done:
            return self.done[key]
        n = len(self.mps)
        cfg = os.path.join(self.root, f"{name}-{n}.yml")
        with open(cfg, "w") as f:
            f.write(text)
        mp = os.path.join(self.root, f"mnt-{name}-{n}")
        os.makedirs(mp)
        self.mps.append(mp)
        r = P.run(["mount", "--config", cfg, *args, mp], timeout=120)
        assert r.returncode == 0, f"mount failed: {r}"
        assert P.is_mounted(mp), r
        self.done[key] = mp
        return mp

    def close(self):
        return [mp for mp in self.mps if not P.unmount(mp)]


@pytest.fixture(scope="session")
def mounts(binary, tmp_path_factory):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: cannot mount")
    m = Mounts(str(tmp_path_factory.mktemp("mounts")))
    yield m
    assert not m.close(), "could not unmount"


def both(mounts, merges, zoo, name):
    """(residfs tensors, dtypes), (mergekit tensors, dtypes), as raw bits (bf16 as uint16)."""
    mp = mounts(name, M.recipe(name, zoo))
    out, _ = merges(name)
    return M.read_model(mp, raw=True), M.read_model(out, raw=True), mp, out


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint16 if a.dtype in (np.uint16, np.float16) else np.uint32).ravel()


def as_f32(a, dt):
    return M.bf16_to_f32(a).ravel() if dt == "BF16" else np.asarray(a, dtype=F32).ravel()


# ---- bit for bit ---------------------------------------------------------------------

EXACT = ["task_arithmetic_f32", "task_arithmetic_bf16", "linear", "linear_bf16", "gradient_filters"]


@pytest.mark.parametrize("name", EXACT)
def test_equal_to_mergekit(mounts, merges, zoo, name):
    (got, gdt), (want, wdt), _, _ = both(mounts, merges, zoo, name)
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    for t in want:
        assert gdt[t] == wdt[t], (t, gdt[t], wdt[t])
        assert got[t].shape == want[t].shape, (t, got[t].shape, want[t].shape)
        diff = int((bits(got[t]) != bits(want[t])).sum())
        assert diff == 0, f"{name}: tensor '{t}': {diff} of {want[t].size} elements differ"


def test_export_equals_mount(mounts, zoo, tmp_path):
    """residfs export --config writes the bytes the mount shows, every file."""
    name = "task_arithmetic_f32"
    mp = mounts(name, M.recipe(name, zoo))
    cfg = tmp_path / "r.yml"
    cfg.write_text(M.recipe(name, zoo))
    out = str(tmp_path / "out")
    r = P.run(["export", "--config", str(cfg), out, "--quiet"], timeout=300)
    assert r.returncode == 0, r
    assert sorted(os.listdir(out)) == sorted(os.listdir(mp))
    for f in os.listdir(out):
        with open(os.path.join(out, f), "rb") as a, open(os.path.join(mp, f), "rb") as b:
            assert a.read() == b.read(), f


def test_mount_files(mounts, merges, zoo):
    """What mergekit writes besides the tensors: mergekit_config.yml as given, config.json's
    dtype, the base's tokenizer files, a model card with mergekit's front matter."""
    name = "task_arithmetic_f32"
    text = M.recipe(name, zoo)
    mp = mounts(name, text)
    files = set(os.listdir(mp))
    assert {"config.json", "mergekit_config.yml", "README.md", "tokenizer.json",
            "tokenizer_config.json"} <= files, files
    with open(os.path.join(mp, "mergekit_config.yml")) as f:
        assert f.read() == text
    with open(os.path.join(mp, "config.json")) as f:
        cfg = json.load(f)
    assert cfg.get("torch_dtype", cfg.get("dtype")) == "bfloat16", cfg
    with open(os.path.join(mp, "README.md")) as f:
        card = f.read()
    front = card.split("---\n")[1]
    assert "base_model:" in front and "- mergekit" in front and "- merge" in front, card
    assert "library_name: transformers" in front, card
    assert "task_arithmetic" in card and text in card, card
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(mp, fn), "rb") as a, open(os.path.join(zoo["base_bf16"], fn), "rb") as b:
            assert a.read() == b.read(), fn


# ---- slerp: within one ulp -------------------------------------------------------------

def test_slerp_within_one_ulp(mounts, merges, zoo, capsys):
    (got, gdt), (want, wdt), _, _ = both(mounts, merges, zoo, "slerp")
    total = differ = 0
    for t in want:
        assert gdt[t] == wdt[t]
        g, w = bits(got[t]).astype(np.int64), bits(want[t]).astype(np.int64)
        # same sign: the bit patterns' distance is the distance in ulps
        d = np.abs(g - w)
        assert d.max(initial=0) <= 1, f"tensor '{t}' differs by {d.max()} ulp"
        total += w.size
        differ += int((d != 0).sum())
    with capsys.disabled():
        print(f"\nslerp: {differ} of {total} elements differ from mergekit by one ulp")
    assert differ <= total // 100


# ---- ties and breadcrumbs: equal outside the tie set ----------------------------------

def _delta(x, b, cdt):
    d = (x - b).astype(F32)
    return M.bf16_to_f32(_bf16_bits(d)) if cdt == "BF16" else d


def _bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=F32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def tie_set(text, zoo, tensor, base, models, n_layers):
    """Elements of @tensor where some model's |delta| equals one of its thresholds (the
    only place residfs may differ from mergekit: which tied elements a sort keeps)."""
    import yaml
    cfg = yaml.safe_load(text)
    method = cfg["merge_method"]
    cdt = "F32" if cfg.get("dtype") == "float32" else "BF16"
    tied = np.zeros(base.size, bool)
    for i, m in enumerate(cfg["models"]):
        prm = m.get("parameters") or {}
        dens = param_value(prm.get("density", 1.0), tensor, n_layers)
        gamma = param_value(prm.get("gamma", 0.01), tensor, n_layers)
        a = np.abs(_delta(models[i], base, cdt))
        s = np.sort(a)
        n = a.size
        if method == "ties" or method == "dare_ties":
            if dens >= 1:
                continue
            k = max(1, int(dens * n))
            tied |= a == s[n - k]
        else:
            if dens >= 1:
                continue
            target, top = int(n * dens), int(n * gamma)
            bot = max(0, n - target - top)
            if target:
                tied |= a == s[bot]
                if bot + target < n:
                    tied |= a == s[bot + target]
    return tied


def param_value(v, tensor, n_layers):
    """mergekit's value of a parameter for @tensor (filters, gradients)."""
    import re
    if isinstance(v, list) and v and isinstance(v[0], dict):
        for c in v:
            f = c.get("filter")
            if f in (None, "*") or f in tensor:
                return param_value(c["value"], tensor, n_layers)
        return None
    if isinstance(v, list):
        mo = re.search(r"\.layers\.(\d+)\.", tensor)
        t = 0.0 if not mo else (1.0 if n_layers == 1 else int(mo.group(1)) / (n_layers - 1))
        s = t * (len(v) - 1)
        i0 = int(s)
        f = s - i0
        return (1 - f) * v[i0] + f * v[min(len(v) - 1, i0 + 1)]
    return float(v)


@pytest.mark.parametrize("name", ["ties", "ties_f32", "breadcrumbs", "breadcrumbs_ties", "ties_gradient"])
def test_equal_outside_the_tie_set(mounts, merges, zoo, name, capsys):
    import yaml
    text = M.recipe(name, zoo)
    cfg = yaml.safe_load(text)
    (got, gdt), (want, wdt), _, _ = both(mounts, merges, zoo, name)
    base_t, _ = M.read_model(cfg["base_model"])
    model_t = [M.read_model(m["model"])[0] for m in cfg["models"]]
    total = differ = tied_n = 0
    for t in want:
        assert gdt[t] == wdt[t]
        g, w = bits(got[t]), bits(want[t])
        diff = g != w
        if not diff.any() and not np.issubdtype(want[t].dtype, np.floating) and wdt[t] != "BF16":
            continue
        b = base_t[t].astype(F32).ravel()
        ms = [m[t].astype(F32).ravel() for m in model_t]
        tied = tie_set(text, zoo, t, b, ms, M.LAYERS)
        outside = diff & ~tied
        assert not outside.any(), (f"{name}: tensor '{t}': {int(outside.sum())} elements differ "
                                   f"where no |delta| is tied at a threshold")
        total += w.size
        differ += int(diff.sum())
        tied_n += int(tied.sum())
    with capsys.disabled():
        print(f"\n{name}: {differ} of {total} elements differ from mergekit, all of them among "
              f"the {tied_n} whose |delta| is tied at a threshold")


# ---- dare -------------------------------------------------------------------------------

def _dare_recipe(zoo, density, rescale, seed=None):
    return (f"merge_method: dare_linear\nbase_model: {zoo['base_f32']}\nmodels:\n"
            f"  - model: {zoo['ft1_f32']}\n    parameters: {{weight: 1.0, density: {density}}}\n"
            f"parameters:\n  rescale: {'true' if rescale else 'false'}\n"
            + (f"random_seed: {seed}\n" if seed is not None else ""))


def test_dare_kept_fraction_and_rescale(mounts, zoo):
    """One model, weight 1: out = b + mask*d (no rescale), so the mask can be read back.
    Its kept fraction is within 5 sigma of density for every tensor and overall; with
    rescale, every kept delta is multiplied by exactly sum|d| / sum|kept d|."""
    p = 0.3
    base, _ = M.read_model(zoo["base_f32"])
    ft, _ = M.read_model(zoo["ft1_f32"])
    plain, _ = M.read_model(mounts("dare-p", _dare_recipe(zoo, p, False)))
    resc, _ = M.read_model(mounts("dare-r", _dare_recipe(zoo, p, True)))
    kept_all = n_all = 0
    for t in base:
        b, x = base[t].astype(F32).ravel(), ft[t].astype(F32).ravel()
        d = (x - b).astype(F32)
        o = plain[t].astype(F32).ravel()
        bd = (b + d).astype(F32)
        live = bd != b          # elements whose keeping shows in the output
        kept = (o == bd) & live
        dropped = (o == b) & live
        assert (kept | dropped | ~live).all(), f"tensor '{t}': an element is neither kept nor dropped"
        n = int(live.sum())
        k = int(kept.sum())
        if n > 1000:
            assert abs(k - p * n) <= 5 * np.sqrt(n * p * (1 - p)), (t, k, n)
        kept_all += k
        n_all += n
        # rescale: sum|d| / sum|kept d| in float32, applied to every kept element
        keptd = kept | (~live & (d != 0) & (o == bd))  # kept, though it does not show
        before = F32(np.abs(d).sum(dtype=np.float64))
        r = resc[t].astype(F32).ravel()
        # the scale is one number per tensor: recover it from one kept element, check all
        idx = np.flatnonzero(kept & (np.abs(d) > 1e-3))
        if not idx.size:
            continue
        scale = None
        for cand in (F32(before / F32(np.abs(d[keptd]).sum(dtype=np.float64))),):
            w = (b + np.where(kept, (d * cand).astype(F32), F32(0))).astype(F32)
            if (r[live] == w[live]).all():
                scale = cand
        assert scale is not None, f"tensor '{t}': kept deltas are not all scaled by sum|d|/sum|kept d|"
    assert abs(kept_all - p * n_all) <= 5 * np.sqrt(n_all * p * (1 - p)), (kept_all, n_all)


def test_dare_same_bytes_any_order_and_seed(mounts, zoo, tmp_path):
    """The mask does not depend on read order or on the mount; it depends on the seed."""
    a = mounts("dare-s1", _dare_recipe(zoo, 0.5, True, seed=1))
    b = mounts("dare-s1b", _dare_recipe(zoo, 0.5, True), "--random-seed", "1")
    c = mounts("dare-s2", _dare_recipe(zoo, 0.5, True, seed=2))
    files = sorted(f for f in os.listdir(a) if f.endswith(".safetensors"))
    for f in files:
        pa, pb = os.path.join(a, f), os.path.join(b, f)
        size = os.path.getsize(pa)
        # b read backwards in 4 KiB pieces, a forwards
        with open(pa, "rb") as fa:
            da = fa.read()
        chunks = []
        with open(pb, "rb") as fb:
            for off in range((size - 1) // 4096 * 4096, -1, -4096):
                chunks.append(os.pread(fb.fileno(), 4096, off))
        assert b"".join(reversed(chunks)) == da, f
    ta, _ = M.read_model(a)
    tc, _ = M.read_model(c)
    assert any((ta[t] != tc[t]).any() for t in ta), "another seed gave the same mask"


# ---- transformers loads the mount ---------------------------------------------------------

@pytest.mark.parametrize("name", ["task_arithmetic_f32", "linear"])
def test_transformers_logits_equal(mounts, merges, zoo, name):
    import torch
    from transformers import AutoModelForCausalLM
    mp = mounts(name, M.recipe(name, zoo))
    out, _ = merges(name)
    ids = torch.tensor([[1, 5, 9, 17, 33, 65, 2]])
    logits = []
    for d in (mp, out):
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        with torch.no_grad():
            logits.append(m(ids).logits)
    assert torch.equal(logits[0], logits[1])


# ---- bad recipes ----------------------------------------------------------------------------

def refuse(tmp_path, text, *names):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    mp = tmp_path / "mp"
    mp.mkdir(exist_ok=True)
    r = P.run(["mount", "--config", str(cfg), str(mp)], timeout=60)
    assert r.returncode != 0 and not P.is_mounted(str(mp)), r
    assert "residfs: error:" in r.stderr, r
    for n in names:
        assert n in r.stderr, f"the error does not name {n!r}: {r}"
    return r


def test_bad_recipes_refused(zoo, tmp_path, binary):
    base, ft1 = zoo["base_bf16"], zoo["ft1_bf16"]
    head = f"base_model: {base}\nmodels:\n  - model: {ft1}\n"
    refuse(tmp_path, "merge_method: model_stock\n" + head, "model_stock", "not supported")
    refuse(tmp_path, "merge_method: frobnicate\n" + head, "frobnicate", "unknown")
    refuse(tmp_path, "merge_method: task_arithmetic\n" + head, "models[0]", "no weight")
    refuse(tmp_path, "merge_method: ties\n" + head + "    parameters: {weight: 1, density: 1.5}\n",
           "density", "1.5")
    refuse(tmp_path, "merge_method: ties\n" + head + "    parameters: {weight: 1, densty: 0.5}\n",
           "densty")
    refuse(tmp_path, "merge_method: task_arithmetic\nslices: []\n" + head, "slices")
    refuse(tmp_path, "merge_method: task_arithmetic\n" + head + "    parameters: {weight: 1}\nfoo: 1\n",
           "foo")
    # a vocabulary that differs, without a tokenizer source: the tensor and both shapes
    r = refuse(tmp_path, f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
               f"  - model: {zoo['vocab_bf16']}\n    parameters: {{weight: 1}}\n",
               "model.embed_tokens.weight")
    assert r.stderr.count("[") >= 2, r
    # a residuals directory is not a model
    res = tmp_path / "res"
    r = P.run(["export", f"{zoo['ft1_f32']}-{zoo['base_f32']}", str(res), "--quiet"], timeout=120)
    assert r.returncode == 0, r
    refuse(tmp_path, f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
           f"  - model: {res}\n    parameters: {{weight: 1}}\n", "residuals directory", str(res))
    # tokenizer_source with a model that has no tokenizer.json to align by
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in os.listdir(zoo["vocab2_bf16"]):
        if f != "tokenizer.json":
            shutil.copy(os.path.join(zoo["vocab2_bf16"], f), notok / f)
    refuse(tmp_path, M.recipe("union", zoo).replace(zoo["vocab_bf16"], str(notok)),
           "tokenizer_source", str(notok), "tokenizer.json")
    # a tokenizer source that is not one of the recipe's models
    refuse(tmp_path, M.recipe("vocab_model", zoo).replace(f"tokenizer_source: {zoo['vocab2_bf16']}",
                                                          f"tokenizer_source: {zoo['ft3_bf16']}"),
           "tokenizer_source", zoo["ft3_bf16"], "one of the recipe's models")
    # a LoRA reference
    refuse(tmp_path, f"merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n"
           f"  - model: {ft1}+some/lora\n    parameters: {{weight: 1}}\n", "LoRA")


# ---- vocabularies aligned by token (tokenizer_source) -----------------------------------------

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def tok_vocab(model_dir):
    """token -> id of a saved tokenizer.json: the model's vocabulary, then added tokens."""
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        t = json.load(f)
    v = dict(t["model"]["vocab"])
    for a in t["added_tokens"]:
        v[a["content"]] = a["id"]
    return v


@pytest.mark.parametrize("name", ["union", "union_avg", "vocab_base", "vocab_model"])
def test_vocabulary_alignment_equals_mergekit(mounts, merges, zoo, name):
    """tokenizer_source: the same tokens as mergekit's output, and every token's row of
    the embeddings and output head equal to mergekit's row of that token bit for bit
    (mergekit numbers the tokens a union adds in an order that changes from run to run:
    rows are compared by token string); every other tensor equal bit for bit."""
    (got, gdt), (want, wdt), mp, out = both(mounts, merges, zoo, name)
    vg, vw = tok_vocab(mp), tok_vocab(out)
    assert set(vg) == set(vw), sorted(set(vg) ^ set(vw))
    src = "vocab2_bf16" if name == "vocab_model" else "base_bf16"
    vbase = tok_vocab(zoo[src])
    assert all(vg[t] == i for t, i in vbase.items() if t in vg), "the source's ids are kept"
    assert sorted(vg.values()) == list(range(len(vg))), "one row per token, none missing"
    with open(os.path.join(mp, "config.json")) as a, open(os.path.join(out, "config.json")) as b:
        assert json.load(a)["vocab_size"] == json.load(b)["vocab_size"] == len(vg)
    assert sorted(got) == sorted(want)
    for t in want:
        assert gdt[t] == wdt[t] and got[t].shape == want[t].shape, (t, got[t].shape, want[t].shape)
        if t in VOCAB_TENSORS:
            bad = [tok for tok in vg if not (bits(got[t][vg[tok]]) == bits(want[t][vw[tok]])).all()]
            assert not bad, f"{name}: {t}: rows of {len(bad)} tokens differ: {bad[:8]}"
        else:
            assert (bits(got[t]) == bits(want[t])).all(), f"{name}: {t} differs"
    if name in ("vocab_base", "vocab_model"):
        assert vg == vbase
        with open(os.path.join(mp, "tokenizer.json"), "rb") as a, \
                open(os.path.join(zoo[src], "tokenizer.json"), "rb") as b:
            assert a.read() == b.read()


def test_union_tokenizer_loads(mounts, merges, zoo):
    """transformers loads the union's tokenizer from the mount: the same vocabulary as its
    tokenizer.json, and a text with words of every model encodes to the same tokens as
    with mergekit's tokenizer; the merged model runs on those ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    mp = mounts("union_avg", M.recipe("union_avg", zoo))
    out, _ = merges("union_avg")
    tg, tw = AutoTokenizer.from_pretrained(mp), AutoTokenizer.from_pretrained(out)
    assert tg.get_vocab() == tok_vocab(mp)
    text = "w1 x3 y0 w7 x0 w124"
    ig, iw = tg(text)["input_ids"], tw(text)["input_ids"]
    assert tg.convert_ids_to_tokens(ig) == tw.convert_ids_to_tokens(iw) == text.split(), (ig, iw)
    m = AutoModelForCausalLM.from_pretrained(mp, dtype=torch.float32)
    with torch.no_grad():
        logits = m(torch.tensor([ig])).logits
    assert logits.shape == (1, len(ig), len(tg.get_vocab())) and torch.isfinite(logits).all()


# ---- chat_template ----------------------------------------------------------------------------

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "w1 w2"},
        {"role": "assistant", "content": "w3"}]


def _chat_check(mp, out):
    """The mount's chat template is mergekit's, and renders the same conversation."""
    from transformers import AutoTokenizer
    with open(os.path.join(mp, "chat_template.jinja"), "rb") as a, \
            open(os.path.join(out, "chat_template.jinja"), "rb") as b:
        assert a.read() == b.read()
    tg, tw = AutoTokenizer.from_pretrained(mp), AutoTokenizer.from_pretrained(out)
    assert tg.chat_template == tw.chat_template
    assert tg.apply_chat_template(CHAT, tokenize=False) == tw.apply_chat_template(CHAT, tokenize=False)


def test_chat_template_text(mounts, zoo, tmp_path):
    """chat_template: Jinja text becomes the tokenizer's template, as in mergekit."""
    text = (M.recipe("task_arithmetic_f32", zoo) +
            "chat_template: \"{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}\"\n")
    mp = mounts("chat_text", text)
    out = str(tmp_path / "mk")
    M.run_merge(text, out)
    _chat_check(mp, out)


def test_chat_template_auto(mounts, zoo, tmp_path):
    """chat_template: auto takes the most common template of the models (read from
    chat_template.jinja or tokenizer_config.json, whitespace stripped)."""
    a = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    b = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    dirs = {}
    for name, where, tpl in (("base_bf16", "config", a), ("ft1_bf16", "jinja", b),
                             ("ft2_bf16", "config", "\n  " + b + "\n")):
        d = tmp_path / name
        shutil.copytree(zoo[name], d)
        if where == "jinja":
            (d / "chat_template.jinja").write_text(tpl)
        else:
            cfg = json.loads((d / "tokenizer_config.json").read_text())
            cfg["chat_template"] = tpl
            (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        dirs[name] = str(d)
    text = (f"merge_method: task_arithmetic\nbase_model: {dirs['base_bf16']}\nmodels:\n"
            f"  - model: {dirs['ft1_bf16']}\n    parameters: {{weight: 0.5}}\n"
            f"  - model: {dirs['ft2_bf16']}\n    parameters: {{weight: 0.5}}\n"
            "chat_template: auto\n")
    mp = mounts("chat_auto", text)
    out = str(tmp_path / "mk")
    M.run_merge(text, out)
    _chat_check(mp, out)
    with open(os.path.join(mp, "chat_template.jinja")) as f:
        assert f.read() == b
    # the base's tokenizer_config.json had the key: it says the same
    with open(os.path.join(mp, "tokenizer_config.json")) as f:
        assert json.load(f)["chat_template"] == b


@pytest.mark.parametrize("value,words", [
    ("chatml", ["chatml", "not shipped", "template's text"]),
    ("'{{ x }}'", ["not a Jinja template", "shorter than 20"]),
])
def test_chat_template_refused(zoo, tmp_path, binary, value, words):
    refuse(tmp_path, M.recipe("task_arithmetic_f32", zoo) + f"chat_template: {value}\n", "chat_template", *words)


# ---- mergekit's layout (--out-shard-size) ---------------------------------------------------

@pytest.mark.parametrize("shard", [60000, 10 ** 9])
def test_out_shard_size_is_mergekits_layout(mounts, merges, zoo, shard):
    """--out-shard-size: the same shard files, index and tensors as mergekit's output with
    out_shard_size; each shard file byte for byte."""
    name = "task_arithmetic_f32"
    mp = mounts(name, M.recipe(name, zoo), "--out-shard-size", str(shard))
    out, _ = merges(name, shard_size=shard)
    shards = sorted(f for f in os.listdir(out) if f.endswith(".safetensors") or f.endswith(".index.json"))
    assert sorted(f for f in os.listdir(mp) if f.endswith(".safetensors") or f.endswith(".index.json")) == shards
    assert len(shards) > 2 if shard < 10 ** 6 else shards == ["model.safetensors"], shards
    for f in shards:
        with open(os.path.join(mp, f), "rb") as a, open(os.path.join(out, f), "rb") as b:
            assert a.read() == b.read(), f
