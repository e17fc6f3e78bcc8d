// The step engine (decoding/step_engine.h) on the bundled models against the whole-batch
// reference (decoding/search.h, decoding/sampling.h): the same outputs for the same inputs
// while requests with different options join and leave mid-way, slots freed and reused, a
// memory budget that makes requests wait, and a request stopped mid-way.
#include "models/decoding/step_engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>

#include "models/decoding/sampling.h"
#include "models/decoding/search.h"
#include "models/text/tokenizer.h"
#include "models/transformer/transformer.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

const std::string kRepository = std::string(NORMSERVE_SOURCE_DIR) + "/models/repository";

const std::vector<std::string> kGerman = {
    "Guten Morgen",
    "Das ist nicht möglich.",
    "ein großes Haus",
    "Vielen Dank!",
    "Wie geht es Ihnen?",
    "Ich habe keine Zeit.",
    "Das Wetter ist schön.",
    "Morgen fahre ich mit dem Zug nach Berlin.",
    "der Hund",
    "eine kleine Katze",
    "Wo ist der Bahnhof?",
    "Ich trinke gern Kaffee.",
    "Das Buch ist sehr gut.",
    "Er kommt morgen.",
};

class StepEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    deen_holder_ = new std::shared_ptr<const ServedModel>(
        ServedModel::Load(kRepository + "/deen/1", "deen", 1));
    enlm_holder_ = new std::shared_ptr<const ServedModel>(
        ServedModel::Load(kRepository + "/enlm/1", "enlm", 1));
    deen_ = deen_holder_->get();
    enlm_ = enlm_holder_->get();
  }
  // The whole-batch reference of one request: its sentences decoded together.
  static std::vector<std::vector<TranslationHypothesis>> Reference(const TokenBatch& sources,
                                                                   const TranslationOptions& o) {
    c10::InferenceMode guard;
    const Transformer& t = deen_->transformer();
    TokenBatch inputs;
    std::vector<int64_t> max_lengths;
    for (const auto& s : sources) {
      inputs.push_back(s);
      inputs.back().push_back(t.config().special.eos);
      max_lengths.push_back(MaxOutputTokens(o, s.size(), t.config().max_positions));
    }
    const EncoderOutput memory = t.Encode(PadBatch(inputs, t.config().special.pad));
    std::vector<std::vector<TranslationHypothesis>> out;
    for (const auto& found :
         BeamSearch(t, memory, max_lengths, {o.beam_size, o.n_best, o.length_penalty})) {
      out.push_back(deen_->ToTranslations(found, o.return_tokens));
    }
    return out;
  }
  static void TearDownTestSuite() {
    delete deen_holder_;
    delete enlm_holder_;
  }
  static const std::shared_ptr<const ServedModel>* deen_holder_;
  static const std::shared_ptr<const ServedModel>* enlm_holder_;
  static const ServedModel* deen_;
  static const ServedModel* enlm_;
};

const std::shared_ptr<const ServedModel>* StepEngineTest::deen_holder_ = nullptr;
const std::shared_ptr<const ServedModel>* StepEngineTest::enlm_holder_ = nullptr;
const ServedModel* StepEngineTest::deen_ = nullptr;
const ServedModel* StepEngineTest::enlm_ = nullptr;

struct Outcome {
  std::vector<std::vector<TranslationHypothesis>> results;
  bool done = false, stopped = false;
};

void ExpectSame(const std::vector<std::vector<TranslationHypothesis>>& got,
                const std::vector<std::vector<TranslationHypothesis>>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), expected[i].size()) << "sentence " << i;
    for (size_t h = 0; h < got[i].size(); ++h) {
      EXPECT_EQ(got[i][h].text, expected[i][h].text) << "sentence " << i << " hypothesis " << h;
      EXPECT_NEAR(got[i][h].score, expected[i][h].score, 1e-4);
    }
  }
}

TEST_F(StepEngineTest, RequestsJoiningMidWayGetTheWholeBatchResults) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  StepEngine engine(*deen_, RequestLimits::kUnlimited);
  struct Request {
    TokenBatch sources;
    TranslationOptions options;
    Outcome outcome;
  };
  std::vector<std::unique_ptr<Request>> requests;
  for (int i = 0; i < 12; ++i) {
    auto request = std::make_unique<Request>();
    request->options.beam_size = std::vector<int64_t>{1, 2, 4, 5}[i % 4];
    request->options.n_best = std::min<int64_t>(request->options.beam_size, 1 + i % 3);
    request->options.length_penalty = std::vector<double>{1.0, 0.0, 2.0}[i % 3];
    std::vector<std::string> texts;
    const int count = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int t = 0; t < count; ++t) {
      texts.push_back(kGerman[std::uniform_int_distribution<size_t>(0, kGerman.size() - 1)(rng)]);
    }
    request->sources = deen_->PrepareTranslate(texts, request->options);
    requests.push_back(std::move(request));
  }
  // A new request joins every few steps, while the earlier ones are mid-way.
  size_t added = 0;
  int steps = 0;
  while (added < requests.size() || !engine.idle()) {
    if (added < requests.size() && steps % 3 == 0) {
      Request* r = requests[added++].get();
      engine.Add(TranslationWork{r->sources,
                                 r->options,
                                 {},
                                 [r](auto&& results) {
                                   r->outcome.results = results;
                                   r->outcome.done = true;
                                 },
                                 {}});
    }
    engine.Step();
    ASSERT_LT(++steps, 10000);
  }
  EXPECT_EQ(engine.load().running_rows, 0);  // every slot went back
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i) + " beam " +
                 std::to_string(requests[i]->options.beam_size));
    ASSERT_TRUE(requests[i]->outcome.done);
    ExpectSame(requests[i]->outcome.results, Reference(requests[i]->sources, requests[i]->options));
  }
}

TEST_F(StepEngineTest, ATightMemoryBudgetMakesSentencesWaitWithTheSameResults) {
  TranslationOptions options;
  const TokenBatch sources = deen_->PrepareTranslate(kGerman, options);
  // Room for about one sentence at a time.
  const auto one_by_one = deen_->TranslateTokens(sources, options, 1);
  ExpectSame(one_by_one, Reference(sources, options));
  StepEngine engine(*deen_, 1);
  Outcome outcome;
  engine.Add(TranslationWork{sources,
                             options,
                             {},
                             [&](auto&& results) {
                               outcome.results = results;
                               outcome.done = true;
                             },
                             {}});
  engine.Step();
  EXPECT_EQ(engine.load().running_sequences, 1);  // the rest of the request waits
  while (engine.Step()) {
  }
  ASSERT_TRUE(outcome.done);
  ExpectSame(outcome.results, one_by_one);
}

TEST_F(StepEngineTest, AStoppedRequestLeavesAndTheOthersAreUnchanged) {
  TranslationOptions options;
  const TokenBatch first = deen_->PrepareTranslate({kGerman[7], kGerman[4]}, options);
  const TokenBatch second = deen_->PrepareTranslate({kGerman[5], kGerman[11]}, options);
  StepEngine engine(*deen_, RequestLimits::kUnlimited);
  Outcome a, b;
  int asked = 0;
  engine.Add(TranslationWork{first, options, [&] { return ++asked > 3; },
                             [&](auto&&) { a.done = true; }, [&] { a.stopped = true; }});
  engine.Add(TranslationWork{second, options, [] { return false; },
                             [&](auto&& results) {
                               b.results = results;
                               b.done = true;
                             },
                             [&] { b.stopped = true; }});
  while (engine.Step()) {
  }
  EXPECT_TRUE(a.stopped);
  EXPECT_FALSE(a.done);
  ASSERT_TRUE(b.done);
  EXPECT_FALSE(b.stopped);
  ExpectSame(b.results, Reference(second, options));
  EXPECT_EQ(engine.load().running_rows, 0);
}

TEST_F(StepEngineTest, GenerationStreamsJoiningMidWayMatchTheirOwnDecoding) {
  std::vector<std::string> prompts = {"the house", "a big", "", "the dog is"};
  struct Stream {
    GenerationOptions options;
    std::vector<int64_t> prompt;
    std::string text;
    GenerationResult result;
    bool done = false;
  };
  std::vector<Stream> streams(prompts.size());
  StepEngine engine(*enlm_, RequestLimits::kUnlimited);
  for (size_t i = 0; i < prompts.size(); ++i) {
    streams[i].options.seed = 7 + i;
    streams[i].options.temperature = i == 2 ? 0.0 : 0.8;
    streams[i].options.top_k = i == 1 ? 20 : 0;
    streams[i].options.max_new_tokens = 12 + 3 * static_cast<int64_t>(i);
    streams[i].prompt = enlm_->PrepareGenerate(prompts[i], streams[i].options);
  }
  size_t added = 0;
  int steps = 0;
  while (added < streams.size() || !engine.idle()) {
    if (added < streams.size() && steps % 2 == 0) {
      Stream* s = &streams[added++];
      GenerationWork work;
      work.prompt = s->prompt;
      work.options = s->options;
      work.on_text = [s](const std::string& delta) {
        s->text += delta;
        return true;
      };
      work.done = [s](GenerationResult&& result) {
        s->result = result;
        s->done = true;
      };
      engine.Add(std::move(work));
    }
    engine.Step();
    ASSERT_LT(++steps, 10000);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    ASSERT_TRUE(streams[i].done);
    // The reference: the stream decoded alone, token by token (sampling.h).
    c10::InferenceMode guard;
    const GenerationOptions& o = streams[i].options;
    std::vector<int> tokens;
    const SamplingStop why = SampleContinuation(
        enlm_->transformer(), streams[i].prompt,
        {o.temperature, o.top_k, o.top_p, o.seed, o.max_new_tokens}, [&](int64_t token) {
          tokens.push_back(static_cast<int>(token));
          return true;
        });
    EXPECT_EQ(streams[i].result.tokens, static_cast<int64_t>(tokens.size()));
    EXPECT_EQ(streams[i].result.finish_reason,
              why == SamplingStop::kEndOfSequence ? "eos" : "length");
    EXPECT_EQ(streams[i].text, streams[i].result.text);
    if (!tokens.empty()) {
      std::string expected = enlm_->target_tokenizer().Decode(tokens);
      if (enlm_->target_tokenizer().Piece(tokens.front()).rfind("\xe2\x96\x81", 0) == 0) {
        expected.insert(0, " ");
      }
      EXPECT_EQ(streams[i].text, expected);
    }
  }
}

}  // namespace
}  // namespace normserve
