// Runs the Pulumi program (index.ts) under Pulumi's mocks: no engine, no steps. Each step's
// local.Command "returns" the JSON a test chooses, and every resource the program registers or reads
// (a StackReference) is recorded with the parent and dependencies it declared to the (mock) engine.
import * as crypto from "node:crypto";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { MockMonitor } from "@pulumi/pulumi/runtime/mocks";

export const DRV = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-image.drv";

export interface Registered {
  /** "register": a resource the program declares; "read": one it reads (a StackReference, a `get`). */
  kind: "register" | "read";
  type: string;
  name: string;
  inputs: Record<string, any>;
  /** The URN the (mock) engine answered with. */
  urn: string;
  /** A read resource's id (a StackReference's: the stack's name); "" for a registration. */
  id: string;
  parent: string;
  dependencies: string[];
  /** The inputs as sent to the engine (secrets still wrapped in Pulumi's secret signature). */
  wire: Record<string, any>;
  additionalSecretOutputs: string[];
}

export interface StepOutputs {
  build: Record<string, unknown>;
  closure: Record<string, unknown>;
  rebuild: Record<string, unknown>;
  verify: Record<string, unknown>;
  "boot-test": Record<string, unknown>;
  collect: Record<string, unknown>;
  attest: Record<string, unknown>;
  audit: Record<string, unknown>;
}

/** A throwaway Ed25519 key for the mocked programs' signingKey (never a real one). */
export const TEST_SIGNING_KEY = crypto.generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();

export function defaultOutputs(drv = DRV): StepOutputs {
  const out = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-image";
  return {
    build: { drvPath: drv, outPath: out, narHash: "sha256:1build", narSize: 1000 },
    closure: { closureFile: "/w/closure/closure.nar", closureSha256: "c1osure", sources: 7, evalPaths: 3, bytes: 12345, manifest: "/w/closure/manifest.json", report: "/w/closure/report.md" },
    rebuild: { isolation: "bwrap", network: { interfaces: ["lo"] }, outPath: out, narHash: "sha256:1build", paths: [], log: "/w/rebuild/build.log", runId: "run1" },
    collect: { isolation: "docker", network: { interfaces: ["lo"] }, outPath: out, narHash: "sha256:1build", paths: [], log: "-", runId: "run2" },
    verify: { reproducible: true, checked: 4, matched: 4, mismatched: [], report: "/w/rebuild/verify.md" },
    "boot-test": { passed: true, accel: "tcg", bootSeconds: 5, probes: [{ name: "p", ok: true, ms: 10, detail: "ok" }], serialLog: "/w/serial.log" },
    audit: { reproduced: true, checked: 3, matched: 3, mismatched: [], notRebuilt: [], attestation: "/w/audit/audit.provenance.intoto.jsonl", verification: "/w/audit/audit.verification.intoto.jsonl", drvPath: drv, outPath: out, publisher: { keyid: "p1", provenance: "/p/provenance.intoto.jsonl", builderId: null }, auditor: { keyid: "a1", builderId: "https://b/1" } },
    attest: { provenance: "/w/attest/provenance.intoto.jsonl", verification: "/w/attest/verification.intoto.jsonl", sbom: "/w/attest/sbom.cdx.json", sbomSha256: "5b0m", keyid: "k1", subjects: [] },
  };
}

/**
 * Pulumi's MockMonitor (what `setMocks` installs), recording each request before answering it: the
 * mocks' `newResource` sees neither the parent nor the dependencies nor the wire encoding.
 */
class RecordingMonitor extends MockMonitor {
  constructor(
    mocks: pulumi.runtime.Mocks,
    private readonly recorded: Registered[],
  ) {
    super(mocks);
  }

  override async registerResource(req: any, callback: (err: any, resp: any) => void): Promise<void> {
    return super.registerResource(req, this.record("register", req, "", req.getObject(), callback));
  }

  override async readResource(req: any, callback: (err: any, resp: any) => void): Promise<void> {
    return super.readResource(req, this.record("read", req, req.getId(), req.getProperties(), callback));
  }

  /** Records the request; the returned callback fills in the URN the mock engine answers with. */
  private record(kind: Registered["kind"], req: any, id: string, object: any, callback: (err: any, resp: any) => void): (err: any, resp: any) => void {
    const r: Registered = {
      kind,
      type: req.getType(),
      name: req.getName(),
      inputs: {},
      urn: "",
      id,
      parent: req.getParent(),
      dependencies: req.getDependenciesList(),
      wire: object?.toJavaScript() ?? {},
      additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
    };
    this.recorded.push(r);
    return (err, resp) => {
      if (resp) r.urn = resp.getUrn();
      callback(err, resp);
    };
  }
}

/**
 * What `pulumi.runtime.setMocks` does, with our monitor: `setMockOptions` installs it, and the
 * runtime's feature flags are the ones setMocks enables (copied from a setMocks call: setMockOptions
 * resets them, and no public API sets them for another monitor).
 */
async function installRecordingMocks(monitor: RecordingMonitor, project: string, stack: string): Promise<void> {
  await pulumi.runtime.setMocks(monitor.mocks, project, stack, false);
  const store = runtimeStore();
  const features = Object.fromEntries(Object.entries(store).filter(([k]) => k.startsWith("supports")));
  pulumi.runtime.setMockOptions(monitor, project, stack, false);
  Object.assign(runtimeStore(), features);
}

/**
 * The runtime's settings store (runtime/state.js), where setMocks writes its feature flags: marked
 * @internal in the SDK, the one non-public piece here, used only to carry those flags over.
 */
function runtimeStore(): Record<string, unknown> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require("@pulumi/pulumi/runtime/state").getStore();
}

const STEP_OF = /bin\/supply-chain\.js ([a-z-]+)/;

export interface ProgramRun {
  resources: Registered[];
  invokes: { token: string; inputs: Record<string, any> }[];
  outputs: Record<string, unknown>;
  byName(suffix: string): Registered;
}

let running = false;

/** Imports index.ts afresh with this config; resolves every export (rejects if one fails). */
/** `secretKeys`: config keys set as secrets (default: the signing key, when the config has one). */
/** `stackOutputs`: what a StackReference (role audit: the publisher's stack) reads. */
export async function runProgram(opts: { config: Record<string, string>; secretKeys?: string[]; stack?: string; steps?: Partial<StepOutputs>; drv?: string; stackOutputs?: Record<string, unknown> }): Promise<ProgramRun> {
  if (running) throw new Error("runProgram is not re-entrant: use test.serial");
  running = true;
  try {
    const steps = { ...defaultOutputs(opts.drv), ...opts.steps };
    const resources: Registered[] = [];
    const invokes: ProgramRun["invokes"] = [];
    const mocks: pulumi.runtime.Mocks = {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        const r = resources.filter((x) => x.name === args.name).pop();
        if (r) r.inputs = args.inputs;
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "command:local:Command") {
          const create = String(args.inputs.create ?? "");
          const named = STEP_OF.exec(create)?.[1];
          // The docker route's collector prints a rebuild's JSON, mocked as "collect".
          const step = named === "collect-rebuild" ? "collect" : named;
          const json = step && (steps as any)[step];
          state.stdout = json ? JSON.stringify(json) : "";
          state.stderr = "";
        }
        if (args.type === "docker:index/remoteImage:RemoteImage") state.repoDigest = args.inputs.name;
        if (args.type === "pulumi:pulumi:StackReference") state.outputs = opts.stackOutputs ?? {};
        if (args.type === "docker:index/container:Container") {
          state.exitCode = (opts.steps as any)?.containerExitCode ?? 0;
          state.containerLogs = "rebuild log";
        }
        return { id: `${args.name}-id`, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        invokes.push({ token: args.token, inputs: args.inputs });
        if (args.token === "command:local:run") return { stdout: `${opts.drv ?? DRV}\n`, stderr: "" };
        throw new Error(`unexpected invoke ${args.token}`);
      },
    };
    await installRecordingMocks(new RecordingMonitor(mocks, resources), "secure-supply-chain", opts.stack ?? "test");
    pulumi.runtime.setAllConfig(opts.config, opts.secretKeys ?? Object.keys(opts.config).filter((k) => k.endsWith(":signingKey")));
    const root = path.resolve(__dirname, "..", "..");
    for (const k of Object.keys(require.cache)) {
      if (k === path.join(root, "index.ts") || k.startsWith(path.join(root, "pipeline", "components"))) delete require.cache[k];
    }
    const outputs = await runProgramFile(path.join(root, "index.ts"));
    return {
      resources,
      invokes,
      outputs,
      byName(suffix: string) {
        const found = resources.filter((x) => x.name.endsWith(suffix));
        if (found.length !== 1) throw new Error(`expected one resource named *${suffix}, found ${found.map((x) => x.name).join(", ") || "none"}`);
        return found[0];
      },
    };
  } finally {
    running = false;
  }
}

/**
 * Requires a Pulumi program (mocks installed, its module cache cleared by the caller) and resolves
 * every export; rejects with the program's failure. A program that fails (as the engine would see it)
 * leaves rejected promises inside the Pulumi runtime that nobody awaits: they are this run's failure,
 * not the test process's.
 */
export async function runProgramFile(file: string): Promise<Record<string, any>> {
  const saved = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  let failRun: (e: unknown) => void = () => {};
  const failed = new Promise<never>((_, reject) => (failRun = reject));
  failed.catch(() => {});
  process.on("unhandledRejection", (e) => failRun(e));
  try {
    const all = (async () => {
      const program = require(file);
      const outputs: Record<string, any> = {};
      for (const [k, v] of Object.entries(program)) outputs[k] = pulumi.Output.isInstance(v) ? await (v as any).promise() : v;
      // Let the last registrations (registerOutputs) drain: a rejection there fails the run too.
      await new Promise((r) => setTimeout(r, 100));
      return outputs;
    })();
    return await Promise.race([all, failed]);
  } finally {
    // Leftovers of a failed run settle before the next run's mocks are installed.
    await new Promise((r) => setTimeout(r, 200));
    process.removeAllListeners("unhandledRejection");
    for (const l of saved) process.on("unhandledRejection", l as (...a: any[]) => void);
  }
}

export const DEMO_CONFIG = {
  "secure-supply-chain:source": "demo-world",
  "secure-supply-chain:demoWorldDir": "test/fixtures-not-used/demo-world",
  "secure-supply-chain:isolation": "bwrap",
  "secure-supply-chain:bootTest": "false",
};
