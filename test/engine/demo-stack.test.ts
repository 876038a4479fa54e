// The real Pulumi engine on the demo stack, end to end: the CLI (built from Go modules by
// scripts/pulumi-engine.sh when none is on PATH), the program, the steps, nix, bwrap and QEMU.
// Built here, the nodejs language host and the command provider are the minimal stand-ins of
// scripts/pulumi-engine/cmd (their official modules are not served by this Go proxy); with an
// official Pulumi install on PATH the same test runs against the official plugins.
// The project is copied to a temp dir with its own file:// backend, so nothing here touches the
// checkout's state. Steps run in order and share that state.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import * as engine from "./engine-helpers";
import { cliJson, DEMO_PUB, Engine, PROJECT, projectCopy, ROOT, verifyDemoAttestations } from "./engine-helpers";

interface Ctx extends Engine {
  drvPath?: string;
  outputs?: Record<string, any>;
}
const ctx = {} as Ctx;

const pulumi = (args: string[], opts: { cwd?: string; allowFailure?: boolean } = {}) => engine.pulumi(ctx, args, opts);
const outputs = (stack: string, cwd?: string) => engine.outputs(ctx, stack, cwd);
const lastChanges = (stack: string) => engine.lastChanges(ctx, stack);

/** The base64 lines of the demo key's PEM, decrypted from the stack file by the engine. */
function demoKeyBody(): string[] {
  const pem = execFileSync("pulumi", ["config", "get", `${PROJECT}:signingKey`, "--stack", "demo", "--non-interactive"], { cwd: ctx.dir, env: ctx.env, encoding: "utf8" });
  return pem.split("\n").filter((l) => l && !l.startsWith("-----"));
}

test.before(() => {
  Object.assign(ctx, projectCopy("sc-engine-"));
});

test.after.always(async () => {
  if (!ctx.dir) return;
  // A failed step may have left resources: destroy them (their delete runs nothing) before removing.
  for (const [stack, cwd] of [["dev", path.join(ctx.dir, "consumer")], ["gate", path.join(ctx.dir, "consumer")], ["demo-audit", ctx.dir], ["demo", ctx.dir], ["broken", ctx.dir]] as const) {
    await pulumi(["destroy", "--yes", "--stack", stack], { cwd, allowFailure: true });
  }
  fs.rmSync(ctx.dir, { recursive: true, force: true });
});

test.serial("(real engine) pulumi up on the demo stack runs every step: reproducible, boot test passed", async (t) => {
  await pulumi(["stack", "init", "demo"]);
  const up = await pulumi(["up", "--yes", "--stack", "demo"]);
  t.log(up.stdout.split("\n").filter((l) => /created|Resources:|Duration/.test(l)).join("\n"));
  const o = await outputs("demo");
  ctx.outputs = o;
  t.regex(o.imageDrvPath, /^\/nix\/store\/[0-9a-z]{32}-.+\.drv$/);
  t.regex(o.imageNarHash, /^sha256:[0-9a-z]{52}$/);
  t.regex(o.closureSha256, /^[0-9a-f]{64}$/);
  t.true(o.closureSources > 0);
  t.is(o.reproducible, true);
  t.is(o.reproducibleRatio, 1);
  t.is(o.bootTestPassed, true);
  t.deepEqual(o.rebuildInterfaces, ["lo"]);
  const changes = await lastChanges("demo");
  // Stack + SupplyChain + 6 components + 6 step commands (+ the default command provider).
  t.true((changes.create ?? 0) >= 14, JSON.stringify(changes));

  // Signed with the demo stack's key: its public half is the committed one, and our verifier agrees.
  t.is(o.attestationPublicKey, fs.readFileSync(DEMO_PUB, "utf8"));
  t.regex(o.attestationKeyId, /^[0-9a-f]{64}$/);
  t.regex(o.sbomSha256, /^[0-9a-f]{64}$/);
  t.deepEqual(verifyDemoAttestations(o), [true, true], "provenance and verification summary verify");
});

test.serial("(real engine) the signing key is in no state, log or output in clear", async (t) => {
  const keyLines = demoKeyBody();
  t.true(keyLines.length >= 1);
  const exported = (await pulumi(["stack", "export", "--stack", "demo"])).stdout;
  const history = (await pulumi(["stack", "history", "--json", "--stack", "demo"])).stdout;
  const files = [exported, history, ...fs.readdirSync(ctx.state, { recursive: true }).map((f) => path.join(ctx.state, String(f))).filter((f) => fs.statSync(f).isFile()).map((f) => fs.readFileSync(f, "utf8"))];
  for (const text of files) for (const line of keyLines) t.false(text.includes(line), "a line of the key's PEM body is in the state or history");
  const attest = JSON.parse(exported).deployment.resources.find((r: any) => r.urn.endsWith("::chain-attest-attest"));
  t.truthy(attest, "the attest command is in the state");
  t.truthy(attest.inputs.environment?.ciphertext, "its environment input is stored encrypted");
  t.truthy(attest.outputs.environment?.ciphertext, "and so is the output copy");
  t.false(attest.inputs.create.includes("PRIVATE KEY"));
});

test.serial("(real engine) a second pulumi up changes nothing and runs no step, with a built library (dist/) beside index.ts", async (t) => {
  const rebuildJson = path.join(ctx.dir, ".supply-chain", "demo", "rebuild", "rebuild.json");
  const before = JSON.parse(fs.readFileSync(rebuildJson, "utf8")).runId;
  const closureMtime = fs.statSync(ctx.outputs!.closureFile).mtimeMs;
  // A built library (dist/, as `npm pack` or `npm run build:lib` leave it) must not become the program:
  // package.json's "exports" names it, and the runner takes that over "main" unless Pulumi.yaml names one.
  const decoy = path.join(ctx.dir, "dist", "pipeline", "library.js");
  fs.mkdirSync(path.dirname(decoy), { recursive: true });
  fs.writeFileSync(decoy, 'throw new Error("the runner ran dist/pipeline/library.js, not index.ts");\n');
  await pulumi(["up", "--yes", "--stack", "demo"]);
  const changes = await lastChanges("demo");
  t.deepEqual(Object.keys(changes), ["same"], JSON.stringify(changes));
  t.is(JSON.parse(fs.readFileSync(rebuildJson, "utf8")).runId, before, "the rebuild did not run again");
  t.is(fs.statSync(ctx.outputs!.closureFile).mtimeMs, closureMtime, "the closure was not exported again");
  t.deepEqual(await outputs("demo"), ctx.outputs);
});

const AUDIT_PUB = path.join(ROOT, "stacks", "demo-audit-signing.pub");

test.serial("(real engine) the demo-audit stack (role audit) reads the demo stack by StackReference, audits it with its own work dir and key and signs: reproduced", async (t) => {
  await pulumi(["stack", "init", "demo-audit"]);
  const up = await pulumi(["up", "--yes", "--stack", "demo-audit"]);
  t.log(up.stdout.split("\n").filter((l) => /created|Resources:|Duration/.test(l)).join("\n"));
  const o = await outputs("demo-audit");
  t.is(o.role, "audit");
  t.is(o.auditedStack, `organization/${PROJECT}/demo`);
  t.is(o.auditReproduced, true);
  t.is(o.auditedDrvPath, ctx.outputs!.imageDrvPath, "the reviewed demo world evaluates, inside the audit, to the attested drv");
  t.is(o.auditedOutPath, ctx.outputs!.imageOutPath);
  t.is(o.publisherKeyId, ctx.outputs!.attestationKeyId);
  t.is(o.auditorPublicKey, fs.readFileSync(AUDIT_PUB, "utf8"));
  t.not(o.auditorKeyId, ctx.outputs!.attestationKeyId, "the auditor signs with its own key");
  t.true(o.auditAttestation.startsWith(path.join(ctx.dir, ".supply-chain", "demo-audit")), o.auditAttestation);
  const v = cliJson(["verify-attestation", "--attestation", o.auditAttestation, "--public-key", AUDIT_PUB, "--predicate-type", "https://slsa.dev/provenance/v1", "--store-path", ctx.outputs!.imageOutPath]);
  t.true(v.verified);
  t.is(v.keyid, o.auditorKeyId);
  const report = JSON.parse(fs.readFileSync(o.auditReport, "utf8"));
  t.deepEqual(report.interfaces, ["lo"]);
  t.true(report.checked > 0 && report.matched === report.checked, JSON.stringify({ checked: report.checked, matched: report.matched }));

  await pulumi(["up", "--yes", "--stack", "demo-audit"]);
  t.deepEqual(Object.keys(await lastChanges("demo-audit")), ["same"], "an unchanged publisher and checkout re-run nothing");
});

test.serial("(real engine) a second project reads the outputs through a StackReference", async (t) => {
  const cwd = path.join(ctx.dir, "consumer");
  await pulumi(["stack", "init", "dev"], { cwd });
  await pulumi(["config", "set", "supplyChainStack", `organization/${PROJECT}/demo`, "--stack", "dev"], { cwd });
  await pulumi(["config", "set", "publisherPublicKey", "--stack", "dev", "--", fs.readFileSync(path.join(ROOT, "stacks", "demo-signing.pub"), "utf8")], { cwd });
  await pulumi(["up", "--yes", "--stack", "dev"], { cwd });
  const o = await outputs("dev", cwd);
  t.deepEqual(o.approvedImage, { path: ctx.outputs!.imageOutPath, narHash: ctx.outputs!.imageNarHash });
  t.is(o.imageDrvPath, ctx.outputs!.imageDrvPath);
  t.is(o.closureSha256, ctx.outputs!.closureSha256);

  // Another publisher's key: the same evidence does not verify, and the consumer says why.
  const other = fs.mkdtempSync(path.join(os.tmpdir(), "sc-other-key-"));
  cliJson(["keygen", "--out", other]);
  await pulumi(["config", "set", "publisherPublicKey", "--stack", "dev", "--", fs.readFileSync(path.join(other, "signing.pub"), "utf8")], { cwd });
  const wrongKey = await pulumi(["up", "--yes", "--stack", "dev"], { cwd, allowFailure: true });
  t.not(wrongKey.code, 0);
  t.regex(wrongKey.stdout + wrongKey.stderr, /is not approved: the provenance attestation .* does not verify with publisherPublicKey: .*key mismatch/);
  fs.rmSync(other, { recursive: true, force: true });

  // The right key, but one byte of the signed provenance changed.
  await pulumi(["config", "set", "publisherPublicKey", "--stack", "dev", "--", fs.readFileSync(path.join(ROOT, "stacks", "demo-signing.pub"), "utf8")], { cwd });
  const file = ctx.outputs!.provenance as string;
  const original = fs.readFileSync(file);
  const envelope = JSON.parse(original.toString());
  const payload = Buffer.from(envelope.payload, "base64");
  payload[payload.length >> 1] ^= 0x01;
  fs.writeFileSync(file, JSON.stringify({ ...envelope, payload: payload.toString("base64") }) + "\n");
  try {
    const tampered = await pulumi(["up", "--yes", "--stack", "dev"], { cwd, allowFailure: true });
    t.not(tampered.code, 0);
    t.regex(tampered.stdout + tampered.stderr, /is not approved: the provenance attestation .* does not verify with publisherPublicKey: .*bad signature/);
  } finally {
    fs.writeFileSync(file, original);
  }
  await pulumi(["up", "--yes", "--stack", "dev"], { cwd });

  // N of M: the demo-audit stack's signed provenance must agree with the publisher's.
  const cset = (...a: string[]) => pulumi(["config", "set", "--stack", "dev", ...a], { cwd });
  const auditorKey = fs.readFileSync(AUDIT_PUB, "utf8");
  await cset("--path", "auditors[0].stack", `organization/${PROJECT}/demo-audit`);
  await cset("--path", "auditors[0].publicKey", "--", auditorKey);
  await cset("requiredAgreeing", "1");
  await pulumi(["up", "--yes", "--stack", "dev"], { cwd });
  const auditorKeyId = (await outputs("demo-audit")).auditorKeyId;
  t.deepEqual((await outputs("dev", cwd)).approvedBy, [
    { stack: `organization/${PROJECT}/demo`, keyid: ctx.outputs!.attestationKeyId },
    { stack: `organization/${PROJECT}/demo-audit`, keyid: auditorKeyId },
  ]);

  // Two required, one of them a stack that does not exist: refused, naming it.
  const spare = fs.mkdtempSync(path.join(os.tmpdir(), "sc-spare-key-"));
  cliJson(["keygen", "--out", spare]);
  await cset("--path", "auditors[1].stack", `organization/${PROJECT}/no-such-audit`);
  await cset("--path", "auditors[1].publicKey", "--", fs.readFileSync(path.join(spare, "signing.pub"), "utf8"));
  await cset("requiredAgreeing", "2");
  const missing = await pulumi(["up", "--yes", "--stack", "dev"], { cwd, allowFailure: true });
  t.not(missing.code, 0);
  t.regex(missing.stdout + missing.stderr, /1 of the 2 required independent agreeing attestations; agreeing: organization\/secure-supply-chain\/demo-audit .*missing: organization\/secure-supply-chain\/no-such-audit/);

  // The real auditor's stack, but the consumer trusts another key for it: its claims are not believed.
  await cset("--path", "auditors[0].publicKey", "--", fs.readFileSync(path.join(spare, "signing.pub"), "utf8"));
  await cset("requiredAgreeing", "1");
  await pulumi(["config", "rm", "--path", "auditors[1]", "--stack", "dev"], { cwd });
  const wrongAuditorKey = await pulumi(["up", "--yes", "--stack", "dev"], { cwd, allowFailure: true });
  t.not(wrongAuditorKey.code, 0);
  t.regex(wrongAuditorKey.stdout + wrongAuditorKey.stderr, /0 of the 1 required .*not verified: organization\/secure-supply-chain\/demo-audit/);
  fs.rmSync(spare, { recursive: true, force: true });
  await cset("--path", "auditors[0].publicKey", "--", auditorKey);
  await pulumi(["up", "--yes", "--stack", "dev"], { cwd });
});

test.serial("(real engine) after changing demo-world sources, preview --diff names the changed sources and shows the drv change and the replacements down the chain", async (t) => {
  // The demo stack runs the system image: its guest's PID 1 is rootfs/system-init.
  const init = path.join(ctx.dir, ".supply-chain", "demo", "demo-world", "rootfs", "system-init");
  t.true(fs.existsSync(init), init);
  fs.appendFileSync(init, "\n# reviewed change\n");
  // And a re-pinned source (evaluation only: preview realises nothing).
  const lockFile = path.join(ctx.dir, ".supply-chain", "demo", "demo-world", "lock.json");
  const lock = JSON.parse(fs.readFileSync(lockFile, "utf8"));
  const busybox = lock.sources.busybox.hash.value;
  lock.sources.busybox.hash.value = "0".repeat(64);
  fs.writeFileSync(lockFile, JSON.stringify(lock, null, 2));
  const preview = await pulumi(["preview", "--diff", "--stack", "demo"]);
  const text = preview.stdout;
  // The engine prints a program's info diagnostics on stderr.
  const info = preview.stderr;
  t.true(info.includes(`source changed: busybox-static sha256:${busybox} → sha256:${"0".repeat(64)}`), `the preview names the re-pinned source:\n${info.slice(-3000)}`);
  t.regex(info, /evaluation-time paths: 1 added \(system-init\), 1 removed/);
  t.false(info.includes("linux-image"), "the unchanged kernel package is not named");
  lock.sources.busybox.hash.value = busybox;
  fs.writeFileSync(lockFile, JSON.stringify(lock, null, 2));
  const oldDrv = ctx.outputs!.imageDrvPath as string;
  t.true(text.includes(oldDrv), "the old drv path is shown");
  const newDrv = /\/nix\/store\/[0-9a-z]{32}-system-image\.drv/g;
  const shown = new Set(text.match(newDrv) ?? []);
  shown.delete(oldDrv);
  t.is(shown.size, 1, `one new drv path in the diff:\n${text.slice(0, 4000)}`);

  const json = JSON.parse((await pulumi(["preview", "--json", "--stack", "demo"])).stdout);
  const op = (suffix: string) => json.steps.find((s: any) => s.urn.endsWith(`::${suffix}`))?.op;
  for (const r of ["chain-build-build", "chain-closure-closure", "chain-rebuild-rebuild", "chain-verify-verify"]) t.is(op(r), "replace", r);
  t.not(op("chain-boot-test-boot-test"), "same", "the boot test re-runs for the new image");
  // Preview ran no step: the state still describes the old image.
  t.is((await outputs("demo")).imageDrvPath, oldDrv);
});

test.serial("(real engine) a non-reproducible target fails pulumi up; policy warn only warns, and the consumer refuses the image", async (t) => {
  const set = (k: string, v: string) => pulumi(["config", "set", `${PROJECT}:${k}`, v, "--stack", "broken"]);
  await pulumi(["stack", "init", "broken"]);
  const keys = fs.mkdtempSync(path.join(os.tmpdir(), "sc-broken-key-"));
  cliJson(["keygen", "--out", keys]);
  await pulumi(["config", "set", "--secret", `${PROJECT}:signingKey`, "--stack", "broken", "--", fs.readFileSync(path.join(keys, "signing.key"), "utf8")]);
  await set("source", "demo-world");
  await set("attribute", "nonReproducible");
  await set("isolation", "bwrap");
  await set("bootTest", "false");
  const failed = await pulumi(["up", "--yes", "--stack", "broken"], { allowFailure: true });
  t.not(failed.code, 0, "policy fail: the update fails");
  t.regex(failed.stdout + failed.stderr, /not reproducible|differ/i);

  await set("policy", "warn");
  const warned = await pulumi(["up", "--yes", "--stack", "broken"]);
  t.regex(warned.stdout + warned.stderr, /policy "warn"|warning/i);
  const o = await outputs("broken");
  t.is(o.reproducible, false);
  t.true(o.reproducibleRatio < 1);

  const cwd = path.join(ctx.dir, "consumer");
  await pulumi(["stack", "init", "gate"], { cwd });
  await pulumi(["config", "set", "supplyChainStack", `organization/${PROJECT}/broken`, "--stack", "gate"], { cwd });
  await pulumi(["config", "set", "publisherPublicKey", "--stack", "gate", "--", fs.readFileSync(path.join(keys, "signing.pub"), "utf8")], { cwd });
  fs.rmSync(keys, { recursive: true, force: true });
  const refused = await pulumi(["up", "--yes", "--stack", "gate"], { cwd, allowFailure: true });
  t.not(refused.code, 0);
  t.regex(refused.stdout + refused.stderr, /is not approved: the signed verification summary says FAILED/);
  await pulumi(["destroy", "--yes", "--stack", "broken"]);
});

test.serial("(real engine) pulumi destroy leaves no resources", async (t) => {
  await pulumi(["destroy", "--yes", "--stack", "dev"], { cwd: path.join(ctx.dir, "consumer") });
  await pulumi(["destroy", "--yes", "--stack", "demo-audit"]);
  await pulumi(["destroy", "--yes", "--stack", "demo"]);
  const exported = JSON.parse((await pulumi(["stack", "export", "--stack", "demo"])).stdout);
  t.deepEqual(exported.deployment.resources ?? [], []);
});
