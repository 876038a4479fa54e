// The contract every step shares: one JSON document on stdout, logs on stderr,
// exit 0 success, 1 a failed check (its verdict JSON on stdout), 2 bad input, a missing tool or a
// refusing file system (one line), 3 an internal error (a bug: stack trace, one line last).
import * as path from "node:path";
import { parseArgs, ParseArgsConfig } from "node:util";
import { DirLock, lockDir, stopWhenOrphaned } from "./lifetime";

export const EXIT_OK = 0;
export const EXIT_CHECK_FAILED = 1;
export const EXIT_BAD_INPUT = 2;
export const EXIT_INTERNAL = 3;

/** Bad input or a missing tool: exit 2. The message is the one-line reason. */
export class InputError extends Error {
  readonly exitCode = EXIT_BAD_INPUT;
}

/**
 * A check ran and said no: exit 1. `result` (the verdict) is printed on stdout so callers see it;
 * without one nothing is printed, and a caller must not take that exit 1 for a verdict.
 */
export class CheckFailed extends Error {
  readonly exitCode = EXIT_CHECK_FAILED;
  constructor(message: string, readonly result?: unknown) {
    super(message);
  }
}

export function log(step: string, message: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[${t} ${step}] ${message}\n`);
}

/** The step this process runs (set by runStep): for shared code that logs on its behalf (lib/progress.ts). */
let runningStep = "supply-chain";
export function logForStep(message: string): void {
  log(runningStep, message);
}

export interface OptionSpec {
  type: "string" | "boolean";
  description: string;
  required?: boolean;
  default?: string | boolean;
  multiple?: boolean;
}

export interface StepDefinition<R> {
  name: string;
  summary: string;
  /** Positional argument names shown in usage, e.g. ["dir"]. */
  positionals?: { name: string; description: string; required?: boolean }[];
  options: Record<string, OptionSpec>;
  /**
   * The directory the step writes, locked for the run (lifetime.ts: one run per directory, a killed
   * run's temp files removed, a directory the run created and left empty removed again).
   */
  workDir?(args: { values: Record<string, any>; positionals: string[] }): string | undefined;
  run(args: { values: Record<string, any>; positionals: string[] }): Promise<R>;
}

export function usage(def: StepDefinition<unknown>): string {
  const pos = (def.positionals ?? []).map((p) => (p.required === false ? `[${p.name}]` : `<${p.name}>`)).join(" ");
  const lines = [`usage: supply-chain ${def.name} ${pos}${pos ? " " : ""}[options]`, "", def.summary, ""];
  for (const p of def.positionals ?? []) lines.push(`  ${p.name.padEnd(26)} ${p.description}`);
  for (const [name, o] of Object.entries(def.options)) {
    const flag = `--${name}${o.type === "string" ? " <value>" : ""}`;
    const extra = [o.required ? "required" : "", o.default !== undefined ? `default ${o.default}` : "", o.multiple ? "repeatable" : ""]
      .filter(Boolean)
      .join(", ");
    lines.push(`  ${flag.padEnd(26)} ${o.description}${extra ? ` (${extra})` : ""}`);
  }
  lines.push(`  ${"--help".padEnd(26)} show this help`, "");
  lines.push("Prints one JSON document on stdout; progress on stderr.");
  lines.push("Exit status: 0 success, 1 a check failed (its verdict on stdout), 2 bad input or a missing tool, 3 internal error.");
  return lines.join("\n");
}

/**
 * `--top -3`: node's parser takes a value that starts with a dash for another option and answers
 * with its own message; joined as `--top=-3` the value reaches the step, whose check names it.
 */
export function joinDashValues(def: StepDefinition<unknown>, argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : undefined;
    const next = argv[i + 1];
    if (name && def.options[name]?.type === "string" && next !== undefined && next.startsWith("-") && !isOptionName(def, next)) {
      out.push(`${argv[i]}=${next}`);
      i++;
    } else out.push(argv[i]);
  }
  return out;
}

function isOptionName(def: StepDefinition<unknown>, arg: string): boolean {
  return arg === "--" || arg === "-h" || arg === "--help" || (arg.startsWith("--") && Object.hasOwn(def.options, arg.slice(2).split("=")[0]));
}

/**
 * A file system or OS refusal of a path or resource (ENAMETOOLONG, ENOSPC, EACCES, ...): the input
 * or the machine, not a bug. One line naming the call and the path; undefined for anything else.
 */
export function describeSystemError(e: unknown): string | undefined {
  const err = e as NodeJS.ErrnoException & { dest?: string };
  if (!(err instanceof Error) || typeof err.code !== "string" || !/^E[A-Z0-9]+$/.test(err.code) || typeof err.syscall !== "string") return undefined;
  const reason = err.message.replace(/^[A-Z0-9]+: /, "").split(",")[0];
  return `${reason} (${err.code}, ${err.syscall}${err.path ? ` ${err.path}` : ""}${err.dest ? ` -> ${err.dest}` : ""})`;
}

/** Parses argv against the definition, runs it, prints the result; returns the exit code. */
export async function runStep<R>(def: StepDefinition<R>, argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage(def as StepDefinition<unknown>) + "\n");
    return EXIT_OK;
  }
  let parsed: { values: Record<string, any>; positionals: string[] };
  try {
    const options: ParseArgsConfig["options"] = {};
    for (const [name, o] of Object.entries(def.options)) {
      options![name] = { type: o.type, multiple: o.multiple ?? false, ...(o.default !== undefined ? { default: o.default as any } : {}) };
    }
    parsed = parseArgs({ args: joinDashValues(def as StepDefinition<unknown>, argv), options, allowPositionals: true, strict: true }) as any;
    const wanted = def.positionals ?? [];
    const required = wanted.filter((p) => p.required !== false).length;
    if (parsed.positionals.length < required || parsed.positionals.length > wanted.length) {
      throw new InputError(`expected ${wanted.map((p) => p.name).join(" ") || "no positional arguments"}, got ${JSON.stringify(parsed.positionals)}`);
    }
    for (const [name, o] of Object.entries(def.options)) {
      if (o.required && parsed.values[name] === undefined) throw new InputError(`missing required option --${name}`);
    }
  } catch (e: any) {
    process.stderr.write(`supply-chain ${def.name}: ${e.message}\n${usage(def as StepDefinition<unknown>)}\n`);
    return EXIT_BAD_INPUT;
  }
  let lock: DirLock | undefined;
  let stopWatching = () => undefined as void;
  try {
    const dir = def.workDir?.(parsed);
    if (dir) lock = lockDir(path.resolve(dir), def.name);
    stopWatching = stopWhenOrphaned(def.name, () => lock?.release());
    runningStep = def.name;
    const result = await def.run(parsed);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    return EXIT_OK;
  } catch (e: any) {
    if (e instanceof CheckFailed) {
      if (e.result !== undefined) process.stdout.write(JSON.stringify(e.result, null, 2) + "\n");
      process.stderr.write(`supply-chain ${def.name}: ${e.message}\n`);
      return EXIT_CHECK_FAILED;
    }
    const systemError = describeSystemError(e);
    if (e instanceof InputError || systemError) {
      process.stderr.write(`supply-chain ${def.name}: ${systemError ?? e.message}\n`);
      return EXIT_BAD_INPUT;
    }
    // Anything else is a bug of ours, never a verdict: stack for the person, one line last.
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.stderr.write(`supply-chain ${def.name}: internal error: ${String(e?.message ?? e).split("\n")[0]}\n`);
    return EXIT_INTERNAL;
  } finally {
    stopWatching();
    lock?.release();
  }
}
