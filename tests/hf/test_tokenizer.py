"""Tokenizer, chat template and generation config of the mounts (issue item 4)."""
import os

import pytest

import hfcheck as C
import hfmodels as M
from conftest import SHARDED

MESSAGES = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w3 the quick fox"},
            {"role": "assistant", "content": "w4 alpha beta"}, {"role": "user", "content": "w5"}]


def _texts(tok):
    return ["w1 w2 w3 w120 w124 unknownword", "the quick brown fox 12 jumps over alphaahpla",
            "<|im_start|>user w7 w8<|im_end|> <pad>", f"{tok.eos_token} {tok.bos_token} w9 residual"]


def _same_tokenizer(path, ref, what):
    from transformers import AutoTokenizer
    for fast in (True, False):
        t = AutoTokenizer.from_pretrained(path, use_fast=fast)
        r = AutoTokenizer.from_pretrained(ref, use_fast=fast)
        assert len(t) == len(r), f"{what}: {len(t)} tokens, the instruct's {len(r)}"
        assert t.all_special_tokens == r.all_special_tokens, what
        assert t.pad_token == r.pad_token == M.PAD, what
        for s in _texts(r):
            assert t(s)["input_ids"] == r(s)["input_ids"], f"{what}: encoding of {s!r}"
            assert t.decode(t(s)["input_ids"]) == r.decode(r(s)["input_ids"]), what
        for gen in (False, True):
            a = t.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen)
            b = r.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen)
            assert a == b, f"{what}: chat template renders {a!r}, the instruct's {b!r}"
            assert "<|im_start|>" in a
            assert (t.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=gen)
                    == r.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=gen))


def _eos(path):
    from transformers import GenerationConfig
    return GenerationConfig.from_pretrained(path).eos_token_id


@pytest.mark.parametrize("key", SHARDED)
def test_tokenizer_and_chat_template_of_merge(zoo, mounter, key):
    p = zoo(key)
    mp = mounter.mount(f"{p.base}+{p.res['f32']}")
    _same_tokenizer(mp, p.ins, f"{key}: BASE+DELTA mount")
    assert C.read_bytes(os.path.join(mp, "chat_template.jinja")) == \
        C.read_bytes(os.path.join(p.ins, "chat_template.jinja"))


@pytest.mark.parametrize("key", SHARDED)
def test_tokenizer_of_compute_mount(zoo, mounter, key):
    p = zoo(key)
    mp = mounter.mount(f"{p.ins}-{p.base}")
    _same_tokenizer(mp, p.ins, f"{key}: compute mount")
    assert _eos(mp) == _eos(p.ins)


@pytest.mark.parametrize("key", SHARDED)
def test_generation_config_carries_instruct_eos(zoo, mounter, tmp_path, key):
    """BASE + residuals that carry the instruct's generation_config.json (residfs's compute
    mode writes it): the mount's generation config has the instruct's eos ids."""
    p = zoo(key)
    want = _eos(p.ins)
    assert isinstance(want, list) and len(want) == 2
    res = C.export([f"{p.ins}-{p.base}"], str(tmp_path / "res"))
    mp = mounter.mount(f"{p.base}+{res}")
    assert _eos(mp) == want
    C.assert_same_tensors(C.read_dir(mp), C.read_dir(p.ins), f"{key}: base + residfs residuals")
    # and through a mount of the compute mode, without writing anything
    res_mp = mounter.mount(f"{p.ins}-{p.base}")
    assert _eos(mounter.mount(f"{p.base}+{res_mp}")) == want


@pytest.mark.parametrize("key", SHARDED)
def test_generation_config_with_package_residuals(zoo, mounter, tmp_path, key):
    """Documented in docs/peers.md: Residuals.save_pretrained writes no
    generation_config.json, so BASE + the package's residuals can only show the base's
    generation config (one eos id), which is also what the package's own apply writes.
    A generation_config.json put beside the package's residuals is used."""
    from residuals import Residuals
    p = zoo(key)
    assert not os.path.exists(os.path.join(p.res["f32"], "generation_config.json"))
    base_eos = _eos(p.base)
    mp = mounter.mount(f"{p.base}+{p.res['f32']}")
    assert _eos(mp) == base_eos != _eos(p.ins)
    assert C.read_bytes(os.path.join(mp, "generation_config.json")) == \
        C.read_bytes(os.path.join(p.base, "generation_config.json"))
    out = str(tmp_path / "pkg")
    Residuals.from_pretrained(p.res["f32"]).apply(p.base, out_dir=out)
    assert _eos(out) == base_eos
    # copying the instruct's generation config beside the residuals fixes it
    # (hard links: a symbolic link out of the directory is refused, docs/security.md)
    res = str(tmp_path / "res")
    os.makedirs(res)
    for fn in os.listdir(p.res["f32"]):
        os.link(os.path.join(p.res["f32"], fn), os.path.join(res, fn))
    os.link(os.path.join(p.ins, "generation_config.json"), os.path.join(res, "generation_config.json"))
    assert _eos(mounter.mount(f"{p.base}+{res}")) == _eos(p.ins)
