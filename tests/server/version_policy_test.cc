// The one version-policy function (server/version_policy.h).
#include "server/version_policy.h"

#include <gtest/gtest.h>

namespace normserve {
namespace {

VersionPolicy Latest(int64_t n) {
  VersionPolicy policy;
  policy.latest = n;
  return policy;
}

VersionPolicy Specific(std::vector<int64_t> versions) {
  VersionPolicy policy;
  policy.specific = std::move(versions);
  return policy;
}

using Versions = std::vector<int64_t>;

TEST(VersionPolicyTest, LatestNTakesTheNewestCandidates) {
  EXPECT_EQ(SelectVersions(Latest(1), {1, 2, 3}), Versions{3});
  EXPECT_EQ(SelectVersions(Latest(2), {1, 2, 3}), (Versions{2, 3}));
  EXPECT_EQ(SelectVersions(Latest(5), {1, 2, 3}), (Versions{1, 2, 3}));
  EXPECT_EQ(SelectVersions(Latest(1), {}), Versions{});
}

TEST(VersionPolicyTest, GapsInTheNumbersDoNotMatter) {
  EXPECT_EQ(SelectVersions(Latest(2), {1, 3, 7}), (Versions{3, 7}));
  EXPECT_EQ(SelectVersions(Specific({2, 4}), {1, 3, 4}), Versions{4});
}

TEST(VersionPolicyTest, SpecificTakesExactlyThoseListedThatArePresent) {
  EXPECT_EQ(SelectVersions(Specific({1, 3}), {1, 2, 3}), (Versions{1, 3}));
  EXPECT_EQ(SelectVersions(Specific({3, 1}), {1, 2, 3}), (Versions{1, 3}));
  EXPECT_EQ(SelectVersions(Specific({9}), {1, 2, 3}), Versions{});
}

// The lifecycle leaves a broken version out of the candidates: the next one down serves, or
// under a specific list, nothing takes its place.
TEST(VersionPolicyTest, ABrokenNewestVersionIsReplacedByTheOneBelowIt) {
  EXPECT_EQ(SelectVersions(Latest(1), {1, 2}), Versions{2});  // 3 is broken
  EXPECT_EQ(SelectVersions(Latest(2), {1, 2}), (Versions{1, 2}));
  EXPECT_EQ(SelectVersions(Specific({3}), {1, 2}), Versions{});
}

}  // namespace
}  // namespace normserve
