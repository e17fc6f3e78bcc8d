// Shadow traffic (README "Shadow traffic"): once a request sent to a variant group has been
// answered by the member that served it, a copy runs on each shadow member of the group drawn
// for it (model.json "shadow": {"fraction": F}), and how the shadow's answer compares with
// the client's is exported (Metrics::RecordShadow*). Copies run one at a time, on a thread of
// their own, at the shadow model's lowest priority, and wait in a bounded queue that drops
// them when full (counted): shadow work never delays, waits on or fails a client's call.
#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "models/served_model.h"
#include "server/calls.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/worker_pool.h"

namespace normserve {

using ShadowMember = ServingTargetT<ServedModel>::Shadow;

class ShadowTraffic {
 public:
  // `limits`: the request limits of the server; each shadow's memory budget applies.
  ShadowTraffic(Metrics* metrics, const CallEnvironment& env, const RequestLimits& limits);
  // Drops the copies that still wait.
  ~ShadowTraffic();

  // Each queues a copy of a request that `primary` answered, with what the answer said, and
  // returns at once; a full queue drops it.
  void Translate(const ShadowMember& shadow, const ServedModel& primary,
                 std::vector<std::string> texts, const TranslationOptions& options,
                 std::vector<std::string> answers);
  // Source/target pairs (translation models) or texts (language models), as the request
  // had them; `answers` holds each one's token log-probs.
  void Score(const ShadowMember& shadow, const ServedModel& primary,
             std::vector<std::pair<std::string, std::string>> pairs, std::vector<std::string> texts,
             std::vector<std::vector<float>> answers);
  void Generate(const ShadowMember& shadow, const ServedModel& primary, std::string prompt,
                const GenerationOptions& options, std::string answer);

  // Drops every copy from now on (the server is draining).
  void Stop() { stopping_ = true; }

 private:
  // Queues `copy` unless stopping or full, counting a drop otherwise.
  void Submit(const Metrics::ShadowPair& pair, std::function<void()> copy);
  // Runs `call` on the shadow's batcher and waits for its answer, in `response`: false
  // (counted as failed) when it could not run or did not answer OK.
  bool Run(const std::shared_ptr<InferenceCall>& call, std::shared_ptr<const void> response,
           const ShadowMember& shadow, const Metrics::ShadowPair& pair, double* seconds);
  RequestLimits LimitsOf(const ShadowMember& shadow) const;

  Metrics* const metrics_;
  const CallEnvironment env_;
  const RequestLimits limits_;
  std::atomic<bool> stopping_{false};
  WorkerPool worker_;  // last: its thread runs copies that use the fields above
};

}  // namespace normserve
