// The beam search of one sentence, step by step, on the host: which expansions survive, which
// hypotheses finish, and when the sentence is done. The whole-batch reference (search.h) and
// the step engine (step_engine.h) both decide with it, so they agree by construction on
// everything but the numbers the model gives them.
//
// The rules, fairseq's with CTranslate2's ends (with them, 99%+ of beam-4 outputs on deen are
// CTranslate2's strings: scripts/bench-ctranslate2.py):
// - each step looks at the 2K best expansions of the live beams (K = beam size); a </s>
//   among the best K finishes a hypothesis, scored logprob / (tokens + 1)^length_penalty;
//   the best K other expansions stay live;
// - </s> is never chosen at the first step: no hypothesis is empty;
// - the sentence is done once K hypotheses have finished, or when the token chosen at its
//   last allowed step (max_length) is decided: the live beams then finish without a </s>,
//   scored logprob / tokens^length_penalty;
// - a sentence left with no possible token (non-finite scores) ends; if it finished
//   nothing yet, its first beam so far becomes a hypothesis scored -inf.
#pragma once

#include <cstdint>
#include <vector>

namespace normserve {

struct Hypothesis {
  std::vector<int64_t> tokens;  // without the closing </s>
  double logprob = 0;           // sum over the tokens (and </s> when it ended with one)
  double score = 0;             // length-normalized logprob
};

// logprob / output_tokens^length_penalty.
double NormalizedScore(double logprob, size_t output_tokens, double length_penalty);

class SentenceBeams {
 public:
  SentenceBeams(int64_t beam_size, int64_t max_length, double length_penalty);

  // One step: `count` candidates, best first, each a score (the beam's logprob plus the
  // token's) and an index beam * vocab + token into the live beams' expansions. Returns the
  // parent beam of each beam kept, in order; their tokens and scores are live() afterwards.
  std::vector<int64_t> Advance(const float* scores, const int64_t* indices, int64_t count,
                               int64_t vocab, int64_t eos);
  // Ends the search where it is (its request stopped).
  void Stop() { done_ = true; }
  // The best n finished hypotheses, best first.
  std::vector<Hypothesis> Best(int64_t n);

  bool done() const { return done_; }
  int64_t step() const { return step_; }  // steps decided so far
  int64_t beam_size() const { return beam_size_; }
  int64_t live() const { return static_cast<int64_t>(scores_.size()); }
  const std::vector<float>& scores() const { return scores_; }  // per live beam
  int64_t last_token(int64_t beam) const { return histories_[beam].back(); }

 private:
  const int64_t beam_size_, max_length_;
  const double length_penalty_;
  int64_t step_ = 0;
  bool done_ = false;
  std::vector<std::vector<int64_t>> histories_{{}};  // one empty beam at the start
  std::vector<float> scores_{0.0f};
  std::vector<Hypothesis> finished_;
};

}  // namespace normserve
