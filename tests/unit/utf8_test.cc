// IsValidUtf8: well-formed text, every kind of ill-formed sequence, and the error offset.
#include "models/text/utf8.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "tests/unit/test_util.h"

namespace normserve {
namespace {

// Offset of the first error, or npos when valid.
size_t ErrorOffset(const std::string& s) {
  size_t offset = 12345;
  if (IsValidUtf8(s, &offset)) return std::string::npos;
  return offset;
}

TEST(Utf8Test, AcceptsWellFormedText) {
  const std::string samples[] = {
      "",
      "plain ASCII, digits 0123456789 and \t\n controls \x01\x7f",
      "Grüße aus Zürich: Äpfel, Öl, Übung, ß",
      "\xc2\x80",          // U+0080, smallest 2-byte
      "\xdf\xbf",          // U+07FF
      "\xe0\xa0\x80",      // U+0800, smallest 3-byte
      "\xed\x9f\xbf",      // U+D7FF, just below the surrogates
      "\xee\x80\x80",      // U+E000, just above them
      "\xef\xbf\xbf",      // U+FFFF
      "\xf0\x90\x80\x80",  // U+10000, smallest 4-byte
      "\xf4\x8f\xbf\xbf",  // U+10FFFF, the largest code point
      "日本語のテキスト",  // CJK
      "emoji \xf0\x9f\x98\x80 and € sign",
      std::string("nul \0 inside", 12),
  };
  for (const std::string& s : samples) {
    EXPECT_TRUE(IsValidUtf8(s)) << s;
    EXPECT_EQ(ErrorOffset(s), std::string::npos) << s;
  }
}

struct BadCase {
  std::string text;
  size_t offset;
  const char* what;
};

TEST(Utf8Test, RejectsIllFormedSequencesAtTheirOffset) {
  const BadCase cases[] = {
      {"\x80", 0, "lone continuation byte"},
      {"ab\xbf", 2, "continuation byte after ASCII"},
      {"\xff", 0, "0xFF never appears"},
      {"ok \xfe", 3, "0xFE never appears"},
      {"\xc0\x80", 0, "overlong NUL (2 bytes)"},
      {"\xc1\xbf", 0, "overlong U+007F"},
      {"x\xe0\x80\x80", 1, "overlong NUL (3 bytes)"},
      {"\xe0\x9f\xbf", 0, "overlong U+07FF (3 bytes)"},
      {"\xf0\x80\x80\x80", 0, "overlong NUL (4 bytes)"},
      {"\xf0\x8f\xbf\xbf", 0, "overlong U+FFFF (4 bytes)"},
      {"\xed\xa0\x80", 0, "high surrogate U+D800"},
      {"abc\xed\xbf\xbf", 3, "low surrogate U+DFFF"},
      {"\xed\xa0\xbd\xed\xb8\x80", 0, "CESU-8 surrogate pair"},
      {"\xf4\x90\x80\x80", 0, "U+110000, above the largest code point"},
      {"\xf7\xbf\xbf\xbf", 0, "U+1FFFFF"},
      {"\xf8\x88\x80\x80\x80", 0, "5-byte form"},
      {"\xfc\x84\x80\x80\x80\x80", 0, "6-byte form"},
      {"Gr\xc3", 2, "2-byte sequence cut at the end"},
      {"Gr\xc3x", 2, "2-byte sequence cut by ASCII"},
      {"\xe2\x82", 0, "3-byte sequence cut at the end"},
      {"\xe2\x82 ", 0, "3-byte sequence cut by a space"},
      {"\xf0\x9f\x98", 0, "4-byte sequence cut at the end"},
      {"\xf0\x9f\x98\xc3\xa4", 0, "4-byte sequence cut by a new lead byte"},
      {"Grüße \xe2\x82\xac \xc3", 12, "valid text then a cut sequence"},
      {"\xc3\xa4\xc3\xa4\x80", 4, "stray continuation after valid pairs"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_FALSE(IsValidUtf8(c.text));
    EXPECT_EQ(ErrorOffset(c.text), c.offset);
  }
}

// Random code points encoded by hand are valid; breaking one byte of a multi-byte sequence
// makes the text invalid at or before that byte.
std::string Encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

TEST(Utf8Test, RandomCodePoints) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> any(0, 0x10FFFF);
  for (int iteration = 0; iteration < 2000; ++iteration) {
    std::string text;
    std::vector<size_t> starts;
    for (int k = 0; k < 8; ++k) {
      uint32_t cp = any(rng);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp -= 0x800;  // skip the surrogates
      starts.push_back(text.size());
      text += Encode(cp);
    }
    ASSERT_TRUE(IsValidUtf8(text)) << "iteration " << iteration;
    // Replace a continuation byte by ASCII: the sequence that owned it is reported.
    for (size_t k = 0; k < starts.size(); ++k) {
      const size_t end = k + 1 < starts.size() ? starts[k + 1] : text.size();
      if (end - starts[k] < 2) continue;
      std::string broken = text;
      broken[end - 1] = 'x';
      EXPECT_EQ(ErrorOffset(broken), starts[k]) << "iteration " << iteration;
      break;
    }
  }
}

TEST(Utf8Test, NullOffsetPointerIsAllowed) {
  EXPECT_FALSE(IsValidUtf8("\xff", nullptr));
  EXPECT_TRUE(IsValidUtf8("abc", nullptr));
}

}  // namespace
}  // namespace normserve
