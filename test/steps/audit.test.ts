// `supply-chain audit` as an independent party runs it: the publisher's chain (demo world, build,
// closure, rebuild, verify, attest) first, then the world's file:// sources are moved away and the audit
// runs on an empty store of its own, isolated, holding only the checkout, the closure, the signed
// provenance and the publisher's public key. Each check is shown refusing a case built to fail it.
import test from "ava";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { signEnvelope, INTOTO_PAYLOAD_TYPE, parsePrivateKey } from "../../pipeline/lib/dsse";
import { fileReader, parseExport, ExportedPath } from "../../pipeline/lib/nar";
import { DEFAULT_CACHE_DIR, findKernelDeb } from "../../pipeline/steps/demo-world";
import { cli } from "../fixtures/closure-world/world";
import { payloadOf } from "./attest.helpers";
import { hostNixVersion, nixRoot } from "../helpers/nix-root";
import { mountTmpfs } from "../helpers/tmpfs";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "audit-test-"));
const S: Record<string, any> = {};

function step(name: string, args: string[]): any {
  const r = cli([name, ...args]);
  if (r.code !== 0) throw new Error(`${name} failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
  fs.writeFileSync(path.join(dir, `${name}.json`), r.stdout);
  return r.json;
}

const nix = (cmd: string, args: string[], input?: Buffer) => execFileSync(cmd, args, { input, maxBuffer: 1 << 30 });

test.before(async () => {
  // The world's kernel package comes from a cache of its own, so it can be moved away like the busybox NAR.
  const cache = path.join(dir, "cache");
  fs.mkdirSync(cache);
  const deb = findKernelDeb(process.env.SUPPLY_CHAIN_CACHE ?? DEFAULT_CACHE_DIR);
  fs.copyFileSync(deb.file, path.join(cache, path.basename(deb.file)));
  S.world = step("demo-world", [path.join(dir, "world"), "--cache-dir", cache]);
  S.target = ["--file", S.world.file, "--attribute", S.world.attribute];
  S.build = step("build", [...S.target, "--offline"]);
  S.closure = step("closure", [...S.target, "--out", path.join(dir, "closure")]);
  step("rebuild", [...S.target, "--closure", S.closure.closureFile, "--isolation", "bwrap", "--out", path.join(dir, "rebuild")]);
  step("verify", [...S.target, "--rebuilt", path.join(dir, "rebuild.json")]);
  S.publisher = step("keygen", ["--out", path.join(dir, "publisher")]);
  S.auditor = step("keygen", ["--out", path.join(dir, "auditor")]);
  S.other = step("keygen", ["--out", path.join(dir, "other")]);
  step("attest", ["--build", path.join(dir, "build.json"), "--closure", path.join(dir, "closure"), "--verify", path.join(dir, "verify.json"), "--key", S.publisher.privateKey, "--out", path.join(dir, "attest")]);
  S.provenance = path.join(dir, "attest", "provenance.intoto.jsonl");
  // The auditor's machine has none of the sources' original locations.
  fs.renameSync(path.join(dir, "world", "bootstrap"), path.join(dir, "bootstrap-moved-away"));
  fs.rmSync(cache, { recursive: true });
  S.exported = [] as ExportedPath[];
  await parseExport(fileReader(S.closure.closureFile), { algos: ["sha256"], onPath: (e) => S.exported.push(e) });
});

const sha256Of = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");

/** The audit as the auditor runs it. A closure other than the publisher's comes with its own digest (as a
 * publisher who signed it would give): the check under test is then the one after the digest. */
function audit(name: string, over: { closure?: string; attestation?: string; publicKey?: string; file?: string; key?: boolean } = {}) {
  const args = ["audit", "--file", over.file ?? S.world.file, "--attribute", S.world.attribute, "--closure", over.closure ?? S.closure.closureFile,
    "--attestation", over.attestation ?? S.provenance, "--public-key", over.publicKey ?? S.publisher.publicKey, "--isolation", "bwrap", "--out", path.join(dir, name)];
  if (over.key !== false) args.push("--key", S.auditor.privateKey);
  if (over.closure) args.push("--closure-sha256", sha256Of(over.closure));
  return cli(args);
}

/** A closure of some of the original's paths (each path's bytes as exported), plus extra export streams. */
function closureOf(name: string, keep: (e: ExportedPath) => boolean, extra: Buffer[] = []): string {
  const file = path.join(dir, name);
  const parts = S.exported.filter(keep).map((e: ExportedPath) => nix("nix-store", ["--export", e.path]).subarray(0, -8));
  // An export stream is its paths' records followed by one 8-byte zero marker.
  fs.writeFileSync(file, Buffer.concat([...parts, ...extra.map((b) => b.subarray(0, -8)), Buffer.alloc(8)]));
  return file;
}

test.serial("the whole audit, in an empty store with the file:// sources moved away: reproduced, and the auditor's own signed provenance verifies", (t) => {
  t.false(fs.existsSync(new URL(JSON.parse(fs.readFileSync(S.world.pins, "utf8"))["demo-lib"].url).pathname));
  const r = audit("ok");
  t.is(r.code, 0, r.stderr);
  t.true(r.json.reproduced);
  t.deepEqual(r.json.mismatched, []);
  const attested = payloadOf(S.provenance).subject.filter((s: any) => s.name.startsWith("/nix/store/"));
  t.is(r.json.checked, attested.length);
  t.is(r.json.matched, attested.length);
  t.deepEqual(r.json.interfaces, ["lo"]);
  t.is(r.json.outPath, S.build.outPath);
  // The pinned library came from the closure: the evaluation ran with its tarball gone.
  t.deepEqual(r.json.closure.pinned, [`${S.world.pins}#demo-lib`]);
  const mine = cli(["verify-attestation", "--attestation", r.json.attestation, "--public-key", S.auditor.publicKey, "--store-path", S.build.outPath]);
  t.is(mine.code, 0, mine.stderr);
  t.is(payloadOf(r.json.verification).predicate.verificationResult, "PASSED");
  // It names the publisher's provenance by the digest of the bytes it verified.
  t.deepEqual(payloadOf(r.json.verification).predicate.inputAttestations, [{ uri: S.provenance, digest: { sha256: sha256Of(S.provenance) } }]);
  S.auditorProvenance = r.json.attestation;
  // Publisher and auditor, each with its own key, agree on every path of the derivation.
  const c = cli(["challenge", "--attestation", S.provenance, "--public-key", S.publisher.publicKey, "--attestation", r.json.attestation, "--public-key", S.auditor.publicKey]);
  t.is(c.code, 0, c.stderr);
  t.deepEqual(c.json.builders, [S.publisher.keyid, S.auditor.keyid]);
  t.is(c.json.paths.length, r.json.checked);
});

test.serial("a disk full under --out is the auditor's machine refusing (exit 2, one line naming ENOSPC and the log), not a verdict on the publisher", (t) => {
  const out = path.join(dir, "disk-full");
  // Room for the staged copy of the closure, not for importing it as well.
  const unmount = mountTmpfs(out, `${Math.ceil((fs.statSync(S.closure.closureFile).size * 1.4) / 2 ** 20)}m`);
  try {
    const r = audit("disk-full");
    t.is(r.code, 2, r.stderr.slice(-3000));
    t.is(r.stdout, "", "no verdict on stdout: reproduced: false would be a claim about the publisher's image");
    const own = r.stderr.split("\n").filter((l) => l.startsWith("supply-chain audit:"));
    t.is(own.length, 1, r.stderr.slice(-3000));
    t.regex(own[0], new RegExp(`no space left on device \\(ENOSPC, the isolated rebuild writing under ${out}; log ${out}/audit\\.log\\)`));
    t.deepEqual(fs.readdirSync(out).filter((e) => e.startsWith(".audit-")), [], "the run's private directory is removed");
  } finally {
    unmount();
  }
});

test.serial("a tampered pinned input is refused before anything is imported: other bytes under the pin's path, or other bytes under their own path", (t) => {
  const pinnedPath = JSON.parse(fs.readFileSync(path.join(dir, "closure", "manifest.json"), "utf8")).pinnedInputs[0].path;
  // 1. Same path, one byte flipped in its default.nix: the name no longer commits to the bytes.
  const flipped = path.join(dir, "flipped.closure");
  const bytes = Buffer.from(fs.readFileSync(S.closure.closureFile));
  const at = bytes.indexOf(Buffer.from("virtioNetModules"), S.exported.find((e: ExportedPath) => e.path === pinnedPath)!.narStart);
  t.true(at > 0);
  bytes[at] ^= 0x20;
  fs.writeFileSync(flipped, bytes);
  const a = audit("tampered-same-path", { closure: flipped });
  t.is(a.code, 1, a.stderr);
  t.true(a.json.refused);
  t.regex(a.json.reason, /^refusing to import .*nix\/sources\.json#demo-lib/);
  t.true(a.json.notSelfCertifying.includes(pinnedPath));
  // Nothing ran in the isolation: no import, no evaluation.
  t.false(fs.existsSync(path.join(dir, "tampered-same-path", "audit.log")));
  // 2. A library with other code, added to a store under the name "source": a valid, self-certifying
  // path — but not the bytes nix/sources.json pins.
  const fake = path.join(dir, "fake", "source");
  fs.mkdirSync(fake, { recursive: true });
  fs.writeFileSync(path.join(fake, "default.nix"), '{ virtioNetModules = [ ]; kernelCmdline = "init=/bin/sh"; }\n');
  const fakePath = nix("nix-store", ["--add", fake]).toString().trim();
  const swapped = closureOf("swapped.closure", (e) => e.path !== pinnedPath, [nix("nix-store", ["--export", fakePath])]);
  const b = audit("tampered-own-path", { closure: swapped, attestation: S.provenance });
  t.is(b.code, 1, b.stderr);
  t.deepEqual(b.json.notSelfCertifying, []);
  t.deepEqual(b.json.missingPins.map((p: any) => p.pin), [`${S.world.pins}#demo-lib`]);
  t.false(fs.existsSync(path.join(dir, "tampered-own-path", "audit.log")));
});

test.serial("a source the host's store holds but the closure lacks fails the audit before building, instead of being fetched", (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, "closure", "manifest.json"), "utf8"));
  const busybox = manifest.sources.find((s: any) => s.name === "busybox-static").path;
  t.true(fs.existsSync(busybox), "the host's store has it");
  const without = closureOf("without-busybox.closure", (e) => e.path !== busybox);
  const r = audit("missing", { closure: without });
  t.is(r.code, 1, r.stderr);
  t.regex(r.json.reason, new RegExp(`^closure rejected before building: 1 missing source\\(s\\): ${busybox}`));
  t.false(fs.existsSync(path.join(dir, "missing", "rebuild")));
  // Without naming its digest, the closure digest the provenance records refuses it first.
  const plain = cli(["audit", ...S.target, "--closure", without, "--attestation", S.provenance, "--public-key", S.publisher.publicKey, "--isolation", "bwrap", "--out", path.join(dir, "missing-digest")]);
  t.is(plain.code, 1);
  t.regex(plain.json.reason, /expected [0-9a-f]{64} \(the digest the provenance records\)/);
});

test.serial("an attestation signed by another key is refused, naming both keyids", (t) => {
  const r = audit("other-key", { publicKey: S.other.publicKey });
  t.is(r.code, 1);
  t.regex(r.json.reason, new RegExp(`does not verify .*key mismatch: signed by keyid ${S.publisher.keyid}, the public key's keyid is ${S.other.keyid}`));
});

test.serial("a publisher who lies (an attested digest changed, re-signed with the publisher's key) gets reproduced: false naming the path and both digests", (t) => {
  const st = payloadOf(S.provenance);
  const victim = st.subject.find((s: any) => s.name === S.build.outPath);
  const real = victim.digest.nixNarSha256;
  victim.digest.nixNarSha256 = "0".repeat(64);
  const key = parsePrivateKey(fs.readFileSync(S.publisher.privateKey, "utf8"), "publisher key");
  const lie = path.join(dir, "lie.intoto.jsonl");
  fs.writeFileSync(lie, JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(st)), INTOTO_PAYLOAD_TYPE, key)) + "\n");
  const r = audit("lie", { attestation: lie });
  t.is(r.code, 1, r.stderr);
  t.false(r.json.reproduced);
  t.deepEqual(r.json.mismatched.map((m: any) => [m.path, m.attested, m.rebuilt]), [[S.build.outPath, "0".repeat(64), real]]);
  t.deepEqual(r.json.mismatched[0].files.map((f: any) => f.path).sort(), ["cmdline", "initrd", "kernel"]);
  t.regex(r.json.reason, new RegExp(`^not reproduced: ${S.build.outPath} rebuilt with NAR sha256 ${real}, the publisher attests 0{64}`));
  // The auditor signs what it found: its verification summary says FAILED, and its provenance of the
  // rebuild, challenged against the lie, disagrees on exactly that path.
  t.is(payloadOf(r.json.verification).predicate.verificationResult, "FAILED");
  const c = cli(["challenge", "--attestation", lie, "--public-key", S.publisher.publicKey, "--attestation", r.json.attestation, "--public-key", S.auditor.publicKey]);
  t.is(c.code, 1, c.stderr);
  t.deepEqual(c.json.paths.filter((p: any) => !p.agree).map((p: any) => [p.path, p.digests]), [[S.build.outPath, { [S.publisher.keyid]: "0".repeat(64), [S.auditor.keyid]: real }]]);
});

test.serial("a checkout that evaluates to another derivation than the attested one is refused, naming both", (t) => {
  const copy = path.join(dir, "edited-world");
  fs.cpSync(path.join(dir, "world"), copy, { recursive: true });
  fs.appendFileSync(path.join(copy, "builders", "image.sh"), "\n# an edit\n");
  const r = audit("edited", { file: path.join(copy, "default.nix") });
  t.is(r.code, 1, r.stderr);
  t.regex(r.json.reason, new RegExp(`^the reviewed files evaluate to /nix/store/\\S+-demo-image\\.drv, but the publisher's provenance attests ${S.build.drvPath.replace(/\./g, "\\.")}`));
});

test.serial("the flake form: closure --flake exports flake.lock's inputs, and audit --flake reproduces from that closure; without the locked input it is refused before import", (t) => {
  const flake = `${S.world.flake}#image`;
  const c = step("closure", ["--flake", flake, "--out", path.join(dir, "flake-closure")]);
  const manifest = JSON.parse(fs.readFileSync(c.manifest, "utf8"));
  t.deepEqual(manifest.pinsFiles, ["flake.lock"]);
  t.deepEqual(manifest.pinnedInputs.map((p: any) => p.pinnedIn.map((x: any) => x.pin)), [["flake.lock#demo-lib"]]);
  // Both forms describe the same derivation and the same sources: the very closure the provenance names.
  t.is(c.closureSha256, S.closure.closureSha256);
  const args = (closure: string, out: string) => ["audit", "--flake", flake, "--closure", closure, "--attestation", S.provenance, "--public-key", S.publisher.publicKey, "--isolation", "bwrap", "--out", path.join(dir, out), "--closure-sha256", sha256Of(closure)];
  const ok = cli(args(c.closureFile, "flake-ok"));
  t.is(ok.code, 0, ok.stderr);
  t.true(ok.json.reproduced);
  t.is(ok.json.outPath, S.build.outPath);
  const pinned = manifest.pinnedInputs[0].path;
  const bad = cli(args(closureOf("flake-without-lib.closure", (e) => e.path !== pinned), "flake-missing"));
  t.is(bad.code, 1, bad.stderr);
  t.deepEqual(bad.json.missingPins.map((p: any) => p.pin), [`${path.join(path.dirname(S.world.file), "flake.lock")}#demo-lib`]);
});

test.serial("a second, independent Nix: the audit run by Debian sid's Nix 2.34 on its own root filesystem reproduces, bit for bit, the publisher's build by the host's Nix 2.8, and challenge agrees", (t) => {
  const root = nixRoot("sid");
  t.regex(root.nixVersion, /^2\.34\./);
  t.is(hostNixVersion(), "2.8.0");
  t.is(S.build.outPath && payloadOf(S.provenance).predicate.buildDefinition.internalParameters.nixVersion, "2.8.0");
  const r = cli(["audit", ...S.target, "--closure", S.closure.closureFile, "--attestation", S.provenance, "--public-key", S.publisher.publicKey, "--isolation", "bwrap", "--nix-root", root.root, "--out", path.join(dir, "nix234"), "--key", S.other.privateKey]);
  t.is(r.code, 0, r.stderr);
  t.true(r.json.reproduced);
  t.is(r.json.nixVersion, root.nixVersion);
  t.is(r.json.matched, r.json.checked);
  t.is(payloadOf(r.json.attestation).predicate.runDetails.builder.version.nix, root.nixVersion);
  const c = cli(["challenge", "--attestation", S.provenance, "--public-key", S.publisher.publicKey, "--attestation", r.json.attestation, "--public-key", S.other.publicKey]);
  t.is(c.code, 0, c.stderr);
});

test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));
