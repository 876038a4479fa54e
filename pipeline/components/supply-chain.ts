// SupplyChain wires the steps: build → closure → rebuild → verify, and build → boot test.
// Everything starts from the target's .drv path, which the `local.run` invoke obtains with
// nix-instantiate during preview as well, so `pulumi preview --diff` shows which drv changed and
// what it replaces down the chain.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { ChainArgs, chainConfig, ConfigError, SupplyChainConfig } from "./config";
import { Build } from "./build";
import { Closure } from "./closure";
import { Rebuild } from "./rebuild";
import { Verify } from "./verify";
import { BootTest } from "./boot-test";
import { Attest } from "./attest";
import { PROJECT_DIR, shellQuote, stepShell } from "./step-command";

/** The shell command whose stdout is the target's .drv path (generating the demo world once). */
export function instantiateShell(c: Pick<SupplyChainConfig, "source" | "demoWorldDir" | "demoWorld" | "file" | "attribute" | "workDir">): string {
  // A GC root keeps the .drv alive between preview and up; nix-instantiate then prints the root, not the path.
  const root = shellQuote(`${c.workDir}/target.drv`);
  const inst = `mkdir -p ${shellQuote(c.workDir)} && nix-instantiate ${shellQuote(c.file)} -A ${shellQuote(c.attribute)} --add-root ${root} >/dev/null && readlink ${root}`;
  return c.source === "demo-world" ? `${demoWorldShell(c)} && ${inst}` : inst;
}

/**
 * Generates the demo world only when absent (edits to the generated sources are what a preview
 * should show); the system world also when the world there was generated without its sources.
 */
export function demoWorldShell(c: Pick<SupplyChainConfig, "demoWorldDir" | "demoWorld" | "file">): string {
  if (c.demoWorld === "minimal") return `{ [ -f ${shellQuote(c.file)} ] || ${stepShell("demo-world", [c.demoWorldDir])} >/dev/null; }`;
  const probes = `${c.demoWorldDir}/system-probes.json`;
  return `{ [ -f ${shellQuote(c.file)} ] && [ -f ${shellQuote(probes)} ] || ${stepShell("demo-world", ["--full", c.demoWorldDir])} >/dev/null; }`;
}

export function lastLine(s: string): string {
  return s.trim().split("\n").pop()!.trim();
}

/** What a user's program passes to `new SupplyChain(name, args)`: docs/dsl.md. */
export interface SupplyChainArgs extends ChainArgs {
  /** The Ed25519 signing key (PKCS#8 PEM, as `supply-chain keygen` writes it), as a Pulumi secret: required unless attest is false. */
  signingKey?: pulumi.Input<string>;
}

/** Configs parseConfig has checked, handed over by SupplyChain.fromStackConfig: everything else is args, checked here. */
const CHECKED_STACK_CONFIGS = new WeakSet<object>();

/**
 * `check()`, with a ConfigError (a wrong config key or chain arg) turned into a RunError: it ends the
 * program with just its one line, no stack trace. For index.ts's stack config and a chain's args alike.
 */
export function asProgramError<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
    throw e;
  }
}

export class SupplyChain extends pulumi.ComponentResource {
  readonly drvPath: pulumi.Output<string>;
  readonly build: Build;
  readonly closure: Closure;
  readonly rebuild: Rebuild;
  readonly verify: Verify;
  readonly bootTest?: BootTest;
  readonly attest?: Attest;

  /** A stack's config as parseConfig checked it (index.ts: one chain per stack, keys named as config keys). */
  static fromStackConfig(name: string, config: SupplyChainConfig, signingKey: pulumi.Input<string> | undefined, opts?: pulumi.ComponentResourceOptions): SupplyChain {
    const checked = { ...config, signingKey };
    CHECKED_STACK_CONFIGS.add(checked);
    return new SupplyChain(name, checked as SupplyChainArgs, opts);
  }

  /**
   * A chain of a user's program: `args` are checked here (at preview too), a wrong one is one error
   * naming the chain and the arg. `signingKey`: the Pulumi secret holding the attestation key
   * (required unless attest is false).
   */
  constructor(name: string, args: SupplyChainArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:SupplyChain", name, {}, opts);
    const fromStack = CHECKED_STACK_CONFIGS.has(args);
    const { signingKey, ...rest } = args;
    const c = fromStack ? (rest as unknown as SupplyChainConfig) : asProgramError(() => chainConfig(name, rest, pulumi.getStack(), signingKey !== undefined));
    const secrets = { signingKey };
    const probesKey = fromStack ? "config key secure-supply-chain:probes" : `chain '${name}': arg 'probes'`;
    const inst = command.local.runOutput({ command: instantiateShell(c) }, { parent: this });
    this.drvPath = inst.stdout.apply((s) => {
      const drv = lastLine(s);
      if (!/^\/nix\/store\/[0-9a-z]{32}-.+\.drv$/.test(drv)) throw new Error(`nix-instantiate ${c.file} -A ${c.attribute} printed no .drv path: ${s.slice(0, 200)}`);
      return drv;
    });
    const target = { file: c.file, attribute: c.attribute, drvPath: this.drvPath };

    const placement = { builders: c.builders, maxJobs: c.maxJobs };
    this.build = new Build(`${name}-build`, { ...target, offline: c.offline, ...placement }, { parent: this });
    // The closure step realises its own sources, but exporting the sources of a target that does
    // not build would hand an auditor a closure for nothing: build first.
    this.closure = new Closure(`${name}-closure`, { ...target, outDir: `${c.workDir}/closure`, top: c.closureTop, offline: c.offline }, { parent: this, dependsOn: [this.build] });
    this.rebuild = new Rebuild(
      `${name}-rebuild`,
      {
        ...target,
        closureFile: this.closure.closureFile,
        closureSha256: this.closure.closureSha256,
        isolation: c.isolation,
        image: c.rebuilderImage,
        outDir: `${c.workDir}/rebuild`,
        ...placement,
      },
      { parent: this, dependsOn: [this.closure] },
    );
    this.verify = new Verify(
      `${name}-verify`,
      { ...target, rebuildResultFile: this.rebuild.resultFile, buildDigest: this.build.narHash, rebuildRunId: this.rebuild.runId, policy: c.policy },
      { parent: this, dependsOn: [this.build, this.rebuild] },
    );
    if (c.bootTest) {
      // The probe spec is content-addressed too (read once the source step has produced it).
      const probesDigest = this.drvPath.apply(() => {
        const p = path.resolve(PROJECT_DIR, c.probes);
        if (!fs.existsSync(p)) throw new Error(`probe spec ${c.probes} does not exist (${probesKey})`);
        return `sha256:${crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex")}`;
      });
      this.bootTest = new BootTest(
        `${name}-boot-test`,
        {
          image: this.build.image,
          imageDigest: this.build.imageDigest,
          probes: c.probes,
          probesDigest,
          timeout: c.bootTimeout,
          memory: c.bootMemory,
          policy: c.policy,
          outDir: `${c.workDir}/boot-test`,
        },
        { parent: this, dependsOn: [this.build] },
      );
    }
    if (c.attest) {
      if (!secrets.signingKey) throw new Error("attest needs the signing key (config secure-supply-chain:signingKey)");
      this.attest = new Attest(
        `${name}-attest`,
        {
          build: this.build.result,
          closureDir: `${c.workDir}/closure`,
          closureSha256: this.closure.closureSha256,
          verify: this.verify.result,
          rebuildResultFile: this.rebuild.resultFile,
          rebuildRunId: this.rebuild.runId,
          ...(this.bootTest ? { bootTest: this.bootTest.result } : {}),
          signingKey: secrets.signingKey,
          builderId: c.builderId,
          outDir: `${c.workDir}/attest`,
        },
        { parent: this, dependsOn: [this.verify, ...(this.bootTest ? [this.bootTest] : [])] },
      );
    }
    this.registerOutputs({ drvPath: this.drvPath });
  }
}
