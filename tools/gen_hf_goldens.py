#!/usr/bin/env python3
"""Writes HF transformers reference logits for forge's exact-arithmetic test.

transformers loads the GGUF file itself (dequantizing every weight to f32:
the same weights forge reads) and runs its own implementation of the
architecture in float32 on the CPU. For the first prompts of the llama.cpp
goldens (tests/data/llamacpp/<model>.json, whose token ids are reused), it
records the top-20 (id, logit) at each of the first 32 positions of prompt +
continuation, evaluated as one batch.

forge run with the CPU backend's reference arithmetic (f32 activations, f32
KV cache) must match these to float32 rounding; its fast path (Q8
activations, f16 KV, like llama.cpp) is compared with the llama.cpp goldens.

usage: tools/gen_hf_goldens.py [--model smollm2] [--prompts 3]
Writes tests/data/hf/<model>.json, first line "forge-golden hf v1".
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3": "gemma-3-270m-q4_k_m.gguf"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", choices=list(MODELS))
    ap.add_argument("--prompts", type=int, default=3)
    a = ap.parse_args()
    model_file = MODELS[a.model]
    model_dir = os.environ.get("FORGE_MODEL_DIR", os.path.join(ROOT, "models"))
    src = os.path.join(ROOT, "tests", "data", "llamacpp", f"{a.model}.json")
    with open(src) as f:
        assert f.readline() == "forge-golden llamacpp v1\n"
        ref = json.load(f)
    n_pos, top_k = ref["n_positions"], ref["top_k"]

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=model_file, torch_dtype=torch.float32)
    m.eval()
    out = []
    for p in ref["prompts"][: a.prompts]:
        seq = (p["ids"] + p["continuation"])[:n_pos]
        with torch.no_grad():
            logits = m(torch.tensor([seq])).logits[0].numpy()
        top = []
        for pos in range(n_pos):
            idx = np.argsort(-logits[pos], kind="stable")[:top_k]
            top.append([[int(i), float(logits[pos, i])] for i in idx])
        out.append({"ids": seq, "top": top})
        print(f"{p['text'][:40]!r}: {len(seq)} positions", file=sys.stderr)
    import transformers
    doc = {"model": model_file, "model_sha256": ref["model_sha256"],
           "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, CPU",
           "n_positions": n_pos, "top_k": top_k, "prompts": out}
    dst = os.path.join(ROOT, "tests", "data", "hf", f"{a.model}.json")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w") as f:
        f.write("forge-golden hf v1\n")
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
