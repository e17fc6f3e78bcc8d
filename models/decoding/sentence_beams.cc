#include "models/decoding/sentence_beams.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace normserve {

double NormalizedScore(double logprob, size_t output_tokens, double length_penalty) {
  return logprob / std::pow(static_cast<double>(output_tokens), length_penalty);
}

SentenceBeams::SentenceBeams(int64_t beam_size, int64_t max_length, double length_penalty)
    : beam_size_(beam_size), max_length_(max_length), length_penalty_(length_penalty) {}

std::vector<int64_t> SentenceBeams::Advance(const float* scores, const int64_t* indices,
                                            int64_t count, int64_t vocab, int64_t eos) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t k = beam_size_;
  std::vector<int64_t> parents;
  std::vector<std::vector<int64_t>> histories;
  std::vector<float> kept_scores;
  for (int64_t j = 0; j < count && !done_; ++j) {
    const float score = scores[j];
    const auto kept = static_cast<int64_t>(parents.size());
    if (score == kNegInf || (kept == k && j >= k)) break;
    const int64_t beam = indices[j] / vocab, token = indices[j] % vocab;
    if (token == eos) {
      if (j >= k || step_ == 0) continue;
      Hypothesis h;
      h.tokens = histories_[beam];
      h.logprob = score;
      h.score = NormalizedScore(score, h.tokens.size() + 1, length_penalty_);
      finished_.push_back(std::move(h));
      if (static_cast<int64_t>(finished_.size()) == k) done_ = true;
    } else if (kept < k) {
      parents.push_back(beam);
      histories.push_back(histories_[beam]);
      histories.back().push_back(token);
      kept_scores.push_back(score);
    }
  }
  ++step_;
  if (!done_ && parents.empty()) {
    if (finished_.empty()) {
      Hypothesis h;
      h.tokens = histories_.front();
      h.logprob = h.score = -std::numeric_limits<double>::infinity();
      finished_.push_back(std::move(h));
    }
    done_ = true;
  } else if (!done_ && step_ >= max_length_) {
    for (size_t b = 0; b < histories.size(); ++b) {
      Hypothesis h;
      h.tokens = histories[b];
      h.logprob = kept_scores[b];
      h.score = NormalizedScore(h.logprob, h.tokens.size(), length_penalty_);
      finished_.push_back(std::move(h));
    }
    done_ = true;
  }
  histories_ = std::move(histories);
  scores_ = std::move(kept_scores);
  if (done_) {
    histories_.clear();
    scores_.clear();
    parents.clear();
  }
  return parents;
}

std::vector<Hypothesis> SentenceBeams::Best(int64_t n) {
  std::stable_sort(finished_.begin(), finished_.end(),
                   [](const Hypothesis& x, const Hypothesis& y) { return x.score > y.score; });
  finished_.resize(std::min<size_t>(finished_.size(), static_cast<size_t>(n)));
  return std::move(finished_);
}

}  // namespace normserve
