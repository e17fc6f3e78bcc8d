// The SentencePiece tokenizer behind its shim: training on generated text, fairseq's special
// ids, Encode/Decode round trips with umlauts, and load errors that name the file.
#include "models/text/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "models/errors.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

class TokenizerTest : public ::testing::Test {
 protected:
  // One tokenizer per test program run (training takes about a second).
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    seed_ = testing::TestSeed();
    std::mt19937_64 rng(seed_);
    const std::string corpus = dir_->File("corpus.txt");
    testing::WriteTextFile(corpus, testing::GenerateCorpus(rng, 400));
    TrainTokenizer({corpus, dir_->File("spm"), 200});
    tokenizer_ = Tokenizer::Load(dir_->File("spm.model")).release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr); }

  static testing::TempDir* dir_;
  static uint64_t seed_;
  static Tokenizer* tokenizer_;
};

testing::TempDir* TokenizerTest::dir_ = nullptr;
uint64_t TokenizerTest::seed_ = 0;
Tokenizer* TokenizerTest::tokenizer_ = nullptr;

TEST_F(TokenizerTest, SpecialIdsFollowFairseq) {
  SCOPED_TRACE(testing::SeedMessage(seed_));
  EXPECT_EQ(tokenizer_->Piece(0), "<s>");
  EXPECT_EQ(tokenizer_->Piece(1), "<pad>");
  EXPECT_EQ(tokenizer_->Piece(2), "</s>");
  EXPECT_EQ(tokenizer_->Piece(3), "<unk>");
  EXPECT_GT(tokenizer_->vocab_size(), 4);
  EXPECT_LE(tokenizer_->vocab_size(), 200);
}

TEST_F(TokenizerTest, EncodeDecodeRoundTrip) {
  SCOPED_TRACE(testing::SeedMessage(seed_));
  const std::vector<std::string> sentences = {
      "the house is small.",
      "Das Mädchen läuft über die Brücke.",
      "Größe, Äpfel und Öl: zwölf Übungen!",
      "Wir gehen heute nach Zürich?",
      "XYZ 42 quiet fox; vexed wizard",
      "schön",
      "a",
  };
  for (const std::string& s : sentences) {
    SCOPED_TRACE(s);
    const std::vector<int> ids = tokenizer_->Encode(s);
    ASSERT_FALSE(ids.empty());
    for (int id : ids) {
      EXPECT_GE(id, 3);  // no <s>, <pad> or </s> inside a text
      EXPECT_LT(id, tokenizer_->vocab_size());
      EXPECT_NE(id, 3) << "<unk> for a character of the training text";
    }
    EXPECT_EQ(tokenizer_->Decode(ids), s);
  }
}

TEST_F(TokenizerTest, RandomSentencesRoundTrip) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  std::istringstream lines(testing::GenerateCorpus(rng, 50));
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    const std::vector<int> ids = tokenizer_->Encode(line);
    EXPECT_EQ(tokenizer_->Decode(ids), line);
    std::string joined;
    for (int id : ids) joined += tokenizer_->Piece(id);
    // Pieces mark word starts with U+2581; without them the pieces spell the text.
    std::string plain;
    for (size_t i = 0; i < joined.size(); ++i) {
      if (joined.compare(i, 3, "\xe2\x96\x81") == 0) {
        if (!plain.empty()) plain += ' ';
        i += 2;
      } else {
        plain += joined[i];
      }
    }
    EXPECT_EQ(plain, line);
    ++checked;
  }
  EXPECT_EQ(checked, 50);
}

TEST_F(TokenizerTest, UnknownCharactersMapToUnk) {
  const std::vector<int> ids = tokenizer_->Encode("\xe4\xb8\xad");  // a CJK character
  ASSERT_FALSE(ids.empty());
  bool unk = false;
  for (int id : ids) unk = unk || id == 3;
  EXPECT_TRUE(unk);
}

// A vocabulary file maps pieces to ids that are not SentencePiece's (Marian's vocab.json, a
// converted fairseq dictionary); pieces it lacks become <unk>; Marian's >>xx<< tags are one
// token when they lead and are cut from the text wherever they are.
TEST_F(TokenizerTest, AVocabularyFileRenumbersPiecesAndReadsLanguageTags) {
  SCOPED_TRACE(testing::SeedMessage(seed_));
  const std::string text = "the house is small";
  const std::vector<int> plain = tokenizer_->Encode(text);
  ASSERT_GE(plain.size(), 2u);
  // Reversed ids, one piece of the text left out, and two language tags.
  nlohmann::json vocab = nlohmann::json::object();
  const int size = tokenizer_->vocab_size();
  for (int id = 0; id < size; ++id) {
    if (id != plain.back()) vocab[tokenizer_->Piece(id)] = size + 1 - id;
  }
  vocab[">>fra<<"] = 0;
  vocab[">>deu<<"] = 1;
  const std::string path = dir_->File("vocab.json");
  testing::WriteTextFile(path, vocab.dump());
  TokenizerVocabulary vocabulary{path, /*unk=*/7, /*language_tags=*/true};
  const auto mapped = Tokenizer::Load(dir_->File("spm.model"), vocabulary);
  ASSERT_TRUE(mapped->has_vocabulary());
  EXPECT_EQ(mapped->vocab_size(), size + 2);

  std::vector<int> expected;
  for (int id : plain) expected.push_back(id == plain.back() ? 7 : size + 1 - id);
  EXPECT_EQ(mapped->Encode(text), expected);
  std::vector<int> tagged = {0};
  tagged.insert(tagged.end(), expected.begin(), expected.end());
  EXPECT_EQ(mapped->Encode(">>fra<< " + text), tagged);
  std::vector<int> unknown_tag = {7};
  unknown_tag.insert(unknown_tag.end(), expected.begin(), expected.end());
  EXPECT_EQ(mapped->Encode(">>xyz<< " + text), unknown_tag);
  // Greedy to the last << of the line, as the regex >>.+<< is: one tag the vocabulary lacks.
  EXPECT_EQ(mapped->Encode(">>fra<<>>deu<< " + text), unknown_tag);
  // A tag later on is cut too.
  EXPECT_EQ(mapped->Encode("the >>deu<<house is small"), mapped->Encode("the house is small"));
  // ">><<" is no tag (.+ needs a character) and neither is an unclosed ">>".
  EXPECT_NE(mapped->Encode(">><< " + text)[0], 0);
  EXPECT_EQ(mapped->Encode(">>fra " + text).size() > expected.size(), true);
  // Ids back to pieces and text; a hostile run of ">>" stays linear and tag-free.
  std::vector<int> known(expected.begin(), expected.end() - 1);
  EXPECT_EQ(mapped->Decode(known), tokenizer_->Decode({plain.begin(), plain.end() - 1}));
  EXPECT_EQ(mapped->Piece(size + 1 - plain.front()), tokenizer_->Piece(plain.front()));
  EXPECT_EQ(mapped->Piece(size + 100), "");
  EXPECT_NO_THROW(mapped->Encode(std::string(20000, '>') + "<<"));
}

TEST(TokenizerLoadTest, ABadVocabularyFileNamesItAndTheProblem) {
  testing::TempDir dir;
  std::mt19937_64 rng(1);
  testing::WriteTextFile(dir.File("corpus.txt"), testing::GenerateCorpus(rng, 400));
  TrainTokenizer({dir.File("corpus.txt"), dir.File("spm"), 200});
  for (const auto& [content, problem] : std::vector<std::pair<std::string, std::string>>{
           {"[1, 2]", "must be a JSON object"},
           {"{\"a\": -1}", "the id of \"a\" must be an integer"},
           {"{\"a\": 1, \"b\": 1}", "id 1 belongs to both"},
           {"{\"a\": 1", "not valid JSON"}}) {
    testing::WriteTextFile(dir.File("vocab.json"), content);
    try {
      Tokenizer::Load(dir.File("spm.model"), {dir.File("vocab.json"), 3, false});
      ADD_FAILURE() << "accepted " << content;
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find(problem), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerLoadTest, NotAModelNamesTheFile) {
  testing::TempDir dir;
  const std::string text_file = dir.File("not_a_model.spm");
  testing::WriteTextFile(text_file, "this is plain text, not a SentencePiece model\n");
  for (const std::string& path : {text_file, dir.File("missing.spm")}) {
    SCOPED_TRACE(path);
    try {
      Tokenizer::Load(path);
      ADD_FAILURE() << "no error";
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerLoadTest, TrainingOnAMissingFileFails) {
  testing::TempDir dir;
  const std::string missing = dir.File("no_such_corpus.txt");
  try {
    TrainTokenizer({missing, dir.File("spm"), 100});
    ADD_FAILURE() << "no error";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace normserve
