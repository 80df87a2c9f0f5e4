"""mergekit 0.1.5's arithmetic, re-implemented with numpy and checked against its output.

Each merge method is computed here element by element, in the order of operations and
with the roundings a C implementation has to follow (tests/merge/ARITHMETIC.md), and
compared with the tensors mergekit writes for the same recipe (mkmerge.RECIPES) on tiny
Llama models (mkmerge.build_zoo).  The first tests pin down the few torch primitives
whose exact behaviour mergekit's output depends on: float32 sums, the L2 norm, the sort
that picks the top-k elements, the random numbers of the dare methods, addcmul.

Run with the packages of tests/requirements-merge.txt:
    python3 -m venv V && V/bin/pip install -r tests/requirements-merge.txt
    V/bin/pytest -q tests/merge
"""
import json
import math
import os
import re
import sys

import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkmerge as M  # noqa: E402

F32 = np.float32

# mergekit.io.lazy_unpickle names numpy.core at import
pytestmark = pytest.mark.filterwarnings("ignore:numpy.core is deprecated:DeprecationWarning")


# ---- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch
    torch.set_num_threads(1)   # every tensor here is < 32768 elements anyway
    yield


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    root = os.environ.get("RESIDFS_MERGE_ZOO") or str(tmp_path_factory.mktemp("zoo"))
    return M.build_zoo(root)


@pytest.fixture(scope="session")
def merges(zoo, tmp_path_factory):
    return M.Merges(zoo, str(tmp_path_factory.mktemp("merged")))


@pytest.fixture(scope="session")
def models(zoo):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = M.read_model(zoo[name])
        return cache[name]
    return get


# ---- float32 / bfloat16 helpers --------------------------------------------------------

def bf16_bits(x):
    """float32 -> bf16 bit patterns, round to nearest even (NaN: quiet, sign kept)."""
    x = np.asarray(x, dtype=F32)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), ((u >> 16) | 0x40).astype(np.uint16), r)


def bf16(x):
    """float32 values rounded to bf16, as float32."""
    return M.bf16_to_f32(bf16_bits(x))


def rounder(dtype):
    """The rounding after every operation in compute dtype @dtype ('F32'/'BF16')."""
    return {"F32": lambda x: np.asarray(x, dtype=F32), "BF16": bf16}[dtype]


def to_out(x, out):
    """Cast of a float32 result to the output dtype @out ('F32'/'BF16')."""
    return bf16(x) if out == "BF16" else np.asarray(x, dtype=F32)


def fma_f32(a, b, c):
    """a*b + c with one rounding to float32 (fmaf).  The float64 product is exact; a
    sum that lands exactly between two float32 values is nudged by its float64 error
    so that the second rounding cannot go the wrong way."""
    a64, b64, c64 = (np.asarray(v, dtype=F32).astype(np.float64) for v in (a, b, c))
    p = a64 * b64
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    s = np.where(err != 0, np.nextafter(s, s + err), s)
    return s.astype(F32)


def seq_sum(terms):
    """float32 sum from +0.0, left to right: torch's sum over the stacked-model axis
    (dim 0) for up to 4 terms, and for any count where no vector tail is involved."""
    acc = np.zeros_like(np.asarray(terms[0], dtype=F32))
    for t in terms:
        acc = acc + np.asarray(t, dtype=F32)
    return acc


def bits_equal(a, b):
    a = np.asarray(a, dtype=F32)
    b = np.asarray(b, dtype=F32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def mismatches(a, b):
    a = np.asarray(a, dtype=F32)
    b = np.asarray(b, dtype=F32)
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))


def bf16_ulps(a, b):
    """Distance in bf16 steps between two arrays of bf16 values (same sign assumed)."""
    ia = bf16_bits(a).astype(np.int32)
    ib = bf16_bits(b).astype(np.int32)
    return np.abs(ia - ib)


# ---- torch's float32 reductions, re-implemented ----------------------------------------

def _ceil_log2(x):
    return 0 if x <= 1 else (int(x) - 1).bit_length()


def _multi_row_sum(rows):
    """torch's multi_row_sum (SumKernel.cpp): rows [size, nrows] -> [nrows], float32,
    4 levels of partial sums flushed every 2**level_power rows."""
    size, nrows = rows.shape
    num_levels = 4
    level_power = max(4, _ceil_log2(size) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((num_levels, nrows), dtype=F32)
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            acc[0] = acc[0] + rows[i]
            i += 1
        for j in range(1, num_levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = 0
            if i & (level_mask << (j * level_power)):
                break
    while i < size:
        acc[0] = acc[0] + rows[i]
        i += 1
    for j in range(1, num_levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(v):
    """torch's row_sum: v [size, *lanes] -> [*lanes], 4 interleaved partial sums."""
    ilp = 4
    size = v.shape[0]
    lanes = v.shape[1:]
    size_ilp = size // ilp
    if size_ilp:
        part = _multi_row_sum(v[:size_ilp * ilp].reshape(size_ilp, -1)).reshape((ilp,) + lanes)
    else:
        part = np.zeros((ilp,) + lanes, dtype=F32)
    part = part.copy()
    for i in range(size_ilp * ilp, size):
        part[0] = part[0] + v[i]
    for k in range(1, ilp):
        part[0] = part[0] + part[k]
    return part[0]


LANES = 8          # Vectorized<float> of torch's x86-64 reduction kernels (AVX2 build)
GRAIN = 32768      # at::internal::GRAIN_SIZE: longer reductions are split across threads


def torch_sum_f32(x, threads=1):
    """torch.sum of a contiguous float32 tensor (all elements, or one row over its last
    dimension), bit for bit: the cascade sum of 8-float vectors, the scalar tail, the 8
    lanes, in that order; with @threads > 1 and more than GRAIN elements, the sums of
    ceil(n / nt) long pieces (nt = min(threads, ceil(n / GRAIN))) added left to right."""
    x = np.ascontiguousarray(x, dtype=F32).ravel()
    n = x.size
    if threads > 1 and n > GRAIN:
        nt = min(threads, -(-n // GRAIN))
        chunk = -(-n // nt)
        return seq_sum([torch_sum_f32(x[i:i + chunk]) for i in range(0, n, chunk)])
    if n < LANES:
        return F32(_row_sum(x))
    nv = n // LANES
    vacc = _row_sum(x[:nv * LANES].reshape(nv, LANES))
    acc = F32(0)
    for k in range(nv * LANES, n):
        acc = F32(acc + x[k])
    for k in range(LANES):
        acc = F32(acc + vacc[k])
    return acc


def torch_sum_bf16(x):
    """torch.sum of a contiguous bf16 tensor: float32 accumulation; each 16-element
    load becomes 8 floats e[j] + e[j+8], then as torch_sum_f32; one rounding to bf16."""
    x = np.ascontiguousarray(x, dtype=F32).ravel()
    n = x.size
    nv = n // 16
    if nv:
        blocks = x[:nv * 16].reshape(nv, 2, 8)
        vacc = _row_sum(blocks[:, 0, :] + blocks[:, 1, :])
    acc = F32(0)
    for k in range(nv * 16, n):
        acc = F32(acc + x[k])
    if nv:
        for k in range(8):
            acc = F32(acc + vacc[k])
    return bf16(acc)


def torch_norm_f32(x):
    """torch.linalg.vector_norm(x, dim=-1) of one float32 row: 8 lanes of running sums
    of squares (product rounded, then the add: no FMA), lanes added left to right, the
    tail's squares added one by one, sqrt rounded to float32."""
    x = np.ascontiguousarray(x, dtype=F32).ravel()
    n = x.size
    m = n - n % LANES
    acc = np.zeros(LANES, dtype=F32)
    for c in x[:m].reshape(-1, LANES):
        acc = acc + c * c
    s = acc[0]
    for j in range(1, LANES):
        s = F32(s + acc[j])
    for v in x[m:]:
        s = F32(s + F32(v * v))
    return F32(math.sqrt(float(s)))


# ---- libstdc++'s std::sort (what torch.sort / argsort run on CPU for float32) -----------

def std_sort_perm(keys, descending):
    """The permutation torch.sort(keys, descending=..., stable=False).indices gives on
    CPU: GCC's std::sort (introsort: median of three moved to the front, unguarded
    Hoare partition, depth limit 2*floor(log2 n) then heapsort, final insertion sort
    with threshold 16) on (key, index) pairs compared by key only.  NaN counts as the
    largest key."""
    k = np.asarray(keys, dtype=np.float64).ravel()
    # Only the order of keys matters: compare dense ranks (ints are fast in Python).
    nan = np.isnan(k)
    uniq = np.unique(k[~nan])
    rank = np.searchsorted(uniq, k).astype(np.int64)
    rank[nan] = len(uniq)
    key = (-rank if descending else rank).tolist()
    idx = list(range(len(key)))
    n = len(key)

    def swap(i, j):
        key[i], key[j] = key[j], key[i]
        idx[i], idx[j] = idx[j], idx[i]

    def median_to_first(r, a, b, c):
        if key[a] < key[b]:
            if key[b] < key[c]:
                swap(r, b)
            elif key[a] < key[c]:
                swap(r, c)
            else:
                swap(r, a)
        elif key[a] < key[c]:
            swap(r, a)
        elif key[b] < key[c]:
            swap(r, c)
        else:
            swap(r, b)

    def partition(first, last, pivot):
        while True:
            while key[first] < key[pivot]:
                first += 1
            last -= 1
            while key[pivot] < key[last]:
                last -= 1
            if not first < last:
                return first
            swap(first, last)
            first += 1

    def adjust_heap(first, hole, length, vk, vi):
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if key[first + child] < key[first + child - 1]:
                child -= 1
            key[first + hole], idx[first + hole] = key[first + child], idx[first + child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            key[first + hole], idx[first + hole] = key[first + child - 1], idx[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and key[first + parent] < vk:
            key[first + hole], idx[first + hole] = key[first + parent], idx[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        key[first + hole], idx[first + hole] = vk, vi

    def heap_sort(first, last):
        length = last - first
        if length >= 2:
            parent = (length - 2) // 2
            while True:
                adjust_heap(first, parent, length, key[first + parent], idx[first + parent])
                if parent == 0:
                    break
                parent -= 1
        while last - first > 1:
            last -= 1
            vk, vi = key[last], idx[last]
            key[last], idx[last] = key[first], idx[first]
            adjust_heap(first, 0, last - first, vk, vi)

    def introsort(first, last, depth):
        while last - first > 16:
            if depth == 0:
                heap_sort(first, last)
                return
            depth -= 1
            median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
            cut = partition(first + 1, last, first)
            introsort(cut, last, depth)
            last = cut

    def linear_insert(pos):
        vk, vi = key[pos], idx[pos]
        nxt = pos - 1
        while vk < key[nxt]:
            key[pos], idx[pos] = key[nxt], idx[nxt]
            pos = nxt
            nxt -= 1
        key[pos], idx[pos] = vk, vi

    def insertion_sort(first, last):
        for i in range(first + 1, last):
            if key[i] < key[first]:
                vk, vi = key[i], idx[i]
                key[first + 1:i + 1] = key[first:i]
                idx[first + 1:i + 1] = idx[first:i]
                key[first], idx[first] = vk, vi
            else:
                linear_insert(i)

    if n > 1:
        introsort(0, n, 2 * (n.bit_length() - 1))
        if n > 16:
            insertion_sort(0, 16)
            for i in range(16, n):
                linear_insert(i)
        else:
            insertion_sort(0, n)
    return np.array(idx, dtype=np.int64)


def lowest_index_perm(keys, descending):
    """A stable sort: ties in index order (what a simple C implementation would do)."""
    k = np.asarray(keys, dtype=F32).ravel()
    return np.argsort(-k if descending else k, kind="stable")


# ---- torch's CPU random numbers ---------------------------------------------------------

class TorchRNG:
    """torch's default CPU generator after torch.manual_seed(seed): MT19937 seeded with
    init_genrand(seed & 0xffffffff); torch.bernoulli(p) on CPU takes one 32-bit draw per
    element, in memory order, and keeps the element when (draw & 0xffffff) * 2**-24 < p."""

    def __init__(self, seed):
        self.bg = np.random.MT19937(0)
        self.bg._legacy_seeding(seed)

    def bernoulli(self, n, p):
        u = self.bg.random_raw(n).astype(np.uint64) & 0xFFFFFF
        return (u.astype(F32) * F32(2.0 ** -24)) < F32(p)


# ---- the merge methods ------------------------------------------------------------------

def l1_rescaled(d, mask, rescale, dt):
    """mergekit.sparsify.rescaled_masked_tensor with RescaleNorm.l1 in dtype @dt."""
    r = rounder(dt)
    masked = d * mask
    if not rescale:
        return masked
    tsum = torch_sum_f32 if dt == "F32" else torch_sum_bf16
    before = r(tsum(np.abs(d)))
    after = r(tsum(np.abs(masked)))
    if before < 1e-7 or after < 1e-7:
        return masked
    return r(masked * r(before / after))


def sparsify(d, method, p, dt, *, rescale, order, rng=None):
    """mergekit.sparsify.sparsify for one delta @d (float32 array holding dtype @dt
    values).  @p: the model's parameters (density, gamma); @order: 'torch' (the
    libstdc++ sort) or 'lowest' (ties broken by lowest index)."""
    density = p.get("density", 1.0)
    if method is None or density >= 1:
        return d
    n = d.size
    mask = np.zeros(n, dtype=F32)
    w = np.abs(d).ravel()
    sort = std_sort_perm if order == "torch" else lowest_index_perm
    if method == "magnitude":
        if density <= 0 or n == 0:
            return np.zeros_like(d)
        k = max(1, int(density * n))
        mask[sort(w, True)[:k]] = 1
    elif method == "magnitude_outliers":
        target = int(density * n)
        n_top = int(p.get("gamma", 0.01) * n)
        n_bot = max(0, n - target - n_top)
        mask[sort(w, False)[n_bot:n_bot + target]] = 1
    elif method == "random":
        pd = F32(density) if dt == "F32" else bf16(F32(density))
        mask = rng.bernoulli(n, pd).astype(F32)
    else:
        raise NotImplementedError(method)
    return l1_rescaled(d, mask.reshape(d.shape), rescale, dt)


GTA = {   # method -> (consensus, sparsification, default normalize, default rescale)
    "task_arithmetic": (False, None, False, False),
    "ties": (True, "magnitude", True, False),
    "dare_ties": (True, "random", False, True),
    "dare_linear": (False, "random", False, True),
    "breadcrumbs": (False, "magnitude_outliers", False, False),
    "breadcrumbs_ties": (True, "magnitude_outliers", False, False),
}


def gta(method, base, xs, params, shared, dt, *, order="torch", rng=None):
    """GeneralizedTaskArithmeticMerge.merge_group: @base, @xs float32 arrays of the
    compute dtype @dt's values, @params per model {weight, density, gamma}, @shared
    {normalize, rescale, lambda}.  Returns the float32 result (values of dtype @dt)."""
    consensus, sp, dnorm, drescale = GTA[method]
    r = rounder(dt)
    normalize = shared.get("normalize", dnorm)
    rescale = shared.get("rescale", drescale)
    lam = shared.get("lambda", 1.0)
    deltas = [sparsify(r(x - base), sp, p, dt, rescale=rescale, order=order, rng=rng)
              for x, p in zip(xs, params)]
    ws = [r(F32(p["weight"])) for p in params]
    wd = [r(d * w) for d, w in zip(deltas, ws)]
    if consensus:
        majority = np.where(r(seq_sum(wd)) >= 0, F32(1), F32(-1))
        keep = [np.sign(t) == majority for t in wd]
        mixed = r(seq_sum([t * k for t, k in zip(wd, keep)]))
        divisor = r(seq_sum([w * k.astype(F32) for w, k in zip(ws, keep)]))
        divisor = np.where(divisor == 0, F32(1), divisor)
    else:
        mixed = r(seq_sum(wd))
        divisor = r(seq_sum(ws))
        if abs(divisor) < 1e-8:
            divisor = F32(1)
    if normalize:
        mixed = r(mixed / divisor)
    if lam != 1:
        mixed = r(mixed * F32(lam))
    return r(base + mixed)


def linear(xs, ws, normalize=True):
    """mergekit.merge_methods.linear.linear_merge in float32: addcmul_ is one fused
    multiply-add per model, then one division by the float32 sum of the weights."""
    w = [F32(v) for v in ws]
    acc = np.zeros_like(xs[0])
    for x, wi in zip(xs, w):
        acc = fma_f32(x, wi, acc)
    if normalize:
        acc = acc / seq_sum(w)
    return acc


def linear_nofma(xs, ws, normalize=True):
    w = [F32(v) for v in ws]
    acc = np.zeros_like(xs[0])
    for x, wi in zip(xs, w):
        acc = acc + x * wi
    if normalize:
        acc = acc / seq_sum(w)
    return acc


def _cr(f):
    """A float32 function correctly rounded through float64 (what fmaf-era libms give
    nearly always)."""
    return lambda x: F32(f(float(F32(x))))


def _torch_fn(name):
    import torch
    fn = getattr(torch, name)
    return lambda x: F32(fn(torch.tensor([[float(F32(x))]], dtype=torch.float32)).item())


def slerp(t, a, b, out_dt, trig="torch"):
    """mergekit.merge_methods.slerp.slerp for one tensor of < 2**20 elements (one
    chunk): float32 throughout, result rounded once to the inputs' dtype @out_dt.
    @trig: 'torch' (torch.acos/sin of a float32 scalar, through MKL) or 'cr'."""
    acos, sin = ((_torch_fn("acos"), _torch_fn("sin")) if trig == "torch"
                 else (_cr(math.acos), _cr(math.sin)))
    a = a.ravel()
    b = b.ravel()
    t = F32(t)
    na = torch_norm_f32(a)
    nb = torch_norm_f32(b)
    na = na if na > F32(1e-8) else F32(1)
    nb = nb if nb > F32(1e-8) else F32(1)
    dot = torch_sum_f32((a / na) * (b / nb))
    dot = min(max(dot, F32(-1)), F32(1))
    if abs(dot) > F32(0.9995):
        ca, cb = F32(1) - t, t
    else:
        theta = acos(dot)
        st = sin(theta)
        ca = F32(sin(F32((F32(1) - t) * theta)) / st)
        cb = F32(sin(F32(t * theta)) / st)
    return to_out(ca * a + cb * b, out_dt)


# ---- parameters: filters and gradients (an independent reading of the rules) -------------

def layer_t(name):
    """t of a tensor: layer index / (layers - 1) inside its slice (a models: recipe is
    one slice of every layer); 0 for embeddings, the final norm and lm_head."""
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return int(m.group(1)) / (M.LAYERS - 1) if m else 0.0


def eval_setting(setting, name, t):
    """A parameter value: a scalar, a gradient list (linear interpolation in float64 at
    t*(n-1)), or a list of {filter, value}: the first whose filter is absent, '*' or a
    substring of the tensor name; None when no filter matches."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, (int, float, bool)):
        return setting
    if all(isinstance(e, (int, float)) for e in setting):
        s = t * (len(setting) - 1)
        i0 = int(s)
        i1 = min(len(setting) - 1, i0 + 1)
        f = s - i0
        return (1 - f) * setting[i0] + f * setting[i1]
    for cond in setting:
        flt = cond.get("filter")
        if flt is None or flt == "*" or flt in name:
            return eval_setting(cond["value"], name, t)
    return None


def resolve(cfg, name, model=None, key=None, default=None):
    """The value of parameter @key for @model (None: a shared parameter): model
    parameters first, then the recipe's global ones, else @default."""
    t = layer_t(name)
    scopes = []
    if model is not None:
        for m in cfg["models"]:
            if m["model"] == model:
                scopes.append(m.get("parameters") or {})
    scopes.append(cfg.get("parameters") or {})
    for s in scopes:
        if key in s:
            v = eval_setting(s[key], name, t)
            if v is not None:
                return v
    return default


def recipe_cfg(zoo, name):
    return yaml.safe_load(M.recipe(name, zoo))


def expected_gta(zoo, models, name, order="torch", seed=None):
    """{tensor: float32 array} of a task-arithmetic-family recipe, computed here."""
    cfg = recipe_cfg(zoo, name)
    method = cfg["merge_method"]
    dt = {"float32": "F32", "bfloat16": "BF16", None: None}[cfg.get("dtype")]
    base_t, base_dt = models(_zoo_name(zoo, cfg["base_model"]))
    xs = [models(_zoo_name(zoo, m["model"])) for m in cfg["models"]]
    dt = dt or next(iter(base_dt.values()))
    out = {"float32": "F32", "bfloat16": "BF16", None: dt}[cfg.get("out_dtype")]
    rng = TorchRNG(seed) if seed is not None else None
    result = {}
    for k in sorted(base_t):         # mergekit's execution order: tensor names, sorted
        params = [{key: resolve(cfg, k, m["model"], key) for key in ("weight", "density", "gamma")
                   if resolve(cfg, k, m["model"], key) is not None} for m in cfg["models"]]
        shared = {key: resolve(cfg, k, None, key) for key in ("normalize", "rescale", "lambda")
                  if resolve(cfg, k, None, key) is not None}
        res = gta(method, base_t[k], [x[0][k] for x in xs], params, shared, dt,
                  order=order, rng=rng)
        result[k] = to_out(res, out)
    return result


def _zoo_name(zoo, path):
    return next(n for n, p in zoo.paths.items() if p == path)


def assert_model_bits(got, want, what):
    assert sorted(got) == sorted(want), what
    bad = {k: mismatches(got[k], want[k]) for k in want}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{what}: elements differing per tensor: {bad}"


# ---- the torch primitives ------------------------------------------------------------------

def test_torch_sum_f32_is_the_cascade_sum():
    import torch
    g = torch.Generator().manual_seed(1)
    for n in list(range(1, 41)) + [63, 64, 65, 100, 1000, 4096, 8192, 12345, 32768]:
        for _ in range(20):
            x = torch.randn(n, generator=g) * torch.exp(torch.randn(n, generator=g) * 2)
            assert bits_equal(x.sum().numpy(), torch_sum_f32(x.numpy())), n
    # a 2-D tensor sums as its flattened elements; dim=-1 of one row the same
    x = torch.randn(64, 128, generator=g)
    assert bits_equal(x.sum().numpy(), torch_sum_f32(x.numpy()))
    assert bits_equal(x.view(1, -1).sum(dim=1).numpy(), [torch_sum_f32(x.numpy())])


def test_torch_sum_over_models():
    """deltas.sum(dim=0): left to right for up to 4 models; with more, the last
    numel mod 32 elements of a tensor are summed in row_sum order."""
    import torch
    g = torch.Generator().manual_seed(9)
    for n in (2, 3, 4, 5, 7, 9, 17):
        for _ in range(10):
            numel = 32 * 3 + 13
            x = torch.randn(n, numel, generator=g) * torch.exp(torch.randn(n, 1, generator=g) * 3)
            xs = x.numpy()
            want = seq_sum(list(xs))
            if n >= 5:
                for j in range(numel - numel % 32, numel):
                    want[j] = _row_sum(xs[:, j].copy())
            assert bits_equal(x.sum(dim=0).numpy(), want), n
            if n <= 4:   # bf16: float32 accumulation, one rounding
                xb = x.to(torch.bfloat16)
                assert bits_equal(xb.sum(dim=0).float().numpy(),
                                  bf16(seq_sum(list(xb.float().numpy())))), n


def test_torch_sum_f32_split_across_threads():
    """Beyond GRAIN elements the sum depends on the number of torch threads."""
    import torch
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100003, generator=g) * torch.exp(torch.randn(100003, generator=g) * 2)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert bits_equal(x.sum().numpy(), torch_sum_f32(x.numpy(), threads)), threads
    finally:
        torch.set_num_threads(old)


def test_torch_sum_bf16_rounds_once():
    import torch
    g = torch.Generator().manual_seed(3)
    for n in (1, 7, 15, 16, 17, 100, 2048, 8192, 8195):
        for _ in range(10):
            x = (torch.randn(n, generator=g) * 0.01).to(torch.bfloat16)
            want = x.abs().sum().float().numpy()
            assert bits_equal(want, torch_sum_bf16(np.abs(x.float().numpy()))), n


def test_torch_norm_f32():
    import torch
    g = torch.Generator().manual_seed(4)
    for n in (1, 5, 8, 17, 1000, 2048, 8192, 8195, 40000):
        for _ in range(5):
            x = torch.randn(n, generator=g)
            got = torch.linalg.vector_norm(x.view(1, -1), dim=1).numpy()
            assert bits_equal(got, [torch_norm_f32(x.numpy())]), n


def test_torch_sort_is_libstdcxx_introsort():
    """torch.argsort / torch.sort (stable=False) of float32 on CPU order equal keys
    exactly as GCC's std::sort does; a stable sort differs."""
    import torch
    g = torch.Generator().manual_seed(5)
    differs = 0
    for n, levels in ((10, 4), (17, 3), (100, 5), (1000, 10), (8192, 64), (8192, 1000),
                      (20000, 7), (4096, 1)):
        w = (torch.rand(n, generator=g) * levels).floor()
        for desc in (True, False):
            want = torch.sort(w, descending=desc).indices.numpy()
            assert np.array_equal(want, std_sort_perm(w.numpy(), desc)), (n, levels, desc)
            assert np.array_equal(torch.argsort(w, descending=desc).numpy(), want)
            differs += not np.array_equal(want, lowest_index_perm(w.numpy(), desc))
    assert differs > 0


def test_torch_bernoulli_is_mt19937():
    import torch
    for dtype, p in ((torch.float32, 0.3), (torch.bfloat16, 0.3), (torch.float32, 0.7)):
        torch.manual_seed(1234)
        a = torch.bernoulli(torch.full((700,), p, dtype=dtype))
        b = torch.bernoulli(torch.full((3, 100), p, dtype=dtype))
        got = np.concatenate([a.float().numpy(), b.float().numpy().ravel()])
        pv = F32(p) if dtype == torch.float32 else bf16(F32(p))
        want = TorchRNG(1234).bernoulli(1000, pv)
        assert np.array_equal(got.astype(bool), want), (dtype, p)


def test_torch_addcmul_is_fused():
    import torch
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4096, generator=g)
    acc = torch.randn(4096, generator=g)
    w = torch.tensor(0.3)
    got = acc.clone().addcmul_(x, w.reshape(1)).numpy()
    assert bits_equal(got, fma_f32(x.numpy(), F32(0.3), acc.numpy()))
    assert mismatches(got, acc.numpy() + x.numpy() * F32(0.3)) > 0


# ---- the methods against mergekit ------------------------------------------------------------

def test_task_arithmetic_float32(zoo, merges, models):
    """dtype: float32: d_i = x_i - b, w_i*d_i, summed left to right, + b, all float32
    with one rounding each (no FMA); one rounding to the bf16 output."""
    _, (got, dts) = merges("task_arithmetic_f32")
    assert set(dts.values()) == {"BF16"}
    want = expected_gta(zoo, models, "task_arithmetic_f32")
    assert_model_bits(got, want, "task_arithmetic float32")
    # the reference reduced to a single formula
    b = models("base_bf16")[0]
    xs = [models(n)[0] for n in ("ft1_bf16", "ft2_bf16", "ft3_bf16")]
    k = "model.layers.2.mlp.up_proj.weight"
    w = [F32(0.7), F32(0.3), F32(-0.45)]
    one = bf16(b[k] + (((w[0] * (xs[0][k] - b[k])) + w[1] * (xs[1][k] - b[k]))
                       + w[2] * (xs[2][k] - b[k])))
    assert bits_equal(got[k], one)


def test_task_arithmetic_bfloat16(zoo, merges, models):
    """dtype: bfloat16: every elementwise op rounded to bf16 (weights too: 0.7 ->
    0.69921875), the sum over models accumulated in float32 and rounded once, the
    divisor likewise, lambda applied as a float32 scalar (not rounded to bf16)."""
    _, (got, _) = merges("task_arithmetic_bf16")
    want = expected_gta(zoo, models, "task_arithmetic_bf16")
    assert_model_bits(got, want, "task_arithmetic bfloat16")
    assert bf16(F32(0.7)) == F32(0.69921875)
    # the two plausible alternatives are wrong
    b = models("base_bf16")[0]
    xs = [models(n)[0] for n in ("ft1_bf16", "ft2_bf16", "ft3_bf16")]
    k = "model.layers.1.mlp.down_proj.weight"
    ws = [bf16(F32(v)) for v in (0.7, 0.3, 0.45)]
    wd = [bf16(bf16(x[k] - b[k]) * w) for x, w in zip(xs, ws)]
    div = bf16(seq_sum(ws))
    seq = wd[0]
    for t in wd[1:]:
        seq = bf16(seq + t)             # rounding after each addition
    for mixed, lam in ((seq, F32(1.3)), (bf16(seq_sum(wd)), bf16(F32(1.3)))):
        alt = bf16(b[k] + bf16(bf16(mixed / div) * lam))
        assert mismatches(alt, got[k]) > 0


def test_linear_fma(zoo, merges, models):
    """linear: float32 accumulator r = fma(x_i, w_i, r) from +0.0, / sum(w); one
    rounding to the inputs' dtype.  Without the fused multiply-add ~11% of float32
    elements differ."""
    for name, names, ws, norm in (("linear", ("base_f32", "ft1_f32", "ft2_f32"),
                                   (0.2, 0.5, 0.3), True),
                                  ("linear_bf16", ("ft1_bf16", "ft2_bf16"), (0.6, 0.9), False)):
        _, (got, dts) = merges(name)
        xs = [models(n)[0] for n in names]
        out = next(iter(dts.values()))
        want = {k: to_out(linear([x[k] for x in xs], ws, norm), out) for k in xs[0]}
        assert_model_bits(got, want, name)
        nofma = sum(mismatches(got[k], to_out(linear_nofma([x[k] for x in xs], ws, norm), out))
                    for k in got)
        total = sum(v.size for v in got.values())
        print(f"{name}: {nofma} of {total} elements differ without FMA")
        assert nofma > 0


def _slerp_t(name):
    t = layer_t(name)
    if "self_attn" in name:
        return eval_setting([0, 0.5, 0.3, 0.7, 1], name, t)
    if "mlp" in name:
        return eval_setting([1, 0.5, 0.7, 0.3, 0], name, t)
    return 0.5


def test_slerp(merges, models):
    """slerp: bit for bit with torch's float32 acos/sin; with correctly rounded ones
    (what a C libm gives) within one bf16 step, and nearly always equal."""
    _, (got, dts) = merges("slerp")
    a = models("base_bf16")[0]
    b = models("ft2_bf16")[0]
    total = diff_cr = 0
    for k in sorted(got):
        t = _slerp_t(k)
        want = slerp(t, a[k], b[k], "BF16", trig="torch").reshape(got[k].shape)
        assert bits_equal(got[k], want), k
        cr = slerp(t, a[k], b[k], "BF16", trig="cr").reshape(got[k].shape)
        assert int(bf16_ulps(cr, got[k]).max()) <= 1, k
        diff_cr += mismatches(cr, got[k])
        total += got[k].size
    print(f"slerp with correctly rounded acos/sin: {diff_cr} of {total} elements differ "
          "by one bf16 step")
    assert diff_cr <= total // 10000


def _tie_report(zoo, models, name, got):
    """The lowest-index-first choice differs from torch's only at elements whose
    magnitude equals a selection threshold; returns (differing elements, total)."""
    low = expected_gta(zoo, models, name, order="lowest")
    diff = sum(mismatches(got[k], low[k]) for k in got)
    total = sum(v.size for v in got.values())
    return diff, total


@pytest.mark.parametrize("name", ["ties", "ties_f32", "breadcrumbs", "breadcrumbs_ties",
                                  "ties_gradient"])
def test_sparsified_methods(zoo, merges, models, name):
    """ties / breadcrumbs[_ties]: bit for bit when the top-k is chosen with torch's
    sort (libstdc++ introsort order among equal magnitudes)."""
    _, (got, _) = merges(name)
    want = expected_gta(zoo, models, name)
    assert_model_bits(got, want, name)
    diff, total = _tie_report(zoo, models, name, got)
    print(f"{name}: lowest-index-first tie breaking changes {diff} of {total} elements")


def test_ties_tie_set(zoo, merges, models):
    """Where a stable (lowest index first) top-k differs from torch's, the elements
    involved all have |delta| equal to the k-th largest |delta| of their tensor."""
    cfg = recipe_cfg(zoo, "ties")
    b = models("base_bf16")[0]
    seen = tie_only = 0
    for m in cfg["models"]:
        x = models(_zoo_name(zoo, m["model"]))[0]
        dens = m["parameters"]["density"]
        for k in sorted(b):
            d = (x[k] - b[k]).ravel()
            w = np.abs(d)
            kk = max(1, int(dens * d.size))
            a = set(std_sort_perm(w, True)[:kk].tolist())
            s = set(lowest_index_perm(w, True)[:kk].tolist())
            thr = np.sort(w)[::-1][kk - 1]
            sym = a ^ s
            seen += len(sym)
            tie_only += sum(w[i] == thr for i in sym)
            above = set(np.nonzero(w > thr)[0].tolist())
            assert above <= a & s and all(w[i] >= thr for i in a | s)
    assert seen > 0 and seen == tie_only
    print(f"ties: {seen} selections differ between torch and a stable sort, all at the "
          "threshold")


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear", "dare_linear_bf16"])
def test_dare(zoo, merges, models, name):
    """dare_*: bit for bit given random_seed: MT19937 draws consumed tensor by tensor
    in sorted-name order, model by model in config order, element by element."""
    _, (got, _) = merges(name, seed=4242)
    want = expected_gta(zoo, models, name, seed=4242)
    assert_model_bits(got, want, name)


def test_gradient_filters(zoo, merges, models):
    """Per-model > global precedence, first matching filter, fall-through when no filter
    matches, gradients over layers (t = layer/(layers-1)), a shared lambda gradient."""
    _, (got, _) = merges("gradient_filters")
    want = expected_gta(zoo, models, "gradient_filters")
    assert_model_bits(got, want, "gradient_filters")
    cfg = recipe_cfg(zoo, "gradient_filters")
    ft1, ft2, ft3 = (m["model"] for m in cfg["models"])
    # spot checks of the resolved values
    assert resolve(cfg, "model.layers.3.self_attn.q_proj.weight", ft1, "weight") == 0.8
    assert resolve(cfg, "model.layers.1.mlp.up_proj.weight", ft1, "weight") == pytest.approx(
        1.0 * (1 / 3) + 0.5 * (2 / 3))
    assert resolve(cfg, "model.embed_tokens.weight", ft1, "weight") == 0.5
    assert resolve(cfg, "model.layers.2.mlp.down_proj.weight", ft2, "weight") == -0.3
    assert resolve(cfg, "model.layers.2.mlp.up_proj.weight", ft2, "weight") == pytest.approx(
        0.75 * (2 / 3) + 0.4 * (1 / 3))   # no filter matched: the global gradient
    assert resolve(cfg, "lm_head.weight", ft3, "weight") == 0.25
    assert resolve(cfg, "model.norm.weight", None, "lambda") == 2.0
    assert resolve(cfg, "model.layers.3.mlp.up_proj.weight", None, "lambda") == 0.5


def _tok_vocab(model_dir):
    """token -> id of a saved tokenizer.json: model vocab and added tokens."""
    t = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    v = dict(t["model"]["vocab"])
    for a in t["added_tokens"]:
        v[a["content"]] = a["id"]
    return v


def test_tokenizer_union(zoo, merges, models):
    """tokenizer_source: union: the base's ids first, new tokens appended (in an order
    that changes from run to run); rows a model lacks come from the only model that has
    the token; then the method runs on the permuted rows."""
    out, (got, _) = merges("union")
    vout = _tok_vocab(out)
    vbase = _tok_vocab(zoo["base_bf16"])
    new = sorted(set(vout) - set(vbase))
    assert new == [f"x{i}" for i in range(M.NEW_WORDS)]
    assert all(vout[tok] == i for tok, i in vbase.items())
    assert sorted(vout[t] for t in new) == list(range(len(vbase), len(vout)))
    cfg_out = json.load(open(os.path.join(out, "config.json")))
    assert cfg_out["vocab_size"] == len(vout) == 3 + M.NWORDS + M.NEW_WORDS
    assert got["model.embed_tokens.weight"].shape == (len(vout), M.HIDDEN)

    names = ["base_bf16", "ft1_bf16", "vocab_bf16"]
    vocabs = {n: _tok_vocab(zoo[n]) for n in names}
    inv = {i: tok for tok, i in vout.items()}
    permuted = {}
    for n in names:
        t = dict(models(n)[0])
        for k in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = []
            for i in range(len(vout)):
                tok = inv[i]
                have = [m for m in names if tok in vocabs[m]]
                src = n if tok in vocabs[n] else have[0]
                assert len(have) in (1, 3)
                rows.append(models(src)[0][k][vocabs[src][tok]])
            t[k] = np.stack(rows)
        permuted[n] = t
    ws = [0.6, 0.4]
    for k in got:
        res = gta("task_arithmetic", permuted["base_bf16"][k],
                  [permuted["ft1_bf16"][k], permuted["vocab_bf16"][k]],
                  [{"weight": w} for w in ws], {}, "F32")
        assert bits_equal(got[k], bf16(res)), k
    # a token only the vocab model has: every input gets its row, so the merge gives it
    row = got["model.embed_tokens.weight"][vout["x0"]]
    assert bits_equal(row, models("vocab_bf16")[0]["model.embed_tokens.weight"][vocabs["vocab_bf16"]["x0"]])


# ---- what mergekit writes -------------------------------------------------------------------

def test_output_files(zoo, merges, tmp_path):
    """File names, greedy sharding by bytes in sorted tensor-name order, index.json,
    safetensors metadata, config.json, mergekit_config.yml, README.md, tokenizer."""
    text = M.recipe("task_arithmetic_f32", zoo)
    out = str(tmp_path / "merged-model")
    got, dts = M.run_merge(text, out, shard_size=100000)
    files = sorted(os.listdir(out))
    shards = [f for f in files if f.endswith(".safetensors")]
    n = len(shards)
    assert n > 1 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert files == sorted(shards + ["model.safetensors.index.json", "config.json",
                                     "generation_config.json", "mergekit_config.yml",
                                     "README.md", "tokenizer.json", "tokenizer_config.json"])
    # greedy: tensors in sorted name order; a shard is closed before the tensor that
    # would take it past out_shard_size bytes
    sizes = {k: v.size * 2 for k, v in got.items()}
    plan, cur, cur_size = [], [], 0
    for k in sorted(sizes):
        if cur and cur_size + sizes[k] > 100000:
            plan.append(cur)
            cur, cur_size = [], 0
        cur.append(k)
        cur_size += sizes[k]
    plan.append(cur)
    idx = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    assert idx["metadata"] == {"total_size": sum(sizes.values()), "mergekit_version": "0.1.5"}
    assert list(idx["weight_map"]) == sorted(sizes)
    for i, names in enumerate(plan):
        part, meta = M.read_safetensors(os.path.join(out, shards[i]))
        assert sorted(part) == sorted(names)
        assert meta == {"format": "pt"}
        assert all(idx["weight_map"][k] == shards[i] for k in names)
    assert open(os.path.join(out, "model.safetensors.index.json")).read() == json.dumps(
        idx, indent=2)
    # config.json: the base's, re-serialized by transformers, dtype set
    base_cfg = json.load(open(os.path.join(zoo["base_bf16"], "config.json")))
    out_cfg = json.load(open(os.path.join(out, "config.json")))
    assert out_cfg == dict(base_cfg, dtype="bfloat16")
    # tokenizer and generation config copied from the base byte for byte
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert open(os.path.join(out, f), "rb").read() == open(
            os.path.join(zoo["base_bf16"], f), "rb").read(), f
    assert open(os.path.join(out, "mergekit_config.yml")).read() == text
    # README.md: front matter, then the card; local paths are no Hub ids
    readme = open(os.path.join(out, "README.md")).read()
    head = ("---\nbase_model: []\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n"
            "\n---\n# merged-model\n\nThis is a merge of pre-trained language models created "
            "using [mergekit](https://github.com/cg123/mergekit).\n\n## Merge Details\n"
            "### Merge Method\n\nThis model was merged using the [Task Arithmetic]"
            "(https://arxiv.org/abs/2212.04089) merge method using "
            f"{zoo['base_bf16']} as a base.\n\n### Models Merged\n\n"
            "The following models were included in the merge:\n")
    assert readme.startswith(head)
    rest = readme[len(head):]
    bullets, tail = rest.split("\n\n", 1)
    assert sorted(bullets.split("\n")) == sorted(f"* {zoo[n]}" for n in ("ft1_bf16", "ft2_bf16",
                                                                         "ft3_bf16"))
    assert tail == ("### Configuration\n\nThe following YAML configuration was used to "
                    f"produce this model:\n\n```yaml\n{text}\n```\n")
    # one shard: model.safetensors, no index
    single = str(tmp_path / "single")
    M.run_merge(text, single)
    assert [f for f in os.listdir(single) if "safetensors" in f] == ["model.safetensors"]


def test_config_dtype(zoo, tmp_path):
    """config.json's dtype follows out_dtype, else dtype, else stays the base's; the
    tensors come out in out_dtype, else in the compute dtype."""
    for extra, want_cfg, want_st in (("out_dtype: float32\n", "float32", "F32"),
                                     ("dtype: float32\n", "float32", "F32"),
                                     ("dtype: float16\nout_dtype: bfloat16\n", "bfloat16", "BF16"),
                                     ("", "bfloat16", "BF16")):
        out = str(tmp_path / f"cfg{len(extra)}")
        _, dts = M.run_merge(M.recipe("linear_bf16", zoo) + extra, out)
        assert set(dts.values()) == {want_st}, extra
        assert json.load(open(os.path.join(out, "config.json")))["dtype"] == want_cfg, extra


def test_cli_matches_api(zoo, merges, tmp_path):
    """mergekit-yaml writes the same tensors as the in-process run_merge."""
    _, (api, _) = merges("ties")
    cli, _ = M.run_merge(M.recipe("ties", zoo), str(tmp_path / "cli"), cli=True)
    assert_model_bits(cli, api, "mergekit-yaml vs run_merge")
