// After the Pulumi-managed rebuild container (REBUILD_SCRIPT) exited: runs the rebuild step's own
// `collectStaged` on its work dir — the same post-run checks and the same `<out>/rebuild.json` as
// `supply-chain rebuild` — so `supply-chain verify` reads a container rebuild like any other.
// usage: collect-rebuild.ts WORK OUT DRV CLOSURE CLOSURE_SHA256 IMAGE   (prints the JSON on stdout; exit 1 refused)
import * as path from "node:path";
import * as crypto from "node:crypto";
import { collectStaged, graphOfDrv, RebuildResult } from "../steps/rebuild";

/** `closureSha256`: the digest check-closure --stage pinned for the copy the container imported. */
export async function collect(work: string, out: string, drvPath: string, closure: string, closureSha256: string, image: string): Promise<RebuildResult> {
  return collectStaged({
    work,
    out,
    drvPath,
    graph: await graphOfDrv(drvPath),
    isolation: "docker",
    image,
    closure,
    closureSha256,
    // Run before the container by the component's check-closure command.
    sourceCheck: null,
    runId: crypto.randomBytes(8).toString("hex"),
    started: Date.now(),
    log: "(container logs: the Container resource's containerLogs output)",
  });
}

if (require.main === module) {
  const fail = (reason: string): never => {
    process.stderr.write(`collect-rebuild: ${reason}\n`);
    process.exit(1);
  };
  const [work, out, drv, closure, closureSha256, image] = process.argv.slice(2);
  if (!image) fail("usage: collect-rebuild.ts WORK OUT DRV CLOSURE CLOSURE_SHA256 IMAGE");
  collect(path.resolve(work), path.resolve(out), drv, path.resolve(closure), closureSha256, image).then(
    (r) => process.stdout.write(JSON.stringify(r, null, 2) + "\n"),
    (e) => fail(e instanceof Error ? e.message : String(e)),
  );
}
