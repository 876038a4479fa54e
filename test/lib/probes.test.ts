// Probe specs and the probe runner against real local TCP/HTTP servers (no VM needed to show that a
// probe retries until a service appears, fails saying what it got, and gives up at the deadline).
import test from "ava";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { guestPorts, loadProbeSpec, Probe, ProbeContext, runProbe, validateProbeSpec } from "../../pipeline/lib/probes";
import { InputError } from "../../pipeline/lib/step";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "probes-test-"));
process.on("exit", () => fs.rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

const CONTRACT_EXAMPLE = `probes:
  - name: writer acknowledges a line
    tcp: { port: 1300, send: "hello {{token}}", expect: "OK" }
  - name: reader is healthy
    http: { port: 8000, path: /healthz, status: 200 }
  - name: end to end, newest first
    sequence:
      - tcp: { port: 1300, send: "e2e {{token}}", expect: "OK" }
      - http: { port: 8000, path: /, status: 200, firstLineContains: "e2e {{token}}" }
`;

test("the docs/contracts.md example parses from YAML and from JSON to the same spec", (t) => {
  const y = loadProbeSpec(file("c.yaml", CONTRACT_EXAMPLE));
  t.is(y.probes.length, 3);
  t.deepEqual(y.probes[1], { name: "reader is healthy", http: { port: 8000, path: "/healthz", status: 200 } });
  t.deepEqual(guestPorts(y), [1300, 8000]);
  const j = loadProbeSpec(file("c.json", JSON.stringify(require("yaml").parse(CONTRACT_EXAMPLE))));
  t.deepEqual(j, y);
});

test("http defaults: path / and status 200", (t) => {
  const s = validateProbeSpec({ probes: [{ name: "r", http: { port: 8000 } }] });
  t.deepEqual(s.probes[0], { name: "r", http: { port: 8000, path: "/", status: 200 } });
});

test("the NixOS stack's probe spec is valid and targets the module's ports", (t) => {
  const s = loadProbeSpec(path.join(__dirname, "..", "..", "stacks", "probes", "nixos.yaml"));
  t.deepEqual(guestPorts(s).sort(), [1300, 8000]);
  t.true(s.probes.some((p) => "sequence" in p));
});

const bad: [string, unknown, string][] = [
  ["not a mapping", [1, 2], "must be a mapping with a 'probes' list"],
  ["no probes", { probes: [] }, "'probes' must be a non-empty list"],
  ["unknown top-level field", { probes: [{ name: "a", tcp: { port: 1 } }], extra: 1 }, "unknown field 'extra' (allowed: probes)"],
  ["nameless probe", { probes: [{ tcp: { port: 1 } }] }, "probe 1: 'name' must be a non-empty string"],
  ["duplicate name", { probes: [{ name: "a", tcp: { port: 1 } }, { name: "a", tcp: { port: 2 } }] }, `probe 2 "a": 'name' is used by an earlier probe`],
  ["no kind", { probes: [{ name: "a" }] }, `probe 1 "a": needs exactly one of tcp, http, sequence (got none)`],
  ["two kinds", { probes: [{ name: "a", tcp: { port: 1 }, http: { port: 2 } }] }, `probe 1 "a": needs exactly one of tcp, http, sequence (got tcp, http)`],
  ["port out of range", { probes: [{ name: "a", tcp: { port: 70000 } }] }, `probe 1 "a": tcp.port must be an integer 1-65535 (got 70000)`],
  ["port as string", { probes: [{ name: "a", http: { port: "8000" } }] }, `probe 1 "a": http.port must be an integer 1-65535 (got "8000")`],
  ["typo in a field", { probes: [{ name: "a", tcp: { port: 1, expects: "OK" } }] }, `probe 1 "a": tcp: unknown field 'expects' (allowed: port, send, expect)`],
  ["status out of range", { probes: [{ name: "a", http: { port: 1, status: 42 } }] }, `probe 1 "a": http.status must be an HTTP status 100-599 (got 42)`],
  ["relative path", { probes: [{ name: "a", http: { port: 1, path: "healthz" } }] }, `probe 1 "a": http.path must be a string starting with / (got "healthz")`],
  ["send not a string", { probes: [{ name: "a", tcp: { port: 1, send: 5 } }] }, `probe 1 "a": tcp.send must be a string (got 5)`],
  ["empty sequence", { probes: [{ name: "a", sequence: [] }] }, `probe 1 "a": sequence must be a non-empty list of tcp/http steps`],
  ["expect a list, send one line", { probes: [{ name: "a", tcp: { port: 1, send: "x", expect: ["OK", "OK"] } }] }, `probe 1 "a": tcp.expect must be a list exactly when send is (one expected reply per line sent)`],
  ["fewer replies than lines", { probes: [{ name: "a", tcp: { port: 1, send: ["x", "y"], expect: ["OK"] } }] }, `probe 1 "a": tcp.expect lists 1 replies for 2 lines sent`],
  ["an empty line in a list", { probes: [{ name: "a", tcp: { port: 1, send: ["x", ""] } }] }, `probe 1 "a": tcp.send must be a non-empty string or a non-empty list of them`],
  ["a regex that does not compile", { probes: [{ name: "a", http: { port: 1, firstLineMatches: "(" } }] }, `probe 1 "a": http.firstLineMatches is not a regular expression: Invalid regular expression: /(/: Unterminated group`],
  [
    "bad step in a sequence",
    { probes: [{ name: "e2e", sequence: [{ tcp: { port: 1 } }, { http: { port: 2, firstLineContains: 7 } }] }] },
    `probe 1 "e2e": sequence[2].http.firstLineContains must be a string (got 7)`,
  ],
];
for (const [what, spec, message] of bad) {
  test(`invalid spec (${what}) is an InputError naming the probe and field`, (t) => {
    const e = t.throws(() => validateProbeSpec(spec, "p.yaml"), { instanceOf: InputError });
    t.is(e!.message, `probe file p.yaml: ${message}`);
  });
}

test("an unreadable or unparsable file is an InputError naming it", (t) => {
  const missing = path.join(dir, "missing.yaml");
  t.is(t.throws(() => loadProbeSpec(missing), { instanceOf: InputError })!.message, `probe file ${missing}: does not exist`);
  const badJson = file("bad.json", "{probes:");
  t.regex(t.throws(() => loadProbeSpec(badJson), { instanceOf: InputError })!.message, /^probe file .*bad\.json: not valid JSON: /);
});

// --- the runner, against real sockets -------------------------------------------------------

function listen(server: net.Server): Promise<number> {
  // A probe that has its answer hangs up at once, which can reset the server's side: that is the
  // probe's business, not an uncaught exception that ends every test of this file (seen in CI).
  server.on("connection", (s: net.Socket) => s.on("error", () => undefined));
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r((server.address() as net.AddressInfo).port)));
}

/** A writer like the demo's: each line is a row, reply `OK <n>`; a reader: rows newest first. */
async function services(t: { teardown(fn: () => void): void }, reply = (n: number) => `OK ${n}`) {
  const rows: string[] = [];
  const writer = net.createServer((s) => {
    let buf = "";
    s.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        rows.unshift(`2026-01-01 00:00:00: ${buf.slice(0, i)}`);
        buf = buf.slice(i + 1);
        s.write(reply(rows.length) + "\n");
      }
    });
  });
  const reader = http.createServer((req, res) => {
    if (req.url === "/healthz") res.end("ok\n");
    else if (req.url === "/") res.end(rows.map((r) => r + "\n").join(""));
    else {
      res.statusCode = 404;
      res.end("not found\n");
    }
  });
  const [w, r] = [await listen(writer), await listen(reader)];
  t.teardown(() => {
    writer.close();
    reader.close();
  });
  return { rows, portMap: new Map([[1300, w], [8000, r]]) };
}

function ctx(portMap: Map<number, number>, deadlineMs: number, signal = new AbortController().signal): ProbeContext {
  const now = performance.now();
  return { portMap, token: "tok123", startedAt: now, deadline: now + deadlineMs, signal, intervalMs: 50 };
}

const e2e: Probe = {
  name: "e2e",
  sequence: [
    { tcp: { port: 1300, send: "e2e {{token}}", expect: "OK" } },
    { http: { port: 8000, path: "/", status: 200, firstLineContains: "e2e {{token}}" } },
  ],
};

test("a sequence sends the token through the writer and finds it at the top of the reader", async (t) => {
  const { rows, portMap } = await services(t);
  const r = await runProbe(e2e, ctx(portMap, 5000));
  t.true(r.ok, r.detail);
  t.is(rows[0], "2026-01-01 00:00:00: e2e tok123");
  t.is(r.detail, `step 1: tcp 1300: got "OK 1"; step 2: http 8000 GET /: 200, first line "2026-01-01 00:00:00: e2e tok123"`);
});

test("a wrong reply fails at the deadline saying what it got", async (t) => {
  const { portMap } = await services(t, (n) => `ERR ${n}`);
  const r = await runProbe({ name: "w", tcp: { port: 1300, send: "x", expect: "OK" } }, ctx(portMap, 600));
  t.false(r.ok);
  t.regex(r.detail, /^tcp 1300: expected first reply line to contain "OK", got "ERR \d+" \(boot deadline reached after \d+ attempts\)$/);
  t.true(r.ms >= 600);
});

test("http: wrong status and missing text say what came back", async (t) => {
  const { portMap } = await services(t);
  const s = await runProbe({ name: "s", http: { port: 8000, path: "/nope", status: 200 } }, ctx(portMap, 200));
  t.regex(s.detail, /^http 8000 GET \/nope: expected status 200, got 404 with body "not found\\n"/);
  const c = await runProbe({ name: "c", http: { port: 8000, path: "/healthz", status: 200, contains: "healthy" } }, ctx(portMap, 200));
  t.regex(c.detail, /^http 8000 GET \/healthz: expected body to contain "healthy", got "ok\\n"/);
});

test("a probe retries until the service appears", async (t) => {
  // The port exists but nothing listens yet (like a guest still booting); the service comes later.
  const holder = net.createServer();
  const port = await listen(holder);
  await new Promise<void>((r) => holder.close(() => r()));
  const later = http.createServer((_req, res) => res.end("ok\n"));
  t.teardown(() => later.close());
  setTimeout(() => later.listen(port, "127.0.0.1"), 700);
  const r = await runProbe({ name: "h", http: { port: 8000, path: "/healthz", status: 200 } }, ctx(new Map([[8000, port]]), 10_000));
  t.true(r.ok, r.detail);
  t.true(r.ms >= 650, `passed after ${r.ms} ms, before the service existed`);
});

test("an accepted connection that never replies is not a pass", async (t) => {
  const silent = net.createServer(() => undefined);
  const port = await listen(silent);
  t.teardown(() => silent.close());
  const r = await runProbe({ name: "s", tcp: { port: 1300 } }, ctx(new Map([[1300, port]]), 700));
  t.false(r.ok);
  t.regex(r.detail, /^tcp 1300: no reply within \d+ ms/);
});

test("the guest going away stops the retries at once", async (t) => {
  const abort = new AbortController();
  setTimeout(() => abort.abort("QEMU exited (status 1)"), 300);
  const started = performance.now();
  const r = await runProbe({ name: "x", tcp: { port: 1300, send: "x" } }, ctx(new Map([[1300, 1]]), 60_000, abort.signal));
  t.false(r.ok);
  t.regex(r.detail, /\(QEMU exited \(status 1\) after \d+ attempts\)$/);
  t.true(performance.now() - started < 5000);
});

test("a wrong answer is still reported when later attempts only time out", async (t) => {
  // Answers wrongly once, then accepts connections and stays silent (a guest slowed to a crawl).
  let answered = 0;
  const flaky = net.createServer((s) => {
    if (answered++ === 0) s.end("ERR busy\n");
  });
  const port = await listen(flaky);
  t.teardown(() => flaky.close());
  const r = await runProbe({ name: "f", tcp: { port: 1300, send: "x", expect: "OK" } }, ctx(new Map([[1300, port]]), 1200));
  t.false(r.ok);
  t.regex(r.detail, /^tcp 1300: expected first reply line to contain "OK", got "ERR busy"; last attempt: tcp 1300: no reply within \d+ ms \(boot deadline/);
});

test("an attempt stuck in a held-open connection does not hold up the probe", async (t) => {
  // Like user-mode networking before the guest's network is up: the first connection is accepted
  // and then nothing happens. The service answers every later connection at once.
  let n = 0;
  const server = net.createServer((s) => {
    if (n++ === 0) return; // held open, silent
    s.on("data", () => s.write("OK 1\n"));
  });
  const port = await listen(server);
  t.teardown(() => server.close());
  const r = await runProbe({ name: "h", tcp: { port: 1300, send: "x", expect: "OK" } }, ctx(new Map([[1300, port]]), 20_000));
  t.true(r.ok, r.detail);
  t.true(r.ms < 3000, `passed only after ${r.ms} ms: it waited for the stuck attempt (5 s budget)`);
  t.true(n >= 2);
});

test("past the deadline a probe still gets exactly one attempt", async (t) => {
  const { portMap } = await services(t);
  const up = await runProbe({ name: "late", http: { port: 8000, path: "/healthz", status: 200 } }, ctx(portMap, -1000));
  t.true(up.ok, up.detail);
  const down = await runProbe({ name: "gone", tcp: { port: 1300 } }, ctx(new Map([[1300, 1]]), -1000));
  t.false(down.ok);
  t.regex(down.detail, /\(boot deadline reached after 1 attempt\)$/);
});

test("tcp lists: several lines on one connection, the i-th reply judged against the i-th expectation", async (t) => {
  const { rows, portMap } = await services(t, (n) => (n % 3 === 2 ? `ERR ${n}` : `OK ${n}`));
  const probe = (expect: string[]): Probe => ({ name: "l", tcp: { port: 1300, send: ["one {{token}}", "two", "three"], expect } });
  const ok = await runProbe(probe(["OK 1", "ERR", "OK 3"]), ctx(portMap, 2000));
  t.true(ok.ok, ok.detail);
  t.deepEqual(rows.slice(0, 3).map((r) => r.split(": ")[1]), ["three", "two", "one tok123"], "one connection, in order");
  const bad = await runProbe(probe(["OK", "OK", "OK"]), ctx(portMap, 300));
  t.false(bad.ok);
  t.regex(bad.detail, /^tcp 1300: expected reply line 2 to contain "OK", got "ERR \d+"/);
});

test("{{pad:N}} sends N characters: an over-long line arrives whole", async (t) => {
  const { rows, portMap } = await services(t);
  const r = await runProbe({ name: "p", tcp: { port: 1300, send: "{{pad:70000}}", expect: "OK" } }, ctx(portMap, 2000));
  t.true(r.ok, r.detail);
  t.is(rows[0], `2026-01-01 00:00:00: ${"x".repeat(70000)}`);
});

test("http firstLineMatches is anchored: the whole first line must match, a match inside it is a failure", async (t) => {
  const { portMap } = await services(t);
  const write = { tcp: { port: 1300, send: "m {{token}}", expect: "OK" } };
  const seq = (firstLineMatches: string): Probe => ({ name: "m", sequence: [write, { http: { port: 8000, path: "/", status: 200, firstLineMatches } }] });
  const ok = await runProbe(seq("\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}: m {{token}}"), ctx(portMap, 2000));
  t.true(ok.ok, ok.detail);
  const inside = await runProbe(seq("m {{token}}"), ctx(portMap, 300));
  t.false(inside.ok);
  t.regex(inside.detail, /expected first line to match \/m tok123\/, got "2026-01-01 00:00:00: m tok123"/);
});
