// `supply-chain build`: evaluates a target to its derivation, builds it with the Nix sandbox on,
// and reports what was built by content: drvPath, outPath, narHash, narSize (+ the bootable artifact).
import * as fs from "node:fs";
import * as path from "node:path";
import { log, StepDefinition } from "../lib/step";
import { sha256File } from "../lib/files";
import { BUILDER_OPTIONS, builderArgs, buildersFrom, RemoteBuilder, STRICT_HOST_KEY_SSHOPTS } from "../lib/builders";
import { describeTarget, explainBuildFailure, instantiate, narHashHex, NixTarget, pathInfo, realise, TARGET_OPTIONS, targetFrom } from "../lib/nix";

export interface BuildResult {
  drvPath: string;
  outPath: string;
  narHash: string;
  narSize: number;
  /** The bootable thing: an ISO file, or the kernel+initrd image directory. */
  artifact?: string;
  /** sha256 (hex) of the ISO file; for an image directory, of its NAR serialisation (= narHash). */
  artifactSha256?: string;
}

export type BuildOptions = NixTarget & {
  sandbox?: boolean;
  offline?: boolean;
  /** Symlink to the output, registered as a GC root. */
  outLink?: string;
  /** Nix remote builders (reached by this machine's ssh) and the local max-jobs beside them. */
  builders?: RemoteBuilder[];
  maxJobs?: number;
};

/** Finds the bootable artifact in a build output, per docs/contracts.md "Image layout". */
export async function findArtifact(outPath: string, narHash: string): Promise<{ artifact: string; artifactSha256: string } | undefined> {
  const st = fs.statSync(outPath);
  if (st.isFile()) {
    if (!outPath.endsWith(".iso")) return undefined;
    return { artifact: outPath, artifactSha256: await sha256File(outPath) };
  }
  const isoDir = path.join(outPath, "iso");
  if (fs.existsSync(isoDir) && fs.statSync(isoDir).isDirectory()) {
    const isos = fs.readdirSync(isoDir).filter((f) => f.endsWith(".iso")).sort();
    if (isos.length > 0) {
      const artifact = path.join(isoDir, isos[0]);
      return { artifact, artifactSha256: await sha256File(artifact) };
    }
  }
  if (fs.existsSync(path.join(outPath, "kernel")) && fs.existsSync(path.join(outPath, "initrd"))) {
    // A directory has no single file hash: its NAR hash covers kernel, initrd and cmdline together
    // (recompute with `nix-hash --type sha256 DIR` or `nix-store --dump DIR | sha256sum`).
    return { artifact: outPath, artifactSha256: narHashHex(narHash) };
  }
  return undefined;
}

export async function build(o: BuildOptions): Promise<BuildResult> {
  log("build", `evaluating ${describeTarget(o)}`);
  const drvPath = await instantiate(o);
  log("build", `building ${drvPath} (sandbox ${o.sandbox === false ? "off" : "on"}${o.offline ? ", substituters off" : ""}${o.builders?.length ? `, remote builders ${o.builders.map((b) => b.uri).join(" ")}` : ""})`);
  const sshEnv: Record<string, string> = o.builders?.length ? { NIX_SSHOPTS: [process.env.NIX_SSHOPTS, STRICT_HOST_KEY_SSHOPTS].filter(Boolean).join(" ") } : {};
  const extra = [...builderArgs(o.builders ?? [], o.maxJobs), ...(o.outLink ? ["--add-root", path.resolve(o.outLink)] : [])];
  const outs = await realise(drvPath, { sandbox: o.sandbox, offline: o.offline }, extra, sshEnv).catch((e) => {
    throw explainBuildFailure(e, drvPath);
  });
  const outPath = outs[0];
  if (!outPath) throw new Error(`nix-store --realise ${drvPath} printed no output path`);
  const info = await pathInfo(outPath);
  const result: BuildResult = { drvPath, outPath, narHash: info.narHash, narSize: info.narSize };
  const art = await findArtifact(outPath, info.narHash);
  if (art) Object.assign(result, art);
  log("build", `built ${outPath} (${info.narSize} bytes, ${info.narHash})`);
  return result;
}

export const step: StepDefinition<BuildResult> = {
  name: "build",
  summary: "Build a Nix target (sandbox on) and print {drvPath, outPath, narHash, narSize[, artifact, artifactSha256]}",
  options: {
    ...TARGET_OPTIONS,
    "no-sandbox": { type: "boolean", description: "build without the Nix sandbox (not recommended)" },
    offline: { type: "boolean", description: "turn substituters off: build only from what is in the store and the sources" },
    "out-link": { type: "string", description: "create this symlink to the output, registered as a GC root (default: none)" },
    ...BUILDER_OPTIONS,
  },
  async run({ values }) {
    return build({
      ...targetFrom(values),
      sandbox: !values["no-sandbox"],
      offline: !!values.offline,
      outLink: values["out-link"],
      ...buildersFrom(values),
    });
  },
};
