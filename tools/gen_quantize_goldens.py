#!/usr/bin/env python3
"""Writes tests/data/quantize/rows.bin, the golden for src/gguf/quantize.c.

One row x of 4096 floats (16 segments of 256 with different character: normal
at several magnitudes, all positive, all negative, zeros, constants, a lone
spike, exact halves of a grid, heavy tails, bf16-rounded values, tiny values)
is quantized to each type by two independent implementations:

  - ggml's reference quantizers (quantize_row_<type>_ref) in the libggml-base
    that the llama-cpp-python package ships: every type;
  - the `gguf` package's gguf.quants.quantize: Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 (the
    package has no K-quant quantizer). The script stops if it disagrees with
    ggml, so the golden is both.

File (little-endian after the line "forge-golden quantize v1\\n"):
    u32 n                  4096
    f32 x[n]
    u32 n_types
    per type:  u32 type (ggml id), u32 source (1 = ggml, 3 = ggml and the
               gguf package, equal), u32 nbytes, u8 want[nbytes],
               f64 rms     sqrt(mean((dequantize(want) - x)^2)), the error
                           llama.cpp's quantization of x has

Generated with numpy 2.4.6, gguf 0.19.0 and llama-cpp-python 0.3.36.
usage: tools/gen_quantize_goldens.py
"""
import ctypes
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quantize", "rows.bin")
TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]
PACKAGE = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}
ROW_BYTES = {T.Q8_0: 34 / 32, T.Q4_0: 18 / 32, T.Q4_1: 20 / 32, T.Q5_0: 22 / 32, T.Q5_1: 24 / 32,
             T.Q4_K: 144 / 256, T.Q5_K: 176 / 256, T.Q6_K: 210 / 256}


def ggml_lib():
    import llama_cpp
    d = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    return ctypes.CDLL(os.path.join(d, "libggml-base.so"))


def make_row(rng):
    s = []
    n = 256
    s.append(rng.standard_normal(n))
    s.append(rng.standard_normal(n) * 1e-3)
    s.append(rng.standard_normal(n) * 300.0)
    s.append(rng.random(n))                      # all positive: the K-quant min clamps to 0
    s.append(-rng.random(n) - 0.5)               # all negative
    s.append(np.zeros(n))
    s.append(np.full(n, 0.37))
    spike = np.zeros(n)
    spike[77] = -5.0
    s.append(spike)
    s.append(rng.integers(-16, 16, n) * 0.5)     # exact halves: rounding ties
    s.append(rng.standard_t(2, n))               # heavy tails
    bf = rng.standard_normal(n).astype(np.float32)
    s.append((bf.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32))  # bf16 weights
    s.append(rng.standard_normal(n) * 1e-8)      # tiny
    mixed = rng.standard_normal(n) * 0.02
    mixed[rng.integers(0, n, 4)] = 3.0           # outliers in small weights
    s.append(mixed)
    s.append(rng.laplace(0, 0.05, n))
    s.append(np.where(rng.random(n) < 0.5, 0.0, rng.standard_normal(n)))  # sparse
    s.append(rng.standard_normal(n) * np.linspace(0.01, 2, n))             # ramped scale
    return np.concatenate(s).astype(np.float32)


def main():
    rng = np.random.default_rng(20261126)
    x = make_row(rng)
    n = x.size
    lib = ggml_lib()
    body = struct.pack("<I", n) + x.astype("<f4").tobytes() + struct.pack("<I", len(TYPES))
    for t in TYPES:
        nbytes = int(n * ROW_BYTES[t])
        buf = ctypes.create_string_buffer(nbytes)
        fn = getattr(lib, f"quantize_row_{t.name.lower()}_ref".replace("_k_", "_K_"))
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(x.ctypes.data, buf, n)
        want = np.frombuffer(buf.raw, dtype=np.uint8)
        source = 1
        if t in PACKAGE:
            pkg = quantize(x.reshape(1, -1), t).reshape(-1)
            if not np.array_equal(pkg, want):
                sys.exit(f"{t.name}: the gguf package and ggml disagree")
            source = 3
        deq = dequantize(want, t).astype(np.float64).reshape(-1)
        rms = float(np.sqrt(np.mean((deq - x.astype(np.float64)) ** 2)))
        body += struct.pack("<III", int(t), source, nbytes) + want.tobytes() + struct.pack("<d", rms)
        print(f"{t.name}: {nbytes} bytes, rms {rms:.6g}{' (= gguf package)' if source == 3 else ''}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as fh:
        fh.write(b"forge-golden quantize v1\n" + body)


if __name__ == "__main__":
    main()
