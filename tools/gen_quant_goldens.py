#!/usr/bin/env python3
"""Generates tests/data/quant/*.bin, the goldens for src/gguf/quant.c.

The expected values come from the `gguf` Python package (gguf.quants), an
implementation of ggml's block formats independent of forge; this script only
builds the input blocks and writes the package's answers down. Run it from
anywhere; it writes into the repository it lives in. Output is deterministic
(fixed seeds), so a rerun with the same numpy and gguf versions gives
byte-identical files. Generated with numpy 2.4.6 and gguf 0.19.0.

Every file starts with the text line

    forge-golden quant v1\\n

followed by little-endian binary. There are three kinds of file.

<TYPE>.bin, one per supported type (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
Q2_K Q3_K Q4_K Q5_K Q6_K MXFP4):

    u32 type        ggml type id
    u32 n_blocks
    u32 block_size  elements per block
    u32 type_size   bytes per block
    u8  blocks[n_blocks * type_size]   the quantized row
    f32 want[n]     gguf.quants.dequantize(blocks), n = n_blocks * block_size
    f32 x[n]        a random normal vector (parts redrawn where a dot
                    would cancel badly; see write_type_file)
    u32 part_len    elements per partial dot: block_size, or 32 for the
                    one-element types
    f64 parts[n / part_len]  numpy float64 dot of want and x over each part
    f64 dot         numpy float64 dot of want and x over the whole row

  The whole-row dot is dominated by the blocks with the largest scales, so the
  partial dots are what makes every block count.

  The blocks are, in order: hand-made edge cases (zero scales, negative and -0
  scales, the largest and smallest (subnormal) f16 scale, all-zero and all-one
  quant bits), blocks from gguf.quants.quantize of random normal data where the
  package can quantize the type (not the K-quants), then random bytes. In
  random blocks every f16 scale/min field is replaced by a random *finite* f16,
  so every value in want is finite (the F16/BF16 files hold finite values only;
  Inf and NaN are covered by the conversion files below). MXFP4 has no f16
  field: its edge blocks sweep the E8M0 exponent (0 and 1 give subnormal
  scales) and code patterns, and its random blocks draw the exponent from
  64..190 (see mxfp4_edge_blocks).

f16_to_f32.bin, all 65536 half bit patterns:

    u32 n           65536
    f32 want[n]     numpy float16 -> float32 of bit pattern i (incl. Inf, NaN)

convert.bin, rounding conversions:

    u32 n_bf16
    u16 bf16[n_bf16]      bfloat16 inputs (all classes: zero, subnormal,
                          normal, Inf, quiet and signalling NaN)
    f32 bf16_want[n_bf16] gguf.quants.dequantize(bf16, BF16)
    u32 n_f32
    f32 f32_in[n_f32]     float inputs: exact f16/bf16 ties and their
                          neighbours, the overflow and underflow thresholds,
                          subnormals, Inf, NaN, random bits
    u16 f16_want[n_f32]   numpy astype(float16)
    u16 bf16_want[n_f32]  gguf.quants.quantize(f32_in, BF16)
"""

import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

HEADER = b"forge-golden quant v1\n"

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quant")

# Byte offsets of the f16 scale/min fields of each type's block; random blocks
# get finite values there.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}

# Blocks per type: enough to hit every field position and edge case, few enough
# to keep the goldens small.
N_BLOCKS_SMALL = 64  # 32-element types
N_BLOCKS_K = 32  # 256-element K-quants
N_ELEMS_FLOAT = 1024  # F32, F16, BF16

F16_ONE = 0x3C00
F16_MAX = 0x7BFF  # 65504
F16_TINY = 0x0001  # 2^-24, smallest subnormal
F16_NEG_ZERO = 0x8000


def random_finite_f16(rng, shape):
    """Random half bit patterns over all signs and exponents, resampled until
    none is Inf or NaN."""
    h = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    while True:
        bad = (h & 0x7C00) == 0x7C00
        if not bad.any():
            return h
        h[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint16)


def set_f16(block, off, h):
    block[off:off + 2] = np.array([h], dtype="<u2").view(np.uint8)


def edge_blocks(qtype):
    """Hand-made blocks: each scale pattern with all quant bits zero and all
    one (the smallest and largest codes), plus one block of mixed bits."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    fields = F16_FIELDS[qtype]
    # (scale, min) pairs; types with one f16 field use only the first.
    scale_sets = [
        (0x0000, 0x0000),  # zero scales: all outputs are signed zeros
        (F16_ONE, 0x0000),  # unit scale, zero min: the raw integer codes
        (0x0000, F16_ONE),  # zero scale, unit min
        (0xBC00, 0xC000),  # negative scale (-1) and min (-2)
        (F16_NEG_ZERO, F16_NEG_ZERO),  # -0: sign of zero outputs
        (F16_MAX, F16_MAX),  # largest finite scale
        (F16_TINY, 0x83FF),  # subnormal scale, largest negative subnormal min
    ]
    combos = [(s, pat) for s in scale_sets for pat in (0x00, 0xFF)]
    combos.append(((F16_ONE, F16_ONE), 0x5A))  # mixed codes and sub-scales
    out = []
    for (sc, mn), pat in combos:
        b = np.full(type_size, pat, dtype=np.uint8)
        set_f16(b, fields[0], sc)
        if len(fields) > 1:
            set_f16(b, fields[1], mn)
        out.append(b)
    return out


def random_blocks(rng, qtype, n):
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        h = random_finite_f16(rng, n)
        blocks[:, off:off + 2] = h.astype("<u2").view(np.uint8).reshape(n, 2)
    return list(blocks)


def quantized_blocks(rng, qtype, n):
    """Blocks from the package's own quantizer on random normal data at a few
    magnitudes, or none where the package cannot quantize the type."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    data = rng.standard_normal((n, block_size)).astype(np.float32)
    data *= np.float32(10.0) ** rng.integers(-3, 3, size=(n, 1)).astype(np.float32)
    try:
        q = quantize(data, qtype)
    except NotImplementedError:
        return []
    return list(q.reshape(n, type_size))


# MXFP4 (OCP MX): a u8 E8M0 exponent e (scale 2^(e-127), ggml stores the
# halved 2^(e-128) against doubled E2M1 codes) and 16 bytes of 4-bit codes.
# Codes reach 6 (12 doubled), so e above 252 overflows float: the edge
# exponents stop at 252 and random blocks keep e in 64..190, as the other
# types' random scales keep to 2^-63..2^62.
MXFP4_EDGE_EXPONENTS = [0, 1, 2, 126, 127, 128, 129, 252]


def mxfp4_edge_blocks():
    out = []
    for e in MXFP4_EDGE_EXPONENTS:
        for pat in (0x00, 0xFF, 0x77, 0x88, 0x5A):
            b = np.full(17, pat, dtype=np.uint8)
            b[0] = e
            out.append(b)
    # Every code at both nibble positions, at a unit scale (e = 128: 2^0 for
    # the doubled codes).
    b = np.zeros(17, dtype=np.uint8)
    b[0] = 128
    b[1:] = np.array([lo | (15 - lo) << 4 for lo in range(16)], dtype=np.uint8)
    out.append(b)
    return out


def mxfp4_random_blocks(rng, n):
    blocks = rng.integers(0, 256, size=(n, 17), dtype=np.uint8)
    blocks[:, 0] = rng.integers(64, 191, size=n, dtype=np.uint8)
    return list(blocks)


def quant_type_file(qtype, seed):
    rng = np.random.default_rng(seed)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = N_BLOCKS_K if block_size == 256 else N_BLOCKS_SMALL
    if qtype == T.MXFP4:
        blocks = mxfp4_edge_blocks()
        blocks += quantized_blocks(rng, qtype, (n_blocks - len(blocks)) // 2)
        blocks += mxfp4_random_blocks(rng, n_blocks - len(blocks))
        return np.concatenate(blocks).astype(np.uint8), n_blocks, rng
    blocks = edge_blocks(qtype)
    blocks += quantized_blocks(rng, qtype, (n_blocks - len(blocks)) // 2)
    blocks += random_blocks(rng, qtype, n_blocks - len(blocks))
    assert len(blocks) == n_blocks
    raw = np.concatenate(blocks).astype(np.uint8)
    return raw, n_blocks, rng


def float_type_file(qtype, seed):
    """F32, F16, BF16: finite values of every class the format has."""
    rng = np.random.default_rng(seed)
    n = N_ELEMS_FLOAT
    normal = rng.standard_normal(n // 2).astype(np.float32)
    normal *= np.float32(10.0) ** rng.integers(-4, 4, size=n // 2).astype(np.float32)
    if qtype == T.F32:
        bits = rng.integers(0, 1 << 32, size=n // 4, dtype=np.uint32)
        bits &= np.uint32(0x807FFFFF)  # subnormals and zeros
        exps = rng.integers(64, 190, size=n // 4, dtype=np.uint32)  # 2^-63..2^62
        wide = (bits[: n // 8] | (exps[: n // 8] << np.uint32(23))).view(np.float32)
        sub = bits[n // 8:].view(np.float32)
        special = np.array([0.0, -0.0, 1.0, -1.0], dtype=np.float32)
        vals = np.concatenate([special, normal, wide, sub])
        vals = np.concatenate([vals, rng.standard_normal(n - len(vals)).astype(np.float32)])
        raw = vals.astype("<f4").view(np.uint8)
    elif qtype == T.F16:
        special = np.array([0x0000, 0x8000, F16_ONE, F16_MAX, 0xFBFF, F16_TINY, 0x8001,
                            0x03FF, 0x83FF, 0x0400, 0x8400], dtype=np.uint16)
        quant = quantize(normal.clip(-60000, 60000), T.F16).view(np.uint16)
        rand = random_finite_f16(rng, n - len(special) - len(quant))
        raw = np.concatenate([special, quant, rand]).astype("<u2").view(np.uint8)
    elif qtype == T.BF16:
        special = np.array([0x0000, 0x8000, 0x3F80, 0x7F7F, 0xFF7F, 0x0001, 0x8001,
                            0x007F, 0x807F, 0x0080, 0x8080], dtype=np.uint16)
        quant = quantize(normal, T.BF16).view(np.uint16)
        # Random bits with the exponent kept to 2^-64..2^63 (or subnormal), so
        # the dot product stays meaningful for every element.
        m = n - len(special) - len(quant)
        rand = rng.integers(0, 1 << 16, size=m, dtype=np.uint16) & np.uint16(0x807F)
        exps = rng.integers(63, 191, size=m, dtype=np.uint16)
        exps[: m // 8] = 0
        rand |= exps << np.uint16(7)
        raw = np.concatenate([special, quant, rand]).astype("<u2").view(np.uint8)
    else:
        raise ValueError(qtype)
    return raw, n, rng


def write_type_file(qtype, seed):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if block_size == 1:
        raw, n_blocks, rng = float_type_file(qtype, seed)
    else:
        raw, n_blocks, rng = quant_type_file(qtype, seed)
    assert raw.dtype == np.uint8 and raw.size == n_blocks * type_size
    want = dequantize(raw, qtype).astype(np.float32).reshape(-1)
    n = n_blocks * block_size
    assert want.size == n
    if not np.isfinite(want).all():
        sys.exit(f"{qtype.name}: dequantized golden has non-finite values")
    part_len = max(block_size, 32)
    x = rng.standard_normal(n).astype(np.float32)
    w64 = want.astype(np.float64)
    # A dot whose terms nearly cancel (say a block of equal values against an x
    # part that sums to about zero) could lose more than the test's 1e-9
    # relative bound to double rounding, which is at most len * 1.1e-16 times
    # sum|terms| / |dot|. Redraw x over such parts until every bound is 1e-10;
    # if the whole row cancels, redraw the part that dominates it.
    for _ in range(1000):
        x64 = x.astype(np.float64)
        terms = np.abs(w64 * x64)
        bad = []
        for i in range(0, n, part_len):
            p = np.dot(w64[i:i + part_len], x64[i:i + part_len])
            if terms[i:i + part_len].sum() * part_len * 1.1e-16 > 1e-10 * abs(p):
                bad.append(i)
        if terms.sum() * n * 1.1e-16 > 1e-10 * abs(np.dot(w64, x64)):
            bad.append(int(terms.reshape(-1, part_len).sum(axis=1).argmax()) * part_len)
        if not bad:
            break
        for i in bad:
            x[i:i + part_len] = rng.standard_normal(part_len).astype(np.float32)
    else:
        sys.exit(f"{qtype.name}: cannot find an x without cancelling dots")
    dot = float(np.dot(w64, x64))
    parts = np.array([np.dot(w64[i:i + part_len], x64[i:i + part_len])
                      for i in range(0, n, part_len)], dtype="<f8")
    body = struct.pack("<IIII", int(qtype), n_blocks, block_size, type_size)
    body += raw.tobytes() + want.astype("<f4").tobytes() + x.astype("<f4").tobytes()
    body += struct.pack("<I", part_len) + parts.tobytes() + struct.pack("<d", dot)
    write(f"{qtype.name}.bin", body)
    print(f"{qtype.name}.bin: {n_blocks} blocks, dot {dot:.6g}")


def write_f16_table():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = dequantize(h.view(np.uint8), T.F16).astype("<f4")
    write("f16_to_f32.bin", struct.pack("<I", h.size) + want.tobytes())


def convert_inputs(rng):
    """Floats that probe f32 -> f16/bf16 rounding: for random half/bfloat
    values, the exact midpoint to the next value up and the floats one ulp
    either side of it, plus thresholds and specials."""
    vals = []

    def f32(bits):
        return np.array(bits, dtype=np.uint32).view(np.float32)

    # f16 midpoints: the midpoint of two adjacent halves is exact in float.
    h = random_finite_f16(rng, 1024)
    h = h[(h & 0x7FFF) != 0x7BFF]  # no "next value up" from the largest
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + np.uint16(1)).view(np.float16).astype(np.float32)
    mid = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    mb = mid.view(np.uint32)
    vals += [mid, f32(mb - 1), f32(mb + 1), lo]
    # bf16 midpoints: bits with the low half exactly 0x8000, and neighbours.
    b = rng.integers(0, 1 << 32, size=1024, dtype=np.uint32)
    b &= np.uint32(0xFFFF0000)
    b = b[(b & 0x7F800000) != 0x7F800000]
    t = b | np.uint32(0x8000)
    vals += [f32(t), f32(t - 1), f32(t + 1), f32(b)]
    # Thresholds: f16 overflow (65504, 65520 = tie to Inf), underflow (2^-25),
    # subnormal/normal boundary (2^-14); bf16 overflow (largest float).
    edges = [
        0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,
        0x33000000, 0x33000001, 0x32FFFFFF, 0x33800000, 0x33C00000,
        0x387FE000, 0x387FF000, 0x387FFFFF, 0x38800000,
        0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x00000001, 0x007FFFFF, 0x00800000,
        0x00000000, 0x3F800000, 0x7F800000,  # 0, 1, Inf
        0x7FC00000, 0x7F800001, 0x7FBFFFFF, 0x7F802000, 0x7FFFFFFF,  # NaNs
    ]
    e = np.array(edges, dtype=np.uint32)
    vals += [f32(e), f32(e | np.uint32(0x80000000))]
    # Random bit patterns over every class, and random normal data.
    vals += [rng.integers(0, 1 << 32, size=512, dtype=np.uint32).view(np.float32)]
    vals += [rng.standard_normal(512).astype(np.float32)]
    return np.concatenate(vals).astype(np.float32)


def write_convert(seed):
    rng = np.random.default_rng(seed)
    # bf16 -> f32: every class, including all the NaN/Inf exponent patterns.
    special = np.array([0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0x7F80, 0xFF80,
                        0x7FC0, 0x7F81, 0x7FFF, 0xFFC1], dtype=np.uint16)
    rand = rng.integers(0, 1 << 16, size=2048, dtype=np.uint16)
    infnan = (rng.integers(0, 1 << 16, size=256, dtype=np.uint16) & np.uint16(0x807F)) | np.uint16(0x7F80)
    bf = np.concatenate([special, rand, infnan]).astype("<u2")
    bf_want = dequantize(bf.view(np.uint8), T.BF16).astype("<f4")

    f = convert_inputs(rng)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        f16 = f.astype(np.float16).view(np.uint16).astype("<u2")
    bf16 = quantize(f.reshape(1, -1), T.BF16).view(np.uint16).reshape(-1).astype("<u2")

    body = struct.pack("<I", bf.size) + bf.tobytes() + bf_want.tobytes()
    body += struct.pack("<I", f.size) + f.astype("<f4").tobytes() + f16.tobytes() + bf16.tobytes()
    write("convert.bin", body)
    print(f"convert.bin: {bf.size} bf16 inputs, {f.size} f32 inputs")


def write(name, body):
    with open(os.path.join(OUT_DIR, name), "wb") as fh:
        fh.write(HEADER + body)


TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
         T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.MXFP4]


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for qtype in TYPES:
        write_type_file(qtype, seed=1000 + int(qtype))
    write_f16_table()
    write_convert(seed=7)


if __name__ == "__main__":
    main()
