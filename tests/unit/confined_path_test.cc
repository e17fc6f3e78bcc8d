// A model version's files stay inside its directory: symbolic links and "../" that leave it
// are refused with the reason.
#include "models/io/confined_path.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "models/errors.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

std::string LoadErrorOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  return "";
}

class ConfinedPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    version_ = dir_.File("repo/m/1");
    fs::create_directories(version_);
    std::ofstream(version_ + "/config.json") << "{}";
    fs::create_directories(dir_.File("outside"));
    std::ofstream(dir_.File("outside/secret")) << "secret";
  }
  testing::TempDir dir_;
  std::string version_;
};

TEST_F(ConfinedPathTest, AFileInsideAndALinkThatStaysInsideAreAllowed) {
  EXPECT_EQ(ConfinedFile(version_, "config.json"), fs::canonical(version_ + "/config.json"));
  fs::create_symlink("config.json", version_ + "/alias.json");
  EXPECT_EQ(ConfinedFile(version_, "alias.json"), fs::canonical(version_ + "/config.json"));
  // A missing file comes back as named, for the caller's own "cannot open" error.
  EXPECT_EQ(ConfinedFile(version_, "missing.spm"), version_ + "/missing.spm");
}

TEST_F(ConfinedPathTest, ALinkThatLeavesTheVersionDirectoryIsRefused) {
  fs::create_symlink(dir_.File("outside/secret"), version_ + "/source.spm");
  const std::string error = LoadErrorOf([&] { ConfinedFile(version_, "source.spm"); });
  EXPECT_NE(error.find("outside its version directory"), std::string::npos) << error;
  // A link to a sibling version is outside too.
  fs::create_directories(dir_.File("repo/m/2"));
  std::ofstream(dir_.File("repo/m/2/model.safetensors")) << "x";
  fs::create_symlink("../2/model.safetensors", version_ + "/model.safetensors");
  EXPECT_NE(LoadErrorOf([&] { ConfinedFile(version_, "model.safetensors"); }).find("outside"),
            std::string::npos);
}

TEST_F(ConfinedPathTest, NamesThatArePathsAreRefused) {
  for (const std::string bad : {"../outside/secret", "sub/file", "..", ".", ""}) {
    EXPECT_NE(LoadErrorOf([&] { ConfinedFile(version_, bad); }).find("not a plain file name"),
              std::string::npos)
        << bad;
  }
}

TEST_F(ConfinedPathTest, LinkedModelOrVersionDirectoriesAreRefused) {
  EXPECT_NO_THROW(RequireRealModelDirectories(version_));
  fs::create_directories(dir_.File("outside/model/1"));
  fs::create_directory_symlink(dir_.File("outside/model"), dir_.File("repo/linked"));
  std::string error = LoadErrorOf([&] { RequireRealModelDirectories(dir_.File("repo/linked/1")); });
  EXPECT_NE(error.find("the model directory is a symbolic link"), std::string::npos) << error;
  fs::create_directory_symlink(dir_.File("outside/model/1"), dir_.File("repo/m/7"));
  error = LoadErrorOf([&] { RequireRealModelDirectories(dir_.File("repo/m/7")); });
  EXPECT_NE(error.find("the version directory is a symbolic link"), std::string::npos) << error;
}

}  // namespace
}  // namespace normserve
