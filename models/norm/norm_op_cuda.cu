// CUDA kernels of the norm op, on raw pointers (norm_kernels.h): no ATen here.
//
// Row kernel: tpr threads per row (one warp for small d, several warps for large d), each
// holding kNV packs of kVec elements in registers, so x (and the residual) are read from device
// memory once: 16-byte loads and stores (8 fp16/bf16 or 4 fp32 values) where the row starts
// are 16-byte aligned, element loads otherwise; a partial last pack takes the scalar tail.
// Statistics in fp32 through warp shuffles (plus shared memory across the warps of a row):
// mean, then the variance around it, from the registers. PowerNorm's group statistic goes
// through shared memory (one partial sum per pack, then one warp per group), in a fixed order,
// so results do not change from run to run. Rows too long for the registers go to a multi-pass
// kernel (one block per row) that re-reads the row from memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/norm/norm_kernels.h"

namespace normserve::cuda {
namespace {

void Check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " +
                             cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}
#define NORMSERVE_CUDA_CHECK(expr) Check((expr), #expr)

// ---- Storage types ----------------------------------------------------------------------------

template <typename T>
struct Storage;
template <>
struct Storage<float> {
  static __device__ __forceinline__ float ToFloat(float v) { return v; }
  static __device__ __forceinline__ float FromFloat(float v) { return v; }
};
template <>
struct Storage<__half> {
  static __device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half FromFloat(float v) { return __float2half_rn(v); }
};
template <>
struct Storage<__nv_bfloat16> {
  static __device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 FromFloat(float v) {
    return __float2bfloat16_rn(v);
  }
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

struct DeviceArgs {
  const void* x;
  int64_t x_stride;
  void* r;  // null: plain form
  int64_t r_stride;
  void* y;
  int64_t y_stride;
  int64_t rows;
  int d;
  int stat_channels;
  int groups;
  int group_size;
  float eps;
  bool eps_inside_sqrt;
  const float* scale;
  const float* shift;  // may be null
};

__device__ __forceinline__ float InverseRoot(float s, float eps, bool inside) {
  return inside ? rsqrtf(s + eps) : 1.0f / (sqrtf(s) + eps);
}

// Elements [base, base + N) of a row into fp32; zeros past d.
template <typename T, int N>
__device__ __forceinline__ void LoadPack(const T* __restrict__ p, int base, int d,
                                         float (&out)[N]) {
  if (base + N <= d) {
    const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p + base);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = Storage<T>::ToFloat(pk.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = base + j < d ? Storage<T>::ToFloat(p[base + j]) : 0.0f;
  }
}

template <typename T, int N>
__device__ __forceinline__ void StorePack(T* __restrict__ p, int base, int d,
                                          const float (&in)[N]) {
  if (base + N <= d) {
    Pack<T, N> pk;
#pragma unroll
    for (int j = 0; j < N; ++j) pk.v[j] = Storage<T>::FromFloat(in[j]);
    *reinterpret_cast<Pack<T, N>*>(p + base) = pk;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (base + j < d) p[base + j] = Storage<T>::FromFloat(in[j]);
    }
  }
}

// fp32 weights: 16-byte loads when N is a multiple of 4 (the vector path checks alignment).
template <int N>
__device__ __forceinline__ void LoadWeights(const float* __restrict__ p, int base, int d,
                                            float (&out)[N]) {
  if constexpr (N % 4 == 0) {
    if (base + N <= d) {
#pragma unroll
      for (int j = 0; j < N; j += 4) {
        const float4 f = __ldg(reinterpret_cast<const float4*>(p + base + j));
        out[j] = f.x;
        out[j + 1] = f.y;
        out[j + 2] = f.z;
        out[j + 3] = f.w;
      }
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = base + j < d ? __ldg(p + base + j) : 0.0f;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the blockDim.x threads of a row (a multiple of 32; one row per block when more
// than 32). Every thread gets the same total, added in the same order.
__device__ __forceinline__ float RowSum(float v, float* red) {
  v = WarpSum(v);
  if (blockDim.x <= 32) return v;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  __syncthreads();  // the previous RowSum has read red
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? red[lane] : 0.0f;
  return WarpSum(v);
}

__device__ __forceinline__ void RowSync() {
  if (blockDim.x <= 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
}

// blockDim = (tpr, rows per block); thread lane of a row holds packs lane + i * tpr.
constexpr int kMaxRowThreads = 512;  // up to 128 registers per thread: no spills

template <typename T, int kVec, int kNV, RowStatistic kStat>
__global__ void __launch_bounds__(kMaxRowThreads) NormRowsKernel(const DeviceArgs a) {
  extern __shared__ float smem[];
  float* red = smem;  // 32 floats for RowSum
  const int tpr = blockDim.x;
  const int lane = threadIdx.x;
  const int d = a.d;
  const int packs = (d + kVec - 1) / kVec;
  // kGroupMeanSquare: per row slot, one partial sum per pack, then one rstd per group.
  float* part = smem + 32 + threadIdx.y * (tpr * kNV + a.groups);
  float* group_rstd = part + tpr * kNV;

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < a.rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
    T* y = static_cast<T*>(a.y) + row * a.y_stride;
    float v[kNV][kVec];
#pragma unroll
    for (int i = 0; i < kNV; ++i) LoadPack<T, kVec>(x, (lane + i * tpr) * kVec, d, v[i]);
    if (a.r != nullptr) {
      T* r = static_cast<T*>(a.r) + row * a.r_stride;
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
        const int base = (lane + i * tpr) * kVec;
        if (base >= d) continue;
        float rv[kVec];
        LoadPack<T, kVec>(r, base, d, rv);
        float h[kVec];
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          // Rounded to the storage dtype as the unfused add would be, and normalized so.
          h[j] = Storage<T>::ToFloat(Storage<T>::FromFloat(v[i][j] + rv[j]));
          v[i][j] = base + j < d ? h[j] : 0.0f;
        }
        StorePack<T, kVec>(r, base, d, h);
      }
    }

    float mean = 0.0f;
    float rstd = 1.0f;
    if constexpr (kStat == RowStatistic::kMeanVariance) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) s += v[i][j];  // zeros past d
      }
      mean = RowSum(s, red) / static_cast<float>(d);
      float q = 0.0f;
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const float c = (lane + i * tpr) * kVec + j < d ? v[i][j] - mean : 0.0f;
          q += c * c;
        }
      }
      rstd = InverseRoot(RowSum(q, red) / static_cast<float>(d), a.eps, a.eps_inside_sqrt);
    } else if constexpr (kStat == RowStatistic::kMeanSquare) {
      float q = 0.0f;
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          q += (lane + i * tpr) * kVec + j < a.stat_channels ? v[i][j] * v[i][j] : 0.0f;
        }
      }
      rstd = InverseRoot(RowSum(q, red) / static_cast<float>(a.stat_channels), a.eps,
                         a.eps_inside_sqrt);
    } else if constexpr (kStat == RowStatistic::kCompressedMeanSquare) {
      // The implied channel d is -sum(x): its square joins the sum of squares (zeros past d).
      float s = 0.0f;
      float q = 0.0f;
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          s += v[i][j];
          q += v[i][j] * v[i][j];
        }
      }
      const float sum = RowSum(s, red);
      q = RowSum(q, red);
      rstd = InverseRoot((q + sum * sum) / static_cast<float>(d + 1), a.eps, a.eps_inside_sqrt);
    } else if constexpr (kStat == RowStatistic::kGroupMeanSquare) {
      // Packs never straddle groups (the host checks group_size % kVec == 0).
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
        const int p = lane + i * tpr;
        if (p < packs) {
          float q = 0.0f;
#pragma unroll
          for (int j = 0; j < kVec; ++j) q += v[i][j] * v[i][j];
          part[p] = q;
        }
      }
      RowSync();
      const int packs_per_group = a.group_size / kVec;
      const int warps = tpr >> 5;
      for (int g = lane >> 5; g < a.groups; g += warps) {
        float q = 0.0f;
        for (int k = lane & 31; k < packs_per_group; k += 32) q += part[g * packs_per_group + k];
        q = WarpSum(q);
        if ((lane & 31) == 0) {
          group_rstd[g] = InverseRoot(q / static_cast<float>(a.group_size), a.eps, true);
        }
      }
      RowSync();
    }

#pragma unroll
    for (int i = 0; i < kNV; ++i) {
      const int base = (lane + i * tpr) * kVec;
      if (base >= d) continue;
      float s[kVec];
      float t[kVec];
      LoadWeights<kVec>(a.scale, base, d, s);
      if (a.shift != nullptr) {
        LoadWeights<kVec>(a.shift, base, d, t);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) t[j] = 0.0f;
      }
      if constexpr (kStat == RowStatistic::kGroupMeanSquare) rstd = group_rstd[base / a.group_size];
      float o[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if constexpr (kStat == RowStatistic::kNone) {
          o[j] = v[i][j] * s[j] + t[j];
        } else {
          o[j] = (v[i][j] - mean) * rstd * s[j] + t[j];
        }
      }
      StorePack<T, kVec>(y, base, d, o);
    }
  }
}

// Rows too long for the register kernel: one block per row, reading the row from memory once
// per pass (the fused form first writes x + r to r, then reads r).
template <typename T, RowStatistic kStat>
__global__ void __launch_bounds__(512) NormRowsLargeKernel(const DeviceArgs a) {
  __shared__ float red[32];
  const int d = a.d;
  for (int64_t row = blockIdx.x; row < a.rows; row += gridDim.x) {
    const T* src = static_cast<const T*>(a.x) + row * a.x_stride;
    T* y = static_cast<T*>(a.y) + row * a.y_stride;
    if (a.r != nullptr) {
      T* r = static_cast<T*>(a.r) + row * a.r_stride;
      for (int c = threadIdx.x; c < d; c += blockDim.x) {
        r[c] = Storage<T>::FromFloat(Storage<T>::ToFloat(src[c]) + Storage<T>::ToFloat(r[c]));
      }
      __syncthreads();  // the block's writes to r are visible to the block
      src = r;
    }
    const auto at = [&](int c) { return Storage<T>::ToFloat(src[c]); };
    const auto store = [&](int c, float h, float mean, float rstd) {
      const float t = a.shift != nullptr ? a.shift[c] : 0.0f;
      y[c] = Storage<T>::FromFloat((h - mean) * rstd * a.scale[c] + t);
    };
    if constexpr (kStat == RowStatistic::kGroupMeanSquare) {
      for (int g = 0; g < a.groups; ++g) {
        const int begin = g * a.group_size;
        float q = 0.0f;
        for (int c = begin + threadIdx.x; c < begin + a.group_size; c += blockDim.x) {
          q += at(c) * at(c);
        }
        const float rstd =
            InverseRoot(RowSum(q, red) / static_cast<float>(a.group_size), a.eps, true);
        for (int c = begin + threadIdx.x; c < begin + a.group_size; c += blockDim.x) {
          store(c, at(c), 0.0f, rstd);
        }
      }
    } else {
      float mean = 0.0f;
      float rstd = 1.0f;
      if constexpr (kStat == RowStatistic::kMeanVariance) {
        float s = 0.0f;
        for (int c = threadIdx.x; c < d; c += blockDim.x) s += at(c);
        mean = RowSum(s, red) / static_cast<float>(d);
        float q = 0.0f;
        for (int c = threadIdx.x; c < d; c += blockDim.x) q += (at(c) - mean) * (at(c) - mean);
        rstd = InverseRoot(RowSum(q, red) / static_cast<float>(d), a.eps, a.eps_inside_sqrt);
      } else if constexpr (kStat == RowStatistic::kMeanSquare) {
        float q = 0.0f;
        for (int c = threadIdx.x; c < a.stat_channels; c += blockDim.x) q += at(c) * at(c);
        rstd = InverseRoot(RowSum(q, red) / static_cast<float>(a.stat_channels), a.eps,
                           a.eps_inside_sqrt);
      } else if constexpr (kStat == RowStatistic::kCompressedMeanSquare) {
        float s = 0.0f;
        float q = 0.0f;
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
          s += at(c);
          q += at(c) * at(c);
        }
        const float sum = RowSum(s, red);
        q = RowSum(q, red);
        rstd = InverseRoot((q + sum * sum) / static_cast<float>(d + 1), a.eps, a.eps_inside_sqrt);
      }
      for (int c = threadIdx.x; c < d; c += blockDim.x) {
        if constexpr (kStat == RowStatistic::kNone) {
          const float t = a.shift != nullptr ? a.shift[c] : 0.0f;
          y[c] = Storage<T>::FromFloat(at(c) * a.scale[c] + t);
        } else {
          store(c, at(c), mean, rstd);
        }
      }
    }
    __syncthreads();  // RowSum's red is reused by the next row
  }
}

// ---- Launch planning --------------------------------------------------------------------------

struct DeviceInfo {
  int sms = 0;
  int max_threads_per_sm = 0;
  int max_shared_per_block = 0;
};

const DeviceInfo& Info(int device) {
  static std::mutex mutex;
  static std::vector<DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1);
  DeviceInfo& info = cache[device];
  if (info.sms == 0) {
    NORMSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
    NORMSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&info.max_threads_per_sm,
                                                cudaDevAttrMaxThreadsPerMultiProcessor, device));
    NORMSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&info.max_shared_per_block,
                                                cudaDevAttrMaxSharedMemoryPerBlock, device));
  }
  return info;
}

struct Plan {
  bool large = false;  // the multi-pass kernel
  int vec = 1;
  int nv = 1;
  int tpr = 32;
  int rpb = 1;
  size_t shared = 0;
  int grid = 1;
};

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int RoundUp(int v, int m) { return (v + m - 1) / m * m; }

Plan MakePlan(const NormKernelArgs& a, const DeviceInfo& info) {
  Plan plan;
  const int size = NormDtypeSize(a.dtype);
  const int wide = 16 / size;
  const bool one_row = a.rows == 1;  // its stride does not matter
  const auto stride_ok = [&](int64_t stride) { return one_row || (stride * size) % 16 == 0; };
  const bool aligned =
      Aligned16(a.x) && Aligned16(a.y) && Aligned16(a.scale) &&
      (a.shift == nullptr || Aligned16(a.shift)) && stride_ok(a.x_stride) &&
      stride_ok(a.y_stride) &&
      (a.residual == nullptr || (Aligned16(a.residual) && stride_ok(a.residual_stride)));
  const int64_t group_size = a.d / a.groups;
  const bool groups_ok = a.statistic != RowStatistic::kGroupMeanSquare || group_size % wide == 0;
  plan.vec = aligned && groups_ok && a.d >= wide ? wide : 1;
  // Packs per thread: <= 32 fp32 values (16-bit) or 16 (fp32: more spills registers).
  const int max_nv = plan.vec == 1 ? 8 : 4;
  const int64_t packs = (a.d + plan.vec - 1) / plan.vec;
  if (packs <= 32 * max_nv) {
    plan.tpr = 32;
    plan.nv = 1;
    while (32 * plan.nv < packs) plan.nv *= 2;
    plan.rpb = 4;
  } else {
    plan.nv = max_nv;
    const int64_t threads = (packs + plan.nv - 1) / plan.nv;
    if (threads > kMaxRowThreads) {
      plan.large = true;
    } else {
      plan.tpr = RoundUp(static_cast<int>(threads), 32);
      plan.rpb = 1;
    }
  }
  if (!plan.large) {
    plan.shared = 32 * sizeof(float);
    if (a.statistic == RowStatistic::kGroupMeanSquare) {
      plan.shared += sizeof(float) * plan.rpb * (plan.tpr * plan.nv + a.groups);
    }
    if (plan.shared > static_cast<size_t>(info.max_shared_per_block)) plan.large = true;
  }
  const int threads = plan.large ? 512 : plan.tpr * plan.rpb;
  if (plan.large) plan.shared = 0;
  const int64_t rows_per_block = plan.large ? 1 : plan.rpb;
  const int64_t blocks = (a.rows + rows_per_block - 1) / rows_per_block;
  const int64_t resident =
      static_cast<int64_t>(info.sms) *
      (info.max_threads_per_sm / threads > 0 ? info.max_threads_per_sm / threads : 1);
  plan.grid = static_cast<int>(blocks < resident ? blocks : resident);
  return plan;
}

template <typename T, RowStatistic S, int kVec, int kNV>
void LaunchRows(const DeviceArgs& da, const Plan& plan, cudaStream_t stream) {
  const dim3 block(plan.tpr, plan.rpb);
  NormRowsKernel<T, kVec, kNV, S><<<plan.grid, block, plan.shared, stream>>>(da);
  Check(cudaGetLastError(), "NormRowsKernel launch");
}

template <typename T, RowStatistic S, int kVec>
void LaunchPacks(const DeviceArgs& da, const Plan& plan, cudaStream_t stream) {
  switch (plan.nv) {
    case 1:
      return LaunchRows<T, S, kVec, 1>(da, plan, stream);
    case 2:
      return LaunchRows<T, S, kVec, 2>(da, plan, stream);
    case 4:
      return LaunchRows<T, S, kVec, 4>(da, plan, stream);
    case 8:
      if constexpr (kVec == 1) return LaunchRows<T, S, kVec, 8>(da, plan, stream);
      break;
  }
  throw std::logic_error("norm kernel: no instantiation for this launch plan");
}

template <typename T, RowStatistic S>
void LaunchStatistic(const DeviceArgs& da, const Plan& plan, cudaStream_t stream) {
  if (plan.large) {
    NormRowsLargeKernel<T, S><<<plan.grid, 512, 0, stream>>>(da);
    Check(cudaGetLastError(), "NormRowsLargeKernel launch");
  } else if (plan.vec == 1) {
    LaunchPacks<T, S, 1>(da, plan, stream);
  } else {
    LaunchPacks<T, S, 16 / sizeof(T)>(da, plan, stream);
  }
}

template <typename T>
void LaunchType(const NormKernelArgs& a, const DeviceArgs& da, const Plan& plan,
                cudaStream_t stream) {
  switch (a.statistic) {
    case RowStatistic::kNone:
      return LaunchStatistic<T, RowStatistic::kNone>(da, plan, stream);
    case RowStatistic::kMeanVariance:
      return LaunchStatistic<T, RowStatistic::kMeanVariance>(da, plan, stream);
    case RowStatistic::kMeanSquare:
      return LaunchStatistic<T, RowStatistic::kMeanSquare>(da, plan, stream);
    case RowStatistic::kGroupMeanSquare:
      return LaunchStatistic<T, RowStatistic::kGroupMeanSquare>(da, plan, stream);
    case RowStatistic::kCompressedMeanSquare:
      return LaunchStatistic<T, RowStatistic::kCompressedMeanSquare>(da, plan, stream);
  }
}

}  // namespace

bool Compiled() { return true; }

int DeviceCount() {
  int n = 0;
  // Without a driver or a GPU this fails and leaves n untouched.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error state so that later calls start clean
    return 0;
  }
  return n;
}

void RunNorm(const NormKernelArgs& a, void* stream_ptr) {
  ValidateNormArgs(a);
  if (a.rows == 0 || a.d == 0) return;
  if (a.d > (int64_t{1} << 30)) throw std::invalid_argument("norm kernel: d too large for CUDA");
  int device = 0;
  NORMSERVE_CUDA_CHECK(cudaGetDevice(&device));
  const Plan plan = MakePlan(a, Info(device));
  DeviceArgs da;
  da.x = a.x;
  da.x_stride = a.x_stride;
  da.r = a.residual;
  da.r_stride = a.residual_stride;
  da.y = a.y;
  da.y_stride = a.y_stride;
  da.rows = a.rows;
  da.d = static_cast<int>(a.d);
  da.stat_channels = static_cast<int>(a.stat_channels > 0 ? a.stat_channels : a.d);
  da.groups = a.statistic == RowStatistic::kGroupMeanSquare ? static_cast<int>(a.groups) : 0;
  da.group_size = da.groups > 0 ? static_cast<int>(a.d / a.groups) : 0;
  da.eps = a.eps;
  da.eps_inside_sqrt = a.eps_inside_sqrt;
  da.scale = a.scale;
  da.shift = a.shift;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  switch (a.dtype) {
    case NormDtype::kFloat32:
      return LaunchType<float>(a, da, plan, stream);
    case NormDtype::kFloat16:
      return LaunchType<__half>(a, da, plan, stream);
    case NormDtype::kBFloat16:
      return LaunchType<__nv_bfloat16>(a, da, plan, stream);
  }
}

void* CreateTimingEvent() {
  cudaEvent_t e = nullptr;
  NORMSERVE_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void DestroyTimingEvent(void* event) {
  if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));  // at exit: ignore
}

void RecordTimingEvent(void* event, void* stream) {
  NORMSERVE_CUDA_CHECK(
      cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

float ElapsedMilliseconds(void* start, void* stop) {
  NORMSERVE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop)));
  float ms = 0.0f;
  NORMSERVE_CUDA_CHECK(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop)));
  return ms;
}

}  // namespace normserve::cuda
