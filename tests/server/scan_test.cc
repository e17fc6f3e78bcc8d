// The pure scan of the repository (server/repository_scan.h) on a temporary directory.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "server/repository_scan.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("normserve-scan-test-" + std::to_string(std::random_device{}()));
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const fs::path& relative, const std::string& content) {
    fs::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << content;
  }

  fs::path root_;
};

TEST_F(ScanTest, FindsModelsAndTheirNumberedVersionDirectoriesOnly) {
  Write("deen/1/weights", "a");
  Write("deen/12/weights", "b");
  Write("deen/0/weights", "zero is no version");
  Write("deen/latest/weights", "not a number");
  Write("deen/3", "a file, not a directory");
  Write("enlm/2/weights", "c");
  Write(".hidden/1/weights", "d");
  Write("README", "a file at the root");
  const RepositoryScan scan = ScanRepository(root_.string(), BatcherConfig{});
  ASSERT_EQ(scan.size(), 2u);
  const ModelScan& deen = scan.at("deen");
  EXPECT_TRUE(deen.present);
  ASSERT_EQ(deen.versions.size(), 2u);
  EXPECT_EQ(deen.versions.begin()->first, 1);
  EXPECT_EQ(deen.versions.rbegin()->first, 12);
  EXPECT_EQ(scan.at("enlm").versions.begin()->first, 2);
}

TEST_F(ScanTest, FingerprintsChangeWithTheFilesAndOnlyThen) {
  Write("m/1/weights", "one");
  const ModelScan first = ScanModel(root_.string(), "m", BatcherConfig{});
  const ModelScan again = ScanModel(root_.string(), "m", BatcherConfig{});
  EXPECT_EQ(first.versions, again.versions) << "a scan changed what it read";
  Write("m/1/weights", "one more");  // a copy still growing
  EXPECT_NE(ScanModel(root_.string(), "m", BatcherConfig{}).versions.at(1), first.versions.at(1));
  Write("m/1/tokenizer.spm", "");
  EXPECT_NE(ScanModel(root_.string(), "m", BatcherConfig{}).versions.at(1).find("tokenizer.spm"),
            std::string::npos);
}

TEST_F(ScanTest, ReadsModelJsonAndReportsABrokenOne) {
  Write("m/1/weights", "x");
  Write("m/model.json", R"({"version_policy": {"latest": 2}, "group": "g"})");
  Write("bad/1/weights", "x");
  Write("bad/model.json", R"({"max_batch_size": "many"})");
  BatcherConfig defaults;
  defaults.max_batch_size = 7;
  const RepositoryScan scan = ScanRepository(root_.string(), defaults);
  EXPECT_EQ(scan.at("m").serving.versions.latest, 2);
  EXPECT_EQ(scan.at("m").serving.group, "g");
  EXPECT_TRUE(scan.at("m").config_error.empty());
  const ModelScan& bad = scan.at("bad");
  EXPECT_NE(bad.config_error.find("max_batch_size"), std::string::npos) << bad.config_error;
  EXPECT_EQ(bad.serving.batching.max_batch_size, 7);  // the defaults
}

// model.json's convert_norm (issue #17): rmsnorm and crmsnorm are read, and the target is part
// of every version's fingerprint so that changing it reloads versions whose files did not
// change; unknown targets are configuration errors that say why.
TEST_F(ScanTest, ConvertNormIsReadAndChangesTheFingerprints) {
  Write("m/1/weights", "x");
  const ModelScan plain = ScanModel(root_.string(), "m", BatcherConfig{});
  EXPECT_FALSE(plain.serving.convert_norm.has_value());
  Write("m/model.json", R"({"convert_norm": "rmsnorm"})");
  const ModelScan converted = ScanModel(root_.string(), "m", BatcherConfig{});
  ASSERT_TRUE(converted.config_error.empty()) << converted.config_error;
  EXPECT_EQ(converted.serving.convert_norm, NormKind::kRMSNorm);
  EXPECT_NE(converted.versions.at(1), plain.versions.at(1));

  Write("m/model.json", R"({"convert_norm": "crmsnorm"})");
  const ModelScan crms = ScanModel(root_.string(), "m", BatcherConfig{});
  ASSERT_TRUE(crms.config_error.empty()) << crms.config_error;
  EXPECT_EQ(crms.serving.convert_norm, NormKind::kCRMSNorm);
  EXPECT_NE(crms.versions.at(1), converted.versions.at(1));
  EXPECT_NE(crms.versions.at(1), plain.versions.at(1));
  for (const char* bad : {R"({"convert_norm": "powernorm"})", R"({"convert_norm": true})"}) {
    Write("m/model.json", bad);
    const std::string error = ScanModel(root_.string(), "m", BatcherConfig{}).config_error;
    EXPECT_NE(error.find("'convert_norm'"), std::string::npos) << error;
  }
}

// model.json's model instances, their threads and shadow membership (issues #11, #17).
TEST_F(ScanTest, ReadsInstancesThreadsAndShadowAndRefusesBadOnes) {
  Write("m/1/weights", "x");
  Write("m/model.json",
        R"({"instances": 2, "threads": 3, "group": "g", "shadow": {"fraction": 0.1}})");
  const ModelScan scan = ScanModel(root_.string(), "m", BatcherConfig{});
  ASSERT_TRUE(scan.config_error.empty()) << scan.config_error;
  EXPECT_EQ(scan.serving.batching.instances, 2);
  EXPECT_EQ(scan.serving.batching.threads, 3);
  EXPECT_EQ(scan.serving.shadow_fraction, 0.1);
  const std::pair<const char*, const char*> bad[] = {
      {R"({"instances": 0})", "'instances' must be an integer in 1..64"},
      {R"({"threads": 2000})", "'threads' must be an integer in 1..1024"},
      {R"({"shadow": {"fraction": 0.5}})", "'shadow' needs 'group'"},
      {R"({"group": "g", "shadow": {"fraction": 0}})", "0 < F <= 1"},
      {R"({"group": "g", "shadow": {"fraction": 1.5}})", "0 < F <= 1"},
      {R"({"group": "g", "shadow": true})", "0 < F <= 1"},
  };
  for (const auto& [json, why] : bad) {
    Write("m/model.json", json);
    const std::string error = ScanModel(root_.string(), "m", BatcherConfig{}).config_error;
    EXPECT_NE(error.find(why), std::string::npos) << json << ": " << error;
  }
}

TEST_F(ScanTest, AMissingModelOrRootOrABadNameIsAbsent) {
  EXPECT_FALSE(ScanModel(root_.string(), "nope", BatcherConfig{}).present);
  EXPECT_FALSE(ScanModel(root_.string(), "..", BatcherConfig{}).present);
  EXPECT_TRUE(ScanRepository((root_ / "missing").string(), BatcherConfig{}).empty());
  Write("m/1/weights", "x");
  EXPECT_FALSE(ScanModel(root_.string(), "m/1", BatcherConfig{}).present);
}

}  // namespace
}  // namespace normserve
