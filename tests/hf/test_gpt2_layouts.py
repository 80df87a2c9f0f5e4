"""GPT-2 checkpoints as they exist on the hub, against the package's residuals.

transformers 4.57 saves GPT-2 with state_dict names (`transformer.h.0...`) and
without the causal-mask buffers (`attn.bias`, `attn.masked_bias` are
non-persistent), which is what the other tests use.  Older checkpoints differ:

- "prefixed" (e.g. DialoGPT, mGPT): `transformer.*` names plus the float buffers
  `transformer.h.N.attn.bias` ([1,1,P,P] lower-triangular mask) and
  `transformer.h.N.attn.masked_bias` (a scalar);
- "bare" (openai-community/gpt2 itself): no `transformer.` prefix at all
  (`h.0.attn.c_attn.weight`, `wte.weight`) plus `h.N.attn.bias`.

transformers loads both (it strips or adds the base-model prefix and ignores the
buffers).  The `residuals` package keys its deltas by state_dict names
(`transformer.*`) and has no delta for the buffers.
"""
import os
import shutil

import pytest
import torch

import hfcheck as C

KEY = "gpt2_fp32_single"


def _legacy(p, root, layout, dtype=None):
    """A copy of the pair's GPT-2 base in an older checkpoint layout."""
    from safetensors.torch import save_file
    os.makedirs(root)
    for fn in os.listdir(p.base):
        if not fn.endswith(".safetensors") and fn != "model.safetensors.index.json":
            shutil.copy(os.path.join(p.base, fn), root)
    ts = C.read_dir(p.base)
    if dtype is not None:
        ts = {k: v.to(dtype) for k, v in ts.items()}
    cfg = C.read_json(os.path.join(p.base, "config.json"))
    n, P = cfg["n_layer"], cfg["n_positions"]
    bdt = next(iter(ts.values())).dtype
    for i in range(n):
        ts[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=bdt)).view(1, 1, P, P)
        if layout == "prefixed":
            ts[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4, dtype=bdt)
    if layout == "bare":
        ts = {k.removeprefix("transformer."): v for k, v in ts.items()}
    if dtype is not None:
        cfg["dtype"] = str(dtype).split(".")[1]
        with open(os.path.join(root, "config.json"), "w") as f:
            import json
            json.dump(cfg, f, indent=2)
    save_file(ts, os.path.join(root, "model.safetensors"), metadata={"format": "pt"})
    return root


@pytest.mark.parametrize("layout", ["prefixed", "bare"])
def test_transformers_and_package_read_legacy_layouts(zoo, tmp_path, layout):
    """Facts the other tests rest on: transformers loads the legacy file to the same
    weights, and Residuals.from_models on it gives the same residuals, keyed
    `transformer.*`, with no buffer."""
    from residuals import Residuals
    p = zoo(KEY)
    legacy = _legacy(p, str(tmp_path / "legacy"), layout)
    a = C.load_model(legacy, torch.float32).state_dict()
    b = C.load_model(p.base, torch.float32).state_dict()
    C.assert_same_tensors(a, b, f"{layout}: transformers state_dict of the legacy file")
    r = Residuals.from_models(legacy, p.ins)
    want = C.read_dir(p.res["f32"])
    C.assert_same_tensors(r.state_dict, want, f"{layout}: package residuals of the legacy base")
    assert not any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in r.state_dict)


def test_prefixed_layout_buffers_refused_without_passthrough(zoo, tmp_path):
    """The buffers are float tensors that no delta names: refused, naming one."""
    p = zoo(KEY)
    legacy = _legacy(p, str(tmp_path / "legacy"), "prefixed")
    r = C.run(["inspect", f"{legacy}+{p.res['f32']}"])
    assert r.returncode == 1, r
    assert "residfs: error:" in r.stderr and "attn." in r.stderr and "bias" in r.stderr, r
    assert "--passthrough" in r.stderr, f"the error does not point to --passthrough: {r}"


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_prefixed_layout_with_passthrough_equals_instruct(zoo, mounter, tmp_path, dtype):
    """With --passthrough the buffers pass through unchanged and the merged weights load
    to the instruct logits (fp32 base; and a bf16 copy against the bf16-rounded instruct)."""
    p = zoo(KEY)
    legacy = _legacy(p, str(tmp_path / "legacy"), "prefixed", dtype)
    mp = mounter.mount(f"{legacy}+{p.res['f32']}", "--passthrough")
    got = C.read_dir(mp)
    base = C.read_dir(legacy)
    ins = C.read_dir(p.ins)
    for k, t in base.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            C.assert_bits(got[k], t, f"buffer {k} passes through")
        else:
            C.assert_bits(got[k], C.formula(t, [(1, C.read_dir(p.res["f32"])[k])]), k)
    if dtype is None:
        for k, t in ins.items():
            C.assert_bits(got[k], t, f"prefixed legacy base + package residuals: {k}")
        ids = C.prompt_ids(p.ins_vocab)
        C.assert_bits(C.logits(mp, torch.float32, ids), C.logits(p.ins, torch.float32, ids),
                      "prefixed legacy base + package residuals: logits")


def test_bare_layout_merges_with_package_residuals(zoo, mounter, tmp_path):
    """openai-community/gpt2's own layout (no `transformer.` prefix) + the package's
    residuals (`transformer.*` names) must give the instruct weights, as the package's
    apply does on that base (it goes through transformers' names).

    residfs matches the delta's names modulo the `transformer.` prefix (matching them
    exactly made every tensor pass through unmerged under --passthrough); the attention
    mask buffers of this layout have no delta and need --passthrough."""
    from residuals import Residuals
    p = zoo(KEY)
    legacy = _legacy(p, str(tmp_path / "legacy"), "bare")
    # the package merges this base correctly
    sd = Residuals.from_pretrained(p.res["f32"]).apply(legacy).state_dict()
    ins = C.read_dir(p.ins)
    for k, t in ins.items():
        C.assert_bits(sd[k], t, f"package apply on the bare-layout base: {k}")
    r = C.run(["inspect", f"{legacy}+{p.res['f32']}", "--passthrough"])
    assert r.returncode == 0, r
    mp = mounter.mount(f"{legacy}+{p.res['f32']}", "--passthrough")
    got = C.read_dir(mp)
    for k, t in ins.items():
        C.assert_bits(got[k.removeprefix("transformer.")], t,
                      f"bare-layout GPT-2 base + package residuals (--passthrough): {k}")
    ids = C.prompt_ids(p.ins_vocab)
    C.assert_bits(C.logits(mp, torch.float32, ids), C.logits(p.ins, torch.float32, ids),
                  "bare-layout GPT-2 base + package residuals (--passthrough): logits of the mount "
                  "vs the instruct model")
