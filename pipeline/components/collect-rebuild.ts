// After the Pulumi-managed rebuild container exited: checks what it left in its work dir and writes
// the rebuild step's result (`<out>/rebuild.json`, the same shape `supply-chain rebuild` writes), so
// `supply-chain verify` reads a container rebuild like any other.
// usage: collect-rebuild.ts WORK OUT DRV CLOSURE IMAGE   (prints the JSON on stdout)
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { narHashOfFile } from "../lib/nar-diff";
import { writeJsonAtomic } from "../lib/fsx";

function lines(f: string): string[] {
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").map((l) => l.trim()).filter(Boolean) : [];
}

function fail(reason: string): never {
  process.stderr.write(`collect-rebuild: ${reason}\n`);
  process.exit(1);
}

export async function collect(work: string, out: string, drvPath: string, closure: string, image: string) {
  const interfaces = lines(path.join(work, "interfaces"));
  if (!interfaces.length) fail(`no record of the network interfaces inside the container in ${work}`);
  if (interfaces.some((i) => i !== "lo")) fail(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside the container`);
  const outPath = lines(path.join(work, "outpath"))[0];
  if (!outPath) fail(`the container left no output path in ${work}/outpath`);
  const narsDir = path.join(out, "nars");
  const paths = [];
  for (const l of lines(path.join(work, "hashes"))) {
    const [p, h] = l.split(" ");
    const staged = path.join(work, "nars", `${path.basename(p)}.nar`);
    const actual = await narHashOfFile(staged);
    if (actual !== h) fail(`NAR of ${p} copied out of the container has hash ${actual}, Nix reported ${h}`);
    paths.push({ path: p, narHash: h, nar: path.join(narsDir, path.basename(staged)) });
  }
  const top = paths.find((x) => x.path === outPath);
  if (!top) fail(`the built output ${outPath} has no recorded hash`);
  fs.mkdirSync(out, { recursive: true });
  fs.rmSync(narsDir, { recursive: true, force: true });
  fs.renameSync(path.join(work, "nars"), narsDir);
  const result = {
    isolation: "docker",
    image,
    network: { interfaces },
    drvPath,
    outPath,
    narHash: top!.narHash,
    paths,
    log: "(container logs: the Container resource's containerLogs output)",
    out,
    nars: narsDir,
    runId: crypto.randomBytes(8).toString("hex"),
    closure,
    sourceCheck: null,
    seconds: 0,
  };
  writeJsonAtomic(path.join(out, "rebuild.json"), result);
  return result;
}

if (require.main === module) {
  const [work, out, drv, closure, image] = process.argv.slice(2);
  if (!image) fail("usage: collect-rebuild.ts WORK OUT DRV CLOSURE IMAGE");
  collect(path.resolve(work), path.resolve(out), drv, path.resolve(closure), image).then(
    (r) => process.stdout.write(JSON.stringify(r, null, 2) + "\n"),
    (e) => fail(e instanceof Error ? e.message : String(e)),
  );
}
