/*
 * test_kvcache.c — the paged KV cache's bookkeeping (runtime/kvcache.c):
 * append and read back, free, fork with copy-on-write, prefix hits (and
 * misses on a changed token, a changed earlier block, a hash collision's
 * stored-token check), LRU eviction order, running out of blocks, and a
 * random workload of thousands of operations checked against a model of
 * what each sequence holds, with every invariant checked after each step.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kvcache.h"

enum { BS = 16 };

static fg_kvcache *mk(int32_t n_blocks, int32_t max_seqs, int32_t max_bps)
{
    fg_kvcache *c;
    cr_assert_eq(fg_kvcache_init(n_blocks, BS, max_seqs, max_bps, &c), FG_OK, "%s", fg_last_error());
    return c;
}

static int32_t seq_new(fg_kvcache *c)
{
    int32_t s;
    cr_assert_eq(fg_kvcache_seq_new(c, &s), FG_OK, "%s", fg_last_error());
    return s;
}

/* Appends n tokens; returns the copies reported. */
static int32_t append(fg_kvcache *c, int32_t s, const int32_t *tok, int32_t n, int32_t *slots, fg_kv_copy *cp)
{
    int32_t n_cp = 0;
    cr_assert_eq(fg_kvcache_append(c, s, tok, n, slots, cp, &n_cp), FG_OK, "%s", fg_last_error());
    cr_assert(fg_kvcache_check(c));
    return n_cp;
}

static void seq_tokens(int32_t *t, int32_t n, int32_t salt)
{
    for (int32_t i = 0; i < n; i++) t[i] = (i * 7 + salt * 131) % 1000;
}

Test(kvcache, append_gives_each_token_a_slot_in_its_blocks)
{
    fg_kvcache *c = mk(16, 4, 8);
    int32_t a = seq_new(c), b = seq_new(c), tok[40], slots[48];
    fg_kv_copy cp[2];
    seq_tokens(tok, 40, 1);
    append(c, a, tok, 20, slots, cp);
    append(c, b, tok, 5, slots + 20, cp);
    append(c, a, tok + 20, 20, slots + 25, cp);
    int32_t n, nb;
    const int32_t *ta = fg_kvcache_table(c, a, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(fg_kvcache_seq_len(c, a), 40);
    for (int32_t i = 0; i < 40; i++) {
        int32_t s = i < 20 ? slots[i] : slots[i + 5];
        cr_assert_eq(s, ta[i / BS] * BS + i % BS, "token %d of a has slot %d", i, s);
    }
    const int32_t *tb = fg_kvcache_table(c, b, &nb);
    cr_assert_eq(nb, 1);
    for (int32_t i = 0; i < 3; i++) cr_assert_neq(ta[i], tb[0], "sequences share no block");
    fg_kvcache_usage u;
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.used, 4);
    cr_assert_eq(u.n_seqs, 2);
    fg_kvcache_seq_free(c, a);
    fg_kvcache_seq_free(c, b);
    cr_assert(fg_kvcache_check(c));
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.used, 0);
    cr_assert_eq(u.cached + u.free, 16);
    cr_assert_eq(u.cached, 2, "a's two full blocks stay cached");
    fg_kvcache_free(c);
}

Test(kvcache, fork_shares_blocks_and_copies_on_write)
{
    fg_kvcache *c = mk(16, 4, 8);
    int32_t a = seq_new(c), tok[40], slots[40];
    fg_kv_copy cp[2];
    seq_tokens(tok, 40, 2);
    append(c, a, tok, 20, slots, cp); /* one full block, one with 4 tokens */
    int32_t b;
    cr_assert_eq(fg_kvcache_fork(c, a, &b), FG_OK);
    cr_assert(fg_kvcache_check(c));
    int32_t na, nb;
    const int32_t *ta = fg_kvcache_table(c, a, &na);
    int32_t a0 = ta[0], a1 = ta[1];
    /* b writes into the shared partial block: it gets a copy. */
    cr_assert_eq(append(c, b, tok + 20, 3, slots, cp), 1);
    cr_assert_eq(cp[0].src, a1);
    const int32_t *tb = fg_kvcache_table(c, b, &nb);
    cr_assert_eq(tb[0], a0, "the full block stays shared");
    cr_assert_eq(tb[1], cp[0].dst);
    cr_assert_neq(tb[1], a1);
    cr_assert_eq(slots[0], cp[0].dst * BS + 4);
    /* a's block is its own again: no copy. */
    cr_assert_eq(append(c, a, tok + 20, 3, slots, cp), 0);
    cr_assert_eq(slots[0], a1 * BS + 4);
    /* A fork at a block boundary needs no copy either. */
    int32_t d;
    append(c, a, tok + 23, 9, slots, cp); /* a: 32 tokens, two full blocks */
    cr_assert_eq(fg_kvcache_fork(c, a, &d), FG_OK);
    cr_assert_eq(append(c, d, tok, 1, slots, cp), 0);
    fg_kvcache_seq_free(c, a), fg_kvcache_seq_free(c, b), fg_kvcache_seq_free(c, d);
    cr_assert(fg_kvcache_check(c));
    fg_kvcache_usage u;
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.used, 0);
    fg_kvcache_free(c);
}

Test(kvcache, prefix_hits_skip_cached_blocks)
{
    fg_kvcache *c = mk(32, 4, 16);
    int32_t tok[100], slots[100];
    fg_kv_copy cp[2];
    seq_tokens(tok, 100, 3);
    int32_t a = seq_new(c);
    cr_assert_eq(fg_kvcache_match_prefix(c, a, tok, 100), 0, "nothing cached yet");
    append(c, a, tok, 100, slots, cp);
    int32_t n;
    int32_t first[6];
    memcpy(first, fg_kvcache_table(c, a, &n), sizeof first);
    fg_kvcache_seq_free(c, a);

    /* The same 100 tokens: six full blocks (96 tokens) attach, the rest is
     * computed (at least the last token always is). */
    int32_t b = seq_new(c);
    cr_assert_eq(fg_kvcache_match_prefix(c, b, tok, 100), 96);
    cr_assert(fg_kvcache_check(c));
    const int32_t *tb = fg_kvcache_table(c, b, &n);
    cr_assert_eq(n, 6);
    for (int i = 0; i < 6; i++) cr_assert_eq(tb[i], first[i]);
    cr_assert_eq(fg_kvcache_seq_len(c, b), 96);
    append(c, b, tok + 96, 4, slots, cp);

    /* Exactly 96 tokens: the last block must still be computed. */
    int32_t d = seq_new(c);
    cr_assert_eq(fg_kvcache_match_prefix(c, d, tok, 96), 80);
    fg_kvcache_seq_free(c, d);

    /* A token changed in block 3: blocks 0-2 hit, and none after (each
     * block's hash covers everything before it). */
    int32_t alt[100];
    memcpy(alt, tok, sizeof alt);
    alt[3 * BS + 5] += 1;
    int32_t e = seq_new(c);
    cr_assert_eq(fg_kvcache_match_prefix(c, e, alt, 100), 3 * BS);
    fg_kvcache_seq_free(c, e);
    /* Block 4's tokens alone, after other blocks: no hit. */
    int32_t f = seq_new(c);
    cr_assert_eq(fg_kvcache_match_prefix(c, f, tok + 4 * BS, 100 - 4 * BS), 0);
    fg_kvcache_seq_free(c, f);

    fg_kvcache_usage u;
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.prefix_hits, 96 + 80 + 48);
    cr_assert_eq(u.prefix_queries, 100 + 100 + 96 + 100 + 36);
    fg_kvcache_seq_free(c, b);
    cr_assert(fg_kvcache_check(c));
    fg_kvcache_free(c);
}

Test(kvcache, eviction_takes_the_least_recently_freed_cached_block)
{
    fg_kvcache *c = mk(4, 8, 4);
    int32_t tok[64], slots[64];
    fg_kv_copy cp[2];
    int32_t s[4];
    for (int i = 0; i < 4; i++) { /* four one-block sequences, freed in order */
        s[i] = seq_new(c);
        seq_tokens(tok, BS, 10 + i);
        append(c, s[i], tok, BS, slots, cp);
    }
    for (int i = 0; i < 4; i++) fg_kvcache_seq_free(c, s[i]);
    fg_kvcache_usage u;
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.cached, 4);
    /* A new block evicts sequence 0's (freed first). */
    int32_t x = seq_new(c);
    seq_tokens(tok, 1, 99);
    append(c, x, tok, 1, slots, cp);
    int32_t probe[BS + 1];
    for (int i = 0; i < 4; i++) {
        seq_tokens(probe, BS, 10 + i);
        probe[BS] = 0;
        int32_t y = seq_new(c);
        cr_assert_eq(fg_kvcache_match_prefix(c, y, probe, BS + 1), i == 0 ? 0 : BS, "block of sequence %d", i);
        fg_kvcache_seq_free(c, y);
    }
    cr_assert(fg_kvcache_check(c));
    fg_kvcache_free(c);
}

Test(kvcache, running_out_of_blocks_changes_nothing)
{
    fg_kvcache *c = mk(4, 4, 8);
    int32_t tok[80], slots[80];
    fg_kv_copy cp[2];
    seq_tokens(tok, 80, 4);
    int32_t a = seq_new(c), b = seq_new(c);
    append(c, a, tok, 50, slots, cp); /* 4 blocks: the pool */
    cr_assert(!fg_kvcache_can_append(c, b, 1));
    int32_t n_cp = 0;
    cr_assert_eq(fg_kvcache_append(c, b, tok, 1, slots, cp, &n_cp), FG_ERR_FULL);
    cr_assert_eq(fg_kvcache_seq_len(c, b), 0);
    cr_assert(fg_kvcache_can_append(c, a, 14), "the last block has room for 14");
    cr_assert_eq(fg_kvcache_append(c, a, tok, 15, slots, cp, &n_cp), FG_ERR_FULL);
    cr_assert_eq(fg_kvcache_seq_len(c, a), 50);
    cr_assert(fg_kvcache_check(c));
    /* Longer than a sequence may be (8 blocks) is FULL too. */
    fg_kvcache_seq_free(c, a);
    cr_assert_eq(fg_kvcache_append(c, b, tok, 80, slots, cp, &n_cp), FG_ERR_FULL);
    cr_assert_eq(fg_kvcache_seq_len(c, b), 0);
    int32_t s[3];
    cr_assert_eq(fg_kvcache_seq_new(c, &s[0]), FG_OK);
    cr_assert_eq(fg_kvcache_seq_new(c, &s[1]), FG_OK);
    cr_assert_eq(fg_kvcache_seq_new(c, &s[2]), FG_OK);
    cr_assert_eq(fg_kvcache_seq_new(c, &s[2]), FG_ERR_FULL, "four sequences at most");
    fg_kvcache_free(c);
}

/* ---- A random workload against a model --------------------------------------- */

typedef struct model_seq {
    bool live;
    int32_t len, *tok; /* what the sequence holds */
    int32_t *slot;     /* the slot of each of its tokens */
} model_seq;

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Five prompt families share prefixes, so prefix hits happen. */
static void family_tokens(int32_t *t, int32_t n, int32_t fam)
{
    for (int32_t i = 0; i < n; i++) t[i] = (fam * 1000 + i * 13) % 5000;
}

Test(kvcache, random_workload_keeps_every_invariant)
{
    enum { NB = 64, NS = 12, MAXB = 16, STEPS = 6000 };
    fg_kvcache *c = mk(NB, NS, MAXB);
    model_seq m[NS] = {0};
    int32_t owner_pos[NB * BS]; /* which (seq, pos) wrote each slot last; checks no two live tokens share one */
    fg_kv_copy cp[4];
    int32_t buf[MAXB * BS], slots[MAXB * BS];
    long full = 0, hits = 0, forks = 0, copies = 0;
    for (int step = 0; step < STEPS; step++) {
        uint32_t op = rnd(100);
        int32_t s = (int32_t)rnd(NS);
        if (op < 20) { /* a new sequence, perhaps on a cached prefix */
            int32_t id;
            if (fg_kvcache_seq_new(c, &id) != FG_OK) continue;
            cr_assert(!m[id].live);
            m[id] = (model_seq){true, 0, malloc(MAXB * BS * sizeof(int32_t)), malloc(MAXB * BS * sizeof(int32_t))};
            int32_t n = 1 + (int32_t)rnd(MAXB * BS - 1), fam = (int32_t)rnd(5);
            family_tokens(m[id].tok, n, fam);
            int32_t got = fg_kvcache_match_prefix(c, id, m[id].tok, n);
            cr_assert(got % BS == 0 && got < n);
            int32_t nb;
            const int32_t *t = fg_kvcache_table(c, id, &nb);
            for (int32_t i = 0; i < got; i++) m[id].slot[i] = t[i / BS] * BS + i % BS;
            m[id].len = got;
            hits += got > 0;
            /* The prompt's prefill: the rest of it, or no sequence at all. */
            int32_t n_cp = 0;
            if (fg_kvcache_append(c, id, m[id].tok + got, n - got, m[id].slot + got, cp, &n_cp) != FG_OK) {
                full++;
                fg_kvcache_seq_free(c, id);
                free(m[id].tok), free(m[id].slot);
                m[id] = (model_seq){0};
            } else {
                cr_assert_eq(n_cp, 0, "a sequence fresh from a prefix hit shares only full blocks");
                m[id].len = n;
            }
        } else if (op < 70 && m[s].live) { /* append a few tokens */
            int32_t n = 1 + (int32_t)rnd(40);
            if (m[s].len + n > MAXB * BS) n = MAXB * BS - m[s].len;
            if (n == 0) continue;
            for (int32_t i = 0; i < n; i++) buf[i] = (int32_t)rnd(5000);
            int32_t n_cp = 0;
            bool can = fg_kvcache_can_append(c, s, n);
            fg_status st = fg_kvcache_append(c, s, buf, n, slots, cp, &n_cp);
            cr_assert_eq(st == FG_OK, can, "can_append said %d, append %s", can, fg_status_str(st));
            if (st != FG_OK) {
                cr_assert_eq(st, FG_ERR_FULL);
                cr_assert_eq(fg_kvcache_seq_len(c, s), m[s].len);
                full++;
                continue;
            }
            if (n_cp) { /* the copied block's tokens now live at the copy */
                copies++;
                for (int32_t i = 0; i < m[s].len; i++)
                    if (m[s].slot[i] / BS == cp[0].src) m[s].slot[i] = cp[0].dst * BS + m[s].slot[i] % BS;
            }
            for (int32_t i = 0; i < n; i++) m[s].tok[m[s].len + i] = buf[i], m[s].slot[m[s].len + i] = slots[i];
            m[s].len += n;
        } else if (op < 80 && m[s].live) { /* fork */
            int32_t id;
            if (fg_kvcache_fork(c, s, &id) != FG_OK) continue;
            forks++;
            m[id] = (model_seq){true, m[s].len, malloc(MAXB * BS * sizeof(int32_t)), malloc(MAXB * BS * sizeof(int32_t))};
            memcpy(m[id].tok, m[s].tok, (size_t)m[s].len * sizeof(int32_t));
            memcpy(m[id].slot, m[s].slot, (size_t)m[s].len * sizeof(int32_t));
        } else if (m[s].live) { /* free */
            fg_kvcache_seq_free(c, s);
            free(m[s].tok), free(m[s].slot);
            m[s] = (model_seq){0};
        }
        cr_assert(fg_kvcache_check(c), "invariants broken at step %d", step);
        /* Every live sequence's table is where the model says its tokens are,
         * and a slot written by two sequences is only in a shared block. */
        for (int32_t i = 0; i < NB * BS; i++) owner_pos[i] = -1;
        for (int32_t q = 0; q < NS; q++) {
            if (!m[q].live) continue;
            int32_t nb;
            const int32_t *t = fg_kvcache_table(c, q, &nb);
            cr_assert_eq(fg_kvcache_seq_len(c, q), m[q].len);
            for (int32_t i = 0; i < m[q].len; i++) {
                int32_t sl = m[q].slot[i];
                cr_assert_eq(sl, t[i / BS] * BS + i % BS, "step %d seq %d token %d", step, q, i);
                if (owner_pos[sl] >= 0) cr_assert_eq(owner_pos[sl], i, "slot %d holds two positions", sl);
                owner_pos[sl] = i;
            }
        }
    }
    for (int32_t q = 0; q < NS; q++)
        if (m[q].live) {
            fg_kvcache_seq_free(c, q);
            free(m[q].tok), free(m[q].slot);
        }
    fg_kvcache_usage u;
    fg_kvcache_usage_get(c, &u);
    cr_assert_eq(u.used, 0, "blocks leaked: %d still used", u.used);
    cr_assert_eq(u.n_seqs, 0);
    cr_assert(fg_kvcache_check(c));
    cr_assert(full > 0 && hits > 0 && forks > 0 && copies > 0, "the workload exercised FULL %ld, hits %ld, forks %ld, copies %ld",
              full, hits, forks, copies);
    fg_kvcache_free(c);
}
