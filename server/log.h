// Server logging: one line per event on stderr, with a time stamp and a level, filtered by
// --log_level. Thread-safe (each line is written whole).
//
//   SetLogLevel(*ParseLogLevel("info"));
//   Log(LogLevel::kInfo, absl::StrCat("serving ", model_dir));
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::server {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error"; InvalidArgument names the accepted values.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void Log(LogLevel level, absl::string_view message);

}  // namespace moe::server
