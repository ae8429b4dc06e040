/*
 * forge.h — the public C API of forge, an LLM inference engine for GGUF models.
 *
 * Every call that can fail returns an fg_status. On failure, fg_last_error()
 * returns a message for a person to act on ("model.gguf: tensor 'x' at byte
 * 1234: ..."); the message is per thread and stays valid until the next failing
 * call on that thread. Objects are opaque and come in _open/_close pairs; the
 * library never calls exit() and never prints unless asked to log.
 */
#ifndef FORGE_H
#define FORGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FORGE_VERSION "0.1.0"

typedef enum fg_status {
    FG_OK = 0,
    FG_ERR_INVALID_ARG,  /* a parameter is out of range or malformed */
    FG_ERR_IO,           /* a file could not be opened, read, mapped or written */
    FG_ERR_FORMAT,       /* a file is corrupt or not what it claims to be */
    FG_ERR_UNSUPPORTED,  /* valid input that forge does not implement */
    FG_ERR_NOMEM,        /* an allocation failed */
    FG_ERR_NOT_FOUND,    /* a key, tensor or token does not exist */
    FG_ERR_DEVICE,       /* the GPU runtime failed (launch, copy, driver) */
    FG_ERR_FULL,         /* a bounded resource (KV blocks, sequences, a queue) is exhausted */
    FG_ERR_TIMEOUT,      /* a wait ended before what it waited for */
} fg_status;

/* A short fixed name for a status code, e.g. "format error". */
const char *fg_status_str(fg_status st);

/* The message of this thread's most recent failure; never NULL. */
const char *fg_last_error(void);

/* The library version string, FORGE_VERSION of the build. */
const char *fg_version(void);

/* ---- Models: a GGUF file with its tokenizer ----------------------------- */

typedef struct fg_model fg_model;

/* Opens and validates a GGUF file and builds its tokenizer. The weights stay in
 * the file's mmap until a backend places them. A file whose architecture forge
 * does not run is FG_ERR_UNSUPPORTED naming it. Close with fg_model_close. */
fg_status fg_model_open(const char *path, fg_model **out);
void fg_model_close(fg_model *m);

/* Text to token ids. add_special honours the vocab's add_bos/add_eos flags;
 * parse_special matches special and added tokens written in the text as whole
 * tokens. On success *ids is a malloc'd array of *n_ids ids, freed by the caller
 * with free(). */
fg_status fg_model_tokenize(const fg_model *m, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids);

/* Token ids to text. On success *text is a malloc'd NUL-terminated string, freed
 * by the caller with free(). Special tokens are rendered only if render_special. */
fg_status fg_model_detokenize(const fg_model *m, const int32_t *ids, size_t n_ids,
                              bool render_special, char **text);

/* The number of tokens in the model's vocabulary. */
int32_t fg_model_n_vocab(const fg_model *m);

/* ---- Chat: a conversation in the model's own template ----------------- *
 *
 * forge does not run Jinja: it implements the chat templates of the model
 * families it runs, each checked byte for byte against the real template,
 * and picks a model's by markers in its tokenizer.chat_template, else by its
 * architecture, else ChatML (as llama.cpp falls back). */

typedef struct fg_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* NUL-terminated UTF-8 */
} fg_chat_msg;

typedef struct fg_chat fg_chat;

/* Chooses m's chat template: the one called name ("chatml", "llama3",
 * "gemma", ...: forge chat --chat-template) if name is not NULL, else the
 * one the model's file identifies. An unknown name is FG_ERR_INVALID_ARG
 * with a message listing the names; a template whose default system prompt
 * is over 1 KiB is FG_ERR_UNSUPPORTED. The template borrows m's vocabulary:
 * m must outlive it. Close with fg_chat_close. */
fg_status fg_chat_open(const fg_model *m, const char *name, fg_chat **out);
void fg_chat_close(fg_chat *c);

/* Renders msgs with the template and tokenizes the result for the model,
 * as the prompt of a chat completion: only the template's own markup
 * becomes control tokens, never the messages' text, whatever it spells (a
 * message saying "<|im_end|>" cannot close its turn, as in vLLM and
 * llama-server), and BOS is written once, by the template or by the
 * tokenizer. add_generation_prompt appends the opening of the assistant's
 * turn. An empty conversation, a role other than system, user and
 * assistant, or an order of roles the real template rejects is
 * FG_ERR_INVALID_ARG, quoting the template's own words. On success *ids is
 * a malloc'd array of *n_ids ids, freed by the caller with free(). */
fg_status fg_chat_tokenize(const fg_chat *c, const fg_chat_msg *msgs, size_t n_msgs, bool add_generation_prompt,
                           int32_t **ids, size_t *n_ids);

/* ---- The engine: requests served by one engine thread ------------------- *
 *
 * An fg_engine holds a model on a backend (a GPU, or the CPU) with a paged KV
 * cache, and serves requests with continuous batching: each step, one engine
 * thread runs the decodes of every running request together with chunks of
 * the prompts being prefilled, and samples each request with its own
 * parameters. Requests that share a prompt prefix share its cached KV blocks.
 *
 * Threads. Every fg_engine_* and fg_request_* call is thread-safe, except
 * fg_engine_close, which no other call may overlap or follow. The engine
 * thread is the only one that touches the backend; other threads hand it
 * submissions and cancellations through one mutex, and it applies them
 * between steps. It sleeps on a condition variable when there is nothing to
 * do.
 *
 * A request's life: fg_engine_submit queues it (QUEUED), it is admitted to
 * a step (PREFILLING, then DECODING once it has generated a token) and ends
 * FINISHED (end-of-generation token, stop string, max_tokens, full
 * context), CANCELLED (fg_request_cancel, its callback returning false,
 * fg_request_release before its end, fg_engine_close) or FAILED (the step
 * that ran it failed; the engine goes on serving the others). A request
 * that runs out of KV blocks may be preempted: it goes back to the queue
 * (QUEUED) and is recomputed later with the tokens it had; its output does
 * not change. At its end a request's KV blocks are freed in the same step
 * (full blocks stay cached for prefix reuse until evicted). Its record stays
 * until fg_request_release: release every request you submit. */

typedef struct fg_engine fg_engine;

typedef enum fg_kv_type {
    FG_KV_F16 = 0, /* as llama.cpp's default */
    FG_KV_F32,     /* exact, twice the memory (the CPU backend only) */
} fg_kv_type;

typedef struct fg_engine_config {
    const char *device;      /* "auto" (the GPU if there is one, else the CPU), "cpu", "cuda" or "hip"; NULL = auto.
                              * An explicit GPU that is missing is an error, never a CPU run */
    int32_t n_threads;       /* CPU threads, 0..1024; 0 = one per core */
    bool cpu_reference;      /* CPU: exact arithmetic (f32 activations, double sums), for tests; slow */
    int32_t ctx;             /* tokens of one sequence (prompt + generated), 0..16777216;
                              * 0 = the model's training context, at most 4096 */
    float kv_fraction;       /* (0, 1]: the share of the free memory (after the weights and activations)
                              * that the KV pool takes; default 0.9. On the CPU the pool is also capped
                              * at max_running sequences of ctx tokens */
    int64_t kv_tokens;       /* > 0: the KV pool in tokens, instead of kv_fraction (ctx..4194304);
                              * 0 = sized by kv_fraction (at most 4194304 tokens) */
    fg_kv_type kv_type;      /* FG_KV_F16 (default) or FG_KV_F32 */
    bool batch_invariant;    /* a request's tokens do not depend on what it is batched with: on a GPU,
                              * one kernel per op at every step size (slower: H100 8B Q4_0 at 64
                              * streams, 6,036 against 6,870 t/s); the CPU always is */
    int32_t max_running;     /* sequences in one step, 0..4096; 0 = 64 on a GPU, 8 on the CPU */
    int32_t max_step_tokens; /* tokens in one step (the prefill chunk), 0..65536; 0 = 512 */
    int32_t max_waiting;     /* requests queued before fg_engine_submit says FG_ERR_FULL,
                              * 0..65536; 0 = 256 */
    /* Called on the opening thread as weights are placed: bytes placed so far
     * of the model's total (a GPU upload of a large model takes seconds). */
    void (*on_load_progress)(void *ud, uint64_t done, uint64_t total);
    void *load_progress_ud;
} fg_engine_config;

/* The defaults: device auto, kv_fraction 0.9, every size 0 (automatic). */
fg_engine_config fg_engine_config_default(void);

/* Opens the GGUF file at model_path on the configured backend: places the
 * weights, sizes and allocates the KV pool and everything a step needs, and
 * starts the engine thread; nothing is allocated on the device afterwards.
 * cfg may be NULL (the defaults). A bad field is FG_ERR_INVALID_ARG naming
 * it and its range; a pool too small for one sequence of ctx tokens says by
 * how much and what to change. Close with fg_engine_close. */
fg_status fg_engine_open(const char *model_path, const fg_engine_config *cfg, fg_engine **out);

/* Stops the engine thread (requests in flight end CANCELLED, without more
 * callbacks) and frees everything, requests not yet released included. No
 * other call may overlap it or follow it, nor may a callback make it. */
void fg_engine_close(fg_engine *e);

/* The engine's model, for tokenizing prompts and detokenizing output; owned
 * by the engine. */
const fg_model *fg_engine_model(const fg_engine *e);

/* The upper bounds of fg_engine_stats.steps_by_tokens, vLLM's buckets of
 * tokens per engine step; a last bucket holds the steps above them. */
#define FG_STEP_TOKENS_BOUNDS {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
#define FG_STEP_TOKENS_BUCKETS 14

/* What the engine was opened with, and its load now: for metrics. */
typedef struct fg_engine_stats {
    /* Fixed at open. */
    char device[128];        /* "cpu", or the GPU's description */
    int32_t ctx, max_running, max_step_tokens, max_waiting;
    int64_t kv_tokens;       /* the pool: kv_blocks * block_size */
    int32_t kv_blocks, block_size;
    /* As of the engine's last step. */
    int32_t running;         /* admitted: prefilling or decoding */
    int32_t waiting;         /* queued, and preempted ones waiting to resume */
    int32_t kv_used;         /* blocks held by requests */
    int32_t kv_cached;       /* free blocks that keep a cached prefix */
    int32_t kv_free;         /* free, empty blocks */
    double ms_since_step;    /* since the engine thread last ended a step or went idle: with requests
                              * running or waiting, a large value means it is stuck (a health check) */
    /* Totals since open. */
    uint64_t steps, submitted, finished, cancelled, failed;
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    /* Added for admission and metrics (vLLM's series). */
    int32_t queued;          /* now, not as of the last step: submitted requests never yet scheduled,
                              * the count that max_waiting bounds */
    fg_kv_type kv_type;      /* fixed at open */
    uint64_t preemptions;    /* total: times a request lost its KV blocks and went back to the queue */
    uint64_t step_tokens;    /* total tokens run by the steps (prefill chunks and decodes) */
    uint64_t steps_by_tokens[FG_STEP_TOKENS_BUCKETS]; /* steps by their token count: bucket i counts those
                              * of at most FG_STEP_TOKENS_BOUNDS[i] tokens and more than the bound
                              * before; the last, those above 16384 (vLLM's iteration_tokens_total) */
} fg_engine_stats;

fg_status fg_engine_stats_get(fg_engine *e, fg_engine_stats *out);

/* ---- Requests ------------------------------------------------------------ */

/* Sampling, llama.cpp's chain: penalties, top-k, top-p, min-p, temperature.
 * See fg_sampling_default for the defaults. */
#define FG_SEED_RANDOM UINT64_MAX
/* A logit_bias entry: bias is added to the token's logit before anything
 * else looks at it (penalties, filters, temperature; as llama.cpp's chain
 * begins with it). -100 in effect bans a token, +100 all but forces it. */
typedef struct fg_logit_bias {
    int32_t token;
    float bias;
} fg_logit_bias;

typedef struct fg_sampling {
    float temperature;       /* >= 0; 0 = greedy */
    int32_t top_k;           /* >= 0; 0 = off */
    float top_p;             /* (0, 1]; 1 = off */
    float min_p;             /* [0, 1]; 0 = off */
    float repeat_penalty;    /* > 0; 1 = off */
    int32_t repeat_last_n;   /* >= 0 tokens of history the penalties look at; 0 = none */
    float presence_penalty;  /* finite; 0 = off */
    float frequency_penalty; /* finite; 0 = off */
    uint64_t seed;           /* FG_SEED_RANDOM = a fresh one (fg_request_info.seed tells which) */
    const fg_logit_bias *logit_bias; /* n_logit_bias entries (0..FG_MAX_LOGIT_BIAS), each a token in
                              * the vocabulary with a finite bias; a token given twice takes the
                              * later bias (as a JSON object's last key wins); copied. Logprobs are
                              * the model's, before the biases */
    int32_t n_logit_bias;
    bool seed_exact;         /* seed is used as given even when it is FG_SEED_RANDOM (UINT64_MAX), so that
                              * a server can take every 64-bit seed; default false */
} fg_sampling;

/* llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * no penalties (repeat_penalty 1, repeat_last_n 64), a random seed. */
fg_sampling fg_sampling_default(void);

/* A fresh seed, as a request asking for FG_SEED_RANDOM gets one: never
 * FG_SEED_RANDOM, and different from call to call, on any thread (clocks
 * and a counter, mixed; not for cryptography). */
uint64_t fg_sampling_random_seed(void);

/* Called on the engine thread with each generated token and the text that
 * became showable with it: whole UTF-8 characters, without a stop string or
 * what may still begin one (so it may be empty; an end-of-generation token
 * has none of its own). The last token's call also carries what was held
 * back until the end. Returning false cancels the request. It must not
 * block for long (every request waits for it) and must not call
 * fg_engine_close; other fg_engine and fg_request calls are allowed. */
typedef bool (*fg_token_fn)(void *ud, uint64_t id, int32_t token, const char *text, size_t len);

#define FG_REQUEST_MAX_STOPS 16
#define FG_REQUEST_MAX_STOP_LEN 1024
#define FG_MAX_TOP_LOGPROBS 20
#define FG_MAX_LOGIT_BIAS 1024 /* logit_bias entries a request may give */

typedef struct fg_request_params {
    const int32_t *prompt;   /* n_prompt >= 1 token ids, each in the vocabulary; copied */
    size_t n_prompt;
    int32_t max_tokens;      /* tokens to generate: >= 1 with n_prompt + max_tokens <= ctx,
                              * or -1 = until the context is full (default), or 0 with
                              * prompt_logprobs (score the prompt only; n_prompt < ctx) */
    fg_sampling sampling;
    const char *const *stops;/* n_stops (0..FG_REQUEST_MAX_STOPS) non-empty UTF-8 strings of at most
                              * FG_REQUEST_MAX_STOP_LEN bytes; copied. Generation stops when the text
                              * contains one, which is not output */
    int32_t n_stops;
    bool ignore_eos;         /* go on past end-of-generation tokens */
    bool logprobs;           /* keep each generated token's log-probability (fg_request_logprobs): the
                              * log-softmax of the model's logits, before penalties, filters and
                              * temperature (as vLLM and OpenAI report them). On a GPU the step then
                              * reads the logits rows on the host */
    int32_t top_logprobs;    /* with logprobs: also the 0..FG_MAX_TOP_LOGPROBS most likely tokens */
    bool prompt_logprobs;    /* also the log-probability of each prompt token given those before it
                              * (fg_request_prompt_logprobs), as OpenAI's echo with logprobs and vLLM's
                              * prompt_logprobs: the prompt is then computed whole (no prefix-cache
                              * hit), its rows read on the host */
    int32_t prompt_top_logprobs; /* with prompt_logprobs: the 0..FG_MAX_TOP_LOGPROBS most likely */
    fg_token_fn on_token;    /* NULL: poll instead (fg_request_poll) */
    void *ud;                /* on_token's first argument */
} fg_request_params;

/* No prompt, max_tokens -1, fg_sampling_default, no stops, no callback. */
fg_request_params fg_request_params_default(void);

/* Queues a request; *id identifies it until fg_request_release. Checked here,
 * each failing with FG_ERR_INVALID_ARG and a message naming the parameter:
 * an empty prompt, a token outside the vocabulary, a prompt or prompt +
 * max_tokens longer than the context, sampling values out of range, bad stop
 * strings. FG_ERR_FULL when max_waiting requests are already queued: retry
 * later (an HTTP server answers 429/503). */
fg_status fg_engine_submit(fg_engine *e, const fg_request_params *p, uint64_t *id);

typedef enum fg_request_state {
    FG_REQUEST_QUEUED,
    FG_REQUEST_PREFILLING,
    FG_REQUEST_DECODING,
    FG_REQUEST_FINISHED,
    FG_REQUEST_CANCELLED,
    FG_REQUEST_FAILED,
} fg_request_state;

typedef enum fg_finish_reason {
    FG_FINISH_NONE,      /* not ended */
    FG_FINISH_EOS,       /* an end-of-generation token (it is the last of the tokens) */
    FG_FINISH_STOP,      /* a stop string (its token is the last; the string is not in the text) */
    FG_FINISH_LENGTH,    /* max_tokens */
    FG_FINISH_CONTEXT,   /* max_tokens -1, and the context is full */
    FG_FINISH_CANCELLED,
    FG_FINISH_ERROR,     /* FAILED: see error */
} fg_finish_reason;

const char *fg_request_state_str(fg_request_state s);
/* "eos", "stop string", "length", "context full", "cancelled", "error" ("" for
 * none): the names forge prints (forge run's "stop:"); an HTTP server maps
 * the reasons onto its API's own (OpenAI's "stop", "length", ...). */
const char *fg_finish_reason_str(fg_finish_reason r);

typedef struct fg_request_info {
    fg_request_state state;
    fg_finish_reason finish;
    int32_t n_prompt;        /* prompt tokens */
    int32_t n_cached;        /* of those, found in the prefix cache (not computed) */
    int32_t n_gen;           /* generated so far */
    int32_t n_preempted;     /* times it lost its KV blocks and was recomputed */
    uint64_t seed;           /* the sampling seed in use (the one picked for FG_SEED_RANDOM) */
    /* Milliseconds from submission; -1 where it has not happened yet. */
    double queue_ms;         /* to the start of the first step that ran it */
    double ttft_ms;          /* to its first generated token */
    double decode_ms_per_token; /* mean time between generated tokens, after the first (0 before two) */
    double total_ms;         /* to its end (so far, while it runs) */
    char error[256];         /* FAILED: why; else empty */
} fg_request_info;

/* A snapshot of the request's state, counts and timings. FG_ERR_NOT_FOUND for
 * an unknown or released id. */
fg_status fg_request_status(fg_engine *e, uint64_t id, fg_request_info *out);

/* Takes the output generated since the last poll: up to cap_tokens token ids
 * into tokens (*n_tokens set) and, for a request without a callback, up to
 * cap_text bytes of its text into text (*n_text set; whole UTF-8 characters,
 * not NUL-terminated, so give cap_text >= 4). What does not fit stays for
 * the next poll. Either buffer may be NULL (with cap 0) to leave that
 * stream alone. */
fg_status fg_request_poll(fg_engine *e, uint64_t id, int32_t *tokens, size_t cap_tokens, size_t *n_tokens,
                          char *text, size_t cap_text, size_t *n_text);

/* One generated token's log-probability and the top_logprobs most likely
 * tokens at its position (most likely first), as fg_request_params.logprobs
 * asks. */
typedef struct fg_token_logprob {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_token[FG_MAX_TOP_LOGPROBS];
    float top_logprob[FG_MAX_TOP_LOGPROBS];
} fg_token_logprob;

/* Copies the log-probabilities of generated tokens first, first+1, ... (up to
 * cap of them, and only tokens already generated) into out; *n is set to how
 * many. Independent of fg_request_poll. FG_ERR_INVALID_ARG for a request
 * submitted without logprobs. */
fg_status fg_request_logprobs(fg_engine *e, uint64_t id, size_t first, fg_token_logprob *out, size_t cap, size_t *n);

/* Copies the log-probabilities of prompt tokens first + 1, first + 2, ...
 * (entry k is prompt token first + 1 + k's given those before it; token 0
 * has no context), up to cap of the n_prompt - 1, into out; *n is set to
 * how many: 0 until the prompt has been computed (the request's first
 * token, or its end with max_tokens 0). FG_ERR_INVALID_ARG for a request
 * submitted without prompt_logprobs. */
fg_status fg_request_prompt_logprobs(fg_engine *e, uint64_t id, size_t first, fg_token_logprob *out, size_t cap,
                                     size_t *n);

/* Blocks until the request has output not yet polled or has ended, or until
 * timeout_ms pass (FG_ERR_TIMEOUT; < 0 waits without limit). No busy
 * waiting: the engine thread signals after each step. */
fg_status fg_request_wait(fg_engine *e, uint64_t id, int32_t timeout_ms);

/* Cancels a request: it is CANCELLED when this returns and its KV blocks are
 * freed before the engine's next step. A request that has already ended is
 * left as it is (FG_OK). FG_ERR_NOT_FOUND for an unknown id. */
fg_status fg_request_cancel(fg_engine *e, uint64_t id);

/* Forgets a request: its id becomes unknown. One that has not ended is
 * cancelled first (a client that went away). */
fg_status fg_request_release(fg_engine *e, uint64_t id);

#ifdef __cplusplus
}
#endif
#endif /* FORGE_H */
