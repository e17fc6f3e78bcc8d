// normserve-normbench: the norm kernels (norm_kernels.h) against a plain device copy of the same
// bytes and against ATen done the ordinary way, measured side by side in one run, plus the cost
// of the sampled norm timing (norm_timing.h). Writes the table as CSV and Markdown under
// results/ (docs/kernels.md explains the method and the targets).
//
//   normserve-normbench [--device cpu|cuda] [--quick] [--csv FILE] [--markdown FILE]
//                       [--threads N] [--rows LIST] [--d LIST] [--dtypes LIST]
//                       [--variants LIST] [--forms LIST] [--no-overhead] [--min-ms MS]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/command_line.h"
#include "models/norm/norm_config.h"
#include "models/norm/norm_kernels.h"
#include "models/norm/norm_op.h"
#include "models/norm/norm_timing.h"

#if defined(NORMSERVE_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace normserve {
namespace {

#define NORMSERVE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||            \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

constexpr char kDescription[] =
    R"(normserve-normbench: norm kernels vs a device copy and ATen (docs/kernels.md). Writes the
table as CSV and Markdown under results/.)";

struct Options {
  std::string device = "cpu";
  bool quick = false;
  std::string csv, markdown, note;
  int threads = 0;
  std::vector<int64_t> rows = {1, 16, 256, 4096, 16384};
  std::vector<int64_t> dims = {512, 1024, 4096, 8192};
  std::vector<std::string> dtypes = {"float32", "float16", "bfloat16"};
  std::vector<std::string> variants = {"layernorm", "rmsnorm",   "prmsnorm",
                                       "powernorm", "batchnorm", "crmsnorm"};
  std::vector<std::string> forms = {"plain", "fused"};
  double min_ms = 20;
  bool overhead = true;
};

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "normserve-normbench: " << message << "\n";
  std::exit(2);
}

// The flags into *o. Returns the status to exit with when the run is done (--help,
// --version, a usage error); nullopt when it goes on to measure.
std::optional<int> Parse(int argc, char** argv, Options* o) {
  CLI::App app(kDescription, "normserve-normbench");
  command_line::Configure(&app);
  app.footer(
      "Every flag can also come from its environment variable (shown as env); a flag wins.\n"
      "Exit status: 0 written, 1 failed, 2 on a usage error.");
  app.add_option("--device", o->device, "where to run (cuda needs a GPU and a CUDA build)")
      ->type_name("DEVICE")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_flag("--quick", o->quick,
               "a reduced set of shapes (rows 256,4096,16384; d 1024,4096; float32,bfloat16)");
  app.add_option("--csv", o->csv, "CSV output (default results/normbench-<host>-<device>.csv)")
      ->type_name("FILE");
  app.add_option("--markdown", o->markdown,
                 "Markdown output (default results/normbench-<host>-<device>.md)")
      ->type_name("FILE");
  app.add_option("--threads", o->threads, "ATen intra-op threads (0: the number of cores)")
      ->type_name("N")
      ->check(command_line::NumberIn(0, 1024));
  const auto list = [&](const std::string& flag, auto* field, const std::string& what) {
    return app.add_option(flag, *field, what)->type_name("LIST")->delimiter(',');
  };
  CLI::Option* rows = list("--rows", &o->rows, "comma-separated row counts")
                          ->check(command_line::NumberIn(1, 1 << 24));
  CLI::Option* dims = list("--d", &o->dims, "comma-separated hidden sizes")
                          ->check(command_line::NumberIn(1, 1 << 20));
  CLI::Option* dtypes = list("--dtypes", &o->dtypes, "storage dtypes")
                            ->check(CLI::IsMember({"float32", "float16", "bfloat16"}));
  list("--variants", &o->variants, "norm variants")
      ->check(CLI::IsMember(
          {"layernorm", "rmsnorm", "prmsnorm", "powernorm", "batchnorm", "crmsnorm"}));
  list("--forms", &o->forms, "plain: the norm; fused: residual add and norm")
      ->check(CLI::IsMember({"plain", "fused"}));
  app.add_option("--min-ms", o->min_ms, "minimum duration of one timed batch of launches")
      ->type_name("MS")
      ->check(command_line::NumberIn(0.001, 60'000));
  bool no_overhead = false;
  app.add_flag("--no-overhead", no_overhead, "skip the sampled-timing overhead measurement");
  app.add_option("--note", o->note, "a note for the Markdown header (e.g. the machine's load)")
      ->type_name("TEXT");
  command_line::AddEnvironmentFallbacks("normserve-normbench", &app);

  return command_line::Parse(&app, argc, argv, [&] {
    o->overhead = !no_overhead;
    if (o->quick) {
      if (rows->count() == 0) o->rows = {256, 4096, 16384};
      if (dims->count() == 0) o->dims = {1024, 4096};
      if (dtypes->count() == 0) o->dtypes = {"float32", "bfloat16"};
    }
  });
}

// ---- Machine ---------------------------------------------------------------------------------

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  std::string h = buf;
  for (char& c : h) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  }
  return h;
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

int64_t LastLevelCacheBytes() {
  for (int index = 4; index >= 0; --index) {
    const std::string base = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    const std::string size = ReadFirstLine(base + "/size");
    if (size.empty()) continue;
    int64_t v = std::stoll(size);
    if (size.back() == 'K') v <<= 10;
    if (size.back() == 'M') v <<= 20;
    return v;
  }
  const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return v > 0 ? v : (8 << 20);
}

int CompilerProcesses() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string comm = ReadFirstLine(entry.path().string() + "/comm");
    if (comm == "cc1plus" || comm == "cicc" || comm == "ptxas" || comm == "nvcc") ++n;
  }
  return n;
}

std::string Load() { return ReadFirstLine("/proc/loadavg"); }

std::string Now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

// ---- Problems --------------------------------------------------------------------------------

struct VariantDef {
  std::string name;
  NormKind kind;
  RowStatistic statistic;
  bool shift;
};

std::optional<VariantDef> FindVariant(const std::string& name) {
  const std::vector<VariantDef> all = {
      {"layernorm", NormKind::kLayerNorm, RowStatistic::kMeanVariance, true},
      {"rmsnorm", NormKind::kRMSNorm, RowStatistic::kMeanSquare, false},
      {"prmsnorm", NormKind::kPartialRMSNorm, RowStatistic::kMeanSquare, false},
      {"powernorm", NormKind::kPowerNorm, RowStatistic::kGroupMeanSquare, true},
      {"batchnorm", NormKind::kBatchNorm, RowStatistic::kNone, true},
      {"crmsnorm", NormKind::kCRMSNorm, RowStatistic::kCompressedMeanSquare, false},
  };
  for (const VariantDef& v : all) {
    if (v.name == name) return v;
  }
  return std::nullopt;
}

constexpr int64_t kPowerNormGroups = 8;  // attention heads
constexpr double kEps = 1e-5;

at::ScalarType ScalarOf(const std::string& dtype) {
  if (dtype == "float32") return at::kFloat;
  if (dtype == "float16") return at::kHalf;
  if (dtype == "bfloat16") return at::kBFloat16;
  Fail("unknown dtype " + dtype);
}

NormDtype NormDtypeOf(at::ScalarType t) {
  return t == at::kFloat ? NormDtype::kFloat32
                         : (t == at::kHalf ? NormDtype::kFloat16 : NormDtype::kBFloat16);
}

int64_t StatChannels(const VariantDef& v, int64_t d) {
  if (v.statistic != RowStatistic::kMeanSquare) return 0;
  if (v.kind != NormKind::kPartialRMSNorm) return d;
  NormConfig c;
  c.kind = NormKind::kPartialRMSNorm;
  return PartialChannels(c, d);
}

// The weights of one norm site: the raw ones (for ATen) and the folded scale/shift (ours).
struct Weights {
  at::Tensor g, b, running_mean, running_var, running_phi;  // float32
  at::Tensor scale, shift;                                  // folded, float32
};

Weights MakeWeights(const VariantDef& v, int64_t d) {
  Weights w;
  w.g = at::randn({d}) * 0.3 + 1.0;
  w.b = at::randn({d}) * 0.2;
  w.scale = w.g;
  if (v.shift) w.shift = w.b;
  if (v.kind == NormKind::kPowerNorm) {
    w.running_phi = at::rand({d}) * 3.0 + 0.1;
    w.scale = w.g * at::rsqrt(w.running_phi + kEps);
  }
  if (v.kind == NormKind::kBatchNorm) {
    w.running_mean = at::randn({d});
    w.running_var = at::rand({d}) * 3.0 + 0.1;
    w.scale = w.g * at::rsqrt(w.running_var + kEps);
    w.shift = w.b - w.running_mean * w.scale;
  }
  return w;
}

NormKernelArgs KernelArgs(const VariantDef& v, NormDtype dtype, int64_t rows, int64_t d,
                          const void* x, void* r, void* y, const float* scale, const float* shift) {
  NormKernelArgs a;
  a.x = x;
  a.x_stride = d;
  a.residual = r;
  a.residual_stride = d;
  a.y = y;
  a.y_stride = d;
  a.rows = rows;
  a.d = d;
  a.dtype = dtype;
  a.statistic = v.statistic;
  a.stat_channels = StatChannels(v, d);
  a.groups = v.statistic == RowStatistic::kGroupMeanSquare ? kPowerNormGroups : 1;
  a.eps = static_cast<float>(kEps);
  a.scale = scale;
  a.shift = v.shift ? shift : nullptr;
  return a;
}

// ---- ATen baselines ("the ordinary way") --------------------------------------------------------

struct AtenWeights {  // in the activations' dtype and device, as a model would hold them
  at::Tensor g, b, running_mean, running_var, scale, shift;
};

AtenWeights ToAten(const Weights& w, const at::TensorOptions& o) {
  AtenWeights a;
  const auto conv = [&](const at::Tensor& t) { return t.defined() ? t.to(o) : at::Tensor(); };
  a.g = conv(w.g);
  a.b = conv(w.b);
  a.running_mean = conv(w.running_mean);
  a.running_var = conv(w.running_var);
  a.scale = conv(w.scale);
  a.shift = conv(w.shift);
  return a;
}

using BaselineFn = std::function<at::Tensor(const at::Tensor& x, const AtenWeights& w)>;

struct BaselineDef {
  std::string name;
  BaselineFn fn;
};

// The plain-form baselines of a variant; the first is the one the fused form's
// "aten_unfused" (r.add_(x), then it) uses.
std::vector<BaselineDef> PlainBaselines(const VariantDef& v, int64_t d) {
  const int64_t k = StatChannels(v, d);
  std::vector<BaselineDef> out;
  switch (v.kind) {
    case NormKind::kLayerNorm:
      out.push_back({"aten_layer_norm", [d](const at::Tensor& x, const AtenWeights& w) {
                       return at::layer_norm(x, {d}, w.g, w.b, kEps);
                     }});
      break;
    case NormKind::kRMSNorm:
      out.push_back({"aten_composite", [](const at::Tensor& x, const AtenWeights& w) {
                       return x * at::rsqrt(x.pow(2).mean(-1, true) + kEps) * w.g;
                     }});
      out.push_back({"aten_layer_norm", [d](const at::Tensor& x, const AtenWeights& w) {
                       return at::layer_norm(x, {d}, w.g, w.b, kEps);
                     }});
#if NORMSERVE_TORCH_AT_LEAST(2, 4)
      out.push_back({"aten_rms_norm", [d](const at::Tensor& x, const AtenWeights& w) {
                       return at::rms_norm(x, {d}, w.g, kEps);
                     }});
#endif
      break;
    case NormKind::kPartialRMSNorm:
      out.push_back({"aten_composite", [k](const at::Tensor& x, const AtenWeights& w) {
                       return x * at::rsqrt(x.narrow(-1, 0, k).pow(2).mean(-1, true) + kEps) * w.g;
                     }});
      break;
    case NormKind::kPowerNorm:
      out.push_back(
          {"aten_composite", [d](const at::Tensor& x, const AtenWeights& w) {
             const at::Tensor g = x.view({x.size(0), kPowerNormGroups, d / kPowerNormGroups});
             const at::Tensor scaled = (g * at::rsqrt(g.pow(2).mean(-1, true) + kEps));
             return at::addcmul(w.b, scaled.view({x.size(0), d}), w.scale);
           }});
      break;
    case NormKind::kCRMSNorm:
      // The implied last channel -sum(x) joins the mean square of d + 1 channels.
      out.push_back({"aten_composite", [d](const at::Tensor& x, const AtenWeights& w) {
                       const at::Tensor ms =
                           (x.pow(2).sum(-1, true) + x.sum(-1, true).pow(2)) / (d + 1);
                       return x * at::rsqrt(ms + kEps) * w.g;
                     }});
      break;
    case NormKind::kBatchNorm:
      out.push_back({"aten_batch_norm", [](const at::Tensor& x, const AtenWeights& w) {
                       return at::batch_norm(x, w.g, w.b, w.running_mean, w.running_var,
                                             /*training=*/false, 0.1, kEps, /*cudnn=*/true);
                     }});
      break;
  }
  return out;
}

// ---- Timing ----------------------------------------------------------------------------------

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A device on which launches are timed.
class Timer {
 public:
  virtual ~Timer() = default;
  // Seconds for `iters` launches of fn(i % sets).
  virtual double Run(const std::function<void(int64_t)>& fn, int64_t iters, int64_t sets) = 0;
};

class CpuTimer : public Timer {
 public:
  double Run(const std::function<void(int64_t)>& fn, int64_t iters, int64_t sets) override {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) fn(i % sets);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

#if defined(NORMSERVE_HAVE_CUDA)
void CudaCheck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Fail(std::string(what) + ": " + cudaGetErrorString(e));
}
#define CUDA_CHECK(expr) CudaCheck((expr), #expr)

class CudaTimer : public Timer {
 public:
  CudaTimer() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~CudaTimer() override {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  double Run(const std::function<void(int64_t)>& fn, int64_t iters, int64_t sets) override {
    CUDA_CHECK(cudaEventRecord(start_, nullptr));
    for (int64_t i = 0; i < iters; ++i) fn(i % sets);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaEventRecord(stop_, nullptr));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return 1e-3 * ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};
#endif

// Median microseconds per launch. A warm-up pass over every set, then many short samples
// (each a few launches, at least ~50 us) for at least 7 x min_ms, or 3 samples when one launch
// takes over 50 ms: the median of short samples ignores the scheduler's time slices that an
// OpenMP barrier waits out when another process holds a core (a loaded shared machine), which
// would ruin long batches.
double MeasureMicros(Timer& timer, const std::function<void(int64_t)>& fn, int64_t sets,
                     double min_ms) {
  const int64_t warm_iters = std::max<int64_t>(sets, 2);
  const double one = std::max(timer.Run(fn, warm_iters, sets) / warm_iters, 1e-7);
  const int64_t per_sample = std::clamp<int64_t>(static_cast<int64_t>(50e-6 / one), 1, 100000);
  const int64_t min_samples = one > 0.05 ? 3 : 15;
  const double budget = 7 * min_ms * 1e-3;
  std::vector<double> samples;
  double spent = 0;
  int64_t next = 0;
  while (static_cast<int64_t>(samples.size()) < min_samples ||
         (spent < budget && samples.size() < 20000)) {
    // Rotate through the sets across samples too.
    const double t = timer.Run([&](int64_t k) { fn((next + k) % sets); }, per_sample, sets);
    next = (next + per_sample) % sets;
    samples.push_back(t / per_sample);
    spent += t;
  }
  return 1e6 * Median(samples);
}

// ---- Results ---------------------------------------------------------------------------------

struct Row {
  std::string device, variant, form, dtype;
  int64_t rows = 0, d = 0, bytes = 0, sets = 0;
  bool fits_cache = false;
  double us = 0, gbps = 0, copy_us = 0, copy_gbps = 0, pct_of_copy = 0, op_us = NAN;
  std::string baseline;
  double baseline_us = NAN, speedup = NAN;
  std::string baseline_note;
};

std::string Fmt(double v, int precision = 2) {
  if (std::isnan(v)) return "";
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

const char* kCsvHeader =
    "device,variant,form,dtype,rows,d,bytes,fits_cache,sets,us,gbps,copy_us,copy_gbps,"
    "pct_of_copy,op_us,baseline,baseline_us,speedup,baseline_note";

std::string CsvLine(const Row& r) {
  std::ostringstream s;
  s << r.device << "," << r.variant << "," << r.form << "," << r.dtype << "," << r.rows << ","
    << r.d << "," << r.bytes << "," << (r.fits_cache ? 1 : 0) << "," << r.sets << ","
    << Fmt(r.us, 3) << "," << Fmt(r.gbps) << "," << Fmt(r.copy_us, 3) << "," << Fmt(r.copy_gbps)
    << "," << Fmt(r.pct_of_copy, 1) << "," << Fmt(r.op_us, 3) << "," << r.baseline << ","
    << Fmt(r.baseline_us, 3) << "," << Fmt(r.speedup, 3) << ",\"" << r.baseline_note << "\"";
  return s.str();
}

// ---- The benchmark -----------------------------------------------------------------------------

struct Context {
  Options options;
  std::string device;
  Timer* timer = nullptr;
  int64_t cache_bytes = 0;  // last-level cache (CPU) or L2 (GPU)
  int threads = 1;
  bool aten_on_device = true;  // ATen baselines can run on this device
  std::vector<Row> rows;
};

// Buffer sets to rotate through: enough to keep repeated launches from finding the data in a
// cache that a real forward would not have. CPU: shapes that fit in the last-level cache rotate
// over sets filling about half of it (so they are measured from the LLC, not L1/L2); larger
// ones use one set. GPU: sets filling 3x the L2, so data comes from device memory.
int64_t SetsFor(const Context& c, int64_t footprint) {
  int64_t sets = 1;
  if (c.device == "cpu") {
    if (footprint < c.cache_bytes / 2) sets = c.cache_bytes / 2 / footprint;
  } else {
    sets = (3 * c.cache_bytes + footprint - 1) / footprint;
  }
  const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 30) / footprint);
  return std::clamp<int64_t>(sets, 1, std::min<int64_t>(256, by_memory));
}

// A parallel memcpy: the CPU's "plain device copy".
void ParallelCopy(void* dst, const void* src, int64_t bytes) {
  constexpr int64_t kChunk = 64 << 10;
  const int64_t chunks = (bytes + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const int64_t lo = begin * kChunk;
    const int64_t hi = std::min(bytes, end * kChunk);
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  });
}

void BenchOne(Context& c, const VariantDef& v, bool fused, const std::string& dtype_name,
              int64_t rows, int64_t d) {
  const at::ScalarType dtype = ScalarOf(dtype_name);
  const NormDtype nd = NormDtypeOf(dtype);
  const int64_t elem = NormDtypeSize(nd);
  const int64_t tensor_bytes = rows * d * elem;
  const int64_t bytes = tensor_bytes * (fused ? 4 : 2);  // x, y (+ r read and written)
  const int64_t sets = SetsFor(c, bytes);
  const bool on_gpu = c.device == "cuda";
  const Weights w = MakeWeights(v, d);

  Row base;
  base.device = c.device;
  base.variant = v.name;
  base.form = fused ? "fused" : "plain";
  base.dtype = dtype_name;
  base.rows = rows;
  base.d = d;
  base.bytes = bytes;
  base.sets = sets;
  base.fits_cache = bytes <= c.cache_bytes;

  // Inputs: random (never zeros), one x, r, y per set.
  std::vector<at::Tensor> xs, rs, ys;
  std::vector<void*> dev_buffers;
  const at::Tensor host_x = at::randn({rows, d}).to(dtype);
  const at::Tensor host_r = at::randn({rows, d}).to(dtype);
  const auto device_copy = [&](const at::Tensor& host) -> void* {
#if defined(NORMSERVE_HAVE_CUDA)
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<int64_t>(host.nbytes(), 16)));
    CUDA_CHECK(cudaMemcpy(p, host.data_ptr(), host.nbytes(), cudaMemcpyHostToDevice));
    dev_buffers.push_back(p);
    return p;
#else
    (void)host;
    Fail("this build has no CUDA");
#endif
  };
  std::vector<void*> xp, rp, yp;
  for (int64_t s = 0; s < sets; ++s) {
    if (on_gpu) {
      xp.push_back(device_copy(host_x));
      rp.push_back(fused ? device_copy(host_r) : nullptr);
      yp.push_back(device_copy(host_x));
    } else {
      xs.push_back(s == 0 ? host_x : host_x.clone());
      rs.push_back(fused ? host_r.clone() : at::Tensor());
      ys.push_back(at::empty({rows, d}, dtype));
      ys.back().fill_(0.5);  // touch the pages before timing
      xp.push_back(xs.back().data_ptr());
      rp.push_back(fused ? rs.back().data_ptr() : nullptr);
      yp.push_back(ys.back().data_ptr());
    }
  }
  const at::Tensor scale_host = w.scale.contiguous();
  const at::Tensor shift_host = w.shift.defined() ? w.shift.contiguous() : at::Tensor();
  const float* scale = scale_host.data_ptr<float>();
  const float* shift = shift_host.defined() ? shift_host.data_ptr<float>() : nullptr;
  if (on_gpu) {
    scale = static_cast<const float*>(device_copy(scale_host));
    if (shift != nullptr) shift = static_cast<const float*>(device_copy(shift_host));
  }

  // Ours.
  const auto ours = [&](int64_t s) {
    const NormKernelArgs a = KernelArgs(v, nd, rows, d, xp[s], rp[s], yp[s], scale, shift);
    if (on_gpu) {
      cuda::RunNorm(a, nullptr);
    } else {
      cpu::RunNorm(a);
    }
  };
  base.us = MeasureMicros(*c.timer, ours, sets, c.options.min_ms);
  base.gbps = bytes / base.us * 1e-3;

  // The copy of the same bytes (bytes/2 read, bytes/2 written).
  {
    const int64_t copy_bytes = bytes / 2;
    std::vector<at::Tensor> src, dst;
    std::vector<void*> sp, dp;
    for (int64_t s = 0; s < sets; ++s) {
      if (on_gpu) {
#if defined(NORMSERVE_HAVE_CUDA)
        void* a = nullptr;
        void* b = nullptr;
        CUDA_CHECK(cudaMalloc(&a, copy_bytes));
        CUDA_CHECK(cudaMalloc(&b, copy_bytes));
        CUDA_CHECK(cudaMemset(a, 1, copy_bytes));
        CUDA_CHECK(cudaMemset(b, 2, copy_bytes));
        sp.push_back(a);
        dp.push_back(b);
#endif
      } else {
        src.push_back(at::full({copy_bytes}, 1, at::kByte));
        dst.push_back(at::full({copy_bytes}, 2, at::kByte));
        sp.push_back(src.back().data_ptr());
        dp.push_back(dst.back().data_ptr());
      }
    }
    const auto copy = [&](int64_t s) {
      if (on_gpu) {
#if defined(NORMSERVE_HAVE_CUDA)
        CUDA_CHECK(cudaMemcpyAsync(dp[s], sp[s], copy_bytes, cudaMemcpyDeviceToDevice, nullptr));
#endif
      } else {
        ParallelCopy(dp[s], sp[s], copy_bytes);
      }
    };
    base.copy_us = MeasureMicros(*c.timer, copy, sets, c.options.min_ms);
    base.copy_gbps = bytes / base.copy_us * 1e-3;
    base.pct_of_copy = 100.0 * base.copy_us / base.us;
#if defined(NORMSERVE_HAVE_CUDA)
    if (on_gpu) {
      for (void* p : sp) cudaFree(p);
      for (void* p : dp) cudaFree(p);
    }
#endif
  }

  // ATen, the ordinary way, on tensors over the same buffers.
  std::vector<Row> out;
  if (c.aten_on_device) {
    at::TensorOptions device_options = at::TensorOptions().dtype(dtype);
#if defined(NORMSERVE_TORCH_CUDA)
    if (on_gpu) device_options = device_options.device(at::kCUDA);
#endif
    std::vector<at::Tensor> ax, ar;
    for (int64_t s = 0; s < sets; ++s) {
      if (on_gpu) {
        ax.push_back(at::from_blob(xp[s], {rows, d}, device_options));
        ar.push_back(fused ? at::from_blob(rp[s], {rows, d}, device_options) : at::Tensor());
      } else {
        ax.push_back(xs[s]);
        ar.push_back(fused ? rs[s] : at::Tensor());
      }
    }
    const AtenWeights native = ToAten(w, device_options);
    const AtenWeights f32 = ToAten(w, device_options.dtype(at::kFloat));
    const std::vector<BaselineDef> plain = PlainBaselines(v, d);
    for (size_t bi = 0; bi < (fused ? 1 : plain.size()); ++bi) {
      const BaselineDef& b = plain[bi];
      // The native dtype if ATen has a kernel for it here, else through float32.
      BaselineFn fn = b.fn;
      std::string note;
      try {
        (void)fn(ax[0].narrow(0, 0, 1), native);
      } catch (const c10::Error&) {
        fn = [inner = b.fn, dtype](const at::Tensor& x, const AtenWeights& wf) {
          return inner(x.to(at::kFloat), wf).to(dtype);
        };
        note = "via float32: this LibTorch has no " + dtype_name + " kernel on " + c.device;
      }
      const AtenWeights& ww = note.empty() ? native : f32;
      const auto run = [&](int64_t s) {
        if (fused) {
          ar[s].add_(ax[s]);
          (void)fn(ar[s], ww);
        } else {
          (void)fn(ax[s], ww);
        }
      };
      Row r = base;
      r.baseline = fused ? "aten_unfused" : b.name;
      if (fused) note = "r.add_(x) then " + b.name + (note.empty() ? "" : "; " + note);
      r.baseline_note = note;
      r.baseline_us = MeasureMicros(*c.timer, run, sets, c.options.min_ms);
      r.speedup = r.baseline_us / r.us;
      out.push_back(r);
    }
    // Our op through the tensor API, allocating its output as a model's forward does.
    if (!on_gpu || c.aten_on_device) {
      NormParams p;
      p.kind = v.kind;
      p.statistic = v.statistic;
      p.stat_channels = StatChannels(v, d);
      p.groups = v.statistic == RowStatistic::kGroupMeanSquare ? kPowerNormGroups : 1;
      p.eps = static_cast<float>(kEps);
      p.scale = w.scale.to(device_options.dtype(at::kFloat));
      if (w.shift.defined() && v.shift) p.shift = w.shift.to(device_options.dtype(at::kFloat));
      const auto op = [&](int64_t s) {
        if (fused) {
          (void)NormForwardResidual(ax[s], ar[s], p);
        } else {
          (void)NormForward(ax[s], p);
        }
      };
      const double op_us = MeasureMicros(*c.timer, op, sets, c.options.min_ms);
      for (Row& r : out) r.op_us = op_us;
    }
  }
  if (out.empty()) out.push_back(base);

#if defined(NORMSERVE_HAVE_CUDA)
  for (void* p : dev_buffers) cudaFree(p);
#endif

  for (const Row& r : out) {
    std::cout << std::left << std::setw(10) << r.variant << std::setw(6) << r.form << std::setw(9)
              << r.dtype << std::right << std::setw(6) << r.rows << std::setw(6) << r.d
              << std::setw(11) << Fmt(r.us, 2) << " us" << std::setw(8) << Fmt(r.gbps, 1) << " GB/s"
              << std::setw(7) << Fmt(r.pct_of_copy, 0) << "% copy  " << std::left << std::setw(16)
              << r.baseline << std::right << std::setw(8)
              << (std::isnan(r.speedup) ? "" : Fmt(r.speedup, 2) + "x") << "\n";
    c.rows.push_back(r);
  }
  std::cout.flush();
}

// ---- Sampled timing overhead -----------------------------------------------------------------

struct Overhead {
  std::string device, workload;
  double off_us = 0, default_us = 0, every_us = 0;
  int64_t default_every = 16;
  // The timing machinery alone (guard + one timer per norm launch, no work), per forward.
  double sampled_ns = NAN, unsampled_ns = NAN;
  int64_t launches = 0;
};

// The cost of the timing machinery itself, without the work it times: a forward's guard and
// `launches` CPU launch timers, sampled (every = 1) and not (every = huge), in ns per forward.
void MeasureMachineryCpu(Overhead& o, int64_t launches) {
  o.launches = launches;
  const auto run = [&](int64_t every) {
    SetNormTimingSampleEvery(every);
    constexpr int kForwards = 20000;
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int f = 0; f < kForwards; ++f) {
        const NormForwardTiming timing;
        for (int64_t l = 0; l < launches; ++l) {
          const NormLaunchTimer t(NormKind::kLayerNorm, NormDevice::kCpu, NormDtype::kFloat32,
                                  nullptr);
        }
      }
      const double ns =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e9;
      best = std::min(best, ns / kForwards);
    }
    return best;
  };
  o.sampled_ns = run(1);
  o.unsampled_ns = run(int64_t{1} << 40);
}

// A transformer-like forward (layers of linear + fused add-and-norm, fp32) timed with the norm
// timing off, at its default rate and on every forward; blocks of forwards interleave the three
// so that drift affects them alike.
Overhead MeasureOverheadCpu() {
  Overhead o;
  o.device = "cpu";
  const int64_t rows = 64, d = 512, layers = 12;
  o.workload = std::to_string(layers) + " x (linear " + std::to_string(d) + "x" +
               std::to_string(d) + " + fused add & layernorm) on [" + std::to_string(rows) + ", " +
               std::to_string(d) + "] fp32";
  const at::Tensor weight = at::randn({d, d}) * 0.05;
  NormParams p;
  p.kind = NormKind::kLayerNorm;
  p.scale = at::ones({d});
  p.shift = at::zeros({d});
  at::Tensor stream = at::randn({rows, d});
  const auto forward = [&] {
    const NormForwardTiming timing;
    at::Tensor h = stream;
    for (int64_t l = 0; l < layers; ++l) h = NormForwardResidual(at::linear(h, weight), stream, p);
    return h;
  };
  std::mutex m;
  std::map<std::string, std::pair<int64_t, double>> histogram;  // a stand-in for Prometheus
  SetNormTimingSink([&](std::string_view n, std::string_view dev, std::string_view t, double s) {
    std::lock_guard<std::mutex> lock(m);
    auto& e = histogram[std::string(n) + std::string(dev) + std::string(t)];
    ++e.first;
    e.second += s;
  });
  const int64_t default_every = NormTimingSampleEvery();
  o.default_every = default_every;
  const int64_t per_block = 40;
  std::vector<double> off, def, every;
  const auto block = [&](int64_t sample_every) {
    SetNormTimingSampleEvery(sample_every);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < per_block; ++i) (void)forward();
    return 1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
           per_block;
  };
  block(0);  // warm-up
  for (int rep = 0; rep < 25; ++rep) {
    off.push_back(block(0));
    def.push_back(block(default_every));
    every.push_back(block(1));
  }
  MeasureMachineryCpu(o, layers);
  SetNormTimingSampleEvery(default_every);
  SetNormTimingSink(nullptr);
  o.off_us = Median(off);
  o.default_us = Median(def);
  o.every_us = Median(every);
  return o;
}

#if defined(NORMSERVE_HAVE_CUDA)
// The same on the GPU through the raw API: each layer a device copy of the activations (a
// stand-in for the other work) and a fused norm launch, the forward ending with a stream
// synchronize as a real forward does when it reads its result.
Overhead MeasureOverheadCuda() {
  Overhead o;
  o.device = "cuda";
  const int64_t rows = 256, d = 4096, layers = 24;
  o.workload = std::to_string(layers) + " x (device copy + fused add & layernorm) on [" +
               std::to_string(rows) + ", " + std::to_string(d) + "] bf16";
  const size_t bytes = rows * d * 2;
  void *x = nullptr, *r = nullptr, *y = nullptr, *scale = nullptr;
  CUDA_CHECK(cudaMalloc(&x, bytes));
  CUDA_CHECK(cudaMalloc(&r, bytes));
  CUDA_CHECK(cudaMalloc(&y, bytes));
  CUDA_CHECK(cudaMalloc(&scale, d * sizeof(float)));
  const at::Tensor init = at::randn({rows, d}).to(at::kBFloat16);
  CUDA_CHECK(cudaMemcpy(x, init.data_ptr(), bytes, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(r, init.data_ptr(), bytes, cudaMemcpyHostToDevice));
  const at::Tensor ones = at::ones({d});
  CUDA_CHECK(cudaMemcpy(scale, ones.data_ptr(), d * sizeof(float), cudaMemcpyHostToDevice));
  const VariantDef v = *FindVariant("layernorm");
  const NormKernelArgs a = KernelArgs(v, NormDtype::kBFloat16, rows, d, x, r, y,
                                      static_cast<const float*>(scale), nullptr);
  const auto forward = [&] {
    const NormForwardTiming timing;
    for (int64_t l = 0; l < layers; ++l) {
      CUDA_CHECK(cudaMemcpyAsync(x, y, bytes, cudaMemcpyDeviceToDevice, nullptr));
      const NormLaunchTimer t(NormKind::kLayerNorm, NormDevice::kCuda, NormDtype::kBFloat16,
                              nullptr);
      cuda::RunNorm(a, nullptr);
    }
    CUDA_CHECK(cudaStreamSynchronize(nullptr));
  };
  SetNormTimingSink([](std::string_view, std::string_view, std::string_view, double) {});
  const int64_t default_every = NormTimingSampleEvery();
  o.default_every = default_every;
  std::vector<double> off, def, every;
  const auto block = [&](int64_t sample_every) {
    SetNormTimingSampleEvery(sample_every);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 40; ++i) forward();
    return 1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 40;
  };
  block(0);
  for (int rep = 0; rep < 25; ++rep) {
    off.push_back(block(0));
    def.push_back(block(default_every));
    every.push_back(block(1));
  }
  SetNormTimingSampleEvery(default_every);
  SetNormTimingSink(nullptr);
  for (void* p : {x, r, y, scale}) cudaFree(p);
  o.off_us = Median(off);
  o.default_us = Median(def);
  o.every_us = Median(every);
  return o;
}
#endif

// ---- Targets ---------------------------------------------------------------------------------

struct Target {
  std::string text;
  std::string result;
};

std::string Where(const Row& r) {
  return r.variant + " " + r.form + " " + r.dtype + " " + std::to_string(r.rows) + "x" +
         std::to_string(r.d);
}

// The smallest `value` over the rows `keep` selects, and where.
template <typename Keep, typename Value>
std::string MinOver(const std::vector<Row>& rows, Keep keep, Value value, double goal,
                    const std::string& unit) {
  const Row* worst = nullptr;
  int below = 0, n = 0;
  for (const Row& r : rows) {
    if (!keep(r) || std::isnan(value(r))) continue;
    ++n;
    if (value(r) < goal) ++below;
    if (worst == nullptr || value(r) < value(*worst)) worst = &r;
  }
  if (worst == nullptr) return "not measured";
  std::ostringstream s;
  s << (below == 0 ? "MET" : "MISSED") << ": min " << Fmt(value(*worst), 2) << unit << " ("
    << Where(*worst) << "); " << below << " of " << n << " below " << Fmt(goal, 2) << unit;
  return s.str();
}

std::vector<Target> EvaluateTargets(const Context& c) {
  std::vector<Target> t;
  const auto& rows = c.rows;
  const auto speedup = [](const Row& r) { return r.speedup; };
  const auto pct = [](const Row& r) { return r.pct_of_copy; };
  if (c.device == "cpu") {
    t.push_back({"RMSNorm, rows >= 256: >= 2x the ATen composite x*rsqrt(mean(x^2)+eps)*g",
                 MinOver(
                     rows,
                     [](const Row& r) {
                       return r.variant == "rmsnorm" && r.form == "plain" && r.rows >= 256 &&
                              r.baseline == "aten_composite";
                     },
                     speedup, 2.0, "x")});
    t.push_back({"RMSNorm, rows >= 256, data in the LLC: >= 1.2x at::layer_norm",
                 MinOver(
                     rows,
                     [](const Row& r) {
                       return r.variant == "rmsnorm" && r.form == "plain" && r.rows >= 256 &&
                              r.baseline == "aten_layer_norm" && r.fits_cache;
                     },
                     speedup, 1.2, "x")});
    t.push_back({"RMSNorm, rows >= 256, data beyond the LLC: never slower than at::layer_norm",
                 MinOver(
                     rows,
                     [](const Row& r) {
                       return r.variant == "rmsnorm" && r.form == "plain" && r.rows >= 256 &&
                              r.baseline == "aten_layer_norm" && !r.fits_cache;
                     },
                     speedup, 1.0, "x")});
    t.push_back(
        {"Every variant and form, rows >= 256, data beyond the LLC: >= 60% of copy",
         MinOver(
             rows, [](const Row& r) { return r.rows >= 256 && !r.fits_cache; }, pct, 60.0, "%")});
  } else {
    const auto big16 = [](const Row& r) {
      return r.rows >= 4096 && r.d >= 1024 && r.dtype != "float32";
    };
    t.push_back({"GPU, rows >= 4096, d >= 1024, fp16/bf16: >= 90% of device copy",
                 MinOver(rows, big16, pct, 90.0, "%")});
    t.push_back({"LayerNorm (same shapes): >= 1.3x torch layer_norm",
                 MinOver(
                     rows,
                     [&](const Row& r) {
                       return big16(r) && r.variant == "layernorm" && r.form == "plain" &&
                              r.baseline == "aten_layer_norm";
                     },
                     speedup, 1.3, "x")});
    t.push_back({"RMSNorm (same shapes): >= 1.3x torch layer_norm",
                 MinOver(
                     rows,
                     [&](const Row& r) {
                       return big16(r) && r.variant == "rmsnorm" && r.form == "plain" &&
                              r.baseline == "aten_layer_norm";
                     },
                     speedup, 1.3, "x")});
    t.push_back({"RMSNorm (same shapes): >= 1.3x torch rms_norm (LibTorch >= 2.4)",
                 MinOver(
                     rows,
                     [&](const Row& r) {
                       return big16(r) && r.variant == "rmsnorm" && r.form == "plain" &&
                              r.baseline == "aten_rms_norm";
                     },
                     speedup, 1.3, "x")});
  }
  return t;
}

// ---- Output ----------------------------------------------------------------------------------

// The machinery's cost per forward at the default rate, as a share of the forward's time.
std::string MachineryLine(const Overhead& o) {
  const double per_forward_ns =
      (o.sampled_ns + (o.default_every - 1) * o.unsampled_ns) / o.default_every;
  std::ostringstream s;
  s << "the timing machinery alone (guard + " << o.launches
    << " launch timers + sink calls): " << Fmt(o.sampled_ns, 0) << " ns per sampled forward, "
    << Fmt(o.unsampled_ns, 0) << " ns per unsampled one; at 1 in " << o.default_every << ": "
    << Fmt(per_forward_ns, 0)
    << " ns per forward = " << Fmt(100.0 * per_forward_ns * 1e-3 / o.off_us, 4)
    << "% of this forward";
  return s.str();
}

void WriteFiles(const Context& c, const std::string& header, const std::vector<Target>& targets,
                const std::vector<Overhead>& overheads) {
  const auto ensure_dir = [](const std::string& file) {
    const auto parent = std::filesystem::path(file).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
  };
  ensure_dir(c.options.csv);
  {
    std::ofstream csv(c.options.csv);
    csv << kCsvHeader << "\n";
    for (const Row& r : c.rows) csv << CsvLine(r) << "\n";
  }
  ensure_dir(c.options.markdown);
  std::ofstream md(c.options.markdown);
  md << "# normserve-normbench on " << Hostname() << " (" << c.device << ")\n\n" << header << "\n";
  md << "## Targets\n\n| target | result |\n|---|---|\n";
  for (const Target& t : targets) md << "| " << t.text << " | " << t.result << " |\n";
  md << "\n## Sampled timing overhead (normserve_norm_duration_seconds)\n\n";
  if (overheads.empty()) md << "not measured\n";
  for (const Overhead& o : overheads) {
    md << "- " << o.device << ": " << o.workload << ": " << Fmt(o.off_us, 1)
       << " us per forward with timing off; sampling 1 in " << o.default_every << ": "
       << Fmt(o.default_us, 1) << " us (" << Fmt(100.0 * (o.default_us / o.off_us - 1), 2)
       << "%); every forward: " << Fmt(o.every_us, 1) << " us ("
       << Fmt(100.0 * (o.every_us / o.off_us - 1), 2) << "%)\n";
    if (!std::isnan(o.sampled_ns)) md << "  - " << MachineryLine(o) << "\n";
  }
  md << "\n## Results\n\n"
        "us: median time of our kernel per launch; GB/s: fewest bytes (x read, y written, plus r "
        "read and written for the fused form) over that time; % copy: a plain device copy of "
        "the same bytes, measured in this run, over our time; op us: our op through the tensor "
        "API (allocating its output); baseline: ATen the ordinary way, speedup = baseline us / "
        "us.\n\n"
        "| variant | form | dtype | rows | d | us | GB/s | % copy | op us | baseline | baseline "
        "us | speedup |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n";
  for (const Row& r : c.rows) {
    md << "| " << r.variant << " | " << r.form << " | " << r.dtype << " | " << r.rows << " | "
       << r.d << " | " << Fmt(r.us, 2) << " | " << Fmt(r.gbps, 1) << " | " << Fmt(r.pct_of_copy, 0)
       << " | " << Fmt(r.op_us, 2) << " | " << r.baseline << " | " << Fmt(r.baseline_us, 2) << " | "
       << Fmt(r.speedup, 2) << " |\n";
  }
  std::vector<std::string> notes;
  for (const Row& r : c.rows) {
    if (!r.baseline_note.empty() && r.baseline_note.find("via float32") != std::string::npos &&
        std::find(notes.begin(), notes.end(), r.dtype + ": " + r.baseline_note) == notes.end()) {
      notes.push_back(r.dtype + ": " + r.baseline_note);
    }
  }
  if (!notes.empty()) {
    md << "\nBaselines that ATen cannot run in the storage dtype here:\n\n";
    for (const std::string& n : notes) md << "- " << n << "\n";
  }
}

int Main(int argc, char** argv) {
  Context c;
  if (const auto exit_status = Parse(argc, argv, &c.options)) return *exit_status;
  c.device = c.options.device;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  c.threads = c.options.threads > 0 ? c.options.threads : cores;
  at::set_num_threads(c.threads);
  c10::InferenceMode inference;
  const std::string stem = "results/normbench-" + Hostname() + "-" + c.device;
  if (c.options.csv.empty()) c.options.csv = stem + ".csv";
  if (c.options.markdown.empty()) c.options.markdown = stem + ".md";

  CpuTimer cpu_timer;
#if defined(NORMSERVE_HAVE_CUDA)
  std::optional<CudaTimer> cuda_timer;
#endif
  std::ostringstream header;
  const std::string load_before = Load();
  const int compilers_before = CompilerProcesses();
  if (c.device == "cpu") {
    c.timer = &cpu_timer;
    c.cache_bytes = LastLevelCacheBytes();
    header << "- machine: " << CpuModel() << ", " << cores << " cores, last-level cache "
           << (c.cache_bytes >> 20) << " MiB; CPU row kernels: " << cpu::KernelIsa() << "\n"
           << "- threads: " << c.threads << " (ATen intra-op); LibTorch " << TORCH_VERSION << "\n";
  } else {
#if defined(NORMSERVE_HAVE_CUDA)
    if (cuda::DeviceCount() == 0) Fail("--device cuda: no CUDA device here");
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    cuda_timer.emplace();
    c.timer = &*cuda_timer;
    c.cache_bytes = prop.l2CacheSize;
#if !defined(NORMSERVE_TORCH_CUDA)
    c.aten_on_device = false;  // a CPU LibTorch: no ATen baselines on the GPU
#endif
    header << "- GPU: " << prop.name << ", " << prop.multiProcessorCount << " SMs, L2 "
           << (prop.l2CacheSize >> 20) << " MiB, " << (prop.totalGlobalMem >> 30)
           << " GiB; LibTorch " << TORCH_VERSION
           << (c.aten_on_device ? " (CUDA)" : " (CPU only: no ATen baselines on the GPU)") << "\n";
#else
    Fail("--device cuda: this build has no CUDA kernels (nvcc was not found)");
#endif
  }
  header << "- started " << Now() << "; load average at start " << load_before << "; "
         << compilers_before << " compiler processes running at start\n";
  if (!c.options.note.empty()) header << "- note: " << c.options.note << "\n";
  std::cout << "normserve-normbench: " << c.device << ", " << c.threads << " threads\n"
            << header.str() << std::flush;

  std::vector<Overhead> overheads;
  if (c.options.overhead) {
    if (c.device == "cpu") {
      overheads.push_back(MeasureOverheadCpu());
    }
#if defined(NORMSERVE_HAVE_CUDA)
    if (c.device == "cuda") overheads.push_back(MeasureOverheadCuda());
#endif
    for (const Overhead& o : overheads) {
      std::cout << "sampled timing overhead (" << o.device << ", " << o.workload << "): off "
                << Fmt(o.off_us, 1) << " us/forward, 1 in " << o.default_every << " "
                << Fmt(o.default_us, 1) << " us (" << Fmt(100.0 * (o.default_us / o.off_us - 1), 2)
                << "%), every forward " << Fmt(o.every_us, 1) << " us ("
                << Fmt(100.0 * (o.every_us / o.off_us - 1), 2) << "%)\n";
      if (!std::isnan(o.sampled_ns)) std::cout << "  " << MachineryLine(o) << "\n";
    }
  }

  for (const std::string& vname : c.options.variants) {
    const std::optional<VariantDef> v = FindVariant(vname);
    if (!v) Fail("unknown variant " + vname);
    for (const std::string& form : c.options.forms) {
      for (const std::string& dtype : c.options.dtypes) {
        for (int64_t d : c.options.dims) {
          for (int64_t rows : c.options.rows) BenchOne(c, *v, form == "fused", dtype, rows, d);
        }
      }
    }
  }

  header << "- finished " << Now() << "; load average at the end " << Load() << "; "
         << CompilerProcesses() << " compiler processes running at the end\n";
  const std::vector<Target> targets = EvaluateTargets(c);
  std::cout << "\nTargets:\n";
  for (const Target& t : targets) std::cout << "  " << t.text << ": " << t.result << "\n";
  WriteFiles(c, header.str(), targets, overheads);
  std::cout << "wrote " << c.options.csv << " and " << c.options.markdown << "\n";
  return 0;
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  try {
    return normserve::Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "normserve-normbench: " << e.what() << "\n";
    return 1;
  }
}
