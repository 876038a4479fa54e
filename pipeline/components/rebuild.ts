// Rebuild: the offline, isolated rebuild from the closure alone.
//   bwrap:  `supply-chain rebuild --isolation bwrap` through @pulumi/command.
//   docker: the isolation is a Pulumi resource: a RemoteImage pinned by digest (kept locally) and a
//           Container with no network and read-only mounts of the closure and the reviewed Nix files.
//           The closure's sources are first re-hashed against the reviewed files (`check-closure`);
//           the container runs pipeline/lib/rebuild.sh, and `supply-chain collect-rebuild` runs
//           collectStaged on what it left (same checks, same rebuild.json as `supply-chain rebuild`).
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import { Isolation } from "./config";
import { declareOutputs, OutputsOf } from "./outputs";
import { BuildPlacement, PROJECT_DIR, parseStepJson, placementArgs, shellQuote, stepCommand, stepShell, TargetArgs } from "./step-command";
import type { RebuildResult } from "../steps/rebuild";
import { REBUILD_RESULT, REBUILD_SCRIPT, rebuildEnv, STAGED_CLOSURE_PREFIX } from "../lib/offline-build";
import { ContainerSpec, containerSpec as isolationContainerSpec } from "../lib/isolation";

export interface RebuildArgs extends TargetArgs, BuildPlacement {
  closureFile: pulumi.Input<string>;
  closureSha256: pulumi.Input<string>;
  isolation: Isolation;
  /** docker: `repo@sha256:<digest>`. */
  image?: string;
  outDir: pulumi.Input<string>;
}

export interface ContainerSpecInput {
  image: string;
  closureFile: string;
  nixDir: string;
  entry: string;
  attribute: string;
  drvPath: string;
  closureSha256: string;
  work: string;
}

/** How Pulumi runs the container: attached until it exits, logs kept, left for the provider to remove. */
const PULUMI_RUN = { attach: true, logs: true, mustRun: false, rm: false, start: true } as const;

/** The container's spec (lib/isolation.ts, the same as the CLI's docker route), running the rebuild's own script. */
export function containerSpec(s: ContainerSpecInput): ContainerSpec {
  return isolationContainerSpec({
    image: s.image,
    readOnly: [s.closureFile, s.nixDir],
    workDir: s.work,
    // Not read by the script: a different closure must replace the container.
    env: { ...rebuildEnv({ closure: s.closureFile, entry: s.entry, attribute: s.attribute, drvPath: s.drvPath, isolation: "docker" }), SC_CLOSURE_SHA256: s.closureSha256 },
    command: ["-c", REBUILD_SCRIPT, "sh", s.work],
  });
}

/** The step's JSON and the network interfaces the rebuild saw inside its isolation. */
function withInterfaces(j: RebuildResult) {
  return { ...j, interfaces: j.network.interfaces };
}

const OUTPUTS = ["outPath", "narHash", "interfaces", "runId"] as const;

/**
 * `runId`: the rebuild run's id, random, NOT a content address (two runs of the same inputs differ).
 * It is still the right trigger for what reads the result file: it changes exactly when the rebuild
 * ran again, and a new run must re-run verify and attest (verify refuses a result file of another run).
 */
export interface Rebuild extends OutputsOf<ReturnType<typeof withInterfaces>, (typeof OUTPUTS)[number]> {
  /** The rebuild's result file (`<out>/rebuild.json`), what verify and attest read: known before it runs. */
  readonly resultFile: pulumi.Output<string>;
}
export class Rebuild extends pulumi.ComponentResource {
  readonly container?: docker.Container;

  constructor(name: string, args: RebuildArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Rebuild", name, {}, opts);
    // Relative to the project, as given (commands and outputs name no checkout path); only the
    // container's mounts are absolute (docker needs host paths), resolved where they are built.
    const outDir = pulumi.output(args.outDir);
    let stdout: pulumi.Output<string>;
    if (args.isolation === "bwrap") {
      const cmd = stepCommand(
        `${name}-rebuild`,
        {
          step: "rebuild",
          args: ["--file", args.file, "--attribute", args.attribute, "--closure", args.closureFile, "--closure-sha256", args.closureSha256, "--isolation", "bwrap", "--out", args.outDir, ...placementArgs(args)],
          triggers: [args.drvPath, args.closureSha256],
        },
        { parent: this },
      );
      stdout = cmd.stdout;
    } else {
      if (!args.image) throw new Error("docker isolation needs an image pinned by digest");
      if (args.builders) throw new Error("remote builders need isolation bwrap (the docker isolation cannot reach them)");
      const image = new docker.RemoteImage(`${name}-image`, { name: args.image, keepLocally: true }, { parent: this });
      const work = pulumi.interpolate`${outDir}/container`;
      // Sources are re-hashed against the reviewed files BEFORE the container trusts the closure, on
      // a private copy (pinned to the closure step's digest) that is then the only closure mounted.
      const stageDir = pulumi.interpolate`${outDir}/${STAGED_CLOSURE_PREFIX}container`;
      const stagedClosure = pulumi.interpolate`${stageDir}/source-export.closure`;
      const check = new command.local.Command(
        `${name}-check-sources`,
        {
          create: pulumi
            .all([args.file, args.attribute, args.closureFile, args.closureSha256, stageDir, work, outDir])
            .apply(
              ([f, a, c, sha, stage, w, o]) =>
                `${stepShell("check-closure", ["--file", f, "--attribute", a, "--closure", c, "--stage", stage, "--closure-sha256", sha])} >&2 && rm -f ${shellQuote(path.join(o, REBUILD_RESULT))} && rm -rf ${shellQuote(w)} && mkdir -p ${shellQuote(w)}`,
            ),
          triggers: [args.drvPath, args.closureSha256],
          logging: "stderr",
        },
        { parent: this },
      );
      const spec = pulumi
        .all([image.repoDigest, stagedClosure, args.file, args.attribute, args.drvPath, args.closureSha256, work])
        .apply(([img, closureFile, file, attribute, drvPath, closureSha256, w]) => {
          const entry = path.resolve(PROJECT_DIR, file);
          // The reviewed files may import paths beside them (nix/ imports ../apps): mount the whole
          // checkout read-only when the file is in it.
          const nixDir = entry.startsWith(PROJECT_DIR + path.sep) ? PROJECT_DIR : path.dirname(entry);
          return containerSpec({ image: img, closureFile: path.resolve(PROJECT_DIR, closureFile), nixDir, entry, attribute, drvPath, closureSha256, work: path.resolve(PROJECT_DIR, w) });
        });
      const container = new docker.Container(
        `${name}-container`,
        { image: spec.image, networkMode: spec.networkMode, mounts: spec.mounts, entrypoints: spec.entrypoints, command: spec.command, envs: spec.envs, ...PULUMI_RUN },
        { parent: this, dependsOn: [check] },
      );
      this.container = container;
      // The provider does not fail on a non-zero exit: we do.
      const exited = pulumi.all([container.exitCode, container.containerLogs]).apply(([code, logs]) => {
        if (code !== 0) throw new Error(`the rebuild container exited with ${code}: ${(logs ?? "").trim().split("\n").slice(-5).join(" | ")}`);
        return code;
      });
      const collect = new command.local.Command(
        `${name}-collect`,
        {
          create: pulumi
            .all([work, outDir, args.drvPath, args.closureFile, args.closureSha256, exited])
            .apply(([w, o, d, c, sha]) => stepShell("collect-rebuild", ["--work", w, "--out", o, "--drv-path", d, "--closure", c, "--closure-sha256", sha, "--image", args.image!])),
          triggers: [args.drvPath, args.closureSha256, container.id],
          logging: "stderr",
        },
        { parent: this, dependsOn: [container] },
      );
      stdout = collect.stdout;
    }
    const r = parseStepJson<RebuildResult>("rebuild", stdout).apply(withInterfaces);
    declareOutputs(this, r, OUTPUTS, { resultFile: outDir.apply((o) => path.join(o, REBUILD_RESULT)) });
  }
}
