#!/usr/bin/env python3
"""Writes the bad models of tests/data/bad-model/CASES (issue 14) from a real
llama GGUF file, SmolLM2 in tests/e2e/run.sh, into OUTDIR: one NAME.gguf a
case, and OUTDIR/MANIFEST with "NAME.gguf<TAB>substring" lines, the text
forge's error must hold.

Each file is the source's header, metadata and tensor table re-serialized
byte for byte with the case's changes (a value set or added, a tensor
dimension set), so the vocabulary, the template and every other key are the
real model's. Tensor offsets count from the data section, so the section
moves with the table unchanged. Every case must be refused before a weight
is read, so the data section is written as a hole (zeros, no disk blocks):
forty files of a 100 MB model cost a few MB. --weights copies the real
weights instead, for running a case by hand.

The script is its own GGUF serializer (stdlib only): the unchanged rebuild
is checked to equal the source, so a change is the only difference.

usage: make_bad_smollm2.py [--weights] SRC OUTDIR [CASES]
"""
import os
import shutil
import struct
import sys

# GGUF value types: scalar struct formats; 8 = string, 9 = array.
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
NAMED = {"u32": 4, "i32": 5, "u64": 10, "f32": 6, "str": 8}
STRING, ARRAY = 8, 9


class Reader:
    def __init__(self, buf):
        self.buf, self.at = buf, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.at)[0]
        self.at += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        self.at += n
        return bytes(self.buf[self.at - n:self.at])

    def skip_value(self, vtype):
        if vtype == STRING:
            self.string()
        elif vtype == ARRAY:
            elem, n = self.take("<I"), self.take("<Q")
            if elem in SCALAR:
                self.at += n * struct.calcsize(SCALAR[elem])
            else:
                for _ in range(n):
                    self.skip_value(elem)
        else:
            self.at += struct.calcsize(SCALAR[vtype])


def parse(path):
    """The parts of a GGUF file: header fields, [key, type, raw value
    bytes], [name, dims, type, offset] and the data section's start."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
        # The metadata of a real model is a few MB (the vocabulary): read
        # more until the tensor table has been walked.
        while True:
            try:
                return _parse(head, path)
            except struct.error:
                more = f.read(len(head))
                if not more:
                    raise SystemExit(f"{path}: truncated GGUF header")
                head += more


def _parse(buf, path):
    r = Reader(memoryview(buf))
    if r.take("<I") != 0x46554747:
        raise SystemExit(f"{path}: not a GGUF file")
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kvs, alignment = [], 32
    for _ in range(n_kv):
        key = r.string().decode()
        vtype = r.take("<I")
        start = r.at
        r.skip_value(vtype)
        raw = bytes(r.buf[start:r.at])
        if key == "general.alignment":
            alignment = struct.unpack("<I", raw)[0]
        kvs.append([key, vtype, raw])
    tensors = []
    for _ in range(n_tensors):
        name = r.string().decode()
        dims = [r.take("<Q") for _ in range(r.take("<I"))]
        tensors.append([name, dims, r.take("<I"), r.take("<Q")])
    data = (r.at + alignment - 1) // alignment * alignment
    if data > len(buf):
        raise struct.error("short")
    return version, kvs, tensors, alignment, data


def encode(vtype, text):
    if vtype == STRING:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b
    fmt = SCALAR[vtype]
    return struct.pack(fmt, float(text) if fmt in ("<f", "<d") else int(text))


def apply(change, kvs, tensors):
    lhs, value = change.split("=", 1)
    if lhs.endswith("]"):
        name, dim = lhs[:-1].split("[")
        t = next((t for t in tensors if t[0] == name), None)
        if t is None or int(dim) >= len(t[1]):
            raise SystemExit(f"{change}: the source has no tensor {name} with dimension {dim}")
        t[1][int(dim)] = int(value)
        return
    key, _, tname = lhs.partition(":")
    kv = next((kv for kv in kvs if kv[0] == key), None)
    if kv is None:
        if not tname:
            raise SystemExit(f"{change}: the source has no key {key}; give its type (KEY:TYPE=VALUE)")
        kv = [key, NAMED[tname], b""]
        kvs.append(kv)
    elif tname:
        kv[1] = NAMED[tname]
    kv[2] = encode(kv[1], value)


def prefix(version, kvs, tensors, alignment):
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs))]
    for key, vtype, raw in kvs:
        k = key.encode()
        out += [struct.pack("<Q", len(k)), k, struct.pack("<I", vtype), raw]
    for name, dims, ttype, offset in tensors:
        n = name.encode()
        out += [struct.pack("<Q", len(n)), n, struct.pack("<I", len(dims))]
        out += [struct.pack("<Q", d) for d in dims] + [struct.pack("<IQ", ttype, offset)]
    b = b"".join(out)
    return b + bytes(-len(b) % alignment)


def main():
    args = sys.argv[1:]
    weights = "--weights" in args
    args = [a for a in args if a != "--weights"]
    if len(args) not in (2, 3):
        raise SystemExit(__doc__)
    src, out = args[0], args[1]
    cases = args[2] if len(args) == 3 else os.path.join(os.path.dirname(__file__), "../data/bad-model/CASES")
    version, kvs, tensors, alignment, data = parse(src)
    size = os.path.getsize(src)
    with open(src, "rb") as f:
        if prefix(version, kvs, tensors, alignment) != f.read(data):
            raise SystemExit(f"{src}: the unchanged rebuild differs from the file; this serializer is wrong for it")
    os.makedirs(out, exist_ok=True)
    manifest = []
    for line in open(cases, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        name, changes, want = line.rstrip("\n").split("\t")
        k, t = [list(kv) for kv in kvs], [[n, list(d), ty, o] for n, d, ty, o in tensors]
        for c in changes.split():
            apply(c, k, t)
        head = prefix(version, k, t, alignment)
        path = os.path.join(out, name + ".gguf")
        with open(path, "wb") as f:
            f.write(head)
            if weights:
                with open(src, "rb") as s:
                    s.seek(data)
                    shutil.copyfileobj(s, f)
            else:
                f.truncate(len(head) + size - data)
        manifest.append(f"{name}.gguf\t{want}")
    with open(os.path.join(out, "MANIFEST"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    print(f"{len(manifest)} bad models from {src}")


if __name__ == "__main__":
    main()
