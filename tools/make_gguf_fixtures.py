#!/usr/bin/env python3
"""Writes the GGUF reader's test fixtures.

Outputs (deterministic; rerun to regenerate byte-identical files):

  tests/data/gguf/all_types.gguf   written by the `gguf` package's GGUFWriter:
                                   every metadata value type, typed arrays,
                                   nested arrays, general.alignment = 64, and
                                   tensors of several types with known bytes.
  tests/data/gguf/all_types_v2.gguf  the same bytes with version 2 in the header
                                   (v2 and v3 share the little-endian layout).
  tests/data/gguf/all_types.json   what a reader must find in it: the values
                                   given to the writer (cross-checked here
                                   against gguf.GGUFReader), first line
                                   "forge-golden gguf v1".
  tests/data/bad-gguf/*.gguf       a regression corpus of truncated and mutated
                                   files, built by a byte-level serializer so
                                   every field can be broken on purpose.
  tests/data/bad-gguf/MANIFEST     "file<TAB>substring" lines: the message
                                   `forge info FILE` must print (and exit non-zero).
  tests/data/vocab/tok_bpe.gguf,   small synthetic vocabularies (byte-level BPE and
  tests/data/vocab/tok_spm.gguf    SentencePiece) with llama hyperparameters: seeds
                                   for the tokenizer fuzzer and bases for:
  tests/data/bad-vocab/*.gguf      valid GGUF files whose tokenizer metadata is broken,
  tests/data/bad-vocab/MANIFEST    with the message each must give (same format).
  tests/fuzz/seeds/*.gguf          small valid files to start the fuzzers from.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter, GGMLQuantizationType as QT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
SEEDS = os.path.join(ROOT, "tests", "fuzz", "seeds")

# ---- the good file, through the gguf package's writer ----------------------

SCALARS = [
    ("t.u8", VT.UINT8, 250),
    ("t.i8", VT.INT8, -100),
    ("t.u16", VT.UINT16, 65000),
    ("t.i16", VT.INT16, -32000),
    ("t.u32", VT.UINT32, 4000000000),
    ("t.i32", VT.INT32, -2000000000),
    ("t.f32", VT.FLOAT32, float(np.float32(3.14159))),
    ("t.bool_true", VT.BOOL, True),
    ("t.bool_false", VT.BOOL, False),
    ("t.str", VT.STRING, "héllo wörld ✓ 你好 🎉"),
    ("t.str_empty", VT.STRING, ""),
    ("t.u64", VT.UINT64, 18000000000000000000),
    ("t.i64", VT.INT64, -9000000000000000000),
    ("t.f64", VT.FLOAT64, 2.718281828459045),
]

ARRAYS = [
    ("a.u8", VT.UINT8, [0, 1, 255]),
    ("a.i8", VT.INT8, [-128, 0, 127]),
    ("a.u16", VT.UINT16, [0, 65535]),
    ("a.i16", VT.INT16, [-32768, 32767]),
    ("a.u32", VT.UINT32, [1, 2, 4294967295]),
    ("a.i32", VT.INT32, [-1, 0, 1, 2147483647]),
    ("a.f32", VT.FLOAT32, [float(np.float32(x)) for x in (0.5, -1.25, 1e-8, 3.4e38)]),
    ("a.bool", VT.BOOL, [True, False, True]),
    ("a.str", VT.STRING, ["a", "", "ü", "<|im_start|>", "x" * 300]),
    ("a.u64", VT.UINT64, [0, 18446744073709551615]),
    ("a.i64", VT.INT64, [-9223372036854775808, 9223372036854775807]),
    ("a.f64", VT.FLOAT64, [1.0 / 3.0, -0.0, 1e300]),
]

NESTED = ("a.nested", [[1, 2, 3], [4], [5, 6]])  # array of arrays of int32


def tensors():
    rng = np.random.default_rng(7)
    out = [
        ("w.f32", QT.F32, (8, 3), rng.standard_normal((3, 8)).astype(np.float32)),
        ("w.f16", QT.F16, (16,), rng.standard_normal(16).astype(np.float16)),
        ("w.bf16", QT.BF16, (32, 2), rng.integers(0, 256, (2, 64), dtype=np.uint8)),
        ("w.q8_0", QT.Q8_0, (64, 2), rng.integers(0, 256, (2, 68), dtype=np.uint8)),
        ("w.q4_k", QT.Q4_K, (256,), rng.integers(0, 256, (1, 144), dtype=np.uint8)),
        ("w.4d", QT.F32, (2, 1, 3, 2), rng.standard_normal((2, 3, 1, 2)).astype(np.float32)),
    ]
    return out


def write_good(path):
    w = GGUFWriter(path, arch="test")
    w.add_custom_alignment(64)
    for key, vt, val in SCALARS:
        w.add_key_value(key, val, vt)
    for key, vt, val in ARRAYS:
        w.add_key_value(key, val, VT.ARRAY, sub_type=vt)
    w.add_key_value(NESTED[0], NESTED[1], VT.ARRAY)
    for name, qt, ne, arr in tensors():
        raw_shape = list(reversed(ne))  # the writer takes numpy (slowest-first) order
        if qt in (QT.F32, QT.F16):
            w.add_tensor(name, arr.reshape(raw_shape))
        else:
            w.add_tensor(name, arr, raw_dtype=qt)  # arr holds the raw bytes, one row per ggml row
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def expected_json(path):
    """The values a reader must find, checked against gguf.GGUFReader."""
    r = GGUFReader(path)
    kv = []

    def add(key, vt, val, elem=None):
        f = r.fields[key]
        if vt != VT.ARRAY or elem != VT.ARRAY:  # the package reader flattens nested arrays
            got = f.contents()
            assert got == val, (key, got, val)
        kv.append({"key": key, "type": int(vt), "elem": None if elem is None else int(elem), "value": val})

    add("general.architecture", VT.STRING, "test")
    add("general.alignment", VT.UINT32, 64)
    for key, vt, val in SCALARS:
        add(key, vt, val)
    for key, vt, val in ARRAYS:
        add(key, VT.ARRAY, val, elem=vt)
    add(NESTED[0], VT.ARRAY, NESTED[1], elem=VT.ARRAY)
    assert len(kv) == len(r.fields) - 3, "GGUF.* pseudo-fields aside, every key is listed"

    ts = []
    for t in r.tensors:
        raw = np.asarray(t.data).tobytes()
        ts.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "ne": [int(x) for x in t.shape],
            "offset": int(t.data_offset - r.data_offset),
            "nbytes": int(t.n_bytes),
            "hex": raw.hex(),
        })
    return {"alignment": 64, "data_offset": int(r.data_offset), "kv": kv, "tensors": ts}


# ---- a byte-level serializer for broken files --------------------------------

def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv_u32(key, v):
    return s(key) + struct.pack("<II", VT.UINT32, v)


def kv_str(key, v):
    return s(key) + struct.pack("<I", VT.STRING) + s(v)


def tinfo(name, ne, qt, off):
    return s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne) + struct.pack("<IQ", qt, off)


def gguf_bytes(kvs, infos, data, version=3, n_kv=None, n_t=None, align=32):
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_t is None else n_t,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    if infos:
        body += b"\0" * ((align - len(body) % align) % align)
    return body + data


def bad_cases():
    base_kv = [kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1)]
    f32x8 = struct.pack("<8f", *range(8))
    good_t = [tinfo("a", [8], 0, 0)]
    C = {}

    C["empty.gguf"] = (b"", "file is empty")
    C["short.gguf"] = (b"GG", "too short")
    C["bad_magic.gguf"] = (b"GGML" + b"\0" * 60, "not a GGUF file")
    C["version1.gguf"] = (gguf_bytes(base_kv, good_t, f32x8, version=1), "version 1 is not supported")
    C["version4.gguf"] = (gguf_bytes(base_kv, good_t, f32x8, version=4), "version 4 is not supported")
    C["huge_kv_count.gguf"] = (gguf_bytes(base_kv, good_t, f32x8, n_kv=1 << 60), "metadata count")
    C["huge_tensor_count.gguf"] = (gguf_bytes(base_kv, good_t, f32x8, n_t=1 << 62), "tensor count")
    C["kv_count_too_high.gguf"] = (gguf_bytes(base_kv, [], b"", n_kv=3), "truncated")
    C["huge_string_len.gguf"] = (gguf_bytes([struct.pack("<Q", 1 << 62) + b"abc" * 10], [], b""), "string length")
    C["key_bad_utf8.gguf"] = (gguf_bytes([s(b"gen\xff") + struct.pack("<II", VT.UINT32, 1)], [], b""), "not valid UTF-8")
    C["key_overlong_utf8.gguf"] = (gguf_bytes([s(b"k\xc0\xaf") + struct.pack("<II", VT.UINT32, 1)], [], b""), "not valid UTF-8")
    C["value_bad_utf8.gguf"] = (gguf_bytes([kv_str("general.name", "x") [:-1] + b"\xed"], [], b""), "not valid UTF-8")
    C["key_empty.gguf"] = (gguf_bytes([s("") + struct.pack("<II", VT.UINT32, 1)], [], b""), "key is empty")
    C["key_nul.gguf"] = (gguf_bytes([s("a\0b") + struct.pack("<II", VT.UINT32, 1)], [], b""), "NUL")
    C["dup_key.gguf"] = (gguf_bytes(base_kv + [kv_u32("llama.block_count", 2)], [], b""), "duplicate")
    C["bad_vtype.gguf"] = (gguf_bytes([s("k") + struct.pack("<II", 13, 1)], [], b""), "unknown value type 13")
    C["bad_array_elem_type.gguf"] = (gguf_bytes([s("k") + struct.pack("<IIQ", VT.ARRAY, 99, 1) + b"\0" * 8], [], b""), "unknown array element type 99")
    C["huge_array.gguf"] = (gguf_bytes([s("k") + struct.pack("<IIQ", VT.ARRAY, VT.UINT64, 1 << 61)], [], b""), "does not fit")
    C["huge_string_array.gguf"] = (gguf_bytes([s("k") + struct.pack("<IIQ", VT.ARRAY, VT.STRING, 1 << 40) + s("a")], [], b""), "does not fit")
    nested = struct.pack("<II", VT.ARRAY, VT.ARRAY)
    deep = s("k") + nested
    for _ in range(20):
        deep += struct.pack("<QI", 1, VT.ARRAY)
    deep += struct.pack("<QI", 1, VT.UINT8) + struct.pack("<Q", 0)
    C["deep_nesting.gguf"] = (gguf_bytes([deep], [], b""), "nested deeper")
    C["bool_value_2.gguf"] = (gguf_bytes([s("k") + struct.pack("<IB", VT.BOOL, 2)], [], b""), "not 0 or 1")
    C["bool_array_value_7.gguf"] = (gguf_bytes([s("k") + struct.pack("<IIQ", VT.ARRAY, VT.BOOL, 2) + b"\x01\x07"], [], b""), "not 0 or 1")
    C["alignment_not_pow2.gguf"] = (gguf_bytes(base_kv + [kv_u32("general.alignment", 48)], good_t, f32x8), "power of two")
    C["alignment_zero.gguf"] = (gguf_bytes(base_kv + [kv_u32("general.alignment", 0)], good_t, f32x8), "power of two")
    C["alignment_wrong_type.gguf"] = (gguf_bytes(base_kv + [kv_str("general.alignment", "32")], good_t, f32x8), "must be uint32")
    C["tensor_zero_dims.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [], 0, 0)], f32x8), "0 dimensions")
    C["tensor_five_dims.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [1, 1, 1, 1, 8], 0, 0)], f32x8), "5 dimensions")
    C["tensor_dim_overflow.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [1 << 40, 1 << 40], 0, 0)], f32x8), "overflows")
    C["tensor_dim_negative.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [(1 << 64) - 8], 0, 0)], f32x8), "overflows")
    C["tensor_unknown_type.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [8], 4, 0)], f32x8), "unknown tensor type id 4")
    C["tensor_type_huge.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [8], 1000, 0)], f32x8), "unknown tensor type id 1000")
    C["tensor_row_not_block_multiple.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [33], QT.Q4_0, 0)], b"\0" * 64), "not a multiple of the Q4_0 block size")
    C["tensor_misaligned_offset.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [4], 0, 0), tinfo("b", [4], 0, 16)], b"\0" * 64), "not a multiple of the alignment")
    C["tensor_past_end.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [8], 0, 0), tinfo("b", [8], 0, 64)], f32x8), "past the end")
    C["tensor_offset_huge.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [8], 0, (1 << 64) - 32)], f32x8), "past the end")
    C["tensor_size_past_end.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [1 << 20], 0, 0)], f32x8), "past the end")
    C["tensor_overlap.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [16], 0, 0), tinfo("b", [8], 0, 32)], b"\0" * 64), "overlap")
    C["tensor_dup_name.gguf"] = (gguf_bytes(base_kv, [tinfo("a", [8], 0, 0), tinfo("a", [8], 0, 32)], b"\0" * 64), "duplicate")
    C["tensor_name_empty.gguf"] = (gguf_bytes(base_kv, [tinfo("", [8], 0, 0)], f32x8), "name is empty")
    C["tensor_name_bad_utf8.gguf"] = (gguf_bytes(base_kv, [tinfo(b"\xe2\x82", [8], 0, 0)], f32x8), "not valid UTF-8")
    C["no_data_section.gguf"] = (gguf_bytes(base_kv, good_t, b"")[:-1], "past the end")
    return C


def truncations(good, end):
    """The good file cut at many points before the end of its last tensor's
    data (the padding after it is optional): each must be reported, not crash."""
    C = {}
    cuts = sorted(set(list(range(0, 200, 7)) + list(range(200, end, max(1, end // 40))) + [end - 1]))
    for n in cuts:
        if 0 < n < end:
            C[f"trunc_{n:05d}.gguf"] = (good[:n], None)
    return C


# ---- synthetic vocabularies ---------------------------------------------------

def byte_level_chars():
    """GPT-2's printable stand-in for each byte."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def vocab_bpe(**override):
    toks = byte_level_chars()
    merges = ["h e", "l l", "he ll", "hell o", "\u0120 w", "\u0120w o", "r l", "\u0120wo rl", "\u0120worl d"]
    for m in merges:
        toks.append(m.replace(" ", ""))
    toks += ["<|im_start|>", "<|im_end|>"]
    types = [1] * (len(toks) - 2) + [3, 3]
    kv = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": toks,
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": len(toks) - 2, "tokenizer.ggml.eos_token_id": len(toks) - 1,
    }
    kv.update(override)
    return kv


def vocab_spm(**override):
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["\u2581", "\u2581h", "e", "l", "o", "\u2581he", "ll", "\u2581hell", "\u2581hello", "\u2581w", "or", "ld"]
    toks += pieces
    scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    kv = {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": toks, "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    kv.update(override)
    return kv


def write_vocab(path, kv):
    """A llama-shaped model file with no tensors and the given tokenizer keys."""
    w = GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    for key, val in kv.items():
        if val is None:
            continue
        if isinstance(val, list):
            elem = {str: VT.STRING, float: VT.FLOAT32, int: VT.INT32}[type(val[0])]
            w.add_key_value(key, val, VT.ARRAY, sub_type=elem)
        elif isinstance(val, str):
            w.add_string(key, val)
        elif isinstance(val, bool):
            w.add_bool(key, val)
        else:
            w.add_uint32(key, val)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def bad_vocab_cases():
    n_bpe = len(vocab_bpe()["tokenizer.ggml.tokens"])
    return {
        "model_unknown.gguf": (vocab_bpe(**{"tokenizer.ggml.model": "bert"}), "forge implements 'llama'"),
        "model_wrong_type.gguf": (vocab_bpe(**{"tokenizer.ggml.model": None, "tokenizer.ggml.tokens": None}) |
                                  {"tokenizer.ggml.model": 7}, "has type uint32; expected string"),
        "tokens_missing.gguf": (vocab_bpe(**{"tokenizer.ggml.tokens": None}), "'tokenizer.ggml.tokens' is missing"),
        "tokens_not_strings.gguf": (vocab_bpe(**{"tokenizer.ggml.tokens": [1, 2, 3]}), "array of int32; expected an array of string"),
        "token_type_short.gguf": (vocab_bpe(**{"tokenizer.ggml.token_type": [1, 1]}), "token_type must be"),
        "token_type_out_of_range.gguf": (vocab_bpe(**{"tokenizer.ggml.token_type": [1] * (n_bpe - 1) + [9]}), "valid types are 0..6"),
        "bos_out_of_range.gguf": (vocab_bpe(**{"tokenizer.ggml.bos_token_id": 100000}), "bos_token_id is 100000"),
        "merges_missing.gguf": (vocab_bpe(**{"tokenizer.ggml.merges": None}), "merges is missing"),
        "merge_without_space.gguf": (vocab_bpe(**{"tokenizer.ggml.merges": ["he", "l l"]}), "is not 'left right'"),
        "pre_unknown.gguf": (vocab_bpe(**{"tokenizer.ggml.pre": "no-such-pre"}), "no-such-pre"),
        "pre_gemma4_not_byte_level.gguf": (vocab_bpe(**{"tokenizer.ggml.pre": "gemma4"}), "without the byte-level map"),
        "scores_short.gguf": (vocab_spm(**{"tokenizer.ggml.scores": [0.0, 1.0]}), "scores must be"),
        "add_bos_wrong_type.gguf": (vocab_spm() | {"tokenizer.ggml.add_bos_token": 1}, "has type uint32; expected bool"),
    }


def main():
    os.makedirs(os.path.join(DATA, "gguf"), exist_ok=True)
    bad_dir = os.path.join(DATA, "bad-gguf")
    os.makedirs(bad_dir, exist_ok=True)
    os.makedirs(SEEDS, exist_ok=True)

    good_path = os.path.join(DATA, "gguf", "all_types.gguf")
    write_good(good_path)
    good = open(good_path, "rb").read()
    v2 = good[:4] + struct.pack("<I", 2) + good[8:]
    open(os.path.join(DATA, "gguf", "all_types_v2.gguf"), "wb").write(v2)
    exp = expected_json(good_path)
    with open(os.path.join(DATA, "gguf", "all_types.json"), "w") as f:
        f.write("forge-golden gguf v1\n")
        json.dump(exp, f, indent=1)
        f.write("\n")

    for name in os.listdir(bad_dir):
        if name.endswith(".gguf"):
            os.remove(os.path.join(bad_dir, name))
    cases = bad_cases()
    data_end = exp["data_offset"] + max(t["offset"] + t["nbytes"] for t in exp["tensors"])
    cases.update(truncations(good, data_end))
    manifest = []
    for name in sorted(cases):
        data, want = cases[name]
        with open(os.path.join(bad_dir, name), "wb") as f:
            f.write(data)
        # Truncations fail at whichever field the cut lands in; all of them
        # must still say where, so require the byte offset wording.
        manifest.append(f"{name}\t{want if want else 'at byte'}")
    with open(os.path.join(bad_dir, "MANIFEST"), "w") as f:
        f.write("# file<TAB>substring that `forge info FILE` must print on stderr (exit non-zero)\n")
        f.write("\n".join(manifest) + "\n")

    vocab_dir = os.path.join(DATA, "vocab")
    os.makedirs(vocab_dir, exist_ok=True)
    write_vocab(os.path.join(vocab_dir, "tok_bpe.gguf"), vocab_bpe())
    write_vocab(os.path.join(vocab_dir, "tok_spm.gguf"), vocab_spm())
    bad_vocab = os.path.join(DATA, "bad-vocab")
    os.makedirs(bad_vocab, exist_ok=True)
    for name in os.listdir(bad_vocab):
        os.remove(os.path.join(bad_vocab, name))
    lines = []
    for name, (kv, want) in sorted(bad_vocab_cases().items()):
        write_vocab(os.path.join(bad_vocab, name), kv)
        lines.append(f"{name}\t{want}")
    with open(os.path.join(bad_vocab, "MANIFEST"), "w") as f:
        f.write("# file<TAB>substring that `forge info FILE` must print on stderr (exit non-zero)\n")
        f.write("\n".join(lines) + "\n")
    for name in ("tok_bpe.gguf", "tok_spm.gguf"):
        shutil.copy(os.path.join(vocab_dir, name), os.path.join(SEEDS, name))

    open(os.path.join(SEEDS, "all_types.gguf"), "wb").write(good)
    w = GGUFWriter(os.path.join(SEEDS, "tiny.gguf"), arch="llama")
    w.add_block_count(1)
    w.add_tensor("t", np.arange(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {len(cases)} bad files, fixtures and seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
