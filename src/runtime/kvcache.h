/*
 * kvcache.h — the paged KV cache's bookkeeping: which blocks of the
 * backend's KV pool each sequence owns, in order.
 *
 * The pool is n_blocks blocks of block_size token slots (slot = block *
 * block_size + offset, as the backend's kv_alloc lays them out). This module
 * owns no KV memory; it hands out block ids and slots, and tells its caller
 * which blocks to copy on the backend.
 *
 *   - Each sequence has a block table (its blocks in position order).
 *   - Blocks are reference-counted: fg_kvcache_fork gives a new sequence
 *     the same blocks, and a write into a shared block first copies it
 *     (copy-on-write): append reports the (src, dst) pairs to copy.
 *   - Prefix caching: a full block is identified by a 64-bit hash of its
 *     tokens and of every token before it (the hash of the block before, then
 *     its own tokens). fg_kvcache_match_prefix attaches a new sequence to the
 *     cached blocks that begin its prompt, so those tokens need no prefill.
 *     A hash hit is confirmed against the block's stored tokens and its
 *     parent's hash, so a collision never hands out wrong KV.
 *   - A block whose last reference goes stays cached (if it is a full,
 *     hashed block) on an LRU list; allocation takes never-used or
 *     uncached free blocks first, then evicts the least recently freed
 *     cached one.
 *
 * Costs: everything is allocated by fg_kvcache_init (about 16 + 4 x
 * block_size bytes per block, 4 x n_blocks per possible sequence); no call
 * allocates afterwards. Not thread-safe: the engine thread owns it.
 */
#ifndef FG_RUNTIME_KVCACHE_H
#define FG_RUNTIME_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "forge.h"

typedef struct fg_kvcache fg_kvcache;

/* A block to copy on the backend before a step writes into dst. */
typedef struct fg_kv_copy {
    int32_t src, dst;
} fg_kv_copy;

typedef struct fg_kvcache_usage {
    int32_t n_blocks;      /* the pool */
    int32_t used;          /* referenced by at least one sequence */
    int32_t cached;        /* free, but holding a cached prefix block */
    int32_t free;          /* free and empty */
    int32_t n_seqs;        /* live sequences */
    uint64_t prefix_queries; /* tokens offered to fg_kvcache_match_prefix */
    uint64_t prefix_hits;    /* of those, tokens found cached */
} fg_kvcache_usage;

/* A pool of n_blocks blocks of block_size slots, for up to max_seqs live
 * sequences of up to max_blocks_per_seq blocks each. */
fg_status fg_kvcache_init(int32_t n_blocks, int32_t block_size, int32_t max_seqs, int32_t max_blocks_per_seq,
                          fg_kvcache **out);
void fg_kvcache_free(fg_kvcache *c);

/* A new, empty sequence: its id (0 .. max_seqs-1) in *seq. FG_ERR_FULL if
 * max_seqs are live. */
fg_status fg_kvcache_seq_new(fg_kvcache *c, int32_t *seq);

/* Drops the sequence: each of its blocks loses a reference; a block left
 * with none is free again (kept on the LRU list if it is a full hashed
 * block, for later prefix hits). */
void fg_kvcache_seq_free(fg_kvcache *c, int32_t seq);

/* For an empty sequence about to hold tokens[0..n): attaches the longest
 * run of cached full blocks that begin it, leaving at least the last token
 * to compute (whose logits the caller needs). Returns the tokens attached
 * (a multiple of block_size); the sequence's length is then that. */
int32_t fg_kvcache_match_prefix(fg_kvcache *c, int32_t seq, const int32_t *tokens, int32_t n);

/* Appends n tokens to the sequence: slots[i] receives the KV slot of token
 * i. Blocks are taken as needed, a shared last block is first copied (its
 * (src, dst) pair goes to copies[*n_copies++]; at most one per call), and
 * blocks that fill up are hashed for prefix caching. On FG_ERR_FULL (not
 * enough free blocks, counting evictable ones) nothing changes. */
fg_status fg_kvcache_append(fg_kvcache *c, int32_t seq, const int32_t *tokens, int32_t n, int32_t *slots,
                            fg_kv_copy *copies, int32_t *n_copies);

/* The step that was to compute the sequence's KV from position pos on did
 * not run: its full blocks from the one holding pos on leave the prefix
 * index (they were indexed when appended, before their KV existed), so no
 * later prompt attaches to them. */
void fg_kvcache_seq_uncompute(fg_kvcache *c, int32_t seq, int32_t pos);

/* Whether n more tokens would fit now (free plus evictable blocks). */
bool fg_kvcache_can_append(const fg_kvcache *c, int32_t seq, int32_t n);

/* How many tokens the sequence could take now: the room in its last block
 * (if it is not shared) and in every free or evictable block, within its
 * table's limit. */
int32_t fg_kvcache_room(const fg_kvcache *c, int32_t seq);

/* The most blocks one sequence may hold, and the block size. */
int32_t fg_kvcache_max_blocks(const fg_kvcache *c);
int32_t fg_kvcache_block_size(const fg_kvcache *c);

/* A new sequence sharing all of seq's blocks (copy-on-write). */
fg_status fg_kvcache_fork(fg_kvcache *c, int32_t seq, int32_t *out);

/* The sequence's length in tokens, and its block table (n_blocks entries,
 * valid until the next call that changes the sequence). */
int32_t fg_kvcache_seq_len(const fg_kvcache *c, int32_t seq);
const int32_t *fg_kvcache_table(const fg_kvcache *c, int32_t seq, int32_t *n_blocks);

void fg_kvcache_usage_get(const fg_kvcache *c, fg_kvcache_usage *u);

/* Checks every invariant (reference counts equal table entries, every
 * block in exactly one of used / cached / free, the hash index matches the
 * cached blocks); for tests. */
bool fg_kvcache_check(const fg_kvcache *c);

#endif
