"""Greedy generation with vLLM's offline API, one engine per process.

    python vllm_generate.py MODEL_DIR OUT.json

Loads MODEL_DIR with `vllm.LLM` (bf16, eager, CPU settings from the
environment: VLLM_CPU_KVCACHE_SPACE), generates PROMPTS greedily
(temperature 0, MAX_TOKENS tokens each, EOS ignored) with the top LOGPROBS
log-probabilities of every step, and writes them to OUT.json: token ids, text,
and for each step every (token id, logprob, rank) that vLLM returned.  Floats
go through JSON as Python writes them (repr, which round-trips exactly), so two
files compare equal only when every logprob is the same float.

Each prompt is a request of its own, one after another: vLLM's engine runs in
another process and batches whatever requests have arrived, so several
prompts submitted together can be batched differently from one run to the
next, and a different batch gives different float rounding.  One request at a
time makes the sequence of batches, hence every float, a function of the
weights alone.

Run by tests/vllm/test_vllm.py in a subprocess: two engines in one process do
not shut down and start cleanly.
"""
import json
import os
import sys
import time

PROMPTS = ["w1 w2 w3 w4", "w10 w20 w30", "w200 w7 w7 w7 w99 w5", "w42", "w5 w4 w3 w2 w1 w0 w9"]
MAX_TOKENS = 16
LOGPROBS = 5
MAX_MODEL_LEN = 128


def main():
    model, out = sys.argv[1], sys.argv[2]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    t0 = time.monotonic()
    import vllm
    from vllm import LLM, SamplingParams
    llm = LLM(model=model, dtype="bfloat16", enforce_eager=True, max_model_len=MAX_MODEL_LEN,
              seed=0)
    t1 = time.monotonic()
    sp = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=LOGPROBS,
                        ignore_eos=True)
    results = []
    for prompt in PROMPTS:
        (o,) = llm.generate([prompt], sp, use_tqdm=False)
        c = o.outputs[0]
        steps = []
        for step in c.logprobs:
            steps.append(sorted([[int(tok), lp.logprob, lp.rank] for tok, lp in step.items()],
                                key=lambda e: (e[2], e[0])))
        results.append({"prompt": prompt, "prompt_token_ids": list(o.prompt_token_ids),
                        "token_ids": list(c.token_ids), "text": c.text,
                        "cumulative_logprob": c.cumulative_logprob, "logprobs": steps})
    t2 = time.monotonic()
    with open(out + ".tmp", "w") as f:
        json.dump({"model": model, "vllm": vllm.__version__, "results": results,
                   "load_s": round(t1 - t0, 2), "generate_s": round(t2 - t1, 2)}, f)
    os.replace(out + ".tmp", out)
    print(f"vllm_generate: {model}: engine up in {t1 - t0:.1f} s, generated in {t2 - t1:.1f} s",
          flush=True)
    # the engine's processes are ended here, before the interpreter exits
    del llm


if __name__ == "__main__":   # the engine spawns processes that import this file
    main()
