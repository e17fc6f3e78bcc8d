#include "common/command_line.h"

#include <CLI/App.hpp>
#include <CLI/Formatter.hpp>
#include <algorithm>
#include <cctype>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace normserve::command_line {
namespace {

// Left column: the flag and its value's name; right column: the description, then one line
// with the accepted values, the default and the environment variable.
class HelpFormatter : public CLI::Formatter {
 public:
  HelpFormatter() { column_width(32); }

  std::string make_option_opts(const CLI::Option* option) const override {
    if (option->get_type_size() == 0 || option->get_positional()) return "";  // a switch
    return " " + ValueName(option) + (option->get_required() ? " (required)" : "");
  }

  std::string make_option_desc(const CLI::Option* option) const override {
    std::string details;
    const auto add = [&](const std::string& detail) {
      if (!detail.empty()) details += (details.empty() ? "" : "; ") + detail;
    };
    if (option->get_type_size() != 0) add(Accepted(option));
    const std::string default_value = option->get_default_str();
    if (option->get_type_size() != 0 && !option->get_positional() && !default_value.empty() &&
        default_value != "[]") {
      add("default " + default_value);
    }
    if (!option->get_envname().empty()) add("env " + option->get_envname());
    std::string text = option->get_description();
    if (!details.empty()) text += (text.empty() ? "" : "\n") + ("[" + details + "]");
    return text;
  }

 private:
  // CLI11's type name is "NAME" or "NAME:CHECK:CHECK..." with the validators' descriptions.
  static std::string ValueName(const CLI::Option* option) {
    const std::string name = option->get_type_name();
    return name.substr(0, name.find(':'));
  }
  static std::string Accepted(const CLI::Option* option) {
    const std::string name = option->get_type_name();
    const size_t colon = name.find(':');
    return colon == std::string::npos ? "" : name.substr(colon + 1);
  }
};

}  // namespace

const char* Version() { return NORMSERVE_VERSION; }

CLI::Validator NumberIn(double min, double max) {
  std::ostringstream text;
  text << std::setprecision(15) << min << ".." << max;
  const std::string range = text.str();
  return CLI::Validator(
      [min, max, range](std::string& value) -> std::string {
        double number = 0;
        if (CLI::detail::lexical_cast(value, number) && number >= min && number <= max) return "";
        return "needs a number in " + range + ", got '" + value + "'";
      },
      range);
}

std::string EnvironmentName(const std::string& program, const std::string& flag) {
  std::string name = program + "_" + flag;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) {
    return c == '-' ? '_' : static_cast<char>(std::toupper(c));
  });
  return name;
}

void Configure(CLI::App* app) {
  app->set_version_flag("--version", app->get_name() + " " + Version(),
                        "print the version and exit");
  app->set_help_flag("-h,--help", "print this help and exit");
  app->formatter(std::make_shared<HelpFormatter>());
  // Show what each option is when not given (captured from the bound variable), and let a
  // repeated flag's last value win, as scripts that append flags to common ones expect.
  app->option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
}

void AddEnvironmentFallbacks(const std::string& program, CLI::App* app) {
  for (CLI::Option* option : app->get_options()) {
    if (option == app->get_help_ptr() || option == app->get_version_ptr()) continue;
    if (option->get_lnames().empty()) continue;  // positionals
    option->envname(EnvironmentName(program, option->get_lnames().front()));
  }
}

std::optional<int> Parse(CLI::App* app, int argc, const char* const* argv,
                         const std::function<void()>& check) {
  const std::string program = app->get_name();
  try {
    app->parse(argc, argv);
    if (check) check();
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    std::cout << app->help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app->help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << app->version() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    // CLI11 checks required flags before it complains about arguments it did not know: a
    // mistyped flag is the more useful news.
    const std::vector<std::string> unknown = app->remaining(true);
    std::cerr << program << ": " << (unknown.empty() ? e.what() : CLI::ExtrasError(unknown).what())
              << "\n";
  } catch (const std::invalid_argument& e) {
    std::cerr << program << ": " << e.what() << "\n";
  }
  std::cerr << "(" << program << " --help lists the flags)\n";
  return kUsageError;
}

}  // namespace normserve::command_line
