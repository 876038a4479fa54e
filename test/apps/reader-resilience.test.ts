// db_reader when things go wrong: the database stops and comes back, bad arguments, SIGTERM.
import test from "ava";
import { spawn, spawnSync } from "node:child_process";
import * as path from "node:path";
import { startPostgres } from "../../support/postgres";
import { buildReader, CREATE_TABLE, get, sleep, startReader, waitForStatus } from "./reader-helpers";

test("database stopped: /healthz, / and /messages answer 503 fast without crashing; all recover when it is back", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql(CREATE_TABLE);
  pg.sql("INSERT INTO testcounter(content, date) VALUES ('survives', '2026-11-21 23:30:05')");
  const reader = await startReader(pg.url);
  t.teardown(() => reader.stop());

  // Fill the pool with several connections, which all go stale when the server stops.
  const before = await Promise.all(Array.from({ length: 6 }, () => get(`${reader.base}/`)));
  t.true(before.every((r) => r.status === 200 && r.body === "2026-11-21 23:30:05: survives\n"));
  t.is((await get(`${reader.base}/healthz`)).status, 200);

  pg.stop();
  for (const p of ["/healthz", "/", "/messages", "/", "/healthz"]) {
    const started = Date.now();
    const res = await get(`${reader.base}${p}`);
    const ms = Date.now() - started;
    t.is(res.status, 503, `${p} while the database is down`);
    t.is(res.body, "database unavailable\n");
    // Generous bound: it must fail fast (2 s connect timeout), not hang until a client gives up.
    t.true(ms < 9_000, `${p} took ${ms} ms`);
  }
  t.true(reader.running(), "the reader is still running");
  t.regex(reader.stderr(), /database unavailable: /);

  pg.start();
  await waitForStatus(`${reader.base}/healthz`, 200, 30_000);
  const after = await get(`${reader.base}/`);
  t.is(after.status, 200);
  t.is(after.body, "2026-11-21 23:30:05: survives\n");
  t.is((await get(`${reader.base}/messages`)).status, 200);
  t.true(reader.running());
});

test("a reader started before its database answers 503, then serves once the database is up", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql(CREATE_TABLE);
  pg.sql("INSERT INTO testcounter(content, date) VALUES ('came up later', '2026-01-01 00:00:00')");
  pg.stop();
  const reader = await startReader(pg.url);
  t.teardown(() => reader.stop());

  t.is((await get(`${reader.base}/healthz`)).status, 503);
  t.is((await get(`${reader.base}/`)).status, 503);
  pg.start();
  await waitForStatus(`${reader.base}/healthz`, 200, 30_000);
  t.is((await get(`${reader.base}/`)).body, "2026-01-01 00:00:00: came up later\n");
});

test("bad arguments or environment: usage on stderr and exit 2", async (t) => {
  const binary = buildReader();
  const env = { ...process.env, DATABASE_URL: "postgresql://postgres@127.0.0.1:1/testdb" };
  const noUrl: NodeJS.ProcessEnv = { ...process.env };
  delete noUrl.DATABASE_URL;
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [[], env, /missing <port>/],
    [["0"], env, /invalid port "0"/],
    [["65536"], env, /invalid port "65536"/],
    [["http"], env, /invalid port "http"/],
    [["8000", "8001"], env, /exactly one argument/],
    [["8000"], noUrl, /DATABASE_URL is not set/],
    [["8000"], { ...env, DATABASE_URL: "postgresql://[broken" }, /invalid DATABASE_URL/],
  ];
  for (const [args, e, reason] of cases) {
    const r = spawnSync(binary, args, { env: e, encoding: "utf8", timeout: 10_000 });
    t.is(r.status, 2, `args ${JSON.stringify(args)}: ${r.stderr}`);
    t.regex(r.stderr, reason);
    t.regex(r.stderr, /usage: db_reader <port>/);
  }
  const help = spawnSync(binary, ["--help"], { encoding: "utf8" });
  t.is(help.status, 0);
  t.regex(help.stdout, /GET \/messages/);
});

test("SIGTERM: an in-flight request still completes, then the reader exits 0", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql(CREATE_TABLE);
  pg.sql("INSERT INTO testcounter(content, date) VALUES ('in flight', '2026-11-21 12:00:00')");
  const reader = await startReader(pg.url);
  t.teardown(() => reader.stop());

  // Hold an exclusive lock, in a psql session the test controls, so the reader's SELECT blocks
  // inside PostgreSQL until the test commits.
  const locker = spawn(path.join(pg.bin, "psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "testdb"], {
    stdio: ["pipe", "ignore", "inherit"],
  });
  const lockerDone = new Promise((r) => locker.once("exit", r));
  t.teardown(() => {
    locker.kill();
    return lockerDone;
  });
  locker.stdin!.write("BEGIN; LOCK TABLE testcounter IN ACCESS EXCLUSIVE MODE;\n");
  const until = async (query: string, what: string) => {
    for (let i = 0; i < 600; i++) {
      if (pg.sql(query).trim() !== "0") return;
      await sleep(50);
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  await until(
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'testcounter' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    "the test's table lock",
  );
  const pending = get(`${reader.base}/`);
  await until("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'db_reader' AND wait_event_type = 'Lock'", "the reader to wait on the lock");

  reader.proc.kill("SIGTERM");
  await sleep(1_000);
  t.true(reader.running(), "still running while a request is in flight");
  locker.stdin!.end("COMMIT;\n");
  const res = await pending;
  t.is(res.status, 200);
  t.is(res.body, "2026-11-21 12:00:00: in flight\n");
  const exit = await reader.exited;
  t.deepEqual(exit, { code: 0, signal: null });
  t.regex(reader.stderr(), /SIGTERM: finishing in-flight requests/);
  t.regex(reader.stderr(), /stopped/);
});
