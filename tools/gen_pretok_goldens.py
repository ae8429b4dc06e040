#!/usr/bin/env python3
"""gen_pretok_goldens.py — writes the shared tokenizer corpus and the
pre-tokenizer goldens that tests/unit/test_pretok.c compares against.

    tools/gen_pretok_goldens.py            write tests/data/tok_corpus.json and
                                           tests/data/pretok/*.txt
    tools/gen_pretok_goldens.py --check    also compare every sequence with HF
                                           tokenizers' own pre-tokenizers (when
                                           the `tokenizers` package is installed)

The reference is Python's `regex` package running the same pattern sequences
that src/tokenizer/pretok.c runs with PCRE2: each pattern splits every piece of
the previous one, matches and the gaps between them both become pieces (HF
Split(behavior=Isolated)), empty matches make no piece. The patterns here must
stay byte-identical to the table in pretok.c; the C test checks that too.

Output is deterministic: the corpus is hand-written cases plus mixes drawn from
a seeded generator, so re-running the script reproduces the committed files.
Run it with Python 3.11, whose unicodedata is Unicode 14.0, the version
PCRE2 10.42 carries: the corpus keeps only characters whose general category
is the same there and in the regex package's newer tables, and another
Unicode version would let other characters through.

Formats (first line of each is the golden header that fg_test_golden_open checks):

  tests/data/tok_corpus.json
      forge-golden corpus v1
      [
      "one JSON string per line, ensure_ascii, so every byte is explicit",
      ...
      ]
    Everything after the header is one JSON array. All entries are valid UTF-8
    (so HF tokenizers can take them too); some contain U+0000, which a C reader
    must keep (cJSON's valuestring would cut the string there).

  tests/data/pretok/index.txt
      forge-golden pretok v1
      <sequence id>            one per line; each names a file <id>.txt

  tests/data/pretok/<id>.txt
      forge-golden pretok v1
      corpus <N>               number of corpus strings the goldens cover
      byte_level <0|1>         whether BPE byte-encodes the pieces (gemma4: 0)
      pattern <JSON string>    one line per regex, in the order they apply
      name <pre name>          one line per tokenizer.ggml.pre value
      <i>: <len> <len> ...     byte lengths of the pieces of corpus string i
"""

import argparse
import json
import os
import random
import sys
import unicodedata

import regex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------------------------
# Pattern sequences (the regexes are data from the models' tokenizer.json)
# --------------------------------------------------------------------------

CONTRACTIONS_I = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"

# GPT-2: HF ByteLevel(use_regex=True).
P_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# cl100k (Llama 3, GLM-4): digits in runs of up to three.
P_LLAMA3 = (CONTRACTIONS_I + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2: as cl100k but every digit alone.
P_QWEN2 = (CONTRACTIONS_I + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3.5: combining marks stay with their letters.
P_QWEN35 = (CONTRACTIONS_I + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
            r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# o200k (GPT-4o, Llama 4): words split at lower->upper case changes.
P_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           + CONTRACTIONS_I + "?"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           + CONTRACTIONS_I + "?"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Mistral tekken: o200k's word rule without contractions, single digits.
P_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
            r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# DeepSeek V3: three splits, the CJK one literal code point ranges.
P_DEEPSEEK3 = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]

P_DEEPSEEK_CODER = [
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    r"\p{N}",
]

# BLOOM: everything up to a space or one of a few punctuation marks.
P_BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"

# Gemma 4 is SentencePiece-style BPE (spaces become U+2581 before this split,
# merges run on raw UTF-8): it only separates newline runs from the rest.
P_GEMMA4 = r"[^\n]+|[\n]+"

# (id, byte_level, patterns, names). Names follow llama.cpp's mapping of
# tokenizer.ggml.pre values; the regexes are the tokenizer.json originals.
SEQUENCES = [
    ("default", True,
     [r"[\p{P}\$\+<=>\^~\|]+", P_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
     ["default"]),
    ("gpt2", True, [P_GPT2],
     ["gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-v1-en",
      "jina-v2-code", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat",
      "a.x-4.0", "mellum", "modern-bert", "exaone4", "trillion", "granite-docling"]),
    ("smollm", True, [r"\p{N}", P_GPT2],
     ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
      "minerva-7b", "mellum2"]),
    ("llama3", True, [P_LLAMA3],
     ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
      "lfm2", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4"]),
    ("qwen2", True, [P_QWEN2],
     ["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2", "hunyuan", "grok-2",
      "solar-open"]),
    ("qwen35", True, [P_QWEN35], ["qwen35"]),
    ("gpt4o", True, [P_GPT4O], ["gpt-4o", "llama4", "minimax-m2", "kanana2"]),
    ("tekken", True, [P_TEKKEN], ["tekken"]),
    ("deepseek3", True, P_DEEPSEEK3, ["deepseek-v3", "hunyuan-dense", "joyai-llm"]),
    ("deepseek-coder", True, P_DEEPSEEK_CODER, ["deepseek-coder"]),
    ("bloom", True, [P_BLOOM], ["bloom", "poro-chat", "gpt3-finnish"]),
    ("viking", True, [P_BLOOM, r"\p{N}"], ["viking"]),
    ("gemma4", False, [P_GEMMA4], ["gemma4"]),
]


def split_isolated(pattern, pieces):
    """One HF Split(Isolated) step over every piece: matches and the gaps
    between them are pieces; empty matches make none."""
    out = []
    for s in pieces:
        last = 0
        for m in pattern.finditer(s):
            if m.start() == m.end():
                continue
            if m.start() > last:
                out.append(s[last:m.start()])
            out.append(m.group())
            last = m.end()
        if last < len(s):
            out.append(s[last:])
    return out


def pretokenize(compiled, s):
    pieces = [s] if s else []
    for c in compiled:
        pieces = split_isolated(c, pieces)
    return pieces


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>",
            "<end_of_turn>", "<bos>", "<eos>", "<pad>"]

HAND = [
    "",
    # ASCII prose
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times; it was the age of wisdom.",
    "Mr. Smith went to Washington D.C. on Jan. 5th, 2021 at 3:30 p.m.",
    "e.g. i.e. etc. vs. a.k.a.",
    "Hello",
    " Hello",
    "hello world ",
    "HELLO WORLD",
    "a",
    "A",
    "I",
    "x y z",
    "one two  three   four    five",
    "Don't panic!",
    # Code: C, Python, JSON, HTML, shell, SQL, Rust, Markdown
    "int main(void)\n{\n    printf(\"hello, %s\\n\", name);\n    return 0;\n}\n",
    "static inline int fg_utf8_seq_len(uint8_t c) { return c < 0x80 ? 1 : 0; }",
    "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "x->next = NULL; *p++ = '\\0'; y <<= 2; z >>= 1; w != v && u || !t;",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "class Foo(Bar):\n\tdef __init__(self, *args, **kwargs):\n\t\tsuper().__init__()\n",
    "print(f\"{x!r:>10}\")  # comment\n",
    "lambda x: x**2 if x >= 0 else -x",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n",
    "{\"name\": \"forge\", \"version\": 1, \"tags\": [\"a\", \"b\"], \"ok\": true, \"n\": null}",
    "{\n  \"key\": \"value\",\n  \"nested\": {\"x\": 1.5e-3}\n}",
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><title>Test</title></head>\n<body><p class=\"x\">Hi &amp; bye</p></body>\n</html>",
    "<div id=\"main\" style=\"color: red;\"><br/><img src=\"a.png\" alt=\"\"></div>",
    "$ ls -la /usr/local/bin | grep -v '^d' > out.txt 2>&1",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![]; Ok(()) }",
    "# Title\n\n## Subtitle\n\n- item one\n- item two\n\n```python\nx = 1\n```\n",
    "if (a==b&&c!=d||e<=f) {x+=1;}",
    "a_b_c __init__ _private CONSTANT_VALUE camelCase PascalCase snake_case kebab-case",
    "// TODO(user): fix this\n/* block\n   comment */",
    "std::vector<std::pair<int, std::string>> v;",
    "@decorator\ndef f(): pass",
    "0x1F 0b1010 0o777 1e-10 -42 +3.5 1_000_000",
    # Whitespace runs
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    "\r\r\n",
    " \n",
    "\n ",
    " \n ",
    "  \n\n  ",
    "a\nb",
    "a\n\nb",
    "a\n\n\nb",
    "a\r\nb",
    "a \nb",
    "a\n b",
    "a  \n  b",
    "   leading spaces",
    "trailing spaces   ",
    "   both   ",
    "\tleading tab",
    "trailing tab\t",
    "tab\tseparated\tvalues",
    "mixed \t \n \r\n whitespace",
    "  \t  x",
    "x \t",
    "foo   bar",
    "hello!\n\nworld",
    "a.\r\n\r\nb",
    "}\n\n",
    "\n\n}",
    "\t\n",
    "end.\n",
    "line one\nline two\nline three\n",
    "    indented four\n        indented eight\n",
    "\u000b\u000c",
    "a\u000bb\u000cc",
    "\u00a0",
    "a\u00a0b",
    "a \u00a0b",
    "\u3000",
    "full\u3000width\u3000space",
    "\u2028\u2029",
    "line\u2028separator",
    "\u0085",
    "next\u0085line",
    "\u2000\u2001\u2002\u2003\u2009\u200a\u202f\u205f",
    "\u1680ogham",
    "\u180e",
    "a\u180eb",
    "\u001c\u001d\u001e\u001f",
    "a\u001fb",
    " " * 40,
    "\n" * 12,
    "a" + " " * 17 + "b",
    # Digits and numbers
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "1234567890123",
    "3.14159",
    "1,000,000",
    "1.000.000,50",
    "2024-01-15",
    "15/01/2024",
    "12:30:45",
    "2024-01-15T12:30:45Z",
    "+1 (555) 123-4567",
    "$1,234.56",
    "€99.99",
    "100%",
    "v1.2.3",
    "192.168.0.1",
    "x1y22z333",
    "abc123def",
    "123abc",
    " 42",
    "  42",
    "007",
    "-0.5e+10",
    "31415926535897932384626433832795028841971693993751",
    "\u00bd \u00bc \u00be",
    "x\u00b2 + y\u00b3 = z\u00b9",
    "\u216b \u2160\u2161\u2162",
    "\u0661\u0662\u0663\u0664",
    "\u0967\u0968\u0969",
    "\u4e00\u4e8c\u4e09",
    "\u2460\u2461\u2462",
    "\U0001d7d9\U0001d7da",
    "\uff11\uff12\uff13",
    # Contractions
    "I'm",
    "you're",
    "it's",
    "don't",
    "we've",
    "they'll",
    "he'd",
    "I'm sure they'll say it's fine, don't you think? We've seen it, he'd agree.",
    "IT'S",
    "WE'LL",
    "She'S",
    "THEY'RE WE'VE I'M HE'D DON'T",
    "it\u2019s don\u2019t",
    "\u2018quoted\u2019 \u201cdouble\u201d",
    "rock 'n' roll",
    "''s",
    "'",
    "''",
    "' s",
    "'s",
    " 's",
    "'sup",
    "O'Neil",
    "y'all",
    "'\u017f",
    "it'\u017f",
    "'S'T'RE'VE'M'LL'D",
    "'re're",
    "can't've",
    "'123",
    # Accented Latin
    "caf\u00e9",
    "na\u00efve r\u00e9sum\u00e9 fa\u00e7ade",
    "\u00c5ngstr\u00f6m",
    "Stra\u00dfe \u1e9e",
    "\u0153uvre \u00c6sir",
    "\u0141\u00f3d\u017a",
    "\u0130stanbul \u0131",
    "\u01c5ungla",
    "\ufb01nance \ufb02ow",
    "cafe\u0301",
    "Se\u00f1or Pe\u00f1a",
    "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e6\u00e7\u00e8\u00e9\u00ea\u00eb",
    "\u00c0\u00c1\u00c2\u00c3\u00c4\u00c5",
    "Tr\u01b0\u1eddng \u0111\u1ea1i h\u1ecdc",
    # Greek, Cyrillic, Armenian, Georgian
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u03b1\u03b2\u03b3 \u0394\u03b4 \u03a9\u03c9",
    "\u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0420\u043e\u0441\u0441\u0438\u044f \u0438 \u0423\u043a\u0440\u0430\u0457\u043d\u0430",
    "\u0401\u0436\u0438\u043a \u0432 \u0442\u0443\u043c\u0430\u043d\u0435",
    "\u0532\u0561\u0580\u0565\u0582",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    # CJK
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u4f60\u597d\u4e16\u754c",
    "\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u4e2d\u6587English\u6df7\u5408",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \u30fc",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306f333m\u3067\u3059\u3002",
    "\uff76\uff80\uff76\uff85",
    "\uff21\uff22\uff23\uff41\uff42\uff43",
    "\u300c\u5f15\u7528\u300d\u3001\u300e\u4e8c\u91cd\u300f",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4",
    "\uc548\ub155\ud558\uc138\uc694!",
    "\u1100\u1161\u11a8",
    "\u3131\u314f",
    "\u9f98\u9fa5\u9fa6\u9fff",
    "\u3400\u3401",
    "\U00020000\U0002a6d6",
    # RTL and Indic
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629",
    "\u0641\u0627\u0631\u0633\u06cc \u06f1\u06f2\u06f3",
    "\u0627\u0631\u062f\u0648\u06d4",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u05d1\u05bc\u05b0\u05e8\u05b5\u05d0\u05e9\u05b4\u05c1\u05d9\u05ea",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u0932\u093f\u0916\u093e \u0917\u092f\u093e\u0964",
    "\u0995\u09ae\u09cd\u09aa\u09bf\u0989\u099f\u09be\u09b0",
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd",
    "\u0c24\u0c46\u0c32\u0c41\u0c17\u0c41",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07",
    "\u0ea5\u0eb2\u0ea7",
    "\u1781\u17d2\u1798\u17c2\u179a",
    "\u0f56\u0f7c\u0f51\u0f0b\u0f61\u0f72\u0f42",
    "\u12a0\u121b\u122d\u129b",
    "\u1828\u1823\u1829\u182d\u1823\u182f",
    # Emoji
    "\U0001f600",
    "\U0001f600\U0001f601\U0001f602",
    "Hi \U0001f44b there",
    "\U0001f44d\U0001f3fd",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",
    "\U0001f1fa\U0001f1f8\U0001f1ec\U0001f1e7\U0001f1ef\U0001f1f5",
    "\u2764\ufe0f",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "1\ufe0f\u20e3 #\ufe0f\u20e3",
    "I \u2764\ufe0f NY \U0001f5fd!!",
    "\U0001f525\U0001f525\U0001f525 fire",
    "emoji\U0001f600between\U0001f600words",
    "\u263a \u2603 \u2600",
    # Combining marks, zero-width, format characters
    "a\u0300\u0301\u0302",
    "Z\u0324\u032ea\u0338l\u0334g\u0335o\u0336",
    "\u0301abc",
    " \u0301",
    "e\u0301 combining",
    "\u200b",
    "zero\u200bwidth",
    "\u200c\u200d",
    "a\u200db",
    "\ufeffBOM",
    "soft\u00adhyphen",
    "\u200fRTL mark\u200e",
    "word\u2060joiner",
    "\u034f",
    "\ue000\uf8ff",
    "\ufffd",
    "\uffff",
    "\u0000",
    "a\u0000b",
    "\u0001\u0002\u0003",
    "\u001b[31mred\u001b[0m",
    "\u007f",
    # Symbols and punctuation runs
    "!!!",
    "...",
    "?!?!",
    "---",
    "***",
    "@#$%^&*()",
    "<<>>",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "\u2192\u2190\u2191\u2193",
    "\u2122\u00a9\u00ae",
    "\u20ac\u00a3\u00a5\u20b9\u20bf",
    "\u00b1\u00d7\u00f7\u221e\u2260\u2264\u2265",
    "\u00abguillemets\u00bb",
    "em\u2014dash en\u2013dash",
    "wait\u2026",
    "\u00a7 3 \u00b6 2",
    "\\",
    "\\\\server\\share",
    "/path/to/file.txt",
    "C:\\Windows\\System32",
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "#hashtag @mention",
    "<3 :-) :( ;)",
    "a/b/c",
    "a//b",
    "x!\n\ny",
    "?!\r\n",
    " !!\n",
    "(parens) [brackets] {braces}",
    "\u3002\u3001\uff0c\uff01\uff1f",
    "\u0964\u06d4\u060c",
    "a(b|c)d",
    # Special tokens inside text
    "<|im_start|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad>",
    "<bos>Hello<eos>",
    "<|im_start",
    "im_end|>",
    "<|im_start|",
    "word<|im_start|>word",
    "<|im_start|><|im_end|>",
    " <|im_start|> ",
    "<|endoftext|><|endoftext|>",
    "<start_of_turn",
    "<|",
    "|>",
    "<>",
    "</s>",
    "<s>[INST] Hi [/INST]",
    # Mixed case, for the case-splitting patterns
    "HelloWorld",
    "camelCaseString",
    "XMLHttpRequest",
    "iPhone",
    "McDonald's",
    "HTTPServer",
    "ABCdef",
    "aBC",
    "ALLCAPS",
    "MixedUP'S",
    "\u01c4\u01c5\u01c6",
    "\u1f88\u1f80",
    "\u02b0\u02b1 modifier",
    # Long runs
    "a" * 300,
    "A" * 120 + "b",
    "9" * 100,
    "!" * 64,
    "word " * 40,
    "\u4e2d" * 80,
    "\U0001f600" * 30,
    " \t" * 25,
    "ab\n" * 30,
]


def random_mixes(n, seed):
    """Seeded mixes of fragments from every class above, for the splits the
    hand-written cases do not think of."""
    rng = random.Random(seed)
    words = ["the", "cat", "Hello", "WORLD", "forge", "token", "x", "I", "caf\u00e9",
             "\u043c\u0438\u0440", "\u03ba\u03cc\u03c3\u03bc\u03bf\u03c2", "\u4e16\u754c",
             "\u30c6\u30b9\u30c8", "\ud55c\uad6d", "\u0645\u0631\u062d\u0628\u0627",
             "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947",
             "\u0e44\u0e17\u0e22", "camelCase", "snake_case"]
    spaces = [" ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "   ", "\u2028"]
    digits = ["0", "7", "42", "123", "2024", "3.14", "1,000", "\u0663", "\u00bd", "99999"]
    puncts = [".", ",", "!", "?", "...", "'", "\"", "(", ")", "-", "--", "/", "\\", ":", ";",
              "<", ">", "{", "}", "[", "]", "#", "@", "$", "%", "&", "*", "+", "=", "|", "~",
              "`", "^", "_", "\u2026", "\u3002", "\uff0c", "\u00bf", "\u2014"]
    suffixes = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "\u2019s"]
    emoji = ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f1e9\U0001f1ea", "\u2764\ufe0f",
             "\U0001f468\u200d\U0001f4bb", "\u2728"]
    marks = ["\u0301", "\u0308", "\u093f", "\u0e31", "\u05b4", "\u20e3", "\u200d", "\u200b"]

    def rand_char():
        lo, hi = rng.choice([(0x21, 0x7e), (0xa1, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff),
                             (0x4e00, 0x9fa5), (0x3041, 0x3096), (0x30a1, 0x30fa),
                             (0xac00, 0xd7a3), (0x600, 0x64a), (0x5d0, 0x5ea), (0x900, 0x97f),
                             (0xe01, 0xe5b), (0x2000, 0x206f), (0x2190, 0x21ff),
                             (0x1f300, 0x1f5ff)])
        c = chr(rng.randint(lo, hi))
        return c if stable_char(c) else rand_char()

    pools = [words, spaces, digits, puncts, suffixes, emoji, marks, SPECIALS]
    weights = [30, 20, 12, 15, 6, 5, 4, 3]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 24)):
            if rng.random() < 0.12:
                parts.append("".join(rand_char() for _ in range(rng.randint(1, 4))))
            else:
                pool = rng.choices(pools, weights)[0]
                parts.append(rng.choice(pool))
        out.append("".join(parts))
    return out


GC_NAMES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd",
            "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc",
            "Cf", "Cs", "Co", "Cn"]
GC_RE = [(g, regex.compile(r"\p{gc=%s}" % g)) for g in GC_NAMES]


def stable_char(c):
    """True if c is assigned, with the same general category, in Python's
    unicodedata (Unicode 14 on 3.11, the version PCRE2 10.42 carries) and in
    the newer tables of the regex package: characters newer than that would
    split differently in PCRE2 for reasons that are not forge's."""
    gc = unicodedata.category(c)
    if gc == "Cn" and c not in "\uffff":
        return False
    rgc = next(g for g, r in GC_RE if r.match(c))
    return gc == rgc


def build_corpus():
    corpus = list(HAND)
    corpus += [s for s in dict.fromkeys(random_mixes(120, seed=20240611)) if s not in HAND]
    for i, s in enumerate(corpus):
        s.encode("utf-8")  # raises on lone surrogates
        bad = [c for c in set(s) if not stable_char(c)]
        if bad:
            sys.exit("corpus[%d] %r has characters whose Unicode data changed: %r" % (i, s, bad))
    seen = set()
    for s in corpus:
        if s in seen:
            sys.exit("corpus has a duplicate: %r" % s)
        seen.add(s)
    return corpus


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(text)


def write_corpus(corpus):
    lines = ["forge-golden corpus v1", "["]
    for i, s in enumerate(corpus):
        lines.append(json.dumps(s, ensure_ascii=True) + ("," if i + 1 < len(corpus) else ""))
    lines.append("]")
    write(os.path.join(ROOT, "tests/data/tok_corpus.json"), "\n".join(lines) + "\n")


def write_goldens(corpus):
    ids = []
    for sid, byte_level, patterns, names in SEQUENCES:
        compiled = [regex.compile(p) for p in patterns]
        lines = ["forge-golden pretok v1", "corpus %d" % len(corpus),
                 "byte_level %d" % (1 if byte_level else 0)]
        lines += ["pattern " + json.dumps(p, ensure_ascii=True) for p in patterns]
        lines += ["name " + n for n in names]
        for i, s in enumerate(corpus):
            pieces = pretokenize(compiled, s)
            assert "".join(pieces) == s
            lens = [len(p.encode("utf-8")) for p in pieces]
            lines.append(("%d:" % i) + "".join(" %d" % n for n in lens))
        write(os.path.join(ROOT, "tests/data/pretok/%s.txt" % sid), "\n".join(lines) + "\n")
        ids.append(sid)
    write(os.path.join(ROOT, "tests/data/pretok/index.txt"),
          "\n".join(["forge-golden pretok v1"] + ids) + "\n")


# --------------------------------------------------------------------------
# Cross-check against HF tokenizers' own pre-tokenizers
# --------------------------------------------------------------------------


def hf_pretokenizers():
    from tokenizers import Regex
    from tokenizers import pre_tokenizers as P

    def split(p):
        return P.Split(Regex(p), behavior="isolated", invert=False)

    def bl(use_regex):
        return P.ByteLevel(add_prefix_space=False, use_regex=use_regex)

    def seq_bl(patterns):
        return P.Sequence([split(p) for p in patterns] + [bl(False)])

    return {
        # llama.cpp's "default" is Falcon's chain with Digits as \p{N}+.
        "default": P.Sequence([P.Punctuation("contiguous"), bl(True),
                               P.Digits(individual_digits=False), split(r"[0-9][0-9][0-9]")]),
        "gpt2": bl(True),
        "smollm": P.Sequence([P.Digits(individual_digits=True), bl(True)]),
        "llama3": seq_bl([P_LLAMA3]),
        "qwen2": seq_bl([P_QWEN2]),
        "qwen35": seq_bl([P_QWEN35]),
        "gpt4o": seq_bl([P_GPT4O]),
        "tekken": seq_bl([P_TEKKEN]),
        "deepseek3": seq_bl(P_DEEPSEEK3),
        "deepseek-coder": P.Sequence([split(p) for p in P_DEEPSEEK_CODER[:4]]
                                     + [P.Digits(individual_digits=True), bl(False)]),
        "bloom": seq_bl([P_BLOOM]),
        "viking": P.Sequence([split(P_BLOOM), P.Digits(individual_digits=True), bl(False)]),
        "gemma4": P.Sequence([split(P_GEMMA4)]),
    }


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def check_hf(corpus):
    try:
        hf = hf_pretokenizers()
    except ImportError:
        print("check: the tokenizers package is not installed; skipped")
        return 0
    unmap = bytes_to_unicode()
    n_bad = 0
    for sid, byte_level, patterns, _ in SEQUENCES:
        compiled = [regex.compile(p) for p in patterns]
        diffs = []
        for i, s in enumerate(corpus):
            ours = [p.encode("utf-8") for p in pretokenize(compiled, s)]
            got = [p for p, _ in hf[sid].pre_tokenize_str(s)]
            if sid != "gemma4":
                got = [bytes(unmap[c] for c in p) for p in got]
            else:
                got = [p.encode("utf-8") for p in got]
            if ours != got:
                diffs.append((i, s, ours, got))
        print("check %-15s %3d/%d corpus strings differ from HF tokenizers"
              % (sid, len(diffs), len(corpus)))
        for i, s, ours, got in diffs[:3]:
            print("    [%d] %r\n        regex: %r\n        hf:    %r" % (i, s, ours, got))
        n_bad += len(diffs) if sid != "default" else 0
    return n_bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="also compare with HF tokenizers' pre-tokenizers")
    args = ap.parse_args()
    if unicodedata.unidata_version != "14.0.0":
        print("warning: unicodedata is Unicode %s, not 14.0.0 (Python 3.11): the random "
              "mixes may differ from the committed corpus" % unicodedata.unidata_version,
              file=sys.stderr)
    corpus = build_corpus()
    write_corpus(corpus)
    write_goldens(corpus)
    print("wrote %d corpus strings and %d pre-tokenizer goldens (regex %s, unicodedata %s)"
          % (len(corpus), len(SEQUENCES), regex.__version__, unicodedata.unidata_version))
    if args.check and check_hf(corpus):
        sys.exit(1)


if __name__ == "__main__":
    main()
