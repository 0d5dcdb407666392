// CUDA kernels of the two zs2 ops (momentum EMA, dependency-noise KL sums + composition) behind the C
// interface of zs2_ops.h. All three ops are memory bound: every kernel reads each input element once (the
// KL kernel re-reads prev once per tile of kKlRows outputs, from L2), accumulates in float32 and writes
// each output once. Indexing is int64 throughout; sizes are arbitrary.
#include "zs2_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace {

constexpr int kThreads = 256;  // every kernel: 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Momentum: frames whose loads a thread issues before the dependent EMA updates (memory-level parallelism
// for the recursion, which only has G * N / VEC independent threads).
constexpr int kFramesInFlight = 4;
// KL sums: a block reduces kKlChunk elements of D for kKlRows consecutive output rows of one batch item.
// The chunking depends on D only (not on the GPU's SM count), so for given inputs the reduction order,
// hence every bit of the result, is the same on every run and every GPU.
constexpr int64_t kKlChunk = 4096;
constexpr int kKlRows = 4;

thread_local char g_last_error[512] = "";

__attribute__((format(printf, 2, 3))) int fail(int code, const char* format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(g_last_error, sizeof(g_last_error), format, args);
    va_end(args);
    return code;
}

// ZS2_OK, or an invalid-argument error naming the three sizes when one of them is negative.
int check_sizes(const char* op, const char* names, int64_t a, int64_t b, int64_t c) {
    if (a >= 0 && b >= 0 && c >= 0) return ZS2_OK;
    return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: negative size (%s = %lld, %lld, %lld)", op, names,
                static_cast<long long>(a), static_cast<long long>(b), static_cast<long long>(c));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

// Grids are 1-D (gridDim.x allows 2^31 - 1 blocks; y and z only 65535, too few for B or G).
int grid_size(const char* op, int64_t blocks, unsigned* grid) {
    if (blocks > INT_MAX) {
        return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: problem too large for one launch (%lld blocks)", op,
                    static_cast<long long>(blocks));
    }
    *grid = static_cast<unsigned>(blocks);
    return ZS2_OK;
}

int check_launch(const char* op) {
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) {
        return fail(ZS2_ERROR_CUDA, "%s: kernel launch failed: %s", op, cudaGetErrorString(error));
    }
    return ZS2_OK;
}

// Calls body(T{}) with T the element type of `dtype`.
template <typename Body>
int dispatch_dtype(const char* op, int dtype, Body&& body) {
    switch (dtype) {
        case ZS2_FLOAT32:
            return body(float{});
        case ZS2_FLOAT16:
            return body(__half{});
        case ZS2_BFLOAT16:
            return body(__nv_bfloat16{});
        default:
            return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: unknown dtype code %d (0=float32, 1=float16, 2=bfloat16)",
                        op, dtype);
    }
}

// ------------------------------------------------------------------------------------------- element access
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round-to-nearest-even, as torch's .to(dtype).
template <typename T>
__device__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// VEC consecutive elements moved as one access: 16 bytes (ld/st.global.v4) when VEC = 16 / sizeof(T), which
// the launchers pick only when every pointer is 16-byte aligned and every row stride is a multiple of VEC;
// VEC = 1 is the scalar fallback.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* __restrict__ source) {
    return *reinterpret_cast<const Pack<T, VEC>*>(source);
}

template <typename T, int VEC>
__device__ __forceinline__ void load_floats(const T* __restrict__ source, float (&values)[VEC]) {
    const Pack<T, VEC> pack = load_pack<T, VEC>(source);
#pragma unroll
    for (int i = 0; i < VEC; ++i) values[i] = to_float(pack.v[i]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_pack(T* __restrict__ target, const Pack<T, VEC>& pack) {
    *reinterpret_cast<Pack<T, VEC>*>(target) = pack;
}

// VEC float32 values moved in 16-byte accesses (VEC a multiple of 4; the launchers then guarantee 16-byte
// alignment) or one by one (VEC = 1): the momentum state is float32 whatever the element type T.
template <int VEC>
constexpr int kFloatPart = VEC % 4 == 0 ? 4 : 1;

template <int VEC>
__device__ __forceinline__ void load_state(const float* __restrict__ source, float (&values)[VEC]) {
#pragma unroll
    for (int i = 0; i < VEC; i += kFloatPart<VEC>) {
        const Pack<float, kFloatPart<VEC>> part = load_pack<float, kFloatPart<VEC>>(source + i);
#pragma unroll
        for (int j = 0; j < kFloatPart<VEC>; ++j) values[i + j] = part.v[j];
    }
}

template <int VEC>
__device__ __forceinline__ void store_state(float* __restrict__ target, const float (&values)[VEC]) {
#pragma unroll
    for (int i = 0; i < VEC; i += kFloatPart<VEC>) {
        Pack<float, kFloatPart<VEC>> part;
#pragma unroll
        for (int j = 0; j < kFloatPart<VEC>; ++j) part.v[j] = values[i + j];
        store_pack<float, kFloatPart<VEC>>(target + i, part);
    }
}

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(kFullMask, value, offset);
    return value;  // complete in lane 0
}

// Sums each of values[0..K) over the block in a fixed order (per-warp shuffle tree, then the warp sums in
// warp order by warp 0): deterministic. The sums are complete in thread 0.
template <int K>
__device__ __forceinline__ void block_sum(float (&values)[K]) {
    __shared__ float warp_sums[K][kWarps];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        values[k] = warp_sum(values[k]);
        if (lane == 0) warp_sums[k][warp] = values[k];
    }
    __syncthreads();
    if (warp == 0) {
#pragma unroll
        for (int k = 0; k < K; ++k) values[k] = warp_sum(lane < kWarps ? warp_sums[k][lane] : 0.0f);
    }
}

// ------------------------------------------------------------------------------------------- momentum (EMA)
// x, y: [G, F, N]; init, state_out: float32 [G, N] or null. With s the float32 running value, for every (g, n):
//   s_0 = x[g, 0, n]                                    (no init)
//   s_0 = mu * init[g, n] + (1 - mu) * x[g, 0, n]       (init)
//   s_f = mu * s_{f-1} + (1 - mu) * x[g, f, n],   y[g, f, n] = s_f rounded to T,   state_out[g, n] = s_{F-1}
// The recursion runs in float32 registers; a thread owns VEC consecutive n of one group, so each element
// is read and written once. keep = (float)mu and take = (float)(1 - mu); products and sum are rounded
// separately (__fmul_rn/__fadd_rn, no FMA contraction), by one expression for every frame, so a video run
// in chunks (state_out of one passed as init of the next) gives the same bits as run whole. The PyTorch
// reference (add with alpha) and the compiled Triton kernel contract mu * s into an FMA instead, so this
// backend differs from them in the last bit (about 1e-7 relative): bit for bit within a backend, not across.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    momentum_kernel(const T* __restrict__ x, const float* __restrict__ init, T* __restrict__ y,
                    float* __restrict__ state_out, int64_t G, int64_t F, int64_t N, float keep, float take) {
    const int64_t threads_per_group = N / VEC;
    const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (thread >= G * threads_per_group) return;
    const int64_t g = thread / threads_per_group;
    const int64_t n = (thread - g * threads_per_group) * VEC;
    const T* __restrict__ x_row = x + g * F * N + n;
    T* __restrict__ y_row = y + g * F * N + n;

    float state[VEC] = {};
    if (init != nullptr) load_state<VEC>(init + g * N + n, state);
    for (int64_t f0 = 0; f0 < F; f0 += kFramesInFlight) {
        Pack<T, VEC> frames[kFramesInFlight];
#pragma unroll
        for (int u = 0; u < kFramesInFlight; ++u) {
            if (f0 + u < F) frames[u] = load_pack<T, VEC>(x_row + (f0 + u) * N);
        }
#pragma unroll
        for (int u = 0; u < kFramesInFlight; ++u) {
            if (f0 + u < F) {
                const bool copy = f0 + u == 0 && init == nullptr;  // y_0 = x_0
                Pack<T, VEC> out;
#pragma unroll
                for (int i = 0; i < VEC; ++i) {
                    const float value = to_float(frames[u].v[i]);
                    state[i] = copy ? value : __fadd_rn(__fmul_rn(keep, state[i]), __fmul_rn(take, value));
                    out.v[i] = from_float<T>(state[i]);
                }
                store_pack<T, VEC>(y_row + (f0 + u) * N, out);
            }
        }
    }
    if (state_out != nullptr) store_state<VEC>(state_out + g * N + n, state);
}

template <typename T, int VEC>
int launch_momentum(const T* x, const float* init, T* y, float* state_out, int64_t G, int64_t F, int64_t N,
                    double momentum, cudaStream_t stream) {
    unsigned grid = 0;
    if (const int status = grid_size("zs2_momentum_update", ceil_div(G * (N / VEC), kThreads), &grid)) return status;
    momentum_kernel<T, VEC><<<grid, kThreads, 0, stream>>>(x, init, y, state_out, G, F, N,
                                                          static_cast<float>(momentum),
                                                          static_cast<float>(1.0 - momentum));
    return check_launch("zs2_momentum_update");
}

// ------------------------------------------------------------------------------------------- KL sums
// Output rows of batch item b: row 0 is A[b] (its "candidate" is p itself), row j in [1, R] is C[b, j - 1]
// and row R + 1 is E[b]:
//   A[b]    = (1/D) sum_d w[d] * p[b, d]
//   C[b, r] = (1/D) sum_d w[d] * n[r, b, d],      w[d] = exp(p[b, d])
//   E[b]    = (1/D) sum_d w[d] * w[d]
// Block (b, tile, chunk) sums d in [chunk * kKlChunk, +kKlChunk) for rows [tile * kKlRows, +kKlRows): it
// computes w once per element and reuses it for kKlRows rows; the blocks of tile 0 (the one holding A) also
// sum E from the same w, so E costs no extra read. Each thread sums its elements in d order, then
// block_sum reduces in a fixed order. With one chunk the block writes the mean itself; otherwise it writes
// its partial sum to partial[(b * (R + 2) + row) * num_chunks + chunk] and kl_finish_kernel adds the chunks
// in chunk order. No atomics: the result is bitwise reproducible.
__device__ __forceinline__ void write_kl_result(int64_t b, int64_t row, int64_t R, float mean, float* A, float* C,
                                                float* E) {
    if (row == 0) {
        A[b] = mean;
    } else if (row <= R) {
        C[b * R + row - 1] = mean;
    } else {
        E[b] = mean;
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    kl_partial_kernel(const T* __restrict__ prev, int64_t prev_stride, const T* __restrict__ candidates, int64_t R,
                      int64_t B, int64_t D, unsigned num_tiles, unsigned num_chunks, float* __restrict__ partial,
                      float* __restrict__ A, float* __restrict__ C, float* __restrict__ E) {
    // 32-bit block decomposition: the grid has < 2^31 blocks, and a 64-bit division would be a subroutine
    // call whose ABI spills to the stack.
    const int64_t chunk = blockIdx.x % num_chunks;
    const int64_t tile = blockIdx.x / num_chunks % num_tiles;
    const int64_t b = blockIdx.x / num_chunks / num_tiles;
    const int64_t row0 = tile * kKlRows;
    const bool with_energy = tile == 0;  // block-uniform: this block also sums E (row R + 1)
    const int64_t begin = chunk * kKlChunk;
    const int64_t end = min(D, begin + kKlChunk);  // begin, end and D are multiples of VEC
    const T* __restrict__ p_row = prev + b * prev_stride;

    float sums[kKlRows + 1] = {};  // rows row0 .. row0 + kKlRows - 1, then E
    for (int64_t d = begin + static_cast<int64_t>(threadIdx.x) * VEC; d < end; d += kThreads * VEC) {
        float weight[VEC];
        load_floats<T, VEC>(p_row + d, weight);
#pragma unroll
        for (int i = 0; i < VEC; ++i) weight[i] = expf(weight[i]);
        if (with_energy) {
#pragma unroll
            for (int i = 0; i < VEC; ++i) sums[kKlRows] += weight[i] * weight[i];
        }
#pragma unroll
        for (int k = 0; k < kKlRows; ++k) {
            const int64_t row = row0 + k;
            if (row <= R) {
                float other[VEC];
                load_floats<T, VEC>((row == 0 ? p_row : candidates + ((row - 1) * B + b) * D) + d, other);
#pragma unroll
                for (int i = 0; i < VEC; ++i) sums[k] += weight[i] * other[i];
            }
        }
    }
    block_sum<kKlRows + 1>(sums);
    // Thread k <= kKlRows writes the block's output k (row row0 + k; k = kKlRows: E, in tile 0): one division
    // per thread, as the IEEE division's slow path is a subroutine call, and five call sites in thread 0 made
    // ptxas spill across them.
    static_assert(kKlRows + 1 <= kThreads, "one thread per output of the block");
    __shared__ float totals[kKlRows + 1];
    if (threadIdx.x == 0) {
#pragma unroll
        for (int k = 0; k <= kKlRows; ++k) totals[k] = sums[k];
    }
    __syncthreads();
    const int k = threadIdx.x;
    const int64_t row = k < kKlRows ? row0 + k : R + 1;
    if (k < kKlRows ? row <= R : k == kKlRows && with_energy) {
        if (num_chunks == 1) {
            write_kl_result(b, row, R, totals[k] / static_cast<float>(D), A, C, E);
        } else {
            partial[(b * (R + 2) + row) * num_chunks + chunk] = totals[k];
        }
    }
}

// One warp per output (b, row), row in [0, R + 1]: lanes add chunks lane, lane + 32, ... in order, then a
// shuffle tree.
__global__ void __launch_bounds__(kThreads)
    kl_finish_kernel(const float* __restrict__ partial, int64_t num_chunks, int64_t R, int64_t B, int64_t D,
                     float* __restrict__ A, float* __restrict__ C, float* __restrict__ E) {
    const int64_t output = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
    if (output >= B * (R + 2)) return;  // uniform per warp, so the shuffles below see full warps
    const int lane = threadIdx.x % 32;
    const float* __restrict__ chunks = partial + output * num_chunks;
    float sum = 0.0f;
    for (int64_t k = lane; k < num_chunks; k += 32) sum += chunks[k];
    sum = warp_sum(sum);
    if (lane == 0) write_kl_result(output / (R + 2), output % (R + 2), R, sum / static_cast<float>(D), A, C, E);
}

template <typename T, int VEC>
int launch_kl_sums(const T* prev, int64_t prev_stride, const T* candidates, float* A, float* C, float* E,
                   float* workspace, int64_t R, int64_t B, int64_t D, cudaStream_t stream) {
    const int64_t num_tiles = ceil_div(R + 1, kKlRows);  // rows 0..R; E rides along in tile 0
    const int64_t num_chunks = ceil_div(D, kKlChunk);
    unsigned grid = 0;
    if (const int status = grid_size("zs2_kl_sums", B * num_tiles * num_chunks, &grid)) return status;
    kl_partial_kernel<T, VEC><<<grid, kThreads, 0, stream>>>(prev, prev_stride, candidates, R, B, D,
                                                             static_cast<unsigned>(num_tiles),
                                                             static_cast<unsigned>(num_chunks), workspace, A, C, E);
    if (const int status = check_launch("zs2_kl_sums")) return status;
    if (num_chunks == 1) return ZS2_OK;
    if (const int status = grid_size("zs2_kl_sums", ceil_div(B * (R + 2), kWarps), &grid)) return status;
    kl_finish_kernel<<<grid, kThreads, 0, stream>>>(workspace, num_chunks, R, B, D, A, C, E);
    return check_launch("zs2_kl_sums");
}

// ------------------------------------------------------------------------------------------- compose
// out[b, d] = keep_b * p[b, d] + fresh_b * n[index[b], b, d] - tilt_b * exp(p[b, d]), with (keep_b, fresh_b,
// tilt_b) = coefficients[b] rounded to float and used as given (a NaN coefficient gives a NaN row). The exp
// term is subtracted only where tilt_b != 0, so with tilt_b = 0 an overflowing exp(p) (p = 100) never
// meets a zero (inf * 0 = NaN); the test is uniform per row, so the paper search's rows compute no exp.
// Products, sum and difference are rounded separately, in the PyTorch reference's order
// ((keep * p + fresh * n) - tilt * exp(p)); expf and torch's exp may differ in the last bit, and the
// compiled Triton kernel contracts keep * p into an FMA, so the backends agree to about 1e-7 relative.
// Block (b, chunk) covers kThreads * VEC elements of row b, so the coefficients and index are read once per
// thread from one cached address.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    compose_kernel(const T* __restrict__ prev, int64_t prev_stride, const T* __restrict__ candidates,
                   const int64_t* __restrict__ index, const double* __restrict__ coefficients, T* __restrict__ out,
                   int64_t R, int64_t B, int64_t D, unsigned blocks_per_row) {
    const int64_t b = blockIdx.x / blocks_per_row;  // 32-bit division, as in kl_partial_kernel
    const int64_t chunk = blockIdx.x % blocks_per_row;
    const int64_t d = (chunk * kThreads + threadIdx.x) * VEC;
    if (d >= D) return;
    const float keep = static_cast<float>(coefficients[3 * b]);
    const float fresh = static_cast<float>(coefficients[3 * b + 1]);
    const float tilt = static_cast<float>(coefficients[3 * b + 2]);
    const int64_t r = index[b];
    Pack<T, VEC> result;
    if (r >= 0 && r < R) {
        float p[VEC];
        float n[VEC];
        load_floats<T, VEC>(prev + b * prev_stride + d, p);
        load_floats<T, VEC>(candidates + (r * B + b) * D + d, n);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            float value = __fadd_rn(__fmul_rn(keep, p[i]), __fmul_rn(fresh, n[i]));
            if (tilt != 0.0f) value = __fsub_rn(value, __fmul_rn(tilt, expf(p[i])));
            result.v[i] = from_float<T>(value);
        }
    } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) result.v[i] = from_float<T>(__int_as_float(0x7fc00000));  // quiet NaN
    }
    store_pack<T, VEC>(out + b * D + d, result);
}

template <typename T, int VEC>
int launch_compose(const T* prev, int64_t prev_stride, const T* candidates, const int64_t* index,
                   const double* coefficients, T* out, int64_t R, int64_t B, int64_t D, cudaStream_t stream) {
    const int64_t blocks_per_row = ceil_div(D, kThreads * VEC);
    unsigned grid = 0;
    if (const int status = grid_size("zs2_compose", B * blocks_per_row, &grid)) return status;
    compose_kernel<T, VEC><<<grid, kThreads, 0, stream>>>(prev, prev_stride, candidates, index, coefficients, out,
                                                          R, B, D, static_cast<unsigned>(blocks_per_row));
    return check_launch("zs2_compose");
}

}  // namespace

// ------------------------------------------------------------------------------------------- C interface
extern "C" {

const char* zs2_last_error(void) { return g_last_error; }

int zs2_cuda_runtime_version(void) { return CUDART_VERSION; }

int zs2_cubin_archs(int* archs, int capacity) {
    // nvcc lists the archs it compiled device code for (800 for sm_80); csrc/build.py compiles a cubin for each
    // (and PTX for the newest). A compiler that is not nvcc (the tests' host emulation) reports none.
#ifdef __CUDA_ARCH_LIST__
    static const int compiled[] = {__CUDA_ARCH_LIST__};
#else
    static const int compiled[] = {0};
#endif
    int count = 0;
    for (const int arch : compiled) {
        if (arch <= 0) continue;
        if (count < capacity) archs[count] = arch / 10;
        ++count;
    }
    return count;
}

int zs2_momentum_update(const void* x, const float* init, void* y, float* state, int64_t G, int64_t F, int64_t N,
                        double momentum, int dtype, void* stream) {
    const char* op = "zs2_momentum_update";
    if (int status = check_sizes(op, "G, F, N", G, F, N)) return status;
    if (state != nullptr && F == 0 && G > 0 && N > 0) {
        return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: a state needs at least one frame (F = 0)", op);
    }
    return dispatch_dtype(op, dtype, [&](auto tag) {
        using T = decltype(tag);
        constexpr int kVec = 16 / sizeof(T);
        if (G == 0 || F == 0 || N == 0) return static_cast<int>(ZS2_OK);
        if (x == nullptr || y == nullptr) return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: null x or y", op);
        const T* x_typed = static_cast<const T*>(x);
        T* y_typed = static_cast<T*>(y);
        const auto s = static_cast<cudaStream_t>(stream);
        const bool vector = N % kVec == 0 && aligned16(x) && aligned16(y) && aligned16(init) && aligned16(state);
        return vector ? launch_momentum<T, kVec>(x_typed, init, y_typed, state, G, F, N, momentum, s)
                      : launch_momentum<T, 1>(x_typed, init, y_typed, state, G, F, N, momentum, s);
    });
}

int64_t zs2_kl_sums_workspace_size(int64_t R, int64_t B, int64_t D) {
    if (R < 0 || B < 0 || D <= 0) return -1;
    const int64_t num_chunks = ceil_div(D, kKlChunk);
    return num_chunks > 1 ? B * (R + 2) * num_chunks : 0;  // per chunk: A, the R C's and E of each b
}

int zs2_kl_sums(const void* prev, int64_t prev_stride, const void* candidates, float* A, float* C, float* E,
                float* workspace, int64_t R, int64_t B, int64_t D, int dtype, void* stream) {
    const char* op = "zs2_kl_sums";
    if (R < 0 || B < 0 || D <= 0) {
        return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: need R >= 0, B >= 0, D > 0 (got R=%lld, B=%lld, D=%lld)", op,
                    static_cast<long long>(R), static_cast<long long>(B), static_cast<long long>(D));
    }
    return dispatch_dtype(op, dtype, [&](auto tag) {
        using T = decltype(tag);
        constexpr int kVec = 16 / sizeof(T);
        if (B == 0) return static_cast<int>(ZS2_OK);
        if (prev == nullptr || A == nullptr || E == nullptr || (R > 0 && (candidates == nullptr || C == nullptr))) {
            return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: null prev, candidates, A, C or E", op);
        }
        if (zs2_kl_sums_workspace_size(R, B, D) > 0 && workspace == nullptr) {
            return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: D=%lld needs a workspace of %lld floats", op,
                        static_cast<long long>(D), static_cast<long long>(zs2_kl_sums_workspace_size(R, B, D)));
        }
        const T* prev_typed = static_cast<const T*>(prev);
        const T* candidates_typed = static_cast<const T*>(candidates);
        const auto s = static_cast<cudaStream_t>(stream);
        const bool vector = D % kVec == 0 && prev_stride % kVec == 0 && aligned16(prev) && aligned16(candidates);
        return vector ? launch_kl_sums<T, kVec>(prev_typed, prev_stride, candidates_typed, A, C, E, workspace, R, B,
                                                D, s)
                      : launch_kl_sums<T, 1>(prev_typed, prev_stride, candidates_typed, A, C, E, workspace, R, B, D,
                                             s);
    });
}

int zs2_compose(const void* prev, int64_t prev_stride, const void* candidates, const int64_t* index,
                const double* coefficients, void* out, int64_t R, int64_t B, int64_t D, int dtype, void* stream) {
    const char* op = "zs2_compose";
    if (int status = check_sizes(op, "R, B, D", R, B, D)) return status;
    return dispatch_dtype(op, dtype, [&](auto tag) {
        using T = decltype(tag);
        constexpr int kVec = 16 / sizeof(T);
        if (B == 0 || D == 0) return static_cast<int>(ZS2_OK);
        if (prev == nullptr || index == nullptr || coefficients == nullptr || out == nullptr) {
            return fail(ZS2_ERROR_INVALID_ARGUMENT, "%s: null prev, index, coefficients or out", op);
        }
        const T* prev_typed = static_cast<const T*>(prev);
        const T* candidates_typed = static_cast<const T*>(candidates);
        T* out_typed = static_cast<T*>(out);
        const auto s = static_cast<cudaStream_t>(stream);
        const bool vector =
            D % kVec == 0 && prev_stride % kVec == 0 && aligned16(prev) && aligned16(candidates) && aligned16(out);
        return vector ? launch_compose<T, kVec>(prev_typed, prev_stride, candidates_typed, index, coefficients,
                                                out_typed, R, B, D, s)
                      : launch_compose<T, 1>(prev_typed, prev_stride, candidates_typed, index, coefficients,
                                             out_typed, R, B, D, s);
    });
}

}  // extern "C"
