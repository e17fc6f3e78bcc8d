// The CUDA norm kernels through the raw API (norm_kernels.h) on cudaMalloc'ed buffers, against
// the float64 reference of tests/kernels/norm_kernel_check.h: every variant x dtype x {plain,
// fused} x d in {1, 3, 8, 33, 127, 1000, 4097, 8192} x rows {1, 3, 33} (rows that do not fill a
// block) x row strides (aligned: 16-byte vector path; misaligned: element path), outputs
// poisoned with NaN. Compiled whenever nvcc is found; every test skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "models/norm/norm_kernels.h"
#include "tests/kernels/norm_kernel_check.h"

namespace normserve::kernel_test {
namespace {

#define CUDA_OK(expr)                                                                \
  do {                                                                               \
    const cudaError_t status_ = (expr);                                              \
    ASSERT_EQ(status_, cudaSuccess) << #expr << ": " << cudaGetErrorString(status_); \
  } while (0)

bool HaveGpu() { return cuda::DeviceCount() > 0; }

// A device copy of a host buffer, freed on scope exit. `offset_bytes` shifts the pointer the
// kernel sees (a misaligned base forces the element path).
class DeviceBuffer {
 public:
  DeviceBuffer(const void* host, size_t bytes, size_t offset_bytes = 0)
      : bytes_(bytes), offset_(offset_bytes) {
    if (cudaMalloc(&base_, bytes + offset_bytes + 16) != cudaSuccess) base_ = nullptr;
    if (base_ != nullptr && bytes > 0) {
      cudaMemcpy(static_cast<char*>(base_) + offset_, host, bytes, cudaMemcpyHostToDevice);
    }
  }
  ~DeviceBuffer() {
    if (base_ != nullptr) cudaFree(base_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool ok() const { return base_ != nullptr; }
  void* get() const { return static_cast<char*>(base_) + offset_; }
  cudaError_t CopyTo(void* host) const {
    return cudaMemcpy(host, get(), bytes_, cudaMemcpyDeviceToHost);
  }

 private:
  void* base_ = nullptr;
  size_t bytes_;
  size_t offset_;
};

// Runs p on the GPU (on `stream`) and checks it; returns y's bytes for determinism checks.
void RunAndCheck(Problem& p, size_t misalign_bytes, cudaStream_t stream,
                 std::vector<unsigned char>* y_bytes = nullptr) {
  const Problem original = p;
  DeviceBuffer x(p.x.data(), p.x.bytes.size(), misalign_bytes);
  DeviceBuffer r(p.fused ? p.r.data() : nullptr, p.fused ? p.r.bytes.size() : 0, misalign_bytes);
  DeviceBuffer y(p.y.data(), p.y.bytes.size(), misalign_bytes);
  DeviceBuffer scale(p.scale.data(), p.scale.size() * sizeof(float));
  DeviceBuffer shift(p.shift.data(), p.shift.size() * sizeof(float));
  ASSERT_TRUE(x.ok() && r.ok() && y.ok() && scale.ok() && shift.ok()) << "cudaMalloc failed";
  const NormKernelArgs args =
      p.Args(x.get(), r.get(), y.get(), static_cast<const float*>(scale.get()),
             static_cast<const float*>(shift.get()));
  ASSERT_NO_THROW(cuda::RunNorm(args, stream)) << p.Describe();
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(y.CopyTo(p.y.data()));
  if (p.fused) CUDA_OK(r.CopyTo(p.r.data()));
  Buffer x_after = p.x;
  CUDA_OK(x.CopyTo(x_after.data()));
  ASSERT_EQ(x_after.bytes, original.x.bytes) << p.Describe() << ": x was modified";
  ASSERT_TRUE(CheckProblem(original, p.y, p.fused ? &p.r : nullptr))
      << "misaligned by " << misalign_bytes << " bytes";
  if (y_bytes != nullptr) *y_bytes = p.y.bytes;
}

class GpuKernels : public ::testing::TestWithParam<std::tuple<int, NormDtype, bool>> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: GPU norm kernel tests skipped";
  }
};

TEST_P(GpuKernels, MatchFloat64Reference) {
  const Variant variant = Variants()[std::get<0>(GetParam())];
  const NormDtype dtype = std::get<1>(GetParam());
  const bool fused = std::get<2>(GetParam());
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (replay: NORMSERVE_TEST_SEED)");
  std::mt19937_64 rng(seed);
  for (int64_t d : kDims) {
    for (int64_t rows : kRows) {
      const std::vector<int64_t> s = StridesFor(d);
      const std::vector<std::tuple<int64_t, int64_t, int64_t>> layouts = {
          {d, d, d}, {s[2], s[2], s[2]}, {s[1], s[2], d + 1}};
      for (const auto& [xs, rs, ys] : layouts) {
        Problem p = MakeProblem(variant, dtype, fused, rows, d, xs, rs, ys, rng);
        ASSERT_NO_FATAL_FAILURE(RunAndCheck(p, 0, nullptr));
      }
      // Misaligned base pointers: the element path.
      Problem p = MakeProblem(variant, dtype, fused, rows, d, s[2], s[2], s[2], rng);
      ASSERT_NO_FATAL_FAILURE(RunAndCheck(p, NormDtypeSize(dtype), nullptr));
    }
  }
}

std::string CaseName(const ::testing::TestParamInfo<GpuKernels::ParamType>& info) {
  return Variants()[std::get<0>(info.param)].name + "_" + DtypeName(std::get<1>(info.param)) +
         (std::get<2>(info.param) ? "_fused" : "_plain");
}

INSTANTIATE_TEST_SUITE_P(AllVariants, GpuKernels,
                         ::testing::Combine(::testing::Range(0,
                                                             static_cast<int>(Variants().size())),
                                            ::testing::ValuesIn(kDtypes), ::testing::Bool()),
                         CaseName);

class GpuKernelsMisc : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: GPU norm kernel tests skipped";
  }
};

// Rows too long for the register kernel go to the multi-pass kernel.
TEST_F(GpuKernelsMisc, VeryLongRows) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Variant& v : Variants()) {
    for (NormDtype dtype : kDtypes) {
      for (bool fused : {false, true}) {
        for (int64_t d : {20000, 65536 + 5}) {
          Problem p = MakeProblem(v, dtype, fused, 3, d, d, d, d, rng);
          ASSERT_NO_FATAL_FAILURE(RunAndCheck(p, 0, nullptr));
        }
      }
    }
  }
}

// Many rows (more than one grid-stride pass) on a non-default stream, and the same result
// twice: the kernels are deterministic (a moving result would be a race).
TEST_F(GpuKernelsMisc, ManyRowsOnAStreamDeterministic) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  for (const Variant& v : Variants()) {
    for (NormDtype dtype : kDtypes) {
      // More rows than the grid holds at once: the warp path (d = 512) and the block path.
      for (const auto& [rows, d] : {std::pair<int64_t, int64_t>{20000, 512}, {4099, 4096}}) {
        Problem p = MakeProblem(v, dtype, true, rows, d, d, d, d, rng);
        const Problem original = p;
        std::vector<unsigned char> first, second;
        ASSERT_NO_FATAL_FAILURE(RunAndCheck(p, 0, stream, &first));
        Problem again = original;
        ASSERT_NO_FATAL_FAILURE(RunAndCheck(again, 0, stream, &second));
        ASSERT_EQ(first, second) << original.Describe() << ": results differ between runs";
      }
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

// The dtype conversions, bit-exact: y = x * s over every 16-bit pattern (see the CPU test).
TEST_F(GpuKernelsMisc, ConversionsRoundToNearestEven) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_scale(-8.0, 8.0);
  for (NormDtype dtype : {NormDtype::kFloat16, NormDtype::kBFloat16}) {
    for (int64_t d : {int64_t{65536}, int64_t{65536 + 7}}) {  // vector path; element path
      Buffer x(dtype, d), y(dtype, d);
      for (int64_t i = 0; i < d; ++i) {
        const uint16_t bits = static_cast<uint16_t>(i);
        std::memcpy(x.bytes.data() + 2 * i, &bits, 2);
      }
      y.Poison();
      std::vector<float> scale(d);
      for (float& s : scale) s = static_cast<float>(std::exp2(log_scale(rng)));
      DeviceBuffer dx(x.data(), x.bytes.size()), dy(y.data(), y.bytes.size());
      DeviceBuffer ds(scale.data(), scale.size() * sizeof(float));
      ASSERT_TRUE(dx.ok() && dy.ok() && ds.ok());
      NormKernelArgs a;
      a.x = dx.get();
      a.y = dy.get();
      a.rows = 1;
      a.d = d;
      a.x_stride = a.y_stride = d;
      a.dtype = dtype;
      a.statistic = RowStatistic::kNone;
      a.scale = static_cast<const float*>(ds.get());
      ASSERT_NO_THROW(cuda::RunNorm(a, nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      CUDA_OK(dy.CopyTo(y.data()));
      for (int64_t i = 0; i < d; ++i) {
        const double expected =
            RoundToDtype(static_cast<double>(static_cast<float>(x.Get(i)) * scale[i]), dtype);
        const double got = y.Get(i);
        if (std::isnan(expected)) {
          ASSERT_TRUE(std::isnan(got)) << DtypeName(dtype) << " pattern " << i;
        } else {
          ASSERT_EQ(got, expected) << DtypeName(dtype) << " pattern " << i;
        }
      }
    }
  }
}

TEST_F(GpuKernelsMisc, TimingEvents) {
  void* start = cuda::CreateTimingEvent();
  void* stop = cuda::CreateTimingEvent();
  cuda::RecordTimingEvent(start, nullptr);
  cuda::RecordTimingEvent(stop, nullptr);
  EXPECT_GE(cuda::ElapsedMilliseconds(start, stop), 0.0f);
  cuda::DestroyTimingEvent(start);
  cuda::DestroyTimingEvent(stop);
}

TEST(GpuKernelsNoDevice, DeviceCountNeverThrows) {
  EXPECT_TRUE(cuda::Compiled());
  EXPECT_GE(cuda::DeviceCount(), 0);  // 0 here without a GPU: cudaGetDeviceCount fails
}

}  // namespace
}  // namespace normserve::kernel_test
