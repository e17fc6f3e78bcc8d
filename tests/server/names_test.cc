// Model and group names, and user input quoted back in error messages.
#include "server/names.h"

#include <gtest/gtest.h>

#include <string>

namespace normserve {
namespace {

TEST(NamesTest, AModelNameIsOneDirectoryNameOfAtMost128Characters) {
  EXPECT_TRUE(IsValidModelName(std::string(128, 'a')));
  EXPECT_FALSE(IsValidModelName(std::string(129, 'a')));
  for (const std::string bad : {"a\nb", "deen/1", "..", "\xc3\xa9"}) {
    EXPECT_FALSE(IsValidModelName(bad)) << bad;
  }
  EXPECT_FALSE(IsValidModelName(std::string("a\0b", 3)));
}

TEST(NamesTest, ShortInputIsQuotedWhole) {
  EXPECT_EQ(QuoteInput("deen"), "'deen'");
  EXPECT_EQ(QuoteInput(""), "''");
  EXPECT_EQ(QuoteInput("caf\xc3\xa9"), "'caf\xc3\xa9'");
}

TEST(NamesTest, LongInputIsCutAt64BytesWithItsLength) {
  const std::string quoted = QuoteInput(std::string(10240, 'x'));
  EXPECT_EQ(quoted, "'" + std::string(64, 'x') + "'... (10240 bytes)");
}

TEST(NamesTest, TheCutNeverSplitsACharacter) {
  // 63 ASCII bytes then a 2-byte character that would straddle the 64-byte cut.
  const std::string input = std::string(63, 'a') + "\xc3\xa9" + std::string(100, 'b');
  EXPECT_EQ(QuoteInput(input), "'" + std::string(63, 'a') + "'... (165 bytes)");
}

TEST(NamesTest, ControlCharactersQuotesAndInvalidUtf8AreEscaped) {
  EXPECT_EQ(QuoteInput("a\nb'c"), "'a\\x0ab\\x27c'");
  EXPECT_EQ(QuoteInput("\xff\xfe"), "'\\xff\\xfe'");
}

}  // namespace
}  // namespace normserve
