// One TCP client: splits the byte stream into lines, validates them, hands valid ones to its pool
// worker and writes the replies back strictly in line order (a refused line is answered at once,
// while the lines before it may still be committing).
// A session lives on its lane's thread (its socket belongs to DbPool::lane_context(lane)): every
// member function runs there, except the constructor and executor().
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "db_pool.hpp"

namespace dbw {

struct SessionConfig {
  size_t max_line_bytes = 64 * 1024;
  /** Lines received but not yet answered; reading pauses at this many (bounds memory). */
  size_t max_unanswered = 8192;
};

class Session;

class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  /** Called on the session's thread. */
  virtual void session_closed(Session* s) = 0;
};

class Session final : public ReplySink, public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, unsigned lane, DbPool& pool, const SessionConfig& config, SessionOwner& owner);
  auto executor() { return socket_.get_executor(); }
  void start();
  /** Shutdown: read nothing more; answer what was received, then close. */
  void stop_reading();
  void complete(uint64_t seq, std::string reply) override;  // io thread only

 private:
  struct Slot {
    bool done = false;
    std::string reply;
  };
  void read_more();
  void on_read(const boost::system::error_code& ec, size_t n);
  void parse(const char* data, size_t n);
  void on_line(std::string content);
  void answer_now(std::string reply);
  void flush_replies();
  void write_more();
  void maybe_close();

  boost::asio::ip::tcp::socket socket_;
  DbPool& pool_;
  const SessionConfig& config_;
  SessionOwner& owner_;
  std::string peer_;
  unsigned lane_;  // the pool worker that commits this client's lines, in order

  std::array<char, 64 * 1024> rbuf_;
  std::string line_;
  bool discarding_ = false;  // inside an over-long line, skipping to its newline
  std::vector<Item> batch_;  // valid lines of the current read, submitted together

  std::deque<Slot> pending_;  // replies in line order; front has sequence number front_seq_
  uint64_t front_seq_ = 0;
  uint64_t next_seq_ = 0;
  std::string out_;      // replies ready to write
  std::string writing_;  // replies being written
  bool write_active_ = false;

  bool reading_ = false;
  bool paused_ = false;
  bool paused_once_ = false;  // log the first pause only
  bool read_closed_ = false;
  bool stopping_ = false;
  bool dead_ = false;
  bool closed_ = false;
  uint64_t ok_ = 0, err_ = 0;
};

}  // namespace dbw
