// challenge on the demo world's deliberately non-reproducible derivation, built with real Nix and
// signed with real Ed25519 keys: the statements are made with the lib's in-toto and DSSE functions
// (not the full attest chain), each party's claim being a NAR hash this machine really produced.
// Every refusal is shown on a case built to fail.
import test from "ava";
import { execFileSync, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { generateKeyPair, INTOTO_PAYLOAD_TYPE, parsePrivateKey, signEnvelope } from "../../pipeline/lib/dsse";
import { NAR_SHA256, provenancePredicate, SLSA_PROVENANCE_V1, SLSA_VSA_V1, statement, Subject } from "../../pipeline/lib/in-toto";
import { narHashHex } from "../../pipeline/lib/nix";
import { cli, OFFLINE_ENV } from "../fixtures/closure-world/world";

const SANDBOX = ["--option", "sandbox", "true", "--option", "substituters", ""];
const nix = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: OFFLINE_ENV, maxBuffer: 1 << 28, stdio: ["ignore", "pipe", "pipe"] });

interface Party {
  keyid: string;
  privatePem: string;
  publicKey: string;
}

let dir: string;
let out: string; // the nonReproducible output
let drvPath: string;
let tools: { path: string; drvPath: string; nar: string };
let inStore: string; // NAR sha256 of the output nix-build left in the store
let rebuilt: string; // NAR sha256 of the `nix-build --check` rebuild of it
const parties: Party[] = [];
const att: Record<string, string> = {};

/** A signed provenance statement: `drv` built by `p`, `subjects` what it says the build produced. */
function sign(name: string, p: Party, subjects: Subject[], o: { drv?: string; predicateType?: string } = {}): string {
  const predicate = provenancePredicate({
    source: { file: "default.nix", attribute: "nonReproducible" },
    drvPath: o.drv ?? drvPath,
    nixVersion: "test",
    sandbox: true,
    isolation: null,
    rebuilderImage: null,
    dependencies: [],
    builderId: `https://example.org/builders/${name}`,
    toolVersion: "test",
    invocationId: crypto.randomUUID(),
    startedOn: null,
    finishedOn: null,
    byproducts: [],
  });
  const st = statement(subjects, o.predicateType ?? SLSA_PROVENANCE_V1, predicate);
  const env = signEnvelope(Buffer.from(JSON.stringify(st)), INTOTO_PAYLOAD_TYPE, parsePrivateKey(p.privatePem, name));
  const file = path.join(dir, `${name}.intoto.jsonl`);
  fs.writeFileSync(file, JSON.stringify(env) + "\n");
  return file;
}

const narSubject = (p: string, hex: string): Subject => ({ name: p, digest: { [NAR_SHA256]: hex } });

test.before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "challenge-"));
  const world = JSON.parse(nix(process.execPath, [path.join(__dirname, "..", "..", "bin", "supply-chain.js"), "demo-world", path.join(dir, "world")]).toString());
  const build = (attr: string, extra: string[] = []) => spawnSync("nix-build", [world.file, "-A", attr, "--no-out-link", ...SANDBOX, ...extra], { env: OFFLINE_ENV, encoding: "utf8" });
  const first = build(world.nonReproducibleAttribute);
  if (first.status !== 0) throw new Error(`nix-build nonReproducible: ${first.stderr}`);
  out = first.stdout.trim();
  drvPath = nix("nix-instantiate", [world.file, "-A", world.nonReproducibleAttribute]).toString().trim();
  inStore = narHashHex(nix("nix-store", ["-q", "--hash", out]).toString().trim());
  const toolsOut = build("tools").stdout.trim();
  tools = { path: toolsOut, drvPath: nix("nix-instantiate", [world.file, "-A", "tools"]).toString().trim(), nar: narHashHex(nix("nix-store", ["-q", "--hash", toolsOut]).toString().trim()) };
  // Builds it again and keeps the differing result beside the original as <out>.check (not a valid path).
  const check = build(world.nonReproducibleAttribute, ["--check", "--keep-failed"]);
  const kept = /keeping build directory '([^']+)'/.exec(check.stderr)?.[1];
  try {
    if (check.status === 0 || !/may not be deterministic/.test(check.stderr)) throw new Error(`nix-build --check did not differ: ${check.stderr}`);
    rebuilt = crypto.createHash("sha256").update(nix("nix-store", ["--dump", `${out}.check`])).digest("hex");
  } finally {
    fs.rmSync(`${out}.check`, { recursive: true, force: true });
    if (kept) fs.rmSync(kept, { recursive: true, force: true });
  }
  for (let i = 1; i <= 3; i++) {
    const k = generateKeyPair();
    const publicKey = path.join(dir, `key${i}.pub`);
    fs.writeFileSync(publicKey, k.publicPem);
    parties.push({ keyid: k.keyid, privatePem: k.privatePem, publicKey });
  }
  att.storeBuilder = sign("store-builder", parties[0], [narSubject(out, inStore)]);
  att.sameStore = sign("same-store", parties[1], [narSubject(out, inStore)]);
  att.checkRebuilder = sign("check-rebuilder", parties[2], [narSubject(out, rebuilt)]);
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const challenge = (...pairs: [string, Party][]) => cli(["challenge", ...pairs.flatMap(([a, p]) => ["--attestation", a, "--public-key", p.publicKey])]);
const lastLine = (s: string) => s.trim().split("\n").pop();

test("nonReproducible: key 1 signs the output nix-build left in the store, key 2 the same store's output, key 3 its `nix-build --check` rebuild: 1 and 2 agree, 3 differs, exit 1", (t) => {
  const [k1, k2, k3] = parties.map((p) => p.keyid);
  t.not(rebuilt, inStore); // the rebuild really gave other bits
  const r = challenge([att.storeBuilder, parties[0]], [att.sameStore, parties[1]], [att.checkRebuilder, parties[2]]);
  t.is(r.code, 1, r.stderr);
  t.false(r.json.agree);
  t.is(r.json.drvPath, drvPath);
  t.deepEqual(r.json.builders, [k1, k2, k3]);
  t.deepEqual(r.json.builderIds, { [k1]: "https://example.org/builders/store-builder", [k2]: "https://example.org/builders/same-store", [k3]: "https://example.org/builders/check-rebuilder" });
  t.deepEqual(r.json.paths, [
    { path: out, digests: { [k1]: inStore, [k2]: inStore, [k3]: rebuilt }, agree: false, groups: [{ digest: inStore, builders: [k1, k2] }, { digest: rebuilt, builders: [k3] }] },
  ]);
  t.deepEqual(r.json.unmatched, []);
  const reason = `${out} differs: ${NAR_SHA256} ${inStore} from ${k1}, ${k2}; ${NAR_SHA256} ${rebuilt} from ${k3}`;
  t.is(r.json.reason, reason);
  t.is(lastLine(r.stderr), `supply-chain challenge: ${reason}`);
});

test("all agree: exit 0, builders in argument order; a path only one builder attests is unmatched, a file subject is not compared", (t) => {
  const [k1, k2] = parties.map((p) => p.keyid);
  const r = challenge([att.storeBuilder, parties[0]], [att.sameStore, parties[1]]);
  t.is(r.code, 0, r.stderr);
  t.like(r.json, { agree: true, drvPath, builders: [k1, k2], unmatched: [] });
  t.deepEqual(r.json.paths, [{ path: out, digests: { [k1]: inStore, [k2]: inStore }, agree: true, groups: [{ digest: inStore, builders: [k1, k2] }] }]);
  const buildInfo = crypto.createHash("sha256").update(fs.readFileSync(path.join(out, "build-info"))).digest("hex");
  const more = sign("store-builder-more", parties[0], [{ name: "build-info", digest: { sha256: buildInfo } }, narSubject(out, inStore), narSubject(tools.path, tools.nar)]);
  const m = challenge([att.sameStore, parties[1]], [more, parties[0]]);
  t.is(m.code, 0, m.stderr);
  t.deepEqual(m.json.builders, [k2, k1]);
  t.deepEqual(m.json.paths.map((p: any) => [p.path, p.agree]), [[out, true]]);
  t.deepEqual(m.json.unmatched, [{ path: tools.path, builders: [k1] }]);
  // Built to fail: no path in common is not agreement.
  const disjoint = sign("tools-only", parties[0], [narSubject(tools.path, tools.nar)]);
  const d = challenge([disjoint, parties[0]], [att.sameStore, parties[1]]);
  t.is(d.code, 1, d.stderr);
  t.false(d.json.agree);
  t.is(d.json.reason, "no store path is attested by two builders: nothing to compare (2 attested by one only)");
});

test("an attestation that does not verify is exit 1 naming its file, also when the others agree", (t) => {
  const e = JSON.parse(fs.readFileSync(att.checkRebuilder, "utf8"));
  const payload = Buffer.from(e.payload, "base64");
  payload[payload.length >> 1] ^= 0x01;
  const tampered = path.join(dir, "tampered.intoto.jsonl");
  fs.writeFileSync(tampered, JSON.stringify({ ...e, payload: payload.toString("base64") }) + "\n");
  const r = challenge([att.storeBuilder, parties[0]], [att.sameStore, parties[1]], [tampered, parties[2]]);
  t.is(r.code, 1, r.stderr);
  t.false(r.json.agree);
  t.regex(r.json.reason, new RegExp(`^${tampered}: bad signature`));
  t.deepEqual(r.json.rejected.map((x: any) => [x.attestation, x.keyid]), [[tampered, parties[2].keyid]]);
  t.deepEqual(r.json.paths, []); // nothing compared once a party cannot be believed
  t.is(r.json.attestations[parties[2].keyid], tampered);
  t.is(lastLine(r.stderr), `supply-chain challenge: ${r.json.reason}`);
  // The right envelope, the wrong key.
  const k = challenge([att.storeBuilder, parties[0]], [att.sameStore, parties[2]]);
  t.is(k.code, 1, k.stderr);
  t.is(k.json.reason, `${att.sameStore}: key mismatch: signed by keyid ${parties[1].keyid}, the public key's keyid is ${parties[2].keyid}`);
});

/** Exit 2: one line on stderr, nothing on stdout. */
function badInput(t: any, r: ReturnType<typeof cli>, reason: RegExp | string) {
  t.is(r.code, 2, r.stderr);
  t.is(r.stdout, "");
  t.is(r.stderr.trim().split("\n").length, 1, r.stderr);
  if (typeof reason === "string") t.is(r.stderr.trim(), `supply-chain challenge: ${reason}`);
  else t.regex(r.stderr, reason);
}

test("bad input is exit 2 with one line: unequal counts, one attestation, the same key twice, two derivations, another predicate type", (t) => {
  const [p1, p2] = parties;
  badInput(t, cli(["challenge", "--attestation", att.storeBuilder, "--attestation", att.sameStore, "--public-key", p1.publicKey]), "2 --attestation but 1 --public-key: the i-th key verifies the i-th attestation");
  badInput(t, challenge([att.storeBuilder, p1]), "1 attestation given: challenge compares at least two");
  const again = sign("store-builder-again", p1, [narSubject(out, inStore)]);
  badInput(t, challenge([att.storeBuilder, p1], [again, p1]), `${p1.publicKey} and ${p1.publicKey} are the same key (keyid ${p1.keyid}): its attestations are not independent`);
  const ofTools = sign("tools-builder", p2, [narSubject(tools.path, tools.nar)], { drv: tools.drvPath });
  badInput(t, challenge([att.storeBuilder, p1], [ofTools, p2]), `${att.storeBuilder} is of ${drvPath} but ${ofTools} is of ${tools.drvPath}: challenge compares builds of one derivation`);
  const vsa = sign("summary", p2, [narSubject(out, inStore)], { predicateType: SLSA_VSA_V1 });
  badInput(t, challenge([att.storeBuilder, p1], [vsa, p2]), `${vsa}: predicate type is ${SLSA_VSA_V1}, challenge compares ${SLSA_PROVENANCE_V1} only`);
});
