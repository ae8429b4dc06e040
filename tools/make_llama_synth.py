#!/usr/bin/env python3
"""Writes small synthetic-weight models of the architectures forge runs
(llama, qwen2, qwen3, Mistral, Phi-3, GLM-4, ChatGLM, Gemma 3) and HF transformers reference logits for them: the
end-to-end goldens of the CPU and GPU backends.

Two shapes: "gqa" (n_embd 64, 4 query heads over 2 KV heads of 16 dims)
and "mqa" (n_embd 256, 2 query heads sharing 1 KV head of 128 dims, the
head size of most real models). For each shape and weight type (F32, F16,
Q8_0, Q4_0) the same random weights (per-shape seed) are written to
tests/data/llama-synth/<shape>-<type>.gguf with llama.cpp's
tensor names, layout and metadata (q/k rows in GGUF's rotary order), and
the quantized ones are quantized by the gguf package. transformers then
loads each file itself (dequantizing every weight to f32, undoing the q/k
permutation), runs LlamaForCausalLM in float32 on the CPU, and records for a
fixed token sequence:
  - the logits at every position (all of the vocabulary);
  - the greedy continuation of 64 tokens (argmax, full recompute each step).
Written to tests/data/llama-synth/<shape>-<type>.json, first line
"forge-golden llama-synth v1".

The weights are scaled so that activations stay O(1) and the logits spread
over several units, and the seed is the first from 1 whose greedy
continuations (for every type) never pick between two logits closer than
MIN_MARGIN: backends whose KV cache is F16 (forge's GPU) round the keys and
values, which moves logits by ~1e-3, and must still follow transformers' picks.

Qwen2 (q/k/v biases, NeoX RoPE: no q/k permutation) and Qwen3 (per-head
RMSNorm of q and k before RoPE, NeoX, a head size of 32 that is not
n_embd / n_head, so attention.key_length is exercised) use the "gqa" shape
under the names qwen2-<type> and qwen3-<type>. For them transformers builds
Qwen2ForCausalLM / Qwen3ForCausalLM from a config of that shape and loads
the weights the GGUF file holds (dequantized, for the quantized types) by
their HF names: the file is an export of that HF model with llama.cpp's
names and metadata.

Mistral is llama with a sliding window (written as llama.cpp does: arch
"llama", llama.attention.sliding_window), here 8 tokens, under mistral-<type>;
transformers runs MistralForCausalLM with that window.

Phi-3 (NeoX RoPE, q/k/v in one attn_qkv.weight and gate/up in one
ffn_up.weight, gate first, as llama.cpp writes them) is phi3-<type>;
transformers runs Phi3ForCausalLM.

GLM-4-0414 (glm4: q/k/v biases, rotary on half of each head with adjacent
pairs, gate/up fused, post-attention and post-FFN norms before each
residual add) is glm4-<type>; transformers runs Glm4ForCausalLM.

GLM-4-9B-chat (chatglm: q/k/v and their biases in attn_qkv, gate/up
fused, rotary on half of each head, 2 KV heads) is chatglm-<type>;
transformers runs GlmForCausalLM on the same weights, q/k/v apart.

Gemma 3 (gemma3: GeGLU, embeddings times sqrt(n_embd), pre- and post-norms
stored as 1 + w as llama.cpp writes them, QK-norm, tied output, six layers:
five with an 8-token sliding window and RoPE base 10000, then a global one
with base 1e6) is gemma3-<type>; transformers runs Gemma3ForCausalLM.

MXFP4 (OCP MX: E2M1 codes with an E8M0 scale per 32) is the llama files
only, gqa-mxfp4 and mqa-mxfp4, written by `--mxfp4` from the seed the f32
goldens record (the weight format does not depend on the architecture;
transformers dequantizes it with the gguf package as it does the others).

usage: tools/make_llama_synth.py [llama|qwen2|qwen3|mistral|phi3|glm4|chatglm|gemma3 ...]   (default: all;
       needs numpy, gguf, torch, transformers)
       tools/make_llama_synth.py --mxfp4 [ARCH ...]   (default: llama)
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "llama-synth")

SHAPES = {  # n_embd, n_head, n_head_kv, n_ff, n_layer
    "gqa": (64, 4, 2, 160, 2),
    "gemma": (64, 4, 2, 160, 6),  # five sliding-window layers, then a global one
    "mqa": (256, 2, 1, 128, 1),
}
# The files of each architecture: name prefix -> (arch, shape, head size or 0
# for n_embd / n_head).
MODELS = {
    "llama": [("gqa", "llama", "gqa", 0), ("mqa", "llama", "mqa", 0)],
    "qwen2": [("qwen2", "qwen2", "gqa", 0)],
    "qwen3": [("qwen3", "qwen3", "gqa", 32)],
    "mistral": [("mistral", "mistral", "gqa", 0)],
    "phi3": [("phi3", "phi3", "gqa", 0)],
    "glm4": [("glm4", "glm4", "gqa", 0)],
    "chatglm": [("chatglm", "chatglm", "gqa", 0)],
    "gemma3": [("gemma3", "gemma3", "gemma", 0)],
}
GEMMA_WINDOW = 8
# Mistral's sliding window in the synthetic model: shorter than the prompt,
# so every position past it attends to a window, not the whole sequence.
MISTRAL_WINDOW = 8
N_VOCAB, N_CTX = 320, 256
N_EMBD = N_HEAD = N_HEAD_KV = N_FF = N_LAYER = HEAD_DIM = 0  # set per shape by use_shape
ARCH = "llama"


def use_shape(name, arch="llama", head_dim=0):
    global N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, HEAD_DIM, ARCH
    N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = SHAPES[name]
    HEAD_DIM = head_dim or N_EMBD // N_HEAD
    ARCH = arch
PROMPT = [1, 17, 200, 45, 301, 9, 77, 260, 5, 130, 88, 219, 3, 150, 42, 299, 61, 8, 240, 111]
N_GEN = 64
MIN_MARGIN = 0.02


def permute(w, n_head):
    """HF's q/k row order to GGUF's (llama.cpp's convert_hf_to_gguf permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    """permute's inverse: GGUF's q/k row order back to HF's."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rest_is_qk(name):
    return name.endswith(".attn_q.weight") or name.endswith(".attn_k.weight")


def weights(seed):
    rng = np.random.default_rng(seed)
    mat = lambda rows, cols, s: (rng.standard_normal((rows, cols)) * s).astype(np.float32)
    norm = lambda n: (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    w = {"token_embd.weight": mat(N_VOCAB, N_EMBD, 1.0), "output_norm.weight": norm(N_EMBD),
         "output.weight": mat(N_VOCAB, N_EMBD, 0.25)}
    if ARCH == "gemma3":  # tied output; embeddings are scaled by sqrt(n_embd) = 8 in the model
        del w["output.weight"]
        w["token_embd.weight"] *= 0.15  # x 8 in the model: O(1) like the sublayers; logits over a few units
    s = 1.0 / np.sqrt(N_EMBD)
    # llama.cpp's converter permutes llama's (and Mistral's) q/k rows (RoPE
    # on adjacent pairs); NeoX models (qwen2, qwen3) keep HF's order.
    perm = permute if ARCH in ("llama", "mistral") else (lambda m, n: m)
    for l in range(N_LAYER):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(N_EMBD)
        w[p + "attn_q.weight"] = perm(mat(N_HEAD * HEAD_DIM, N_EMBD, 2 * s), N_HEAD)
        w[p + "attn_k.weight"] = perm(mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 2 * s), N_HEAD_KV)
        w[p + "attn_v.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, s)
        if ARCH in ("qwen2", "glm4", "chatglm"):
            w[p + "attn_q.bias"] = (0.5 * rng.standard_normal(N_HEAD * HEAD_DIM)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.5 * rng.standard_normal(N_HEAD_KV * HEAD_DIM)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.5 * rng.standard_normal(N_HEAD_KV * HEAD_DIM)).astype(np.float32)
        if ARCH == "qwen3":
            w[p + "attn_q_norm.weight"] = norm(HEAD_DIM)
            w[p + "attn_k_norm.weight"] = norm(HEAD_DIM)
        w[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM, s)
        w[p + "ffn_norm.weight"] = norm(N_EMBD)
        w[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, s)
        w[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, s)
        w[p + "ffn_down.weight"] = mat(N_EMBD, N_FF, 1.0 / np.sqrt(N_FF))
        if ARCH == "gemma3":  # QK-norm and pre/post norms (values as the file stores them: 1 + w)
            w[p + "attn_q_norm.weight"] = norm(HEAD_DIM)
            w[p + "attn_k_norm.weight"] = norm(HEAD_DIM)
            w[p + "post_attention_norm.weight"] = norm(N_EMBD)
            w[p + "post_ffw_norm.weight"] = norm(N_EMBD)
        if ARCH == "glm4":  # sandwich norms, and gate/up fused
            w[p + "post_attention_norm.weight"] = norm(N_EMBD)
            w[p + "post_ffw_norm.weight"] = norm(N_EMBD)
            w[p + "ffn_up.weight"] = np.concatenate([w.pop(p + "ffn_gate.weight"), w.pop(p + "ffn_up.weight")])
        if ARCH == "chatglm":  # GLM-4-9B-chat's GGUF: q/k/v and their biases fused, gate/up fused
            w[p + "attn_qkv.weight"] = np.concatenate([w.pop(p + "attn_q.weight"), w.pop(p + "attn_k.weight"),
                                                       w.pop(p + "attn_v.weight")])
            w[p + "attn_qkv.bias"] = np.concatenate([w.pop(p + "attn_q.bias"), w.pop(p + "attn_k.bias"),
                                                     w.pop(p + "attn_v.bias")])
            w[p + "ffn_up.weight"] = np.concatenate([w.pop(p + "ffn_gate.weight"), w.pop(p + "ffn_up.weight")])
        if ARCH == "phi3":  # llama.cpp's names for Phi-3's fused weights
            w[p + "attn_qkv.weight"] = np.concatenate([w.pop(p + "attn_q.weight"), w.pop(p + "attn_k.weight"),
                                                       w.pop(p + "attn_v.weight")])
            w[p + "ffn_up.weight"] = np.concatenate([w.pop(p + "ffn_gate.weight"), w.pop(p + "ffn_up.weight")])
    return w


def qtypes():
    import gguf
    T = gguf.GGMLQuantizationType
    return {"f32": None, "f16": None, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "mxfp4": T.MXFP4}


QTYPES = {}


def write_gguf(path, w, qname):
    import gguf
    qt = QTYPES[qname]
    g = gguf.GGUFWriter(path, "llama" if ARCH == "mistral" else ARCH)  # llama.cpp writes Mistral as llama
    g.add_name(f"forge-{ARCH}-synth-{qname}")
    g.add_context_length(N_CTX)
    g.add_embedding_length(N_EMBD)
    g.add_block_count(N_LAYER)
    g.add_feed_forward_length(N_FF)
    g.add_head_count(N_HEAD)
    g.add_head_count_kv(N_HEAD_KV)
    g.add_rope_freq_base(1000000.0 if ARCH == "gemma3" else 10000.0)  # Gemma 3: the global layers' base
    g.add_layer_norm_rms_eps(1e-5)
    g.add_rope_dimension_count(HEAD_DIM // 2 if ARCH in ("glm4", "chatglm") else HEAD_DIM)  # GLM: half rotates
    if ARCH == "mistral":
        g.add_sliding_window(MISTRAL_WINDOW)
    if ARCH == "gemma3":
        g.add_sliding_window(GEMMA_WINDOW)
    if HEAD_DIM != N_EMBD // N_HEAD:
        g.add_key_length(HEAD_DIM)
        g.add_value_length(HEAD_DIM)
    g.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2, "mxfp4": 38}[qname])  # llama.cpp's ftypes
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [f"t{i}" for i in range(N_VOCAB - len(toks))]
    g.add_tokenizer_model("llama")
    g.add_token_list(toks)
    g.add_token_scores([0.0] * N_VOCAB)
    g.add_token_types([2, 3, 3] + [6] * 256 + [1] * (N_VOCAB - 259))
    g.add_bos_token_id(1)
    g.add_eos_token_id(2)
    g.add_unk_token_id(0)
    for name, t in w.items():
        if t.ndim == 1 or qname == "f32":
            g.add_tensor(name, t)
        elif qname == "f16":
            g.add_tensor(name, t.astype(np.float16))
        else:
            g.add_tensor(name, gguf.quants.quantize(t, qt), raw_dtype=qt)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def as_stored(t, qname):
    """t as the file stores it, back in float32 (what forge computes with)."""
    import gguf
    if t.ndim == 1 or qname == "f32":
        return t
    if qname == "f16":
        return t.astype(np.float16).astype(np.float32)
    qt = QTYPES[qname]
    return gguf.quants.dequantize(gguf.quants.quantize(t, qt), qt).reshape(t.shape).astype(np.float32)


def hf_model(w, qname):
    """The HF model of ARCH (qwen2, qwen3) holding the weights w as stored."""
    import torch
    import transformers
    kw = dict(vocab_size=N_VOCAB, hidden_size=N_EMBD, intermediate_size=N_FF, num_hidden_layers=N_LAYER,
              num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD_KV, max_position_embeddings=N_CTX,
              rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    if ARCH == "gemma3":
        kw.update(rms_norm_eps=1e-5, tie_word_embeddings=True)
        del kw["rope_theta"]
        m = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
            head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=GEMMA_WINDOW, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, **kw))
    elif ARCH == "qwen2":
        m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    elif ARCH == "chatglm":
        m = transformers.GlmForCausalLM(transformers.GlmConfig(head_dim=HEAD_DIM, partial_rotary_factor=0.5,
                                                               attention_bias=True, pad_token_id=0,
                                                               bos_token_id=1, eos_token_id=2, **kw))
    elif ARCH == "glm4":
        m = transformers.Glm4ForCausalLM(transformers.Glm4Config(head_dim=HEAD_DIM, partial_rotary_factor=0.5,
                                                                 attention_bias=True, pad_token_id=0,
                                                                 bos_token_id=1, eos_token_id=2, **kw))
    elif ARCH == "phi3":
        m = transformers.Phi3ForCausalLM(transformers.Phi3Config(sliding_window=None, pad_token_id=0,
                                                                 bos_token_id=1, eos_token_id=2,
                                                                 original_max_position_embeddings=N_CTX, **kw))
    elif ARCH == "mistral":
        m = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=MISTRAL_WINDOW,
                                                                       head_dim=HEAD_DIM, **kw))
    else:
        m = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=HEAD_DIM, **kw))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
                 "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
                 "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
                 "attn_v.bias": "self_attn.v_proj.bias", "attn_q_norm.weight": "self_attn.q_norm.weight",
                 "attn_k_norm.weight": "self_attn.k_norm.weight", "attn_output.weight": "self_attn.o_proj.weight",
                 "ffn_norm.weight": "post_attention_layernorm.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
                 "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
                 "attn_qkv.weight": "self_attn.qkv_proj.weight"}
    if ARCH in ("phi3", "glm4", "chatglm"):
        per_layer["ffn_up.weight"] = "mlp.gate_up_proj.weight"
    per_layer["post_attention_norm.weight"] = "post_self_attn_layernorm.weight"
    per_layer["post_ffw_norm.weight"] = "post_mlp_layernorm.weight"
    if ARCH == "gemma3":
        per_layer.update({"post_attention_norm.weight": "post_attention_layernorm.weight",
                          "ffn_norm.weight": "pre_feedforward_layernorm.weight",
                          "post_ffw_norm.weight": "post_feedforward_layernorm.weight"})
    sd = {}
    q_rows, kv_rows = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    for name, t in w.items():
        if ARCH == "chatglm" and ".attn_qkv." in name:  # HF's GlmForCausalLM keeps q, k, v apart
            _, l, rest = name.split(".", 2)
            kind = rest.split(".")[1]
            v = as_stored(t, qname)
            for proj, part in zip("qkv", np.split(v, [q_rows, q_rows + kv_rows])):
                sd[f"model.layers.{l}.self_attn.{proj}_proj.{kind}"] = torch.from_numpy(np.ascontiguousarray(part))
            continue
        if name.startswith("blk."):
            _, l, rest = name.split(".", 2)
            hf = f"model.layers.{l}.{per_layer[rest]}"
        else:
            hf = names[name]
        v = as_stored(t, qname)
        if ARCH == "gemma3" and name.endswith("norm.weight"):  # Gemma's RMSNorm multiplies by 1 + w
            v = v - 1.0
        if ARCH == "mistral" and rest_is_qk(name):  # back to HF's row order
            v = unpermute(v, N_HEAD if ".attn_q." in name else N_HEAD_KV)
        sd[hf] = torch.from_numpy(np.ascontiguousarray(v))
    if ARCH == "gemma3":
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    m.load_state_dict(sd, strict=True)
    return m.float().eval()


def reference(path, w=None, qname=None):
    import torch
    from transformers import AutoModelForCausalLM
    if ARCH == "llama":
        m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 torch_dtype=torch.float32)
    else:
        m = hf_model(w, qname)
    m.eval()
    with torch.no_grad():
        logits = m(torch.tensor([PROMPT])).logits[0].numpy()
        seq, gen, margins = list(PROMPT), [], []
        for _ in range(N_GEN):
            last = m(torch.tensor([seq])).logits[0, -1].numpy()
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
            nxt = int(np.argmax(last))
            gen.append(nxt)
            seq.append(nxt)
    return logits, gen, margins


def golden_doc(prefix, arch, shape, q, seed, logits, gen, margins):
    import torch
    import transformers
    return {"model": f"{prefix}-{q}.gguf", "arch": arch, "shape": dict(zip(
                ["n_embd", "n_head", "n_head_kv", "n_ff", "n_layer", "head_dim"], SHAPES[shape] + (HEAD_DIM,))),
            "seed": seed, "prompt": PROMPT, "n_vocab": N_VOCAB,
            "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, CPU",
            "logits": [[round(float(v), 6) for v in row] for row in logits], "greedy": gen,
            "greedy_margins": [round(m, 6) for m in margins]}


def write_golden(prefix, q, doc):
    with open(os.path.join(OUT, f"{prefix}-{q}.json"), "w") as f:
        f.write("forge-golden llama-synth v1\n")
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def main_mxfp4(archs):
    """The MXFP4 variants: every matrix quantized to MXFP4 by the gguf
    package, from the first seed, counting from the one the <prefix>-f32
    golden records, whose MXFP4 greedy margins all reach MIN_MARGIN."""
    for prefix, arch, shape, head_dim in [m for a in archs for m in MODELS[a]]:
        use_shape(shape, arch, head_dim)
        with open(os.path.join(OUT, f"{prefix}-f32.json")) as f:
            f.readline()
            first = json.load(f)["seed"]
        path = os.path.join(OUT, f"{prefix}-mxfp4.gguf")
        for seed in range(first, first + 4000):
            w = weights(seed)
            write_gguf(path, w, "mxfp4")
            logits, gen, margins = reference(path, w, "mxfp4")
            print(f"{prefix} seed {seed} mxfp4: {os.path.getsize(path)} bytes; smallest greedy margin "
                  f"{min(margins):.4f}", file=sys.stderr)
            if min(margins) >= MIN_MARGIN:
                break
        else:
            sys.exit(f"{prefix}-mxfp4: no seed keeps every greedy margin above {MIN_MARGIN}")
        write_golden(prefix, "mxfp4", golden_doc(prefix, arch, shape, "mxfp4", seed, logits, gen, margins))


def main():
    import torch
    import transformers
    os.makedirs(OUT, exist_ok=True)
    QTYPES.update(qtypes())
    args = sys.argv[1:]
    if args[:1] == ["--mxfp4"]:
        return main_mxfp4(args[1:] or ["llama"])
    archs = args or list(MODELS)
    for prefix, arch, shape, head_dim in [m for a in archs for m in MODELS[a]]:
        use_shape(shape, arch, head_dim)
        for seed in range(1, 4000):
            w, docs, ok = weights(seed), {}, True
            for q in ["f32", "f16", "q8_0", "q4_0"]:
                path = os.path.join(OUT, f"{prefix}-{q}.gguf")
                write_gguf(path, w, q)
                logits, gen, margins = reference(path, w, q)
                print(f"{prefix} seed {seed} {q}: {os.path.getsize(path)} bytes; logits {logits.min():.2f}.."
                      f"{logits.max():.2f}; smallest greedy margin {min(margins):.4f}", file=sys.stderr)
                if min(margins) < MIN_MARGIN:
                    ok = False
                    break
                docs[q] = golden_doc(prefix, arch, shape, q, seed, logits, gen, margins)
            if ok:
                break
        if not ok:
            sys.exit(f"{prefix}: no seed below 4000 keeps every greedy margin above {MIN_MARGIN}")
        for q, doc in docs.items():
            write_golden(prefix, q, doc)


if __name__ == "__main__":
    main()
