// The step engine of one model version: every live sequence decodes together, one token per
// step. A sequence that finishes leaves at once and its request is answered when its last
// sentence has finished; requests added between steps join at the next one. Translation runs
// beam search (sentence_beams.h) with each sentence's own options; Generate samples each
// stream with its own options and streams its text as its step finishes. Caches live in
// slots written in place (transformer/decoder_slots.h).
//
// Not thread-safe: one thread owns an engine and calls Add and Step. The callbacks run on it,
// inside Step. Torch-free, so that the server can include it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/served_model.h"

namespace normserve {

struct TranslationWork {
  TokenBatch sources;  // tokenized and checked (ServedModel::PrepareTranslate)
  TranslationOptions options;
  // Asked before every step; true ends the request without an answer: `stopped` is called.
  std::function<bool()> stop;
  // Each sentence's hypotheses in input order, once all of them have finished.
  std::function<void(std::vector<std::vector<TranslationHypothesis>>&& results)> done;
  std::function<void()> stopped;
};

struct GenerationWork {
  std::vector<int64_t> prompt;  // ServedModel::PrepareGenerate
  GenerationOptions options;
  std::function<bool()> stop;  // as in TranslationWork
  // Each new piece of text (whole UTF-8 characters); false when the client is gone.
  std::function<bool(const std::string& delta)> on_text;
  // Called after each decoded token (for time-to-first-token and inter-token latency).
  std::function<void()> on_token;
  std::function<void(GenerationResult&& result)> done;
  std::function<void()> stopped;
};

struct EngineLoad {
  int64_t running_sequences = 0;  // sentences or streams decoding
  int64_t running_rows = 0;       // their beams
  int64_t waiting_requests = 0;   // added, waiting for memory
};

class StepEngine {
 public:
  // `model` must outlive the engine. A request joins while the estimated memory of the
  // running ones (decoding/memory_cost.h) stays within `memory_budget_bytes`; one that does
  // not fit waits for others to finish (a request always runs when it is alone).
  StepEngine(const ServedModel& model, int64_t memory_budget_bytes);
  ~StepEngine();

  void Add(TranslationWork work);
  void Add(GenerationWork work);
  // Stops the requests whose stop() says so, admits what fits, runs one step of every live
  // sequence and answers what finished. Returns false when there was nothing to run.
  bool Step();
  bool idle() const;
  EngineLoad load() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace normserve
