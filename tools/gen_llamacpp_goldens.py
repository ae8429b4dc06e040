#!/usr/bin/env python3
"""Writes llama.cpp reference goldens for forge's end-to-end tests.

Uses llama-cpp-python (PyPI; it builds llama.cpp) on the fetched model
(tools/fetch-model), CPU only, with the settings printed into each golden.

  logits    tests/data/llamacpp/<model>.json: for each prompt, its token ids
            (llama.cpp's tokenizer, special tokens parsed), the greedy
            64-token continuation (argmax at each step, not stopped at EOS),
            and the top-20 (id, logit) at each of the first 32 positions of
            prompt + continuation, evaluated as one batch.

            llama.cpp's own numbers move with how it evaluates: flash
            attention on or off, the prompt as one batch, in batches of 8 or
            token by token. Each golden records how much: "stable" is the
            number of continuation tokens on which all those variants agree
            (greedy decoding follows near-ties, so past that point even
            llama.cpp has no single answer), and "spread" is the largest
            difference between the variants' logits over the top-20 entries.
            "margins" holds, for each continuation step, llama.cpp's top-1
            minus top-2 logit: a step whose margin is below the spread is a
            near-tie that arithmetic noise alone can flip.
  ppl       tests/data/llamacpp/<model>.ppl.json: perplexity as llama.cpp's
            perplexity tool computes it (chunks of n_ctx tokens, the first
            token of each chunk replaced by BOS when the vocab adds one, only
            the second half of each chunk scored) over a text file, for the
            first N chunks and for all of them.

usage: tools/gen_llamacpp_goldens.py [--model smollm2] [logits] [ppl --file F --ctx 512]
Each golden starts with the line "forge-golden llamacpp v1".
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}

PROMPTS = [
    # Stable for all 64 tokens under every variant (checked when written).
    "The capital of France is",
    "1, 2, 3, 4, 5, 6,",
    "<|im_start|>user\nWhat is the capital of Germany?<|im_end|>\n<|im_start|>assistant\n",
    "The first ten prime numbers are",
    "The sun rises in the east and sets in the",
    "10, 20, 30, 40,",
    "int main(void) {\n    printf(\"Hello, world!\\n\");\n",
    # Not stable all the way: near-ties that llama.cpp itself resolves
    # differently depending on how it evaluates.
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village nestled between two mountains, there lived an old clockmaker "
    "who had never once left the valley. Every morning he would",
    "Voici une recette simple de crêpes : ",
    "北京是中国的",
]

N_CONT = 64
N_POS = 32
TOP = 20


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def load(path, n_ctx, logits_all, flash_attn=False, n_batch=None):
    from llama_cpp import Llama
    n_batch = n_batch or n_ctx
    return Llama(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, logits_all=logits_all, verbose=False,
                 n_threads=os.cpu_count(), seed=0, flash_attn=flash_attn)


def settings(m):
    import llama_cpp
    return {"llama_cpp_python": llama_cpp.__version__, "n_ctx": m.n_ctx(), "device": "cpu",
            "kv_cache": "f16 (default)", "flash_attn": "default"}


def greedy(m, ids, prompt_one_by_one=False, margins=None):
    """The greedy continuation, one token at a time as a generator runs;
    margins (if a list) gets top-1 minus top-2 logit at each step."""
    m.reset()
    if prompt_one_by_one:
        for t in ids:
            m.eval([t])
    else:
        m.eval(ids)
    cont = []
    for _ in range(N_CONT):
        lg = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
        two = np.argsort(-lg, kind="stable")[:2]
        if margins is not None:
            margins.append(float(lg[two[0]] - lg[two[1]]))
        cont.append(int(two[0]))
        m.eval([int(two[0])])
    return cont


def batch_logits(m, seq):
    m.reset()
    m.eval(seq)
    return np.array(m.scores[: len(seq)], dtype=np.float32)


def gen_logits(model_file, path, out):
    m = load(path, 512, True)
    variants = [load(path, 512, True, flash_attn=True), load(path, 512, True, n_batch=8)]
    goldens = []
    for text in PROMPTS:
        ids = m.tokenize(text.encode(), add_bos=m._model.add_bos_token(), special=True)
        margins = []
        cont = greedy(m, ids, margins=margins)
        others = [greedy(v, ids) for v in variants] + [greedy(m, ids, prompt_one_by_one=True)]
        stable = min(next((i for i, (a, b) in enumerate(zip(cont, o)) if a != b), N_CONT) for o in others)
        # The first N_POS positions of prompt + continuation, as one batch.
        seq = (ids + cont)[:N_POS]
        lg = batch_logits(m, seq)
        top, spread = [], 0.0
        var_lg = [batch_logits(v, seq) for v in variants]
        for p in range(N_POS):
            idx = np.argsort(-lg[p], kind="stable")[:TOP]
            top.append([[int(i), float(lg[p][i])] for i in idx])
            for v in var_lg:
                spread = max(spread, float(np.abs(v[p][idx] - lg[p][idx]).max()))
        goldens.append({"text": text, "ids": ids, "continuation": cont, "margins": margins, "stable": stable,
                        "spread": spread, "top": top})
        print(f"{text[:40]!r}: {len(ids)} prompt tokens, stable {stable}, spread {spread:.3f} -> "
              f"{m.detokenize(cont)[:50]!r}", file=sys.stderr)
    doc = {"model": model_file, "model_sha256": sha256(path), "settings": settings(m), "n_positions": N_POS,
           "top_k": TOP, "prompts": goldens}
    write(out, doc)


def perplexity(m, tokens, n_ctx, add_bos, bos, max_chunks):
    """llama.cpp's perplexity tool's method (examples/perplexity): each chunk
    of n_ctx tokens is evaluated on its own; its first token becomes BOS if
    the vocab adds one; tokens n_ctx/2 .. n_ctx-1 are scored (log-softmax of
    the logits at the previous position)."""
    n_chunks = len(tokens) // n_ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    nll, count = 0.0, 0
    first = n_ctx // 2
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        m.reset()
        m.eval(chunk)
        for i in range(first, n_ctx - 1):
            lg = np.array(m.scores[i], dtype=np.float64)
            mx = lg.max()
            lse = mx + math.log(np.exp(lg - mx).sum())
            nll += lse - lg[tokens[c * n_ctx + i + 1]]
            count += 1
    return math.exp(nll / count), n_chunks, count


def gen_ppl(model_file, path, out, files, n_ctx, short_chunks):
    m = load(path, n_ctx, True)
    text = b"".join(open(f, "rb").read() for f in files)
    add_bos = m._model.add_bos_token()
    tokens = m.tokenize(text, add_bos=add_bos, special=False)
    res = {}
    for name, k in (("short", short_chunks), ("full", 0)):
        ppl, n_chunks, count = perplexity(m, tokens, n_ctx, add_bos, m.token_bos(), k)
        res[name] = {"ppl": ppl, "chunks": n_chunks, "scored_tokens": count}
        print(f"{name}: ppl {ppl:.6f} over {n_chunks} chunks ({count} scored tokens)", file=sys.stderr)
    doc = {"model": model_file, "model_sha256": sha256(path), "settings": settings(m),
           "files": files, "text_sha256": hashlib.sha256(text).hexdigest(), "n_tokens": len(tokens),
           "ctx": n_ctx, **res}
    write(out, doc)


def write(out, doc):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("forge-golden llamacpp v1\n")
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


PPL_FILES = ["/usr/share/common-licenses/" + n for n in
             ("GPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "GFDL-1.3")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="*", default=["logits", "ppl"], choices=["logits", "ppl"])
    ap.add_argument("--model", default="smollm2", choices=list(MODELS))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--short-chunks", type=int, default=4)
    a = ap.parse_args()
    model_file = MODELS[a.model]
    path = os.path.join(os.environ.get("FORGE_MODEL_DIR", os.path.join(ROOT, "models")), model_file)
    if not os.path.exists(path):
        sys.exit(f"{path} not found; run tools/fetch-model {a.model}")
    outdir = os.path.join(ROOT, "tests", "data", "llamacpp")
    if "logits" in a.what:
        gen_logits(model_file, path, os.path.join(outdir, f"{a.model}.json"))
    if "ppl" in a.what:
        gen_ppl(model_file, path, os.path.join(outdir, f"{a.model}.ppl.json"), PPL_FILES, a.ctx, a.short_chunks)


if __name__ == "__main__":
    main()
