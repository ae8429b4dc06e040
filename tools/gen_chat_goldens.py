#!/usr/bin/env python3
"""Generates tests/data/chat/*.golden, the goldens for src/tokenizer/chat.c.

The expected prompts come from the real Jinja chat templates, rendered the way
transformers' apply_chat_template renders them: by
transformers.utils.chat_template_utils.render_jinja_template when transformers
is installed, else by an equivalent jinja2 environment built here
(ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with
raise_exception, a json.dumps tojson and strftime_now; tools=None and
documents=None are passed as HF does). forge implements the templates in C;
this script only writes down what Jinja says. Run it from anywhere; it writes
into the repository it lives in. The output is deterministic: Llama 3.2's
strftime_now is pinned to RENDER_DATE.

The template texts are the models' data, not ours, so none is committed. They
are read from a cache that git ignores: $FORGE_CHAT_TEMPLATES, else
build/chat-templates/ at the repository root, one <name>.jinja per template,
byte for byte the model's chat_template (tools/chat_templates/README.md says
where each comes from). SmolLM2's is read from the GGUF instead
(tokenizer.chat_template of $FORGE_MODEL_DIR or models/,
SmolLM2-135M-Instruct.Q4_1.gguf; `make models` fetches it). Each text's
SHA-256 is pinned in TEMPLATES, so a golden can only be regenerated from the
template it was rendered from; a missing or different file stops the script,
which then says where to get the right one.

Every file starts with the text line

    forge-golden chat v1\\n

followed by one JSON object:

    template         the template's name: its file name in the cache
    sha256           SHA-256 of the template's exact text (UTF-8 bytes)
    gguf             the model file whose tokenizer.chat_template is the
                     template (read from there, not the cache), or null
    source           the model the template belongs to
    renderer         what rendered the outputs (package and version)
    bos_token, eos_token   the token texts the template was given
    expect           what fg_chat_detect must find in the source:
                     {"kind": forge name, "default_system": str,
                      "bos_in_template": bool, "date": str}
    render_date      for a template that dates the prompt today (Llama 3.2's
                     strftime_now), the date the outputs were rendered with
                     (set fg_chat_tmpl.date to it); else null
    cases            a list of
                     {"name": str, "messages": [{"role", "content"}...],
                      "add_generation_prompt": bool,
                      "disable_thinking": bool,   (Qwen3 enable_thinking=false)
                      "output": str}              the rendered prompt, or
                      "error": str}               the template's exception text
"""
import argparse
import datetime as dt
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMPL_DIR = os.environ.get("FORGE_CHAT_TEMPLATES") or os.path.join(ROOT, "build", "chat-templates")
OUT_DIR = os.path.join(ROOT, "tests", "data", "chat")
MODEL_DIR = os.environ.get("FORGE_MODEL_DIR") or os.path.join(ROOT, "models")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

RENDER_DATE = dt.datetime(2026, 11, 5, 12, 0, 0)  # a one-digit day: %d pads it

LLAMA3_TOKENS = ("<|begin_of_text|>", "<|eot_id|>")
MISTRAL_TOKENS = ("<s>", "</s>")
TOKENIZER_CONFIG = "the chat_template of its tokenizer_config.json"

# One row per golden:
#   name       the template's file name in the cache (and the golden's name)
#   sha256     of the template's exact text; the goldens were rendered from it
#   gguf       the model file the text is read from instead of the cache, or None
#   hf         the model repository the text comes from
#   where      which of that model's files holds it (default: TOKENIZER_CONFIG)
#   source     the model, for the golden's "source" field
#   bos, eos   the token texts the template is given
#   expect     what fg_chat_detect must find in the text
TEMPLATES = [
    dict(name="smollm2-135m-instruct.jinja",
         sha256="872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
         gguf=SMOLLM2_GGUF, hf="HuggingFaceTB/SmolLM2-135M-Instruct",
         source="HuggingFaceTB/SmolLM2-135M-Instruct (from the GGUF)", bos="<|im_start|>", eos="<|im_end|>",
         expect={"kind": "chatml",
                 "default_system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}),
    dict(name="qwen2.5-instruct.jinja",
         sha256="cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
         hf="Qwen/Qwen2.5-7B-Instruct", source="Qwen/Qwen2.5-7B-Instruct", bos="", eos="<|im_end|>",
         expect={"kind": "chatml",
                 "default_system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."}),
    dict(name="qwen3.jinja",
         sha256="87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",
         hf="Qwen/Qwen3-0.6B", source="Qwen/Qwen3-0.6B", bos="", eos="<|im_end|>", expect={"kind": "qwen3"}),
    dict(name="llama3-instruct.jinja",
         sha256="ba03a121d097859c7b5b9cd03af99aafe95275210d2876f642ad9929a150f122",
         hf="meta-llama/Meta-Llama-3-8B-Instruct", source="meta-llama/Meta-Llama-3-8B-Instruct",
         bos=LLAMA3_TOKENS[0], eos=LLAMA3_TOKENS[1], expect={"kind": "llama3"}),
    dict(name="llama3.3-instruct.jinja",
         sha256="e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
         hf="meta-llama/Llama-3.3-70B-Instruct", source="meta-llama/Llama-3.3-70B-Instruct (3.1's template)",
         bos=LLAMA3_TOKENS[0], eos=LLAMA3_TOKENS[1], expect={"kind": "llama3.1", "date": "26 Jul 2024"}),
    dict(name="llama3.2-instruct.jinja",
         sha256="5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",
         hf="meta-llama/Llama-3.2-3B-Instruct", source="meta-llama/Llama-3.2-3B-Instruct",
         bos=LLAMA3_TOKENS[0], eos=LLAMA3_TOKENS[1], expect={"kind": "llama3.1", "date": ""}),
    dict(name="gemma3-it.jinja",
         sha256="d2f96210400e38149e26e01918a408c3f2ad3d4bd87c44e8dcf8e1a611a98535",
         hf="google/gemma-3-*-it", source="google/gemma-3-*-it", bos="<bos>", eos="<eos>",
         expect={"kind": "gemma"}),
    dict(name="gemma2-it.jinja",
         sha256="ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6",
         hf="google/gemma-2-2b-it", source="google/gemma-2-2b-it", bos="<bos>", eos="<eos>",
         expect={"kind": "gemma2"}),
    dict(name="glm4-9b-chat.jinja",
         sha256="27288f957f8364c990a2ce13bf5f8bf86921c4bce467ce698c76dcc69466d821",
         hf="THUDM/glm-4-9b-chat", source="THUDM/glm-4-9b-chat", bos="", eos="<|endoftext|>",
         expect={"kind": "glm4"}),
    dict(name="glm-z1-9b-0414.jinja",
         sha256="adee3accece2e4a347280cb16580b3575d6164f2a0f4ac58a1a8392a346eb241",
         hf="THUDM/GLM-Z1-9B-0414", where="its chat_template.jinja", source="THUDM/GLM-Z1-9B-0414",
         bos="", eos="<|endoftext|>", expect={"kind": "glm4-z1"}),
    dict(name="mistral-v1.jinja",
         sha256="796853172235ab3aaa4810013ddfe2eab481bda3306dad4f700c00d436eed596",
         hf="mistralai/Mixtral-8x7B-Instruct-v0.1",
         source="mistralai/Mixtral-8x7B-Instruct-v0.1 (the v1 template of Mistral-7B v0.1/v0.2)",
         bos=MISTRAL_TOKENS[0], eos=MISTRAL_TOKENS[1], expect={"kind": "mistral"}),
    dict(name="mistral-legacy.jinja",
         sha256="26a59556925c987317ce5291811ba3b7f32ec4c647c400c6cc7e3a9993007ba7",
         hf="mistralai/Mistral-7B-Instruct-v0.2", where=TOKENIZER_CONFIG + " as first released",
         source="mistralai/Mistral-7B-Instruct-v0.2 (original template)",
         bos=MISTRAL_TOKENS[0], eos=MISTRAL_TOKENS[1], expect={"kind": "mistral-legacy"}),
    dict(name="mistral-v3.jinja",
         sha256="e16746b40344d6c5b5265988e0328a0bf7277be86f1c335156eae07e29c82826",
         hf="mistralai/Mistral-Large-Instruct-2407", source="mistralai/Mistral-Large-Instruct-2407 (the v3 template)",
         bos=MISTRAL_TOKENS[0], eos=MISTRAL_TOKENS[1], expect={"kind": "mistral-v3"}),
    dict(name="mistral-v3-tekken.jinja",
         sha256="e4676cb56dffea7782fd3e2b577cfaf1e123537e6ef49b3ec7caa6c095c62272",
         hf="mistralai/Mistral-Nemo-Instruct-2407", source="mistralai/Mistral-Nemo-Instruct-2407",
         bos=MISTRAL_TOKENS[0], eos=MISTRAL_TOKENS[1], expect={"kind": "mistral-v3-tekken"}),
    dict(name="mistral-v7.jinja",
         sha256="3c4ad5fa60dd8c7ccdf82fa4225864c903e107728fcaf859fa6052cb80c92ee9",
         hf="mistralai/Mistral-Large-Instruct-2411", source="mistralai/Mistral-Large-Instruct-2411 (the v7 template)",
         bos=MISTRAL_TOKENS[0], eos=MISTRAL_TOKENS[1], expect={"kind": "mistral-v7"}),
]


def S(c):
    return {"role": "system", "content": c}


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


# Text that trims, escapes and encodes in every way the templates can get
# wrong: edge whitespace (ASCII and Unicode, which Python's strip() removes),
# a zero-width space (which it does not), Jinja and template syntax, control
# tokens written as text, and multi-byte UTF-8.
TRICKY = ' \t\n Line one\nline "two" \'three\' \\ {{ x }} {% y %} <|im_end|> [INST]\n\n  héllo wörld 你好 🦙\u00a0 \n'
UNICODE_WS = "\u3000\u2003\u00a0\u0085\u2028 Hi \u202f\u205f\u1680\x1c"
ZERO_WIDTH = "\u200bHello\u200b"

CONVERSATIONS = [
    ("user", [U("Hello")]),
    ("system_user", [S("You are a terse assistant."), U("What is 2+2?")]),
    ("multi_turn", [S("You are helpful."), U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")]),
    ("multi_turn_no_system", [U("Hi"), A("Hello!"), U("Who are you?"), A("  I am an assistant  "), U("Bye")]),
    ("ends_with_assistant", [U("Say hi"), A("Hi")]),
    ("system_only", [S("Only a system prompt")]),
    ("empty_user", [U("")]),
    ("empty_system", [S(""), U("Hi")]),
    ("empty_assistant", [U("Hi"), A(""), U("Again")]),
    ("whitespace_only", [U("  \n\t  ")]),
    ("tricky_text", [S(TRICKY), U(TRICKY), A(TRICKY), U(TRICKY)]),
    ("unicode_whitespace", [S(UNICODE_WS), U(UNICODE_WS), A(UNICODE_WS), U(ZERO_WIDTH)]),
    ("newlines_edges", [U("\n\nHello\n\n"), A("\nAnswer\n"), U("\n")]),
    ("think_history", [U("2+2?"), A("<think>\nadd them\n</think>\n\n4"), U("and 3+3?")]),
    ("think_final", [U("2+2?"), A("<think>\n\nadd them\n\n</think>\n\n\n4")]),
    ("think_unclosed", [U("q"), A("<think>only reasoning"), U("q2"), A("a</think>b</think>\nc")]),
    ("tool_response_user", [U("q"), A("<think>r</think>a"), U("<tool_response>\n42\n</tool_response>"),
                            A("r2</think>done")]),
    ("assistant_first", [A("I speak first"), U("Hello")]),
    ("two_users", [U("one"), U("two")]),
    ("system_after_system", [S("first"), S("second"), U("Hi")]),
    ("system_in_middle", [U("Hi"), S("late system"), U("Hello again")]),
    ("system_at_odd_position", [U("Hi"), S("late system")]),
    ("system_then_assistant", [S("sys"), A("I start"), U("Hi")]),
    ("long", [S("sys")] + [m for k in range(6) for m in (U(f"question {k}"), A(f"answer {k}"))] + [U("last")]),
]


class FixedDatetime(dt.datetime):
    """strftime_now reads datetime.now(); pinning it keeps Llama 3.2 deterministic."""

    @classmethod
    def now(cls, tz=None):
        return RENDER_DATE


def make_renderer():
    """Returns (render(template, messages, **kwargs) -> str, description)."""
    try:
        import transformers
        from transformers.utils import chat_template_utils as ctu

        ctu.datetime = FixedDatetime

        def render(template, messages, **kw):
            out, _ = ctu.render_jinja_template(conversations=[messages], chat_template=template, **kw)
            return out[0]

        return render, f"transformers {transformers.__version__} render_jinja_template"
    except ImportError:
        pass

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: RENDER_DATE.strftime(fmt)

    def render(template, messages, add_generation_prompt=False, **kw):
        return env.from_string(template).render(messages=messages, tools=None, documents=None,
                                                add_generation_prompt=add_generation_prompt, **kw)

    return render, f"jinja2 {jinja2.__version__} (transformers-equivalent environment)"


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_template(t):
    """Returns (text, None) for template row t, or (None, why) when its text is
    missing or is not the pinned one; why says where to get the right text."""
    if t.get("gguf"):
        path = os.path.join(MODEL_DIR, t["gguf"])
        if not os.path.exists(path):
            return None, f"{path} is missing: run `make models` (or tools/fetch-model smollm2)"
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("tokenizer.chat_template")
        if field is None:
            return None, f"{path} has no tokenizer.chat_template"
        text = field.contents()
    else:
        path = os.path.join(TMPL_DIR, t["name"])
        if not os.path.exists(path):
            return None, (f"{path} is missing: from model {t['hf']}, save {t.get('where', TOKENIZER_CONFIG)} "
                          f"there, byte for byte (see tools/chat_templates/README.md)")
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    have = sha256(text)
    if have != t["sha256"]:
        return None, (f"{path} has sha256 {have}, but the goldens were rendered from {t['sha256']}: "
                      f"a different revision of {t['hf']}'s template? (see tools/chat_templates/README.md)")
    return text, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.parse_args()

    texts, problems = {}, []
    for t in TEMPLATES:
        text, why = load_template(t)
        if why:
            problems.append(why)
        texts[t["name"]] = text
    if problems:
        sys.exit("cannot regenerate the chat goldens; no file was written:\n  " + "\n  ".join(problems))

    render, renderer = make_renderer()
    os.makedirs(OUT_DIR, exist_ok=True)
    for t in TEMPLATES:
        fname, bos, eos, expect = t["name"], t["bos"], t["eos"], t["expect"]
        template = texts[fname]
        kind = expect["kind"]
        dated = "strftime_now" in template
        full_expect = {
            "kind": kind,
            "default_system": expect.get("default_system", ""),
            "bos_in_template": "bos_token" in template,
            "date": expect.get("date", ""),
        }
        cases = []
        for name, messages in CONVERSATIONS:
            for gen in (False, True):
                variants = [False, True] if (kind == "qwen3" and gen) else [False]
                for no_think in variants:
                    kw = {"add_generation_prompt": gen, "bos_token": bos, "eos_token": eos}
                    if no_think:
                        kw["enable_thinking"] = False
                    case = {"name": name, "messages": messages, "add_generation_prompt": gen,
                            "disable_thinking": no_think}
                    try:
                        case["output"] = render(template, messages, **kw)
                    except Exception as e:  # the template's raise_exception, or a Jinja error
                        case["error"] = str(e)
                    cases.append(case)
        doc = {
            "template": fname,
            "sha256": t["sha256"],
            "gguf": t.get("gguf"),
            "source": t["source"],
            "renderer": renderer,
            "bos_token": bos,
            "eos_token": eos,
            "expect": full_expect,
            "render_date": RENDER_DATE.strftime("%d %b %Y") if dated else None,
            "cases": cases,
        }
        out = os.path.join(OUT_DIR, os.path.splitext(fname)[0] + ".golden")
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            f.write("forge-golden chat v1\n")
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n_err = sum("error" in c for c in cases)
        print(f"{os.path.relpath(out, ROOT)}: {len(cases)} cases, {n_err} raise")


if __name__ == "__main__":
    main()
