/*
 * bench:apps' one-line-at-a-time client: one TCP connection, one line in flight (send a line, read its
 * reply, send the next) for SECONDS, then prints the lines answered per second. A blocking C loop,
 * like pgbench's own client for the raw INSERT it is compared with: the Node client's event loop cost
 * about 90 us a round trip, which is most of what the writer's one-line commit takes.
 * usage: one-at-a-time PORT SECONDS TAG EXPECT_OK(0|1)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char* what) {
  perror(what);
  exit(2);
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: one-at-a-time PORT SECONDS TAG EXPECT_OK(0|1)\n");
    return 2;
  }
  int port = atoi(argv[1]);
  double seconds = atof(argv[2]);
  const char* tag = argv[3];
  int expect_ok = atoi(argv[4]);
  signal(SIGPIPE, SIG_IGN); /* a server that closes shows as a failed write, with this tool's message */

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) die("connect 127.0.0.1");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  char line[256], buf[4096];
  size_t have = 0;
  unsigned long answered = 0;
  double start = now(), stop_at = start + seconds, t = start;
  while (t < stop_at) {
    int n = snprintf(line, sizeof line, "%s line %lu\n", tag, answered);
    if (write(fd, line, (size_t)n) != n) {
      fprintf(stderr, "%s: write failed after %lu replies\n", tag, answered);
      return 1;
    }
    char* nl;
    while (!(nl = memchr(buf, '\n', have))) {
      if (have == sizeof buf) {
        fprintf(stderr, "%s: a reply longer than %zu bytes\n", tag, sizeof buf);
        return 1;
      }
      ssize_t r = read(fd, buf + have, sizeof buf - have);
      if (r <= 0) {
        fprintf(stderr, "%s: connection closed after %lu replies\n", tag, answered);
        return 1;
      }
      have += (size_t)r;
    }
    if (expect_ok && strncmp(buf, "OK ", 3) != 0) {
      fprintf(stderr, "%s: reply %.*s\n", tag, (int)(nl - buf), buf);
      return 1;
    }
    have -= (size_t)(nl + 1 - buf);
    memmove(buf, nl + 1, have);
    answered++;
    t = now();
  }
  printf("%.1f\n", answered / (t - start));
  return 0;
}
