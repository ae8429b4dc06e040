/*
 * test_chat.c — checks the chat templates (src/tokenizer/chat.c) against the
 * real Jinja templates, as rendered by tools/gen_chat_goldens.py into
 * tests/data/chat/<name>.golden, and checks template detection.
 *
 * The real template texts are model data and are not committed: the goldens
 * hold only what Jinja rendered from them, and each text's SHA-256. So the
 * tests come in three kinds:
 *   - rendering (chat_golden): every case of every golden, always run;
 *   - detection on the real texts (chat_template_text): read from the template
 *     cache ($FORGE_CHAT_TEMPLATES, else build/chat-templates/; how to fill it
 *     is in tools/chat_templates/README.md) or, for SmolLM2, from its GGUF;
 *     SKIPPED, with the reason, where the text is absent;
 *   - detection on hand-written templates (chat_detect): small sources written
 *     here with each family's distinctive markup, always run.
 *
 * Golden format: the line "forge-golden chat v1", then one JSON object (the
 * generator's docstring is the full description):
 *   template, sha256, gguf, bos_token, eos_token, render_date,
 *   expect {kind, default_system, bos_in_template, date},
 *   cases [{name, messages [{role, content}], add_generation_prompt,
 *           disable_thinking, output | error}]
 *
 * What must hold:
 *   - fg_chat_detect on the template's text finds exactly `expect`;
 *   - for every case, fg_chat_apply with the template `expect` describes gives
 *     `output` byte for byte, or, where Jinja raised, FG_ERR_INVALID_ARG with
 *     the template's own message;
 *   - every golden file in tests/data/chat/ is checked by a test here.
 */
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf/gguf.h"
#include "tokenizer/chat.h"
#include "test_util.h"

/* ---- Reading goldens -------------------------------------------------------------- */

/* The golden tests/data/chat/<name>.golden as parsed JSON (free with cJSON_Delete). */
static cJSON *golden_load(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "chat/%s.golden", name);
    cJSON *doc = fg_test_golden_json(rel, "chat", 1);
    cr_assert_not_null(doc, "golden %s is missing, stale or not JSON", rel);
    return doc;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    cr_assert(cJSON_IsString(v), "golden: '%s' is not a string", key);
    return v->valuestring;
}

static bool jbool(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    cr_assert(cJSON_IsBool(v), "golden: '%s' is not a bool", key);
    return cJSON_IsTrue(v);
}

/* Reports where two renderings part, with a little context either side. */
static void report_diff(const char *what, const char *got, const char *want)
{
    size_t i = 0;
    while (got[i] && got[i] == want[i]) i++;
    size_t from = i > 24 ? i - 24 : 0;
    cr_log_error("%s: differs at byte %zu\n  got:  ...%.60s\n  want: ...%.60s", what, i, got + from,
                 want + from);
}

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------ */

static uint32_t ror32(uint32_t x, int n) { return x >> n | x << (32 - n); }

/* Writes the SHA-256 of the n bytes at p into hex as 64 lowercase hex digits
 * and a NUL. The goldens pin the exact template text they were rendered from
 * by this hash, and it is all the tests need of a crypto library, so it is
 * written out here rather than linked. */
static void sha256_hex(const void *p, size_t n, char hex[65])
{
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    };
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *in = p;
    /* The message, a 0x80 byte, zeros, and its length in bits as a big-endian
     * uint64 end a whole number of 64-byte blocks. */
    uint64_t bits = (uint64_t)n * 8;
    size_t total = (n + 9 + 63) / 64 * 64;
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[64];
        for (int i = 0; i < 64; i++) {
            size_t j = off + (size_t)i;
            uint32_t byte = 0;
            if (j < n)
                byte = in[j];
            else if (j == n)
                byte = 0x80;
            else if (j >= total - 8)
                byte = (uint32_t)(bits >> (8 * (total - 1 - j))) & 0xff;
            if (i % 4 == 0) w[i / 4] = 0;
            w[i / 4] |= byte << (8 * (3 - i % 4));
        }
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t v[8];
        memcpy(v, h, sizeof v);
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = v[7] + (ror32(v[4], 6) ^ ror32(v[4], 11) ^ ror32(v[4], 25)) +
                          ((v[4] & v[5]) ^ (~v[4] & v[6])) + k[i] + w[i];
            uint32_t t2 = (ror32(v[0], 2) ^ ror32(v[0], 13) ^ ror32(v[0], 22)) +
                          ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
            memmove(v + 1, v, 7 * sizeof v[0]);
            v[4] += t1;
            v[0] = t1 + t2;
        }
        for (int i = 0; i < 8; i++) h[i] += v[i];
    }
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
}

Test(chat_template_text, sha256_known_answers)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        /* 56 bytes: the length no longer fits the first block */
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        /* 64 bytes: the padding is a block of its own */
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmjklmnklmnolmnopmnopqnopq",
         "9ad289b5b8ca3b67b3e1238ea026560d218cac02ee49b871795a3311874d107e"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hex[65];
        sha256_hex(cases[i].in, strlen(cases[i].in), hex);
        cr_expect_str_eq(hex, cases[i].want, "sha256('%s')", cases[i].in);
    }
}

/* ---- Reading GGUF metadata -------------------------------------------------------- */

/* What the tests need from a GGUF file's metadata, copied out of the file
 * (read with forge's own reader) so it can be closed. Strings are malloc'd. */
typedef struct gguf_meta {
    char *chat_template; /* NULL if the key is absent */
    size_t chat_template_len;
    char *arch;
    char *bos; /* the text of token tokenizer.ggml.bos_token_id */
} gguf_meta;

static char *copy_str(fg_gguf_str s)
{
    char *c = malloc(s.len + 1);
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

static bool gguf_meta_read(const char *path, gguf_meta *g)
{
    memset(g, 0, sizeof *g);
    fg_gguf *f;
    if (fg_gguf_open(path, &f) != FG_OK) return false;
    fg_gguf_str s;
    int64_t bos_id;
    const fg_gguf_value *tokens;
    bool ok = fg_gguf_get_str(f, "general.architecture", &s) == FG_OK;
    if (ok) g->arch = copy_str(s);
    if (ok && fg_gguf_get_str(f, "tokenizer.chat_template", &s) == FG_OK) {
        g->chat_template = copy_str(s);
        g->chat_template_len = (size_t)s.len;
    }
    if (ok && fg_gguf_get_int(f, "tokenizer.ggml.bos_token_id", &bos_id) == FG_OK) {
        ok = fg_gguf_get_arr(f, "tokenizer.ggml.tokens", FG_GGUF_STRING, &tokens) == FG_OK && bos_id >= 0 &&
             (uint64_t)bos_id < tokens->v.arr.n;
        if (ok) g->bos = copy_str(tokens->v.arr.strs[bos_id]);
    }
    fg_gguf_close(f);
    return ok;
}

static void gguf_meta_free(gguf_meta *g)
{
    free(g->chat_template);
    free(g->arch);
    free(g->bos);
}

/* ---- The goldens: rendering ---------------------------------------------------------- */

/* Checks every case of a golden: fg_chat_apply, with the template the golden's
 * `expect` describes, must give Jinja's output or raise where Jinja raised.
 * Needs only the golden, so it always runs; that detection finds `expect` in
 * the real text is check_template_text's job. Fails after all cases if any
 * rendering differs. */
static void check_golden(const char *name)
{
    cJSON *doc = golden_load(name);
    const cJSON *expect = cJSON_GetObjectItemCaseSensitive(doc, "expect");
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name(jstr(expect, "kind"), &t), FG_OK, "%s: %s", name, fg_last_error());
    snprintf(t.default_system, sizeof t.default_system, "%s", jstr(expect, "default_system"));
    snprintf(t.date, sizeof t.date, "%s", jstr(expect, "date"));
    t.bos_in_template = jbool(expect, "bos_in_template");
    t.bos = jstr(doc, "bos_token");
    t.eos = jstr(doc, "eos_token");
    const cJSON *date = cJSON_GetObjectItemCaseSensitive(doc, "render_date");
    if (cJSON_IsString(date)) snprintf(t.date, sizeof t.date, "%s", date->valuestring);

    int n_cases = 0, n_bad = 0, n_raise = 0;
    const cJSON *c;
    cJSON_ArrayForEach (c, cJSON_GetObjectItemCaseSensitive(doc, "cases")) {
        const cJSON *jm = cJSON_GetObjectItemCaseSensitive(c, "messages");
        size_t n = (size_t)cJSON_GetArraySize(jm), k = 0;
        fg_chat_msg *msgs = calloc(n, sizeof *msgs);
        const cJSON *m;
        cJSON_ArrayForEach (m, jm) msgs[k++] = (fg_chat_msg){jstr(m, "role"), jstr(m, "content")};
        bool gen = jbool(c, "add_generation_prompt");
        t.disable_thinking = jbool(c, "disable_thinking");

        char what[160];
        snprintf(what, sizeof what, "%s/%s gen=%d nothink=%d", name, jstr(c, "name"), gen,
                 t.disable_thinking);
        char *got = NULL;
        fg_status st = fg_chat_apply(&t, msgs, n, gen, &got);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "output");
        if (cJSON_IsString(want)) {
            if (st != FG_OK) {
                cr_log_error("%s: failed: %s", what, fg_last_error());
                n_bad++;
            } else if (strcmp(got, want->valuestring) != 0) {
                report_diff(what, got, want->valuestring);
                n_bad++;
            }
        } else {
            const char *err = jstr(c, "error");
            n_raise++;
            if (st != FG_ERR_INVALID_ARG) {
                cr_log_error("%s: want error '%s', got status %d", what, err, st);
                n_bad++;
            } else if (!strstr(fg_last_error(), err)) {
                cr_log_error("%s: error '%s' does not say '%s'", what, fg_last_error(), err);
                n_bad++;
            }
        }
        free(got);
        free(msgs);
        n_cases++;
    }
    cr_log_info("%s: %d cases (%d raise), %d differ", name, n_cases, n_raise, n_bad);
    cr_expect_gt(n_cases, 0, "%s: no cases", name);
    cr_expect_eq(n_bad, 0, "%s: %d of %d cases differ from Jinja", name, n_bad, n_cases);
    cJSON_Delete(doc);
}

/* ---- The goldens: detection on the real template texts ------------------------------- */

/* Where the real template texts are kept: $FORGE_CHAT_TEMPLATES, else
 * build/chat-templates (ignored by git; tools/chat_templates/README.md says
 * how to fill it). */
static const char *template_dir(void)
{
    const char *dir = getenv("FORGE_CHAT_TEMPLATES");
    return dir && *dir ? dir : "build/chat-templates";
}

/* Checks that fg_chat_detect finds the golden's `expect` in the real text the
 * golden was rendered from: the file `template` in the template cache, or the
 * tokenizer.chat_template of the model file `gguf`. An absent text, or a
 * cached one whose SHA-256 is not the golden's (another revision), skips the
 * test with the reason. A GGUF's template that is not the golden's fails it:
 * tools/fetch-model pins the models by hash, so that means stale goldens. */
static void check_template_text(const char *name)
{
    cJSON *doc = golden_load(name);
    const char *file = jstr(doc, "template"), *want_sha = jstr(doc, "sha256");
    const cJSON *gguf = cJSON_GetObjectItemCaseSensitive(doc, "gguf");
    char path[1024], skip[1536] = "";
    char *src = NULL;
    size_t len = 0;
    gguf_meta g = {0};
    if (cJSON_IsString(gguf)) {
        if (fg_test_model_path(gguf->valuestring, path, sizeof path)) {
            cr_assert(gguf_meta_read(path, &g), "%s: cannot read its metadata", path);
            cr_assert_not_null(g.chat_template, "%s has no tokenizer.chat_template", path);
            src = g.chat_template;
            len = g.chat_template_len;
        } else {
            snprintf(skip, sizeof skip, "SKIPPED: %s not found; run `make models`", path);
        }
    } else {
        snprintf(path, sizeof path, "%s/%s", template_dir(), file);
        src = fg_test_read_file(path, &len);
        if (!src)
            snprintf(skip, sizeof skip, "SKIPPED: %s not in %s; see tools/chat_templates/README.md", file,
                     template_dir());
    }

    char sha[65] = "";
    if (src) sha256_hex(src, len, sha);
    if (src && !cJSON_IsString(gguf) && strcmp(sha, want_sha) != 0)
        snprintf(skip, sizeof skip,
                 "SKIPPED: %s has sha256 %s, but %s.golden was rendered from %s; "
                 "see tools/chat_templates/README.md",
                 path, sha, name, want_sha);
    if (*skip) {
        if (!cJSON_IsString(gguf)) free(src);
        gguf_meta_free(&g);
        cJSON_Delete(doc);
        cr_skip_test("%s", skip);
    }
    cr_expect_str_eq(sha, want_sha, "%s: tokenizer.chat_template is not the text %s.golden was rendered from",
                     path, name);

    const cJSON *expect = cJSON_GetObjectItemCaseSensitive(doc, "expect");
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_detect(src, len, NULL, NULL, &t), FG_OK, "%s: %s", path, fg_last_error());
    cr_expect_str_eq(fg_chat_name(t.kind), jstr(expect, "kind"), "%s: detected kind", path);
    cr_expect_str_eq(t.default_system, jstr(expect, "default_system"), "%s: default system prompt", path);
    cr_expect_eq(t.bos_in_template, jbool(expect, "bos_in_template"), "%s: bos_in_template", path);
    cr_expect_str_eq(t.date, jstr(expect, "date"), "%s: date", path);

    if (!cJSON_IsString(gguf)) free(src);
    gguf_meta_free(&g);
    cJSON_Delete(doc);
}

static const char *const golden_names[] = {
    "smollm2-135m-instruct",
    "qwen2.5-instruct",
    "qwen3",
    "llama3-instruct",
    "llama3.3-instruct",
    "llama3.2-instruct",
    "gemma3-it",
    "gemma2-it",
    "glm4-9b-chat",
    "glm-z1-9b-0414",
    "mistral-v1",
    "mistral-legacy",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
};

/* Both checks of one golden. */
#define GOLDEN_TESTS(id, name)                                                                          \
    Test(chat_golden, id) { check_golden(name); }                                                       \
    Test(chat_template_text, id) { check_template_text(name); }

GOLDEN_TESTS(smollm2, "smollm2-135m-instruct")
GOLDEN_TESTS(qwen2_5, "qwen2.5-instruct")
GOLDEN_TESTS(qwen3, "qwen3")
GOLDEN_TESTS(llama3, "llama3-instruct")
GOLDEN_TESTS(llama3_3, "llama3.3-instruct")
GOLDEN_TESTS(llama3_2, "llama3.2-instruct")
GOLDEN_TESTS(gemma3, "gemma3-it")
GOLDEN_TESTS(gemma2, "gemma2-it")
GOLDEN_TESTS(glm4, "glm4-9b-chat")
GOLDEN_TESTS(glm_z1, "glm-z1-9b-0414")
GOLDEN_TESTS(mistral_v1, "mistral-v1")
GOLDEN_TESTS(mistral_legacy, "mistral-legacy")
GOLDEN_TESTS(mistral_v3, "mistral-v3")
GOLDEN_TESTS(mistral_v3_tekken, "mistral-v3-tekken")
GOLDEN_TESTS(mistral_v7, "mistral-v7")

/* A golden nobody checks is worse than none: every file must be listed above. */
Test(chat_golden, every_file_is_checked)
{
    DIR *d = opendir("tests/data/chat");
    cr_assert_not_null(d, "tests/data/chat (run tests from the repo root)");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 8 || strcmp(e->d_name + len - 7, ".golden") != 0) continue;
        bool listed = false;
        for (size_t i = 0; i < sizeof golden_names / sizeof golden_names[0]; i++)
            listed |= strlen(golden_names[i]) == len - 7 && strncmp(golden_names[i], e->d_name, len - 7) == 0;
        cr_expect(listed, "tests/data/chat/%s has no test in test_chat.c", e->d_name);
        n++;
    }
    closedir(d);
    cr_expect_eq(n, (int)(sizeof golden_names / sizeof golden_names[0]));
}

/* ---- Detection on the GGUF models ------------------------------------------------- */

Test(chat_detect, smollm2_gguf_is_chatml_with_smollm_system_prompt)
{
    char path[512];
    if (!fg_test_model_path(FG_TEST_SMOLLM2, path, sizeof path))
        cr_skip_test("SKIPPED: %s not found; run `make models`", path);
    gguf_meta g;
    cr_assert(gguf_meta_read(path, &g), "%s: cannot read its metadata", path);
    cr_assert_not_null(g.chat_template, "%s has no tokenizer.chat_template", path);
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_detect(g.chat_template, g.chat_template_len, g.arch, g.bos, &t), FG_OK, "%s",
                 fg_last_error());
    cr_expect_eq(t.kind, FG_CHAT_CHATML);
    cr_expect_str_eq(t.default_system,
                     "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    cr_expect(!t.bos_in_template);

    fg_chat_msg msgs[] = {{"user", "Hi"}};
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, 1, true, &out), FG_OK);
    cr_expect_str_eq(out,
                     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                     "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    gguf_meta_free(&g);
}

Test(chat_detect, gemma3_gguf_without_template_is_gemma_by_arch)
{
    char path[512];
    if (!fg_test_model_path(FG_TEST_GEMMA3, path, sizeof path))
        cr_skip_test("SKIPPED: %s not found; run `make models`", path);
    gguf_meta g;
    cr_assert(gguf_meta_read(path, &g), "%s: cannot read its metadata", path);
    cr_expect_null(g.chat_template, "%s now has a chat template: detect it from the source instead", path);
    cr_assert_str_eq(g.arch, "gemma3");
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_detect(g.chat_template, g.chat_template_len, g.arch, g.bos, &t), FG_OK, "%s",
                 fg_last_error());
    cr_expect_eq(t.kind, FG_CHAT_GEMMA);
    cr_expect(t.bos_in_template);

    t.bos = g.bos;
    fg_chat_msg msgs[] = {{"system", "Be brief."}, {"user", " Hi "}};
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, 2, true, &out), FG_OK);
    char want[256];
    snprintf(want, sizeof want, "%s<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
             g.bos);
    cr_expect_str_eq(out, want);
    free(out);
    gguf_meta_free(&g);
}

/* ---- Detection without a template ------------------------------------------------- */

Test(chat_detect, by_architecture)
{
    static const struct {
        const char *arch, *bos;
        fg_chat_kind kind;
    } cases[] = {
        {"gemma3", NULL, FG_CHAT_GEMMA}, {"gemma2", "<bos>", FG_CHAT_GEMMA},
        {"gemma", NULL, FG_CHAT_GEMMA},  {"qwen2", NULL, FG_CHAT_CHATML},
        {"qwen3", NULL, FG_CHAT_QWEN3},  {"chatglm", NULL, FG_CHAT_GLM4},
        {"glm4", NULL, FG_CHAT_GLM4},    {"llama", "<|begin_of_text|>", FG_CHAT_LLAMA3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fg_chat_tmpl t;
        cr_assert_eq(fg_chat_detect(NULL, 0, cases[i].arch, cases[i].bos, &t), FG_OK, "%s: %s", cases[i].arch,
                     fg_last_error());
        cr_expect_eq(t.kind, cases[i].kind, "arch %s", cases[i].arch);
        cr_expect_str_eq(t.default_system, "");
    }
}

Test(chat_detect, nothing_identifies_a_template)
{
    fg_chat_tmpl t;
    cr_expect_eq(fg_chat_detect(NULL, 0, NULL, NULL, &t), FG_ERR_NOT_FOUND);
    cr_expect_eq(fg_chat_detect(NULL, 0, "llama", "<s>", &t), FG_ERR_NOT_FOUND,
                 "Llama 2 or Mistral: unknown");
    cr_expect_eq(fg_chat_detect(NULL, 0, "bert", NULL, &t), FG_ERR_NOT_FOUND);
    cr_expect(strstr(fg_last_error(), "--chat-template"), "%s", fg_last_error());

    const char *odd = "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}";
    cr_expect_eq(fg_chat_detect(odd, strlen(odd), "starcoder2", NULL, &t), FG_ERR_NOT_FOUND);
    /* An unrecognized template still falls back on the architecture. */
    cr_expect_eq(fg_chat_detect(odd, strlen(odd), "qwen2", NULL, &t), FG_OK);
    cr_expect_eq(t.kind, FG_CHAT_CHATML);

    /* Look-alikes that are not the templates forge implements. */
    const char *phi4 = "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}";
    cr_expect_eq(fg_chat_detect(phi4, strlen(phi4), NULL, NULL, &t), FG_ERR_NOT_FOUND);
    const char *llama2 = "{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}";
    cr_expect_eq(fg_chat_detect(llama2, strlen(llama2), NULL, NULL, &t), FG_ERR_NOT_FOUND);
}

/* ---- Detection on hand-written templates --------------------------------------------- */

/* Small templates written for these tests (not copied from any model), each
 * with the markup that tells its family and kind apart, so that detection of
 * every kind is checked whether or not the real texts are at hand. */
Test(chat_detect, each_kind_from_its_markup)
{
    static const struct {
        const char *what, *src;
        fg_chat_kind kind;
        const char *default_system, *date;
        bool bos;
    } cases[] = {
        {"chatml from the messages only",
         "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
         FG_CHAT_CHATML, "", "", false},
        {"chatml with a default system turn in its else branch",
         "{% if messages[0]['role'] == 'system' %}"
         "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
         "{% else %}{{ '<|im_start|>system\\nYou answer in haiku.<|im_end|>\\n' }}{% endif %}"
         "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
         "{% endfor %}",
         FG_CHAT_CHATML, "You answer in haiku.", "", false},
        {"qwen3: chatml that tracks the last query for <think>",
         "{% set ns = namespace(last_query_index=messages|length - 1) %}{% for m in messages %}"
         "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
         "{% if enable_thinking is defined and not enable_thinking %}"
         "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}",
         FG_CHAT_QWEN3, "", "", false},
        {"llama3: header ids, no dates",
         "{{ bos_token }}{% for m in messages %}"
         "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + "
         "'<|eot_id|>' }}"
         "{% endfor %}",
         FG_CHAT_LLAMA3, "", "", true},
        {"llama3.1 with its own fallback date",
         "{{ bos_token }}{%- set date_string = \"3 Mar 2025\" %}"
         "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n"
         "Today Date: ' + date_string + '<|eot_id|>' }}",
         FG_CHAT_LLAMA31, "", "3 Mar 2025", true},
        {"llama3.1 without a date_string",
         "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n"
         "Cutting Knowledge Date: December 2023<|eot_id|>' }}",
         FG_CHAT_LLAMA31, "", "26 Jul 2024", false},
        {"llama3.1 dated today by strftime_now",
         "{%- set date_string = strftime_now('%d %b %Y') %}{{ '<|start_header_id|>system<|end_header_id|>"
         "\\n\\nCutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '<|eot_id|>' }}",
         FG_CHAT_LLAMA31, "", "", false},
        {"gemma: turns, system allowed",
         "{{ bos_token }}{% for m in messages %}"
         "{% set r = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "{{ '<start_of_turn>' + r + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}",
         FG_CHAT_GEMMA, "", "", true},
        {"gemma2: turns, system rejected",
         "{% if messages[0]['role'] == 'system' %}"
         "{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}"
         "{{ '<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}",
         FG_CHAT_GEMMA2, "", "", false},
        {"glm4: [gMASK]<sop> and role tags",
         "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}",
         FG_CHAT_GLM4, "", "", false},
        {"glm4 that mentions </think> but has no metadata",
         "[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'].split('</think>')[-1] }}"
         "{% endfor %}",
         FG_CHAT_GLM4, "", "", false},
        {"glm4-z1: cuts reasoning at </think>, writes metadata",
         "[gMASK]<sop>{% for m in messages %}{% set c = m['content'] %}"
         "{% if m['role'] == 'assistant' and '</think>' in c %}"
         "{% set c = c.split('</think>')[-1] %}{% endif %}"
         "<|{{ m['role'] }}|>{{ m.get('metadata', '') }}\n{{ c }}{% endfor %}",
         FG_CHAT_GLM4_Z1, "", "", false},
        {"mistral-v7: a system prompt block",
         "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
         "{{ '[SYSTEM_PROMPT]' + m['content'] + '[/SYSTEM_PROMPT]' }}{% elif m['role'] == 'user' %}"
         "{{ '[INST]' + m['content'] + '[/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}"
         "{% endfor %}",
         FG_CHAT_MISTRAL_V7, "", "", true},
        {"mistral-v3-tekken: no space after [INST], single quotes",
         "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST]' + m['content'] + '[/INST]' }}"
         "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}",
         FG_CHAT_MISTRAL_V3_TEKKEN, "", "", false},
        {"mistral-v3-tekken: double quotes",
         "{% for m in messages %}{% if m.role == \"user\" %}{{ \"[INST]\" + m.content + \"[/INST]\" }}"
         "{% else %}{{ m.content + eos_token }}{% endif %}{% endfor %}",
         FG_CHAT_MISTRAL_V3_TEKKEN, "", "", false},
        {"mistral-v3: \"[INST] \" + content",
         "{% for m in messages %}{% if m.role == \"user\" %}{{ \"[INST] \" + m.content + \"[/INST]\" }}"
         "{% else %}{{ \" \" + m.content + eos_token }}{% endif %}{% endfor %}",
         FG_CHAT_MISTRAL_V3, "", "", false},
        {"mistral v1: ' [INST] ' with spaces both sides",
         "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
         "{{ ' [INST] ' + m['content'] + ' [/INST]' }}"
         "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}",
         FG_CHAT_MISTRAL, "", "", true},
        {"mistral-legacy: '[INST] ' + message['content'] + ' [/INST]'",
         "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
         "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}"
         "{% endif %}{% endfor %}",
         FG_CHAT_MISTRAL_LEGACY, "", "", true},
        {"[INST] in raw text: mistral (v1) by default",
         "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}", FG_CHAT_MISTRAL, "", "", false},
    };
    bool seen[FG_CHAT_KIND_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fg_chat_tmpl t;
        const char *src = cases[i].src;
        /* arch "bert" implies nothing, so only the source can decide */
        cr_assert_eq(fg_chat_detect(src, strlen(src), "bert", NULL, &t), FG_OK, "%s: %s", cases[i].what,
                     fg_last_error());
        cr_expect_str_eq(fg_chat_name(t.kind), fg_chat_name(cases[i].kind), "%s: kind", cases[i].what);
        cr_expect_str_eq(t.default_system, cases[i].default_system, "%s: default system", cases[i].what);
        cr_expect_str_eq(t.date, cases[i].date, "%s: date", cases[i].what);
        cr_expect_eq(t.bos_in_template, cases[i].bos, "%s: bos_in_template", cases[i].what);
        seen[cases[i].kind] = true;
    }
    for (int k = 0; k < FG_CHAT_KIND_COUNT; k++)
        cr_expect(seen[k], "no hand-written template of kind %s", fg_chat_name((fg_chat_kind)k));
}

/* The default system prompt is read from the literal however it is quoted
 * and escaped, and only a literal turn counts as one. */
Test(chat_detect, chatml_default_system_literals)
{
    static const struct {
        const char *src, *want;
    } cases[] = {
        {"{{ '<|im_start|>system\\nYou\\'re \\\"X\\\"\\\\n<|im_end|>\\n' }}", "You're \"X\"\\n"},
        {"{{ \"<|im_start|>system\nIt's fine.<|im_end|>\n\" }}", "It's fine."},
        {"{% if x %}<|im_start|>system\nRaw text prompt<|im_end|>\n{% endif %}", "Raw text prompt"},
        {"{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}", ""},
        {"{% if x %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>{% endif %}", ""},
        {"{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}", ""},
        /* double quotes with escapes of both quotes and a tab */
        {"{{ \"<|im_start|>system\\nSay \\\"hi\\\" and it\\'s\\tok<|im_end|>\\n\" }}",
         "Say \"hi\" and it's\tok"},
        /* single quotes around an unescaped double quote */
        {"{{ '<|im_start|>system\\nA \"quoted\" word<|im_end|>\\n' }}", "A \"quoted\" word"},
        /* an escaped backslash, and an unknown escape that keeps its backslash */
        {"{{ '<|im_start|>system\\nC:\\\\dir and \\d<|im_end|>' }}", "C:\\dir and \\d"},
        /* multi-byte UTF-8 passes through */
        {"{{ '<|im_start|>system\\nBonjour, je suis l\xc3\xa0 \xf0\x9f\x99\x82<|im_end|>\\n' }}",
         "Bonjour, je suis l\xc3\xa0 \xf0\x9f\x99\x82"},
        /* the turn built from the caller's message comes first; the default is later */
        {"{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + "
         "'<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nFallback prompt.<|im_end|>\\n' }}{% endif %}",
         "Fallback prompt."},
        /* raw text up to an expression is not a literal turn */
        {"<|im_start|>system\nHello {{ name }}<|im_end|>\n", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fg_chat_tmpl t;
        cr_assert_eq(fg_chat_detect(cases[i].src, strlen(cases[i].src), NULL, NULL, &t), FG_OK, "%s",
                     fg_last_error());
        cr_expect_eq(t.kind, FG_CHAT_CHATML);
        cr_expect_str_eq(t.default_system, cases[i].want, "source %s", cases[i].src);
    }

    /* Too long for the struct: a clear error, not a truncated prompt. */
    size_t n = FG_CHAT_SYSTEM_MAX + 100;
    char *big = malloc(n + 64);
    int k = sprintf(big, "{{ '<|im_start|>system\\n");
    memset(big + k, 'x', n);
    strcpy(big + k + n, "<|im_end|>\\n' }}");
    fg_chat_tmpl t;
    cr_expect_eq(fg_chat_detect(big, strlen(big), NULL, NULL, &t), FG_ERR_UNSUPPORTED);
    free(big);
}

/* The source need not be NUL-terminated: markers past len do not count. */
Test(chat_detect, respects_length)
{
    const char *src = "plain text {{ x }}<|start_header_id|>";
    fg_chat_tmpl t;
    cr_expect_eq(fg_chat_detect(src, 18, NULL, NULL, &t), FG_ERR_NOT_FOUND);
    cr_expect_eq(fg_chat_detect(src, strlen(src), NULL, NULL, &t), FG_OK);
    cr_expect_eq(t.kind, FG_CHAT_LLAMA3);
}

/* ---- Names -------------------------------------------------------------------------- */

Test(chat_name, every_kind_round_trips)
{
    for (int k = 0; k < FG_CHAT_KIND_COUNT; k++) {
        fg_chat_tmpl t;
        cr_assert_eq(fg_chat_from_name(fg_chat_name((fg_chat_kind)k), &t), FG_OK, "%s", fg_last_error());
        cr_expect_eq(t.kind, (fg_chat_kind)k);
        cr_expect_null(t.bos);
        cr_expect_null(t.eos);
        cr_expect_str_eq(t.default_system, "");
    }
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("llama3.1", &t), FG_OK);
    cr_expect_str_eq(t.date, "26 Jul 2024");
    cr_assert_eq(fg_chat_from_name("llama3.2", &t), FG_OK);
    cr_expect_eq(t.kind, FG_CHAT_LLAMA31);
    cr_expect_str_eq(t.date, "", "3.2 dates the prompt today");
    cr_assert_eq(fg_chat_from_name("mistral-v1", &t), FG_OK);
    cr_expect_eq(t.kind, FG_CHAT_MISTRAL);
    cr_assert_eq(fg_chat_from_name("chatglm4", &t), FG_OK);
    cr_expect_eq(t.kind, FG_CHAT_GLM4);
}

Test(chat_name, unknown_name_lists_the_valid_ones)
{
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("vicuna", &t), FG_ERR_INVALID_ARG);
    const char *msg = fg_last_error();
    cr_expect(strstr(msg, "'vicuna'"), "%s", msg);
    for (int k = 0; k < FG_CHAT_KIND_COUNT; k++)
        cr_expect(strstr(msg, fg_chat_name((fg_chat_kind)k)), "'%s' does not list %s", msg,
                  fg_chat_name((fg_chat_kind)k));
    cr_expect_eq(fg_chat_from_name("", &t), FG_ERR_INVALID_ARG);
    cr_expect_eq(fg_chat_from_name("ChatML", &t), FG_ERR_INVALID_ARG, "names are exact");
}

/* ---- Applying: what the goldens do not cover ---------------------------------------- */

Test(chat_apply, rejects_bad_conversations)
{
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("chatml", &t), FG_OK);
    char *out = (char *)1;

    cr_expect_eq(fg_chat_apply(&t, NULL, 0, true, &out), FG_ERR_INVALID_ARG);
    cr_expect_null(out);
    cr_expect(strstr(fg_last_error(), "no messages"), "%s", fg_last_error());

    fg_chat_msg tool[] = {{"user", "Hi"}, {"tool", "42"}};
    cr_expect_eq(fg_chat_apply(&t, tool, 2, true, &out), FG_ERR_INVALID_ARG);
    cr_expect(strstr(fg_last_error(), "'tool'"), "%s", fg_last_error());
    cr_expect(strstr(fg_last_error(), "system, user and assistant"), "%s", fg_last_error());

    fg_chat_msg no_content[] = {{"user", NULL}};
    cr_expect_eq(fg_chat_apply(&t, no_content, 1, true, &out), FG_ERR_INVALID_ARG);
    fg_chat_msg no_role[] = {{NULL, "x"}};
    cr_expect_eq(fg_chat_apply(&t, no_role, 1, true, &out), FG_ERR_INVALID_ARG);

    t.kind = FG_CHAT_KIND_COUNT;
    fg_chat_msg ok[] = {{"user", "Hi"}};
    cr_expect_eq(fg_chat_apply(&t, ok, 1, true, &out), FG_ERR_INVALID_ARG);
}

/* Where Jinja raises, forge says so in the template's words and where. */
Test(chat_apply, template_errors_name_the_message)
{
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("mistral", &t), FG_OK);
    fg_chat_msg msgs[] = {{"user", "a"}, {"user", "b"}};
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, 2, true, &out), FG_ERR_INVALID_ARG);
    cr_expect(strstr(fg_last_error(), "mistral"), "%s", fg_last_error());
    cr_expect(strstr(fg_last_error(), "must alternate"), "%s", fg_last_error());
    cr_expect(strstr(fg_last_error(), "message 1"), "%s", fg_last_error());
}

Test(chat_apply, llama32_dates_today)
{
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("llama3.2", &t), FG_OK);
    char want[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(want, sizeof want, "Today Date: %d %b %Y\n\n", &tm);
    fg_chat_msg msgs[] = {{"user", "Hi"}};
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, 1, false, &out), FG_OK);
    cr_expect(strstr(out, want), "'%s' lacks '%s'", out, want);
    cr_expect(strncmp(out, "<|start_header_id|>", 19) == 0, "bos NULL writes nothing");
    free(out);
}

Test(chat_apply, mistral_eos_defaults_to_s)
{
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("mistral", &t), FG_OK);
    fg_chat_msg msgs[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, 3, true, &out), FG_OK);
    cr_expect_str_eq(out, " [INST] a [/INST] b</s> [INST] c [/INST]");
    free(out);
}

/* Long conversations grow the buffer many times; the result must still be
 * exact (content bytes pass through untouched). */
Test(chat_apply, long_conversation)
{
    enum { N = 301, LEN = 5000 };
    char *text = malloc(LEN + 1);
    for (int i = 0; i < LEN; i++) text[i] = (char)('a' + i % 26);
    text[LEN] = 0;
    fg_chat_msg *msgs = calloc(N, sizeof *msgs);
    for (int i = 0; i < N; i++) msgs[i] = (fg_chat_msg){i % 2 ? "assistant" : "user", text};
    fg_chat_tmpl t;
    cr_assert_eq(fg_chat_from_name("chatml", &t), FG_OK);
    char *out;
    cr_assert_eq(fg_chat_apply(&t, msgs, N, true, &out), FG_OK);
    size_t per_user = strlen("<|im_start|>user\n<|im_end|>\n") + LEN;
    size_t per_asst = strlen("<|im_start|>assistant\n<|im_end|>\n") + LEN;
    cr_expect_eq(strlen(out),
                 (N / 2 + 1) * per_user + (N / 2) * per_asst + strlen("<|im_start|>assistant\n"));
    free(out);
    free(msgs);
    free(text);
}
