#include "session.hpp"

#include <boost/asio/write.hpp>

#include <cstring>

#include "log.hpp"
#include "utf8.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace dbw {

Session::Session(asio::ip::tcp::socket socket, unsigned lane, DbPool& pool, const SessionConfig& config, SessionOwner& owner)
    : socket_(std::move(socket)), pool_(pool), config_(config), owner_(owner), lane_(lane) {
  error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  peer_ = ec ? std::string("unknown peer") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

void Session::start() {
  error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);  // replies are already coalesced per read
  info("client ", peer_, " connected");
  read_more();
}

void Session::stop_reading() {
  stopping_ = true;
  if (paused_ || !reading_) {
    read_closed_ = true;
    maybe_close();
    return;
  }
  // Wakes the outstanding read with end-of-file; anything it already received is still answered.
  error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_receive, ec);
}

void Session::read_more() {
  if (reading_ || read_closed_ || closed_ || paused_) return;
  if (stopping_) {
    read_closed_ = true;
    maybe_close();
    return;
  }
  reading_ = true;
  socket_.async_read_some(asio::buffer(rbuf_), [self = shared_from_this()](const error_code& ec, size_t n) {
    self->on_read(ec, n);
  });
}

void Session::on_read(const error_code& ec, size_t n) {
  reading_ = false;
  if (n > 0) parse(rbuf_.data(), n);
  if (!batch_.empty()) pool_.submit(lane_, std::move(batch_));
  batch_.clear();
  flush_replies();
  if (ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted && ec != asio::error::connection_reset)
      warn("client ", peer_, ": read failed: ", ec.message());
    if (!line_.empty() || discarding_)
      warn("client ", peer_, ": discarding an unterminated last line (no newline before end of input)");
    read_closed_ = true;
    maybe_close();
    return;
  }
  if (pending_.size() >= config_.max_unanswered) {
    if (!paused_once_)
      info("client ", peer_, ": ", pending_.size(), " lines unanswered, pausing reads until the database catches up");
    paused_once_ = true;
    paused_ = true;
    return;
  }
  read_more();
}

void Session::parse(const char* data, size_t n) {
  const char* p = data;
  const char* end = data + n;
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* stop = nl ? nl : end;
    if (!discarding_) {
      line_.append(p, stop);
      // +1: a line of exactly the maximum may still be followed by the '\r' of a "\r\n".
      if (line_.size() > config_.max_line_bytes + 1) {
        discarding_ = true;
        line_.clear();
        line_.shrink_to_fit();
      }
    }
    if (!nl) break;
    if (discarding_) {
      discarding_ = false;
      answer_now("ERR line too long (max " + std::to_string(config_.max_line_bytes) + " bytes)\n");
    } else {
      on_line(std::move(line_));
    }
    line_.clear();
    p = nl + 1;
  }
}

void Session::on_line(std::string content) {
  if (!content.empty() && content.back() == '\r') content.pop_back();
  if (content.size() > config_.max_line_bytes) {
    answer_now("ERR line too long (max " + std::to_string(config_.max_line_bytes) + " bytes)\n");
  } else if (std::memchr(content.data(), '\0', content.size())) {
    answer_now("ERR NUL byte not allowed (PostgreSQL text cannot store it)\n");
  } else if (!valid_utf8(content)) {
    answer_now("ERR invalid UTF-8\n");
  } else {
    uint64_t seq = next_seq_++;
    pending_.emplace_back();
    batch_.push_back(Item{shared_from_this(), seq, std::move(content)});
  }
}

void Session::answer_now(std::string reply) {
  next_seq_++;
  pending_.push_back(Slot{true, std::move(reply)});
}

void Session::complete(uint64_t seq, std::string reply) {
  if (closed_) return;  // the client went away; the row is committed all the same
  pending_[seq - front_seq_] = Slot{true, std::move(reply)};
  flush_replies();
  if (paused_ && pending_.size() <= config_.max_unanswered / 2) {
    paused_ = false;
    read_more();
  }
  maybe_close();
}

void Session::flush_replies() {
  while (!pending_.empty() && pending_.front().done) {
    std::string& r = pending_.front().reply;
    (r.compare(0, 3, "OK ") == 0 ? ok_ : err_)++;
    out_ += r;
    pending_.pop_front();
    ++front_seq_;
  }
  write_more();
}

void Session::write_more() {
  if (write_active_ || out_.empty() || dead_ || closed_) return;
  write_active_ = true;
  writing_.swap(out_);
  asio::async_write(socket_, asio::buffer(writing_), [self = shared_from_this()](const error_code& ec, size_t) {
    self->write_active_ = false;
    self->writing_.clear();
    if (ec) {
      if (!self->closed_) warn("client ", self->peer_, ": write failed: ", ec.message());
      self->dead_ = true;
      self->maybe_close();
      return;
    }
    self->write_more();
    self->maybe_close();
  });
}

void Session::maybe_close() {
  if (closed_ || write_active_) return;
  if (!dead_ && !(read_closed_ && pending_.empty() && out_.empty())) return;
  closed_ = true;
  error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  if (pending_.empty())
    info("client ", peer_, " done: ", ok_, " line(s) stored, ", err_, " refused");
  else
    info("client ", peer_, " gone with ", pending_.size(), " line(s) still being committed (", ok_, " stored, ",
         err_, " refused before)");
  owner_.session_closed(this);
}

}  // namespace dbw
