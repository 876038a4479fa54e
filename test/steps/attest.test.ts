// keygen, attest and verify-attestation on the real demo-world chain (build, closure, bwrap rebuild,
// verify): what the attestations claim is checked against the store and the files independently, and
// each rejection is shown on a case built to fail.
import test from "ava";
import { execFileSync, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { descendants } from "../../pipeline/lib/lifetime";
import * as path from "node:path";
import { generateKeyPair, parsePrivateKey, signEnvelope } from "../../pipeline/lib/dsse";
import { NAR_SHA256, SLSA_PROVENANCE_V1, SLSA_VSA_V1 } from "../../pipeline/lib/in-toto";
import { validateSbom } from "../../pipeline/lib/sbom";
import { ROOT } from "./demo-world.helpers";
import { attestArgs, Chain, cli, demoChain, OFFLINE_ENV, payloadOf } from "./attest.helpers";

let c: Chain;
let out: string;
let result: any;
let provenance: any;
let vsa: any;

test.before(() => {
  c = demoChain("attest-");
  out = path.join(c.dir, "att");
  const r = cli([...attestArgs(c, out), "--key", c.keys.privateKey]);
  if (r.code !== 0) throw new Error(`attest failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
  result = r.json;
  provenance = payloadOf(result.provenance);
  vsa = payloadOf(result.verification);
});
test.after.always(() => fs.rmSync(c.dir, { recursive: true, force: true }));

const nixHashHex = (p: string) => execFileSync("nix-hash", ["--type", "sha256", "--to-base16", execFileSync("nix-store", ["-q", "--hash", p], { env: OFFLINE_ENV }).toString().trim().replace(/^sha256:/, "")]).toString().trim();
const sha256 = (f: string) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");
const verifyAtt = (args: string[]) => cli(["verify-attestation", "--public-key", c.keys.publicKey, ...args]);

test("keygen: signing.key is 0600 PKCS#8, signing.pub SPKI, keyid printed; a second keygen refuses to overwrite", (t) => {
  t.is(fs.statSync(c.keys.privateKey).mode & 0o777, 0o600);
  t.regex(fs.readFileSync(c.keys.privateKey, "utf8"), /^-----BEGIN PRIVATE KEY-----/);
  t.regex(fs.readFileSync(c.keys.publicKey, "utf8"), /^-----BEGIN PUBLIC KEY-----/);
  const before = fs.readFileSync(c.keys.privateKey);
  const again = cli(["keygen", "--out", path.dirname(c.keys.privateKey)]);
  t.is(again.code, 2);
  t.regex(again.stderr, new RegExp(`${c.keys.privateKey} already exists: keygen never overwrites a key`));
  t.deepEqual(fs.readFileSync(c.keys.privateKey), before);
});

test("subjects: kernel and initrd by the sha256 of their bytes, every built store path by its NAR hash from the store", (t) => {
  const byName = new Map(result.subjects.map((s: any) => [s.name, s.digest]));
  for (const f of ["kernel", "initrd"]) t.deepEqual(byName.get(f), { sha256: sha256(path.join(c.build.outPath, f)) });
  // Independently: the non-fixed-output outputs of the graph, from nix-store, not from our graph reader.
  const reqs = execFileSync("nix-store", ["-qR", c.build.drvPath], { env: OFFLINE_ENV }).toString().split("\n").filter((p) => p.endsWith(".drv"));
  const built = reqs.filter((d) => !fs.readFileSync(d, "utf8").includes('"outputHash"')).flatMap((d) => execFileSync("nix-store", ["-q", "--outputs", d]).toString().split("\n").filter(Boolean));
  t.true(built.includes(c.build.outPath));
  t.deepEqual(result.subjects.filter((s: any) => s.name.startsWith("/nix/store/")).map((s: any) => s.name).sort(), built.sort());
  for (const p of built) t.deepEqual(byName.get(p), { [NAR_SHA256]: nixHashHex(p) }, p);
  t.deepEqual(provenance.subject, result.subjects);
  t.deepEqual(vsa.subject, result.subjects);
});

test("provenance: Statement v1, SLSA v1, every closure source, evaluation-time path and pinned input in resolvedDependencies", (t) => {
  t.is(provenance._type, "https://in-toto.io/Statement/v1");
  t.is(provenance.predicateType, SLSA_PROVENANCE_V1);
  const def = provenance.predicate.buildDefinition;
  t.deepEqual(def.externalParameters.source, { file: c.world.file, attribute: "image" }); // not in a git checkout
  t.is(def.internalParameters.isolation, "bwrap");
  t.true(def.internalParameters.sandbox);
  t.regex(def.internalParameters.nixVersion, /^2\.\d+/);
  const deps = def.resolvedDependencies;
  t.is(deps.length, c.manifest.sources.length + c.manifest.evalPaths.length + c.manifest.pinnedInputs.length);
  const byName = new Map(deps.map((d: any) => [d.name, d]));
  t.true(c.manifest.sources.length >= 2);
  for (const s of c.manifest.sources) {
    const d: any = byName.get(s.path);
    t.is(d.uri, s.urls[0]);
    t.deepEqual(d.digest, s.hash.mode === "flat" ? { [s.hash.algo]: s.hash.value } : { nixNarSha256: s.hash.value });
  }
  for (const e of c.manifest.evalPaths) t.deepEqual((byName.get(e.path) as any).digest, { [NAR_SHA256]: nixHashHex(e.path) });
  // The demo world's pinned library: its NAR hash from the store, where it is pinned, its URL.
  t.is(c.manifest.pinnedInputs.length, 1);
  for (const x of c.manifest.pinnedInputs) {
    const d: any = byName.get(x.path);
    t.deepEqual(d.digest, { [NAR_SHA256]: nixHashHex(x.path) });
    t.deepEqual(d.annotations.pinnedIn, ["nix/sources.json#demo-lib"]);
    t.regex(d.uri, /^file:\/\/.*demo-lib\.tar\.gz$/);
  }
  const md = provenance.predicate.runDetails.metadata;
  t.regex(md.invocationId, /^[0-9a-f-]{36}$/);
  t.true(Date.parse(md.startedOn) <= Date.parse(md.finishedOn));
  t.deepEqual(provenance.predicate.runDetails.byproducts.find((b: any) => b.name === "sbom.cdx.json").digest, { sha256: result.sbomSha256 });
});

test("verification summary: PASSED with the rebuild and boot verdicts; a failed rebuild gives FAILED", async (t) => {
  t.is(vsa.predicateType, SLSA_VSA_V1);
  t.is(vsa.predicate.verificationResult, "PASSED");
  t.deepEqual(vsa.predicate.verifiedLevels, ["SECURE_SUPPLY_CHAIN_REBUILT_BIT_IDENTICAL", "SECURE_SUPPLY_CHAIN_BOOT_TESTED"]);
  const details = vsa.predicate["https://github.com/secure-supply-chain/verification-details/v1"];
  t.like(details.rebuild, { reproducible: true, isolation: "bwrap", interfaces: ["lo"] });
  t.is(details.rebuild.matched, details.rebuild.checked);
  t.like(details.bootTest, { passed: true, probesPassed: 1 });
  t.deepEqual(vsa.predicate.inputAttestations, [{ uri: "provenance.intoto.jsonl", digest: { sha256: sha256(result.provenance) } }]);
  // Built to fail: the same chain with a verify JSON that found a mismatch.
  const v = JSON.parse(fs.readFileSync(c.verifyJson, "utf8"));
  const failed = path.join(c.dir, "verify-failed.json");
  fs.writeFileSync(failed, JSON.stringify({ ...v, reproducible: false, matched: v.checked - 1, mismatched: [{ path: c.build.outPath, files: ["kernel"] }] }));
  const r = cli(["attest", "--build", c.buildJson, "--closure", c.closureDir, "--verify", failed, "--out", path.join(c.dir, "att-failed"), "--key", c.keys.privateKey]);
  t.is(r.code, 0, r.stderr);
  const f = payloadOf(r.json.verification).predicate;
  t.is(f.verificationResult, "FAILED");
  t.deepEqual(f.verifiedLevels, ["FAILED"]);
});

test("SBOM: CycloneDX 1.6, valid, one component per source and pinned input, and byte-identical across two runs", async (t) => {
  const text = fs.readFileSync(result.sbom, "utf8");
  t.is(await validateSbom(text), null);
  const bom = JSON.parse(text);
  t.is(bom.specVersion, "1.6");
  t.regex(bom.serialNumber, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.is(bom.metadata.timestamp, undefined);
  t.is(bom.components.length, c.manifest.sources.length + c.manifest.evalPaths.length + c.manifest.pinnedInputs.length);
  const refs = new Set(bom.components.map((x: any) => x["bom-ref"]));
  for (const s of [...c.manifest.sources, ...c.manifest.evalPaths, ...c.manifest.pinnedInputs]) t.true(refs.has(s.path), s.path);
  const busybox = bom.components.find((x: any) => x.name === "busybox-static");
  t.regex(busybox.purl, /^pkg:generic\/busybox-static\?download_url=file/);
  t.deepEqual(busybox.externalReferences.map((e: any) => e.type), ["distribution"]);
  // Dependencies follow the why-chains: the target reaches every source.
  const deps = new Map(bom.dependencies.map((d: any) => [d.ref, d.dependsOn ?? []]));
  const reach = new Set<string>();
  const walk = (r: string) => (deps.get(r) as string[] | undefined)?.forEach((x) => !reach.has(x) && (reach.add(x), walk(x)));
  walk(bom.metadata.component["bom-ref"]);
  for (const r of refs) t.true(reach.has(r as string), `${r} unreachable from the target`);
  // Built to fail: the validator is not a rubber stamp.
  t.not(await validateSbom(JSON.stringify({ ...bom, components: [{ ...bom.components[0], type: "no-such-type" }] })), null);
  const again = cli([...attestArgs(c, path.join(c.dir, "att2")), "--key", c.keys.privateKey]);
  t.is(again.code, 0, again.stderr);
  t.is(fs.readFileSync(again.json.sbom, "utf8"), text);
  t.is(again.json.sbomSha256, result.sbomSha256);
  const stamped = cli([...attestArgs(c, path.join(c.dir, "att3")), "--key", c.keys.privateKey, "--timestamp", "2026-01-02T03:04:05Z"]);
  t.is(JSON.parse(fs.readFileSync(stamped.json.sbom, "utf8")).metadata.timestamp, "2026-01-02T03:04:05.000Z");
});

test("verify-attestation accepts both envelopes with the public key, the kernel, the initrd and the image's store path", (t) => {
  const files = ["kernel", "initrd"].flatMap((f) => ["--artifact", path.join(c.build.outPath, f)]);
  const ok = verifyAtt(["--attestation", result.provenance, "--predicate-type", SLSA_PROVENANCE_V1, ...files, "--store-path", c.build.outPath]);
  t.is(ok.code, 0, ok.stderr);
  t.like(ok.json, { verified: true, keyid: c.keys.keyid, predicateType: SLSA_PROVENANCE_V1 });
  t.deepEqual(ok.json.checked.map((x: any) => [x.subject, x.ok]), [["kernel", true], ["initrd", true], [c.build.outPath, true]]);
  const v = verifyAtt(["--attestation", result.verification, "--predicate-type", SLSA_VSA_V1, ...files]);
  t.is(v.code, 0, v.stderr);
});

function tamper(name: string, edit: (e: any) => void): string {
  const e = JSON.parse(fs.readFileSync(result.provenance, "utf8"));
  edit(e);
  const f = path.join(c.dir, name);
  fs.writeFileSync(f, JSON.stringify(e) + "\n");
  return f;
}

const flipByte = (b64: string, at: number) => {
  const b = Buffer.from(b64, "base64");
  b[at] ^= 0x20;
  return b.toString("base64");
};

test("verify-attestation rejects, naming what: a flipped payload byte, a flipped signature byte, another key, the wrong predicate type", (t) => {
  const payload = verifyAtt(["--attestation", tamper("payload.jsonl", (e) => (e.payload = flipByte(e.payload, 200)))]);
  t.is(payload.code, 1);
  t.regex(payload.json.reason, /^bad signature/);
  t.false(payload.json.verified);
  const sig = verifyAtt(["--attestation", tamper("sig.jsonl", (e) => (e.signatures[0].sig = flipByte(e.signatures[0].sig, 7)))]);
  t.is(sig.code, 1);
  t.regex(sig.json.reason, /^bad signature/);
  const other = generateKeyPair();
  const otherPub = path.join(c.dir, "other.pub");
  fs.writeFileSync(otherPub, other.publicPem);
  const wrongKey = cli(["verify-attestation", "--attestation", result.provenance, "--public-key", otherPub]);
  t.is(wrongKey.code, 1);
  t.is(wrongKey.json.reason, `key mismatch: signed by keyid ${c.keys.keyid}, the public key's keyid is ${other.keyid}`);
  const type = verifyAtt(["--attestation", result.verification, "--predicate-type", SLSA_PROVENANCE_V1]);
  t.is(type.code, 1);
  t.regex(type.stderr, /wrong predicate type: the statement is https:\/\/slsa\.dev\/verification_summary\/v1, expected https:\/\/slsa\.dev\/provenance\/v1/);
  // URL-safe, unpadded base64 is the same envelope to a DSSE verifier.
  const urlSafe = tamper("urlsafe.jsonl", (e) => {
    e.payload = Buffer.from(e.payload, "base64").toString("base64url");
    e.signatures[0].sig = Buffer.from(e.signatures[0].sig, "base64").toString("base64url");
  });
  t.is(verifyAtt(["--attestation", urlSafe]).code, 0);
});

test("verify-attestation rejects a modified artifact with both digests, and an artifact whose subject was removed", (t) => {
  const kernel = path.join(c.build.outPath, "kernel");
  const copy = path.join(c.dir, "modified", "kernel");
  fs.mkdirSync(path.dirname(copy));
  const bytes = fs.readFileSync(kernel);
  bytes[bytes.length >> 1] ^= 0x01;
  fs.writeFileSync(copy, bytes);
  const r = verifyAtt(["--attestation", result.provenance, "--artifact", copy]);
  t.is(r.code, 1);
  t.is(r.json.reason, `artifact ${copy} has sha256 ${sha256(copy)}, subject kernel records sha256 ${sha256(kernel)}`);
  // Signed with the right key, but the statement no longer covers the kernel.
  const st = payloadOf(result.provenance);
  st.subject = st.subject.filter((s: any) => s.name !== "kernel");
  const env = signEnvelope(Buffer.from(JSON.stringify(st)), "application/vnd.in-toto+json", parsePrivateKey(fs.readFileSync(c.keys.privateKey, "utf8"), "key"));
  const without = path.join(c.dir, "without-kernel.jsonl");
  fs.writeFileSync(without, JSON.stringify(env) + "\n");
  const gone = verifyAtt(["--attestation", without, "--artifact", kernel, "--artifact", path.join(c.build.outPath, "initrd")]);
  t.is(gone.code, 1);
  t.is(gone.json.reason, `artifact ${kernel} (sha256 ${sha256(kernel)}) is not a subject of the attestation`);
  t.deepEqual(gone.json.checked.map((x: any) => x.ok), [false, true]);
  // A store path no subject names.
  const src = c.manifest.sources[0].path;
  const notBuilt = verifyAtt(["--attestation", result.provenance, "--store-path", src]);
  t.is(notBuilt.code, 1);
  t.is(notBuilt.json.reason, `store path ${src} is not a subject of the attestation`);
});

test("verify-attestation: unreadable input is exit 2 naming the file", (t) => {
  const missing = verifyAtt(["--attestation", path.join(c.dir, "nope.jsonl")]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read the attestation .*nope\.jsonl: ENOENT/);
  const junk = path.join(c.dir, "junk.jsonl");
  fs.writeFileSync(junk, "{not json\n");
  t.is(verifyAtt(["--attestation", junk]).code, 2);
  const noKey = cli(["verify-attestation", "--attestation", result.provenance, "--public-key", c.keys.privateKey]);
  t.is(noKey.code, 2);
  t.regex(noKey.stderr, /is a private key: give the public key/);
  t.is(verifyAtt(["--attestation", result.provenance, "--artifact", c.build.outPath]).code, 2); // a directory
});

/**
 * While the step runs: every process's command line (a key on any command line is a leak), and the
 * environment of each of the step's children (its own holds the key until it reads it). Each entry
 * is labelled with its pid and command, so a failure says where the key was.
 */
function watchProcesses(child: { pid?: number }, seen: { cmdlines: string[]; environs: string[] }): () => void {
  let stepCmdline: string | undefined;
  const timer = setInterval(() => {
    const children = new Set(child.pid ? descendants(child.pid) : []);
    try {
      stepCmdline ??= fs.readFileSync(`/proc/${child.pid}/cmdline`, "latin1");
    } catch {
      /* not started or gone */
    }
    for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1");
        seen.cmdlines.push(`pid ${pid} cmdline: ${cmdline}`);
        // A child caught between fork and exec still shows the step's own cmdline and initial environment
        // block (the step's memory, not an environment it passed on): only exec'd children count.
        if (children.has(Number(pid)) && cmdline !== stepCmdline) seen.environs.push(`pid ${pid} (${cmdline.slice(0, 80)}) environ: ${fs.readFileSync(`/proc/${pid}/environ`, "latin1")}`);
      } catch {
        /* gone already */
      }
    }
  }, 5);
  return () => clearInterval(timer);
}

// Serial: the other tests run the CLI with spawnSync, which would stall this watcher's timer.
test.serial("--key-env: the private key is in no output file, no log, no command line and no child's environment", async (t) => {
  const pem = fs.readFileSync(c.keys.privateKey, "utf8");
  const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  const raw = parsePrivateKey(pem, "k").export({ format: "jwk" }).d!; // the 32-byte seed, base64url
  const out2 = path.join(c.dir, "att-env");
  // Children are too short-lived to poll reliably: git and nix run through spies that keep their environment.
  const spy = path.join(c.dir, "spy");
  fs.mkdirSync(spy);
  for (const tool of ["git", "nix"]) {
    const real = execFileSync("sh", ["-c", `command -v ${tool}`]).toString().trim();
    fs.writeFileSync(path.join(spy, tool), `#!/bin/sh\nenv > "${spy}/env.${tool}.$$"\nexec ${real} "$@"\n`, { mode: 0o755 });
  }
  const seen = { cmdlines: [] as string[], environs: [] as string[] };
  const child = spawn(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...attestArgs(c, out2), "--key-env", "SC_TEST_SIGNING_KEY"], {
    env: { ...OFFLINE_ENV, PATH: `${spy}:${process.env.PATH}`, SC_TEST_SIGNING_KEY: pem },
  });
  const stop = watchProcesses(child, seen);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  stop();
  t.is(code, 0, stderr);
  t.true(seen.cmdlines.some((l) => l.includes("--key-env")), "the watcher saw the step's command line");
  const dumps = fs.readdirSync(spy).filter((f) => f.startsWith("env."));
  t.true(dumps.some((f) => f.startsWith("env.git.")) && dumps.some((f) => f.startsWith("env.nix.")), `spies ran: ${dumps}`);
  seen.environs.push(...dumps.map((f) => fs.readFileSync(path.join(spy, f), "latin1")));
  const haystacks = [stdout, stderr, ...fs.readdirSync(out2).map((f) => fs.readFileSync(path.join(out2, f), "latin1"))];
  const leaks = [...haystacks, ...seen.cmdlines, ...seen.environs].filter((h) => h.includes(body.slice(0, 40)) || h.includes(raw) || h.includes("SC_TEST_SIGNING_KEY="));
  t.deepEqual(leaks.map((h) => h.slice(0, 200)), [], "the key (or its variable) was seen here");
  t.log(`${seen.cmdlines.length} command lines and ${seen.environs.length} environments scanned`);
  // Same signer as --key: the verifier accepts it.
  t.is(verifyAtt(["--attestation", path.join(out2, "provenance.intoto.jsonl")]).code, 0);
  // Built to fail: the watcher does find a key that IS on a command line.
  const leak = { cmdlines: [] as string[], environs: [] as string[] };
  const sleeper = spawn("sh", ["-c", "sleep 0.3", "sh", body]);
  const stopLeak = watchProcesses({ pid: -1 }, leak);
  await new Promise((resolve) => sleeper.on("close", resolve));
  stopLeak();
  t.true(leak.cmdlines.some((l) => l.includes(body.slice(0, 40))));
});

test("attest: exactly one of --key and --key-env; a missing variable or a closure of another target is exit 2", (t) => {
  const both = cli([...attestArgs(c, path.join(c.dir, "x")), "--key", c.keys.privateKey, "--key-env", "K"]);
  t.is(both.code, 2);
  t.regex(both.stderr, /give exactly one of --key FILE and --key-env NAME/);
  const unset = cli([...attestArgs(c, path.join(c.dir, "x")), "--key-env", "SC_NO_SUCH_VARIABLE"]);
  t.is(unset.code, 2);
  t.regex(unset.stderr, /the environment variable SC_NO_SUCH_VARIABLE \(--key-env\) is not set or empty/);
  const b = JSON.parse(fs.readFileSync(c.buildJson, "utf8"));
  const other = path.join(c.dir, "build-other.json");
  fs.writeFileSync(other, JSON.stringify({ ...b, drvPath: "/nix/store/00000000000000000000000000000000-other.drv" }));
  const r = cli(["attest", "--build", other, "--closure", c.closureDir, "--verify", c.verifyJson, "--out", path.join(c.dir, "x"), "--key", c.keys.privateKey]);
  t.is(r.code, 2);
  t.regex(r.stderr, /the closure in .* is of \/nix\/store\/\S+-demo-image\.drv, but the build .* is of \/nix\/store\/0+-other\.drv/);
  t.false(fs.existsSync(path.join(c.dir, "x", "provenance.intoto.jsonl")));
});
