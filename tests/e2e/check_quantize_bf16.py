#!/usr/bin/env python3
"""Checks `forge quantize` of a BF16 source (tests/e2e/make_bf16.py) against
references that need only the gguf package:

  1. every tensor forge quantized holds gguf.quants.quantize of the BF16
     values widened to f32, bit for bit, where the package implements the
     type (Q8_0 Q4_0 Q4_1 Q5_0 Q5_1);
  2. every tensor forge quantized, of any type (the K-quants included), has
     the type and bytes of forge's quantization of widened.gguf, the same
     values as F32: BF16 in, the row is the widened row (forge's f32
     quantizers are proven bit-identical to ggml's by
     tests/unit/test_quantize.c);
  3. the tensors it keeps are exactly the 1-D ones (norms: llama.cpp's rules
     quantize no 1-D tensor), each with IN's type and bytes (llama.cpp copies
     such a tensor as it is, BF16 included; run.sh checks that against
     llama.cpp itself where llama-cpp-python is installed).

usage: check_quantize_bf16.py IN.gguf OUT.gguf OUT_FROM_WIDENED.gguf
Prints one summary line and exits 0, or what differs and exits 1.
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import quantize

PACKAGE_TYPES = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}


def raw(t):
    return np.asarray(t.data).view(np.uint8).reshape(-1)


def values(t):
    """The f32 values of an F32 or BF16 tensor, one row per ne[0] elements."""
    d = np.asarray(t.data)
    x = (d.view(np.uint16).astype(np.uint32) << 16).view(np.float32) if t.tensor_type == T.BF16 else d
    return x.astype(np.float32).reshape(-1, int(t.shape[0]))


def main():
    rin, rout, rwide = (GGUFReader(p) for p in sys.argv[1:4])
    errors = []
    if [t.name for t in rout.tensors] != [t.name for t in rin.tensors]:
        errors.append("tensor order differs from IN")
    tin = {t.name: t for t in rin.tensors}
    wide = {t.name: t for t in rwide.tensors}
    n_bf16 = sum(t.tensor_type == T.BF16 for t in rin.tensors)
    quantized, n_pkg, kept = set(), 0, []
    for t in rout.tensors:
        src, w = tin.get(t.name), wide.get(t.name)
        if src is None or w is None:
            errors.append(f"{t.name}: not in IN or in the widened file's output")
            continue
        one_d = len(src.shape) < 2
        if t.tensor_type == src.tensor_type:
            kept.append(f"{t.name} {t.tensor_type.name}")
            if not one_d:
                errors.append(f"{t.name}: a 2-D weight kept as {t.tensor_type.name}; llama.cpp quantizes it")
            if not np.array_equal(raw(t), raw(src)):
                errors.append(f"{t.name}: kept as {t.tensor_type.name} but its bytes changed")
            continue
        if one_d:
            errors.append(f"{t.name}: a 1-D tensor quantized to {t.tensor_type.name}; llama.cpp keeps it")
        quantized.add(t.tensor_type.name)
        if t.tensor_type != w.tensor_type:
            errors.append(f"{t.name}: {t.tensor_type.name} from BF16, {w.tensor_type.name} from the widened F32")
        elif not np.array_equal(raw(t), raw(w)):
            errors.append(f"{t.name} ({t.tensor_type.name}): bytes differ from the widened F32 file's")
        if t.tensor_type in PACKAGE_TYPES:
            want = quantize(values(src), t.tensor_type).view(np.uint8).reshape(-1)
            if not np.array_equal(raw(t), want):
                errors.append(f"{t.name} ({t.tensor_type.name}): bytes differ from gguf.quants.quantize")
            n_pkg += 1
    if n_bf16 == 0:
        errors.append("IN has no BF16 tensor")
    if errors:
        print("\n".join(errors[:20]))
        sys.exit(1)
    n_q = len(rout.tensors) - len(kept)
    print(f"{n_q} of {len(rout.tensors)} tensors quantized ({', '.join(sorted(quantized))}) equal forge's "
          f"quantization of the widened F32 values" + (f", {n_pkg} the gguf package's" if n_pkg else "")
          + f"; {len(kept)} 1-D kept as they are ({', '.join(sorted({k.split()[1] for k in kept}))})")


if __name__ == "__main__":
    main()
