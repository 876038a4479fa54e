// npm run bench:apps — db-writer throughput against two baselines measured in the same run, on the
// same throwaway PostgreSQL, with the same INSERT:
//   writerLinesPerSec            CLIENTS TCP clients, each keeping WINDOW lines in flight, counting
//                                OK replies (each sent only after that line's commit)
//   writerOneAtATimeLinesPerSec  one client, one line in flight: each line its own commit (no batching)
//   rawInsertsPerSec             pgbench -M prepared, ONE connection, one INSERT per transaction
//   perLineConnectInsertsPerSec  pgbench -C: a new connection per INSERT (how the replaced writer
//                                worked), with as many concurrent clients as the writer run gets
// Rounds alternate (writer, raw, per-line-connect) and each figure is the median over the rounds,
// so a burst of load on this shared machine hits all three alike. Progress on stderr; the last
// stdout line is one JSON object.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
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

    const w: number[] = [], raw: number[] = [], conn: number[] = [], single: number[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      w.push(await writerRound(writer, r));
      log(`round ${r}/${ROUNDS}: writer ${w[w.length - 1].toFixed(0)} lines/s (${CLIENTS} clients, window ${WINDOW})`);
      single.push(await writerRound(writer, r, 1, 1));
      log(`round ${r}/${ROUNDS}: writer, 1 client, 1 line in flight: ${single[single.length - 1].toFixed(0)} lines/s`);
      raw.push(pgbench(pg, script, ["-M", "prepared", "-c", "1", "-j", "1"]));
      log(`round ${r}/${ROUNDS}: pgbench -M prepared, 1 connection: ${raw[raw.length - 1].toFixed(0)} inserts/s`);
      conn.push(pgbench(pg, script, ["-C", "-c", String(CLIENTS), "-j", "2"]));
      log(`round ${r}/${ROUNDS}: pgbench -C (connection per insert), ${CLIENTS} clients: ${conn[conn.length - 1].toFixed(0)} inserts/s`);
    }
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
      goals: { ratioVsRaw: 0.5, ratioVsPerLineConnect: 10 },
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
      samples: { writer: w.map(Math.round), writerOneAtATime: single.map(Math.round), raw: raw.map(Math.round), perLineConnect: conn.map(Math.round) },
    };
    log(`writer/raw ${result.ratioVsRaw} (goal >= 0.5), writer/per-line-connect ${result.ratioVsPerLineConnect} (goal >= 10)`);
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
