#!/usr/bin/env python3
"""Generates tests/data/matmul/q8_0_act.bin, the golden for the CPU matmul's
activation quantization (src/backend/cpu/mm_*.c, checked by
tests/unit/test_matmul.c).

The expected codes and scales come from the `gguf` Python package
(gguf.quants.quantize(x, Q8_0)), an implementation of ggml's
quantize_row_q8_0_ref independent of forge; this script only builds the input
rows. Output is deterministic (fixed seed). Generated with numpy 2.4.6 and
gguf 0.19.0.

The file starts with the text line

    forge-golden matmul v1\\n

followed by little-endian binary:

    u32 n_rows
    u32 K               elements per row (a multiple of 32)
    f32 x[n_rows * K]
    u8  q8_0[n_rows * (K / 32) * 34]   gguf.quants.quantize(x, Q8_0): per
                        block of 32, f16 d then i8 qs[32]

The rows hold: random normal and uniform data at several scales; blocks whose
scale is exactly 1 or 1/2 or 2 with values on the rounding ties (k + 1/2, so
round-half-away-from-zero is checked against round-half-even); an all-zero
block; a block with one nonzero value; blocks at 1e30 and 1e-30; a block whose
largest magnitude is negative. All values are finite (NaN handling is forge's
own rule, tested without a golden).
"""
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType, quants

K = 256


def tie_block(scale, rng):
    """A block with amax = 127 * scale (so d = scale exactly) and the rest on
    ties (k + 0.5) * scale, mixed signs."""
    k = rng.integers(0, 126, size=31).astype(np.float32) + np.float32(0.5)
    k *= rng.choice(np.array([-1, 1], dtype=np.float32), size=31)
    b = np.concatenate([np.array([127.0], dtype=np.float32), k]).astype(np.float32)
    rng.shuffle(b)
    return (b * np.float32(scale)).astype(np.float32)


def main():
    rng = np.random.default_rng(20261125)
    rows = []
    rows.append(rng.standard_normal(K).astype(np.float32))
    rows.append(rng.uniform(-1, 1, K).astype(np.float32))
    rows.append((rng.standard_normal(K) * 1e3).astype(np.float32))
    rows.append((rng.standard_normal(K) * 1e-3).astype(np.float32))
    rows.append(np.concatenate([tie_block(s, rng) for s in (1.0, 0.5, 2.0, 1.0, 0.25, 4.0, 1.0, 0.5)]))
    special = []
    special.append(np.zeros(32, dtype=np.float32))
    one = np.zeros(32, dtype=np.float32)
    one[7] = -3.25
    special.append(one)
    special.append((rng.standard_normal(32) * 1e30).astype(np.float32))
    special.append((rng.standard_normal(32) * 1e-30).astype(np.float32))
    neg = rng.uniform(-1, 1, 32).astype(np.float32)
    neg[3] = -5.0
    special.append(neg)
    special.append(np.full(32, 0.5, dtype=np.float32))
    special.append(np.full(32, -1.0, dtype=np.float32))
    special.append(rng.uniform(-1, 1, 32).astype(np.float32))
    rows.append(np.concatenate(special))
    x = np.stack(rows).astype(np.float32)
    assert x.shape[1] == K and np.all(np.isfinite(x))

    with np.errstate(over="ignore"):  # the 1e30 block's d is Inf as f16, as in ggml
        q = quants.quantize(x, GGMLQuantizationType.Q8_0)
    assert q.shape == (x.shape[0], K // 32 * 34)

    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "tests", "data", "matmul", "q8_0_act.bin")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(b"forge-golden matmul v1\n")
        f.write(struct.pack("<II", x.shape[0], K))
        f.write(x.astype("<f4").tobytes())
        f.write(q.astype(np.uint8).tobytes())
    print(f"wrote {out}: {x.shape[0]} rows of {K}")


if __name__ == "__main__":
    main()
