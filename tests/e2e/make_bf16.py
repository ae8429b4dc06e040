#!/usr/bin/env python3
"""Writes BF16 sources for the `forge quantize` tests (tests/e2e/run.sh) from
an F32 GGUF, with the gguf package:

  OUTDIR/bf16.gguf        every 2-D tensor rounded to BF16 (gguf.quants, round to
                          nearest even, as llama.cpp's converter writes
                          --outtype bf16), the 1-D ones (norms) kept F32 as the
                          converter keeps them; general.file_type 32 (MOSTLY_BF16)
  OUTDIR/bf16-norms.gguf  the same with the 1-D tensors BF16 too (forge and
                          llama.cpp copy tensors they do not quantize as they are)
  OUTDIR/widened.gguf     F32: the values bf16.gguf holds, widened exactly
                          (BF16 bits << 16), so quantizing it must give the same
                          bytes as quantizing bf16.gguf

Metadata and tensor order are the source's. usage: make_bf16.py SRC.gguf OUTDIR
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

MOSTLY_BF16 = 32


def widen(b):
    """BF16 bits (uint16) to the f32 values they hold."""
    return (b.astype(np.uint32) << 16).view(np.float32)


def write(r, path, tensors, file_type):
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(path, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment", "general.file_type"):
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub)
    if file_type is not None:
        w.add_file_type(file_type)
    for name, data, qtype in tensors:
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    src, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    r = gguf.GGUFReader(src)
    bf16, bf16_norms, widened = [], [], []
    for t in r.tensors:
        assert t.tensor_type == T.F32, f"{src}: {t.name} is {t.tensor_type.name}, not F32"
        x = np.asarray(t.data, dtype=np.float32)
        b = quantize(x, T.BF16).view(np.uint16)  # round to nearest even
        if len(t.shape) >= 2:
            bf16.append((t.name, b, T.BF16))
            widened.append((t.name, widen(b), T.F32))
        else:
            bf16.append((t.name, x, T.F32))
            widened.append((t.name, x, T.F32))
        bf16_norms.append((t.name, b, T.BF16))
    write(r, os.path.join(out, "bf16.gguf"), bf16, MOSTLY_BF16)
    write(r, os.path.join(out, "bf16-norms.gguf"), bf16_norms, MOSTLY_BF16)
    write(r, os.path.join(out, "widened.gguf"), widened, 0)


if __name__ == "__main__":
    main()
