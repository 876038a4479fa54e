// End to end with both real services: lines over TCP to db-writer -> rows in PostgreSQL ->
// GET / of db_reader, newest first, in the exact `YYYY-mm-dd HH:MM:SS: content` format.
import test from "ava";
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { startPostgres } from "../../support/postgres";
import { get, repoRoot, startReader, startService } from "./reader-helpers";

const writerBinary = path.join(repoRoot, "apps", "db-writer", "build", "db-writer");

/** The writer is built by scripts/build-apps.sh; when it is missing, build it the same way (its CMake
 * build is flock-serialised, so this waits for a build already in progress instead of racing it). */
function ensureWriter(): string {
  if (!fs.existsSync(writerBinary)) {
    const r = spawnSync("bash", [path.join(repoRoot, "scripts", "build-apps.sh")], { cwd: repoRoot, encoding: "utf8" });
    if (!fs.existsSync(writerBinary)) {
      throw new Error(`${writerBinary} is missing, and scripts/build-apps.sh (exit ${r.status}) did not build it:\n${(r.stderr ?? "").slice(-3000)}`);
    }
  }
  return writerBinary;
}

/** A real TCP client: sends each line, returns the writer's reply line for each, in order. */
function sendLines(port: number, lines: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const replies: string[] = [];
    let buffer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`writer answered ${replies.length} of ${lines.length} lines within 30 s: ${JSON.stringify(replies)}`));
    }, 30_000);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(lines.map((l) => `${l}\n`).join("")));
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        replies.push(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
      if (replies.length >= lines.length) {
        clearTimeout(timer);
        socket.end();
        resolve(replies);
      }
    });
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

function ackedId(reply: string): number {
  const m = /^OK (\d+)$/.exec(reply);
  if (!m) throw new Error(`writer reply is not "OK <id>": ${JSON.stringify(reply)}`);
  return Number(m[1]);
}

test("lines sent to db-writer over TCP come back from db_reader's GET / newest first in the exact format", async (t) => {
  const writerBin = ensureWriter();
  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  const writer = await startService(writerBin, { DATABASE_URL: pg.url }, "db-writer");
  t.teardown(() => writer.stop());
  const reader = await startReader(pg.url);
  t.teardown(() => reader.stop());

  const token = crypto.randomBytes(6).toString("hex");
  const first = [`e2e ${token} one`, `'); DROP TABLE testcounter;-- ${token}`, `ünïcødé ✓ ${token}`];
  const second = [`e2e ${token} from a second client`, `  e2e ${token} last, with spaces  `];
  const ids = [...(await sendLines(writer.port, first)).map(ackedId), ...(await sendLines(writer.port, second)).map(ackedId)];
  const sent = [...first, ...second];
  t.is(new Set(ids).size, sent.length, "one distinct id per line");
  t.deepEqual([...ids].sort((a, b) => a - b), ids, "ids increase in send order");

  // Acked means committed: the reader sees every row at once, no polling.
  const res = await get(`${reader.base}/`);
  t.is(res.status, 200);
  t.is(res.contentType, "text/plain; charset=utf-8");

  // PostgreSQL's own formatting of each stored date is the oracle for the reader's text.
  const stored = new Map(
    pg
      .sql("SELECT id, to_char(date, 'YYYY-MM-DD HH24:MI:SS') FROM testcounter")
      .trim()
      .split("\n")
      .map((l) => l.split("|"))
      .map(([id, date]) => [Number(id), date] as const),
  );
  const expected = ids
    .map((id, i) => `${stored.get(id)}: ${sent[i]}`)
    .reverse()
    .join("\n");
  t.is(res.body, `${expected}\n`);
  for (const line of res.body.trimEnd().split("\n")) {
    t.regex(line, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: /);
    t.true(line.includes(token), line);
  }

  const json = JSON.parse((await get(`${reader.base}/messages`)).body) as { messages: Array<{ id: number; content: string }> };
  t.deepEqual(
    json.messages.map((m) => [m.id, m.content]),
    ids.map((id, i) => [id, sent[i]]).reverse(),
  );
});
