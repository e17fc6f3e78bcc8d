// The step engine's CPU kernels against float64 references on fresh random inputs, odd sizes
// and poisoned outputs: one-step attention (transformer/step_attention.h) and the step's
// scores (decoding/step_scores.h).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "models/decoding/step_scores.h"
#include "models/transformer/step_attention.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

// Odd sizes: 7 rows over 11 slots, 3 heads of 5.
constexpr int64_t kRows = 7, kSlots = 11, kHeads = 3, kHeadDim = 5, kSteps = 9;

StepRows RandomRows(std::mt19937_64& rng) {
  StepRows rows;
  std::vector<int64_t> slots(kSlots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  for (int64_t r = 0; r < kRows; ++r) {
    rows.slot.push_back(slots[r]);
    rows.position.push_back(std::uniform_int_distribution<int64_t>(0, kSteps - 1)(rng));
    rows.source.push_back(slots[(r + 3) % kSlots]);
    rows.source_length.push_back(std::uniform_int_distribution<int64_t>(1, kSteps)(rng));
  }
  return rows;
}

TEST(StepAttentionTest, SelfAttentionKernelMatchesFloat64Reference) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  at::manual_seed(seed);
  // Plain multi-head, one key/value head for all (multi-query) and groups of three.
  for (const auto& [heads, kv_heads] :
       {std::pair<int64_t, int64_t>{kHeads, kHeads}, {kHeads, 1}, {2 * kHeads, 2}}) {
    for (int trial = 0; trial < 20; ++trial) {
      const StepRows rows = RandomRows(rng);
      const at::Tensor qkv = at::randn({kRows, (heads + 2 * kv_heads) * kHeadDim});
      at::Tensor keys = at::randn({kSlots, kv_heads, kSteps, kHeadDim});
      at::Tensor values = at::randn({kSlots, kv_heads, kSteps, kHeadDim});
      at::Tensor keys64 = keys.to(at::kDouble), values64 = values.to(at::kDouble);
      const at::Tensor expected =
          StepSelfAttentionReference(qkv.to(at::kDouble), keys64, values64, rows, heads, kv_heads);
      at::Tensor out = at::full({kRows, heads * kHeadDim}, NAN);  // poisoned
      cpu::StepSelfAttention(qkv.data_ptr<float>(), kRows, heads, kv_heads, kHeadDim,
                             keys.data_ptr<float>(), values.data_ptr<float>(), kSteps,
                             rows.slot.data(), rows.position.data(), out.data_ptr<float>());
      EXPECT_TRUE(at::allclose(out.to(at::kDouble), expected, 1e-5, 1e-5))
          << "heads " << heads << " kv_heads " << kv_heads << " trial " << trial;
      // The new keys and values were written where the reference wrote them, nothing else.
      EXPECT_TRUE(at::allclose(keys.to(at::kDouble), keys64, 1e-6, 1e-6));
      EXPECT_TRUE(at::allclose(values.to(at::kDouble), values64, 1e-6, 1e-6));
    }
  }
}

TEST(StepAttentionTest, CrossAttentionKernelMatchesFloat64Reference) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  at::manual_seed(seed);
  for (int trial = 0; trial < 20; ++trial) {
    const StepRows rows = RandomRows(rng);
    const at::Tensor query = at::randn({kRows, kHeads * kHeadDim});
    const at::Tensor keys = at::randn({kSlots, kHeads, kSteps, kHeadDim});
    const at::Tensor values = at::randn({kSlots, kHeads, kSteps, kHeadDim});
    const at::Tensor expected = StepCrossAttentionReference(
        query.to(at::kDouble), keys.to(at::kDouble), values.to(at::kDouble), rows, kHeads);
    at::Tensor out = at::full({kRows, kHeads * kHeadDim}, NAN);
    cpu::StepCrossAttention(query.data_ptr<float>(), kRows, kHeads, kHeadDim,
                            keys.data_ptr<float>(), values.data_ptr<float>(), kSteps,
                            rows.source.data(), rows.source_length.data(), out.data_ptr<float>());
    EXPECT_TRUE(at::allclose(out.to(at::kDouble), expected, 1e-5, 1e-5)) << "trial " << trial;
  }
}

TEST(StepScoresTest, LogProbRowsMatchFloat64LogSoftmaxPlusOffsets) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::manual_seed(seed);
  const int64_t rows = 5, vocab = 1001, pad = 1, bos = 0;
  for (int trial = 0; trial < 10; ++trial) {
    at::Tensor logits = at::randn({rows, vocab}) * (trial + 1);
    logits[2][7] = -INFINITY;  // an impossible token stays impossible
    const at::Tensor offsets = at::randn({rows});
    at::Tensor expected =
        at::log_softmax(logits.to(at::kDouble), -1) + offsets.to(at::kDouble).unsqueeze(1);
    expected.select(1, pad).fill_(-INFINITY);
    expected.select(1, bos).fill_(-INFINITY);
    LogProbRows(logits.data_ptr<float>(), rows, vocab, offsets.data_ptr<float>(), {pad, bos});
    const at::Tensor finite = expected.isfinite();
    EXPECT_TRUE(at::equal(logits.isfinite(), finite));
    EXPECT_LT(
        (logits.to(at::kDouble) - expected).masked_fill(~finite, 0).abs().max().item<double>(),
        1e-5);
  }
}

TEST(StepScoresTest, ARowWithNaNHasNoPossibleToken) {
  at::Tensor logits = at::randn({3, 50});
  logits[1][20] = NAN;
  LogProbRows(logits.data_ptr<float>(), 3, 50, nullptr, {1, 0});
  EXPECT_TRUE(logits[1].isneginf().all().item<bool>());
  EXPECT_TRUE(logits[0].isfinite().sum().item<int64_t>() == 48);
  EXPECT_TRUE(logits[2].isfinite().sum().item<int64_t>() == 48);
}

TEST(StepScoresTest, TopCandidatesAreTheLargestBestFirstTiesByIndex) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 300)(rng);
    const int64_t count = std::uniform_int_distribution<int64_t>(1, 20)(rng);
    std::vector<float> values(n);
    // Few distinct values, so that ties are common; some -inf.
    for (float& v : values) {
      const int pick = std::uniform_int_distribution<int>(0, 12)(rng);
      v = pick == 0 ? -std::numeric_limits<float>::infinity() : static_cast<float>(pick);
    }
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return values[a] > values[b]; });
    const int64_t expected = std::min(n, count);
    std::vector<float> scores(count, NAN);
    std::vector<int64_t> indices(count, -1);
    TopCandidates(values.data(), n, count, scores.data(), indices.data());
    for (int64_t i = 0; i < expected; ++i) {
      EXPECT_EQ(indices[i], order[i]) << "trial " << trial << " rank " << i;
      EXPECT_EQ(scores[i], values[order[i]]);
    }
  }
}

}  // namespace
}  // namespace normserve
