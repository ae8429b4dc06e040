/*
 * kvcache.c — the paged KV cache's block bookkeeping (kvcache.h): block
 * tables, reference counts with copy-on-write, prefix caching by chained
 * block hashes, and LRU eviction of cached free blocks.
 *
 * Every block is in exactly one state:
 *   used    ref > 0: in the table of one or more sequences;
 *   cached  ref = 0, full and in the hash index: on the LRU list, reusable
 *           by a prefix hit until evicted;
 *   free    ref = 0, not indexed: on the free stack.
 * Allocation pops the free stack, else evicts the LRU list's oldest block.
 *
 * The hash index maps a block hash to the block holding it (open
 * addressing, linear probing, backward-shift deletion so no tombstones pile
 * up). A block joins it when it fills, unless an equal block is already
 * there, and leaves it when evicted.
 */
#include "runtime/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

struct fg_kvcache {
    int32_t n_blocks, block_size, max_seqs, max_bps;

    /* Blocks. */
    int32_t *ref;      /* (n_blocks) references from sequence tables */
    uint64_t *hash;    /* (n_blocks) hash of the block's tokens and all before (if indexed) */
    uint64_t *parent;  /* (n_blocks) hash of the block before it in its sequence, 0 for a first block */
    uint8_t *indexed;  /* (n_blocks) in the hash index */
    int32_t *tokens;   /* (n_blocks, block_size) the tokens written to each block */
    int32_t *prev, *next; /* (n_blocks) LRU list of cached blocks: head oldest, tail newest; -1 ends */
    int32_t lru_head, lru_tail, n_cached;
    int32_t *free_stack; /* (n_blocks) */
    int32_t n_free;

    /* Hash index: slot -> block, -1 empty; capacity a power of two >= 2 n_blocks. */
    int32_t *index;
    uint32_t index_mask;

    /* Sequences. */
    uint8_t *live;       /* (max_seqs) */
    int32_t *len;        /* (max_seqs) tokens */
    int32_t *n_tbl;      /* (max_seqs) blocks in the table */
    int32_t *table;      /* (max_seqs, max_bps) */
    uint64_t *chain;     /* (max_seqs) hash of the sequence's last full block, 0 before the first */
    int32_t n_live;

    uint64_t prefix_queries, prefix_hits;
};

/* ---- Hashing ------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* The hash of a block of tokens whose predecessor hashed to parent (0 for
 * none); never 0. */
static uint64_t block_hash(uint64_t parent, const int32_t *tok, int32_t n)
{
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)tok[i]) * 0x100000001b3ull;
    h = mix64(h);
    return h ? h : 1;
}

static uint32_t index_slot(const fg_kvcache *c, uint64_t h)
{
    return (uint32_t)h & c->index_mask;
}

/* The indexed block with hash h, parent hash parent and these tokens, or -1. */
static int32_t index_find(const fg_kvcache *c, uint64_t h, uint64_t parent, const int32_t *tok)
{
    for (uint32_t s = index_slot(c, h);; s = (s + 1) & c->index_mask) {
        int32_t b = c->index[s];
        if (b < 0) return -1;
        if (c->hash[b] == h && c->parent[b] == parent &&
            memcmp(c->tokens + (size_t)b * (size_t)c->block_size, tok, (size_t)c->block_size * sizeof *tok) == 0)
            return b;
    }
}

static void index_insert(fg_kvcache *c, int32_t b)
{
    uint32_t s = index_slot(c, c->hash[b]);
    while (c->index[s] >= 0) s = (s + 1) & c->index_mask;
    c->index[s] = b;
    c->indexed[b] = 1;
}

/* Removes b, shifting later entries of its probe run back so that every
 * entry stays reachable from its home slot. */
static void index_remove(fg_kvcache *c, int32_t b)
{
    uint32_t s = index_slot(c, c->hash[b]);
    while (c->index[s] != b) s = (s + 1) & c->index_mask;
    c->index[s] = -1;
    for (uint32_t j = (s + 1) & c->index_mask; c->index[j] >= 0; j = (j + 1) & c->index_mask) {
        uint32_t home = index_slot(c, c->hash[c->index[j]]);
        /* The entry at j may move to the hole at s if its home is not in (s, j]. */
        bool stays = s <= j ? (home > s && home <= j) : (home > s || home <= j);
        if (!stays) {
            c->index[s] = c->index[j];
            c->index[j] = -1;
            s = j;
        }
    }
    c->indexed[b] = 0;
}

/* ---- Blocks -------------------------------------------------------------- */

static void lru_unlink(fg_kvcache *c, int32_t b)
{
    if (c->prev[b] >= 0) c->next[c->prev[b]] = c->next[b];
    else c->lru_head = c->next[b];
    if (c->next[b] >= 0) c->prev[c->next[b]] = c->prev[b];
    else c->lru_tail = c->prev[b];
    c->prev[b] = c->next[b] = -1;
    c->n_cached--;
}

static void lru_push(fg_kvcache *c, int32_t b)
{
    c->prev[b] = c->lru_tail;
    c->next[b] = -1;
    if (c->lru_tail >= 0) c->next[c->lru_tail] = b;
    else c->lru_head = b;
    c->lru_tail = b;
    c->n_cached++;
}

/* A block for writing, with one reference: a free one, else the least
 * recently cached one (evicted from the index). The caller has checked that
 * one exists. */
static int32_t block_take(fg_kvcache *c)
{
    int32_t b;
    if (c->n_free > 0) {
        b = c->free_stack[--c->n_free];
    } else {
        b = c->lru_head;
        FG_ASSERT(b >= 0);
        lru_unlink(c, b);
        index_remove(c, b);
    }
    c->ref[b] = 1;
    c->parent[b] = 0;
    return b;
}

static void block_release(fg_kvcache *c, int32_t b)
{
    FG_ASSERT(c->ref[b] > 0);
    if (--c->ref[b] > 0) return;
    if (c->indexed[b]) lru_push(c, b);
    else c->free_stack[c->n_free++] = b;
}

/* A cached block gains a reference (a prefix hit). */
static void block_attach(fg_kvcache *c, int32_t b)
{
    if (c->ref[b] == 0) lru_unlink(c, b);
    c->ref[b]++;
}

/* ---- Set-up -------------------------------------------------------------- */

fg_status fg_kvcache_init(int32_t n_blocks, int32_t block_size, int32_t max_seqs, int32_t max_blocks_per_seq,
                          fg_kvcache **out)
{
    *out = NULL;
    if (n_blocks < 1 || block_size < 1 || max_seqs < 1 || max_blocks_per_seq < 1 || n_blocks > (1 << 28))
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "kv cache: %d blocks of %d tokens for %d sequences of up to %d blocks is not a valid pool",
                          n_blocks, block_size, max_seqs, max_blocks_per_seq);
    fg_kvcache *c = calloc(1, sizeof *c);
    if (!c) return fg_err_set(FG_ERR_NOMEM, "kv cache: out of memory");
    c->n_blocks = n_blocks, c->block_size = block_size, c->max_seqs = max_seqs, c->max_bps = max_blocks_per_seq;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks) cap <<= 1;
    c->index_mask = cap - 1;
    size_t nb = (size_t)n_blocks, ns = (size_t)max_seqs;
    c->ref = calloc(nb, sizeof *c->ref);
    c->hash = calloc(nb, sizeof *c->hash);
    c->parent = calloc(nb, sizeof *c->parent);
    c->indexed = calloc(nb, 1);
    c->tokens = malloc(nb * (size_t)block_size * sizeof *c->tokens);
    c->prev = malloc(nb * sizeof *c->prev);
    c->next = malloc(nb * sizeof *c->next);
    c->free_stack = malloc(nb * sizeof *c->free_stack);
    c->index = malloc((size_t)cap * sizeof *c->index);
    c->live = calloc(ns, 1);
    c->len = calloc(ns, sizeof *c->len);
    c->n_tbl = calloc(ns, sizeof *c->n_tbl);
    c->table = malloc(ns * (size_t)max_blocks_per_seq * sizeof *c->table);
    c->chain = calloc(ns, sizeof *c->chain);
    if (!c->ref || !c->hash || !c->parent || !c->indexed || !c->tokens || !c->prev || !c->next || !c->free_stack ||
        !c->index || !c->live || !c->len || !c->n_tbl || !c->table || !c->chain) {
        fg_kvcache_free(c);
        return fg_err_set(FG_ERR_NOMEM, "kv cache: out of memory for %d blocks and %d sequences", n_blocks, max_seqs);
    }
    for (uint32_t i = 0; i < cap; i++) c->index[i] = -1;
    for (int32_t b = 0; b < n_blocks; b++) {
        c->prev[b] = c->next[b] = -1;
        c->free_stack[b] = n_blocks - 1 - b; /* block 0 is taken first */
    }
    c->n_free = n_blocks;
    c->lru_head = c->lru_tail = -1;
    *out = c;
    return FG_OK;
}

void fg_kvcache_free(fg_kvcache *c)
{
    if (!c) return;
    free(c->ref), free(c->hash), free(c->parent), free(c->indexed), free(c->tokens);
    free(c->prev), free(c->next), free(c->free_stack), free(c->index);
    free(c->live), free(c->len), free(c->n_tbl), free(c->table), free(c->chain);
    free(c);
}

/* ---- Sequences ----------------------------------------------------------- */

static int32_t *seq_table(const fg_kvcache *c, int32_t seq)
{
    return c->table + (size_t)seq * (size_t)c->max_bps;
}

static void check_seq(const fg_kvcache *c, int32_t seq)
{
    FG_ASSERT(seq >= 0 && seq < c->max_seqs && c->live[seq]);
}

fg_status fg_kvcache_seq_new(fg_kvcache *c, int32_t *seq)
{
    for (int32_t s = 0; s < c->max_seqs; s++) {
        if (c->live[s]) continue;
        c->live[s] = 1;
        c->len[s] = c->n_tbl[s] = 0;
        c->chain[s] = 0;
        c->n_live++;
        *seq = s;
        return FG_OK;
    }
    return fg_err_set(FG_ERR_FULL, "kv cache: all %d sequences are in use", c->max_seqs);
}

void fg_kvcache_seq_free(fg_kvcache *c, int32_t seq)
{
    check_seq(c, seq);
    const int32_t *t = seq_table(c, seq);
    for (int32_t i = c->n_tbl[seq] - 1; i >= 0; i--) block_release(c, t[i]); /* later blocks evict first */
    c->live[seq] = 0;
    c->len[seq] = c->n_tbl[seq] = 0;
    c->n_live--;
}

int32_t fg_kvcache_match_prefix(fg_kvcache *c, int32_t seq, const int32_t *tokens, int32_t n)
{
    check_seq(c, seq);
    FG_ASSERT(c->len[seq] == 0);
    const int32_t bs = c->block_size;
    int32_t *t = seq_table(c, seq), nb = 0;
    uint64_t h = 0;
    c->prefix_queries += n > 0 ? (uint64_t)n : 0;
    while ((nb + 1) * bs <= n - 1 && nb < c->max_bps) { /* the last token is always computed */
        const int32_t *tok = tokens + (size_t)nb * (size_t)bs;
        uint64_t hb = block_hash(h, tok, bs);
        int32_t b = index_find(c, hb, h, tok);
        if (b < 0) break;
        block_attach(c, b);
        t[nb++] = b;
        h = hb;
    }
    c->n_tbl[seq] = nb;
    c->len[seq] = nb * bs;
    c->chain[seq] = h;
    c->prefix_hits += (uint64_t)nb * (uint64_t)bs;
    return nb * bs;
}

/* Blocks that appending n tokens takes from the pool: new blocks, plus a
 * copy of a shared, partly filled last block. */
static int32_t blocks_needed(const fg_kvcache *c, int32_t seq, int32_t n)
{
    const int32_t bs = c->block_size, len = c->len[seq];
    int32_t need = (len + n + bs - 1) / bs - (len + bs - 1) / bs;
    if (n > 0 && len % bs != 0 && c->ref[seq_table(c, seq)[c->n_tbl[seq] - 1]] > 1) need++;
    return need;
}

bool fg_kvcache_can_append(const fg_kvcache *c, int32_t seq, int32_t n)
{
    return n <= fg_kvcache_room(c, seq);
}

int32_t fg_kvcache_room(const fg_kvcache *c, int32_t seq)
{
    check_seq(c, seq);
    const int32_t bs = c->block_size, len = c->len[seq];
    int64_t room = (int64_t)(c->n_free + c->n_cached) * bs;
    if (len % bs != 0) {
        if (c->ref[seq_table(c, seq)[c->n_tbl[seq] - 1]] == 1) room += bs - len % bs;
        else room += bs - len % bs - bs; /* the copy takes one of the free blocks */
    }
    int64_t limit = (int64_t)c->max_bps * bs - len;
    if (room > limit) room = limit;
    return room > 0 ? (int32_t)room : 0;
}

int32_t fg_kvcache_max_blocks(const fg_kvcache *c)
{
    return c->max_bps;
}

int32_t fg_kvcache_block_size(const fg_kvcache *c)
{
    return c->block_size;
}

fg_status fg_kvcache_append(fg_kvcache *c, int32_t seq, const int32_t *tokens, int32_t n, int32_t *slots,
                            fg_kv_copy *copies, int32_t *n_copies)
{
    check_seq(c, seq);
    FG_ASSERT(n >= 0);
    const int32_t bs = c->block_size;
    if ((c->len[seq] + n + bs - 1) / bs > c->max_bps)
        return fg_err_set(FG_ERR_FULL, "kv cache: a sequence of %d tokens exceeds the %d a sequence may hold",
                          c->len[seq] + n, c->max_bps * bs);
    int32_t need = blocks_needed(c, seq, n);
    if (need > c->n_free + c->n_cached)
        return fg_err_set(FG_ERR_FULL, "kv cache: %d more blocks are needed and %d are free", need,
                          c->n_free + c->n_cached);
    int32_t *t = seq_table(c, seq);
    if (n > 0 && c->len[seq] % bs != 0) {
        int32_t last = t[c->n_tbl[seq] - 1];
        if (c->ref[last] > 1) { /* copy-on-write: this sequence gets its own copy */
            int32_t b = block_take(c);
            memcpy(c->tokens + (size_t)b * (size_t)bs, c->tokens + (size_t)last * (size_t)bs,
                   (size_t)(c->len[seq] % bs) * sizeof *c->tokens);
            c->ref[last]--; /* still >= 1: another sequence holds it */
            t[c->n_tbl[seq] - 1] = b;
            copies[(*n_copies)++] = (fg_kv_copy){last, b};
        }
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t pos = c->len[seq], off = pos % bs;
        if (off == 0) t[c->n_tbl[seq]++] = block_take(c);
        int32_t b = t[pos / bs];
        c->tokens[(size_t)b * (size_t)bs + (size_t)off] = tokens[i];
        slots[i] = b * bs + off;
        c->len[seq] = pos + 1;
        if (off == bs - 1) { /* the block is full: hash it, and index it unless an equal one is */
            const int32_t *tok = c->tokens + (size_t)b * (size_t)bs;
            uint64_t h = block_hash(c->chain[seq], tok, bs);
            if (index_find(c, h, c->chain[seq], tok) < 0) {
                c->hash[b] = h;
                c->parent[b] = c->chain[seq];
                index_insert(c, b);
            }
            c->chain[seq] = h;
        }
    }
    return FG_OK;
}

void fg_kvcache_seq_uncompute(fg_kvcache *c, int32_t seq, int32_t pos)
{
    check_seq(c, seq);
    FG_ASSERT(pos >= 0);
    const int32_t *t = seq_table(c, seq);
    for (int32_t i = pos / c->block_size; i < c->n_tbl[seq]; i++)
        if (c->indexed[t[i]]) index_remove(c, t[i]); /* held by this sequence, so not on the LRU list */
}

fg_status fg_kvcache_fork(fg_kvcache *c, int32_t seq, int32_t *out)
{
    check_seq(c, seq);
    int32_t s;
    FG_TRY(fg_kvcache_seq_new(c, &s));
    const int32_t *t = seq_table(c, seq);
    int32_t *u = seq_table(c, s);
    for (int32_t i = 0; i < c->n_tbl[seq]; i++) {
        u[i] = t[i];
        c->ref[t[i]]++;
    }
    c->n_tbl[s] = c->n_tbl[seq];
    c->len[s] = c->len[seq];
    c->chain[s] = c->chain[seq];
    *out = s;
    return FG_OK;
}

int32_t fg_kvcache_seq_len(const fg_kvcache *c, int32_t seq)
{
    check_seq(c, seq);
    return c->len[seq];
}

const int32_t *fg_kvcache_table(const fg_kvcache *c, int32_t seq, int32_t *n_blocks)
{
    check_seq(c, seq);
    *n_blocks = c->n_tbl[seq];
    return seq_table(c, seq);
}

void fg_kvcache_usage_get(const fg_kvcache *c, fg_kvcache_usage *u)
{
    *u = (fg_kvcache_usage){.n_blocks = c->n_blocks, .used = c->n_blocks - c->n_free - c->n_cached,
                            .cached = c->n_cached, .free = c->n_free, .n_seqs = c->n_live,
                            .prefix_queries = c->prefix_queries, .prefix_hits = c->prefix_hits};
}

/* ---- Invariants (tests) -------------------------------------------------- */

bool fg_kvcache_check(const fg_kvcache *c)
{
    int32_t nb = c->n_blocks, *refs = calloc((size_t)nb, sizeof *refs);
    uint8_t *where = calloc((size_t)nb, 1); /* 1 used, 2 cached, 3 free */
    bool ok = refs && where;
    int32_t live = 0;
    for (int32_t s = 0; ok && s < c->max_seqs; s++) {
        if (!c->live[s]) continue;
        live++;
        const int32_t *t = seq_table(c, s);
        ok = c->n_tbl[s] == (c->len[s] + c->block_size - 1) / c->block_size;
        for (int32_t i = 0; ok && i < c->n_tbl[s]; i++) ok = t[i] >= 0 && t[i] < nb && ++refs[t[i]] > 0;
    }
    ok = ok && live == c->n_live;
    for (int32_t b = 0; ok && b < nb; b++) {
        ok = refs[b] == c->ref[b];
        if (c->ref[b] > 0) where[b] = 1;
    }
    int32_t n_lru = 0;
    for (int32_t b = c->lru_head, p = -1; ok && b >= 0; p = b, b = c->next[b]) {
        ok = where[b] == 0 && c->ref[b] == 0 && c->indexed[b] && c->prev[b] == p && ++n_lru <= nb;
        where[b] = 2;
    }
    ok = ok && n_lru == c->n_cached;
    for (int32_t i = 0; ok && i < c->n_free; i++) {
        int32_t b = c->free_stack[i];
        ok = b >= 0 && b < nb && where[b] == 0 && !c->indexed[b] && c->ref[b] == 0;
        if (ok) where[b] = 3;
    }
    for (int32_t b = 0; ok && b < nb; b++) ok = where[b] != 0;
    /* The index holds exactly the indexed blocks, each findable. */
    int32_t n_idx = 0;
    for (uint32_t s = 0; ok && s <= c->index_mask; s++) {
        int32_t b = c->index[s];
        if (b < 0) continue;
        n_idx++;
        ok = c->indexed[b] && index_find(c, c->hash[b], c->parent[b], c->tokens + (size_t)b * (size_t)c->block_size) >= 0;
    }
    for (int32_t b = 0; ok && b < nb; b++) n_idx -= c->indexed[b];
    ok = ok && n_idx == 0;
    free(refs);
    free(where);
    return ok;
}
