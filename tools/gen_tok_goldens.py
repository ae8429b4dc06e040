#!/usr/bin/env python3
"""gen_tok_goldens.py — the reference token ids that tests/unit/test_tokenizer.c
compares forge's tokenizer against.

    tools/gen_tok_goldens.py [--models DIR]    write tests/data/tok/<model>.txt

The reference is HF transformers/tokenizers building a fast tokenizer from the
GGUF's own vocabulary (AutoTokenizer.from_pretrained(dir, gguf_file=...)), an
implementation independent of forge and of llama.cpp. For each model and each
string of the shared corpus (tests/data/tok_corpus.json) it records:

  s <i>: ids    add_special_tokens=True (BOS/EOS as the GGUF flags say), special
                tokens in the text matched whole      -> fg_tok_encode(t, s, true, true)
  p <i>: ids    the same with split_special_tokens=True: control tokens in the
                text are plain text (user-defined ones still match)
                                                      -> fg_tok_encode(t, s, true, false)
                (written only for strings containing '<', where it can differ)
  x <i>: ids, q <i>: ids   the same two for string i of tests/data/tok/extra_corpus.json,
                tokenizer edge cases this script writes (the shared corpus's
                format, under the header "forge-golden tok v1")

SmolLM2: transformers' GGUF loader gives a byte-level BPE its plain ByteLevel
pre-tokenizer, while the model's real tokenizer.json has
Sequence[Digits(individual_digits=True), ByteLevel]. Both are run; the real one
is recorded, and the script reports on how many strings they disagree.

Format (all lines after the header are "key value" or "<mode> <i>: ids"):
    forge-golden tok v1
    model <gguf file name>
    corpus tok_corpus.json <N> <fnv1a64 hex>   N strings; the hash is FNV-1a 64
                                               over, per string, its UTF-8 byte
                                               length (u64 little-endian) then
                                               its bytes
    extra tok/extra_corpus.json <N> <fnv1a64 hex>
    reference <library versions and notes>
    s 0: 2
    s 1: 2 9259 1902
    ...
"""

import argparse
import json
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = [
    # (golden name, gguf file, real pre-tokenizer override)
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "digits+bytelevel"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf", None),
]


def load_corpus():
    path = os.path.join(ROOT, "tests/data/tok_corpus.json")
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if header != "forge-golden corpus v1\n":
            sys.exit(f"{path}: unexpected header {header!r}")
        return json.loads(f.read())


def extra_corpus():
    """Tokenizer edge cases beyond the shared corpus: long whitespace runs (Gemma
    has user-defined tokens for up to 31 spaces/tabs/newlines), the U+2581 space
    mark written literally, special-token look-alikes, long single pieces,
    characters that need byte fallback. Deterministic."""
    import random
    rng = random.Random(1234)
    x = []
    for n in (1, 2, 3, 15, 16, 30, 31, 32, 33, 40, 47, 62, 63, 64, 65, 100):
        x += [" " * n, "\t" * n, "\n" * n, "a" + " " * n + "b", " " * n + "x"]
    x += ["  \n  ", " \t \n ", "\r\n\r\n  \r\n", "\n \n \n", "\t \t  \t   x"]
    x += ["        if (x) {\n            return y;\n        }\n",
          "    " * 10 + "deep();\n", "\t\t\t\t\tint x;\n"]
    x += ["\u2581", "\u2581\u2581hi", " \u2581 ", "a\u2581b", "\u2581" * 5]
    x += ["<unused99>", "<unused0><unused10>", "<start_of_image>", "<end_of_image>", "<table><tr><td>x</td>",
          "<<bos>>", "<bos", "bos>", "<b>bold</b>", "<|im_start|><|im_end|>", "<|im_start|", "|im_start|>",
          "<|endoftext|>x", "x<|endoftext|>", "<mask>", "[multimodal]", "<h1>T</h1>\n\n<p>"]
    x += ["1234567890" * 10, "a" * 1000, "ab" * 500, "Hello" * 200, "!" * 300, ".\n" * 100]
    x += ["\U00020000\U0002A6A5\U0010FFFD", "\U0001F9D1\u200d\U0001F680", "e\u0301\u0327",
          "\x00", "\x7f\x01\x1b[0m", "\ufeffBOM", "\ud7ff\ue000\uffef"]
    pool = [chr(c) for c in list(range(0x20, 0x7F)) + list(range(0xA0, 0x250)) + list(range(0x370, 0x3FF))
            + list(range(0x400, 0x4FF)) + list(range(0x3040, 0x30FF)) + list(range(0x4E00, 0x4E80))
            + list(range(0x1F600, 0x1F650))] + [" ", "  ", "\n", "\t", "<bos>", "<|im_end|>"]
    for n in (50, 200, 1000, 3000):
        x.append("".join(rng.choice(pool) for _ in range(n)))
    return x


def corpus_hash(corpus):
    h = 0xCBF29CE484222325
    for s in corpus:
        b = s.encode("utf-8")
        for byte in struct.pack("<Q", len(b)) + b:
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def encode_all(tok, corpus, split_special):
    out = []
    for s in corpus:
        kw = {"split_special_tokens": True} if split_special else {}
        out.append(tok(s, add_special_tokens=True, **kw)["input_ids"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("FORGE_MODEL_DIR", os.path.join(ROOT, "models")))
    args = ap.parse_args()

    import tokenizers
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    corpus = load_corpus()
    chash = corpus_hash(corpus)
    extra = extra_corpus()
    with open(os.path.join(ROOT, "tests/data/tok/extra_corpus.json"), "w", encoding="ascii") as f:
        f.write("forge-golden tok v1\n[\n")
        f.write(",\n".join(json.dumps(e, ensure_ascii=True) for e in extra))
        f.write("\n]\n")
    n_shared = len(corpus)
    corpus = corpus + extra
    os.makedirs(os.path.join(ROOT, "tests/data/tok"), exist_ok=True)

    for name, gguf_file, override in MODELS:
        if not os.path.exists(os.path.join(args.models, gguf_file)):
            print(f"{gguf_file}: not found in {args.models}; skipped (run `make models`)")
            continue
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(args.models, gguf_file=gguf_file)
        print(f"{name}: HF tokenizer built in {time.time() - t0:.1f} s "
              f"({type(tok).__name__}, add_bos={getattr(tok, 'add_bos_token', None)})")
        note = "transformers GGUF tokenizer"
        ids = encode_all(tok, corpus, False)
        ids_p = encode_all(tok, corpus, True)

        if override == "digits+bytelevel":
            backend = tok.backend_tokenizer
            gguf_pre = backend.pre_tokenizer
            backend.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ])
            real = encode_all(tok, corpus, False)
            real_p = encode_all(tok, corpus, True)
            backend.pre_tokenizer = gguf_pre
            diff = [i for i in range(len(corpus)) if real[i] != ids[i]]
            print(f"{name}: GGUF ByteLevel vs real Digits+ByteLevel pre-tokenizer differ on "
                  f"{len(diff)} of {len(corpus)} strings" + (f", e.g. {diff[:8]}" if diff else ""))
            ids, ids_p = real, real_p
            note += ", pre-tokenizer Sequence[Digits(individual_digits=True), ByteLevel] (tokenizer.json)"

        path = os.path.join(ROOT, "tests/data/tok", name + ".txt")
        n_p = 0
        with open(path, "w", encoding="ascii") as f:
            f.write("forge-golden tok v1\n")
            f.write(f"model {gguf_file}\n")
            f.write(f"corpus tok_corpus.json {n_shared} {chash:016x}\n")
            f.write(f"extra tok/extra_corpus.json {len(extra)} {corpus_hash(extra):016x}\n")
            f.write(f"reference transformers {transformers.__version__} tokenizers "
                    f"{tokenizers.__version__}: {note}\n")
            for i, v in enumerate(ids):
                mode, j = ("s", i) if i < n_shared else ("x", i - n_shared)
                f.write(f"{mode} {j}:" + "".join(f" {x}" for x in v) + "\n")
            for i, v in enumerate(ids_p):
                if "<" in corpus[i]:
                    mode, j = ("p", i) if i < n_shared else ("q", i - n_shared)
                    f.write(f"{mode} {j}:" + "".join(f" {x}" for x in v) + "\n")
                    n_p += 1
        n_tok = sum(len(v) for v in ids)
        print(f"{name}: wrote {path}: {n_shared} + {len(extra)} strings, {n_tok} tokens, {n_p} split-special lines")


if __name__ == "__main__":
    main()
