// db-writer against a real PostgreSQL, through real TCP connections, with the real binary.
// Serial: each test has its own cluster and the heavy ones need the 2 cores to themselves.
import test, { type ExecutionContext } from "ava";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as path from "node:path";
import { startPostgres, type PgCluster } from "../../support/postgres";
import { startFaultyProxy } from "../helpers/tcp-proxy";
import { ensureWriterBuilt, LineClient, okId, sleep, startWriter, type Writer } from "../../support/apps";

interface Row {
  id: number;
  content: string;
}

/** Every row, read with psql as JSON (content may hold any character a line can). */
function rows(pg: PgCluster): Row[] {
  const out = execFileSync(
    path.join(pg.bin, "psql"),
    ["-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "testdb", "-c",
      "SELECT coalesce(json_agg(json_build_object('id', id, 'content', content) ORDER BY id), '[]') FROM testcounter"],
    { encoding: "utf8", maxBuffer: 512 << 20 },
  );
  return JSON.parse(out) as Row[];
}

/** True when the OK ids of one client's replies increase in the order its lines were sent. */
function idsIncrease(replies: string[]): boolean {
  const ids = replies.map(okId).filter((id): id is number => id !== undefined);
  return ids.every((id, i) => i === 0 || id > ids[i - 1]);
}

async function setup(t: ExecutionContext, opts?: Parameters<typeof startWriter>[1]): Promise<{ pg: PgCluster; writer: Writer }> {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  const writer = await startWriter(pg.url, opts);
  t.teardown(() => writer.stop()); // runs before pg.destroy (teardowns run in reverse)
  return { pg, writer };
}

test.before(() => {
  ensureWriterBuilt(); // once, before any test times out waiting for a compile
});

test.serial("each line becomes one row with exactly its content, and OK <id> names that row", async (t) => {
  const { pg, writer } = await setup(t);
  t.regex(pg.sql("SELECT to_regclass('testcounter')"), /testcounter/, "the writer created the table");
  const lines = ["hello", "ünïcødé ✓ 日本 𝄞", "  spaces kept  ", "", "tab\tinside", "pipe | and , comma", "trailing cr removed"];
  const c = await LineClient.connect(writer.port);
  // The last line ends in \r\n: the \r is stripped, a \r elsewhere is kept.
  await c.write(lines.slice(0, -1).map((l) => `${l}\n`).join("") + "trailing cr removed\r\n" + "mid\rcr\n");
  const replies = await c.waitFor(lines.length + 1);
  c.close();
  const ids = replies.map(okId);
  t.true(ids.every((id) => id !== undefined), JSON.stringify(replies));
  const stored = rows(pg);
  t.deepEqual(stored, [...lines, "mid\rcr"].map((content, i) => ({ id: ids[i]!, content })));
  t.deepEqual(pg.sql("SELECT count(*) FROM testcounter WHERE date > now() - interval '5 minutes'").trim(), String(lines.length + 1));
});

test.serial("connects over a Unix socket given as ?host=<dir> (how the NixOS service reaches PostgreSQL)", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  const writer = await startWriter(`postgresql:///testdb?host=${encodeURIComponent(pg.dir)}&port=${pg.port}&user=postgres`);
  t.teardown(() => writer.stop());
  const c = await LineClient.connect(writer.port);
  await c.sendLines(["via unix socket"]);
  const [reply] = await c.waitFor(1);
  c.close();
  t.is(pg.sql(`SELECT content FROM testcounter WHERE id = ${okId(reply) ?? -1}`).trim(), "via unix socket", reply);
});

test.serial("20 concurrent clients x 500 pipelined lines: exactly 10,000 rows, every acked id holds its line, in send order", async (t) => {
  const { pg, writer } = await setup(t);
  const clients = await Promise.all(Array.from({ length: 20 }, () => LineClient.connect(writer.port)));
  const sent = clients.map((_, c) => Array.from({ length: 500 }, (_, i) => `client ${c} line ${i}`));
  await Promise.all(clients.map(async (client, c) => {
    // In a few bursts, so lines of different clients interleave in the writer's batches.
    for (let k = 0; k < 500; k += 100) await client.sendLines(sent[c].slice(k, k + 100));
  }));
  const replies = await Promise.all(clients.map((client) => client.waitFor(500)));
  clients.forEach((client) => client.close());

  const byId = new Map(rows(pg).map((r) => [r.id, r.content]));
  t.is(byId.size, 10_000);
  const acked = new Set<number>();
  let wrong = 0;
  replies.forEach((rs, c) =>
    rs.forEach((reply, i) => {
      const id = okId(reply);
      if (id === undefined || byId.get(id) !== sent[c][i]) wrong++;
      else acked.add(id);
    }),
  );
  t.is(wrong, 0, "every reply is OK <id> of the row holding that very line");
  t.is(acked.size, 10_000, "ids are distinct");
  t.true(replies.every(idsIncrease), "each client's lines are stored in the order it sent them");
});

test.serial("one client pipelining 20,000 lines at once is throttled, never dropped", async (t) => {
  const { pg, writer } = await setup(t);
  const c = await LineClient.connect(writer.port);
  const lines = Array.from({ length: 20_000 }, (_, i) => `burst ${i}`);
  await c.sendLines(lines); // more than the writer keeps unanswered per client (8192): it pauses reading
  const replies = await c.waitFor(lines.length, 120_000);
  c.close();
  const byId = new Map(rows(pg).map((r) => [r.id, r.content]));
  t.is(byId.size, lines.length);
  t.true(replies.every((r, i) => byId.get(okId(r) ?? -1) === lines[i]), "replies come back in line order");
  t.true(idsIncrease(replies), "and are stored in that order");
  t.regex(writer.stderr(), /lines unanswered, pausing reads/, "the backpressure path was taken");
});

test.serial("a line PostgreSQL rejects gets ERR alone: the rest of its batch is committed and acked", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  // A table made to refuse one particular line (the writer only creates it when missing).
  pg.sql("CREATE TABLE testcounter (id SERIAL PRIMARY KEY, content TEXT NOT NULL CHECK (content <> 'refused'), date TIMESTAMP NOT NULL DEFAULT now())");
  const writer = await startWriter(pg.url);
  t.teardown(() => writer.stop());
  const c = await LineClient.connect(writer.port);
  // The last line of a write ends a batch, and a batch's last line also writes its commit token.
  const lines = Array.from({ length: 300 }, (_, i) => (i % 100 === 50 || i === 299 ? "refused" : `kept ${i}`));
  await c.sendLines(lines); // one write: these share batches with the refused ones
  const replies = await c.waitFor(lines.length);
  c.close();
  const byId = new Map(rows(pg).map((r) => [r.id, r.content]));
  lines.forEach((line, i) => {
    if (line === "refused") t.regex(replies[i], /^ERR database error: .*testcounter_content_check/);
    else t.is(byId.get(okId(replies[i]) ?? -1), line, replies[i]);
  });
  t.is(byId.size, 296);
});

for (const [fault, committed] of [["drop-replies", true], ["drop-requests", false]] as const) {
  test.serial(`connection cut with the batch's ${fault === "drop-replies" ? "replies lost after the server committed it" : "request lost before the server saw it"} (real proxy): stored exactly once, OK names that row`, async (t) => {
    const pg = await startPostgres();
    t.teardown(() => pg.destroy());
    const proxy = await startFaultyProxy(pg.port);
    t.teardown(() => proxy.close());
    const writer = await startWriter(`postgresql://postgres@127.0.0.1:${proxy.port}/testdb`, { args: ["--pool-size", "1"] });
    t.teardown(() => writer.stop());
    const c = await LineClient.connect(writer.port);
    await c.sendLines(["warm up"]);
    await c.waitFor(1);
    proxy.breakOpenConnections(fault, 700);
    await c.sendLines(["the line in flight"]);
    const [, reply] = await c.waitFor(2, 60_000);
    c.close();
    const stored = rows(pg).filter((r) => r.content === "the line in flight");
    t.is(stored.length, 1, `${reply}; rows: ${JSON.stringify(stored)}`);
    t.is(okId(reply), stored[0]?.id, reply);
    t.regex(writer.stderr(), /connection to PostgreSQL lost during a batch of 1 line/);
    if (committed) t.regex(writer.stderr(), /batch of 1 line\(s\) was committed before the connection broke/);
    else t.notRegex(writer.stderr(), /was committed before the connection broke/);
  });
}

// The last line of every batch also writes the batch's commit token, in the same statement. Refused,
// it must roll back alone, and must not leave a token behind that a later settlement would misread.
test.serial("the line that carries the commit token is refused: ERR for it alone, and a later cut connection is still settled exactly", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql("CREATE TABLE testcounter (id SERIAL PRIMARY KEY, content TEXT NOT NULL CHECK (content <> 'refused'), date TIMESTAMP NOT NULL DEFAULT now())");
  const proxy = await startFaultyProxy(pg.port);
  t.teardown(() => proxy.close());
  const writer = await startWriter(`postgresql://postgres@127.0.0.1:${proxy.port}/testdb`, { args: ["--pool-size", "1"] });
  t.teardown(() => writer.stop());
  const c = await LineClient.connect(writer.port);
  // One at a time: each line is a batch of one, so each carries its batch's token.
  for (const line of ["kept before", "refused", "kept after"]) {
    await c.sendLines([line]);
    await c.waitFor(c.replies.length + 1);
  }
  t.is(okId(c.replies[0]) !== undefined && okId(c.replies[2]) !== undefined, true, JSON.stringify(c.replies));
  t.regex(c.replies[1], /^ERR database error: .*testcounter_content_check/);
  const token = pg.sql("SELECT last_id FROM db_writer_commits").trim();
  t.is(token, String(okId(c.replies[2])), "the token names the last committed batch, not the refused one");
  proxy.breakOpenConnections("drop-replies", 700);
  await c.sendLines(["the line in flight"]);
  const [, , , reply] = await c.waitFor(4, 60_000);
  c.close();
  const stored = rows(pg).filter((r) => r.content === "the line in flight");
  t.is(stored.length, 1, `${reply}; rows: ${JSON.stringify(stored)}`);
  t.is(okId(reply), stored[0]?.id, reply);
  t.regex(writer.stderr(), /batch of 1 line\(s\) was committed before the connection broke/);
  t.is(rows(pg).filter((r) => r.content === "refused").length, 0);
});

// Until 2026-12 db_writer_commits was keyed by token (one DELETE and one INSERT per batch); such a
// table is rekeyed by lane at startup, its rows kept.
test.serial("a db_writer_commits table of the older shape (keyed by token) is rekeyed by lane and used", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql(`CREATE TABLE db_writer_commits (token TEXT PRIMARY KEY, lane TEXT NOT NULL, last_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now());
          INSERT INTO db_writer_commits VALUES ('old-1', 'old', 1, now()), ('gone-1', 'gone', 1, now() - interval '2 days')`);
  const writer = await startWriter(pg.url, { args: ["--pool-size", "1"] });
  t.teardown(() => writer.stop());
  const c = await LineClient.connect(writer.port);
  await c.sendLines(["after the rekey"]);
  const [reply] = await c.waitFor(1);
  c.close();
  t.not(okId(reply), undefined, reply);
  t.is(pg.sql("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = 'db_writer_commits'::regclass AND i.indisprimary").trim(), "lane");
  t.deepEqual(pg.sql("SELECT lane || ' ' || last_id FROM db_writer_commits ORDER BY lane").trim().split("\n").map((l) => l.replace(/^[0-9a-f]{16}-0 /, "<writer> ")), [`<writer> ${okId(reply)}`, "old 1"]);
});

test.serial("PostgreSQL restarted mid-stream: nothing acked is lost and the writer keeps serving", async (t) => {
  const { pg, writer } = await setup(t);
  const clients = await Promise.all(Array.from({ length: 4 }, () => LineClient.connect(writer.port)));
  const sent: string[][] = clients.map(() => []);
  const send = (c: number, n: number, tag: string) => {
    const lines = Array.from({ length: n }, (_, i) => `${tag} c${c} #${sent[c].length + i}`);
    sent[c].push(...lines);
    return clients[c].sendLines(lines);
  };
  // Far more than is committed before the restart lands, so batches are in flight when it does.
  await Promise.all(clients.map((_, c) => send(c, 10_000, "before")));
  await clients[0].waitFor(100);
  pg.restart(); // fast shutdown: the server ends every session, in the middle of the writer's batches
  const restartedAt = pg.sql("SELECT pg_postmaster_start_time()::timestamp").trim();
  await Promise.all(clients.map((_, c) => send(c, 200, "after-restart")));

  // A longer outage: lines sent while the server is down are committed once it is back.
  await Promise.all(clients.map((client, c) => client.waitFor(sent[c].length, 120_000)));
  pg.stop();
  await Promise.all(clients.map((_, c) => send(c, 50, "while-down")));
  await sleep(1500);
  pg.start();
  const replies = await Promise.all(clients.map((client, c) => client.waitFor(sent[c].length, 120_000)));
  clients.forEach((client) => client.close());

  const byId = new Map(rows(pg).map((r) => [r.id, r.content]));
  let acked = 0;
  const lost: string[] = [];
  const errs: string[] = [];
  replies.forEach((rs, c) =>
    rs.forEach((reply, i) => {
      const id = okId(reply);
      if (id === undefined) errs.push(reply);
      else if (byId.get(id) !== sent[c][i]) lost.push(`${reply} for ${sent[c][i]}: row holds ${JSON.stringify(byId.get(id))}`);
      else acked++;
    }),
  );
  t.deepEqual(lost, [], "every acked line is in its row");
  t.true(replies.every(idsIncrease), "retries keep each client's lines in order");
  t.true(errs.every((e) => e === "ERR database unavailable"), JSON.stringify(errs.slice(0, 5)));
  const total = sent.reduce((n, s) => n + s.length, 0);
  t.true(acked >= total * 0.9, `acked ${acked} of ${total}`);
  // Lines sent before the restart and committed by the restarted server: the restart really
  // happened while they were in flight.
  const acrossRestart = Number(
    pg.sql(`SELECT count(*) FROM testcounter WHERE content LIKE 'before %' AND date >= '${restartedAt}'`).trim(),
  );
  t.true(acrossRestart > 0, "some lines sent before the restart were committed by the restarted server");
  t.regex(writer.stderr(), /connection to PostgreSQL lost/, "the restart hit the writer mid-stream");
  t.regex(writer.stderr(), /reconnected to PostgreSQL/);

  // And afterwards, a fresh client is served as usual.
  const after = await LineClient.connect(writer.port);
  await after.sendLines(["after everything"]);
  const [reply] = await after.waitFor(1);
  after.close();
  const id = okId(reply);
  t.not(id, undefined, reply);
  t.is(pg.sql(`SELECT content FROM testcounter WHERE id = ${id}`).trim(), "after everything");
});

test.serial("a server that accepts connections but fails every batch is retried with backoff, not in a tight loop", async (t) => {
  const { pg, writer } = await setup(t);
  const c = await LineClient.connect(writer.port);
  await c.sendLines(["warm up"]);
  await c.waitFor(1);
  // A transient SQLSTATE (class 53, as a full disk gives) on every INSERT while the connection stays fine.
  pg.sql(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'simulated disk full' USING ERRCODE = 'disk_full'; END $$;
          CREATE TRIGGER refuse BEFORE INSERT ON testcounter FOR EACH ROW EXECUTE FUNCTION refuse()`);
  await c.sendLines(["during the outage"]);
  await sleep(2500);
  pg.sql("DROP TRIGGER refuse ON testcounter");
  const [, reply] = await c.waitFor(2, 30_000);
  c.close();
  // Logged as what it is: the connection stayed up, PostgreSQL failed the batch.
  const attempts = writer.stderr().match(/PostgreSQL failed a batch of 1 line\(s\): [^\n]*simulated disk full/g)?.length ?? 0;
  t.true(attempts >= 2 && attempts <= 15, `${attempts} attempts in 2.5 s`);
  t.is(pg.sql(`SELECT content FROM testcounter WHERE id = ${okId(reply) ?? -1}`).trim(), "during the outage", reply);
});

test.serial("a batch stuck behind a lock for longer than the 30 s retry timeout gets ERR, not silence", async (t) => {
  const { pg, writer } = await setup(t);
  const c = await LineClient.connect(writer.port);
  await c.sendLines(["before the lock"]);
  await c.waitFor(1);
  const locker = spawn(path.join(pg.bin, "psql"), ["-X", "-q", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "testdb",
    "-c", "BEGIN; LOCK TABLE testcounter IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT;"], { stdio: "ignore" });
  t.teardown(() => locker.kill("SIGKILL"));
  while (pg.sql("SELECT count(*) FROM pg_locks WHERE relation = 'testcounter'::regclass AND mode = 'AccessExclusiveLock' AND granted").trim() !== "1") await sleep(100);
  await c.sendLines(["behind the lock"]);
  const [, reply] = await c.waitFor(2, 90_000);
  t.is(reply, "ERR database unavailable");
  t.regex(writer.stderr(), /PostgreSQL failed a batch of 1 line\(s\): .*statement timeout/);
  t.notRegex(writer.stderr(), /connection to PostgreSQL lost/);
  pg.sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'testcounter'::regclass AND mode = 'AccessExclusiveLock'");
  await c.sendLines(["after the lock"]);
  const [, , after] = await c.waitFor(3, 30_000);
  c.close();
  t.is(pg.sql(`SELECT content FROM testcounter WHERE id = ${okId(after) ?? -1}`).trim(), "after the lock", after);
  t.is(pg.sql("SELECT count(*) FROM testcounter WHERE content = 'behind the lock'").trim(), "0");
});

test.serial("an over-long line gets ERR and is discarded up to its newline; the connection stays usable", async (t) => {
  const { pg, writer } = await setup(t, { args: ["--max-line-bytes", "1000"] });
  const c = await LineClient.connect(writer.port);
  const exact = "x".repeat(1000);
  await c.write(`${"a".repeat(1001)}\n${exact}\n${exact}\r\n`);
  // An over-long line arriving in pieces, with the next line in the same write as its end.
  await c.write("b".repeat(700));
  await sleep(100);
  await c.write("b".repeat(700));
  await sleep(100);
  await c.write("b".repeat(700) + "\nstill works\n");
  const replies = await c.waitFor(5);
  c.close();
  t.is(replies[0], "ERR line too long (max 1000 bytes)");
  t.not(okId(replies[1]), undefined);
  t.not(okId(replies[2]), undefined, "the \\r of \\r\\n does not count");
  t.is(replies[3], "ERR line too long (max 1000 bytes)");
  t.not(okId(replies[4]), undefined);
  t.deepEqual(rows(pg).map((r) => r.content), [exact, exact, "still works"]);
});

test.serial("the default maximum is 64 KiB, and MAX_LINE_BYTES sets it too", async (t) => {
  const { pg, writer } = await setup(t);
  const c = await LineClient.connect(writer.port);
  await c.write(`${"y".repeat(65536)}\n${"z".repeat(65537)}\nok\n`);
  const replies = await c.waitFor(3);
  c.close();
  t.not(okId(replies[0]), undefined, replies[0]);
  t.is(replies[1], "ERR line too long (max 65536 bytes)");
  t.not(okId(replies[2]), undefined);
  t.deepEqual(rows(pg).map((r) => r.content.length), [65536, 2]);

  const small = await startWriter(pg.url, { env: { MAX_LINE_BYTES: "10" } });
  t.teardown(() => small.stop());
  const d = await LineClient.connect(small.port);
  await d.sendLines(["0123456789", "0123456789a"]);
  const r2 = await d.waitFor(2);
  d.close();
  t.not(okId(r2[0]), undefined);
  t.is(r2[1], "ERR line too long (max 10 bytes)");
});

test.serial("invalid UTF-8 and NUL bytes get ERR; valid multi-byte text is stored byte for byte", async (t) => {
  const { pg, writer } = await setup(t);
  const c = await LineClient.connect(writer.port);
  const bad = [
    Buffer.from([0xff, 0xfe]), // never valid
    Buffer.from([0xc0, 0xaf]), // overlong '/'
    Buffer.from([0xed, 0xa0, 0x80]), // UTF-16 surrogate
    Buffer.from([0xf4, 0x90, 0x80, 0x80]), // above U+10FFFF
    Buffer.from([0x61, 0xe2, 0x82]), // truncated sequence
  ];
  const good = "€ ✓ 𝄞 é";
  await c.write(Buffer.concat([...bad.flatMap((b) => [b, Buffer.from("\n")]), Buffer.from("a\0b\n"), Buffer.from(`${good}\n`)]));
  const replies = await c.waitFor(7);
  c.close();
  t.deepEqual(replies.slice(0, 5), Array(5).fill("ERR invalid UTF-8"));
  t.regex(replies[5], /^ERR NUL byte not allowed/);
  const id = okId(replies[6]);
  t.not(id, undefined);
  t.deepEqual(rows(pg), [{ id: id!, content: good }]);
  t.is(pg.sql(`SELECT encode(convert_to(content, 'UTF8'), 'hex') FROM testcounter`).trim(), Buffer.from(good).toString("hex"));
});

test.serial("SQL metacharacters are stored verbatim and the table survives", async (t) => {
  const { pg, writer } = await setup(t);
  const lines = ["'); DROP TABLE testcounter;--", "Robert'); DELETE FROM testcounter; --", "$1 $$ %s \\ \\x00 ' \" ;", "E'\\n'"];
  const c = await LineClient.connect(writer.port);
  await c.sendLines(lines);
  const replies = await c.waitFor(lines.length);
  await c.sendLines(["after"]);
  await c.waitFor(lines.length + 1);
  c.close();
  t.true(replies.every((r) => okId(r) !== undefined), JSON.stringify(replies));
  t.deepEqual(rows(pg).map((r) => r.content), [...lines, "after"]);
});

test.serial("SIGTERM: stops accepting, answers every line already received after its commit, exits 0", async (t) => {
  const { pg, writer } = await setup(t);
  const clients = await Promise.all(Array.from({ length: 3 }, () => LineClient.connect(writer.port)));
  const sent = clients.map((_, c) => Array.from({ length: 3000 }, (_, i) => `term c${c} #${i}`));
  await Promise.all(clients.map((client, c) => client.sendLines(sent[c])));
  await clients[0].waitFor(1);
  writer.proc.kill("SIGTERM");
  await Promise.all(clients.map((client) => client.waitClosed()));
  t.is(await writer.exited, 0, writer.stderr());

  const byId = new Map(rows(pg).map((r) => [r.id, r.content]));
  let acked = 0;
  clients.forEach((client, c) =>
    client.replies.forEach((reply, i) => {
      t.is(byId.get(okId(reply) ?? -1), sent[c][i], reply);
      acked++;
    }),
  );
  t.true(acked > 0);
  t.is(byId.size, acked, "every line the writer took in was committed and answered before it exited");
  t.regex(writer.stderr(), /shutting down: stopped accepting/);
  // Stopped accepting: the port is closed now.
  await t.throwsAsync(LineClient.connect(writer.port));
});

test.serial("bad arguments: usage on stderr and exit 2", (t) => {
  const bin = ensureWriterBuilt();
  const env = { ...process.env, DATABASE_URL: "postgresql://postgres@127.0.0.1:1/testdb" };
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [[], env, /missing <port>/],
    [["not-a-port"], env, /port must be a number/],
    [["70000"], env, /port must be between 0 and 65535/],
    [["1300", "1301"], env, /unexpected argument "1301"/],
    [["--frobnicate", "1300"], env, /unknown option --frobnicate/],
    [["--max-line-bytes", "0", "1300"], env, /--max-line-bytes must be between 1/],
    [["1300"], { ...env, MAX_LINE_BYTES: "lots" }, /MAX_LINE_BYTES must be a number/],
    [["1300"], { ...env, DATABASE_URL: "" }, /DATABASE_URL is not set/],
    [["1300"], { ...env, DATABASE_URL: "postgresql://h/db?no_such_option=1" }, /DATABASE_URL is invalid/],
  ];
  for (const [args, e, why] of cases) {
    const r = spawnSync(bin, args, { env: e, encoding: "utf8", timeout: 10_000 });
    t.is(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    t.regex(r.stderr, why);
    t.regex(r.stderr, /usage: db-writer \[options\] <port>/);
  }
  const help = spawnSync(bin, ["--help"], { encoding: "utf8" });
  t.is(help.status, 0);
  t.regex(help.stdout, /usage: db-writer/);
});
