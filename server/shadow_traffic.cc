#include "server/shadow_traffic.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <tuple>

#include "models/errors.h"

namespace normserve {
namespace {

// Copies that may wait for the shadow thread; more are dropped.
constexpr size_t kMaxWaitingCopies = 64;

Metrics::ShadowPair PairOf(const ShadowMember& shadow, const ServedModel& primary,
                           const char* rpc) {
  return {primary.name(), shadow.model->name(), shadow.model->norm_label(), rpc};
}

double AgreementRatio(const std::vector<std::string>& answers,
                      const std::vector<std::string>& shadow) {
  if (answers.empty() || answers.size() != shadow.size()) return 0;
  size_t same = 0;
  for (size_t i = 0; i < answers.size(); ++i) same += answers[i] == shadow[i] ? 1 : 0;
  return static_cast<double>(same) / static_cast<double>(answers.size());
}

}  // namespace

ShadowTraffic::ShadowTraffic(Metrics* metrics, const CallEnvironment& env,
                             const RequestLimits& limits)
    : metrics_(metrics), env_(env), limits_(limits), worker_(1, kMaxWaitingCopies) {}

ShadowTraffic::~ShadowTraffic() { Stop(); }

void ShadowTraffic::Submit(const Metrics::ShadowPair& pair, std::function<void()> copy) {
  // The copy checks stopping_ again when its turn comes: what waits at a drain is dropped.
  auto run = [this, pair, copy = std::move(copy)] {
    if (stopping_) return metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kDropped);
    copy();
  };
  if (stopping_ || !worker_.Submit(std::move(run))) {
    metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kDropped);
  }
}

RequestLimits ShadowTraffic::LimitsOf(const ShadowMember& shadow) const {
  RequestLimits limits = limits_;
  limits.memory_budget_bytes = shadow.batcher->config().memory_budget_bytes;
  return limits;
}

bool ShadowTraffic::Run(const std::shared_ptr<InferenceCall>& call,
                        std::shared_ptr<const void> response, const ShadowMember& shadow,
                        const Metrics::ShadowPair& pair, double* seconds) {
  auto answered = std::make_shared<std::promise<grpc::Status>>();
  std::future<grpc::Status> status = answered->get_future();
  // The response lives as long as the call that writes it, which may outlive this wait.
  call->OnFinish([answered, response](const grpc::Status& s) { answered->set_value(s); });
  const auto start = Clock::now();
  std::string why;
  bool ok = shadow.batcher->Enqueue(call, &why) == Batcher::EnqueueResult::kQueued;
  // The call ends by its own deadline (the margin covers its last step); a drain ends the
  // wait sooner.
  const auto give_up = start + InferenceCall::kUnattendedDeadline + std::chrono::seconds(5);
  while (ok && status.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    ok = !stopping_ && Clock::now() < give_up;
  }
  ok = ok && status.get().ok();
  *seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!ok) metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kFailed);
  return ok;
}

void ShadowTraffic::Translate(const ShadowMember& shadow, const ServedModel& primary,
                              std::vector<std::string> texts, const TranslationOptions& options,
                              std::vector<std::string> answers) {
  const Metrics::ShadowPair pair = PairOf(shadow, primary, "Translate");
  Submit(pair,
         [this, shadow, pair, texts = std::move(texts), options, answers = std::move(answers)] {
           auto response = std::make_shared<v1::TranslateResponse>();
           std::shared_ptr<TranslateCall> call;
           try {
             TokenBatch sources = shadow.model->PrepareTranslate(texts, options, LimitsOf(shadow));
             call = std::make_shared<TranslateCall>(
                 nullptr, nullptr, shadow.model, shadow.batcher->config().priority_levels - 1,
                 std::move(sources), options, response.get(), env_, Clock::now());
           } catch (const InvalidInputError&) {
             return metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kFailed);
           }
           double seconds = 0;
           if (!Run(call, response, shadow, pair, &seconds)) return;
           std::vector<std::string> outputs;
           for (const auto& t : response->translations()) {
             outputs.push_back(t.hypotheses_size() > 0 ? t.hypotheses(0).text() : "");
           }
           metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kCompared);
           metrics_->RecordShadowAgreement(pair, AgreementRatio(answers, outputs), seconds);
         });
}

void ShadowTraffic::Score(const ShadowMember& shadow, const ServedModel& primary,
                          std::vector<std::pair<std::string, std::string>> pairs,
                          std::vector<std::string> texts, std::vector<std::vector<float>> answers) {
  const Metrics::ShadowPair pair = PairOf(shadow, primary, "Score");
  Submit(pair, [this, shadow, pair, pairs = std::move(pairs), texts = std::move(texts),
                answers = std::move(answers)] {
    auto response = std::make_shared<v1::ScoreResponse>();
    std::shared_ptr<ScoreCall> call;
    try {
      const RequestLimits limits = LimitsOf(shadow);
      TokenBatch source_tokens, target_tokens;
      if (pairs.empty()) {
        target_tokens = shadow.model->PrepareScoreTexts(texts, limits);
      } else {
        std::tie(source_tokens, target_tokens) = shadow.model->PrepareScorePairs(pairs, limits);
      }
      call = std::make_shared<ScoreCall>(
          nullptr, nullptr, shadow.model, shadow.batcher->config().priority_levels - 1,
          std::move(source_tokens), std::move(target_tokens), response.get(), env_, Clock::now());
    } catch (const InvalidInputError&) {
      return metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kFailed);
    }
    double seconds = 0;
    if (!Run(call, response, shadow, pair, &seconds)) return;
    // Token by token; when the two tokenize a text differently, over the shorter.
    double sum = 0;
    int64_t count = 0;
    for (int i = 0; i < response->results_size() && i < static_cast<int>(answers.size()); ++i) {
      const auto& tokens = response->results(i).tokens();
      const auto& expected = answers[static_cast<size_t>(i)];
      const size_t n = std::min(expected.size(), static_cast<size_t>(tokens.size()));
      for (size_t t = 0; t < n; ++t) {
        sum += std::fabs(static_cast<double>(tokens[static_cast<int>(t)].logprob()) -
                         static_cast<double>(expected[t]));
      }
      count += static_cast<int64_t>(n);
    }
    metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kCompared);
    metrics_->RecordShadowLogprobDiff(pair, count > 0 ? sum / static_cast<double>(count) : 0,
                                      seconds);
  });
}

void ShadowTraffic::Generate(const ShadowMember& shadow, const ServedModel& primary,
                             std::string prompt, const GenerationOptions& options,
                             std::string answer) {
  const Metrics::ShadowPair pair = PairOf(shadow, primary, "Generate");
  Submit(pair,
         [this, shadow, pair, prompt = std::move(prompt), options, answer = std::move(answer)] {
           std::shared_ptr<GenerateCall> call;
           try {
             std::vector<int64_t> tokens =
                 shadow.model->PrepareGenerate(prompt, options, LimitsOf(shadow));
             call = std::make_shared<GenerateCall>(nullptr, nullptr, shadow.model,
                                                   shadow.batcher->config().priority_levels - 1,
                                                   std::move(tokens), options, env_, Clock::now());
           } catch (const InvalidInputError&) {
             return metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kFailed);
           }
           call->KeepText();
           double seconds = 0;
           if (!Run(call, nullptr, shadow, pair, &seconds)) return;
           // The call has finished: its text is complete and no other thread writes it.
           metrics_->RecordShadow(pair, Metrics::ShadowOutcome::kCompared);
           metrics_->RecordShadowAgreement(pair, call->text() == answer ? 1.0 : 0.0, seconds);
         });
}

}  // namespace normserve
