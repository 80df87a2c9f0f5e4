"""Every mounted file through the safetensors package, and exports through
transformers (issue item 5)."""
import os
import subprocess
import sys

import pytest

import hfcheck as C
from conftest import ALL, ONE_PER_ARCH


def _mounts(p):
    """(name, args, expected __metadata__ of its safetensors files)"""
    r = p.res["f32"]
    return [
        ("merge", [f"{p.base}+{r}"], {"format": "pt"}),
        ("merge-bf16-delta", [f"{p.base}+{p.res['bf16']}"], {"format": "pt"}),
        ("fp32", [f"{p.base}+{r}", "--dtype", "float32"], {"format": "pt"}),
        ("fp16", [f"{p.base}+{r}", "--dtype", "fp16"], {"format": "pt"}),
        ("cast-first", [f"{p.base}+0.5*{r}", "--rounding", "cast-first"], {"format": "pt"}),
        ("multi", [f"{p.base}+{r}-0.5*{p.res2}"], {"format": "pt"}),
        ("compute", [f"{p.ins}-{p.base}"], None),
    ]


@pytest.mark.parametrize("key", ONE_PER_ARCH + ["llama_fp32_single", "tied_fp16_single", "gpt2_fp16_single"])
def test_every_mounted_file_opens_with_safetensors(zoo, mounter, key):
    """safe_open(framework="pt") (keys, metadata, get_tensor, get_slice) and load_file on
    every safetensors file of every kind of mount; the index names every tensor's file."""
    from safetensors import safe_open
    p = zoo(key)
    for name, args, meta in _mounts(p):
        mp = mounter.mount(*args)
        tensors = C.read_dir(mp)
        for fn in C.st_files(mp):
            with safe_open(os.path.join(mp, fn), framework="pt") as f:
                assert f.metadata() == meta, f"{key} {name}: {fn} metadata {f.metadata()!r}"
        idx = C.index_map(mp)
        if idx is not None:
            assert sorted(idx["weight_map"]) == sorted(tensors)
            for t, fn in idx["weight_map"].items():
                with safe_open(os.path.join(mp, fn), framework="pt") as f:
                    assert t in f.keys(), f"{key} {name}: index puts {t} in {fn}"
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            assert idx["metadata"]["total_size"] == size, f"{key} {name}: total_size"


_LOAD = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
import hfcheck as C
ids = C.prompt_ids(int(sys.argv[5]))
dt = getattr(torch, sys.argv[4])
C.assert_bits(C.logits(sys.argv[2], dt, ids), C.logits(sys.argv[3], dt, ids), "export vs instruct logits")
print("same logits")
"""


@pytest.mark.parametrize("key", ALL)
def test_export_equals_mount_and_loads_offline(zoo, mounter, tmp_path, key):
    p = zoo(key)
    spec = f"{p.base}+{p.res['f32']}"
    mp = mounter.mount(spec)
    out = C.export([spec], str(tmp_path / "exp"))
    assert sorted(os.listdir(out)) == sorted(os.listdir(mp))
    for fn in sorted(os.listdir(mp)):
        a, b = C.read_bytes(os.path.join(mp, fn)), C.read_bytes(os.path.join(out, fn))
        assert a == b, f"{key}: exported {fn} ({len(b)} bytes) differs from the mount's ({len(a)} bytes)"
    C.read_dir(out, check_metadata={"format": "pt"})
    ids = C.prompt_ids(p.ins_vocab)   # HF_HUB_OFFLINE=1 is set by conftest.py
    C.assert_bits(C.logits(out, p.torch_dtype, ids), C.logits(p.ins, p.torch_dtype, ids),
                  f"{key}: logits of the export vs the instruct model")


@pytest.mark.parametrize("key", ONE_PER_ARCH)
def test_export_loads_in_a_fresh_offline_process(zoo, tmp_path, key):
    """A new Python process with only HF_HUB_OFFLINE=1 loads the export with transformers."""
    p = zoo(key)
    out = C.export([f"{p.base}+{p.res['f32']}"], str(tmp_path / "exp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HUB_OFFLINE"] = "1"
    r = subprocess.run([sys.executable, "-c", _LOAD, C.HERE, out, p.ins,
                        str(p.torch_dtype).split(".")[1], str(p.ins_vocab)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "same logits" in r.stdout, r.stdout + r.stderr
