#!/usr/bin/env python3
"""Prompt and generation speed of forge and llama.cpp on the CPU, measured
the same way: the same model, the same 512-token prompt (token ids taken from
llama.cpp's tokenizer, which forge's matches), greedy decoding of 128 tokens
without stopping at EOS, the same thread count, best of N runs.

  forge      `forge run -f PROMPT -n 128 --temp 0 --ignore-eos -c 1024 -t T`,
             whose stderr line gives prefill and generation time.
  llama.cpp  llama-cpp-python (PyPI; it builds llama.cpp for this CPU), timed
             by llama.cpp's own perf counters (llama_perf_context): prompt
             eval of the 512 tokens as one batch, then 128 single-token evals.

usage: bench/cpu_vs_llamacpp.py [--model PATH] [--threads 2] [--runs 3] [--forge build/forge]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompt_text(n_tokens, tokenize):
    text = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
    # Cut the text at the token count: decode the first n_tokens back.
    return text, tokenize(text)[:n_tokens]


def run_forge(forge, model, prompt_file, n_gen, threads):
    cmd = [forge, "run", "-m", model, "-f", prompt_file, "-n", str(n_gen), "--temp", "0", "--ignore-eos",
           "-c", "1024", "-t", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"forge failed: {r.stderr}")
    m = re.search(r"prompt (\d+) tokens in ([\d.]+) ms .*generation (\d+) tokens in ([\d.]+) ms", r.stderr)
    n_p, t_p, n_g, t_g = int(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
    return n_p / (t_p / 1e3), n_g / (t_g / 1e3), n_p


def run_llamacpp(llm, ids, n_gen):
    import llama_cpp
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.eval(ids)
    n_vocab = llm.n_vocab()
    for _ in range(n_gen):
        # The last token's logits, straight from llama.cpp (no copy of all rows).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        llm.eval([int(np.argmax(logits))])
    p = llama_cpp.llama_perf_context(llm.ctx)
    return p.n_p_eval / (p.t_p_eval_ms / 1e3), p.n_eval / (p.t_eval_ms / 1e3), p.n_p_eval


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--forge", default=os.path.join(ROOT, "build", "forge"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    a = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama
    llm = Llama(a.model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads, n_threads_batch=a.threads,
                verbose=False, logits_all=False)
    text, ids = prompt_text(a.prompt, lambda t: llm.tokenize(t.encode(), add_bos=False, special=False))
    prompt = llm.detokenize(ids).decode("utf-8", errors="strict")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
        prompt_file = f.name

    res = {"forge": [], "llama.cpp": []}
    for _ in range(a.runs):
        res["forge"].append(run_forge(a.forge, a.model, prompt_file, a.gen, a.threads))
        res["llama.cpp"].append(run_llamacpp(llm, ids, a.gen))
    os.unlink(prompt_file)
    print(f"model {os.path.basename(a.model)}, {a.threads} threads, best of {a.runs}; "
          f"llama-cpp-python {llama_cpp.__version__}")
    print(f"{'engine':10s} {'pp' + str(a.prompt) + ' t/s':>12s} {'tg' + str(a.gen) + ' t/s':>12s}  prompt tokens")
    for k, v in res.items():
        print(f"{k:10s} {max(x[0] for x in v):12.1f} {max(x[1] for x in v):12.1f}  {v[0][2]}")


if __name__ == "__main__":
    main()
