// What the real-engine tests share: the project copied to a temp dir with its own file:// backend
// (nothing touches the checkout's state), the Pulumi CLI from scripts/pulumi-engine.sh, and the
// environment the engine runs in there.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFile, execFileSync } from "node:child_process";

export const ROOT = path.resolve(__dirname, "..", "..");
export const PROJECT = "secure-supply-chain";
export const DEMO_PUB = path.join(ROOT, "stacks", "demo-signing.pub");

export interface Engine {
  /** The project's copy: where `pulumi` runs and the steps write `.supply-chain/<stack>/`. */
  dir: string;
  /** The file backend's directory. */
  state: string;
  env: NodeJS.ProcessEnv;
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function engineBin(): string {
  try {
    return execFileSync("bash", [path.join(ROOT, "scripts", "pulumi-engine.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
  } catch (e) {
    throw new Error(`no Pulumi engine: scripts/pulumi-engine.sh failed (${(e as Error).message})`);
  }
}

/** A fresh copy of the project in a temp dir named `<prefix>XXXXXX`, with its own backend. */
export function projectCopy(prefix: string): Engine {
  const bin = engineBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const state = path.join(dir, ".state");
  fs.mkdirSync(state);
  // apps/: the system image (the demo stack's world) compiles them; their host build dirs are not sources.
  const hostBuild = new Set(["apps/db-writer/build", "apps/db-reader/target"].map((p) => path.join(ROOT, p)));
  for (const f of ["Pulumi.yaml", "index.ts", "tsconfig.json", "package.json", "bin", "pipeline", "stacks", "consumer", "apps"]) {
    fs.cpSync(path.join(ROOT, f), path.join(dir, f), { recursive: true, filter: (src) => !hostBuild.has(src) });
  }
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return { dir, state, env: engineEnv(bin, state) };
}

/** The engine's environment: `bin` (engineBin(): our CLI and stand-ins) first on PATH, a file backend at `state`, no plugin downloads. */
export function engineEnv(bin: string, state: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
    PULUMI_BACKEND_URL: `file://${state}`,
    PULUMI_CONFIG_PASSPHRASE: "",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_IGNORE_AMBIENT_PLUGINS: "true",
  };
}

export function pulumi(e: Engine, args: string[], opts: { cwd?: string; allowFailure?: boolean } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile("pulumi", ["--non-interactive", ...args], { cwd: opts.cwd ?? e.dir, env: e.env, maxBuffer: 64 << 20, timeout: 14 * 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as any).code === "number" ? (err as any).code : 1) : 0;
      if (code !== 0 && !opts.allowFailure) reject(new Error(`pulumi ${args.join(" ")} exited ${code}:\n${stdout.slice(-3000)}\n${stderr.slice(-3000)}`));
      else resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The small busybox world for a copy of the demo stack, for tests that exercise the engine rather
 * than the world: stacks/Pulumi.demo.yaml runs the system image, minutes per cold rebuild.
 */
export async function useMinimalWorld(e: Engine, stack: string): Promise<void> {
  await pulumi(e, ["config", "set", `${PROJECT}:demoWorld`, "minimal", "--stack", stack]);
}

/** A step run directly (keygen, verify-attestation): its JSON, or a throw naming the failure. */
export function cliJson(args: string[]): any {
  return JSON.parse(execFileSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }));
}

export async function outputs(e: Engine, stack: string, cwd?: string): Promise<Record<string, any>> {
  return JSON.parse((await pulumi(e, ["stack", "output", "--json", "--show-secrets", "--stack", stack], { cwd })).stdout);
}

/** The number of resources each op touched in the stack's last update. */
export async function lastChanges(e: Engine, stack: string): Promise<Record<string, number>> {
  const h = JSON.parse((await pulumi(e, ["stack", "history", "--json", "--stack", stack])).stdout);
  return h[0].resourceChanges;
}

/** Both attestations verify with the demo stack's committed public key and name the image. */
export function verifyDemoAttestations(o: Record<string, any>): boolean[] {
  return [
    [o.provenance, "https://slsa.dev/provenance/v1"],
    [o.verification, "https://slsa.dev/verification_summary/v1"],
  ].map(([file, type]) => cliJson(["verify-attestation", "--attestation", file, "--public-key", DEMO_PUB, "--predicate-type", type, "--store-path", o.imageOutPath]).verified === true);
}
