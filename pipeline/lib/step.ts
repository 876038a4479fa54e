// The contract every step shares: one JSON document on stdout, logs on stderr,
// exit 0 success, 1 a failed check (verdict, probe), 2 bad input or a missing tool.
import { parseArgs, ParseArgsConfig } from "node:util";

export const EXIT_OK = 0;
export const EXIT_CHECK_FAILED = 1;
export const EXIT_BAD_INPUT = 2;

/** Bad input or a missing tool: exit 2. The message is the one-line reason. */
export class InputError extends Error {
  readonly exitCode = EXIT_BAD_INPUT;
}

/** A check ran and said no: exit 1. `result` is still printed on stdout so callers see the verdict. */
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
  lines.push("Exit status: 0 success, 1 a check failed, 2 bad input or a missing tool.");
  return lines.join("\n");
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
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as any;
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
  try {
    const result = await def.run(parsed);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    return EXIT_OK;
  } catch (e: any) {
    if (e instanceof CheckFailed) {
      if (e.result !== undefined) process.stdout.write(JSON.stringify(e.result, null, 2) + "\n");
      process.stderr.write(`supply-chain ${def.name}: ${e.message}\n`);
      return EXIT_CHECK_FAILED;
    }
    if (e instanceof InputError) {
      process.stderr.write(`supply-chain ${def.name}: ${e.message}\n`);
      return EXIT_BAD_INPUT;
    }
    // Anything else (a build that broke, a crash) fails the step: stack for the person, one line last.
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.stderr.write(`supply-chain ${def.name}: ${String(e?.message ?? e).split("\n")[0]}\n`);
    return EXIT_CHECK_FAILED;
  }
}
