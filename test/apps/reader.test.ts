// db_reader against a real PostgreSQL: the text format, ordering, limits, and the JSON API.
import test from "ava";
import { startPostgres, type PgCluster } from "../../support/postgres";
import { CREATE_TABLE, get, lit, startReader, type Service } from "./reader-helpers";

async function withReader(t: { teardown(fn: () => unknown): void }, seed: string[]): Promise<{ pg: PgCluster; reader: Service }> {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  for (const q of seed) pg.sql(q);
  const reader = await startReader(pg.url);
  // Registered after pg.destroy, so runs before it (ava runs teardowns in reverse).
  t.teardown(() => reader.stop());
  return { pg, reader };
}

const LINE = /^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}): (.*)$/;

test("GET / lists rows newest first (by id), one exact `YYYY-mm-dd HH:MM:SS: content` line each", async (t) => {
  const rows: Array<[string, string | null]> = [
    ["first", "2026-11-21 23:30:05.999999"], // truncated like Python's str(date)[:19], never rounded up
    ["colons: inside: content", "2024-02-29 00:00:00"],
    ["'); DROP TABLE testcounter;--", "1999-12-31 23:59:59.5"],
    ["ünïcødé ✓ 日本", "2026-01-02 03:04:05.000001"],
    ["  spaces kept  ", "2026-06-30 12:00:00"],
    ["oldest date, newest id but one", "1970-01-01 00:00:00"],
    ["default date", null],
  ];
  const seed = [CREATE_TABLE, ...rows.map(([c, d]) => (d ? `INSERT INTO testcounter(content, date) VALUES (${lit(c)}, ${lit(d)})` : `INSERT INTO testcounter(content) VALUES (${lit(c)})`))];
  const { pg, reader } = await withReader(t, seed);

  // The DEFAULT now() row's text, as PostgreSQL itself formats it: an oracle independent of the reader.
  const nowText = pg.sql("SELECT to_char(date, 'YYYY-MM-DD HH24:MI:SS') FROM testcounter WHERE content = 'default date'").trim();
  const expected =
    [
      `${nowText}: default date`,
      "1970-01-01 00:00:00: oldest date, newest id but one",
      "2026-06-30 12:00:00:   spaces kept  ",
      "2026-01-02 03:04:05: ünïcødé ✓ 日本",
      "1999-12-31 23:59:59: '); DROP TABLE testcounter;--",
      "2024-02-29 00:00:00: colons: inside: content",
      "2026-11-21 23:30:05: first",
    ].join("\n") + "\n";

  const res = await get(`${reader.base}/`);
  t.is(res.status, 200);
  t.is(res.contentType, "text/plain; charset=utf-8");
  t.is(res.body, expected);
  t.regex(nowText, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
});

test("the reader's own TIMESTAMP decoding agrees with PostgreSQL's to_char on 2000 random dates from year 1 to 9999", async (t) => {
  const { pg, reader } = await withReader(t, [
    CREATE_TABLE,
    // Random microsecond instants, plus the edges where truncation and leap rules bite.
    `INSERT INTO testcounter(content, date)
       SELECT 'r' || g, timestamp '0001-01-01 00:00:00' + random() * (timestamp '9999-12-31 23:59:59.999999' - timestamp '0001-01-01')
       FROM generate_series(1, 2000) g`,
    `INSERT INTO testcounter(content, date) VALUES
       ('edge1', '1999-12-31 23:59:59.999999'), ('edge2', '2000-01-01 00:00:00'), ('edge3', '1900-02-28 23:59:59.999999'),
       ('edge4', '2000-02-29 12:00:00'), ('edge5', '0001-01-01 00:00:00'), ('edge6', '9999-12-31 23:59:59.999999')`,
  ]);
  const oracle = pg.sql("SELECT to_char(date, 'YYYY-MM-DD HH24:MI:SS') || ': ' || content FROM testcounter ORDER BY id DESC").trim();
  const res = await get(`${reader.base}/?limit=10000`);
  t.is(res.body.trimEnd(), oracle);
  t.is(res.body.split("\n").length, 2006 + 1);
});

test("GET / is capped at 1000 rows by default; ?limit=N takes 1..10000, anything else is a 400", async (t) => {
  const { reader } = await withReader(t, [CREATE_TABLE, "INSERT INTO testcounter(content) SELECT 'row ' || g FROM generate_series(1, 1205) g ORDER BY g"]);
  const contents = (body: string) =>
    body
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => {
        const m = LINE.exec(l);
        if (!m) throw new Error(`line not in the format: ${JSON.stringify(l)}`);
        return m[2];
      });

  const all = contents((await get(`${reader.base}/`)).body);
  t.is(all.length, 1000);
  t.is(all[0], "row 1205");
  t.is(all[999], "row 206");

  t.deepEqual(contents((await get(`${reader.base}/?limit=3`)).body), ["row 1205", "row 1204", "row 1203"]);
  t.is(contents((await get(`${reader.base}/?limit=10000`)).body).length, 1205);
  t.is(contents((await get(`${reader.base}/?limit=1`)).body).length, 1);

  for (const bad of ["0", "10001", "-1", "abc", "", "2.5"]) {
    const res = await get(`${reader.base}/?limit=${encodeURIComponent(bad)}`);
    t.is(res.status, 400, `limit=${bad}`);
    t.regex(res.body, /limit must be an integer from 1 to 10000/);
  }
});

interface Page {
  messages: Array<{ id: number; content: string; date: string }>;
  next_before: number | null;
}

test("GET /messages returns JSON newest first with keyset pagination by id", async (t) => {
  const { pg, reader } = await withReader(t, [
    CREATE_TABLE,
    "INSERT INTO testcounter(content, date) SELECT 'msg ' || g, timestamp '2026-11-21 10:00:00.123456' + g * interval '1 minute 0.5 second' FROM generate_series(1, 25) g ORDER BY g",
  ]);
  // PostgreSQL's own rendering of every row, to check ids, contents and dates against.
  const oracle = pg
    .sql(`SELECT id, content, to_char(date, 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM testcounter ORDER BY id DESC`)
    .trim()
    .split("\n")
    .map((l) => {
      const [id, content, date] = l.split("|");
      return { id: Number(id), content, date };
    });
  t.is(oracle.length, 25);

  const first = await get(`${reader.base}/messages`);
  t.is(first.status, 200);
  t.regex(first.contentType, /^application\/json/);
  const whole = JSON.parse(first.body) as Page;
  t.deepEqual(whole, { messages: oracle, next_before: null }, "default limit (100) returns all 25 and no next page");

  // Pages of 10: 10, 10, 5. Following next_before visits every row once, in order.
  const seen: Page["messages"] = [];
  const cursors: Array<number | null> = [];
  let url = `${reader.base}/messages?limit=10`;
  for (let i = 0; i < 10; i++) {
    const page = JSON.parse((await get(url)).body) as Page;
    seen.push(...page.messages);
    cursors.push(page.next_before);
    if (page.next_before === null) break;
    t.is(page.next_before, page.messages[page.messages.length - 1].id);
    url = `${reader.base}/messages?limit=10&before=${page.next_before}`;
  }
  t.deepEqual(seen, oracle);
  t.deepEqual(cursors, [oracle[9].id, oracle[19].id, null]);

  // An exact multiple: the last full page says there is no more (no empty page to fetch).
  const fives: Array<number | null> = [];
  let before: number | null = null;
  do {
    const page = JSON.parse((await get(`${reader.base}/messages?limit=5${before ? `&before=${before}` : ""}`)).body) as Page;
    t.is(page.messages.length, 5);
    before = page.next_before;
    fives.push(before);
  } while (before !== null && fives.length < 10);
  t.is(fives.length, 5);

  const tail = JSON.parse((await get(`${reader.base}/messages?before=${oracle[22].id}`)).body) as Page;
  t.deepEqual(tail, { messages: oracle.slice(23), next_before: null });
  t.deepEqual(JSON.parse((await get(`${reader.base}/messages?before=1`)).body), { messages: [], next_before: null });

  for (const bad of ["limit=0", "limit=10001", "limit=x", "before=0", "before=-5", "before=abc", "before="]) {
    const res = await get(`${reader.base}/messages?${bad}`);
    t.is(res.status, 400, bad);
    t.regex(res.body, /^bad request: (limit|before) must be/);
  }
});

test("a missing testcounter table reads as empty, and the database still counts as healthy", async (t) => {
  const { pg, reader } = await withReader(t, []);
  const text = await get(`${reader.base}/`);
  t.is(text.status, 200);
  t.is(text.body, "");
  t.deepEqual(JSON.parse((await get(`${reader.base}/messages`)).body), { messages: [], next_before: null });
  t.is((await get(`${reader.base}/healthz`)).status, 200);

  // Once the writer creates the table, rows appear without restarting the reader.
  pg.sql(CREATE_TABLE);
  pg.sql("INSERT INTO testcounter(content, date) VALUES ('late table', '2026-11-21 23:59:59')");
  t.is((await get(`${reader.base}/`)).body, "2026-11-21 23:59:59: late table\n");
});

test("connects over a Unix socket given as ?host=<dir> (how a NixOS service reaches its local PostgreSQL)", async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql(CREATE_TABLE);
  pg.sql("INSERT INTO testcounter(content, date) VALUES ('via socket', '2026-11-21 01:02:03')");
  // The cluster's socket directory is pg.dir (-k); no TCP address in this URL at all.
  const reader = await startReader(`postgresql://postgres@/testdb?host=${encodeURIComponent(pg.dir)}&port=${pg.port}`);
  t.teardown(() => reader.stop());
  t.is((await get(`${reader.base}/`)).body, "2026-11-21 01:02:03: via socket\n");
  const viaSocket = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'db_reader' AND client_port = -1").trim();
  t.not(viaSocket, "0", "the reader's pooled connection is a Unix-socket one");
});

test("a schema the reader cannot read gives a 500 with a short message, not a crash", async (t) => {
  // content nullable and NULL: decoding must fail cleanly (try_get), the process must survive.
  const { reader } = await withReader(t, [
    "CREATE TABLE testcounter(id SERIAL PRIMARY KEY, content TEXT, date TIMESTAMP NOT NULL DEFAULT now())",
    "INSERT INTO testcounter(content) VALUES (NULL)",
  ]);
  const res = await get(`${reader.base}/`);
  t.is(res.status, 500);
  t.is(res.body, "database query failed\n");
  t.true(reader.running());
  t.is((await get(`${reader.base}/healthz`)).status, 200);
  t.regex(reader.stderr(), /query failed: unexpected testcounter row/);
});
