#!/usr/bin/env python3
"""Writes the models forge must refuse at load (issue 7, "Bad files") into
OUTDIR, for tests/e2e/run.sh: each is a committed synthetic llama
(tests/data/llama-synth) copied by the gguf package with one change.

  bert.gguf      general.architecture 'bert' (llama.* keys renamed bert.*,
                 tokenizer.ggml.model 'bert', WordPiece, as llama.cpp writes BERT)
  gpt-oss.gguf   general.architecture 'gpt-oss' (keys renamed gpt-oss.*)
  iq2_xxs.gguf   blk.0.ffn_up.weight as IQ2_XXS (zero bytes)
  tq2_0.gguf     blk.0.attn_k.weight as TQ2_0 (zero bytes)

The type variants use the mqa shape, whose rows of 256 fit those types'
256-element blocks. tests/unit/test_badmodel.c builds the same files with
forge's own writer.

usage: make_bad_models.py OUTDIR   (from the repository root)
"""
import os
import sys

import numpy as np
import gguf

SYNTH = "tests/data/llama-synth"


def copy(src, dst, arch=None, tokenizer=None, tensor=None, qtype=None):
    r = gguf.GGUFReader(src)
    src_arch = "llama"
    w = gguf.GGUFWriter(dst, arch or src_arch)  # writes general.architecture
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment"):
            continue
        if tokenizer and name == "tokenizer.ggml.model":
            w.add_string(name, tokenizer)
            continue
        key = arch + name[len(src_arch):] if arch and name.startswith(src_arch + ".") else name
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    found = False
    for t in r.tensors:
        if t.name == tensor:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            ne0, rows = int(t.shape[0]), int(np.prod(t.shape[1:]))
            assert ne0 % block == 0, f"{t.name}: rows of {ne0} do not fit {qtype.name} blocks of {block}"
            w.add_tensor(t.name, np.zeros((rows, ne0 // block * size), np.uint8), raw_dtype=qtype)
            found = True
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    assert tensor is None or found, f"{src} has no tensor {tensor}"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    Q = gguf.GGMLQuantizationType
    copy(f"{SYNTH}/gqa-q4_0.gguf", f"{out}/bert.gguf", arch="bert", tokenizer="bert")
    copy(f"{SYNTH}/gqa-q4_0.gguf", f"{out}/gpt-oss.gguf", arch="gpt-oss")
    copy(f"{SYNTH}/mqa-q4_0.gguf", f"{out}/iq2_xxs.gguf", tensor="blk.0.ffn_up.weight", qtype=Q.IQ2_XXS)
    copy(f"{SYNTH}/mqa-q4_0.gguf", f"{out}/tq2_0.gguf", tensor="blk.0.attn_k.weight", qtype=Q.TQ2_0)
    # The unchanged copy, which forge runs: the one change is what fails.
    copy(f"{SYNTH}/mqa-q4_0.gguf", f"{out}/control.gguf")


if __name__ == "__main__":
    main()
