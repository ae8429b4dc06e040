#!/usr/bin/env python3
"""Writes small synthetic-weight llama models and HF transformers reference
logits for them: the end-to-end goldens of the CPU and GPU backends.

Two shapes: "gqa" (n_embd 64, 4 query heads over 2 KV heads of 16 dims)
and "mqa" (n_embd 256, 2 query heads sharing 1 KV head of 128 dims, the
head size of most real models). For each shape and weight type (F32, F16,
Q8_0, Q4_0) the same random weights (per-shape seed) are written to
tests/data/llama-synth/<shape>-<type>.gguf with llama.cpp's
tensor names, layout and metadata (q/k rows in GGUF's rotary order), and
the quantized ones are quantized by the gguf package. transformers then
loads each file itself (dequantizing every weight to f32, undoing the q/k
permutation), runs LlamaForCausalLM in float32 on the CPU, and records for a
fixed token sequence:
  - the logits at every position (all of the vocabulary);
  - the greedy continuation of 64 tokens (argmax, full recompute each step).
Written to tests/data/llama-synth/<shape>-<type>.json, first line
"forge-golden llama-synth v1".

The weights are scaled so that activations stay O(1) and the logits spread
over several units, and the seed is the first from 1 whose greedy
continuations (for every type) never pick between two logits closer than
MIN_MARGIN: backends whose KV cache is F16 (forge's GPU) round the keys and
values, which moves logits by ~1e-3, and must still follow transformers' picks.

usage: tools/make_llama_synth.py   (needs numpy, gguf, torch, transformers)
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "llama-synth")

SHAPES = {  # n_embd, n_head, n_head_kv, n_ff, n_layer
    "gqa": (64, 4, 2, 160, 2),
    "mqa": (256, 2, 1, 128, 1),
}
N_VOCAB, N_CTX = 320, 256
N_EMBD = N_HEAD = N_HEAD_KV = N_FF = N_LAYER = HEAD_DIM = 0  # set per shape by use_shape


def use_shape(name):
    global N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, HEAD_DIM
    N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = SHAPES[name]
    HEAD_DIM = N_EMBD // N_HEAD
PROMPT = [1, 17, 200, 45, 301, 9, 77, 260, 5, 130, 88, 219, 3, 150, 42, 299, 61, 8, 240, 111]
N_GEN = 64
MIN_MARGIN = 0.02


def permute(w, n_head):
    """HF's q/k row order to GGUF's (llama.cpp's convert_hf_to_gguf permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def weights(seed):
    rng = np.random.default_rng(seed)
    mat = lambda rows, cols, s: (rng.standard_normal((rows, cols)) * s).astype(np.float32)
    norm = lambda n: (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    w = {"token_embd.weight": mat(N_VOCAB, N_EMBD, 1.0), "output_norm.weight": norm(N_EMBD),
         "output.weight": mat(N_VOCAB, N_EMBD, 0.25)}
    s = 1.0 / np.sqrt(N_EMBD)
    for l in range(N_LAYER):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(N_EMBD)
        w[p + "attn_q.weight"] = permute(mat(N_HEAD * HEAD_DIM, N_EMBD, 2 * s), N_HEAD)
        w[p + "attn_k.weight"] = permute(mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 2 * s), N_HEAD_KV)
        w[p + "attn_v.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, s)
        w[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM, s)
        w[p + "ffn_norm.weight"] = norm(N_EMBD)
        w[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, s)
        w[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, s)
        w[p + "ffn_down.weight"] = mat(N_EMBD, N_FF, 1.0 / np.sqrt(N_FF))
    return w


def write_gguf(path, w, qname):
    import gguf
    qt = {"f32": None, "f16": None, "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[qname]
    g = gguf.GGUFWriter(path, "llama")
    g.add_name(f"forge-llama-synth-{qname}")
    g.add_context_length(N_CTX)
    g.add_embedding_length(N_EMBD)
    g.add_block_count(N_LAYER)
    g.add_feed_forward_length(N_FF)
    g.add_head_count(N_HEAD)
    g.add_head_count_kv(N_HEAD_KV)
    g.add_rope_freq_base(10000.0)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_rope_dimension_count(HEAD_DIM)
    g.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2}[qname])
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [f"t{i}" for i in range(N_VOCAB - len(toks))]
    g.add_tokenizer_model("llama")
    g.add_token_list(toks)
    g.add_token_scores([0.0] * N_VOCAB)
    g.add_token_types([2, 3, 3] + [6] * 256 + [1] * (N_VOCAB - 259))
    g.add_bos_token_id(1)
    g.add_eos_token_id(2)
    g.add_unk_token_id(0)
    for name, t in w.items():
        if t.ndim == 1 or qname == "f32":
            g.add_tensor(name, t)
        elif qname == "f16":
            g.add_tensor(name, t.astype(np.float16))
        else:
            g.add_tensor(name, gguf.quants.quantize(t, qt), raw_dtype=qt)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def reference(path):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        logits = m(torch.tensor([PROMPT])).logits[0].numpy()
        seq, gen, margins = list(PROMPT), [], []
        for _ in range(N_GEN):
            last = m(torch.tensor([seq])).logits[0, -1].numpy()
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
            nxt = int(np.argmax(last))
            gen.append(nxt)
            seq.append(nxt)
    return logits, gen, margins


def main():
    import torch
    import transformers
    os.makedirs(OUT, exist_ok=True)
    for shape in SHAPES:
        use_shape(shape)
        for seed in range(1, 400):
            w, docs, ok = weights(seed), {}, True
            for q in ["f32", "f16", "q8_0", "q4_0"]:
                path = os.path.join(OUT, f"{shape}-{q}.gguf")
                write_gguf(path, w, q)
                logits, gen, margins = reference(path)
                print(f"{shape} seed {seed} {q}: {os.path.getsize(path)} bytes; logits {logits.min():.2f}.."
                      f"{logits.max():.2f}; smallest greedy margin {min(margins):.4f}", file=sys.stderr)
                if min(margins) < MIN_MARGIN:
                    ok = False
                    break
                docs[q] = {"model": f"{shape}-{q}.gguf", "shape": dict(zip(
                               ["n_embd", "n_head", "n_head_kv", "n_ff", "n_layer"], SHAPES[shape])),
                           "seed": seed, "prompt": PROMPT, "n_vocab": N_VOCAB,
                           "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, "
                                        "float32, CPU",
                           "logits": [[round(float(v), 6) for v in row] for row in logits], "greedy": gen,
                           "greedy_margins": [round(m, 6) for m in margins]}
            if ok:
                break
        for q, doc in docs.items():
            with open(os.path.join(OUT, f"{shape}-{q}.json"), "w") as f:
                f.write("forge-golden llama-synth v1\n")
                json.dump(doc, f, separators=(",", ":"))
                f.write("\n")


if __name__ == "__main__":
    main()
