// The model lifecycle on a stand-in model (no LibTorch, so it also runs under
// ThreadSanitizer): versions and policies, polling with settling, failed versions that never
// replace a serving one, explicit load and unload, name checks, variant groups, readiness
// that tells the truth, loads of different models side by side, an unload that a load in
// progress cannot undo, and swaps and unloads while other threads resolve.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <set>
#include <thread>

#include "models/errors.h"
#include "server/model_repository.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

// A "model" whose weights are one line of text; "corrupt" fails to load.
class FakeModel {
 public:
  FakeModel(std::string name, int64_t version, std::string dir, std::string content)
      : name_(std::move(name)),
        version_(version),
        dir_(std::move(dir)),
        content_(std::move(content)) {}
  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::string& dir() const { return dir_; }
  std::string norm_label() const { return "rmsnorm"; }
  const std::string& content() const { return content_; }

 private:
  std::string name_;
  int64_t version_;
  std::string dir_;
  std::string content_;
};

using Repository = ModelRepositoryT<FakeModel>;

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("normserve-repo-test-" + std::to_string(std::random_device{}()));
    fs::create_directories(root_);
  }
  void TearDown() override {
    repository_.reset();
    fs::remove_all(root_);
  }

  void WriteVersion(const std::string& model, int64_t version, const std::string& content) {
    const fs::path dir = root_ / model / std::to_string(version);
    fs::create_directories(dir);
    std::ofstream(dir / "weights") << content;
  }
  void WriteModelJson(const std::string& model, const std::string& json) {
    fs::create_directories(root_ / model);
    std::ofstream(root_ / model / "model.json") << json;
  }

  Repository& Make() {
    repository_ = std::make_unique<Repository>(
        root_.string(), BatcherConfig{},
        [this](const std::string& dir, const std::string& name, int64_t version,
               const ModelServingConfig&) {
          ++loads_;
          if (name == gated_model_) gate_.PassWhenOpen();
          std::ifstream in(dir + "/weights");
          if (!in) throw ModelLoadError(dir + "/weights: missing");
          std::string content;
          std::getline(in, content);
          if (content == "corrupt") throw ModelLoadError(dir + "/weights: corrupt");
          return std::make_shared<const FakeModel>(name, version, dir, content);
        },
        nullptr,
        [](const std::string& name, const BatcherConfig& config) {
          // The repository tests never enqueue: a runner that runs nothing.
          struct Idle : BatchRunner {
            void Run(std::vector<std::shared_ptr<QueuedRequest>>&) override {}
            bool Step() override { return false; }
            RunnerLoad load() const override { return {}; }
          };
          std::vector<std::unique_ptr<BatchRunner>> runners;
          runners.push_back(std::make_unique<Idle>());
          return std::make_shared<Batcher>(name, config, std::move(runners));
        },
        [this](const std::string& name, bool ready) {
          std::lock_guard<std::mutex> lock(mutex_);
          readiness_[name] = ready;
        });
    return *repository_;
  }

  std::string Serving(const std::string& name, int64_t version = 0) {
    Repository::LookupError error;
    std::string message;
    auto target = repository_->Resolve(name, version, &error, &message);
    return target.model ? target.model->content() : "error: " + message;
  }

  Repository::LookupError LookupOf(const std::string& name, std::string* message = nullptr) {
    Repository::LookupError error;
    std::string text;
    repository_->Resolve(name, 0, &error, &text);
    if (message) *message = text;
    return error;
  }

  bool Readiness(const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = readiness_.find(name);
    return it != readiness_.end() && it->second;
  }

  // Holds the loads of one model until opened; says when a load is waiting at it.
  class Gate {
   public:
    void PassWhenOpen() {
      std::unique_lock<std::mutex> lock(mutex_);
      ++waiting_;
      changed_.notify_all();
      changed_.wait(lock, [this] { return open_; });
    }
    // Bounded so that a broken lifecycle fails the test instead of hanging it.
    bool WaitUntilALoadWaits() {
      std::unique_lock<std::mutex> lock(mutex_);
      return changed_.wait_for(lock, std::chrono::seconds(60), [this] { return waiting_ > 0; });
    }
    void Open() {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
      changed_.notify_all();
    }

   private:
    std::mutex mutex_;
    std::condition_variable changed_;
    int waiting_ = 0;
    bool open_ = false;
  };

  fs::path root_;
  std::string gated_model_;  // set before Make()
  Gate gate_;
  std::unique_ptr<Repository> repository_;
  std::atomic<int> loads_{0};
  std::mutex mutex_;
  std::map<std::string, bool> readiness_;
};

TEST_F(RepositoryTest, ServesTheNewestVersionAndReportsReadiness) {
  WriteVersion("m", 1, "one");
  WriteVersion("m", 2, "two");
  Make().LoadAll();
  EXPECT_EQ(Serving("m"), "two");
  EXPECT_NE(Serving("m", 1).find("version 1 of model 'm' is not loaded"), std::string::npos);
  const auto status = repository_->Get("m");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, ModelState::kReady);
  EXPECT_EQ(status->ready_versions, std::vector<int64_t>{2});
  EXPECT_TRUE(Readiness("m"));
}

TEST_F(RepositoryTest, VersionPoliciesLatestNAndSpecific) {
  for (int v = 1; v <= 3; ++v) WriteVersion("latest", v, "v" + std::to_string(v));
  for (int v = 1; v <= 3; ++v) WriteVersion("pinned", v, "v" + std::to_string(v));
  WriteModelJson("latest", R"({"version_policy": {"latest": 2}})");
  WriteModelJson("pinned", R"({"version_policy": {"specific": [1, 3]}})");
  Make().LoadAll();
  EXPECT_EQ(repository_->Get("latest")->ready_versions, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(repository_->Get("pinned")->ready_versions, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(Serving("latest", 2), "v2");
  EXPECT_EQ(Serving("pinned", 1), "v1");
}

TEST_F(RepositoryTest, PollingLoadsANewVersionOnceItsFilesSettle) {
  WriteVersion("m", 1, "one");
  Make().LoadAll();
  WriteVersion("m", 2, "two");
  repository_->Poll();  // first sight of version 2: it may still be copying
  EXPECT_EQ(Serving("m"), "one");
  repository_->Poll();  // unchanged since the last scan: load and swap
  EXPECT_EQ(Serving("m"), "two");
  EXPECT_EQ(repository_->Get("m")->ready_versions, std::vector<int64_t>{2});
}

TEST_F(RepositoryTest, AFailedVersionNeverReplacesTheServingOneAndIsNotRetriedUnchanged) {
  WriteVersion("m", 1, "one");
  Make().LoadAll();
  WriteVersion("m", 2, "corrupt");
  repository_->Poll();
  repository_->Poll();
  EXPECT_EQ(Serving("m"), "one");
  const auto status = repository_->Get("m");
  EXPECT_EQ(status->state, ModelState::kReady);
  EXPECT_NE(status->error.find("corrupt"), std::string::npos) << status->error;
  const int loads = loads_;
  repository_->Poll();
  repository_->Poll();
  EXPECT_EQ(loads_, loads) << "the same broken files were loaded again";
  // Fixed files load.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a distinct modification time
  WriteVersion("m", 2, "two");
  repository_->Poll();
  repository_->Poll();
  EXPECT_EQ(Serving("m"), "two");
  EXPECT_TRUE(repository_->Get("m")->error.empty());
}

TEST_F(RepositoryTest, AHalfCopiedVersionDoesNotServe) {
  WriteVersion("m", 1, "one");
  Make().LoadAll();
  fs::create_directories(root_ / "m" / "2");  // no weights yet
  repository_->Poll();
  repository_->Poll();
  EXPECT_EQ(Serving("m"), "one");
}

TEST_F(RepositoryTest, RemovedModelsAndVersionsAreUnloaded) {
  WriteVersion("m", 1, "one");
  WriteVersion("m", 2, "two");
  WriteVersion("gone", 1, "x");
  Make().LoadAll();
  fs::remove_all(root_ / "m" / "2");
  fs::remove_all(root_ / "gone");
  repository_->Poll();
  EXPECT_EQ(Serving("m"), "one");
  EXPECT_FALSE(repository_->Get("gone"));
  EXPECT_FALSE(Readiness("gone"));
}

TEST_F(RepositoryTest, ExplicitUnloadAndLoad) {
  WriteVersion("m", 1, "one");
  Make().LoadAll();
  std::string error;
  ASSERT_TRUE(repository_->Unload("m", &error));
  EXPECT_EQ(repository_->Get("m")->state, ModelState::kUnloaded);
  EXPECT_NE(Serving("m").find("unloaded"), std::string::npos);
  EXPECT_FALSE(Readiness("m"));
  EXPECT_EQ(LookupOf("m"), Repository::LookupError::kUnloaded);
  EXPECT_EQ(repository_->Load("m"), "");
  EXPECT_TRUE(Readiness("m"));
  EXPECT_EQ(Serving("m"), "one");
  EXPECT_FALSE(repository_->Unload("nope", &error));
  EXPECT_NE(repository_->Load("nope").find("not in the repository"), std::string::npos);
}

TEST_F(RepositoryTest, NamesMustBeSingleDirectoriesInsideTheRepository) {
  for (const std::string bad : {"", ".", "..", "../etc", "/abs", "a/b", ".hidden", "a b"}) {
    EXPECT_FALSE(IsValidModelName(bad)) << bad;
  }
  for (const std::string good : {"deen", "deen_rms-2", "lm.v1"}) {
    EXPECT_TRUE(IsValidModelName(good)) << good;
  }
}

TEST_F(RepositoryTest, AVariantGroupSpreadsRequestsByWeight) {
  WriteVersion("deen_ln", 1, "ln");
  WriteVersion("deen_rms", 1, "rms");
  WriteModelJson("deen_ln", R"({"group": "deen", "weight": 1})");
  WriteModelJson("deen_rms", R"({"group": "deen", "weight": 3})");
  Make().LoadAll();
  std::map<std::string, int> served;
  for (int i = 0; i < 4000; ++i) ++served[Serving("deen")];
  ASSERT_EQ(served.size(), 2u) << "errors: " << served.begin()->first;
  // Expected 1000 and 3000; 6 standard deviations is about 164.
  EXPECT_NEAR(served["ln"], 1000, 200);
  EXPECT_NEAR(served["rms"], 3000, 200);
  EXPECT_TRUE(Readiness("deen"));
  EXPECT_NE(repository_->ReadyNames().find("deen (group)"), std::string::npos);
}

// A shadow member (model.json "shadow") takes none of its group's requests; it is drawn as
// their shadow at its fraction, and a group of shadows alone does not serve.
TEST_F(RepositoryTest, AShadowMemberGetsCopiesAtItsFractionAndNoTraffic) {
  WriteVersion("deen_ln", 1, "ln");
  WriteVersion("deen_rms", 1, "rms");
  WriteVersion("lone_shadow", 1, "s");
  WriteModelJson("deen_ln", R"({"group": "deen"})");
  WriteModelJson("deen_rms", R"({"group": "deen", "shadow": {"fraction": 0.25}})");
  WriteModelJson("lone_shadow", R"({"group": "only_shadows", "shadow": {"fraction": 1}})");
  Make().LoadAll();
  int shadowed = 0;
  for (int i = 0; i < 4000; ++i) {
    Repository::LookupError error;
    std::string message;
    const auto target = repository_->Resolve("deen", 0, &error, &message);
    ASSERT_TRUE(target.model) << message;
    EXPECT_EQ(target.model->content(), "ln");
    ASSERT_LE(target.shadows.size(), 1u);
    if (!target.shadows.empty()) {
      EXPECT_EQ(target.shadows[0].model->content(), "rms");
      ++shadowed;
    }
  }
  // Expected 1000; 6 standard deviations is about 164.
  EXPECT_NEAR(shadowed, 1000, 200);
  // A model named directly has no shadows, the shadow included.
  Repository::LookupError error;
  std::string message;
  EXPECT_TRUE(repository_->Resolve("deen_ln", 0, &error, &message).shadows.empty());
  EXPECT_EQ(Serving("deen_rms"), "rms");
  EXPECT_EQ(LookupOf("only_shadows"), Repository::LookupError::kUnknown);
  EXPECT_FALSE(Readiness("only_shadows"));
}

TEST_F(RepositoryTest, ABrokenModelJsonIsReportedAndOthersServe) {
  WriteVersion("bad", 1, "x");
  WriteModelJson("bad", R"({"max_batch_size": "many"})");
  WriteVersion("good", 1, "g");
  Make().LoadAll();
  EXPECT_EQ(Serving("good"), "g");
  const auto bad = repository_->Get("bad");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->state, ModelState::kFailed);
  EXPECT_NE(bad->error.find("max_batch_size"), std::string::npos) << bad->error;
}

TEST_F(RepositoryTest, SwapsWhileOtherThreadsResolveNeverFail) {
  WriteVersion("m", 1, "v1");
  Make().LoadAll();
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, resolved{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      while (!stop) {
        const std::string s = Serving("m");
        if (s.rfind("v", 0) != 0) ++failures;
        ++resolved;
      }
    });
  }
  // Bounded waits for the clients to be resolving, so that the swaps meet them.
  const auto wait_for_resolves = [&](int at_least) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (resolved < at_least && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  };
  wait_for_resolves(4);
  for (int v = 2; v <= 6; ++v) {
    WriteVersion("m", v, "v" + std::to_string(v));
    repository_->Poll();
    repository_->Poll();
    EXPECT_EQ(Serving("m"), "v" + std::to_string(v));
    wait_for_resolves(resolved + 4);
  }
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(resolved, 0);
}

TEST_F(RepositoryTest, ABrokenNewestVersionFallsBackToTheOneBelowAtStart) {
  WriteVersion("m", 1, "one");
  WriteVersion("m", 2, "corrupt");
  Make().LoadAll();
  EXPECT_EQ(Serving("m"), "one");
  const auto status = repository_->Get("m");
  EXPECT_EQ(status->state, ModelState::kReady);
  EXPECT_EQ(status->ready_versions, std::vector<int64_t>{1});
  EXPECT_NE(status->error.find("corrupt"), std::string::npos) << status->error;
}

TEST_F(RepositoryTest, AModelWhoseOnlyVersionIsBrokenIsFailedAndNotReady) {
  WriteVersion("broken", 1, "corrupt");
  WriteVersion("good", 1, "g");
  WriteModelJson("broken", R"({"group": "pair"})");
  WriteModelJson("good", R"({"group": "pair"})");
  Make().LoadAll();
  EXPECT_EQ(repository_->Get("broken")->state, ModelState::kFailed);
  std::string message;
  EXPECT_EQ(LookupOf("broken", &message), Repository::LookupError::kFailed);
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ASSERT_TRUE(readiness_.count("broken")) << "the broken model's readiness was never told";
    EXPECT_FALSE(readiness_["broken"]);
    EXPECT_TRUE(readiness_["good"]);
    EXPECT_TRUE(readiness_["pair"]);
  }
  EXPECT_EQ(repository_->ready_count(), 1u);
  // The group serves while one member does, and stops when none does.
  std::string error;
  ASSERT_TRUE(repository_->Unload("good", &error));
  EXPECT_FALSE(Readiness("good"));
  EXPECT_FALSE(Readiness("pair"));
  EXPECT_NE(LookupOf("pair"), Repository::LookupError::kNone);
}

TEST_F(RepositoryTest, ALoadingModelIsRetryableAndASlowOneDoesNotDelayAnother) {
  WriteVersion("slow", 1, "s");
  WriteVersion("fast", 1, "f");
  gated_model_ = "slow";
  Make();
  std::promise<std::string> slow_done;
  repository_->Load("slow", [&](const std::string& error) { slow_done.set_value(error); });
  ASSERT_TRUE(gate_.WaitUntilALoadWaits());
  EXPECT_EQ(repository_->Get("slow")->state, ModelState::kLoading);
  EXPECT_EQ(LookupOf("slow"), Repository::LookupError::kLoading);
  // This returns only if "fast" loads while "slow" is still held at the gate.
  EXPECT_EQ(repository_->Load("fast"), "");
  EXPECT_EQ(Serving("fast"), "f");
  EXPECT_EQ(repository_->Get("slow")->state, ModelState::kLoading);
  gate_.Open();
  EXPECT_EQ(slow_done.get_future().get(), "");
  EXPECT_EQ(Serving("slow"), "s");
  EXPECT_TRUE(Readiness("slow"));
}

TEST_F(RepositoryTest, AnUnloadDuringALoadWins) {
  WriteVersion("m", 1, "one");
  gated_model_ = "m";
  Make();
  std::promise<std::string> load_done;
  repository_->Load("m", [&](const std::string& error) { load_done.set_value(error); });
  ASSERT_TRUE(gate_.WaitUntilALoadWaits());
  std::string error;
  ASSERT_TRUE(repository_->Unload("m", &error)) << error;
  gate_.Open();
  const std::string result = load_done.get_future().get();
  EXPECT_NE(result.find("unloaded"), std::string::npos) << result;
  EXPECT_EQ(repository_->Get("m")->state, ModelState::kUnloaded);
  EXPECT_EQ(LookupOf("m"), Repository::LookupError::kUnloaded);
  EXPECT_FALSE(Readiness("m"));
  EXPECT_TRUE(repository_->batchers().empty());
  repository_->Poll();  // a poll does not bring it back either
  EXPECT_EQ(repository_->Get("m")->state, ModelState::kUnloaded);
  // A later load does.
  EXPECT_EQ(repository_->Load("m"), "");
  EXPECT_EQ(Serving("m"), "one");
  EXPECT_TRUE(Readiness("m"));
}

TEST_F(RepositoryTest, LoadUnloadPollAndResolveFromSeveralThreadsStayConsistent) {
  WriteVersion("m", 1, "v1");
  WriteVersion("other", 1, "o");
  Make().LoadAll();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(t);
      for (int i = 0; i < 150; ++i) {
        std::string error;
        switch (random() % 4) {
          case 0:
            if (!repository_->Load("m").empty()) {
              // Only a concurrent unload may stop a load of good files.
              if (repository_->Get("m")->state == ModelState::kFailed) ++wrong;
            }
            break;
          case 1:
            if (!repository_->Unload("m", &error)) ++wrong;
            break;
          case 2:
            repository_->Poll();
            break;
          default: {
            Repository::LookupError lookup;
            std::string message;
            const auto target = repository_->Resolve("m", 0, &lookup, &message);
            if (target.model ? target.model->content() != "v1"
                             : lookup == Repository::LookupError::kFailed) {
              ++wrong;
            }
          }
        }
        if (Serving("other") != "o") ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, 0);
  std::string error;
  ASSERT_TRUE(repository_->Unload("m", &error));
  EXPECT_EQ(repository_->Get("m")->state, ModelState::kUnloaded);
  EXPECT_FALSE(Readiness("m"));
  EXPECT_EQ(repository_->Load("m"), "");
  EXPECT_EQ(Serving("m"), "v1");
  EXPECT_TRUE(Readiness("m"));
}

}  // namespace
}  // namespace normserve
