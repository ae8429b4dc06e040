#!/usr/bin/env python3
"""Checks `forge info --json MODEL` (saved in INFO) against the gguf package.

usage: check_info.py MODEL INFO.json
Exits non-zero with the first difference; prints a one-line summary if equal.
"""
import json
import os
import sys
from collections import defaultdict

import numpy as np
from gguf import GGUFReader


def main():
    model, info_path = sys.argv[1], sys.argv[2]
    info = json.load(open(info_path))
    r = GGUFReader(model)
    f = r.fields

    def val(key, default=None):
        return f[key].contents() if key in f else default

    def same(what, got, want):
        if got != want:
            sys.exit(f"{what}: forge says {got!r}, gguf package says {want!r}")

    same("file_size", info["file_size"], os.path.getsize(model))
    same("n_kv", info["n_kv"], len(f) - 3)  # GGUF.version/tensor_count/kv_count are pseudo-fields
    same("alignment", info["alignment"], val("general.alignment", 32))
    same("architecture", info.get("architecture"), val("general.architecture"))
    same("n_tensors", info["n_tensors"], len(r.tensors))
    by = defaultdict(lambda: [0, 0, 0])
    for t in r.tensors:
        e = by[t.tensor_type.name]
        e[0] += 1
        e[1] += int(t.n_bytes)
        e[2] += int(t.n_elements)
    got_by = {k: [v["count"], v["bytes"], v["elements"]] for k, v in info["tensors_by_type"].items()}
    same("tensors_by_type", got_by, dict(by))
    same("tensor_bytes", info["tensor_bytes"], sum(v[1] for v in by.values()))
    same("n_params", info["n_params"], sum(v[2] for v in by.values()))

    arch = val("general.architecture")
    hp = info.get("hparams")
    if hp is not None:
        for key, name in [("block_count", "n_layer"), ("embedding_length", "n_embd"),
                          ("attention.head_count", "n_head"), ("feed_forward_length", "n_ff"),
                          ("context_length", "n_ctx_train")]:
            same(name, hp[name], val(f"{arch}.{key}", -1))
        same("n_head_kv", hp["n_head_kv"], val(f"{arch}.attention.head_count_kv", hp["n_head"]))
        # The file stores float32; cJSON prints doubles with 15 significant
        # digits, which is exact once rounded back to float32.
        f32 = lambda x: float(np.float32(x))  # noqa: E731
        same("rope_base", f32(hp["rope_base"]), f32(val(f"{arch}.rope.freq_base", 10000.0)))
        same("norm_eps", f32(hp["norm_eps"]), f32(val(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)))
    if "tokenizer.ggml.tokens" in f:
        v = info["vocab"]
        same("vocab.size", v["size"], len(f["tokenizer.ggml.tokens"].data))
        same("vocab.model", v["model"], val("tokenizer.ggml.model"))
        tokens = f["tokenizer.ggml.tokens"]
        for sp, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                        ("pad", "padding_token_id")]:
            want = val(f"tokenizer.ggml.{key}")
            if want is not None:
                same(f"vocab.special.{sp}.id", v["special"][sp]["id"], want)
                same(f"vocab.special.{sp}.text", v["special"][sp]["text"], tokens.contents(want))
        same("add_bos", v["add_bos"], val("tokenizer.ggml.add_bos_token", v["add_bos"]))
    print(f"{len(r.tensors)} tensors, {len(by)} types, {sum(x[1] for x in by.values())} bytes")


if __name__ == "__main__":
    main()
