#!/usr/bin/env bash
# End-to-end tests of the forge CLI: help everywhere, clear errors on bad
# files, and `forge info` facts checked against the gguf Python package.
#
# usage: FORGE=build/forge tests/e2e/run.sh      (from the repository root)
# Prints one line per check (PASS / FAIL / SKIPPED with the reason) and exits
# non-zero if any check failed. SKIPPED never counts as passed.
set -u
FORGE=${FORGE:-build/forge}
MODELS=${FORGE_MODEL_DIR:-models}
SMOL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA=$MODELS/gemma-3-270m-q4_k_m.gguf
PY=${PYTHON:-python3}
pass=0 fail=0 skip=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); echo "PASS    $1"; }
bad() { fail=$((fail + 1)); echo "FAIL    $1"; [ $# -gt 1 ] && printf '        %s\n' "$2"; }
skipped() { skip=$((skip + 1)); echo "SKIPPED $1: $2"; }

# Runs forge with args; sets $out, $err, $rc.
run() {
    "$FORGE" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# ---- help and usage --------------------------------------------------------
run --help
[ $rc -eq 0 ] && grep -q "usage: forge COMMAND" "$tmp/out" && ok "forge --help" || bad "forge --help" "rc=$rc"
for cmd in info tokenize run chat perplexity bench quantize; do
    run $cmd --help
    [ $rc -eq 0 ] && grep -q "usage: forge $cmd" "$tmp/out" && ok "forge $cmd --help" || bad "forge $cmd --help" "rc=$rc"
done
run no-such-command
[ $rc -eq 2 ] && grep -q "unknown command 'no-such-command'" "$tmp/err" && ok "unknown command is a usage error" || bad "unknown command" "rc=$rc $err"
run info --no-such-option x
[ $rc -eq 2 ] && ok "unknown option is a usage error" || bad "unknown option" "rc=$rc"
run info /no/such/file.gguf
[ $rc -eq 1 ] && grep -q "/no/such/file.gguf: cannot open: No such file" "$tmp/err" && ok "missing file is named" || bad "missing file" "rc=$rc $err"

# ---- bad files: a clear error naming the file, never a crash ----------------
# bad-gguf/ breaks the GGUF container, bad-vocab/ the tokenizer metadata of an
# otherwise valid file. Each MANIFEST line names a file and the text its error
# must contain.
check_bad_dir() {
    local dir=$1 n=0 nbad=0 file want
    while IFS=$'\t' read -r file want; do
        case "$file" in '#'* | '') continue ;; esac
        n=$((n + 1))
        run info "$dir/$file"
        if [ $rc -ne 1 ] || ! grep -qF "forge: error: $dir/$file" "$tmp/err" || ! grep -qF -- "$want" "$tmp/err"; then
            nbad=$((nbad + 1))
            bad "bad file $dir/$file" "rc=$rc, wanted '$want' in: $err"
        fi
    done <"$dir/MANIFEST"
    [ $nbad -eq 0 ] && ok "all $n files in $dir give a clear error and exit 1"
}
check_bad_dir tests/data/bad-gguf
check_bad_dir tests/data/bad-vocab

# Models forge cannot run: a valid file whose architecture, or one weight's
# type, forge does not support (tests/e2e/make_bad_models.py copies a
# synthetic llama with that one change). `forge run` exits 1 with an error
# naming the file and what is unsupported, on whichever backend it picks.
have_gguf_py() { "$PY" -c "import gguf" 2>/dev/null; }
bad_model() { # FILE, then the strings its error must hold
    local f=$1 miss="" want
    shift
    run run -m "$f" -p hi -n 4
    for want in "forge: error: $f: " "$@"; do grep -qF -- "$want" "$tmp/err" || miss="$miss [$want]"; done
    grep -qE "Sanitizer|runtime error" "$tmp/err" && miss="$miss [a sanitizer report]"
    [ $rc -eq 1 ] && [ -z "$miss" ] && ok "forge run $(basename "$f"): exits 1 naming $1" ||
        bad "forge run $(basename "$f")" "rc=$rc, missing:$miss in: $err"
}
if ! have_gguf_py; then
    skipped "forge run on unsupported models" "python3 module gguf is not installed"
elif ! msg=$("$PY" tests/e2e/make_bad_models.py "$tmp/badmodel" 2>&1); then
    bad "tests/e2e/make_bad_models.py" "$msg"
else
    runs="forge runs: llama, qwen2, qwen3, phi3, glm4, chatglm, gemma3"
    bad_model "$tmp/badmodel/bert.gguf" "architecture 'bert' is not supported" "$runs"
    bad_model "$tmp/badmodel/gpt-oss.gguf" "architecture 'gpt-oss' is not supported" "$runs"
    bad_model "$tmp/badmodel/iq2_xxs.gguf" "tensor 'blk.0.ffn_up.weight' has type IQ2_XXS"
    bad_model "$tmp/badmodel/tq2_0.gguf" "tensor 'blk.0.attn_k.weight' has type TQ2_0"
    run run -m "$tmp/badmodel/control.gguf" -p hi -n 4
    [ $rc -eq 0 ] && ok "forge run on the same copy unchanged generates" || bad "forge run control.gguf" "rc=$rc $err"
fi

# Hyperparameters and tensor shapes no model can have (issue 14): each case
# of tests/data/bad-model/CASES written from the real SmolLM2 by
# tests/e2e/make_bad_smollm2.py (its own metadata and tensor table with the
# one change; the weights a hole, never read). forge run must exit 1 naming
# the key or tensor, never die of a signal or run to garbage; forge serve
# must refuse to start, not report healthy and die at its first completion.
if [ ! -f "$SMOL" ]; then
    skipped "bad SmolLM2 variants (tests/data/bad-model/CASES)" "model not found; run 'make models'"
elif ! msg=$("$PY" tests/e2e/make_bad_smollm2.py "$SMOL" "$tmp/badsmol" 2>&1); then
    bad "tests/e2e/make_bad_smollm2.py" "$msg"
else
    n=0 nbad=0
    while IFS=$'\t' read -r file want; do
        f=$tmp/badsmol/$file
        n=$((n + 1))
        run run -m "$f" -p hi -n 4
        if [ $rc -ne 1 ] || ! grep -qF -- "forge: error: $f: " "$tmp/err" || ! grep -qF -- "$want" "$tmp/err" ||
            grep -qE "Sanitizer|runtime error" "$tmp/err"; then
            nbad=$((nbad + 1))
            bad "forge run on bad SmolLM2 $file" "rc=$rc, wanted '$want' in: $err"
        fi
    done <"$tmp/badsmol/MANIFEST"
    [ $nbad -eq 0 ] && ok "all $n bad SmolLM2 variants: forge run exits 1 naming the key or tensor"
    for c in rope_dim_3 ne0_token_embd rms_eps_huge; do
        f=$tmp/badsmol/$c.gguf want=$(grep "^$c.gguf" "$tmp/badsmol/MANIFEST" | cut -f2)
        timeout 60 "$FORGE" serve -m "$f" --port 0 -t 1 >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc -eq 1 ] && grep -qF -- "$want" "$tmp/err" && ! grep -q "ready:" "$tmp/err" &&
            ok "forge serve on bad SmolLM2 $c refuses to start (exit 1, never ready)" ||
            bad "forge serve on bad SmolLM2 $c" "rc=$rc $(cat "$tmp/err")"
    done
    rm -rf "$tmp/badsmol"
fi

# ---- forge info against the gguf package ------------------------------------
for model in "$SMOL" "$GEMMA" tests/data/gguf/all_types.gguf; do
    name=$(basename "$model")
    if [ ! -f "$model" ]; then
        skipped "forge info $name" "model not found; run 'make models'"
        continue
    fi
    if ! have_gguf_py; then
        skipped "forge info $name vs gguf package" "python3 module gguf is not installed"
        continue
    fi
    run info --json "$model"
    echo "$out" >"$tmp/info.json"
    if msg=$("$PY" tests/e2e/check_info.py "$model" "$tmp/info.json" 2>&1); then
        ok "forge info --json $name matches the gguf package ($msg)"
    else
        bad "forge info --json $name" "$msg"
    fi
done

if [ -f "$SMOL" ]; then
    run info "$SMOL"
    miss=""
    for want in "architecture:    llama" "n_layer        30" "n_embd         576" "n_head         9" \
        "n_head_kv      3" "vocab:           49152 tokens, gpt2" "pre-tokenizer smollm" \
        "chat template:   chatml"; do
        grep -qF "$want" "$tmp/out" || miss="$miss [$want]"
    done
    [ $rc -eq 0 ] && [ -z "$miss" ] && ok "forge info SmolLM2: llama, 30 layers, 576, 9/3 heads, vocab 49152" ||
        bad "forge info SmolLM2" "rc=$rc missing:$miss"
else
    skipped "forge info SmolLM2 facts" "model not found; run 'make models'"
fi

# ---- forge tokenize ---------------------------------------------------------
if [ -f "$SMOL" ]; then
    # Ids from HF transformers for SmolLM2 (tools/gen_tok_goldens.py prints them).
    run tokenize --ids "$SMOL" "Hello world! <|im_start|>user"
    [ $rc -eq 0 ] && [ "$out" = "[19556, 905, 17, 216, 1, 4093]" ] && ok "forge tokenize --ids SmolLM2" ||
        bad "forge tokenize --ids SmolLM2" "rc=$rc got '$out' $err"
    run tokenize -m "$SMOL" "héllo"
    [ $rc -eq 0 ] && grep -q "^ *[0-9]* -> '" "$tmp/out" && ok "forge tokenize prints id -> 'piece'" ||
        bad "forge tokenize pieces" "rc=$rc $out $err"
    # HF: tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
    #     add_generation_prompt=True, tokenize=True) with SmolLM2's GGUF tokenizer.
    run tokenize --chat --ids "$SMOL" "Hi"
    want="[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198]"
    [ $rc -eq 0 ] && [ "$out" = "$want" ] && ok "forge tokenize --chat equals HF apply_chat_template ids" ||
        bad "forge tokenize --chat" "rc=$rc got '$out' $err"
    run tokenize --chat --chat-template no-such "$SMOL" "Hi"
    [ $rc -eq 1 ] && grep -q "unknown chat template 'no-such'; valid names: chatml" "$tmp/err" &&
        ok "--chat-template with an unknown name lists the valid ones" || bad "--chat-template no-such" "rc=$rc $err"
    # Plain ChatML has no default system turn, unlike SmolLM2's own template.
    run tokenize --chat --chat-template chatml --print-prompt "$SMOL" "Hi"
    [ $rc -eq 0 ] && [ "$out" = "$(printf '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant')" ] &&
        ok "--chat-template overrides the model's template" || bad "--chat-template chatml" "rc=$rc '$out' $err"
    run tokenize --system "x" "$SMOL" "Hi"
    [ $rc -eq 2 ] && ok "--system without --chat is a usage error" || bad "--system without --chat" "rc=$rc"
    printf 'from stdin' | "$FORGE" tokenize --ids -m "$SMOL" --stdin >"$tmp/out" 2>"$tmp/err"
    [ $? -eq 0 ] && [ -s "$tmp/out" ] && ok "forge tokenize --stdin" || bad "forge tokenize --stdin" "$(cat "$tmp/err")"
else
    skipped "forge tokenize" "model not found; run 'make models'"
fi
# ---- forge run / chat / perplexity ---------------------------------------------
if [ -f "$SMOL" ]; then
    # llama.cpp's greedy continuation (tests/data/llamacpp/smollm2.json, a
    # prompt on which llama.cpp itself is stable): 16 tokens.
    run run -m "$SMOL" -p "1, 2, 3, 4, 5, 6," -n 16 --temp 0
    [ $rc -eq 0 ] && [ "$out" = " 7, 8, 9, 10, 11" ] && grep -q "generation 16 tokens" "$tmp/err" &&
        grep -q "time to first token" "$tmp/err" && ok "forge run greedy continuation equals llama.cpp's; timings on stderr" ||
        bad "forge run greedy" "rc=$rc out='$out' $err"
    run run -m "$SMOL" -p "1, 2, 3, 4, 5, 6," -n 40 --temp 0 --stop " 10"
    [ $rc -eq 0 ] && [ "$out" = " 7, 8, 9," ] && grep -q "stop: stop string" "$tmp/err" &&
        ok "forge run --stop ends before the stop string" || bad "forge run --stop" "rc=$rc out='$out'"
    run run -m "$SMOL" -p "Once upon a time" -n 24 --temp 1.0 --seed 7
    first=$out
    run run -m "$SMOL" -p "Once upon a time" -n 24 --temp 1.0 --seed 7
    [ $rc -eq 0 ] && [ -n "$first" ] && [ "$out" = "$first" ] && grep -q "seed 7" "$tmp/err" &&
        ok "forge run --seed reproduces a sampled continuation" || bad "forge run --seed" "rc=$rc '$first' vs '$out'"
    long=$(printf 'word %.0s' $(seq 1 200))
    run run -m "$SMOL" -c 64 -p "$long" -n 4
    [ $rc -eq 1 ] && grep -q "longer than the context of 64" "$tmp/err" &&
        ok "a prompt longer than the context is a clear error" || bad "prompt too long" "rc=$rc $err"
    printf 'What is 2+2?\n/reset\nSay hi.\n' | "$FORGE" chat -m "$SMOL" -n 16 --temp 0 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 0 ] && [ "$(grep -c . "$tmp/out")" -ge 2 ] && grep -q "conversation reset" "$tmp/err" &&
        ok "forge chat answers, resets and exits at end of input" || bad "forge chat" "rc=$rc $(cat "$tmp/out" "$tmp/err")"
    # Run and chat are requests on the engine: the second turn resubmits the
    # whole conversation and finds the first turn's blocks in the prefix cache.
    printf 'What is 2+2?\nAnd 3+3?\n' | "$FORGE" chat -m "$SMOL" -n 16 --temp 0 --timings >"$tmp/out" 2>"$tmp/err"
    rc=$?
    cached=$(sed -n 's/^(\([0-9]*\) prompt tokens, \([0-9]*\) of them cached.*/\2/p' "$tmp/err" | tail -1)
    [ $rc -eq 0 ] && [ "$(grep -c "of them cached" "$tmp/err")" -eq 2 ] && [ "${cached:-0}" -ge 16 ] &&
        ok "forge chat --timings: the second turn reuses $cached cached prompt tokens" ||
        bad "forge chat prefix reuse" "rc=$rc $(cat "$tmp/err")"
    run run -m "$SMOL" -p "1, 2, 3, 4, 5, 6," -n 16 --temp 0 --kv-type f32 --kv-fraction 0.5
    [ $rc -eq 0 ] && [ "$out" = " 7, 8, 9, 10, 11" ] && ok "forge run --kv-type f32 --kv-fraction 0.5 on the engine" ||
        bad "forge run --kv-type f32" "rc=$rc out='$out' $err"
    run run -m "$SMOL" -p "1, 2, 3, 4, 5, 6," -n 16 --temp 0 --batch-invariant
    [ $rc -eq 0 ] && [ "$out" = " 7, 8, 9, 10, 11" ] && ok "forge run --batch-invariant (the CPU always is)" ||
        bad "forge run --batch-invariant" "rc=$rc out='$out' $err"
    run run -m "$SMOL" -c 64 -p "$(printf 'word %.0s' $(seq 1 58))" -n 10 --temp 0
    [ $rc -eq 0 ] && grep -q "stop: context full" "$tmp/err" &&
        ok "forge run -n past the context stops when the context is full" || bad "run to a full context" "rc=$rc $err"
    lic=/usr/share/common-licenses
    if [ -f $lic/GPL-3 ] && [ -f $lic/GFDL-1.3 ]; then
        cat $lic/GPL-3 $lic/GPL-2 $lic/LGPL-2.1 $lic/Apache-2.0 $lic/MPL-2.0 $lic/GFDL-1.3 >"$tmp/ppl.txt"
        run perplexity -m "$SMOL" -f "$tmp/ppl.txt" --chunks 4
        got=$(sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p' "$tmp/out")
        # llama.cpp's perplexity of the same 4 chunks: tests/data/llamacpp/smollm2.ppl.json ("short").
        want=$("$PY" -c "import json;f=open('tests/data/llamacpp/smollm2.ppl.json');f.readline();print(json.load(f)['short']['ppl'])" 2>/dev/null)
        if [ $rc -eq 0 ] && [ -n "$got" ] && [ -n "$want" ] &&
            "$PY" -c "import sys; g,w=float('$got'),float('$want'); sys.exit(abs(g-w)/w > 0.005)"; then
            ok "forge perplexity $got vs llama.cpp $want (4 chunks of 512, within 0.5%)"
        else
            bad "forge perplexity" "rc=$rc got '$got' want '$want' $err"
        fi
    else
        skipped "forge perplexity vs llama.cpp" "the Debian license texts in $lic are not installed"
    fi
    run bench -m "$SMOL" -p 16 -n 4 -r 2 -o json
    if [ $rc -eq 0 ] && "$PY" -c "
import json, sys
b = json.loads(sys.stdin.read())
assert b['pp']['n_prompt'] == 16 and b['tg']['n_gen'] == 4 and b['repetitions'] == 2
assert b['pp']['tps_mean'] > 0 and b['tg']['tps_mean'] > 0 and b['device']
" <<<"$out"; then
        ok "forge bench -o json reports pp16 and tg4"
    else
        bad "forge bench" "rc=$rc $out $err"
    fi
else
    skipped "forge run/chat/perplexity/bench" "model not found; run 'make models'"
fi
run bench -p 0 -n 0
[ $rc -eq 2 ] && grep -q "nothing to measure" "$tmp/err" && ok "forge bench with nothing to measure is a usage error" ||
    bad "bench -p 0 -n 0" "rc=$rc $err"
# Depth (llama-bench's -d): pp and tg after 200 tokens already in the context;
# a context too short for depth plus the runs is a usage error.
run bench -m tests/data/llama-synth/gqa-q4_0.gguf --device cpu -d 200 -p 16 -n 8 -r 2 -o json
if [ $rc -eq 0 ] && "$PY" -c "
import json, sys
b = json.loads(sys.stdin.read())
assert b['depth'] == 200 and b['pp']['n_prompt'] == 16 and b['tg']['n_gen'] == 8
assert b['pp']['tps_mean'] > 0 and b['tg']['tps_mean'] > 0
" <<<"$out"; then
    ok "forge bench -d 200 -o json reports pp16 and tg8 at depth 200"
else
    bad "forge bench -d" "rc=$rc $out $err"
fi
run bench -m tests/data/llama-synth/gqa-q4_0.gguf --device cpu -d 200 -p 16 -n 8 -c 100
[ $rc -eq 2 ] && grep -q "shorter than -d 200" "$tmp/err" && ok "forge bench -d past -c is a usage error" ||
    bad "bench -d 200 -c 100" "rc=$rc $err"
# Batched serving through the engine, on a committed synthetic model.
run bench -m tests/data/llama-synth/gqa-q4_0.gguf --device cpu --parallel 6 -p 24 -n 8 -r 2 -o json
if [ $rc -eq 0 ] && "$PY" -c "
import json, sys
b = json.loads(sys.stdin.read())
assert b['parallel'] == 6 and b['n_prompt'] == 24 and b['n_gen'] == 8 and b['repetitions'] == 2
assert b['pp_tps_mean'] > 0 and b['tg_tps_mean'] > 0 and b['total_tps_mean'] > 0
" <<<"$out"; then
    ok "forge bench --parallel 6 -o json reports prefill, decode and total throughput"
else
    bad "forge bench --parallel" "rc=$rc $out $err"
fi
run bench -m tests/data/llama-synth/gqa-q4_0.gguf --device cpu --prefix-reuse -p 200 -o json
if [ $rc -eq 0 ] && "$PY" -c "
import json, sys
b = json.loads(sys.stdin.read())
assert b['first_cached'] == 0 and b['second_cached'] == 192 and b['second_prompt'] == 216
assert b['first_ms'] > 0 and b['second_ms'] > 0
" <<<"$out"; then
    ok "forge bench --prefix-reuse: the second request reuses the first's 12 full blocks"
else
    bad "forge bench --prefix-reuse" "rc=$rc $out $err"
fi
run bench --parallel 4 -p 8 -n 1
[ $rc -eq 2 ] && grep -q "at least 2" "$tmp/err" && ok "forge bench --parallel with -n 1 is a usage error" ||
    bad "bench --parallel -n 1" "rc=$rc $err"
run run -p "x" --kv-fraction 1.5
[ $rc -eq 2 ] && grep -q "kv-fraction must be a number in (0, 1\]" "$tmp/err" && ok "--kv-fraction out of range is a usage error" ||
    bad "--kv-fraction 1.5" "rc=$rc $err"
run run -p "x" -n 0
[ $rc -eq 2 ] && grep -q "token count >= 1" "$tmp/err" && ok "-n 0 is a usage error" || bad "-n 0" "rc=$rc $err"
run run -p "x" --top-p 0
[ $rc -eq 2 ] && grep -q "top_p 0 is out of range" "$tmp/err" && ok "an out-of-range sampling parameter is a usage error" ||
    bad "--top-p 0" "rc=$rc $err"
run run -p "x" --device cuda -m tests/data/llama-synth/gqa-f32.gguf
# On a machine without a GPU (or a build without a GPU backend) an explicit
# --device cuda must fail and say why, never fall back to the CPU.
if [ "${FORGE_E2E_HAVE_GPU:-0}" = 1 ]; then
    skipped "--device cuda without a GPU" "this machine has a GPU"
else
    [ $rc -eq 1 ] && grep -qE "no GPU backend|no CUDA device found|has a HIP backend" "$tmp/err" &&
        ok "--device cuda without a GPU fails with the reason, no silent fallback" || bad "--device cuda" "rc=$rc $err"
fi

run tokenize tests/data/gguf/all_types.gguf "x"
[ $rc -eq 1 ] && grep -q "tokenizer.ggml.model" "$tmp/err" && ok "tokenize without a vocab names the missing key" ||
    bad "tokenize without a vocab" "rc=$rc $err"

# ---- forge quantize ---------------------------------------------------------
# Each output against llama.cpp's own quantize of the same file (types chosen
# and bytes, tensor by tensor) and, for the types the gguf package implements,
# against gguf.quants.quantize (tests/e2e/check_quantize.py).
have_llamacpp_py() { "$PY" -c "import llama_cpp, gguf" 2>/dev/null; }
for spec in mqa-f16:Q8_0 mqa-f16:Q4_0 mqa-f16:Q4_1 mqa-f16:Q5_0 mqa-f16:Q5_1 mqa-f16:Q4_K_M mqa-f16:Q5_K_M \
    mqa-f16:Q4_K_S mqa-f16:Q5_K_S mqa-f16:Q6_K gqa-f32:Q4_K_M gqa-f32:Q8_0; do
    src=tests/data/llama-synth/${spec%%:*}.gguf qt=${spec##*:}
    run quantize -t 2 "$src" "$tmp/q-${spec%%:*}-$qt.gguf" "$qt"
    if [ $rc -ne 0 ] || ! grep -q "tensors quantized" "$tmp/err"; then
        bad "forge quantize ${spec%%:*} $qt" "rc=$rc $err"
        continue
    fi
    if ! have_llamacpp_py; then
        skipped "forge quantize ${spec%%:*} $qt vs llama.cpp" "python3 modules llama_cpp (llama-cpp-python) and gguf are needed"
        continue
    fi
    if msg=$("$PY" tests/e2e/check_quantize.py "$src" "$tmp/q-${spec%%:*}-$qt.gguf" "$qt" 2>&1); then
        ok "forge quantize ${spec%%:*} $qt: $msg"
    elif [ $? -eq 3 ]; then
        skipped "forge quantize ${spec%%:*} $qt vs llama.cpp" "$msg"
    else
        bad "forge quantize ${spec%%:*} $qt" "$msg"
    fi
done
if [ -f "$tmp/q-mqa-f16-Q4_K_M.gguf" ]; then
    run info "$tmp/q-mqa-f16-Q4_K_M.gguf"
    [ $rc -eq 0 ] && grep -q "Q4_K_M" "$tmp/out" && grep -q "Q6_K" "$tmp/out" &&
        ok "forge info on a quantized file names its file type and tensor types" || bad "forge info on Q4_K_M output" "rc=$rc $out $err"
    run run -m "$tmp/q-mqa-f16-Q4_K_M.gguf" --device cpu -p "hello" -n 8
    [ $rc -eq 0 ] && [ -n "$out" ] && ok "forge run on a forge-quantized Q4_K_M file generates text" ||
        bad "forge run on quantized output" "rc=$rc $err"
fi
# From BF16: tests/e2e/make_bf16.py rounds the mqa model's 2-D weights to BF16
# (norms F32 as llama.cpp's converter keeps them; in bf16-norms.gguf BF16 too)
# and writes the same values widened to F32. forge's output from BF16 must
# equal the gguf package's quantization of the widened values where it
# quantizes, and forge's own output from the widened F32 file for every type
# (K-quants included); 1-D tensors are copied as they are, as llama.cpp does
# (check_quantize_bf16.py). With llama-cpp-python, also llama.cpp's own
# quantize of the BF16 file, tensor for tensor.
if ! have_gguf_py; then
    skipped "forge quantize from BF16" "python3 module gguf is not installed"
elif ! msg=$("$PY" tests/e2e/make_bf16.py tests/data/llama-synth/mqa-f32.gguf "$tmp/bf16" 2>&1); then
    bad "tests/e2e/make_bf16.py" "$msg"
else
    for spec in bf16:Q8_0 bf16:Q4_0 bf16:Q4_1 bf16:Q5_0 bf16:Q5_1 bf16:Q4_K_M bf16:Q4_K_S bf16:Q5_K_S bf16:Q6_K \
        bf16-norms:Q4_K_M bf16-norms:Q8_0; do
        src=$tmp/bf16/${spec%%:*}.gguf qt=${spec##*:} q=$tmp/bf16/q-${spec%%:*}-${spec##*:}.gguf w=$tmp/bf16/w-${spec##*:}.gguf
        run quantize -t 2 "$src" "$q" "$qt"
        [ $rc -eq 0 ] && [ ! -e "$w" ] && run quantize -t 2 "$tmp/bf16/widened.gguf" "$w" "$qt"
        if [ $rc -ne 0 ]; then
            bad "forge quantize ${spec%%:*} $qt" "rc=$rc $err"
            continue
        fi
        if msg=$("$PY" tests/e2e/check_quantize_bf16.py "$src" "$q" "$w" 2>&1); then
            ok "forge quantize ${spec%%:*} $qt: $msg"
        else
            bad "forge quantize ${spec%%:*} $qt" "$msg"
        fi
        if ! have_llamacpp_py; then
            skipped "forge quantize ${spec%%:*} $qt vs llama.cpp" "python3 module llama_cpp (llama-cpp-python) is needed"
        elif msg=$("$PY" tests/e2e/check_quantize.py "$src" "$q" "$qt" 2>&1); then
            ok "forge quantize ${spec%%:*} $qt vs llama.cpp: $msg"
        else
            bad "forge quantize ${spec%%:*} $qt vs llama.cpp" "$msg"
        fi
    done
    run run -m "$tmp/bf16/q-bf16-Q4_K_M.gguf" --device cpu -p "hello" -n 8
    [ $rc -eq 0 ] && [ -n "$out" ] && ok "forge run on a Q4_K_M file quantized from BF16 generates text" ||
        bad "forge run on BF16-quantized output" "rc=$rc $err"
fi
run quantize tests/data/llama-synth/gqa-f32.gguf "$tmp/x.gguf" Q3_K_XL
[ $rc -eq 2 ] && grep -q "unknown TYPE 'Q3_K_XL'; valid: Q8_0" "$tmp/err" && ok "forge quantize: an unknown TYPE lists the valid ones" ||
    bad "quantize unknown TYPE" "rc=$rc $err"
run quantize tests/data/llama-synth/gqa-q4_0.gguf "$tmp/x.gguf" Q8_0
[ $rc -eq 1 ] && grep -q "tensor '.*' has type Q4_0; forge quantize reads F32, F16 or BF16 weights only" "$tmp/err" &&
    grep -q "quantize from the original" "$tmp/err" && [ ! -e "$tmp/x.gguf" ] &&
    ok "forge quantize of a quantized file names the tensor and type and says what to do" || bad "quantize Q4_0 input" "rc=$rc $err"
run quantize tests/data/llama-synth/gqa-f32.gguf /no/such/dir/out.gguf Q8_0
[ $rc -eq 1 ] && grep -q "/no/such/dir/out.gguf: cannot create" "$tmp/err" && ok "forge quantize: an unwritable output is named" ||
    bad "quantize unwritable output" "rc=$rc $err"
run quantize tests/data/bad-gguf/tensor_past_end.gguf "$tmp/x.gguf" Q8_0
[ $rc -eq 1 ] && grep -q "tensor_past_end.gguf: tensor 'b'" "$tmp/err" && [ ! -e "$tmp/x.gguf" ] &&
    ok "forge quantize: a corrupt input is named with the reader's message" || bad "quantize corrupt input" "rc=$rc $err"
cp tests/data/llama-synth/gqa-f32.gguf "$tmp/same.gguf"
run quantize "$tmp/same.gguf" "$tmp/same.gguf" Q8_0
[ $rc -eq 2 ] && grep -q "is the input file" "$tmp/err" && ok "forge quantize refuses to overwrite its input" ||
    bad "quantize IN == OUT" "rc=$rc $err"
run quantize tests/data/llama-synth/gqa-f32.gguf "$tmp/x.gguf"
[ $rc -eq 2 ] && ok "forge quantize without TYPE is a usage error" || bad "quantize without TYPE" "rc=$rc $err"

echo "e2e: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
