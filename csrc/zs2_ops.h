/* Plain C interface of the zs2 CUDA backend (see csrc/README.md for why it is C and not a torch extension).
 *
 * Every pointer is a device pointer, every size is an element count (int64), `stream` is a cudaStream_t passed
 * as void*, and `dtype` is one of the ZS2_* codes below (x/prev/candidates/out share it within a call).
 * Launchers return ZS2_OK or an error code and never synchronise; zs2_last_error() explains the last
 * failure of the calling thread. Work is enqueued on the current device (the caller selects the device
 * that owns the pointers and the stream).
 */
#ifndef ZS2_OPS_H
#define ZS2_OPS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ZS2_API __attribute__((visibility("default")))
#else
#define ZS2_API
#endif

enum { ZS2_FLOAT32 = 0, ZS2_FLOAT16 = 1, ZS2_BFLOAT16 = 2 };
enum { ZS2_OK = 0, ZS2_ERROR_INVALID_ARGUMENT = 1, ZS2_ERROR_CUDA = 2 };

/* Message describing the last error returned on this thread ("" if none yet). */
ZS2_API const char* zs2_last_error(void);

/* The CUDA runtime version the library was built with (CUDART_VERSION, e.g. 13000 for 13.0; the runtime is
 * linked statically). The driver must support it: cuDriverGetVersion() >= 1000 * (this / 1000), and >= this
 * on a GPU that runs the PTX (see zs2_cubin_archs). */
ZS2_API int zs2_cuda_runtime_version(void);

/* The archs the library holds cubins for, as 10 * major + minor (80 for sm_80): writes up to `capacity` of them
 * to `archs` and returns how many there are (0: unknown, not compiled by nvcc). A GPU whose arch
 * no cubin runs on (a cubin for sm_XY runs on sm_XZ, Z >= Y) runs the PTX through the driver's JIT compiler,
 * which needs a driver at least as new as the CUDA version that built the library, minor version included. */
ZS2_API int zs2_cubin_archs(int* archs, int capacity);

/* EMA over frames of x [G, F, N] (contiguous) into y (same shape and dtype), with s the float32 running value:
 *   s_0 = x_0                                  (init == NULL)
 *   s_0 = mu * init + (1 - mu) * x_0           (init: float32 [G, N] contiguous)
 *   s_f = mu * s_{f-1} + (1 - mu) * x_f,       y_f = s_f rounded to x's dtype
 * and, when `state` is not NULL, state = s_{F-1} (float32 [G, N] contiguous; needs F >= 1). Passing one
 * call's state as the next call's init continues the recursion bit for bit (a video in frame chunks equals
 * the whole). `momentum` is a double so that 1 - mu is formed in double, as the Python reference does. */
ZS2_API int zs2_momentum_update(const void* x, const float* init, void* y, float* state, int64_t G, int64_t F,
                                int64_t N, double momentum, int dtype, void* stream);

/* Number of float32 elements of workspace zs2_kl_sums needs for these sizes (0: pass NULL). */
ZS2_API int64_t zs2_kl_sums_workspace_size(int64_t R, int64_t B, int64_t D);

/* prev [B, D] with row stride prev_stride (unit stride inside a row), candidates [R, B, D] contiguous:
 *   A[b]         = mean_d exp(p[b, d]) * p[b, d]
 *   C[b * R + r] = mean_d exp(p[b, d]) * candidates[r, b, d]
 *   E[b]         = mean_d exp(p[b, d]) * exp(p[b, d])        (computed in the same pass as A)
 * float32 outputs, float32 accumulation, bitwise deterministic (fixed reduction order, no atomics).
 * `workspace` holds zs2_kl_sums_workspace_size(R, B, D) floats of per-chunk partial sums; D must be > 0. */
ZS2_API int zs2_kl_sums(const void* prev, int64_t prev_stride, const void* candidates, float* A, float* C,
                        float* E, float* workspace, int64_t R, int64_t B, int64_t D, int dtype, void* stream);

/* out [B, D] contiguous, prev's dtype, with (keep, fresh, tilt) = coefficients[3 * b + 0, 1, 2]:
 *   out[b, d] = keep * p[b, d] + fresh * candidates[index[b], b, d] - tilt * exp(p[b, d])
 * with index int64 [B] and coefficients float64 [B, 3] contiguous, rounded to float and used as given (no
 * clamping: a NaN coefficient gives a NaN row). The exp term is computed only where tilt != 0 (after rounding
 * to float), so a row with tilt = 0 stays finite whatever exp(p) would be. Requires 0 <= index[b] < R; a row
 * whose index is out of range is written as NaN instead of being read out of bounds (checking on the host
 * would need a synchronisation). */
ZS2_API int zs2_compose(const void* prev, int64_t prev_stride, const void* candidates, const int64_t* index,
                        const double* coefficients, void* out, int64_t R, int64_t B, int64_t D, int dtype,
                        void* stream);

#ifdef __cplusplus
}
#endif

#endif /* ZS2_OPS_H */
