// Timestamped, thread-safe log lines on stderr (one write(2) per line so threads never interleave).
#pragma once
#include <sstream>
#include <string>
#include <string_view>

namespace dbw {

void log_line(std::string_view level, const std::string& message);

template <typename... Args>
void log(std::string_view level, Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  log_line(level, s.str());
}

template <typename... Args> void info(Args&&... a) { log("info", std::forward<Args>(a)...); }
template <typename... Args> void warn(Args&&... a) { log("warn", std::forward<Args>(a)...); }
template <typename... Args> void error(Args&&... a) { log("error", std::forward<Args>(a)...); }

/** One line, no control characters: safe to put in a log line or an `ERR <reason>` reply. */
std::string one_line(std::string_view text);

}  // namespace dbw
