#!/usr/bin/env python3
"""Checks a file written by `forge quantize IN OUT TYPE` against references.

usage: check_quantize.py IN.gguf OUT.gguf TYPE [--pure]

  1. llama.cpp (the llama-cpp-python package's libllama, CPU) quantizes IN to
     TYPE itself; every tensor of OUT must have the type llama.cpp chose and
     the same bytes. llama.cpp orders tensors by block and adds no others, so
     tensors are matched by name; OUT must keep IN's order.
  2. Where the `gguf` package implements the type (Q8_0 Q4_0 Q4_1 Q5_0
     Q5_1), each such tensor of OUT must equal gguf.quants.quantize of IN's
     tensor, bit for bit.
  3. OUT's metadata is IN's, with general.file_type set to llama.cpp's value.

Prints one summary line and exits 0, or prints what differs and exits 1.
Exits 3 if llama-cpp-python is missing (the caller reports SKIPPED).
"""
import ctypes
import os
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import quantize

FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_S": 14, "Q4_K_M": 15,
          "Q4_K": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q5_K": 17, "Q6_K": 18}
PACKAGE_TYPES = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}


def llamacpp_quantize(src, dst, ftype, pure):
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed")
        sys.exit(3)
    # Silence llama.cpp's per-tensor log.
    cb = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda *a: None)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    p.pure = pure
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama.cpp failed to quantize {src}")


def field_value(r, key):
    f = r.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[-1].tolist()


def main():
    src, out, tname = sys.argv[1:4]
    pure = "--pure" in sys.argv[4:]
    ftype = FTYPES[tname.upper()]
    rin, rout = GGUFReader(src), GGUFReader(out)
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = os.path.join(tmp, "ref.gguf")
        llamacpp_quantize(src, ref_path, ftype, pure)
        rref = GGUFReader(ref_path)
        ref = {t.name: t for t in rref.tensors}
        if [t.name for t in rout.tensors] != [t.name for t in rin.tensors]:
            errors.append("tensor order differs from IN")
        n_pkg = 0
        for t in rout.tensors:
            r = ref.get(t.name)
            if r is None:
                errors.append(f"{t.name}: not in llama.cpp's output")
                continue
            if t.tensor_type != r.tensor_type:
                errors.append(f"{t.name}: type {t.tensor_type.name}, llama.cpp chose {r.tensor_type.name}")
                continue
            if not np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1),
                                  np.asarray(r.data).view(np.uint8).reshape(-1)):
                errors.append(f"{t.name} ({t.tensor_type.name}): bytes differ from llama.cpp's")
            if t.tensor_type in PACKAGE_TYPES:
                tin = next(x for x in rin.tensors if x.name == t.name)
                x = np.asarray(tin.data).astype(np.float32)
                if tin.tensor_type == T.BF16:
                    x = (np.asarray(tin.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
                want = quantize(x.reshape(-1, int(tin.shape[0])), t.tensor_type).view(np.uint8).reshape(-1)
                if not np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), want):
                    errors.append(f"{t.name} ({t.tensor_type.name}): bytes differ from gguf.quants.quantize")
                n_pkg += 1
        if len(ref) != len(rout.tensors):
            errors.append(f"{len(rout.tensors)} tensors, llama.cpp wrote {len(ref)}")
        ft = field_value(rout, "general.file_type")
        ft = ft[0] if isinstance(ft, list) else ft
        if int(ft) != ftype:
            errors.append(f"general.file_type {ft}, want {ftype}")
        for key in rin.fields:
            if key.startswith("GGUF.") or key in ("general.file_type",):
                continue
            if key not in rout.fields:
                errors.append(f"metadata key {key} missing")
            elif not np.array_equal(np.asarray(rin.fields[key].parts[-1]), np.asarray(rout.fields[key].parts[-1])):
                errors.append(f"metadata key {key} changed")
    if errors:
        print("\n".join(errors[:20]))
        sys.exit(1)
    types = sorted({t.tensor_type.name for t in rout.tensors})
    print(f"{len(rout.tensors)} tensors ({', '.join(types)}) equal llama.cpp's bit for bit"
          + (f"; {n_pkg} equal the gguf package's" if n_pkg else ""))


if __name__ == "__main__":
    main()
