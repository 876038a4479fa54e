// Runs one `supply-chain <step>` as a @pulumi/command local.Command and parses its JSON.
// The command string holds only relative paths and the step's options, so a second `pulumi up`
// with the same inputs sees no change and runs nothing; `triggers` carry the content addresses
// (drv path, closure digest, image digest) whose change replaces the resource, i.e. re-runs the step.
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";

/** The repository root: where bin/supply-chain.js lives and where steps run. */
export const REPO_ROOT = path.resolve(__dirname, "..", "..");

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_\/.,:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The shell command for a step. `allowCheckFailure` (policy warn): a real verdict — exit 1 WITH the
 * verdict's JSON on stdout — does not fail the resource; exit 1 with nothing printed, exit 2 (bad
 * input, missing tool) and exit 3 (internal error) still do, so the resource is never recorded as
 * created with no verdict and the next `pulumi up` runs the step again.
 */
export function stepShell(step: string, args: string[], allowCheckFailure = false): string {
  const cmd = ["node", "bin/supply-chain.js", step, ...args].map(shellQuote).join(" ");
  return allowCheckFailure ? tolerateVerdict(cmd) : cmd;
}

/** `cmd` succeeds, or exits 1 having printed a JSON object (a verdict): its stdout is passed on. */
export function tolerateVerdict(cmd: string): string {
  return `out=$(${cmd}); rc=$?; printf '%s\\n' "$out"; [ $rc -eq 0 ] || { [ $rc -eq 1 ] && [ "\${out#\\{}" != "$out" ]; }`;
}

export interface StepCommandArgs {
  step: string;
  args: pulumi.Input<pulumi.Input<string>[]>;
  triggers: pulumi.Input<unknown[]>;
  allowCheckFailure?: boolean;
}

export function stepCommand(name: string, a: StepCommandArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  const create = pulumi.output(a.args).apply((args) => stepShell(a.step, args as string[], a.allowCheckFailure));
  return new command.local.Command(
    name,
    {
      create,
      dir: REPO_ROOT,
      triggers: a.triggers as pulumi.Input<any[]>,
      logging: "stderr",
    },
    opts,
  );
}

/** The step's stdout is exactly one JSON document (the step contract). */
export function parseStepJson<T>(step: string, stdout: pulumi.Output<string>): pulumi.Output<T> {
  return stdout.apply((s) => {
    try {
      return JSON.parse(s) as T;
    } catch (e) {
      throw new Error(`supply-chain ${step} did not print one JSON document on stdout (${(e as Error).message}): ${s.slice(0, 200)}`);
    }
  });
}
