/*
 * rope.cu — rotary position embeddings, and the store of k and v rows into
 * the paged F16 cache.
 *
 * RoPE: one thread per (token, head, rotated pair). theta_i = pos *
 * base^(-2i/n_rot) is formed as the CPU backend (and ggml) forms it, by i
 * repeated float multiplications of the position by base^(-2/n_rot), so
 * both backends round the angle alike at large positions.
 */
#include "backend/gpu/kernels/kernels.h"

/* Rotates pair i of the head at v (pairs (2i, 2i+1), or (i, i + n_rot/2)
 * for NeoX) to position p. */
static __device__ __forceinline__ void rope_pair(float *v, int32_t i, int32_t p, bool neox, int32_t n_rot,
                                                 float theta_scale, float freq_scale, const float *__restrict__ ff)
{
    int32_t half = n_rot / 2;
    float theta = (float)p;
    for (int32_t k = 0; k < i; k++) theta *= theta_scale;
    theta = freq_scale * (ff ? theta / ff[i] : theta);
    float cs = cosf(theta), sn = sinf(theta);
    int32_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float x0 = v[a], x1 = v[b];
    v[a] = x0 * cs - x1 * sn;
    v[b] = x0 * sn + x1 * cs;
}

__global__ void rope_kernel(float *x, int64_t ldx, int32_t n_heads, int32_t head_dim, bool neox, int32_t n_rot,
                            float theta_scale, float freq_scale, const float *__restrict__ ff,
                            const int32_t *__restrict__ pos)
{
    int32_t half = n_rot / 2;
    int64_t t = blockIdx.y, idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)n_heads * half) return;
    int32_t h = (int32_t)(idx / half), i = (int32_t)(idx % half);
    rope_pair(x + t * ldx + (int64_t)h * head_dim, i, pos[t], neox, n_rot, theta_scale, freq_scale, ff);
}

cudaError_t fg_gpu_rope(float *x, int64_t ldx, int64_t ne0, int32_t head_dim, bool neox, int32_t n_rot, float base,
                        float freq_scale, const float *freq_factors, const int32_t *pos, int32_t n, cudaStream_t s)
{
    int32_t n_heads = (int32_t)(ne0 / head_dim);
    int64_t pairs = (int64_t)n_heads * (n_rot / 2);
    float theta_scale = powf(base, -2.0f / (float)n_rot);
    dim3 grid((unsigned)((pairs + 127) / 128), (unsigned)n);
    rope_kernel<<<grid, 128, 0, s>>>(x, ldx, n_heads, head_dim, neox, n_rot, theta_scale, freq_scale, freq_factors, pos);
    return cudaGetLastError();
}

__global__ void kv_store_kernel(const float *__restrict__ k, int64_t ldk, const float *__restrict__ v, int64_t ldv,
                                int64_t k_row, int64_t v_row, const int32_t *__restrict__ slot, __half *kc,
                                __half *vc)
{
    int64_t t = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t sl = slot[t];
    if (i < k_row) kc[sl * k_row + i] = __float2half_rn(k[t * ldk + i]);
    else if (i < k_row + v_row) vc[sl * v_row + (i - k_row)] = __float2half_rn(v[t * ldv + (i - k_row)]);
}

cudaError_t fg_gpu_kv_store(const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t k_row, int64_t v_row,
                            const int32_t *slot, int32_t n, void *kc, void *vc, cudaStream_t s)
{
    dim3 grid((unsigned)((k_row + v_row + 255) / 256), (unsigned)n);
    kv_store_kernel<<<grid, 256, 0, s>>>(k, ldk, v, ldv, k_row, v_row, slot, (__half *)kc, (__half *)vc);
    return cudaGetLastError();
}

/* RoPE of q and k and the store of k and v in one launch: per token, one
 * thread per rotated pair of q, then one per element of the k row (the
 * first of each rotated pair rotates it, in k and in the cache; the other
 * rotary element idles; elements past n_rot are copied), then one per
 * element of the v row. */
__global__ void rope_store_kernel(fg_gpu_rope_store_args a, float theta_scale)
{
    int32_t half = a.n_rot / 2, D = a.head_dim;
    int64_t t = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t nq = (int64_t)a.n_head * half, sl = a.slot[t];
    int32_t p = a.pos[t];
    if (i < nq) {
        rope_pair(a.q + t * a.ldq + (i / half) * D, (int32_t)(i % half), p, a.neox, a.n_rot, theta_scale,
                  a.freq_scale, a.ff);
        return;
    }
    i -= nq;
    if (i < a.k_row) {
        int32_t d = (int32_t)(i % D);
        float *kh = a.k + t * a.ldk + (i - d);
        __half *ch = a.kc + sl * a.k_row + (i - d);
        if (d >= a.n_rot) {
            ch[d] = __float2half_rn(kh[d]);
        } else if (a.neox ? d < half : d % 2 == 0) {
            int32_t pi = a.neox ? d : d / 2, e = a.neox ? d + half : d + 1;
            rope_pair(kh, pi, p, a.neox, a.n_rot, theta_scale, a.freq_scale, a.ff);
            ch[d] = __float2half_rn(kh[d]);
            ch[e] = __float2half_rn(kh[e]);
        }
        return;
    }
    i -= a.k_row;
    if (i < a.v_row) a.vc[sl * a.v_row + i] = __float2half_rn(a.v[t * a.ldv + i]);
}

cudaError_t fg_gpu_rope_store(const fg_gpu_rope_store_args *a, float base, int32_t n, cudaStream_t s)
{
    int64_t items = (int64_t)a->n_head * (a->n_rot / 2) + a->k_row + a->v_row;
    float theta_scale = powf(base, -2.0f / (float)a->n_rot);
    dim3 grid((unsigned)((items + 127) / 128), (unsigned)n);
    rope_store_kernel<<<grid, 128, 0, s>>>(*a, theta_scale);
    return cudaGetLastError();
}
