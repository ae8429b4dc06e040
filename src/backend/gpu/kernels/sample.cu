/*
 * sample.cu — sampling on the GPU, so that a step downloads token ids rather
 * than logits: greedy, temperature, top-k, top-p, min-p, from one uniform
 * draw per row that the host's seeded generator supplies.
 *
 * One block of 1024 threads per row. Logits are sanitized as the host
 * sampler does (NaN counts as -inf, +inf as FLT_MAX), and ranked by the
 * order (logit descending, id ascending). Every filter of the chain keeps a
 * prefix of that order:
 *   top-k  the first k;
 *   top-p  the shortest prefix of the top-k survivors whose softmax mass (at
 *          temperature 1) reaches top_p of theirs;
 *   min-p  the logits >= max + log(min_p);
 * so the candidates are the shortest of those prefixes. A prefix is held as
 * (tau, tcut): the tokens whose key (the logit's bits, mapped so that
 * unsigned order is float order) is above tau, plus those equal to tau with
 * an id <= tcut. tau is found by radix selection over the keys, a byte at a
 * time from the top, with a histogram of counts (top-k) or of mass (top-p)
 * per byte value; tcut by a search in id order over the tied tokens.
 *
 * Fast path: a key that every candidate reaches is found first (top-k's
 * k-th, else top-p's cut, else min-p's threshold); if at most SAMPLE_CAP
 * tokens reach it, they are gathered into shared memory in id order and the
 * filters and the draw run there. Otherwise they run over the whole row.
 * Radix selection over a whole row narrows a key interval with plain sums
 * (band_select) rather than histogram atomics.
 *
 * The draw: weights exp((l - max) / temperature) of the candidates, in id
 * order; the first id whose running sum exceeds u times the total. (The
 * host sampler draws the same distribution in another order, so the same
 * seed picks other tokens on the two.) Masses and weights are summed as
 * 64-bit fixed point (2^-40 units), which makes every sum independent of
 * the order the threads add in; a weight under 2^-40 of the max's counts as
 * zero.
 *
 * Greedy (temperature 0) is the argmax: the lowest id of the maxima. A row
 * with nothing above -inf gives -1.
 */
#include <float.h>
#include <math.h>

#include "backend/gpu/kernels/kernels.h"

/* SAMPLE_CAP: the most tokens the fast path gathers into shared memory. */
enum { SAMPLE_THREADS = 1024, SAMPLE_GROUPS = SAMPLE_THREADS / 32, SAMPLE_CAP = 4096 };

/* NaN -> -inf, +inf -> FLT_MAX, -0 -> +0 (equal logits get equal keys). */
static __device__ __forceinline__ float sanitized(float v)
{
    return v != v ? -INFINITY : v > FLT_MAX ? FLT_MAX : v == 0.0f ? 0.0f : v;
}

/* Unsigned order of keys = float order of (sanitized) logits. */
static __device__ __forceinline__ uint32_t key_of(float v)
{
    uint32_t b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

static __device__ __forceinline__ float value_of(uint32_t k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

enum : uint32_t { KEY_NEG_INF = 0x007fffffu }; /* key_of(-inf); finite keys are larger */

static __device__ __forceinline__ uint64_t fixed(float w) /* w in [0, 1] */
{
    return (uint64_t)(w * 1099511627776.0f);
}

/* The softmax weight at temperature 1 of a finite key, below max m, in
 * fixed point; 0 for -inf. */
static __device__ __forceinline__ uint64_t mass_of(uint32_t k, float m)
{
    return k > KEY_NEG_INF ? fixed(expf(value_of(k) - m)) : 0;
}

static __device__ __forceinline__ uint64_t shfl_xor_u64(uint64_t v, int o)
{
    uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
    lo = (uint32_t)fg_shfl_xor((int)lo, o, 32);
    hi = (uint32_t)fg_shfl_xor((int)hi, o, 32);
    return (uint64_t)hi << 32 | lo;
}

static __device__ __forceinline__ uint64_t sum32_u64(uint64_t v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += shfl_xor_u64(v, o);
    return v;
}

/* Whether (v, i) beats (bv, bi): larger, or equal with a lower index. */
static __device__ __forceinline__ bool beats(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i >= 0 && (bi < 0 || i < bi));
}

struct sample_smem {
    unsigned long long hist[256];
    unsigned long long bnd[SAMPLE_GROUPS][16];
    unsigned long long part[SAMPLE_GROUPS];
    float bv[SAMPLE_GROUPS];
    int bi[SAMPLE_GROUPS];
    uint32_t digit;
    unsigned long long acc, total;
    int at;
};

static __device__ __forceinline__ void take(float v, int i, float *bv, int *bi, int *fin)
{
    v = sanitized(v);
    *fin += v > -INFINITY;
    if (v > *bv) *bv = v, *bi = i; /* ascending i within a thread: the first of equal maxima stays */
}

/* The max (and the lowest id holding it) of the sanitized row, and how many
 * of its logits are finite, in one pass, read as float4 where the row is
 * 16-byte aligned. */
static __device__ void row_max(const float *row, int n, sample_smem &sm, float *m, int *mi, uint64_t *n_fin)
{
    float bv = -INFINITY;
    int bi = -1, fin = 0, n4 = ((uintptr_t)row & 15) == 0 ? n / 4 : 0;
    const float4 *r4 = (const float4 *)row;
#pragma unroll 4
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 v = r4[i];
        take(v.x, 4 * i, &bv, &bi, &fin);
        take(v.y, 4 * i + 1, &bv, &bi, &fin);
        take(v.z, 4 * i + 2, &bv, &bi, &fin);
        take(v.w, 4 * i + 3, &bv, &bi, &fin);
    }
    for (int i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) take(row[i], i, &bv, &bi, &fin);
    fin = fg_sum32(fin);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v = fg_shfl_xor(bv, o, 32);
        int i = fg_shfl_xor(bi, o, 32);
        if (beats(v, i, bv, bi)) bv = v, bi = i;
    }
    int g = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) sm.bv[g] = bv, sm.bi[g] = bi, sm.part[g] = (unsigned long long)fin;
    __syncthreads();
    bv = sm.bv[0], bi = sm.bi[0];
    uint64_t f = sm.part[0];
    for (int k = 1; k < (int)blockDim.x / 32; k++) {
        if (beats(sm.bv[k], sm.bi[k], bv, bi)) bv = sm.bv[k], bi = sm.bi[k];
        f += sm.part[k];
    }
    __syncthreads();
    *m = bv;
    *mi = bi;
    *n_fin = f;
}

/* Sum over i < n of f(i), the same on every thread. */
template <class F> static __device__ uint64_t block_sum(int n, F f, sample_smem &sm)
{
    uint64_t s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += f(i);
    s = sum32_u64(s);
    if (threadIdx.x % 32 == 0) sm.part[threadIdx.x / 32] = s;
    __syncthreads();
    uint64_t t = 0;
    for (int g = 0; g < (int)blockDim.x / 32; g++) t += sm.part[g];
    __syncthreads();
    return t;
}

/* Radix selection: the key tau with sum_{key > tau} f < target <= sum_{key
 * >= tau} f over tokens 0..n-1 of keys key_at(i), where f(i, key) >= 0
 * (zero outside the set being ranked) and target <= the total. *above =
 * sum_{key > tau} f, *at_tau = sum_{key == tau} f. */
template <class K, class F>
static __device__ uint32_t radix_select(int n, K key_at, F f, uint64_t target, sample_smem &sm, uint64_t *above,
                                        uint64_t *at_tau)
{
    uint32_t prefix = 0, mask = 0;
    uint64_t acc = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) sm.hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            uint32_t k = key_at(i);
            if ((k & mask) != prefix) continue;
            uint64_t w = f(i, k);
            if (w) atomicAdd(&sm.hist[(k >> shift) & 255], (unsigned long long)w);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            while (b > 0 && acc + sm.hist[b] < target) acc += sm.hist[b--];
            sm.digit = (uint32_t)b;
            sm.acc = acc;
            sm.total = sm.hist[b];
        }
        __syncthreads();
        prefix |= sm.digit << shift;
        mask |= 0xffu << shift;
        acc = sm.acc;
        *at_tau = sm.total;
        __syncthreads();
    }
    *above = acc;
    return prefix;
}

/* The index i where the running sum of f over ids 0..i first exceeds
 * target (target < the total of f): the block's 32-lane groups each sum a
 * contiguous segment, then one group finds the crossing inside the segment
 * that holds it, a lane per contiguous sub-segment. */
template <class F> static __device__ int find_crossing(int n, F f, uint64_t target, sample_smem &sm)
{
    int G = blockDim.x / 32, g = threadIdx.x / 32, lane = threadIdx.x % 32;
    int seg = (n + G - 1) / G;
    int lo = g * seg, hi = lo + seg < n ? lo + seg : n;
    uint64_t s = 0;
    for (int i = lo + lane; i < hi; i += 32) s += f(i);
    s = sum32_u64(s);
    if (lane == 0) sm.part[g] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint64_t acc = 0;
        int k = 0;
        while (k < G - 1 && acc + sm.part[k] <= target) acc += sm.part[k++];
        sm.digit = (uint32_t)k;
        sm.acc = acc;
        sm.at = -1;
    }
    __syncthreads();
    if (g == 0) {
        int k = (int)sm.digit;
        uint64_t base = sm.acc;
        lo = k * seg;
        hi = lo + seg < n ? lo + seg : n;
        int sub = (hi - lo + 31) / 32, a = lo + lane * sub, b = a + sub < hi ? a + sub : hi;
        uint64_t ls = 0;
        for (int i = a; i < b; i++) ls += f(i);
        uint64_t incl = ls;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) { /* inclusive scan over the lanes */
            uint32_t lo32 = fg_shfl_up((uint32_t)incl, o, 32), hi32 = fg_shfl_up((uint32_t)(incl >> 32), o, 32);
            if (lane >= o) incl += (uint64_t)hi32 << 32 | lo32;
        }
        uint64_t excl = incl - ls;
        if (base + excl <= target && base + incl > target) {
            uint64_t acc = base + excl;
            for (int i = a; i < b; i++) {
                acc += f(i);
                if (acc > target) {
                    sm.at = i;
                    break;
                }
            }
        }
    }
    __syncthreads();
    int at = sm.at;
    __syncthreads();
    return at;
}

/* Radix selection over a whole row without its atomics: the same tau, but
 * found by narrowing a key interval [lo, hi) that holds it (f summed over
 * keys >= hi is below target, over keys >= lo reaches it) eight ways per
 * pass, with plain per-thread sums; once the interval holds at most
 * SAMPLE_CAP tokens they are gathered into shared memory (bkey, bid) and
 * radix_select finishes there. (On a row whose logits are alike, shared-
 * memory atomics all land in a few bins and serialize: ~1.5 ms a row.) */
template <class K, class F>
static __device__ uint32_t band_select(int n, K key_at, F f, uint64_t target, uint32_t lo, uint32_t hi,
                                       uint32_t *bkey, int32_t *bid, sample_smem &sm, uint64_t *above, uint64_t *at_tau)
{
    uint64_t f_hi = 0, f_lo = 0; /* f over keys >= hi; over keys >= lo (known once narrowed) */
    int G = blockDim.x / 32, g = threadIdx.x / 32;
    for (;;) {
        uint32_t thr[8];
#pragma unroll
        for (int j = 0; j < 8; j++) thr[j] = hi - (uint32_t)(((uint64_t)(hi - lo) * (uint64_t)(j + 1) + 7) / 8);
        uint64_t fs[8] = {}, cs[8] = {};
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            uint32_t k = key_at(i);
            if (k < lo || k >= hi) continue;
            uint64_t w = f(i, k);
#pragma unroll
            for (int j = 0; j < 8; j++)
                if (k >= thr[j]) fs[j] += w, cs[j]++;
        }
#pragma unroll
        for (int j = 0; j < 8; j++) fs[j] = sum32_u64(fs[j]), cs[j] = sum32_u64(cs[j]);
        if (threadIdx.x % 32 == 0)
            for (int j = 0; j < 8; j++) sm.bnd[g][j] = fs[j], sm.bnd[g][8 + j] = cs[j];
        __syncthreads();
        for (int j = 0; j < 8; j++) {
            fs[j] = cs[j] = 0;
            for (int k = 0; k < G; k++) fs[j] += sm.bnd[k][j], cs[j] += sm.bnd[k][8 + j];
        }
        __syncthreads();
        int js = 7;
        for (int j = 0; j < 8; j++)
            if (f_hi + fs[j] >= target) {
                js = j;
                break;
            }
        uint64_t band = cs[js] - (js ? cs[js - 1] : 0);
        f_lo = f_hi + fs[js];
        if (js) f_hi += fs[js - 1], hi = thr[js - 1];
        lo = thr[js];
        if (hi - lo <= 1) { /* one key: tau itself */
            *above = f_hi;
            *at_tau = f_lo - f_hi;
            return lo;
        }
        if (band <= SAMPLE_CAP) break;
    }
    if (threadIdx.x == 0) sm.at = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        uint32_t k = key_at(i);
        if (k < lo || k >= hi) continue;
        int at = atomicAdd(&sm.at, 1);
        bkey[at] = k, bid[at] = i;
    }
    __syncthreads();
    int nb = sm.at;
    __syncthreads();
    uint64_t a;
    uint32_t t = radix_select(nb, [&](int b) { return bkey[b]; }, [&](int b, uint32_t k) { return f(bid[b], k); },
                              target - f_hi, sm, &a, at_tau);
    *above = f_hi + a;
    return t;
}

/* The filters and the draw over tokens 0..n-1, in id order, of keys
 * key_at(i) (a whole row, or the part of it that holds every candidate):
 * returns the index drawn. m is the row's max, n_fin its count of finite
 * logits and total their mass (what top-p measures against when top-k is
 * off). */
template <bool FULL, class K>
static __device__ int filter_and_draw(int n, K key_at, float m, float inv_t, const fg_gpu_sample_row &p,
                                      uint64_t n_fin, uint64_t total, uint32_t *bkey, int32_t *bid, sample_smem &sm)
{
    /* tau as radix_select finds it: over a whole row through band_select. */
    auto select = [&](auto f, uint64_t target, uint32_t lo, uint64_t *above, uint64_t *at) -> uint32_t {
        if constexpr (FULL) return band_select(n, key_at, f, target, lo, key_of(m) + 1, bkey, bid, sm, above, at);
        return radix_select(n, key_at, f, target, sm, above, at);
    };
    /* The candidates so far: every finite logit. */
    uint32_t tau = KEY_NEG_INF + 1;
    int tcut = n;
    auto in_set = [&](int i, uint32_t k) { return k > tau || (k == tau && i <= tcut); };
    /* The index of the c-th (c >= 1) token of key t among indices <= limit,
     * or limit if there are no more than c of them. */
    auto cut_ties = [&](uint32_t t, uint64_t c, uint64_t count, int limit) {
        if (c >= count) return limit;
        return find_crossing(n, [&](int i) -> uint64_t { return i <= limit && key_at(i) == t; }, c - 1, sm);
    };
    bool top_k = p.top_k > 0 && (uint64_t)p.top_k < n_fin;
    if (top_k) {
        uint64_t above, ties;
        uint32_t t = select([&](int, uint32_t k) -> uint64_t { return k > KEY_NEG_INF; }, (uint64_t)p.top_k,
                            KEY_NEG_INF + 1, &above, &ties);
        tcut = cut_ties(t, (uint64_t)p.top_k - above, ties, n);
        tau = t;
    }
    if (p.top_p < 1.0f) {
        auto mass = [&](int i, uint32_t k) -> uint64_t { return in_set(i, k) ? mass_of(k, m) : 0; };
        uint64_t sum = top_k ? block_sum(n, [&](int i) { return mass(i, key_at(i)); }, sm) : total;
        double want = ceil((double)p.top_p * (double)sum);
        uint64_t target = want < 1.0 ? 1 : (uint64_t)want;
        if (target < sum) {
            uint64_t above, at;
            uint32_t t = select(mass, target, tau, &above, &at);
            uint64_t w = mass_of(t, m), c = w ? (target - above + w - 1) / w : at;
            uint64_t count = w ? at / w : 0;
            int limit = t == tau ? tcut : n;
            tcut = cut_ties(t, c, count, limit);
            tau = t;
        }
    }
    if (p.min_p > 0.0f) {
        uint32_t t = key_of(m + logf(p.min_p)); /* keep key >= t: tau = t with every tie */
        if (t > tau) tau = t, tcut = n;
    }

    auto weight = [&](int i) -> uint64_t {
        uint32_t k = key_at(i);
        return in_set(i, k) ? fixed(expf((value_of(k) - m) * inv_t)) : 0;
    };
    uint64_t z = block_sum(n, weight, sm); /* >= 2^40: the max is always a candidate */
    double u = __hiloint2double((int)p.u_hi, (int)p.u_lo);
    uint64_t r = (uint64_t)(u * (double)z);
    if (r >= z) r = z - 1;
    return find_crossing(n, weight, r, sm);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(float *__restrict__ logits, int64_t ldx, int n,
                                                                const fg_gpu_sample_row *__restrict__ rows,
                                                                const int32_t *__restrict__ bias, int32_t *ids)
{
    __shared__ sample_smem sm;
    __shared__ uint32_t ckey[SAMPLE_CAP];
    __shared__ int32_t cid[SAMPLE_CAP];
    float *row = logits + (int64_t)blockIdx.x * ldx;
    fg_gpu_sample_row p = rows[blockIdx.x];
    /* The logit biases, in place (distinct tokens: one thread each), as the
     * host sampler adds them: to the sanitized logit, clamped to FLT_MAX. */
    if (p.n_bias > 0) {
        const int32_t *b = bias + 2 * (int64_t)p.bias_at;
        for (int i = threadIdx.x; i < p.n_bias; i += blockDim.x) {
            int t = b[2 * i];
            if (t < 0 || t >= n) continue;
            float v = sanitized(row[t]) + __int_as_float(b[2 * i + 1]);
            row[t] = v > FLT_MAX ? FLT_MAX : v;
        }
        __syncthreads();
    }
    float m;
    int mi;
    uint64_t n_fin;
    row_max(row, n, sm, &m, &mi, &n_fin);
    float inv_t = p.temperature > 0.0f ? 1.0f / p.temperature : 0.0f;
    if (!(inv_t <= FLT_MAX)) inv_t = 0.0f;
    if (mi < 0 || m == -INFINITY || inv_t == 0.0f) {
        if (threadIdx.x == 0) ids[blockIdx.x] = m == -INFINITY ? -1 : mi;
        return;
    }

    /* The row's finite count, and their mass when top-p measures against it
     * (top-k off). */
    auto key_at = [&](int i) { return key_of(sanitized(row[i])); };
    uint64_t total = 0;
    bool top_k = p.top_k > 0 && (uint64_t)p.top_k < n_fin, top_p = p.top_p < 1.0f, min_p = p.min_p > 0.0f;
    if (!top_k && top_p) total = block_sum(n, [&](int i) -> uint64_t { return mass_of(key_at(i), m); }, sm);
    int g = threadIdx.x / 32;

    /* A key every candidate reaches: top-k's k-th (when k fits in shared
     * memory), else top-p's cut, else min-p's threshold. If the tokens
     * from it up fit, gather them; the filters then run on those alone. */
    uint32_t floor_key = 0;
    uint64_t above, at, nc = 0;
    if (top_k && p.top_k <= SAMPLE_CAP) { /* counted: the tokens from the k-th up are above + at */
        floor_key = band_select(n, key_at, [&](int, uint32_t k) -> uint64_t { return k > KEY_NEG_INF; },
                                (uint64_t)p.top_k, KEY_NEG_INF + 1, key_of(m) + 1, ckey, cid, sm, &above, &at);
        nc = above + at;
    } else if (!top_k && top_p) {
        double want = ceil((double)p.top_p * (double)total);
        uint64_t target = want < 1.0 ? 1 : (uint64_t)want;
        if (target < total)
            floor_key = band_select(n, key_at, [&](int, uint32_t k) -> uint64_t { return mass_of(k, m); }, target,
                                    KEY_NEG_INF + 1, key_of(m) + 1, ckey, cid, sm, &above, &at);
    } else if (!top_k && min_p) {
        floor_key = key_of(m + logf(p.min_p));
    }
    if (floor_key && !nc) nc = block_sum(n, [&](int i) -> uint64_t { return key_at(i) >= floor_key; }, sm);
    int id;
    if (floor_key && nc <= SAMPLE_CAP) {
        /* In id order: each thread takes a contiguous segment, counts, and
         * writes at its offset among the block's. */
        int seg = (n + blockDim.x - 1) / blockDim.x, a0 = threadIdx.x * seg, e = a0 + seg < n ? a0 + seg : n;
        uint32_t c = 0;
        for (int i = a0; i < e; i++) c += key_at(i) >= floor_key;
        uint32_t incl = c;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t t = fg_shfl_up(incl, o, 32);
            if (threadIdx.x % 32 >= (unsigned)o) incl += t;
        }
        if (threadIdx.x % 32 == 31) sm.part[g] = incl;
        __syncthreads();
        uint32_t pos = incl - c;
        for (int k = 0; k < g; k++) pos += (uint32_t)sm.part[k];
        for (int i = a0; i < e; i++) {
            uint32_t k = key_at(i);
            if (k >= floor_key) ckey[pos] = k, cid[pos++] = i;
        }
        __syncthreads();
        int k = filter_and_draw<false>((int)nc, [&](int i) { return ckey[i]; }, m, inv_t, p, n_fin, total, ckey, cid,
                                       sm);
        id = k >= 0 ? cid[k] : -1;
    } else {
        id = filter_and_draw<true>(n, key_at, m, inv_t, p, n_fin, total, ckey, cid, sm);
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = id;
}

cudaError_t fg_gpu_sample(float *x, int64_t ldx, int64_t n, int32_t rows, const fg_gpu_sample_row *params,
                          const int32_t *bias, int32_t *ids, cudaStream_t s)
{
    sample_kernel<<<(unsigned)rows, SAMPLE_THREADS, 0, s>>>(x, ldx, (int)n, params, bias, ids);
    return cudaGetLastError();
}
