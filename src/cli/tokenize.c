/*
 * tokenize.c — `forge tokenize MODEL TEXT`: token ids and pieces of a text.
 *
 * Each token prints as "id -> 'piece'", where the piece is the bytes the token
 * stands for (escaped where not printable). --ids prints just the id list,
 * --json an array of {id, piece} objects. --chat first renders the text as a
 * user message with the model's chat template (or --chat-template NAME), so
 * what is shown is exactly what the model would be given.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static void help(void)
{
    printf("usage: forge tokenize [options] [MODEL] TEXT\n"
           "       forge tokenize [options] -m MODEL (-f FILE | --stdin | TEXT)\n\n"
           "Tokenizes TEXT with the model's tokenizer and prints each token's id and piece.\n\n"
           "options:\n"
           "  -m, --model PATH       the model (default: %s)\n"
           "  -f, --file FILE        read the text from FILE\n"
           "      --stdin            read the text from standard input\n"
           "      --no-bos           do not add BOS/EOS even if the model asks for them\n"
           "      --no-parse-special treat special-token text like <|im_start|> as plain text\n"
           "      --ids              print only the ids, as [1, 2, 3]\n"
           "      --chat             render TEXT as a user turn with the chat template first\n"
           "      --system TEXT      with --chat: a system message before it\n"
           "      --chat-template NAME  with --chat: use this template instead of the model's\n"
           "                         (chatml, qwen3, llama3, llama3.1, gemma, glm4, mistral, ...)\n"
           "      --print-prompt     with --chat: print the rendered prompt instead of tokens\n"
           "      --json             print a JSON array of {\"id\", \"piece\"}\n"
           "  -h, --help             show this help\n",
           fg_cli_default_model());
}

/* Writes bytes escaped for one line: printable UTF-8 as is, the rest as \xNN. */
static void print_escaped(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\'') fputs("\\'", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
}

int fg_cli_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"file", required_argument, 0, 'f'},
        {"stdin", no_argument, 0, 's'},        {"no-bos", no_argument, 0, 'b'},
        {"no-parse-special", no_argument, 0, 'p'}, {"ids", no_argument, 0, 'i'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {"chat", no_argument, 0, 'c'},         {"system", required_argument, 0, 'S'},
        {"chat-template", required_argument, 0, 'T'}, {"print-prompt", no_argument, 0, 'P'},
        {0, 0, 0, 0},
    };
    const char *path = NULL, *file = NULL;
    bool from_stdin = false, add_special = true, parse_special = true, ids_only = false, json = false;
    bool chat = false, print_prompt = false;
    const char *system = NULL, *tmpl_name = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'f': file = optarg; break;
        case 's': from_stdin = true; break;
        case 'b': add_special = false; break;
        case 'p': parse_special = false; break;
        case 'i': ids_only = true; break;
        case 'j': json = true; break;
        case 'c': chat = true; break;
        case 'S': system = optarg; break;
        case 'T': tmpl_name = optarg; break;
        case 'P': print_prompt = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("tokenize", "unknown option");
        }
    }
    int npos = argc - optind;
    const char *text_arg = NULL;
    bool have_text_source = file || from_stdin;
    if (!path && npos == 2 && !have_text_source) {
        path = argv[optind];
        text_arg = argv[optind + 1];
    } else if (npos == 1 && !have_text_source) {
        text_arg = argv[optind];
    } else if (npos == 1 && !path && have_text_source) {
        path = argv[optind];
    } else if (npos != 0 || !have_text_source) {
        return fg_cli_usage_error("tokenize", "give MODEL and TEXT (or -f FILE / --stdin)");
    }
    if (file && from_stdin) return fg_cli_usage_error("tokenize", "-f and --stdin exclude each other");
    if ((system || tmpl_name || print_prompt) && !chat)
        return fg_cli_usage_error("tokenize", "--system, --chat-template and --print-prompt need --chat");
    if (!path) path = fg_cli_default_model();

    char *text;
    size_t len;
    if (text_arg) {
        text = strdup(text_arg);
        len = strlen(text_arg);
        if (!text) {
            fprintf(stderr, "forge: error: out of memory\n");
            return 1;
        }
    } else {
        fg_status rst = fg_cli_read_file(from_stdin ? NULL : file, &text, &len);
        if (rst != FG_OK) return fg_cli_fail(rst);
    }

    fg_gguf *g = NULL;
    fg_tokenizer *tok = NULL;
    fg_tokens ids = {0};
    fg_status st = fg_gguf_open(path, &g);
    if (st == FG_OK) st = fg_tok_load(g, &tok);
    if (st == FG_OK && chat) {
        fg_chat_tmpl tmpl;
        fg_chat_msg msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (fg_chat_msg){"system", system};
        msgs[n++] = (fg_chat_msg){"user", text};
        char *prompt = NULL;
        st = fg_model_chat_template(g, tok, tmpl_name, &tmpl, NULL);
        if (st == FG_OK) st = fg_chat_apply(&tmpl, msgs, n, true, &prompt);
        if (st == FG_OK) {
            free(text);
            text = prompt;
            len = strlen(prompt);
        }
        if (st == FG_OK && print_prompt) {
            fwrite(text, 1, len, stdout);
            fg_tok_free(tok);
            fg_gguf_close(g);
            free(text);
            return 0;
        }
    }
    if (st == FG_OK) st = fg_tok_encode(tok, text, len, add_special, parse_special, &ids);
    if (st != FG_OK) {
        fg_tokens_free(&ids);
        fg_tok_free(tok);
        fg_gguf_close(g);
        free(text);
        return fg_cli_fail(st);
    }

    char piece[1024];
    if (ids_only) {
        printf("[");
        for (size_t i = 0; i < ids.n; i++) printf(i ? ", %d" : "%d", ids.ids[i]);
        printf("]\n");
    } else if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < ids.n; i++) {
            size_t n = fg_tok_token_bytes(tok, ids.ids[i], true, piece, sizeof piece - 1);
            if (n > sizeof piece - 1) n = sizeof piece - 1;
            piece[n] = 0;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "id", ids.ids[i]);
            /* Pieces may hold part of a UTF-8 character; cJSON writes bytes as
             * they are, so the consumer sees exactly the token's bytes. */
            cJSON_AddStringToObject(e, "piece", piece);
            cJSON_AddItemToArray(arr, e);
        }
        char *s = cJSON_Print(arr);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(arr);
    } else {
        for (size_t i = 0; i < ids.n; i++) {
            size_t n = fg_tok_token_bytes(tok, ids.ids[i], true, piece, sizeof piece);
            printf("%6d -> '", ids.ids[i]);
            print_escaped(stdout, piece, n < sizeof piece ? n : sizeof piece);
            printf("'\n");
        }
        fprintf(stderr, "%zu tokens\n", ids.n);
    }
    fg_tokens_free(&ids);
    fg_tok_free(tok);
    fg_gguf_close(g);
    free(text);
    return 0;
}
