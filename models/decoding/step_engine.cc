#include "models/decoding/step_engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <deque>
#include <list>
#include <map>
#include <utility>

#include "models/decoding/generated_text.h"
#include "models/decoding/memory_cost.h"
#include "models/decoding/sampling.h"
#include "models/decoding/search.h"
#include "models/decoding/sentence_beams.h"
#include "models/decoding/step_scores.h"
#include "models/decoding/token_mask.h"
#include "models/transformer/decoder_slots.h"
#include "models/transformer/step_attention.h"
#include "models/transformer/transformer.h"

namespace normserve {
namespace {

struct TranslationRequest;

// One source sentence of a running translation request: its beams and their slots.
struct LiveSentence {
  TranslationRequest* request;
  size_t index;  // in its request
  SentenceBeams beams;
  std::vector<int64_t> slots;  // row slot of each live beam
  int64_t source_slot = 0, source_length = 0;
  int64_t reserved_bytes = 0;
};

struct TranslationRequest {
  TranslationWork work;
  size_t admitted = 0;   // sentences that have joined, in input order
  size_t remaining = 0;  // sentences not finished
  std::vector<std::vector<Hypothesis>> found;
};

// Each sentence's best expansions of a step: scores and indices beam * vocab + token into its
// live beams' rows, best first, at most 2K of them.
struct Candidates {
  std::vector<float> scores;
  std::vector<int64_t> indices;
};

struct GenerationStream {
  GenerationWork work;
  int64_t reserved_bytes = 0;
  std::unique_ptr<GeneratedText> text;
  at::Generator generator;
  int64_t slot = 0, position = 0, last_token = 0, produced = 0;
};

}  // namespace

struct StepEngine::State {
  State(const ServedModel& m, int64_t budget)
      : model(m),
        transformer(m.transformer()),
        special(m.config().special),
        never_output(NonOutputTokens(special)),
        budget(budget),
        slots(transformer.MakeSlots()) {}

  const ServedModel& model;
  const Transformer& transformer;
  const SpecialTokens special;
  const std::vector<int64_t> never_output;
  const int64_t budget;
  DecoderSlots slots;
  int64_t reserved = 0;  // estimated memory of the live sentences and streams
  // Every translation request added and not answered; those with sentences still to join
  // wait in `waiting_translations` too, in the order added. Sentences join one by one as
  // memory allows, so that a large request fills what is free instead of waiting for all.
  std::list<std::unique_ptr<TranslationRequest>> translations;
  std::deque<TranslationRequest*> waiting_translations;
  std::list<LiveSentence> sentences;
  std::deque<std::unique_ptr<GenerationStream>> waiting_streams;
  std::list<std::unique_ptr<GenerationStream>> streams;

  bool Fits(int64_t bytes) const {
    return (sentences.empty() && streams.empty()) || reserved + bytes <= budget;
  }
  at::Device device() const { return transformer.device(); }

  void StopRequests();
  void AdmitTranslations();
  // Encodes the sentences that joined this step (inputs: their sources closed by </s>).
  void Encode(const std::vector<const LiveSentence*>& joined,
              const std::vector<std::vector<int64_t>>& inputs);
  void AdmitStreams();
  void StepTranslations();
  std::vector<Candidates> SelectCandidates(at::Tensor logits,
                                           const std::vector<LiveSentence*>& order,
                                           const std::vector<float>& beam_scores) const;
  void StepStreams();
  void FinishTranslation(TranslationRequest* request);
  void FinishStream(GenerationStream& stream, const char* reason);
  // Handles a sampled token of a stream; false when the stream has finished.
  bool TakeToken(GenerationStream& stream, int64_t token);
};

StepEngine::StepEngine(const ServedModel& model, int64_t memory_budget_bytes)
    : state_(std::make_unique<State>(model, memory_budget_bytes)) {}

StepEngine::~StepEngine() = default;

void StepEngine::Add(TranslationWork work) {
  auto request = std::make_unique<TranslationRequest>();
  request->remaining = work.sources.size();
  request->found.resize(work.sources.size());
  request->work = std::move(work);
  state_->waiting_translations.push_back(request.get());
  state_->translations.push_back(std::move(request));
}

void StepEngine::Add(GenerationWork work) {
  auto stream = std::make_unique<GenerationStream>();
  stream->reserved_bytes =
      GenerateMemoryBytes(state_->model.config(), static_cast<int64_t>(work.prompt.size()) + 1,
                          work.options.max_new_tokens);
  stream->work = std::move(work);
  state_->waiting_streams.push_back(std::move(stream));
}

bool StepEngine::idle() const {
  const State& s = *state_;
  return s.translations.empty() && s.waiting_streams.empty() && s.streams.empty();
}

EngineLoad StepEngine::load() const {
  const State& s = *state_;
  EngineLoad load;
  load.running_sequences = static_cast<int64_t>(s.sentences.size() + s.streams.size());
  load.running_rows = s.slots.live_rows();
  load.waiting_requests =
      static_cast<int64_t>(s.waiting_translations.size() + s.waiting_streams.size());
  return load;
}

bool StepEngine::Step() {
  if (idle()) return false;
  c10::InferenceMode guard;
  State& s = *state_;
  s.StopRequests();
  s.AdmitTranslations();
  s.AdmitStreams();
  if (!s.sentences.empty()) s.StepTranslations();
  if (!s.streams.empty()) s.StepStreams();
  return true;
}

void StepEngine::State::StopRequests() {
  for (auto it = translations.begin(); it != translations.end();) {
    TranslationRequest* request = it->get();
    if (!request->work.stop || !request->work.stop()) {
      ++it;
      continue;
    }
    for (auto sentence = sentences.begin(); sentence != sentences.end();) {
      if (sentence->request != request) {
        ++sentence;
        continue;
      }
      for (int64_t slot : sentence->slots) slots.ReleaseRow(slot);
      slots.ReleaseSource(sentence->source_slot);
      reserved -= sentence->reserved_bytes;
      sentence = sentences.erase(sentence);
    }
    waiting_translations.erase(
        std::remove(waiting_translations.begin(), waiting_translations.end(), request),
        waiting_translations.end());
    if (request->work.stopped) request->work.stopped();
    it = translations.erase(it);
  }
  for (auto it = waiting_streams.begin(); it != waiting_streams.end();) {
    if ((*it)->work.stop && (*it)->work.stop()) {
      if ((*it)->work.stopped) (*it)->work.stopped();
      it = waiting_streams.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = streams.begin(); it != streams.end();) {
    GenerationStream& stream = **it;
    if (!stream.work.stop || !stream.work.stop()) {
      ++it;
      continue;
    }
    slots.ReleaseRow(stream.slot);
    reserved -= stream.reserved_bytes;
    if (stream.work.stopped) stream.work.stopped();
    it = streams.erase(it);
  }
}

void StepEngine::State::AdmitTranslations() {
  const ModelConfig& c = model.config();
  std::vector<const LiveSentence*> joined;
  std::vector<std::vector<int64_t>> inputs;
  while (!waiting_translations.empty()) {
    TranslationRequest& request = *waiting_translations.front();
    const TranslationOptions& o = request.work.options;
    for (; request.admitted < request.work.sources.size(); ++request.admitted) {
      const auto& source = request.work.sources[request.admitted];
      const int64_t source_length = static_cast<int64_t>(source.size()) + 1;
      const int64_t max_length = MaxOutputTokens(o, source.size(), c.max_positions);
      const int64_t bytes = TranslateMemoryBytes(c, 1, source_length, max_length, o.beam_size);
      if (!Fits(bytes)) return Encode(joined, inputs);
      reserved += bytes;
      sentences.push_back(
          {&request, request.admitted, SentenceBeams(o.beam_size, max_length, o.length_penalty)});
      LiveSentence& sentence = sentences.back();
      sentence.reserved_bytes = bytes;
      sentence.source_length = source_length;
      sentence.source_slot = slots.AcquireSource(source_length);
      sentence.slots.push_back(slots.AcquireRow());
      joined.push_back(&sentence);
      inputs.push_back(source);
      inputs.back().push_back(special.eos);
    }
    waiting_translations.pop_front();
  }
  Encode(joined, inputs);
}

void StepEngine::State::Encode(const std::vector<const LiveSentence*>& joined,
                               const std::vector<std::vector<int64_t>>& inputs) {
  if (joined.empty()) return;
  std::vector<int64_t> source_slots;
  for (const LiveSentence* sentence : joined) source_slots.push_back(sentence->source_slot);
  transformer.EncodeIntoSlots(PadBatch(inputs, special.padding(), device()), source_slots, slots);
}

std::vector<Candidates> StepEngine::State::SelectCandidates(
    at::Tensor logits, const std::vector<LiveSentence*>& order,
    const std::vector<float>& beam_scores) const {
  const int64_t vocab = logits.size(1);
  std::vector<Candidates> out(order.size());
  if (logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.is_contiguous()) {
    LogProbRows(logits.data_ptr<float>(), logits.size(0), vocab, beam_scores.data(), never_output);
    const float* row = logits.data_ptr<float>();
    for (size_t i = 0; i < order.size(); ++i) {
      const int64_t live = order[i]->beams.live();
      const int64_t count = std::min(2 * order[i]->beams.beam_size(), live * vocab);
      out[i].scores.resize(count);
      out[i].indices.resize(count);
      TopCandidates(row, live * vocab, count, out[i].scores.data(), out[i].indices.data());
      row += live * vocab;
    }
    return out;
  }
  // Elsewhere on ATen: one top-k per run of sentences with the same live beams and beam size
  // (order is sorted so), over their rows viewed as [sentences, beams * V].
  at::Tensor logprobs = at::log_softmax(logits, -1);
  MaskNonOutputTokens(logprobs, special);
  logprobs.add_(at::tensor(beam_scores, at::kFloat).to(device()).unsqueeze(1));
  int64_t row = 0;
  for (size_t first = 0; first < order.size();) {
    const int64_t live = order[first]->beams.live(), k = order[first]->beams.beam_size();
    size_t end = first;
    while (end < order.size() && order[end]->beams.live() == live &&
           order[end]->beams.beam_size() == k) {
      ++end;
    }
    const auto count = static_cast<int64_t>(end - first);
    const at::Tensor candidates = logprobs.narrow(0, row, count * live).view({count, live * vocab});
    const auto [top, index] = candidates.topk(std::min(2 * k, live * vocab), 1);
    const at::Tensor top_scores = top.cpu().contiguous(), top_index = index.cpu().contiguous();
    const int64_t width = top_scores.size(1);
    for (size_t g = first; g < end; ++g) {
      const int64_t offset = static_cast<int64_t>(g - first) * width;
      const float* s = top_scores.data_ptr<float>() + offset;
      const int64_t* x = top_index.data_ptr<int64_t>() + offset;
      out[g].scores.assign(s, s + width);
      out[g].indices.assign(x, x + width);
    }
    row += count * live;
    first = end;
  }
  return out;
}

void StepEngine::State::StepTranslations() {
  // Rows are laid out sentence by sentence, sentences sorted by (live beams, beam size).
  std::vector<LiveSentence*> order;
  for (LiveSentence& sentence : sentences) order.push_back(&sentence);
  std::stable_sort(order.begin(), order.end(), [](const LiveSentence* a, const LiveSentence* b) {
    return std::make_pair(a->beams.live(), a->beams.beam_size()) <
           std::make_pair(b->beams.live(), b->beams.beam_size());
  });
  StepRows rows;
  std::vector<int64_t> tokens;
  std::vector<float> scores;
  int64_t longest = 0;
  for (const LiveSentence* sentence : order) {
    const int64_t step = sentence->beams.step();
    for (int64_t j = 0; j < sentence->beams.live(); ++j) {
      rows.slot.push_back(sentence->slots[j]);
      rows.position.push_back(step);
      rows.source.push_back(sentence->source_slot);
      rows.source_length.push_back(sentence->source_length);
      tokens.push_back(step == 0 ? special.decoder_start : sentence->beams.last_token(j));
      scores.push_back(sentence->beams.scores()[j]);
    }
    longest = std::max(longest, step + 1);
  }
  slots.ReserveSteps(longest);
  const at::Tensor logits =
      transformer.Step(at::tensor(tokens, at::kLong).to(device()), rows, slots);
  const int64_t vocab = logits.size(1);
  const std::vector<Candidates> candidates = SelectCandidates(logits, order, scores);

  std::vector<DecoderSlots::Copy> copies;
  std::vector<TranslationRequest*> finished;
  for (size_t i = 0; i < order.size(); ++i) {
    LiveSentence& sentence = *order[i];
    const int64_t step = sentence.beams.step();
    const std::vector<int64_t> parents = sentence.beams.Advance(
        candidates[i].scores.data(), candidates[i].indices.data(),
        static_cast<int64_t>(candidates[i].scores.size()), vocab, special.eos);
    // The first child of a beam takes over its slot; another child is a fork and copies it
    // (keys up to this step's, written by this step); slots of beams left behind free.
    std::vector<bool> taken(sentence.slots.size(), false);
    std::vector<int64_t> next_slots(parents.size(), -1);
    for (size_t j = 0; j < parents.size(); ++j) {
      if (!taken[parents[j]]) {
        taken[parents[j]] = true;
        next_slots[j] = sentence.slots[parents[j]];
      }
    }
    for (size_t p = 0; p < taken.size(); ++p) {
      if (!taken[p]) slots.ReleaseRow(sentence.slots[p]);
    }
    for (size_t j = 0; j < parents.size(); ++j) {
      if (next_slots[j] >= 0) continue;
      next_slots[j] = slots.AcquireRow();
      copies.push_back({sentence.slots[parents[j]], next_slots[j], step + 1});
    }
    sentence.slots = std::move(next_slots);
    if (sentence.beams.done()) {
      TranslationRequest* request = sentence.request;
      request->found[sentence.index] = sentence.beams.Best(request->work.options.n_best);
      if (--request->remaining == 0) finished.push_back(request);
    }
  }
  slots.CopyRows(copies);
  for (auto it = sentences.begin(); it != sentences.end();) {
    if (it->beams.done()) {
      slots.ReleaseSource(it->source_slot);
      reserved -= it->reserved_bytes;
      it = sentences.erase(it);
    } else {
      ++it;
    }
  }
  for (TranslationRequest* request : finished) FinishTranslation(request);
}

void StepEngine::State::FinishTranslation(TranslationRequest* request) {
  std::vector<std::vector<TranslationHypothesis>> results;
  for (const auto& hypotheses : request->found) {
    results.push_back(model.ToTranslations(hypotheses, request->work.options.return_tokens));
  }
  auto it = std::find_if(translations.begin(), translations.end(),
                         [&](const auto& r) { return r.get() == request; });
  std::unique_ptr<TranslationRequest> owned = std::move(*it);
  translations.erase(it);
  if (owned->work.done) owned->work.done(std::move(results));
}

void StepEngine::State::AdmitStreams() {
  std::vector<GenerationStream*> joined;
  std::vector<std::vector<int64_t>> inputs;
  std::vector<int64_t> lengths, rows;
  while (!waiting_streams.empty() && Fits(waiting_streams.front()->reserved_bytes)) {
    std::unique_ptr<GenerationStream> stream = std::move(waiting_streams.front());
    waiting_streams.pop_front();
    reserved += stream->reserved_bytes;
    const GenerationOptions& o = stream->work.options;
    stream->text =
        std::make_unique<GeneratedText>(model.target_tokenizer(), o.stop, stream->work.on_text);
    stream->generator = MakeSamplingGenerator(o.seed);
    stream->slot = slots.AcquireRow();
    inputs.push_back({special.decoder_start});
    inputs.back().insert(inputs.back().end(), stream->work.prompt.begin(),
                         stream->work.prompt.end());
    stream->position = static_cast<int64_t>(inputs.back().size());
    lengths.push_back(stream->position);
    rows.push_back(stream->slot);
    joined.push_back(stream.get());
    streams.push_back(std::move(stream));
  }
  if (joined.empty()) return;
  const at::Tensor logits =
      transformer
          .PrefillIntoSlots(PadBatch(inputs, special.padding(), device()), lengths, rows, slots)
          .cpu();
  for (size_t i = 0; i < joined.size(); ++i) {
    GenerationStream& stream = *joined[i];
    const GenerationOptions& o = stream.work.options;
    const SamplingOptions sampling{o.temperature, o.top_k, o.top_p, o.seed, o.max_new_tokens};
    const int64_t token =
        SampleToken(logits[static_cast<int64_t>(i)].clone(), special, sampling, stream.generator);
    TakeToken(stream, token);
  }
  // Streams that finished at their first token leave now.
  for (auto it = streams.begin(); it != streams.end();) {
    if ((*it)->text == nullptr) {
      it = streams.erase(it);
    } else {
      ++it;
    }
  }
}

bool StepEngine::State::TakeToken(GenerationStream& stream, int64_t token) {
  if (token < 0 || token == special.eos) {
    FinishStream(stream, "eos");
    return false;
  }
  ++stream.produced;
  stream.last_token = token;
  const bool more = stream.text->Push(token);
  if (stream.work.on_token) stream.work.on_token();
  if (!more) {
    FinishStream(stream, stream.text->stopped_by_string() ? "stop" : "cancelled");
    return false;
  }
  if (stream.produced >= stream.work.options.max_new_tokens) {
    FinishStream(stream, "length");
    return false;
  }
  return true;
}

// Answers the stream and marks it finished (text == nullptr); the caller erases it.
void StepEngine::State::FinishStream(GenerationStream& stream, const char* reason) {
  GenerationResult result;
  result.text = stream.text->Finish();
  result.tokens = stream.produced;
  result.finish_reason = reason;
  stream.text.reset();
  slots.ReleaseRow(stream.slot);
  reserved -= stream.reserved_bytes;
  if (stream.work.done) stream.work.done(std::move(result));
}

void StepEngine::State::StepStreams() {
  StepRows rows;
  std::vector<int64_t> tokens;
  int64_t longest = 0;
  for (const auto& stream : streams) {
    rows.slot.push_back(stream->slot);
    rows.position.push_back(stream->position);
    tokens.push_back(stream->last_token);
    longest = std::max(longest, stream->position + 1);
  }
  slots.ReserveSteps(longest);
  // Sampled on the host, where each stream's seeded generator lives.
  const at::Tensor logits =
      transformer.Step(at::tensor(tokens, at::kLong).to(device()), rows, slots).cpu();
  int64_t r = 0;
  for (auto it = streams.begin(); it != streams.end(); ++r) {
    GenerationStream& stream = **it;
    ++stream.position;
    const GenerationOptions& o = stream.work.options;
    const SamplingOptions sampling{o.temperature, o.top_k, o.top_p, o.seed, o.max_new_tokens};
    if (TakeToken(stream, SampleToken(logits[r].clone(), special, sampling, stream.generator))) {
      ++it;
    } else {
      it = streams.erase(it);
    }
  }
}

}  // namespace normserve
