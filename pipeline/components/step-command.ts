// Runs one `supply-chain <step>` as a @pulumi/command local.Command and parses its JSON.
// The command string holds only relative paths and the step's options, so a second `pulumi up`
// with the same inputs sees no change and runs nothing; `triggers` carry the content addresses
// (drv path, closure digest, image digest) whose change replaces the resource, i.e. re-runs the step,
// and the rebuild's run id (Rebuild.runId: what reads a rebuild's result re-runs with every new run).
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";

/**
 * The project directory: where the Pulumi program and its steps run and relative paths resolve (the
 * engine sets it as the program's working directory, and the command provider runs each command
 * there, the official provider as the stand-in). The program reads files by it (digests), but no
 * resource input names it: a command has no `dir` and only relative paths, since an absolute one ties
 * the state to the checkout's location: from a moved checkout or a CI workspace with another path
 * every such command would change and run again.
 */
export const PROJECT_DIR = process.cwd();

/**
 * This package's root (where bin/supply-chain.js lives): the repository, or node_modules/secure-supply-chain
 * in a user's project; found upwards from here, so the same holds for the compiled library in dist/.
 */
export const PACKAGE_ROOT = ((): string => {
  for (let d = __dirname; ; d = path.dirname(d)) {
    const manifest = path.join(d, "package.json");
    if (fs.existsSync(manifest) && JSON.parse(fs.readFileSync(manifest, "utf8")).name === "secure-supply-chain") return d;
    if (path.dirname(d) === d) throw new Error(`no package.json of secure-supply-chain above ${__dirname}`);
  }
})();

/** The step CLI as commands name it: relative to the project (`bin/supply-chain.js` in this repository). */
export const STEP_CLI = path.relative(PROJECT_DIR, path.join(PACKAGE_ROOT, "bin", "supply-chain.js"));

/** Where builds may run: Nix remote builders and the local max-jobs (config keys builders, maxJobs), as
 * the build, rebuild and audit steps take them. Where a build runs does not change its output: no trigger. */
export interface BuildPlacement {
  builders?: string;
  maxJobs?: number;
}

export function placementArgs(p: BuildPlacement): string[] {
  return [...(p.builders ? ["--builders", p.builders] : []), ...(p.maxJobs !== undefined ? ["--max-jobs", String(p.maxJobs)] : [])];
}

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
  const cmd = ["node", STEP_CLI, step, ...args].map(shellQuote).join(" ");
  return allowCheckFailure ? tolerateVerdict(cmd) : cmd;
}

/** `cmd` succeeds, or exits 1 having printed a JSON object (a verdict): its stdout is passed on. */
export function tolerateVerdict(cmd: string): string {
  return `out=$(${cmd}); rc=$?; printf '%s\\n' "$out"; [ $rc -eq 0 ] || { [ $rc -eq 1 ] && [ "\${out#\\{}" != "$out" ]; }`;
}

/**
 * The target a step evaluates (`--file`, `--attribute`) and its .drv path, known at preview
 * (nix-instantiate through the `local.run` invoke): the trigger of every step that is a function of it.
 */
export interface TargetArgs {
  file: pulumi.Input<string>;
  attribute: pulumi.Input<string>;
  drvPath: pulumi.Input<string>;
}

export interface StepCommandArgs {
  step: string;
  args: pulumi.Input<pulumi.Input<string>[]>;
  triggers: pulumi.Input<unknown[]>;
  allowCheckFailure?: boolean;
  /**
   * Files written (path → content) just before the step runs: the JSON other steps printed, for a
   * step that reads them as files (attest). Part of the command, so a changed input re-runs it.
   */
  inputFiles?: pulumi.Input<Record<string, string>>;
  /** The step's environment on top of ours; marked secret in the state (the signing key). */
  secretEnvironment?: pulumi.Input<Record<string, pulumi.Input<string>>>;
}

/** `mkdir -p` + `printf '%s' CONTENT > PATH` for each file, then `cmd`. */
export function withInputFiles(files: Record<string, string>, cmd: string): string {
  const writes = Object.entries(files).map(([f, content]) => `mkdir -p ${shellQuote(path.dirname(f))} && printf '%s' ${shellQuote(content)} > ${shellQuote(f)}`);
  const full = [...writes, cmd].join(" && ");
  // `sh -c` takes the command as one argument, which Linux caps at 128 KiB (MAX_ARG_STRLEN).
  if (Buffer.byteLength(full) > 120 * 1024) {
    throw new Error(`the command for ${cmd.split(" ").slice(0, 3).join(" ")} would be ${Buffer.byteLength(full)} bytes with its input files (${Object.keys(files).join(", ")}): over the 128 KiB a shell argument may hold`);
  }
  return full;
}

export function stepCommand(name: string, a: StepCommandArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  const create = pulumi
    .all([a.args, a.inputFiles ?? {}])
    .apply(([args, files]) => withInputFiles(files as Record<string, string>, stepShell(a.step, args as string[], a.allowCheckFailure)));
  return new command.local.Command(
    name,
    {
      create,
      triggers: a.triggers as pulumi.Input<any[]>,
      logging: "stderr",
      ...(a.secretEnvironment ? { environment: pulumi.secret(a.secretEnvironment) as pulumi.Input<Record<string, pulumi.Input<string>>> } : {}),
    },
    a.secretEnvironment ? { ...opts, additionalSecretOutputs: ["environment"] } : opts,
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
