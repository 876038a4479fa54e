#include "db_pool.hpp"

#include <libpq-fe.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>

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
// One row per worker lane: the token of its last batch, written in the batch's own transaction, so
// after a broken connection the token's presence says whether the batch committed. The lane is the
// key and the token is not indexed, so each batch's upsert is a HOT update of one small row. (Until
// 2026-12 the token was the key and each batch deleted and inserted a row: the DELETE scanned every
// dead version left since the last autovacuum, and the extra statement cut a one-line batch's rate
// to about a quarter.) A table of that older shape is rekeyed in place; rows of writers that are gone
// for a day are removed at startup.
const char* const kCommitsSql =
    "CREATE TABLE IF NOT EXISTS db_writer_commits ("
    "lane TEXT PRIMARY KEY, token TEXT NOT NULL, last_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now());"
    "DO $$ BEGIN "
    "IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
    "WHERE i.indrelid = 'db_writer_commits'::regclass AND i.indisprimary AND i.indnatts = 1 AND a.attname = 'lane') THEN "
    "ALTER TABLE db_writer_commits DROP CONSTRAINT IF EXISTS db_writer_commits_pkey, ADD PRIMARY KEY (lane); "
    "END IF; END $$;"
    "DELETE FROM db_writer_commits WHERE at < now() - interval '1 day'";
// The batch's last line carries the token: its INSERT and the token's upsert are one statement, so a
// batch costs no statement beyond its lines. last_id is that line's id, the newest of the batch.
const char* const kInsertMarkName = "dbw_insert_mark";
const char* const kInsertMarkSql =
    "WITH line AS (INSERT INTO testcounter (content) VALUES ($1) RETURNING id), "
    "mark AS (INSERT INTO db_writer_commits (lane, token, last_id) SELECT $3, $2, id FROM line "
    "ON CONFLICT (lane) DO UPDATE SET token = excluded.token, last_id = excluded.last_id, at = now()) "
    "SELECT id FROM line";

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

// One client sending a line at a time, and nothing else to do: each of its lines waits twice on
// another process, PostgreSQL's answer (~100 us) and the client's next line (microseconds after its
// OK). Sleeping in poll() for either costs a wake-up of this thread, an inter-processor interrupt
// that in this VM cost more than the INSERT (bench:apps, interleaved: 6,200-7,600 one-at-a-time
// lines/s sleeping, 10,300-11,800 polling). So a worker that is the only one awake polls without
// sleeping, for up to kSpin: for PostgreSQL's answer to a one-line batch, and for the client's next
// line when its last one came within kSpin of the answer before it (a slower client is slept for).
// With two or more workers awake no one polls: on two cores the spinning workers took the CPU their
// PostgreSQL backends needed (2 clients: 12,000-17,800 lines/s against 21,800-26,000 sleeping).
constexpr auto kSpin = std::chrono::microseconds(400);

/** Reads PostgreSQL's answer without sleeping, for up to kSpin while `alone()`; PQgetResult does the rest. */
template <typename Alone>
void spin_for_input(PGconn* c, Alone&& alone) {
  const auto until = Clock::now() + kSpin;
  while (PQisBusy(c) && Clock::now() < until && alone())
    if (!PQconsumeInput(c)) return;
}

struct BatchResult {
  enum Kind { Committed, LineFailed, Broken } kind = Committed;
  size_t failed = 0;      // LineFailed: index (into the attempt) of the line the server rejected
  std::string message;    // LineFailed/Broken: why
  // Broken: the batch may have committed (the connection died without the server reporting an
  // error for it). An error the server sent before the Sync's answer means it rolled back.
  bool maybe_committed = false;
  // Broken: PostgreSQL failed the batch with an ERROR (a statement timeout, a full disk) and the
  // session goes on; a FATAL or a dead socket ends it.
  bool session_kept = false;
};

/** An error PostgreSQL itself reported (it has a SQLSTATE); libpq's own, for a lost connection, have none. */
bool from_server(const PGresult* r) { return r && PQresultErrorField(r, PG_DIAG_SQLSTATE) != nullptr; }

/** An error after which the server keeps the session (ERROR, not FATAL or PANIC) on a connection still up. */
bool session_kept(PGconn* c, const PGresult* r) {
  const char* severity = r ? PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED) : nullptr;
  return PQstatus(c) == CONNECTION_OK && severity && std::strcmp(severity, "ERROR") == 0;
}

/**
 * One pipeline: a prepared INSERT per line, the last one also writing the batch's commit token, then
 * Sync. Without explicit BEGIN/COMMIT the statements before a Sync form one implicit transaction that
 * commits at the Sync, so PGRES_PIPELINE_SYNC after all-successful statements means every row of the
 * batch is committed, and the token row exists exactly when they do.
 */
template <typename Alone>
BatchResult run_batch(PGconn* c, const std::vector<const std::string*>& lines, std::vector<long long>& ids,
                      const std::string& token, const std::string& lane, Alone&& alone) {
  auto broken = [](std::string why, bool maybe_committed, bool kept = false) {
    return BatchResult{BatchResult::Broken, 0, std::move(why), maybe_committed, kept};
  };
  ids.assign(lines.size(), 0);
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool last = i + 1 == lines.size();
    const char* values[] = {lines[i]->c_str(), token.c_str(), lane.c_str()};
    // No Sync was sent: the server cannot commit any of it.
    if (!PQsendQueryPrepared(c, last ? kInsertMarkName : kInsertName, last ? 3 : 1, values, nullptr, nullptr, 0))
      return broken(one_line(PQerrorMessage(c)), false);
  }
  if (!PQpipelineSync(c)) return broken(one_line(PQerrorMessage(c)), true);
  if (lines.size() == 1 && alone()) spin_for_input(c, alone);

  BatchResult out;
  // One result per line; each query's results end with a NULL.
  for (size_t i = 0; i < lines.size(); ++i) {
    PGresult* r = PQgetResult(c);
    if (!r) return broken(PQstatus(c) == CONNECTION_OK ? "protocol out of step" : one_line(PQerrorMessage(c)), true);
    ResultGuard g(r);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      ids[i] = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
    } else if (st == PGRES_PIPELINE_ABORTED) {
      // skipped because an earlier line failed
    } else {
      std::string why = one_line(PQresultErrorMessage(r));
      if (why.empty()) why = PQresStatus(st);
      if (transient(c, r)) return broken(why, !from_server(r), session_kept(c, r));
      if (out.kind != BatchResult::LineFailed) {
        // A line the server refused (for the last line, its row or the token: both roll back with the batch).
        out.kind = BatchResult::LineFailed;
        out.failed = i;
        out.message = why;
      }
    }
    if (PGresult* extra = PQgetResult(c)) {
      PQclear(extra);
      return broken("protocol out of step", true);
    }
  }

  PGresult* r = PQgetResult(c);
  if (!r) return broken(one_line(PQerrorMessage(c)), true);
  ResultGuard g(r);
  if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) return out;
  // An error at commit time (reported before the Sync result): the transaction rolled back.
  std::string why = one_line(PQresultErrorMessage(r));
  if (transient(c, r) || !drain_to_sync(c)) return broken(why, !from_server(r), session_kept(c, r));
  return {BatchResult::LineFailed, lines.size(), why, false, false};  // failed == size: the whole batch
}

}  // namespace

struct DbPool::Worker {
  DbPool& pool;
  unsigned index;
  Conn conn{};
  unsigned failures = 0;  // consecutive failed connection attempts
  std::string lane{};     // this worker's key in db_writer_commits: unique across writer processes
  uint64_t attempts = 0;  // numbers the commit tokens
  // The server process behind `conn`, as pg_stat_activity names it (a pid alone may be reused).
  std::string backend_pid{}, backend_start{};

  /** A batch attempt whose connection broke before its commit was confirmed. */
  struct Unsure {
    std::string token, backend_pid, backend_start;
  };

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
    Oid mark_types[] = {kTextOid, kTextOid, kTextOid};
    ResultGuard mark(PQprepare(c.get(), kInsertMarkName, kInsertMarkSql, 3, mark_types));
    if (PQresultStatus(mark.r) != PGRES_COMMAND_OK) {
      why = "preparing the INSERT with the commit token: " + one_line(PQresultErrorMessage(mark.r));
      return false;
    }
    ResultGuard self(PQexec(c.get(),
                            "SELECT pid::text, extract(epoch FROM backend_start)::text FROM pg_stat_activity "
                            "WHERE pid = pg_backend_pid()"));
    if (PQresultStatus(self.r) != PGRES_TUPLES_OK || PQntuples(self.r) != 1) {
      why = "reading this connection's server process: " + one_line(PQresultErrorMessage(self.r));
      return false;
    }
    backend_pid = PQgetvalue(self.r, 0, 0);
    backend_start = PQgetvalue(self.r, 0, 1);
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

  /** One query on the pipelined connection, with its own Sync; nullptr if the connection broke. */
  std::unique_ptr<PGresult, void (*)(PGresult*)> query(const char* sql, std::initializer_list<const char*> params) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> none(nullptr, PQclear);
    PGconn* c = conn.get();
    std::vector<const char*> values(params);
    if (!PQsendQueryParams(c, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0) ||
        !PQpipelineSync(c))
      return none;
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQgetResult(c), PQclear);
    if (!r || !drain_to_sync(c)) return none;
    return r;
  }

  enum class Outcome { Committed, NotCommitted, Unknown, Broken };

  /**
   * Whether a broken attempt committed, and its ids if it did. First the attempt's server process must
   * be gone (it is asked to terminate): until then its transaction could still commit. Then its token
   * row exists iff it committed, and its rows are the newest up to the token's last_id whose xmin is the
   * token row's (one transaction).
   */
  Outcome settle(const Unsure& u, size_t lines, std::vector<long long>& ids, Clock::time_point deadline) {
    // A closed connection's server process normally goes within milliseconds: a few seconds even
    // when the retry deadline has passed, rather than an unknown outcome from a race.
    const auto wait_until = std::max(deadline, Clock::now() + std::chrono::seconds(5));
    for (;;) {
      auto alive = query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1::int AND "
          "extract(epoch FROM backend_start)::text = $2",
          {u.backend_pid.c_str(), u.backend_start.c_str()});
      if (!alive) return Outcome::Broken;
      // An error (not allowed to signal it) leaves only waiting for it to go.
      if (PQresultStatus(alive.get()) == PGRES_TUPLES_OK && PQntuples(alive.get()) == 0) break;
      if (Clock::now() > wait_until) return Outcome::Unknown;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto token = query("SELECT last_id::text, xmin::text FROM db_writer_commits WHERE lane = $1 AND token = $2",
                       {lane.c_str(), u.token.c_str()});
    if (!token) return Outcome::Broken;
    if (PQresultStatus(token.get()) != PGRES_TUPLES_OK) return Outcome::Unknown;
    if (PQntuples(token.get()) == 0) return Outcome::NotCommitted;
    const std::string count = std::to_string(lines);
    auto rows = query("SELECT id FROM testcounter WHERE id <= $1::bigint AND xmin::text = $2 ORDER BY id DESC LIMIT $3::int",
                      {PQgetvalue(token.get(), 0, 0), PQgetvalue(token.get(), 0, 1), count.c_str()});
    if (!rows) return Outcome::Broken;
    if (PQresultStatus(rows.get()) != PGRES_TUPLES_OK || static_cast<size_t>(PQntuples(rows.get())) != lines)
      return Outcome::Unknown;  // never guess which row is whose
    ids.assign(lines, 0);
    for (size_t k = 0; k < lines; ++k) ids[lines - 1 - k] = std::strtoll(PQgetvalue(rows.get(), static_cast<int>(k), 0), nullptr, 10);
    return Outcome::Committed;
  }

  void process(std::vector<Item>& batch, std::vector<std::string>& replies) {
    replies.assign(batch.size(), std::string());
    std::vector<size_t> todo(batch.size());
    std::iota(todo.begin(), todo.end(), 0);
    const auto deadline = Clock::now() + pool.config_.retry_timeout;
    std::vector<long long> ids;
    std::optional<Unsure> unsure;  // the last attempt broke before its commit was confirmed
    std::vector<const std::string*> lines;
    std::chrono::milliseconds broken_delay{0};  // wait before re-sending after a broken attempt
    auto answer_all = [&](const std::string& reply) {
      for (size_t i : todo) replies[i] = reply;
    };
    // A server that accepts connections but fails every batch (disk full, statement_timeout) would
    // otherwise get a reconnect and a retry, and the log a warning, in a tight loop.
    auto back_off = [&] {
      conn.reset();
      if (broken_delay.count() > 0) std::this_thread::sleep_for(std::min<Clock::duration>(broken_delay, deadline - Clock::now()));
      broken_delay = std::clamp(broken_delay * 2, std::chrono::milliseconds(100), std::chrono::milliseconds(2000));
    };

    while (!todo.empty()) {
      // Out of time with nothing of the batch stored (or possibly stored: then it is settled first).
      if (!unsure && Clock::now() > deadline) {
        answer_all("ERR database unavailable\n");
        return;
      }
      if (!conn && !connect_until(deadline)) {
        // A batch that may have committed must not be reported as not stored: the client would resend it.
        answer_all(unsure ? "ERR commit outcome unknown\n" : "ERR database unavailable\n");
        return;
      }
      if (unsure) {
        switch (settle(*unsure, todo.size(), ids, deadline)) {
          case Outcome::Committed:
            info("worker ", index, ": batch of ", todo.size(), " line(s) was committed before the connection broke");
            for (size_t k = 0; k < todo.size(); ++k) replies[todo[k]] = "OK " + std::to_string(ids[k]) + "\n";
            return;
          case Outcome::Unknown:
            error("worker ", index, ": cannot tell whether a batch of ", todo.size(), " line(s) committed");
            answer_all("ERR commit outcome unknown\n");
            return;
          case Outcome::Broken:
            if (Clock::now() > deadline) {
              answer_all("ERR commit outcome unknown\n");
              return;
            }
            back_off();
            continue;
          case Outcome::NotCommitted:
            unsure.reset();  // retry below
            break;
        }
      }

      lines.clear();
      for (size_t i : todo) lines.push_back(&batch[i].content);
      const std::string token = lane + "-" + std::to_string(++attempts);
      BatchResult res = run_batch(conn.get(), lines, ids, token, lane, [this] { return pool.alone_awake(); });
      switch (res.kind) {
        case BatchResult::Committed:
          for (size_t k = 0; k < todo.size(); ++k) replies[todo[k]] = "OK " + std::to_string(ids[k]) + "\n";
          return;
        case BatchResult::LineFailed: {
          if (res.failed >= todo.size()) {
            error("worker ", index, ": commit failed: ", res.message);
            answer_all("ERR database error: " + res.message + "\n");
            return;
          }
          warn("worker ", index, ": line rejected by PostgreSQL: ", res.message);
          replies[todo[res.failed]] = "ERR database error: " + res.message + "\n";
          todo.erase(todo.begin() + static_cast<std::ptrdiff_t>(res.failed));  // the rest rolled back: retry them
          break;
        }
        case BatchResult::Broken:
          if (res.maybe_committed)
            warn("worker ", index, ": connection to PostgreSQL lost during a batch of ", todo.size(), " line(s): ", res.message,
                 "; will reconnect, check whether it committed, and retry if not");
          else if (res.session_kept)  // a statement timeout, a full disk: not a lost connection
            warn("worker ", index, ": PostgreSQL failed a batch of ", todo.size(), " line(s): ", res.message, "; will retry");
          else
            warn("worker ", index, ": connection to PostgreSQL lost during a batch of ", todo.size(), " line(s): ", res.message,
                 "; will reconnect and retry");
          if (res.maybe_committed) unsure = Unsure{token, backend_pid, backend_start};
          back_off();
          break;
      }
    }
  }

  void run() {
    std::random_device random;
    char id[20];
    std::snprintf(id, sizeof id, "%08x%08x", random(), random());
    lane = std::string(id) + "-" + std::to_string(index);
    std::string why;
    if (!open(why)) warn("worker ", index, ": cannot connect to PostgreSQL yet: ", why);
    std::vector<Item> batch;
    std::vector<std::string> replies;
    auto& io = pool.lane_context(index);
    auto busy = boost::asio::make_work_guard(io);
    // Poll for the next line after answering this batch (see kSpin): it was one line, and the one
    // before it was answered less than kSpin before it came.
    bool spin_next = false;
    auto answered = Clock::now() - 2 * kSpin;  // when the last one-line batch was answered
    for (;;) {
      // Read what the lane's clients have sent; while a batch commits, new lines wait in the socket
      // buffers and make up the next batch.
      io.poll();
      if (spin_next) {
        const auto until = Clock::now() + kSpin;
        while (!pool.has_queued(index) && Clock::now() < until && pool.alone_awake()) io.poll();
      }
      if (pool.take(index, batch)) {
        const bool one = batch.size() == 1;
        spin_next = one && Clock::now() - answered < kSpin;
        process(batch, replies);
        pool.deliver(batch, replies);
        if (one) answered = Clock::now();
        continue;
      }
      spin_next = false;
      if (pool.stopping()) break;
      --pool.awake_;
      io.run_one();  // sleep until a client of this lane sends something (or stop wakes us)
      ++pool.awake_;
    }
    --pool.awake_;  // gone: never counted as awake again
  }
};

DbPool::DbPool(PoolConfig config) : config_(std::move(config)), awake_(config_.workers) {
  for (unsigned i = 0; i < config_.workers; ++i) lanes_.push_back(std::make_unique<Lane>());
}

DbPool::~DbPool() { drain_and_stop(); }

void DbPool::start() {
  for (unsigned i = 0; i < config_.workers; ++i) {
    threads_.emplace_back([this, i] {
      Worker w{.pool = *this, .index = i};
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
  std::lock_guard lock(mu_);  // in_flight() reads the counts from other threads
  queued_ += items.size();
  for (auto& it : items) l.queue.push_back(std::move(it));
  items.clear();
}

size_t DbPool::in_flight() {
  std::lock_guard lock(mu_);
  return queued_ + busy_;
}

bool DbPool::take(unsigned lane, std::vector<Item>& batch) {
  batch.clear();
  Lane& l = *lanes_[lane];
  std::lock_guard lock(mu_);
  size_t bytes = 0;
  while (!l.queue.empty() && batch.size() < config_.max_batch_lines &&
         (batch.empty() || bytes + l.queue.front().content.size() <= config_.max_batch_bytes)) {
    bytes += l.queue.front().content.size();
    batch.push_back(std::move(l.queue.front()));
    l.queue.pop_front();
  }
  queued_ -= batch.size();
  busy_ += batch.size();
  return !batch.empty();
}

bool DbPool::has_queued(unsigned lane) {
  std::lock_guard lock(mu_);
  return !lanes_[lane]->queue.empty();
}

bool DbPool::stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

void DbPool::deliver(std::vector<Item>& batch, std::vector<std::string>& replies) {
  // On the lane's thread, which owns the sessions: the replies go straight to their sockets.
  for (size_t i = 0; i < batch.size(); ++i) batch[i].sink->complete(batch[i].seq, std::move(replies[i]));
  std::lock_guard lock(mu_);
  busy_ -= batch.size();
  batch.clear();
}

void DbPool::drain_and_stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  for (auto& l : lanes_) boost::asio::post(l->io, [] {});  // wakes a worker waiting for client I/O
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
  ResultGuard commits(PQexec(c.get(), kCommitsSql));
  if (PQresultStatus(commits.r) != PGRES_COMMAND_OK)
    return "creating table db_writer_commits: " + one_line(PQresultErrorMessage(commits.r));
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
