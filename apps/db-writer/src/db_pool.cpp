#include "db_pool.hpp"

#include <libpq-fe.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "log.hpp"

namespace dbw {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Oid kTextOid = 25;
const char* const kInsertName = "dbw_insert";
const char* const kInsertSql = "INSERT INTO testcounter (content) VALUES ($1) RETURNING id";
const char* const kCreateSql =
    "CREATE TABLE IF NOT EXISTS testcounter ("
    "id SERIAL PRIMARY KEY, content TEXT NOT NULL, date TIMESTAMP NOT NULL DEFAULT now())";

struct ResultGuard {
  PGresult* r;
  explicit ResultGuard(PGresult* res) : r(res) {}
  ~ResultGuard() {
    if (r) PQclear(r);
  }
  ResultGuard(const ResultGuard&) = delete;
  ResultGuard& operator=(const ResultGuard&) = delete;
};

struct ConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnCloser>;

/** Connects with our settings; the URL may override everything except client_encoding. */
Conn connect_db(const std::string& url, std::string& why) {
  // TCP keepalives notice a vanished server within ~25 s instead of the kernel's 2 hours.
  const char* keys[] = {"application_name", "connect_timeout", "keepalives_idle", "keepalives_interval",
                        "keepalives_count", "dbname", "client_encoding", nullptr};
  const char* vals[] = {"db-writer", "10", "10", "5", "3", url.c_str(), "UTF8", nullptr};
  Conn c(PQconnectdbParams(keys, vals, 1));
  if (!c) {
    why = "out of memory";
    return nullptr;
  }
  if (PQstatus(c.get()) != CONNECTION_OK) {
    why = one_line(PQerrorMessage(c.get()));
    return nullptr;
  }
  return c;
}

/**
 * True when an error means "this connection is unusable or the server is going away" (the batch
 * may be retried on a new connection) rather than "this line cannot be stored".
 */
bool transient(PGconn* c, const PGresult* r) {
  if (PQstatus(c) != CONNECTION_OK) return true;
  const char* st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (!st) return true;  // errors made up by libpq itself are connection trouble
  // 08 connection exception, 57 operator intervention (admin shutdown, crash shutdown, cannot
  // connect now, query canceled), 53 insufficient resources, 40 transaction rollback.
  return std::strncmp(st, "08", 2) == 0 || std::strncmp(st, "57", 2) == 0 ||
         std::strncmp(st, "53", 2) == 0 || std::strncmp(st, "40", 2) == 0;
}

/** Reads results up to the next PGRES_PIPELINE_SYNC. False if the connection broke first. */
bool drain_to_sync(PGconn* c) {
  int nulls = 0;
  while (nulls < 3) {
    PGresult* r = PQgetResult(c);
    if (!r) {
      if (PQstatus(c) != CONNECTION_OK) return false;
      ++nulls;
      continue;
    }
    nulls = 0;
    ResultGuard g(r);
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) return true;
    if (PQstatus(c) != CONNECTION_OK) return false;
  }
  return false;
}

struct BatchResult {
  enum Kind { Committed, LineFailed, Broken } kind = Committed;
  size_t failed = 0;      // LineFailed: index (into the attempt) of the line the server rejected
  std::string message;    // LineFailed/Broken: why
  size_t ids_received = 0;
};

/**
 * One pipeline: a prepared INSERT per line, then Sync. Without explicit BEGIN/COMMIT the statements
 * before a Sync form one implicit transaction that commits at the Sync, so PGRES_PIPELINE_SYNC
 * after all-successful INSERTs means every row of the batch is committed.
 */
BatchResult run_batch(PGconn* c, const std::vector<const std::string*>& lines, std::vector<long long>& ids) {
  BatchResult out;
  ids.assign(lines.size(), 0);
  for (const std::string* line : lines) {
    const char* value = line->c_str();
    if (!PQsendQueryPrepared(c, kInsertName, 1, &value, nullptr, nullptr, 0)) {
      return {BatchResult::Broken, 0, one_line(PQerrorMessage(c)), 0};
    }
  }
  if (!PQpipelineSync(c)) return {BatchResult::Broken, 0, one_line(PQerrorMessage(c)), 0};

  bool failed = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    PGresult* r = PQgetResult(c);
    if (!r) {
      std::string why = PQstatus(c) == CONNECTION_OK ? "protocol out of step" : one_line(PQerrorMessage(c));
      return {BatchResult::Broken, 0, why, out.ids_received};
    }
    ResultGuard g(r);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      ids[i] = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
      ++out.ids_received;
    } else if (st == PGRES_PIPELINE_ABORTED) {
      // skipped because an earlier line failed
    } else {
      std::string why = one_line(PQresultErrorMessage(r));
      if (why.empty()) why = PQresStatus(st);
      if (transient(c, r)) return {BatchResult::Broken, 0, why, out.ids_received};
      if (!failed) {
        failed = true;
        out.kind = BatchResult::LineFailed;
        out.failed = i;
        out.message = why;
      }
    }
    // Each query's results end with a NULL.
    if (PGresult* extra = PQgetResult(c)) {
      PQclear(extra);
      return {BatchResult::Broken, 0, "protocol out of step", out.ids_received};
    }
  }

  PGresult* r = PQgetResult(c);
  if (!r) return {BatchResult::Broken, 0, one_line(PQerrorMessage(c)), out.ids_received};
  ResultGuard g(r);
  if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) return out;
  // An error at commit time (reported before the Sync result).
  std::string why = one_line(PQresultErrorMessage(r));
  if (transient(c, r) || !drain_to_sync(c)) return {BatchResult::Broken, 0, why, out.ids_received};
  return {BatchResult::LineFailed, lines.size(), why, out.ids_received};  // failed == size: the whole batch
}

}  // namespace

struct DbPool::Worker {
  DbPool& pool;
  unsigned index;
  Conn conn;
  unsigned failures = 0;  // consecutive failed connection attempts

  bool open(std::string& why) {
    Conn c = connect_db(pool.config_.database_url, why);
    if (!c) return false;
    // A batch stuck inside PostgreSQL (waiting on a lock) must end like an unreachable server:
    // ERR after the retry timeout, not a line left unanswered for ever. A timeout the URL sets wins.
    const std::string limit = std::to_string(pool.config_.retry_timeout.count());
    const char* limit_value = limit.c_str();
    ResultGuard timeout(PQexecParams(c.get(),
                                     "SELECT set_config('statement_timeout', $1, false) "
                                     "WHERE current_setting('statement_timeout') = '0'",
                                     1, nullptr, &limit_value, nullptr, nullptr, 0));
    if (PQresultStatus(timeout.r) != PGRES_TUPLES_OK) {
      why = "setting statement_timeout: " + one_line(PQresultErrorMessage(timeout.r));
      return false;
    }
    Oid types[] = {kTextOid};
    ResultGuard prep(PQprepare(c.get(), kInsertName, kInsertSql, 1, types));
    if (PQresultStatus(prep.r) != PGRES_COMMAND_OK) {
      why = "preparing the INSERT: " + one_line(PQresultErrorMessage(prep.r));
      return false;
    }
    if (!PQenterPipelineMode(c.get())) {
      why = "entering pipeline mode: " + one_line(PQerrorMessage(c.get()));
      return false;
    }
    conn = std::move(c);
    return true;
  }

  /** Connects with exponential backoff until the deadline. */
  bool connect_until(Clock::time_point deadline) {
    auto delay = std::chrono::milliseconds(100);
    for (;;) {
      std::string why;
      if (open(why)) {
        if (failures > 0) info("worker ", index, ": reconnected to PostgreSQL after ", failures, " failed attempt(s)");
        failures = 0;
        return true;
      }
      ++failures;
      if (failures == 1 || failures % 10 == 0)
        warn("worker ", index, ": cannot connect to PostgreSQL (attempt ", failures, "): ", why);
      if (Clock::now() + delay > deadline) return false;
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::milliseconds(2000));
    }
  }

  /**
   * After a connection broke between the last INSERT result and the Sync result, the commit may
   * or may not have happened. Sequence values are never reused, so the rows exist iff it did.
   * Returns the number of those ids present, or -1 if the check itself failed.
   */
  long long count_existing(const std::vector<long long>& ids) {
    std::string array = "{";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) array += ',';
      array += std::to_string(ids[i]);
    }
    array += '}';
    const char* value = array.c_str();
    PGconn* c = conn.get();
    if (!PQsendQueryParams(c, "SELECT count(*) FROM testcounter WHERE id = ANY($1::int4[])", 1, nullptr, &value,
                           nullptr, nullptr, 0) ||
        !PQpipelineSync(c))
      return -1;
    long long n = -1;
    if (PGresult* r = PQgetResult(c)) {
      ResultGuard g(r);
      if (PQresultStatus(r) == PGRES_TUPLES_OK) n = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
    }
    if (!drain_to_sync(c)) return -1;
    return n;
  }

  void process(std::vector<Item>& batch, std::vector<std::string>& replies) {
    replies.assign(batch.size(), std::string());
    std::vector<size_t> todo(batch.size());
    std::iota(todo.begin(), todo.end(), 0);
    const auto deadline = Clock::now() + pool.config_.retry_timeout;
    std::vector<long long> ids;
    std::vector<long long> unsure_ids;  // ids of an attempt whose commit outcome is unknown
    std::vector<const std::string*> lines;
    std::chrono::milliseconds broken_delay{0};  // wait before re-sending after a broken attempt

    while (!todo.empty()) {
      if (!conn) {
        if (!connect_until(deadline)) {
          for (size_t i : todo) replies[i] = "ERR database unavailable\n";
          return;
        }
      }
      if (!unsure_ids.empty()) {
        long long n = count_existing(unsure_ids);
        if (n < 0) {
          conn.reset();
          continue;
        }
        if (static_cast<size_t>(n) == unsure_ids.size()) {
          info("worker ", index, ": batch of ", todo.size(), " line(s) was committed before the connection broke");
          for (size_t k = 0; k < todo.size(); ++k) replies[todo[k]] = "OK " + std::to_string(unsure_ids[k]) + "\n";
          return;
        }
        if (n != 0) {  // cannot happen with one transaction per batch; never guess
          error("worker ", index, ": ", n, " of ", unsure_ids.size(), " rows of an interrupted batch exist");
          for (size_t i : todo) replies[i] = "ERR commit outcome unknown\n";
          return;
        }
        unsure_ids.clear();  // not committed: retry below
      }

      lines.clear();
      for (size_t i : todo) lines.push_back(&batch[i].content);
      BatchResult res = run_batch(conn.get(), lines, ids);
      switch (res.kind) {
        case BatchResult::Committed:
          for (size_t k = 0; k < todo.size(); ++k) replies[todo[k]] = "OK " + std::to_string(ids[k]) + "\n";
          return;
        case BatchResult::LineFailed: {
          if (res.failed >= todo.size()) {
            error("worker ", index, ": commit failed: ", res.message);
            for (size_t i : todo) replies[i] = "ERR database error: " + res.message + "\n";
            return;
          }
          warn("worker ", index, ": line rejected by PostgreSQL: ", res.message);
          replies[todo[res.failed]] = "ERR database error: " + res.message + "\n";
          todo.erase(todo.begin() + static_cast<std::ptrdiff_t>(res.failed));  // the rest rolled back: retry them
          break;
        }
        case BatchResult::Broken:
          warn("worker ", index, ": connection to PostgreSQL lost during a batch of ", todo.size(),
               " line(s): ", res.message, "; will reconnect and retry");
          if (res.ids_received == todo.size()) unsure_ids = ids;
          conn.reset();
          if (Clock::now() > deadline) {
            for (size_t i : todo) replies[i] = "ERR database unavailable\n";
            return;
          }
          // A server that accepts connections but fails every batch (disk full, statement_timeout)
          // would otherwise get a reconnect and a retry, and the log a warning, in a tight loop.
          if (broken_delay.count() > 0) std::this_thread::sleep_for(std::min<Clock::duration>(broken_delay, deadline - Clock::now()));
          broken_delay = std::clamp(broken_delay * 2, std::chrono::milliseconds(100), std::chrono::milliseconds(2000));
          break;
      }
    }
  }

  void run() {
    std::string why;
    if (!open(why)) warn("worker ", index, ": cannot connect to PostgreSQL yet: ", why);
    std::vector<Item> batch;
    std::vector<std::string> replies;
    while (pool.take(index, batch)) {
      process(batch, replies);
      pool.deliver(batch, replies);
    }
  }
};

DbPool::DbPool(boost::asio::io_context& io, PoolConfig config) : io_(io), config_(std::move(config)) {
  for (unsigned i = 0; i < config_.workers; ++i) lanes_.push_back(std::make_unique<Lane>());
}

DbPool::~DbPool() { drain_and_stop(); }

void DbPool::start() {
  for (unsigned i = 0; i < config_.workers; ++i) {
    threads_.emplace_back([this, i] {
      Worker w{*this, i, nullptr};
      w.run();
    });
  }
}

unsigned DbPool::assign_lane() {
  std::lock_guard lock(mu_);
  return next_lane_++ % config_.workers;
}

void DbPool::submit(unsigned lane, std::vector<Item>&& items) {
  if (items.empty()) return;
  Lane& l = *lanes_.at(lane);
  {
    std::lock_guard lock(mu_);
    queued_ += items.size();
    for (auto& it : items) l.queue.push_back(std::move(it));
  }
  items.clear();
  l.cv.notify_one();
}

size_t DbPool::in_flight() {
  std::lock_guard lock(mu_);
  return queued_ + busy_;
}

bool DbPool::take(unsigned lane, std::vector<Item>& batch) {
  batch.clear();
  Lane& l = *lanes_[lane];
  std::unique_lock lock(mu_);
  l.cv.wait(lock, [&] { return !l.queue.empty() || stopping_; });
  if (l.queue.empty()) return false;
  size_t bytes = 0;
  while (!l.queue.empty() && batch.size() < config_.max_batch_lines &&
         (batch.empty() || bytes + l.queue.front().content.size() <= config_.max_batch_bytes)) {
    bytes += l.queue.front().content.size();
    batch.push_back(std::move(l.queue.front()));
    l.queue.pop_front();
  }
  queued_ -= batch.size();
  busy_ += batch.size();
  return true;
}

void DbPool::deliver(std::vector<Item>& batch, std::vector<std::string>& replies) {
  struct Done {
    std::shared_ptr<ReplySink> sink;
    uint64_t seq;
    std::string reply;
  };
  std::vector<Done> done;
  done.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) done.push_back({std::move(batch[i].sink), batch[i].seq, std::move(replies[i])});
  boost::asio::post(io_, [done = std::move(done)]() mutable {
    for (auto& d : done) d.sink->complete(d.seq, std::move(d.reply));
  });
  std::lock_guard lock(mu_);
  busy_ -= batch.size();
  batch.clear();
}

void DbPool::drain_and_stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  for (auto& l : lanes_) l->cv.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

std::string ensure_schema(const std::string& database_url) {
  std::string why;
  Conn c = connect_db(database_url, why);
  if (!c) return why;
  ResultGuard r(PQexec(c.get(), kCreateSql));
  if (PQresultStatus(r.r) != PGRES_COMMAND_OK) return "creating table testcounter: " + one_line(PQresultErrorMessage(r.r));
  return {};
}

std::string check_conninfo(const std::string& database_url) {
  // A bare word is a database name to libpq (expand_dbname), not something PQconninfoParse takes.
  if (database_url.find('=') == std::string::npos && database_url.rfind("postgres://", 0) != 0 &&
      database_url.rfind("postgresql://", 0) != 0)
    return {};
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(database_url.c_str(), &err);
  std::string why;
  if (!opts) why = err ? one_line(err) : "cannot parse";
  if (err) PQfreemem(err);
  if (opts) PQconninfoFree(opts);
  return why;
}

}  // namespace dbw
