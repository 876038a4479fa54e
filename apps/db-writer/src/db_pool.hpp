// A small pool of PostgreSQL connections, each owned by one worker thread, that commits lines in
// groups: a worker takes every line queued for it (up to a batch limit), sends one prepared INSERT
// per line in libpq pipeline mode (one network round trip for the whole batch, all in one implicit
// transaction that commits at the Sync), and only after the commit reports each line's id.
// Each client session is tied to one worker (its lane), so one client's lines are committed in the
// order they were sent and get increasing ids. The worker thread also runs its lane's io_context, the
// sessions' socket I/O: a line is read, committed and answered on one thread, with no hand-off
// between threads (each hand-off, a wake-up of a sleeping thread, cost more than the commit itself).
// For the same reason a worker that is the only one awake polls for its next event for a moment
// before it sleeps (kSpin in db_pool.cpp).
#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dbw {

/** Receives the reply for a line, on its lane's thread. */
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void complete(uint64_t seq, std::string reply) = 0;
};

struct Item {
  std::shared_ptr<ReplySink> sink;
  uint64_t seq;
  std::string content;
};

struct PoolConfig {
  std::string database_url;
  unsigned workers = 4;
  size_t max_batch_lines = 512;
  size_t max_batch_bytes = 4 << 20;
  /** A batch that cannot be committed for this long (database down) is answered ERR. */
  std::chrono::milliseconds retry_timeout{30000};
};

class DbPool {
 public:
  explicit DbPool(PoolConfig config);
  ~DbPool();
  DbPool(const DbPool&) = delete;
  DbPool& operator=(const DbPool&) = delete;

  void start();
  /** The worker a new session's lines go to (round robin). */
  unsigned assign_lane();
  /** Runs the I/O of the lane's sessions, on the lane's worker thread. */
  boost::asio::io_context& lane_context(unsigned lane) { return lanes_.at(lane)->io; }
  /** On the lane's thread (from its sessions). */
  void submit(unsigned lane, std::vector<Item>&& items);
  /** Lines queued or being committed. Thread-safe. */
  size_t in_flight();
  /** Workers finish everything queued, then exit; joins them. Not on a lane's thread. */
  void drain_and_stop();

 private:
  struct Worker;
  struct Lane {
    boost::asio::io_context io{1};
    std::deque<Item> queue;
  };
  /** Moves the next batch of the lane's queue into `batch`; false if the queue is empty. */
  bool take(unsigned lane, std::vector<Item>& batch);
  bool has_queued(unsigned lane);
  /** No other worker is awake (all others sleep waiting for their clients). */
  bool alone_awake() const { return awake_.load(std::memory_order_relaxed) == 1; }
  bool stopping();
  void deliver(std::vector<Item>& batch, std::vector<std::string>& replies);
  bool interruptible_sleep(std::chrono::milliseconds d);

  PoolConfig config_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Lane>> lanes_;  // one per worker
  unsigned next_lane_ = 0;
  size_t queued_ = 0;
  size_t busy_ = 0;  // lines taken by workers and not yet delivered
  bool stopping_ = false;
  std::atomic<unsigned> awake_;  // workers not asleep in their io_context
  std::vector<std::thread> threads_;
};

/**
 * Connects (blocking) and creates the table if it is missing. Returns an empty string on
 * success, else the reason.
 */
std::string ensure_schema(const std::string& database_url);

/** Empty if the URL/conninfo parses, else libpq's reason. */
std::string check_conninfo(const std::string& database_url);

}  // namespace dbw
