// db-writer: every newline-terminated line received over TCP becomes one row of `testcounter`,
// acknowledged with `OK <id>` only after the row is committed. See docs/db-writer.md.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>
#include <unordered_map>

#include "db_pool.hpp"
#include "log.hpp"
#include "session.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace dbw {
namespace {

const char* const kUsage =
    "usage: db-writer [options] <port>\n"
    "\n"
    "Stores every newline-terminated line received on TCP <port> as a row of table testcounter\n"
    "and replies \"OK <id>\" once the row is committed, or \"ERR <reason>\".\n"
    "\n"
    "environment:\n"
    "  DATABASE_URL          libpq connection URL or conninfo (required)\n"
    "  MAX_LINE_BYTES        default for --max-line-bytes\n"
    "  DB_POOL_SIZE          default for --pool-size\n"
    "options:\n"
    "  --max-line-bytes N    longest accepted line, without its newline (default 65536)\n"
    "  --pool-size N         PostgreSQL connections (default 4, 1..64)\n"
    "  --bind ADDRESS        address to listen on (default 0.0.0.0)\n"
    "  --shutdown-timeout S  seconds to finish in-flight lines after SIGTERM (default 30)\n"
    "  -h, --help            this text\n";

struct Options {
  unsigned port = 0;
  std::string bind = "0.0.0.0";
  std::string database_url;
  size_t max_line_bytes = 64 * 1024;
  unsigned pool_size = 4;
  unsigned shutdown_timeout = 30;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::cerr << "db-writer: " << why << "\n" << kUsage;
  std::exit(2);
}

unsigned long long parse_number(const std::string& what, const std::string& text, unsigned long long lo,
                                unsigned long long hi) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    usage_error(what + " must be a number, got \"" + text + "\"");
  unsigned long long v = 0;
  try {
    v = std::stoull(text);
  } catch (...) {
    usage_error(what + " is out of range: " + text);
  }
  if (v < lo || v > hi)
    usage_error(what + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + text);
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  constexpr unsigned long long kMaxLine = 1ull << 30;
  if (const char* e = std::getenv("MAX_LINE_BYTES"); e && *e) o.max_line_bytes = parse_number("MAX_LINE_BYTES", e, 1, kMaxLine);
  if (const char* e = std::getenv("DB_POOL_SIZE"); e && *e) o.pool_size = parse_number("DB_POOL_SIZE", e, 1, 64);
  std::optional<std::string> port;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (a.rfind("--", 0) == 0) {
      std::string name = a, value;
      if (auto eq = a.find('='); eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
      } else {
        if (i + 1 >= argc) usage_error("option " + a + " needs a value");
        value = argv[++i];
      }
      if (name == "--max-line-bytes") o.max_line_bytes = parse_number(name, value, 1, kMaxLine);
      else if (name == "--pool-size") o.pool_size = parse_number(name, value, 1, 64);
      else if (name == "--shutdown-timeout") o.shutdown_timeout = parse_number(name, value, 1, 3600);
      else if (name == "--bind") o.bind = value;
      else usage_error("unknown option " + name);
      continue;
    }
    if (a.size() > 1 && a[0] == '-') usage_error("unknown option " + a);
    if (port) usage_error("unexpected argument \"" + a + "\"");
    port = a;
  }
  if (!port) usage_error("missing <port>");
  o.port = parse_number("port", *port, 0, 65535);
  const char* url = std::getenv("DATABASE_URL");
  if (!url || !*url) usage_error("DATABASE_URL is not set");
  o.database_url = url;
  if (std::string why = check_conninfo(o.database_url); !why.empty()) usage_error("DATABASE_URL is invalid: " + why);
  return o;
}

class Server final : public SessionOwner {
 public:
  Server(asio::io_context& io, tcp::acceptor& acceptor, DbPool& pool, SessionConfig config)
      : io_(io), acceptor_(acceptor), pool_(pool), config_(config), retry_(io) {}

  void serve() {
    serving_ = true;
    accept();
  }

  void shutdown() {
    if (stopping_) return;
    stopping_ = true;
    error_code ec;
    acceptor_.close(ec);
    retry_.cancel();
    info("shutting down: stopped accepting; answering ", pool_.in_flight(), " in-flight line(s) for ",
         sessions_.size(), " client(s)");
    for (auto& [_, s] : sessions_) asio::post(s->executor(), [s] { s->stop_reading(); });
    check_done();
  }

  void session_closed(Session* s) override {
    asio::post(io_, [this, s] {
      sessions_.erase(s);
      if (stopping_) check_done();
    });
  }

  bool finished() const { return finished_; }

 private:
  void accept() {
    // The socket is born on its lane's io_context: that lane's worker thread reads, commits and answers.
    const unsigned lane = pool_.assign_lane();
    acceptor_.async_accept(pool_.lane_context(lane), [this, lane](const error_code& ec, tcp::socket socket) {
      if (stopping_) return;
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        warn("accept failed: ", ec.message(), "; retrying");  // e.g. out of file descriptors
        retry_.expires_after(std::chrono::milliseconds(200));
        retry_.async_wait([this](const error_code& e) {
          if (!e && !stopping_) accept();
        });
        return;
      }
      auto s = std::make_shared<Session>(std::move(socket), lane, pool_, config_, *this);
      sessions_.emplace(s.get(), s);
      asio::post(s->executor(), [s] { s->start(); });
      accept();
    });
  }

  void check_done() {
    if (!sessions_.empty() || finished_) return;
    finished_ = true;
    // Lines of clients that already went away may still be committing: let the workers finish.
    asio::post(io_, [this] {
      pool_.drain_and_stop();
      io_.stop();
    });
  }

  asio::io_context& io_;
  tcp::acceptor& acceptor_;
  DbPool& pool_;
  SessionConfig config_;
  asio::steady_timer retry_;
  std::unordered_map<Session*, std::shared_ptr<Session>> sessions_;
  bool serving_ = false;
  bool stopping_ = false;
  bool finished_ = false;
};

int run(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);

  asio::io_context io(1);
  asio::signal_set signals(io, SIGTERM, SIGINT);

  tcp::acceptor acceptor(io);
  try {
    tcp::endpoint ep(asio::ip::make_address(opt.bind), static_cast<unsigned short>(opt.port));
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    error("cannot listen on ", opt.bind, ":", opt.port, ": ", e.what());
    return 1;
  }
  const unsigned port = acceptor.local_endpoint().port();

  PoolConfig pc;
  pc.database_url = opt.database_url;
  pc.workers = opt.pool_size;
  DbPool pool(pc);
  SessionConfig sc;
  sc.max_line_bytes = opt.max_line_bytes;
  Server server(io, acceptor, pool, sc);

  // The table must exist before the first INSERT is prepared. PostgreSQL may still be starting
  // (boot ordering, restarts): keep trying, loudly, rather than exit.
  std::atomic<bool> abandon{false};
  std::thread schema([&] {
    auto delay = std::chrono::milliseconds(200);
    for (unsigned attempt = 1; !abandon; ++attempt) {
      std::string why = ensure_schema(opt.database_url);
      if (why.empty()) {
        asio::post(io, [&] {
          if (abandon) return;
          pool.start();
          server.serve();
          info("ready: listening on ", opt.bind, ":", port, ", max line ", opt.max_line_bytes, " bytes, ",
               opt.pool_size, " PostgreSQL connection(s)");
        });
        return;
      }
      if (attempt == 1 || attempt % 10 == 0) warn("cannot prepare table testcounter (attempt ", attempt, "): ", why);
      for (auto slept = std::chrono::milliseconds(0); slept < delay && !abandon; slept += std::chrono::milliseconds(100))
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      delay = std::min(delay * 2, std::chrono::milliseconds(5000));
    }
  });

  std::atomic<bool> done{false};
  std::thread watchdog;
  signals.async_wait([&](const error_code& ec, int signo) {
    if (ec) return;
    info("received ", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    abandon = true;
    signals.async_wait([](const error_code& e, int) {
      if (!e) warn("already shutting down");
    });
    const unsigned grace = opt.shutdown_timeout;
    watchdog = std::thread([&done, &pool, grace] {
      for (unsigned i = 0; i < grace * 10 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (done) return;
      error("shutdown timeout (", grace, " s) expired with ", pool.in_flight(),
            " line(s) not committed; they were not acknowledged");
      std::_Exit(1);
    });
    server.shutdown();
  });

  info("db-writer starting on ", opt.bind, ":", port);
  io.run();
  done = true;
  if (watchdog.joinable()) watchdog.join();
  schema.join();
  pool.drain_and_stop();
  info("stopped");
  return 0;
}

}  // namespace
}  // namespace dbw

int main(int argc, char** argv) { return dbw::run(argc, argv); }
