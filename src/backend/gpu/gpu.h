/*
 * gpu.h — the GPU backend (CUDA or HIP, from one source): the ops of
 * backend.h on device memory, on one stream.
 *
 * Weights are uploaded once when placed; activations, the KV pool (F16) and
 * the step's input buffer are allocated at load time, so a step allocates
 * nothing. A step's only host-to-device copy is step_begin's one packed
 * upload of the batch; its only device-to-host copy is read's. Every API
 * call and launch is checked; FORGE_GPU_SYNC=1 also synchronizes after each
 * op, so an asynchronous fault is reported by the op that caused it.
 *
 * A build without nvcc or hipcc has none of it: fg_backend_gpu_api returns
 * NULL and fg_backend_gpu_init fails with a message that says so.
 */
#ifndef FG_BACKEND_GPU_GPU_H
#define FG_BACKEND_GPU_GPU_H

#include "backend/backend.h"
#include "backend/gpu/pick.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "CUDA" or "HIP" for the API this build's GPU backend uses, NULL if none. */
const char *fg_backend_gpu_api(void);

/* The number of usable devices (0 without a GPU backend, driver or device). */
int fg_backend_gpu_count(void);

/* The backend on device `device` (0 = the first). */
fg_status fg_backend_gpu_init(int device, fg_backend **out);

/* Host<->device copies a GPU backend made since init or the last reset,
 * other than weight uploads: the debug counter behind the one-upload,
 * one-download rule of a step. */
typedef struct fg_gpu_transfers {
    uint64_t uploads, downloads;
    uint64_t bytes_up, bytes_down;
} fg_gpu_transfers;
void fg_backend_gpu_transfers(const fg_backend *be, fg_gpu_transfers *out);
void fg_backend_gpu_transfers_reset(fg_backend *be);

/* Measures the device's read bandwidth (GB/s, 1e9 bytes) by streaming a
 * buffer of up to 1 GiB (a quarter of free memory at most) several times;
 * for benchmarks, not while serving (it allocates). */
fg_status fg_backend_gpu_measure_bw(fg_backend *be, double *gb_per_s);

/* The ops table's set_batch_invariant (backend.h); FORGE_BATCH_INVARIANT=1
 * also sets it at init, the GPU tier's way to run every test in that mode.
 * No cuBLAS, tiled or split-KV attention, or GEMV launch sharing then. */
void fg_backend_gpu_set_batch_invariant(fg_backend *be, bool on);

/* The kernel (pick.h) a matmul of GGUF type `type` over T tokens of K
 * elements takes on this backend, in its mode: the dispatch's own choice.
 * Tests pick their reference and tolerance by its fg_gpu_mm_kernel_arith. */
fg_gpu_mm_kernel fg_backend_gpu_matmul_pick(const fg_backend *be, int type, int32_t T, int64_t K);

/* The kernel an attention op of shape a takes in the current step (after
 * step_begin), and into *splits the ways it splits the keys. */
fg_gpu_attn_kernel fg_backend_gpu_attention_pick(const fg_backend *be, const fg_attn *a, int *splits);

/* A line naming the device, its memory and compute capability / gfx arch. */
const char *fg_backend_gpu_describe(const fg_backend *be);

#ifdef __cplusplus
}
#endif
#endif
