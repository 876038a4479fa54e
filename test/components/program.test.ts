// The Pulumi program under Pulumi's mocks (no engine, no nix: what the steps print is given).
import test from "ava";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TEST_SIGNING_KEY, DRV, runProgram, Registered, ProgramRun, defaultOutputs } from "./harness";

import { shellQuote } from "../../pipeline/components/step-command";
const P = "secure-supply-chain";
// Pulumi's wire encoding of a secret value (sdk/nodejs/runtime/rpc.ts: specialSigKey, specialSecretSig).
const SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

function demoWorld(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-components-"));
  fs.writeFileSync(path.join(dir, "probes.json"), JSON.stringify({ probes: [{ name: "reader", http: { port: 8000, path: "/healthz" } }] }));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function demoConfig(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { [`${P}:source`]: "demo-world", [`${P}:demoWorldDir`]: dir, [`${P}:demoWorld`]: "minimal", [`${P}:isolation`]: "bwrap", [`${P}:signingKey`]: TEST_SIGNING_KEY, ...extra };
}

const stepCommands = (run: ProgramRun) => run.resources.filter((r) => r.type === "command:local:Command");
const stepOf = (r: Registered) => /bin\/supply-chain\.js ([a-z-]+)/.exec(String(r.inputs.create))?.[1];
const urnOf = (run: ProgramRun, step: string) => stepCommands(run).find((r) => stepOf(r) === step)!.urn;
/** Every URN `r` depends on, directly or through its parents' explicit dependencies. */
function dependsOn(run: ProgramRun, r: Registered, target: string): boolean {
  const seen = new Set<string>();
  const walk = (x: Registered | undefined): boolean => {
    if (!x || seen.has(x.urn)) return false;
    seen.add(x.urn);
    if (x.dependencies.includes(target)) return true;
    return x.dependencies.some((d) => walk(run.resources.find((y) => y.urn === d))) || walk(run.resources.find((y) => y.urn === x.parent));
  };
  return walk(r);
}

test.serial("(mocked: no engine or nix in unit tests) the chain: one command per step, wired build → closure → rebuild → verify and build → boot test", async (t) => {
  const run = await runProgram({ config: demoConfig(demoWorld(t)) });
  t.deepEqual(stepCommands(run).map(stepOf).sort(), ["attest", "boot-test", "build", "closure", "rebuild", "verify"]);
  const types = new Set(run.resources.map((r) => r.type));
  for (const c of ["SupplyChain", "Build", "Closure", "Rebuild", "Verify", "BootTest", "Attest"]) t.true(types.has(`${P}:components:${c}`), c);

  const cmd = (s: string) => stepCommands(run).find((r) => stepOf(r) === s)!;
  // rebuild reads the closure's outputs, verify waits for build and rebuild, boot waits for build only.
  t.true(dependsOn(run, cmd("closure"), urnOf(run, "build")), "closure depends on build");
  t.true(dependsOn(run, cmd("rebuild"), urnOf(run, "closure")), "rebuild depends on closure");
  t.true(dependsOn(run, cmd("verify"), urnOf(run, "rebuild")), "verify depends on rebuild");
  t.true(dependsOn(run, cmd("verify"), urnOf(run, "build")), "verify depends on build");
  t.true(dependsOn(run, cmd("boot-test"), urnOf(run, "build")), "boot test depends on build");
  t.false(dependsOn(run, cmd("boot-test"), urnOf(run, "rebuild")), "boot test does not wait for the rebuild");
  t.false(dependsOn(run, cmd("boot-test"), urnOf(run, "closure")), "boot test does not wait for the closure");
  t.false(dependsOn(run, cmd("build"), urnOf(run, "closure")));
  t.true(dependsOn(run, cmd("attest"), urnOf(run, "verify")), "attest signs the verdict: after verify");
  t.true(dependsOn(run, cmd("attest"), urnOf(run, "boot-test")), "and after the boot test");

  t.is(run.outputs.imageDrvPath, DRV);
  t.is(run.outputs.imageNarHash, "sha256:1build");
  t.is(run.outputs.closureSha256, "c1osure");
  t.is(run.outputs.closureSources, 7);
  t.is(run.outputs.reproducible, true);
  t.is(run.outputs.reproducibleRatio, 1);
  t.is(run.outputs.bootTestPassed, true);
  t.is(run.outputs.provenance, "/w/attest/provenance.intoto.jsonl");
  t.is(run.outputs.attestationKeyId, "k1");
  t.is(run.outputs.attestationPublicKey, crypto.createPublicKey(TEST_SIGNING_KEY).export({ type: "spki", format: "pem" }));
});

test.serial("(mocked: no engine in unit tests) the signing key reaches attest only through its environment, as a secret; a key in clear or none is one config error", async (t) => {
  const dir = demoWorld(t);
  const run = await runProgram({ config: demoConfig(dir) });
  const attest = stepCommands(run).find((r) => stepOf(r) === "attest")!;
  t.false(attest.inputs.create.includes("PRIVATE KEY"), "not on the command line");
  t.regex(attest.inputs.create, / --key-env SC_SIGNING_KEY /);
  // Sent to the engine as a secret (so the state holds it encrypted), and its output copy too.
  t.is(attest.wire.environment?.[SECRET_SIG_KEY], SECRET_SIG, JSON.stringify(attest.wire.environment).slice(0, 200));
  t.deepEqual(attest.additionalSecretOutputs, ["environment"]);
  const plain = { ...attest.wire, environment: undefined };
  t.false(JSON.stringify(plain).includes(TEST_SIGNING_KEY.split("\n")[1]), "the key is in no other input");

  const clear = await t.throwsAsync(runProgram({ config: demoConfig(dir), secretKeys: [] }));
  t.regex(clear!.message, /'secure-supply-chain:signingKey' is set in clear: set it with `pulumi config set --secret/);
  const none = await t.throwsAsync(runProgram({ config: { ...demoConfig(dir), [`${P}:signingKey`]: undefined as any } }));
  t.regex(none!.message, /'secure-supply-chain:signingKey' is required when attest is true/);
  const off = await runProgram({ config: { ...demoConfig(dir, { [`${P}:attest`]: "false" }), [`${P}:signingKey`]: undefined as any } });
  t.false(stepCommands(off).some((r) => stepOf(r) === "attest"));
  t.is(off.outputs.provenance, undefined);
});

test.serial("(mocked: no engine or nix in unit tests) triggers are content addresses: the drv path from the preview-time invoke, closure digest, image digest", async (t) => {
  const dir = demoWorld(t);
  const run = await runProgram({ config: demoConfig(dir) });
  const inv = run.invokes.find((i) => i.token === "command:local:run");
  t.truthy(inv, "the drv path comes from the local.run invoke (runs in preview too)");
  t.regex(inv!.inputs.command, /nix-instantiate .*default\.nix -A image/);
  t.regex(inv!.inputs.command, /supply-chain\.js demo-world/);
  const cmd = (s: string) => stepCommands(run).find((r) => stepOf(r) === s)!;
  t.deepEqual(cmd("build").inputs.triggers, [DRV]);
  t.deepEqual(cmd("closure").inputs.triggers, [DRV]);
  t.deepEqual(cmd("rebuild").inputs.triggers, [DRV, "c1osure"]);
  t.deepEqual(cmd("verify").inputs.triggers, [DRV, "sha256:1build", "run1"]);
  t.is(cmd("boot-test").inputs.triggers[0], "sha256:1build");
  t.regex(cmd("boot-test").inputs.triggers[1], /^sha256:[0-9a-f]{64}$/, "probe spec digest");
  t.regex(cmd("boot-test").inputs.create, / --out \S+\/boot-test$/, "the serial log stays in the work dir, not a new temp dir per boot");
  // No trigger that changes on every run (a timestamp would re-run everything on every `pulumi up`).
  const again = await runProgram({ config: demoConfig(dir) });
  for (const s of ["build", "closure", "rebuild", "verify", "boot-test"]) {
    const a = cmd(s).inputs;
    const b = stepCommands(again).find((r) => stepOf(r) === s)!.inputs;
    t.deepEqual(b.triggers, a.triggers, s);
    t.is(b.create, a.create, s);
  }
  // A different drv changes the build's trigger.
  const other = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-image.drv";
  const changed = await runProgram({ config: demoConfig(dir), drv: other });
  t.deepEqual(stepCommands(changed).find((r) => stepOf(r) === "build")!.inputs.triggers, [other]);
});

test.serial("(mocked: no engine or nix in unit tests) no command names the checkout's path: no dir, paths relative to the project (a moved checkout changes no input); file outputs name this checkout's files where they are", async (t) => {
  const root = path.resolve(__dirname, "..", "..");
  // The demo world where a stack has it, in the checkout's work dir, named relative to the project.
  fs.mkdirSync(path.join(root, ".supply-chain"), { recursive: true });
  const world = fs.mkdtempSync(path.join(root, ".supply-chain", "components-test-"));
  t.teardown(() => fs.rmSync(world, { recursive: true, force: true }));
  fs.writeFileSync(path.join(world, "probes.json"), JSON.stringify({ probes: [{ name: "reader", http: { port: 8000, path: "/healthz" } }] }));
  const rel = path.relative(root, world);
  for (const run of [await runProgram({ config: demoConfig(rel) }), await runProgram({ config: auditConfig(rel), stackOutputs: PUBLISHER })]) {
    const commands = stepCommands(run);
    t.true(commands.length > 0);
    for (const c of commands) {
      t.false(JSON.stringify(c.wire).includes(root), `${c.name} names ${root}: ${JSON.stringify(c.wire).slice(0, 300)}`);
      t.is(c.inputs.dir, undefined, `${c.name} runs in the provider's working directory, the project's`);
    }
    for (const i of run.invokes) t.false(JSON.stringify(i.inputs).includes(root), JSON.stringify(i.inputs));
  }
  // The publisher's files in this checkout (demo-audit of demo): named relative to the project too.
  const inCheckout = { ...PUBLISHER, closureFile: path.join(root, ".supply-chain/demo/closure/source-export.closure"), provenance: path.join(root, ".supply-chain/demo/attest/provenance.intoto.jsonl") };
  const create = String(stepCommands(await runProgram({ config: auditConfig(rel), stackOutputs: inCheckout }))[0].inputs.create);
  t.true(create.includes(" --closure .supply-chain/demo/closure/source-export.closure --attestation .supply-chain/demo/attest/provenance.intoto.jsonl "), create);
  // A step's JSON in the state names the checkout where it last ran: the outputs name this one's files
  // where they are here (the provenance), and keep the printed name where they are not (the SBOM: a
  // checkout sharing the state that did not run the step).
  const moved = (f: string) => `/elsewhere/checkout/.supply-chain/test/attest/${f}`;
  const here = path.join(root, ".supply-chain/test/attest/provenance.intoto.jsonl");
  t.false(fs.existsSync(path.join(root, ".supply-chain/test")), "no earlier run's files");
  fs.mkdirSync(path.dirname(here), { recursive: true });
  fs.writeFileSync(here, "{}\n");
  t.teardown(() => fs.rmSync(path.join(root, ".supply-chain/test"), { recursive: true, force: true }));
  const attest = { ...defaultOutputs().attest, provenance: moved("provenance.intoto.jsonl"), sbom: moved("sbom.cdx.json") };
  const run = await runProgram({ config: demoConfig(rel), steps: { attest } });
  t.is(run.outputs.provenance, here);
  t.is(run.outputs.sbom, moved("sbom.cdx.json"));
  t.is(run.outputs.verification, "/w/attest/verification.intoto.jsonl", "a file outside the work dir stays where it is");
});

test.serial("(mocked: no engine or nix in unit tests) offline: the demo stack's build and closure run with --offline; a nix stack's do not unless set", async (t) => {
  const has = (run: ProgramRun, s: string) => / --offline( |$)/.test(String(stepCommands(run).find((r) => stepOf(r) === s)!.inputs.create));
  const demo = await runProgram({ config: demoConfig(demoWorld(t)) });
  for (const s of ["build", "closure"]) t.true(has(demo, s), s);
  const nix = { [`${P}:source`]: "nix", [`${P}:file`]: "nix/default.nix", [`${P}:attribute`]: "iso", [`${P}:bootTest`]: "false", [`${P}:attest`]: "false" };
  const online = await runProgram({ config: nix });
  for (const s of ["build", "closure"]) t.false(has(online, s), s);
  const offline = await runProgram({ config: { ...nix, [`${P}:offline`]: "true" } });
  for (const s of ["build", "closure"]) t.true(has(offline, s), s);
});

test.serial("(mocked: no engine or nix in unit tests) a failed verdict fails the update by default and only warns with policy warn", async (t) => {
  const dir = demoWorld(t);
  const bad = { verify: { reproducible: false, checked: 4, matched: 3, mismatched: [{ path: "/nix/store/x-initrd", files: ["init"] }], report: "/w/verify.md" } };
  const err = await t.throwsAsync(runProgram({ config: demoConfig(dir), steps: bad }));
  t.regex(err!.message, /not reproducible: 1 of 4 store paths differ \(\/nix\/store\/x-initrd\)/);

  const warned = await runProgram({ config: demoConfig(dir, { [`${P}:policy`]: "warn" }), steps: bad });
  t.is(warned.outputs.reproducible, false);
  t.is(warned.outputs.reproducibleRatio, 0.75);
  const verify = stepCommands(warned).find((r) => stepOf(r) === "verify")!;
  t.true(verify.inputs.create.startsWith("out=$(node bin/supply-chain.js verify "), "warn tolerates a verdict (test/components/step-shell.test.ts)");
  const failing = await runProgram({ config: demoConfig(dir) });
  t.true(stepCommands(failing).find((r) => stepOf(r) === "verify")!.inputs.create.startsWith("node bin/supply-chain.js verify "), "fail tolerates nothing");

  const probeFailed = { "boot-test": { passed: false, accel: "tcg", bootSeconds: 9, probes: [{ name: "reader", ok: false, ms: 9, detail: "connection refused" }], serialLog: "/w/s.log" } };
  const bootErr = await t.throwsAsync(runProgram({ config: demoConfig(dir), steps: probeFailed }));
  t.regex(bootErr!.message, /boot test failed: reader \(connection refused\)/);
});

test.serial("(mocked: the docker provider cannot run here) docker isolation: digest-pinned image kept locally, no network, read-only closure and sources, exit code checked", async (t) => {
  const digest = "nixos/nix@sha256:" + "a".repeat(64);
  const config = {
    [`${P}:source`]: "nix",
    [`${P}:file`]: "nix/default.nix",
    [`${P}:attribute`]: "iso",
    [`${P}:isolation`]: "docker",
    [`${P}:rebuilderImage`]: digest,
    [`${P}:bootTest`]: "false",
    [`${P}:signingKey`]: TEST_SIGNING_KEY,
  };
  const run = await runProgram({ config });
  const image = run.resources.find((r) => r.type === "docker:index/remoteImage:RemoteImage")!;
  t.is(image.inputs.name, digest);
  t.true(image.inputs.keepLocally);
  const c = run.resources.find((r) => r.type === "docker:index/container:Container")!;
  t.is(c.inputs.image, digest);
  t.is(c.inputs.networkMode, "none");
  t.true(c.inputs.attach);
  t.true(c.inputs.logs);
  t.false(c.inputs.mustRun);
  const mounts = c.inputs.mounts as { source: string; target: string; readOnly: boolean }[];
  t.false(mounts.some((m) => m.source === "/w/closure/closure.nar"), "the closure step's file is never mounted (it could change after the check)");
  const closure = mounts.find((m) => m.source.endsWith("/rebuild/.closure-container/source-export.closure"));
  t.truthy(closure, "the copy check-closure staged and checked is mounted");
  t.true(closure!.readOnly, "closure mounted read-only");
  const checkout = path.resolve(__dirname, "..", "..");
  t.true(mounts.find((m) => m.source === checkout)!.readOnly, "sources (the checkout nix/ imports from) mounted read-only");
  t.is(mounts.filter((m) => !m.readOnly).length, 1, "only the work dir is writable");
  t.true(c.inputs.envs.includes(`SC_DRV=${DRV}`));
  // The source check runs before the container; verify reads the collected result.
  const check = run.resources.find((r) => r.name.endsWith("-check-sources"))!;
  t.regex(check.inputs.create, /check-closure --file nix\/default\.nix --attribute iso --closure \/w\/closure\/closure\.nar --stage \S+\/rebuild\/\.closure-container --closure-sha256 \S+/);
  t.true(dependsOn(run, c, check.urn));
  t.false(run.resources.some((r) => stepOf(r) === "rebuild"), "no bwrap rebuild command");
  t.is(run.outputs.reproducible, true);

  const err = await t.throwsAsync(runProgram({ config, steps: { containerExitCode: 3 } as any }));
  t.regex(err!.message, /the rebuild container exited with 3/);
});

test.serial("(mocked: no engine in unit tests) a wrong config key or value is one clear error naming the key and what is allowed", async (t) => {
  const dir = demoWorld(t);
  let err = await t.throwsAsync(runProgram({ config: demoConfig(dir, { [`${P}:isolaton`]: "bwrap" }) }));
  t.regex(err!.message, /config key 'secure-supply-chain:isolaton' is not known \(allowed keys: .*secure-supply-chain:isolation/);
  err = await t.throwsAsync(runProgram({ config: demoConfig(dir, { [`${P}:isolation`]: "chroot" }) }));
  t.is(err!.message, `config key 'secure-supply-chain:isolation' has value "chroot"; allowed: one of "bwrap", "docker"`);
  t.is(err!.constructor.name, "RunError", "ends the program without a stack trace");
  err = await t.throwsAsync(runProgram({ config: demoConfig(dir, { [`${P}:isolation`]: "docker" }) }));
  t.regex(err!.message, /'secure-supply-chain:rebuilderImage' is required with isolation "docker"; allowed: an image pinned by digest/);
});

test.serial("(mocked: no engine or nix in unit tests) builders and maxJobs reach build, rebuild and the audit as --builders/--max-jobs, and nothing else; unset, no command has them", async (t) => {
  const spec = "ssh-ng://root@b1 x86_64-linux /etc/b.key 1 1 - - c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUovYTJmT2hoQUhnaE5BQVRKWVZMYnNRa1Z4N0Z6U2dLOWlsay9DVzRhVUUgYjEK";
  const placed = { [`${P}:builders`]: spec, [`${P}:maxJobs`]: "0" };
  const flags = (run: ProgramRun) => Object.fromEntries(stepCommands(run).map((r) => [stepOf(r), String(r.inputs.create).includes(` --builders ${shellQuote(spec)} --max-jobs 0`)]));
  const run = await runProgram({ config: demoConfig(demoWorld(t), placed) });
  t.deepEqual(flags(run), { build: true, closure: false, rebuild: true, verify: false, "boot-test": false, attest: false });
  const audit = await runProgram({ config: auditConfig(demoWorld(t), placed), stackOutputs: PUBLISHER });
  t.deepEqual(flags(audit), { audit: true });
  const plain = await runProgram({ config: demoConfig(demoWorld(t)) });
  t.false(stepCommands(plain).some((r) => /--builders|--max-jobs/.test(String(r.inputs.create))));
});

function auditConfig(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...demoConfig(dir), [`${P}:role`]: "audit", [`${P}:publisherStack`]: "organization/secure-supply-chain/demo", [`${P}:publisherKey`]: "stacks/demo-signing.pub", ...extra };
}
const PUBLISHER = { closureFile: "/p/closure/source-export.closure", closureSha256: "c1osure", provenance: "/p/attest/provenance.intoto.jsonl" };

test.serial("(mocked: no engine or nix in unit tests) role audit: the publisher's stack by StackReference, one audit step, nothing of the chain", async (t) => {
  const run = await runProgram({ config: auditConfig(demoWorld(t)), stackOutputs: PUBLISHER });
  t.deepEqual(stepCommands(run).map(stepOf), ["audit"]);
  // The publisher's stack is read (not declared): one StackReference of the configured stack, in the Audit.
  const refs = run.resources.filter((r) => r.type === "pulumi:pulumi:StackReference");
  t.deepEqual(refs.map((r) => [r.kind, r.id, r.inputs.name]), [["read", "organization/secure-supply-chain/demo", "organization/secure-supply-chain/demo"]]);
  t.is(refs[0].parent, run.resources.find((r) => r.type === `${P}:components:Audit`)!.urn);
  // The closure and provenance paths in the command come from that StackReference's outputs.
  const cmd = stepCommands(run)[0];
  const create = String(cmd.inputs.create);
  for (const arg of ["--closure /p/closure/source-export.closure", "--attestation /p/attest/provenance.intoto.jsonl", "--public-key stacks/demo-signing.pub", "--isolation bwrap", "--key-env SC_SIGNING_KEY"]) t.true(create.includes(arg), arg);
  t.false(create.includes("PRIVATE KEY"), "the auditor's key travels in the environment only");
  t.is(cmd.wire.environment?.[SECRET_SIG_KEY], SECRET_SIG, "and that environment is a secret");
  t.is(run.outputs.auditReproduced, true);
  t.is(run.outputs.auditAttestation, "/w/audit/audit.provenance.intoto.jsonl");
  t.is(run.outputs.auditorKeyId, "a1");
  t.is(run.outputs.auditedStack, "organization/secure-supply-chain/demo");
  t.regex(String(run.outputs.auditorPublicKey), /^-----BEGIN PUBLIC KEY-----/);
  t.is(run.outputs.imageDrvPath, undefined, "an audit stack claims no image of its own");
  t.is(run.outputs.provenance, undefined);
});

test.serial("(mocked: no engine or nix in unit tests) role audit: a changed provenance re-runs the audit (a trigger), an unchanged one does not", async (t) => {
  const dir = demoWorld(t);
  const prov = path.join(dir, "provenance.intoto.jsonl");
  fs.writeFileSync(prov, "{}\n");
  const triggers = async () => {
    const run = await runProgram({ config: auditConfig(dir), stackOutputs: { ...PUBLISHER, provenance: prov } });
    return JSON.stringify(stepCommands(run)[0].inputs.triggers);
  };
  const first = await triggers();
  t.is(await triggers(), first);
  fs.writeFileSync(prov, "{\"changed\":1}\n");
  t.not(await triggers(), first);
  fs.appendFileSync(path.join(dir, "probes.json"), " ");
  const afterWorld = await triggers();
  fs.appendFileSync(path.join(dir, "probes.json"), " ");
  t.not(await triggers(), afterWorld, "an edit of the reviewed files re-runs it too");
});

test.serial("(mocked: no engine or nix in unit tests) role audit: not reproduced fails the update under policy fail, naming the path", async (t) => {
  const steps = { audit: { ...defaultOutputs().audit, reproduced: false, reason: "not reproduced: /nix/store/x-dep rebuilt with NAR sha256 aa, the publisher attests bb" } };
  await t.throwsAsync(runProgram({ config: auditConfig(demoWorld(t)), stackOutputs: PUBLISHER, steps }), { message: /audit of organization\/secure-supply-chain\/demo: not reproduced: \/nix\/store\/x-dep/ });
  const warned = await runProgram({ config: auditConfig(demoWorld(t), { [`${P}:policy`]: "warn" }), stackOutputs: PUBLISHER, steps });
  t.is(warned.outputs.auditReproduced, false);
});

test.serial("(mocked: no engine or nix in unit tests) role audit: a publisher stack without provenance is one error naming the output", async (t) => {
  await t.throwsAsync(runProgram({ config: auditConfig(demoWorld(t)), stackOutputs: { closureFile: "/p/c" } }), { message: /stack organization\/secure-supply-chain\/demo has no output 'provenance'/ });
});

test.serial("(mocked: no engine or nix in unit tests) role audit: a publisherKey that is not an Ed25519 public key is one config error naming the key and the file", async (t) => {
  await t.throwsAsync(runProgram({ config: auditConfig(demoWorld(t), { [`${P}:publisherKey`]: "README.md" }), stackOutputs: PUBLISHER }), { message: /config key 'secure-supply-chain:publisherKey': README.md is not a readable Ed25519 public key/ });
});
