// npm run bench:apps — db-writer throughput against two baselines measured in the same run, on the
// same throwaway PostgreSQL, with the same INSERT:
//   writerLinesPerSec            CLIENTS TCP clients, each keeping WINDOW lines in flight, counting
//                                OK replies (each sent only after that line's commit)
//   writerOneAtATimeLinesPerSec  one client, one line in flight: each line its own commit (no batching),
//                                sent by a blocking send/wait loop in C (bench/one-at-a-time.c), as
//                                pgbench's client is C; writerOneAtATimeNodeClientLinesPerSec: the same
//                                with a Node client (oneAtATime below), whose own loop costs ~90 us a line
//   writerTwoOneAtATimeLinesPerSec  two such C clients at once (on two of the writer's workers), against
//                                rawTwoConnectionsInsertsPerSec (pgbench -c 2): a worker alone polls
//                                instead of sleeping, and this shows that two awake ones do not
//   echoOneAtATimeRoundTripsPerSec  the C loop against a trivial echo server in its own process:
//                                the client's own ceiling, so it is seen not to be the bottleneck
//   rawInsertsPerSec             pgbench -M prepared, ONE connection, one INSERT per transaction
//   perLineConnectInsertsPerSec  pgbench -C: a new connection per INSERT (how the replaced writer
//                                worked), with as many concurrent clients as the writer run gets
// Rounds alternate (writer, raw, per-line-connect) and each figure is the median over the rounds,
// so a burst of load on this shared machine hits all three alike. Progress on stderr; the last
// stdout line is one JSON object.
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { startPostgres, type PgCluster } from "../support/postgres";
import { LineClient, okId, startWriter, type Writer } from "../support/apps";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 256);

const log = (msg: string) => process.stderr.write(`bench:apps: ${msg}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function writerRound(writer: Writer, round: number, nClients = CLIENTS, window = WINDOW): Promise<number> {
  const clients = await Promise.all(Array.from({ length: nClients }, () => LineClient.connect(writer.port)));
  const stopAt = Date.now() + SECONDS * 1000;
  const start = process.hrtime.bigint();
  let bad = 0;
  await Promise.all(
    clients.map(async (client, c) => {
      let sent = 0;
      const chunk = Math.max(1, Math.floor(window / 4));
      while (Date.now() < stopAt) {
        if (client.closed) throw new Error(`db-writer closed benchmark connection ${c}:\n${writer.stderr().slice(-2000)}`);
        if (sent - client.replies.length < window) {
          await client.sendLines(Array.from({ length: chunk }, (_, i) => `bench r${round} c${c} line ${sent + i}`));
          sent += chunk;
        } else {
          await client.waitFor(client.replies.length + 1, 30_000);
        }
      }
      await client.waitFor(sent, 60_000); // drain: count only lines whose OK arrived
      if (client.replies.length < sent) throw new Error(`connection ${c}: ${client.replies.length} of ${sent} lines answered`);
      for (const r of client.replies) if (okId(r) === undefined) bad++;
    }),
  );
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const acked = clients.reduce((n, c) => n + c.replies.length, 0) - bad;
  clients.forEach((c) => c.close());
  if (bad > 0) throw new Error(`the writer refused ${bad} benchmark lines`);
  return acked / secs;
}

/**
 * The one-line-at-a-time loop in Node (for the record: the measured figure is the C client's). One
 * connection, one line in flight, for SECONDS. Lean for Node (LineClient's promise, write callback and
 * timer per line cost about 125 us a round trip), yet its event loop still costs 70-90 us a round
 * trip here (11,000-14,600/s against a trivial echo server), near pgbench's whole INSERT.
 */
function oneAtATime(port: number, tag: string, expectOk = true): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const stopAt = Date.now() + SECONDS * 1000;
    let start = 0n;
    let sent = 0, answered = 0, buf = "";
    const fail = (e: Error) => (socket.destroy(), reject(e));
    const send = () => socket.write(`${tag} line ${sent++}\n`);
    socket.setEncoding("latin1");
    socket.on("connect", () => {
      socket.setNoDelay(true);
      start = process.hrtime.bigint();
      send();
    });
    socket.on("data", (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const reply = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (expectOk && okId(reply) === undefined) return fail(new Error(`${tag}: reply ${JSON.stringify(reply)}`));
        answered++;
      }
      if (answered < sent) return;
      if (Date.now() < stopAt) return send();
      const secs = Number(process.hrtime.bigint() - start) / 1e9;
      socket.destroy();
      resolve(answered / secs);
    });
    socket.on("error", fail);
    socket.on("close", () => answered < sent && reject(new Error(`${tag}: connection closed after ${answered} replies`)));
  });
}

/** A trivial line server in its own process (as db-writer is): one "OK 1" per line, nothing else. */
async function startEcho(): Promise<{ port: number; stop(): void }> {
  const script = `const s = require("net").createServer((c) => { c.setNoDelay(true); c.on("data", (d) => { let n = 0; for (const b of d) if (b === 10) n++; if (n) c.write("OK 1\\n".repeat(n)); }); });
    s.listen(0, "127.0.0.1", () => process.stdout.write(s.address().port + "\\n"));`;
  const proc = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once("data", (d: Buffer) => resolve(Number(String(d).trim())));
    proc.once("exit", (code) => reject(new Error(`echo server exited ${code}`)));
  });
  return { port, stop: () => proc.kill() };
}

function pgbench(pg: PgCluster, script: string, args: string[]): number {
  const bin = path.join(pg.bin, "pgbench");
  if (!fs.existsSync(bin)) throw new Error(`pgbench not found at ${bin}: apt-get install postgresql-contrib (or postgresql)`);
  const out = execFileSync(bin, ["-n", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-f", script, "-T", String(SECONDS), ...args, "testdb"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  const m = /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`cannot read tps from pgbench output:\n${out}`);
  return Number(m[1]);
}

/** Builds bench/one-at-a-time.c into `dir` (gcc or cc, as apps/db-writer's build needs anyway). */
function buildOneAtATime(dir: string): string {
  const bin = path.join(dir, "one-at-a-time");
  execFileSync("cc", ["-O2", "-Wall", "-Werror", "-o", bin, path.join(__dirname, "one-at-a-time.c")], { stdio: ["ignore", "inherit", "inherit"] });
  return bin;
}

/**
 * `clients` C clients at once (default 1), each with one line in flight, for SECONDS: their lines answered
 * per second, together. A client exits non-zero on a reply that is not OK, unless `expectOk` is false.
 */
async function oneAtATimeC(bin: string, port: number, tag: string, o: { clients?: number; expectOk?: boolean } = {}): Promise<number> {
  const each = await Promise.all(
    Array.from({ length: o.clients ?? 1 }, (_, i) =>
      new Promise<number>((resolve, reject) => {
        const p = spawn(bin, [String(port), String(SECONDS), `${tag} c${i}`, o.expectOk === false ? "0" : "1"], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        p.stdout!.on("data", (d) => (out += d));
        p.on("error", reject);
        p.on("close", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`one-at-a-time client ${i} exited ${code}`))));
      }),
    ),
  );
  return each.reduce((a, b) => a + b, 0);
}

async function main() {
  log(`${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  log("starting PostgreSQL (throwaway cluster, fsync=off as in the tests)");
  const pg = await startPostgres();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ssc-bench-apps-"));
  let writer: Writer | undefined;
  try {
    writer = await startWriter(pg.url);
    log(`db-writer ready on port ${writer.port}`);
    // The same statement the writer prepares: parameterised text, RETURNING id.
    const script = path.join(tmp, "insert.sql");
    fs.writeFileSync(script, "\\set n random(1, 1000000000)\nINSERT INTO testcounter (content) VALUES ('pgbench line ' || :n) RETURNING id;\n");

    const echo = await startEcho();
    const client = buildOneAtATime(tmp);
    const w: number[] = [], raw: number[] = [], conn: number[] = [], single: number[] = [], singleNode: number[] = [], echoed: number[] = [];
    const two: number[] = [], rawTwo: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      w.push(await writerRound(writer, r));
      log(`round ${r}/${ROUNDS}: writer ${w[w.length - 1].toFixed(0)} lines/s (${CLIENTS} clients, window ${WINDOW})`);
      // The two clients take turns going first, so neither always follows the batched round.
      for (const lang of r % 2 ? ["C", "Node"] : ["Node", "C"]) {
        if (lang === "C") single.push(await oneAtATimeC(client, writer.port, `bench r${r} single`));
        else singleNode.push(await oneAtATime(writer.port, `bench r${r} single node`));
        const last = lang === "C" ? single[single.length - 1] : singleNode[singleNode.length - 1];
        log(`round ${r}/${ROUNDS}: writer, 1 client (${lang}), 1 line in flight: ${last.toFixed(0)} lines/s`);
      }
      two.push(await oneAtATimeC(client, writer.port, `bench r${r} two`, { clients: 2 }));
      log(`round ${r}/${ROUNDS}: writer, 2 clients (C), 1 line in flight each: ${two[two.length - 1].toFixed(0)} lines/s`);
      echoed.push(await oneAtATimeC(client, echo.port, "echo", { expectOk: false }));
      log(`round ${r}/${ROUNDS}: the C client against a trivial echo server: ${echoed[echoed.length - 1].toFixed(0)} round trips/s`);
      raw.push(pgbench(pg, script, ["-M", "prepared", "-c", "1", "-j", "1"]));
      log(`round ${r}/${ROUNDS}: pgbench -M prepared, 1 connection: ${raw[raw.length - 1].toFixed(0)} inserts/s`);
      rawTwo.push(pgbench(pg, script, ["-M", "prepared", "-c", "2", "-j", "2"]));
      log(`round ${r}/${ROUNDS}: pgbench -M prepared, 2 connections: ${rawTwo[rawTwo.length - 1].toFixed(0)} inserts/s`);
      conn.push(pgbench(pg, script, ["-C", "-c", String(CLIENTS), "-j", "2"]));
      log(`round ${r}/${ROUNDS}: pgbench -C (connection per insert), ${CLIENTS} clients: ${conn[conn.length - 1].toFixed(0)} inserts/s`);
    }
    echo.stop();
    const writerLinesPerSec = median(w);
    const rawInsertsPerSec = median(raw);
    const perLineConnectInsertsPerSec = median(conn);
    const rowCount = Number(pg.sql("SELECT count(*) FROM testcounter").trim());
    const result = {
      writerLinesPerSec: Math.round(writerLinesPerSec),
      rawInsertsPerSec: Math.round(rawInsertsPerSec),
      perLineConnectInsertsPerSec: Math.round(perLineConnectInsertsPerSec),
      ratioVsRaw: Number((writerLinesPerSec / rawInsertsPerSec).toFixed(2)),
      ratioVsPerLineConnect: Number((writerLinesPerSec / perLineConnectInsertsPerSec).toFixed(2)),
      // No pipelining and no batching possible: every line is its own commit, like rawInsertsPerSec.
      writerOneAtATimeLinesPerSec: Math.round(median(single)),
      oneAtATimeRatioVsRaw: Number((median(single) / rawInsertsPerSec).toFixed(2)),
      writerOneAtATimeNodeClientLinesPerSec: Math.round(median(singleNode)),
      writerTwoOneAtATimeLinesPerSec: Math.round(median(two)),
      rawTwoConnectionsInsertsPerSec: Math.round(median(rawTwo)),
      twoOneAtATimeRatioVsRaw: Number((median(two) / median(rawTwo)).toFixed(2)),
      // The one-at-a-time client's own ceiling (no database, no writer): far above both figures above.
      echoOneAtATimeRoundTripsPerSec: Math.round(median(echoed)),
      goals: { ratioVsRaw: 0.5, ratioVsPerLineConnect: 10, oneAtATimeRatioVsRaw: 0.6 },
      loadAverage: os.loadavg().map((l) => Number(l.toFixed(2))),
      setup: {
        rounds: ROUNDS,
        secondsPerMeasurement: SECONDS,
        writerClients: CLIENTS,
        writerWindow: WINDOW,
        writerPoolSize: 4,
        writerBatches: "group commit: one transaction per batch of queued lines, each line acked after its batch commits",
        perLineConnectClients: CLIENTS,
        postgres: "throwaway cluster from test/helpers/postgres.ts (fsync=off)",
        rowsInserted: rowCount,
      },
      samples: {
        writer: w.map(Math.round),
        writerOneAtATime: single.map(Math.round),
        writerOneAtATimeNodeClient: singleNode.map(Math.round),
        writerTwoOneAtATime: two.map(Math.round),
        rawTwoConnections: rawTwo.map(Math.round),
        echoOneAtATime: echoed.map(Math.round),
        raw: raw.map(Math.round),
        perLineConnect: conn.map(Math.round),
      },
    };
    log(
      `writer/raw ${result.ratioVsRaw} (goal >= 0.5), writer/per-line-connect ${result.ratioVsPerLineConnect} (goal >= 10), ` +
        `one at a time/raw ${result.oneAtATimeRatioVsRaw} (goal >= 0.6), two at a time/raw with 2 connections ${result.twoOneAtATimeRatioVsRaw}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`,
    );
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await writer?.stop();
    pg.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  log(`failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exit(1);
});
