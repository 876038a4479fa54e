// `supply-chain collect-rebuild`: after a rebuild container run by someone else (the Pulumi docker
// route's Container resource) exited, the rebuild's own post-run checks and publication (collectStaged)
// on the work dir it left: the same <out>/rebuild.json as `supply-chain rebuild`, so `verify` reads a
// container rebuild like any other. Exit 1 when the run is refused (network seen, a NAR that differs, ...).
import * as crypto from "node:crypto";
import * as path from "node:path";
import { graphOfDrv } from "../lib/nix";
import { collectStaged, RebuildResult } from "../lib/offline-build";
import { StepDefinition } from "../lib/step";

/** `closureSha256`: the digest `check-closure --stage` pinned for the copy the container imported. */
export async function collectContainerRebuild(o: { work: string; out: string; drvPath: string; closure: string; closureSha256: string; image: string }): Promise<RebuildResult> {
  return collectStaged({
    work: path.resolve(o.work),
    out: path.resolve(o.out),
    drvPath: o.drvPath,
    graph: await graphOfDrv(o.drvPath),
    isolation: "docker",
    image: o.image,
    closure: path.resolve(o.closure),
    closureSha256: o.closureSha256,
    // The component's check-closure command ran it before the container.
    sourceCheck: null,
    runId: crypto.randomBytes(8).toString("hex"),
    started: Date.now(),
    log: "(container logs: the Container resource's containerLogs output)",
  });
}

export const step: StepDefinition<RebuildResult> = {
  name: "collect-rebuild",
  summary: "check and publish what a rebuild container (pipeline/lib/rebuild.sh) left in its work dir, as rebuild does",
  options: {
    work: { type: "string", description: "the work dir the container ran rebuild.sh in", required: true },
    out: { type: "string", description: "the rebuild's output directory: rebuild.json (written last), nars/", required: true },
    "drv-path": { type: "string", description: "the target's .drv (its graph says what must have been built)", required: true },
    closure: { type: "string", description: "the closure as the caller named it (recorded)", required: true },
    "closure-sha256": { type: "string", description: "SHA-256 (hex) of the closure copy the container imported (recorded)", required: true },
    image: { type: "string", description: "the container's image, pinned by digest (recorded)", required: true },
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    return collectContainerRebuild({ work: values.work, out: values.out, drvPath: values["drv-path"], closure: values.closure, closureSha256: values["closure-sha256"], image: values.image });
  },
};
