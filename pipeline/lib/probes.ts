// Probe specs (docs/boot-test.md, docs/contracts.md): what boot-test asks of a booted image, validated
// up front so a typo is an exit-2 error naming the probe and field, not a 5-minute timeout.
import * as fs from "node:fs";
import * as net from "node:net";
import * as http from "node:http";
import * as crypto from "node:crypto";
import { InputError } from "./step";

export interface TcpCheck {
  port: number;
  /** A line, or several sent one after another on the same connection. */
  send?: string | string[];
  /** Substring of the first reply line; with a list, of the i-th reply line (one per line sent). */
  expect?: string | string[];
}
export interface HttpCheck {
  port: number;
  path: string;
  status: number;
  contains?: string;
  firstLineContains?: string;
  /** A regular expression the whole first line must match (anchored). */
  firstLineMatches?: string;
}
export type Check = { tcp: TcpCheck } | { http: HttpCheck };
export type Probe = { name: string } & (Check | { sequence: Check[] });
export interface ProbeSpec {
  probes: Probe[];
}

export interface ProbeResult {
  name: string;
  ok: boolean;
  /** Milliseconds from QEMU's start to this probe's verdict (first pass, or giving up). */
  ms: number;
  detail: string;
}

/** Reads and validates a probe spec; JSON by extension `.json`, YAML otherwise (YAML is a superset). */
export function loadProbeSpec(file: string): ProbeSpec {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e: any) {
    throw new InputError(`probe file ${file}: ${e.code === "ENOENT" ? "does not exist" : e.message}`);
  }
  let doc: unknown;
  try {
    // yaml is only loaded when needed: it is a measurable part of the step's start-up.
    doc = file.endsWith(".json") ? JSON.parse(text) : require("yaml").parse(text);
  } catch (e: any) {
    throw new InputError(`probe file ${file}: not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${String(e.message).split("\n")[0]}`);
  }
  return validateProbeSpec(doc, file);
}

export function validateProbeSpec(doc: unknown, file = "probe spec"): ProbeSpec {
  const fail = (where: string, msg: string): never => {
    throw new InputError(`probe file ${file}: ${where}${msg}`);
  };
  if (!isObject(doc)) fail("", "must be a mapping with a 'probes' list");
  const top = doc as Record<string, unknown>;
  unknownKeys(top, ["probes"], "", fail);
  if (!Array.isArray(top.probes) || top.probes.length === 0) fail("", "'probes' must be a non-empty list");
  const names = new Set<string>();
  const probes = (top.probes as unknown[]).map((raw, i): Probe => {
    const label = isObject(raw) && typeof raw.name === "string" && raw.name ? `probe ${i + 1} "${raw.name}"` : `probe ${i + 1}`;
    const at = (field: string) => `${label}: ${field}`;
    if (!isObject(raw)) return fail(`${label}: `, "must be a mapping with 'name' and one of tcp, http, sequence");
    if (typeof raw.name !== "string" || raw.name.trim() === "") fail(`${label}: `, "'name' must be a non-empty string");
    const name = raw.name as string;
    if (names.has(name)) fail(`${label}: `, "'name' is used by an earlier probe");
    names.add(name);
    unknownKeys(raw, ["name", "tcp", "http", "sequence"], `${label}: `, fail);
    const kinds = ["tcp", "http", "sequence"].filter((k) => raw[k] !== undefined);
    if (kinds.length !== 1) fail(`${label}: `, `needs exactly one of tcp, http, sequence (got ${kinds.join(", ") || "none"})`);
    if (kinds[0] === "sequence") {
      if (!Array.isArray(raw.sequence) || raw.sequence.length === 0) fail(at("sequence"), " must be a non-empty list of tcp/http steps");
      const steps = (raw.sequence as unknown[]).map((s, j) => {
        const where = `sequence[${j + 1}]`;
        if (!isObject(s)) return fail(at(where), " must be a mapping with tcp or http");
        unknownKeys(s, ["tcp", "http"], `${at(where)}: `, fail);
        const k = ["tcp", "http"].filter((x) => s[x] !== undefined);
        if (k.length !== 1) fail(at(where), ` needs exactly one of tcp, http (got ${k.join(", ") || "none"})`);
        return validateCheck(k[0] as "tcp" | "http", s[k[0]], `${at(where)}.${k[0]}`, fail);
      });
      return { name, sequence: steps };
    }
    return { name, ...validateCheck(kinds[0] as "tcp" | "http", raw[kinds[0]], at(kinds[0]), fail) };
  });
  return { probes };
}

type Fail = (where: string, msg: string) => never;

function validateCheck(kind: "tcp" | "http", raw: unknown, where: string, fail: Fail): Check {
  if (!isObject(raw)) return fail(where, " must be a mapping");
  const port = raw.port;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    fail(`${where}.port`, ` must be an integer 1-65535 (got ${JSON.stringify(port)})`);
  }
  const optString = (field: string) => {
    const v = raw[field];
    if (v !== undefined && typeof v !== "string") fail(`${where}.${field}`, ` must be a string (got ${JSON.stringify(v)})`);
    if (v === "") fail(`${where}.${field}`, " must not be empty");
    return v as string | undefined;
  };
  if (kind === "tcp") {
    unknownKeys(raw, ["port", "send", "expect"], `${where}: `, fail);
    const check: TcpCheck = { port: port as number };
    const lines = (field: "send" | "expect") => {
      const v = raw[field];
      if (!Array.isArray(v)) return optString(field);
      if (v.length === 0 || v.some((x) => typeof x !== "string" || x === "")) fail(`${where}.${field}`, " must be a non-empty string or a non-empty list of them");
      return v as string[];
    };
    const send = lines("send");
    const expect = lines("expect");
    if (Array.isArray(send) !== Array.isArray(expect) && expect !== undefined)
      fail(`${where}.expect`, " must be a list exactly when send is (one expected reply per line sent)");
    if (Array.isArray(send) && Array.isArray(expect) && send.length !== expect.length)
      fail(`${where}.expect`, ` lists ${expect.length} replies for ${send.length} lines sent`);
    if (send !== undefined) check.send = send;
    if (expect !== undefined) check.expect = expect;
    return { tcp: check };
  }
  unknownKeys(raw, ["port", "path", "status", "contains", "firstLineContains", "firstLineMatches"], `${where}: `, fail);
  const p = raw.path ?? "/";
  if (typeof p !== "string" || !p.startsWith("/")) fail(`${where}.path`, ` must be a string starting with / (got ${JSON.stringify(raw.path)})`);
  const status = raw.status ?? 200;
  if (typeof status !== "number" || !Number.isInteger(status) || status < 100 || status > 599) {
    fail(`${where}.status`, ` must be an HTTP status 100-599 (got ${JSON.stringify(raw.status)})`);
  }
  const check: HttpCheck = { port: port as number, path: p as string, status: status as number };
  const contains = optString("contains");
  const firstLineContains = optString("firstLineContains");
  const firstLineMatches = optString("firstLineMatches");
  if (contains !== undefined) check.contains = contains;
  if (firstLineContains !== undefined) check.firstLineContains = firstLineContains;
  if (firstLineMatches !== undefined) {
    try {
      new RegExp(firstLineMatches);
    } catch (e: any) {
      fail(`${where}.firstLineMatches`, ` is not a regular expression: ${e.message}`);
    }
    check.firstLineMatches = firstLineMatches;
  }
  return { http: check };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function unknownKeys(obj: Record<string, unknown>, allowed: string[], where: string, fail: Fail): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) fail(where, `unknown field '${k}' (allowed: ${allowed.join(", ")})`);
  }
}

/** Every guest port the spec talks to, each once, in first-use order. */
export function guestPorts(spec: ProbeSpec): number[] {
  const ports: number[] = [];
  for (const p of spec.probes) {
    for (const c of "sequence" in p ? p.sequence : [p as Check]) {
      const port = "tcp" in c ? c.tcp.port : c.http.port;
      if (!ports.includes(port)) ports.push(port);
    }
  }
  return ports;
}

export function newToken(): string {
  return `sc${crypto.randomBytes(6).toString("hex")}`;
}

// ---------------------------------------------------------------------------------------------
// Running probes

export interface ProbeContext {
  /** Guest port -> host port on 127.0.0.1. */
  portMap: Map<number, number>;
  token: string;
  /** performance.now() value when QEMU started; results' ms count from here. */
  startedAt: number;
  /** performance.now() value after which no new attempt starts. */
  deadline: number;
  /** Aborted when the guest is gone (QEMU exited): stop retrying. */
  signal: AbortSignal;
  /** Pause between attempts of one probe. */
  intervalMs?: number;
}

/** The outcome of one attempt: ok, or what was wrong; `answered`: the service replied (wrongly). */
interface Attempt {
  ok: boolean;
  detail: string;
  answered?: boolean;
}

const ATTEMPT_TIMEOUT_MS = 5000;
/**
 * A new attempt starts this long after one that has not come back yet, with at most MAX_INFLIGHT
 * in flight. Before the guest's network is up, user-mode networking accepts our connection and
 * retries its SYN into the guest with exponential backoff, so an old attempt gets through seconds
 * after the service is up; a fresh one gets through at once.
 */
const STAGGER_MS = 500;
const WRONG_ANSWER_RETRY_MS = 1000;
const MAX_INFLIGHT = 10;

/** What one probe's attempts have come to so far. */
interface Tally {
  attempts: number;
  passed?: Attempt;
  last: string;
  /** A wrong answer says more than a later timeout (a guest slowed to a crawl): keep both. */
  lastAnswer?: string;
}

/** An attempt that came back: which one, its outcome, when. */
interface Returned {
  id: number;
  outcome: Attempt;
  at: number;
}

/**
 * Runs one probe, retrying until it passes, the deadline passes, or the guest is gone. One loop:
 * start an attempt when one is due, otherwise wait for the first of: an attempt coming back, the
 * next start being due, the guest going away.
 */
export async function runProbe(probe: Probe, ctx: ProbeContext): Promise<ProbeResult> {
  const interval = ctx.intervalMs ?? 150;
  const tally: Tally = { attempts: 0, last: "no attempt made" };
  const inflight = new Map<number, Promise<Returned>>();
  const cancel = new AbortController(); // ends the attempts still in flight when the probe is decided
  let nextStart = 0;
  try {
    while (!ctx.signal.aborted) {
      const now = performance.now();
      // Past the deadline a probe still gets its first attempt, and what is in flight may still pass.
      const open = tally.attempts === 0 || now < ctx.deadline;
      if (!open && inflight.size === 0) break;
      const mayStart = open && inflight.size < MAX_INFLIGHT;
      if (mayStart && now >= nextStart) {
        const id = ++tally.attempts;
        const budget = Math.round(Math.max(500, Math.min(ATTEMPT_TIMEOUT_MS, ctx.deadline - now)));
        inflight.set(id, attempt(probe, ctx, budget, cancel.signal).then((outcome) => ({ id, outcome, at: performance.now() })));
        // Don't wait on an attempt that has not come back: start another a little later.
        nextStart = now + STAGGER_MS;
        continue;
      }
      const back = await firstOf([...inflight.values()], mayStart ? nextStart - now : ATTEMPT_TIMEOUT_MS, ctx.signal);
      if (!back) continue; // the next start is due, or the guest is gone
      inflight.delete(back.id);
      if (back.outcome.ok) {
        tally.passed = back.outcome;
        break;
      }
      tally.last = back.outcome.detail;
      if (back.outcome.answered) tally.lastAnswer = back.outcome.detail;
      // Refused or reset (service not up yet): retry soon. A wrong answer: the service is up and
      // said no; ask again, but without flooding it for the rest of the deadline.
      nextStart = Math.min(nextStart, back.at + (back.outcome.answered ? Math.max(interval, WRONG_ANSWER_RETRY_MS) : interval));
    }
  } finally {
    cancel.abort();
  }
  return verdict(probe, ctx, tally);
}

/** The first of `pending` to come back; undefined after `ms`, or once `signal` aborts. */
async function firstOf<T>(pending: Promise<T>[], ms: number, signal: AbortSignal): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: () => void = () => undefined;
  const stop = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, Math.max(0, ms), undefined);
    onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort);
  });
  try {
    return await Promise.race([...pending, stop]);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  }
}

function verdict(probe: Probe, ctx: ProbeContext, tally: Tally): ProbeResult {
  const ms = Math.round(performance.now() - ctx.startedAt);
  if (tally.passed) return { name: probe.name, ok: true, ms, detail: tally.passed.detail };
  const { attempts, last, lastAnswer } = tally;
  const why = ctx.signal.aborted ? String(ctx.signal.reason ?? "guest gone") : "boot deadline reached";
  return {
    name: probe.name,
    ok: false,
    ms,
    detail: `${lastAnswer && lastAnswer !== last ? `${lastAnswer}; last attempt: ${last}` : last} (${why} after ${attempts} attempt${attempts === 1 ? "" : "s"})`,
  };
}

async function attempt(probe: Probe, ctx: ProbeContext, budgetMs: number, cancel: AbortSignal): Promise<Attempt> {
  const steps = "sequence" in probe ? probe.sequence : [probe as Check];
  const details: string[] = [];
  for (const [i, step] of steps.entries()) {
    if (cancel.aborted) return { ok: false, detail: "cancelled" };
    const a = "tcp" in step ? await tcpAttempt(step.tcp, ctx, budgetMs, cancel) : await httpAttempt(step.http, ctx, budgetMs, cancel);
    const prefix = steps.length > 1 ? `step ${i + 1}: ` : "";
    if (!a.ok) return { ok: false, detail: prefix + a.detail, answered: a.answered };
    details.push(prefix + a.detail);
  }
  return { ok: true, detail: details.join("; ") };
}

/** `{{token}}` becomes the run's token; `{{pad:N}}` N "x" characters (an over-long line, say). */
function subst(s: string, token: string): string {
  return s.split("{{token}}").join(token).replace(/\{\{pad:(\d{1,7})\}\}/g, (_, n) => "x".repeat(Number(n)));
}

function hostPort(ctx: ProbeContext, guest: number): number {
  const p = ctx.portMap.get(guest);
  if (p === undefined) throw new Error(`guest port ${guest} is not forwarded`);
  return p;
}

/** Shows what came back, one line, bounded: failures must say what they got. */
export function quote(s: string, max = 160): string {
  const one = JSON.stringify(s.length > max ? s.slice(0, max) + "…" : s);
  return one;
}

/**
 * An attempt settles exactly once: on its own verdict, when its budget runs out, or when the probe is
 * cancelled; its connection is torn down then, whichever came first.
 */
function settleOnce(resolve: (a: Attempt) => void, cancel: AbortSignal, budgetMs: number, teardown: () => void, onTimeout: () => Attempt): (a: Attempt) => void {
  let done = false;
  const finish = (a: Attempt) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    cancel.removeEventListener("abort", onCancel);
    teardown();
    resolve(a);
  };
  const onCancel = () => finish({ ok: false, detail: "cancelled" });
  const timer = setTimeout(() => finish(onTimeout()), budgetMs);
  cancel.addEventListener("abort", onCancel);
  return finish;
}

function tcpAttempt(check: TcpCheck, ctx: ProbeContext, budgetMs: number, cancel: AbortSignal): Promise<Attempt> {
  const port = hostPort(ctx, check.port);
  const sends = check.send === undefined ? [] : [check.send].flat().map((l) => subst(l, ctx.token));
  const expects = check.expect === undefined ? [] : [check.expect].flat().map((l) => subst(l, ctx.token));
  const replies = Math.max(1, sends.length);
  return new Promise((resolve) => {
    let buf = "";
    const got: string[] = [];
    const sock = net.connect({ host: "127.0.0.1", port });
    const finish = settleOnce(resolve, cancel, budgetMs, () => sock.destroy(), () => ({
      ok: false,
      detail: `tcp ${check.port}: no ${buf || got.length ? `reply line ${got.length + 1}` : "reply"} within ${budgetMs} ms${buf ? `, got ${quote(buf)}` : ""}`,
    }));
    const which = (i: number) => (replies > 1 ? `reply line ${i + 1}` : "first reply line");
    // Each reply line is judged as it arrives; the attempt passes with the last expected one.
    const judge = (line: string) => {
      const i = got.push(line) - 1;
      const want = expects[i];
      if (want !== undefined && !line.includes(want))
        return finish({ ok: false, answered: true, detail: `tcp ${check.port}: expected ${which(i)} to contain ${quote(want)}, got ${quote(line)}` });
      if (got.length >= replies) finish({ ok: true, detail: `tcp ${check.port}: got ${got.map((l) => quote(l)).join(", ")}` });
    };
    sock.setEncoding("utf8");
    // A reply is always required: with user-mode networking the host side accepts every
    // connection whether or not anything listens in the guest.
    sock.on("connect", () => {
      for (const line of sends) sock.write(line + "\n");
    });
    sock.on("data", (d: string) => {
      buf += d;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        judge(line);
      }
    });
    sock.on("end", () => {
      if (buf) judge(buf.replace(/\r$/, ""));
      else if (got.length === 0) finish({ ok: false, detail: `tcp ${check.port}: connection closed without a reply (service not up?)` });
      if (got.length < replies) finish({ ok: false, answered: got.length > 0, detail: `tcp ${check.port}: connection closed after ${got.length} of ${replies} reply lines` });
    });
    sock.on("error", (e: NodeJS.ErrnoException) => finish({ ok: false, detail: `tcp ${check.port}: ${e.code ?? e.message}` }));
  });
}

function httpAttempt(check: HttpCheck, ctx: ProbeContext, budgetMs: number, cancel: AbortSignal): Promise<Attempt> {
  const port = hostPort(ctx, check.port);
  const p = subst(check.path, ctx.token);
  const label = `http ${check.port} GET ${p}`;
  return new Promise((resolve) => {
    const finish = settleOnce(resolve, cancel, budgetMs, () => req.destroy(), () => ({ ok: false, detail: `${label}: no response within ${budgetMs} ms` }));
    const req = http.get({ host: "127.0.0.1", port, path: p, agent: false, headers: { connection: "close" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (e: NodeJS.ErrnoException) => finish({ ok: false, detail: `${label}: ${e.code ?? e.message}` }));
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const first = body.split("\n")[0].replace(/\r$/, "");
        if (res.statusCode !== check.status) {
          return finish({ ok: false, answered: true, detail: `${label}: expected status ${check.status}, got ${res.statusCode} with body ${quote(body)}` });
        }
        if (check.contains !== undefined) {
          const want = subst(check.contains, ctx.token);
          if (!body.includes(want)) return finish({ ok: false, answered: true, detail: `${label}: expected body to contain ${quote(want)}, got ${quote(body)}` });
        }
        if (check.firstLineContains !== undefined) {
          const want = subst(check.firstLineContains, ctx.token);
          if (!first.includes(want)) return finish({ ok: false, answered: true, detail: `${label}: expected first line to contain ${quote(want)}, got ${quote(first)}` });
        }
        if (check.firstLineMatches !== undefined) {
          const want = subst(check.firstLineMatches, ctx.token);
          if (!new RegExp(`^(?:${want})$`).test(first)) return finish({ ok: false, answered: true, detail: `${label}: expected first line to match /${want}/, got ${quote(first)}` });
        }
        finish({ ok: true, detail: `${label}: ${res.statusCode}, first line ${quote(first)}` });
      });
    });
    req.on("error", (e: NodeJS.ErrnoException) => finish({ ok: false, detail: `${label}: ${e.code ?? e.message}` }));
  });
}
