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
 * the file's mmap until a backend places them. Close with fg_model_close. */
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

#ifdef __cplusplus
}
#endif
#endif /* FORGE_H */
