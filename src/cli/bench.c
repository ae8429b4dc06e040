/*
 * bench.c — `forge bench`: prompt-processing and generation speed of a model,
 * measured the way llama-bench measures them.
 *
 * pp: a prompt of -p random token ids evaluated from an empty context (in
 * batches of -b). tg: -n tokens generated one at a time from an empty
 * context, each fed the argmax of the previous logits, taken on the backend
 * (greedy sampling: only the id comes back). One untimed warm-up
 * of each comes first (module loading, cuBLAS heuristics, graph capture),
 * then -r timed repetitions; the mean and standard deviation of tokens/s are
 * reported, as text or JSON (-o json). The times are wall-clock around the
 * session calls, which end with the logits (pp) or the picked id (tg) on
 * the host, so every step's device work is inside them.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "runtime/runner.h"
#include "runtime/generate.h"

enum { OPT_MEASURE_BW = OPT_CMD_FIRST, OPT_PARALLEL, OPT_PREFIX_REUSE };

static void help(void)
{
    printf("usage: forge bench [options]\n\n"
           "Measures prompt processing (pp) and generation (tg) speed, like llama-bench.\n\n"
           "  -p, --n-prompt N       prompt tokens for pp (default 512; 0 skips pp)\n"
           "  -n, --n-gen N          generated tokens for tg (default 128; 0 skips tg)\n"
           "  -r, --repetitions N    timed repetitions of each (default 5)\n"
           "  -d, --depth N          run pp and tg after N tokens already in the context, like\n"
           "                         llama-bench's depth: attention over a long context (default 0)\n"
           "  -o, --output FORMAT    text (default) or json\n"
           "      --measure-bw       measure the GPU's read bandwidth and report tg as a share of\n"
           "                         the floor: weight bytes read per token over that bandwidth\n"
           "      --parallel N       serve N streams at once through the engine (continuous batching\n"
           "                         over the paged KV cache), each a -p token prompt and -n generated\n"
           "                         tokens, like llama.cpp's batched-bench: prefill, decode and total\n"
           "                         tokens/s\n"
           "      --prefix-reuse     prefix caching: a -p token prompt, then the same prompt with 16 more\n"
           "                         tokens; the second's time to first token and the tokens it reused\n");
    fg_cli_engine_help();
    printf("  -h, --help             show this help\n");
}

static void stats(const double *tps, int r, double *mean, double *sd)
{
    double m = 0, v = 0;
    for (int i = 0; i < r; i++) m += tps[i];
    m /= r;
    for (int i = 0; i < r; i++) v += (tps[i] - m) * (tps[i] - m);
    *mean = m;
    *sd = r > 1 ? sqrt(v / (r - 1)) : 0.0;
}

/* n random token ids from the generator *rng (a 64-bit LCG). */
static void random_ids(int32_t *ids, int32_t n, int32_t n_vocab, uint64_t *rng)
{
    for (int32_t i = 0; i < n; i++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((*rng >> 33) % (uint64_t)n_vocab);
    }
}

static fg_sampler_params greedy_params(void)
{
    fg_sampler_params sp = fg_sampler_defaults();
    sp.temperature = 0.0f;
    sp.seed = 1;
    return sp;
}

/* Prints o as one line and frees it. */
static void print_json(cJSON *o)
{
    char *out = cJSON_PrintUnformatted(o);
    if (out) printf("%s\n", out);
    free(out);
    cJSON_Delete(o);
}

/* The model and backend alone (no session), and an engine on them. */
static fg_status open_engine(fg_cli_engine_opts *eo, const fg_runner_params *p, fg_cli_engine *ce, fg_runner **e)
{
    *e = NULL;
    eo->model_only = true;
    FG_TRY(fg_cli_engine_load(eo, ce));
    fg_status st = fg_runner_init(ce->model, ce->be, p, e);
    if (st != FG_OK) fg_cli_engine_free(ce);
    return st;
}

/* ---- --parallel ------------------------------------------------------------ */

typedef struct par_result {
    double pp_ms, tg_ms; /* until every stream has its first token; the rest */
} par_result;

/* One batched run: n_par streams of n_prompt random ids each, n_gen greedy
 * tokens each, submitted at once; prompts differ from run to run, so no
 * run reuses another's cached prefixes. */
static fg_status run_parallel(fg_runner *e, int32_t n_par, int32_t n_prompt, int32_t n_gen, int32_t n_vocab,
                              uint64_t *rng, par_result *res)
{
    fg_sampler_params sp = greedy_params();
    uint64_t *ids = calloc((size_t)n_par, sizeof *ids);
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (!ids || !prompt) {
        free(ids), free(prompt);
        return fg_err_set(FG_ERR_NOMEM, "out of memory");
    }
    fg_status st = FG_OK;
    double t0 = fg_now_ms(), t_first = -1;
    int32_t submitted = 0;
    for (; st == FG_OK && submitted < n_par; submitted++) {
        random_ids(prompt, n_prompt, n_vocab, rng);
        st = fg_runner_submit(e, prompt, n_prompt, n_gen, -1, &sp, &ids[submitted]);
    }
    for (int32_t done = 0; st == FG_OK && done < n_par;) {
        int32_t t;
        st = fg_runner_step(e, &t);
        int32_t started = 0;
        done = 0;
        for (int32_t i = 0; st == FG_OK && i < n_par; i++) {
            fg_req_info info;
            st = fg_runner_info(e, ids[i], &info);
            started += info.n_gen > 0;
            done += info.state == FG_REQ_FINISHED;
        }
        if (t_first < 0 && started == n_par) t_first = fg_now_ms();
        if (st == FG_OK && t == 0 && done < n_par) st = fg_err_set(FG_ERR_FULL, "the engine stalled with %d of %d streams done", done, n_par);
    }
    double t1 = fg_now_ms();
    for (int32_t i = 0; i < submitted; i++) {
        fg_req_info info;
        if (fg_runner_info(e, ids[i], &info) != FG_OK) continue;
        if (info.state == FG_REQ_WAITING || info.state == FG_REQ_PREFILLING || info.state == FG_REQ_DECODING)
            fg_runner_cancel(e, ids[i]);
        fg_runner_release(e, ids[i]);
    }
    res->pp_ms = t_first - t0;
    res->tg_ms = t1 - t_first;
    free(ids), free(prompt);
    return st;
}

static int bench_parallel(fg_cli_engine_opts *eo, int32_t n_par, int32_t n_prompt, int32_t n_gen, int reps, bool json)
{
    /* Every stream's KV at once; a step budget of 512 tokens (at least one
     * decode per stream). */
    int32_t step = n_par > 512 ? n_par : 512;
    fg_runner_params p = {n_par * (n_prompt + n_gen + FG_KV_BLOCK_SIZE), n_prompt + n_gen + FG_KV_BLOCK_SIZE, n_par, step,
                          n_par};
    fg_cli_engine ce;
    fg_runner *e;
    fg_status st = open_engine(eo, &p, &ce, &e);
    if (st != FG_OK) return fg_cli_fail(st);
    int32_t n_vocab = fg_model_n_vocab(ce.model);
    uint64_t rng = 0x2545f4914f6cdd1dull;
    par_result warm, *r = calloc((size_t)reps, sizeof *r);
    if (st == FG_OK && !r) st = fg_err_set(FG_ERR_NOMEM, "out of memory");
    if (st == FG_OK) st = run_parallel(e, n_par, n_prompt < 16 ? n_prompt : 16, n_gen < 4 ? n_gen : 4, n_vocab, &rng, &warm);
    for (int i = 0; st == FG_OK && i < reps; i++) st = run_parallel(e, n_par, n_prompt, n_gen, n_vocab, &rng, &r[i]);
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else {
        double pp[1000], tg[1000], tot[1000], pm, ps, gm, gs, tm, ts;
        for (int i = 0; i < reps; i++) {
            pp[i] = (double)n_par * n_prompt / (r[i].pp_ms / 1e3);
            tg[i] = (double)n_par * (n_gen - 1) / (r[i].tg_ms / 1e3);
            tot[i] = (double)n_par * (n_prompt + n_gen) / ((r[i].pp_ms + r[i].tg_ms) / 1e3);
        }
        stats(pp, reps, &pm, &ps);
        stats(tg, reps, &gm, &gs);
        stats(tot, reps, &tm, &ts);
        const char *model = eo->model ? eo->model : fg_cli_default_model();
        const char *dev = ce.be->ops->describe(ce.be);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", model);
            cJSON_AddStringToObject(o, "device", dev);
            cJSON_AddNumberToObject(o, "parallel", n_par);
            cJSON_AddNumberToObject(o, "n_prompt", n_prompt);
            cJSON_AddNumberToObject(o, "n_gen", n_gen);
            cJSON_AddNumberToObject(o, "repetitions", reps);
            cJSON_AddNumberToObject(o, "pp_tps_mean", pm);
            cJSON_AddNumberToObject(o, "tg_tps_mean", gm);
            cJSON_AddNumberToObject(o, "total_tps_mean", tm);
            cJSON_AddNumberToObject(o, "tg_tps_sd", gs);
            print_json(o);
        } else {
            printf("model: %s\ndevice: %s\n", model, dev);
            printf("| streams | pp | tg | prefill t/s | decode t/s | total t/s |\n|---|---|---|---|---|---|\n");
            printf("| %d | %d | %d | %.1f ± %.1f | %.1f ± %.1f | %.1f ± %.1f |\n", n_par, n_prompt, n_gen, pm, ps, gm, gs,
                   tm, ts);
        }
    }
    free(r);
    fg_runner_free(e);
    fg_cli_engine_free(&ce);
    return rc;
}

/* ---- --prefix-reuse ---------------------------------------------------------- */

/* Runs one request of n prompt tokens to its first token: ms, and the
 * prompt tokens found in the prefix cache. */
static fg_status first_token(fg_runner *e, const int32_t *prompt, int32_t n, double *ms, int32_t *cached)
{
    fg_sampler_params sp = greedy_params();
    uint64_t id;
    double t0 = fg_now_ms();
    FG_TRY(fg_runner_submit(e, prompt, n, 1, -1, &sp, &id));
    fg_req_info info = {0};
    fg_status st = FG_OK;
    while (st == FG_OK && info.state != FG_REQ_FINISHED) {
        int32_t t;
        if ((st = fg_runner_step(e, &t)) == FG_OK) st = fg_runner_info(e, id, &info);
    }
    *ms = fg_now_ms() - t0;
    *cached = info.n_cached;
    if (st == FG_OK) fg_runner_release(e, id);
    return st;
}

static int bench_prefix(fg_cli_engine_opts *eo, int32_t n_prompt, bool json)
{
    int32_t n2 = n_prompt + 16;
    fg_runner_params p = {.kv_tokens = 2 * (n2 + FG_KV_BLOCK_SIZE), .max_seq_tokens = n2 + FG_KV_BLOCK_SIZE,
                          .max_running = 2, .max_step_tokens = 512, .max_waiting = 2};
    fg_cli_engine ce;
    fg_runner *e;
    fg_status st = open_engine(eo, &p, &ce, &e);
    if (st != FG_OK) return fg_cli_fail(st);
    int32_t *prompt = malloc((size_t)n2 * sizeof *prompt), n_vocab = fg_model_n_vocab(ce.model), c_warm, c1, c2;
    double t_warm, t1, t2;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    if (st == FG_OK && !prompt) st = fg_err_set(FG_ERR_NOMEM, "out of memory");
    if (st == FG_OK) random_ids(prompt, n2, n_vocab, &rng);
    /* A warm-up of the same length on other tokens (so the measured prompt
     * meets no first-use costs: the prefill GEMM's setup, lazy kernel
     * loading), then the prompt, then prompt + 16. */
    if (st == FG_OK) st = first_token(e, prompt + 16, n_prompt, &t_warm, &c_warm);
    if (st == FG_OK) st = first_token(e, prompt, n_prompt, &t1, &c1);
    if (st == FG_OK) st = first_token(e, prompt, n2, &t2, &c2);
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n_prompt", n_prompt);
        cJSON_AddNumberToObject(o, "first_ms", t1);
        cJSON_AddNumberToObject(o, "first_cached", c1);
        cJSON_AddNumberToObject(o, "second_prompt", n2);
        cJSON_AddNumberToObject(o, "second_ms", t2);
        cJSON_AddNumberToObject(o, "second_cached", c2);
        cJSON_AddNumberToObject(o, "block_size", FG_KV_BLOCK_SIZE);
        print_json(o);
    } else {
        printf("| request | prompt tokens | reused from the cache (blocks) | computed | time to first token |\n"
               "|---|---|---|---|---|\n");
        printf("| first | %d | %d (%d) | %d | %.1f ms |\n", n_prompt, c1, c1 / FG_KV_BLOCK_SIZE, n_prompt - c1, t1);
        printf("| same + 16 | %d | %d (%d) | %d | %.1f ms |\n", n2, c2, c2 / FG_KV_BLOCK_SIZE, n2 - c2, t2);
    }
    free(prompt);
    fg_runner_free(e);
    fg_cli_engine_free(&ce);
    return rc;
}

/* The context back to `depth` tokens: those the session holds, or (a
 * fresh session, or one cut shorter) depth random ids evaluated anew,
 * untimed. */
static fg_status to_depth(fg_session *s, int32_t depth, int32_t n_vocab, uint64_t *rng)
{
    if (fg_session_n_past(s) >= depth) {
        fg_session_truncate(s, depth);
        return FG_OK;
    }
    fg_session_truncate(s, 0);
    if (depth == 0) return FG_OK;
    int32_t *ids = malloc((size_t)depth * sizeof *ids);
    if (!ids) return fg_err_set(FG_ERR_NOMEM, "out of memory for %d depth tokens", depth);
    random_ids(ids, depth, n_vocab, rng);
    fg_status st = fg_session_eval(s, ids, depth);
    free(ids);
    return st;
}

/* One pp run: n random ids after `depth` tokens; returns ms. */
static fg_status run_pp(fg_session *s, int32_t *ids, int n, int32_t depth, int32_t n_vocab, uint64_t *rng, double *ms)
{
    FG_TRY(to_depth(s, depth, n_vocab, rng));
    random_ids(ids, n, n_vocab, rng);
    double t0 = fg_now_ms();
    FG_TRY(fg_session_eval(s, ids, n));
    *ms = fg_now_ms() - t0;
    return FG_OK;
}

/* One tg run: n tokens one at a time after `depth` tokens; returns ms. */
static fg_status run_tg(fg_session *s, int n, int32_t depth, int32_t n_vocab, uint64_t *rng, double *ms)
{
    FG_TRY(to_depth(s, depth, n_vocab, rng));
    int32_t tok = 1;
    double t0 = fg_now_ms();
    const fg_sample_row greedy = {0};
    for (int i = 0; i < n; i++) FG_TRY(fg_session_eval_sample(s, &tok, 1, &greedy, &tok));
    *ms = fg_now_ms() - t0;
    return FG_OK;
}


int fg_cli_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},
        {"repetitions", required_argument, 0, 'r'},
        {"depth", required_argument, 0, 'd'},
        {"output", required_argument, 0, 'o'},
        {"measure-bw", no_argument, 0, OPT_MEASURE_BW},
        {"parallel", required_argument, 0, OPT_PARALLEL},
        {"prefix-reuse", no_argument, 0, OPT_PREFIX_REUSE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    fg_cli_engine_opts eo = {0};
    int32_t n_prompt = 512, n_gen = 128, reps = 5, n_par = 0, depth = 0;
    bool json = false, measure_bw = false, prefix_reuse = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, FG_CLI_ENGINE_SHORT "p:n:r:d:o:h", opts, NULL)) != -1) {
        int r = fg_cli_engine_opt("bench", c, optarg, &eo);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        switch (c) {
        case 'p': if (fg_cli_parse_int("bench", "-p/--n-prompt", optarg, 0, 1 << 20, &n_prompt)) return 2; break;
        case 'n': if (fg_cli_parse_int("bench", "-n/--n-gen", optarg, 0, 1 << 20, &n_gen)) return 2; break;
        case 'r': if (fg_cli_parse_int("bench", "-r/--repetitions", optarg, 1, 1000, &reps)) return 2; break;
        case 'd': if (fg_cli_parse_int("bench", "-d/--depth", optarg, 0, 1 << 20, &depth)) return 2; break;
        case 'o':
            if (strcmp(optarg, "json") == 0) json = true;
            else if (strcmp(optarg, "text") != 0) return fg_cli_usage_error("bench", "-o must be text or json, not '%s'", optarg);
            break;
        case OPT_MEASURE_BW: measure_bw = true; break;
        case OPT_PARALLEL: if (fg_cli_parse_int("bench", "--parallel", optarg, 1, 4096, &n_par)) return 2; break;
        case OPT_PREFIX_REUSE: prefix_reuse = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("bench", "unknown option");
        }
    }
    if (optind < argc) return fg_cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    if (n_prompt == 0 && n_gen == 0) return fg_cli_usage_error("bench", "-p and -n are both 0: nothing to measure");
    if (depth > 0 && (prefix_reuse || n_par > 0))
        return fg_cli_usage_error("bench", "-d/--depth applies to pp and tg, not --prefix-reuse or --parallel");
    if (prefix_reuse) {
        if (n_par > 0 || measure_bw) return fg_cli_usage_error("bench", "--prefix-reuse runs alone");
        if (n_prompt < 1) return fg_cli_usage_error("bench", "--prefix-reuse needs -p of at least 1");
        return bench_prefix(&eo, n_prompt, json);
    }
    if (n_par > 0) {
        if (n_prompt < 1 || n_gen < 2)
            return fg_cli_usage_error("bench", "--parallel needs -p of at least 1 and -n of at least 2");
        if (measure_bw) return fg_cli_usage_error("bench", "--measure-bw measures single-stream decoding; drop --parallel");
        return bench_parallel(&eo, n_par, n_prompt, n_gen, reps, json);
    }
    /* The context must hold the depth and the longer of the two runs. */
    int32_t longest = depth + (n_prompt > n_gen ? n_prompt : n_gen);
    if (eo.n_ctx == 0) eo.n_ctx = longest + 16;
    if (eo.n_ctx < longest)
        return fg_cli_usage_error("bench", "-c %d is shorter than -d %d plus -p %d / -n %d", eo.n_ctx, depth, n_prompt,
                                  n_gen);

    fg_cli_engine e;
    fg_status st = fg_cli_engine_load(&eo, &e);
    if (st != FG_OK) return fg_cli_fail(st);
    int32_t n_vocab = fg_model_n_vocab(e.model);
    int32_t *ids = malloc((size_t)(n_prompt > 0 ? n_prompt : 1) * sizeof *ids);
    double *pp = calloc((size_t)reps, sizeof *pp), *tg = calloc((size_t)reps, sizeof *tg), ms = 0;
    uint64_t rng = 0x853c49e6748fea9bull;
    if (!ids || !pp || !tg) st = fg_err_set(FG_ERR_NOMEM, "out of memory");
    /* Warm-up, then the timed repetitions. */
    if (st == FG_OK && n_prompt > 0) st = run_pp(e.session, ids, n_prompt, depth, n_vocab, &rng, &ms);
    for (int i = 0; st == FG_OK && n_prompt > 0 && i < reps; i++)
        if ((st = run_pp(e.session, ids, n_prompt, depth, n_vocab, &rng, &ms)) == FG_OK) pp[i] = n_prompt / (ms / 1e3);
    if (st == FG_OK && n_gen > 0) st = run_tg(e.session, n_gen < 16 ? n_gen : 16, depth, n_vocab, &rng, &ms);
    for (int i = 0; st == FG_OK && n_gen > 0 && i < reps; i++)
        if ((st = run_tg(e.session, n_gen, depth, n_vocab, &rng, &ms)) == FG_OK) tg[i] = n_gen / (ms / 1e3);
    /* The decode floor: every weight byte is read once per token, except the
     * embedding table, of which one row is (unless it doubles as the output). */
    double bw = 0, bytes_per_token = 0;
    if (st == FG_OK && measure_bw) {
        st = e.be->ops->measure_bw(e.be, &bw);
        const fg_gguf *g = e.model->gguf;
        bool tied = !fg_gguf_find_tensor(g, "output.weight");
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const fg_gguf_tensor *t = &g->tensors[i];
            if (!tied && fg_gguf_str_eq(t->name, "token_embd.weight")) continue;
            bytes_per_token += (double)t->nbytes;
        }
    }
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else {
        const char *model = eo.model ? eo.model : fg_cli_default_model();
        const char *dev = e.be->ops->describe(e.be);
        double pm, ps, gm, gs;
        stats(pp, reps, &pm, &ps);
        stats(tg, reps, &gm, &gs);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", model);
            cJSON_AddStringToObject(o, "device", dev);
            cJSON_AddNumberToObject(o, "repetitions", reps);
            cJSON_AddNumberToObject(o, "depth", depth);
            if (n_prompt > 0) {
                cJSON *p = cJSON_AddObjectToObject(o, "pp");
                cJSON_AddNumberToObject(p, "n_prompt", n_prompt);
                cJSON_AddNumberToObject(p, "tps_mean", pm);
                cJSON_AddNumberToObject(p, "tps_sd", ps);
            }
            if (n_gen > 0) {
                cJSON *g = cJSON_AddObjectToObject(o, "tg");
                cJSON_AddNumberToObject(g, "n_gen", n_gen);
                cJSON_AddNumberToObject(g, "tps_mean", gm);
                cJSON_AddNumberToObject(g, "tps_sd", gs);
            }
            if (measure_bw) {
                cJSON_AddNumberToObject(o, "read_bw_gbs", bw);
                cJSON_AddNumberToObject(o, "weight_bytes_per_token", bytes_per_token);
                cJSON_AddNumberToObject(o, "tg_floor_tps", bw * 1e9 / bytes_per_token);
                if (n_gen > 0) cJSON_AddNumberToObject(o, "tg_pct_of_floor", 100.0 * gm / (bw * 1e9 / bytes_per_token));
            }
            print_json(o);
        } else {
            printf("model: %s\ndevice: %s\n", model, dev);
            printf("| test | t/s |\n|---|---|\n");
            char at[32] = "";
            if (depth > 0) snprintf(at, sizeof at, " @ d%d", depth);
            if (n_prompt > 0) printf("| pp%d%s | %.2f ± %.2f |\n", n_prompt, at, pm, ps);
            if (n_gen > 0) printf("| tg%d%s | %.2f ± %.2f |\n", n_gen, at, gm, gs);
            if (measure_bw) {
                double floor_tps = bw * 1e9 / bytes_per_token;
                printf("read bandwidth %.0f GB/s; %.2f GB of weights read per token: floor %.1f t/s", bw,
                       bytes_per_token / 1e9, floor_tps);
                if (n_gen > 0) printf("; tg%d at %.1f%% of it", n_gen, 100.0 * gm / floor_tps);
                printf("\n");
            }
        }
    }
    free(ids);
    free(pp);
    free(tg);
    fg_cli_engine_free(&e);
    return rc;
}
