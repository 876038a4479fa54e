// `supply-chain <command>`: each command is one step module in pipeline/steps exporting `step`.
import * as fs from "node:fs";
import * as path from "node:path";
import { runStep, StepDefinition } from "./lib/step";

const STEPS_DIR = path.join(__dirname, "steps");

function available(): string[] {
  return fs
    .readdirSync(STEPS_DIR)
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))
    .map((f) => f.slice(0, -3))
    .sort();
}

function load(name: string): StepDefinition<unknown> {
  return require(path.join(STEPS_DIR, name)).step;
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === "--help" || command === "-h" || command === "help") {
    const lines = ["usage: supply-chain <command> [options]", "", "commands:"];
    for (const name of available()) lines.push(`  ${name.padEnd(12)} ${load(name).summary}`);
    lines.push("", "`supply-chain <command> --help` documents each command's options.");
    (command ? process.stdout : process.stderr).write(lines.join("\n") + "\n");
    process.exitCode = command ? 0 : 2;
    return;
  }
  if (!available().includes(command)) {
    process.stderr.write(`supply-chain: unknown command '${command}' (commands: ${available().join(", ")})\n`);
    process.exitCode = 2;
    return;
  }
  process.exitCode = await runStep(load(command), rest);
}
