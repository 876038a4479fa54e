// The consumer's N-of-M decision (consumer/approval.ts) without Pulumi: real Ed25519 keys, real DSSE
// envelopes of real in-toto statements (the lib's statement/provenancePredicate/signEnvelope), the real
// `supply-chain verify-attestation` and `challenge` CLIs, and the image a real path in the local Nix store
// (the publisher's provenance is checked against its NAR hash there). What a stack outputs is given as
// the engine would return it; the engine run itself is test/engine's. Every refusal is a case built to fail.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  ApprovalConfig,
  ConfigError,
  Evidence,
  judgeAuditors,
  NotApproved,
  parseApprovalConfig,
  publisherProvenance,
  publisherSummary,
  shortKeyid,
  StackOutputs,
} from "../../consumer/approval";
import { generateKeyPair, INTOTO_PAYLOAD_TYPE, parsePrivateKey, signEnvelope } from "../../pipeline/lib/dsse";
import { NAR_SHA256, provenancePredicate, SLSA_PROVENANCE_V1, SLSA_VSA_V1, statement, Subject, verificationPredicate } from "../../pipeline/lib/in-toto";
import { narHashHex } from "../../pipeline/lib/nix";

const PUBLISHER = "organization/secure-supply-chain/demo";
const AUDIT_A = "organization/secure-supply-chain/demo-audit";
const AUDIT_B = "other-org/secure-supply-chain/audit";
const DRV = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-demo-image.drv";
const OTHER_DRV = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-demo-image.drv";

type Key = ReturnType<typeof generateKeyPair>;
let dir: string;
let image: string; // a real store path: the publisher's provenance is checked against its NAR hash
let dep: string; // another real store path the builds produced
let imageNar: string;
let depNar: string;
const keys = {} as Record<"publisher" | "a" | "b" | "other", Key>;
let publisherProv: string;
let publisherVsa: string;

const nixStore = (args: string[]) => execFileSync("nix-store", args, { encoding: "utf8" }).trim();
function storePath(name: string): { path: string; nar: string } {
  const f = path.join(dir, name);
  fs.writeFileSync(f, `${name} ${crypto.randomUUID()}\n`); // our own path, never one another test shares
  const p = nixStore(["--add", f]);
  return { path: p, nar: narHashHex(nixStore(["--query", "--hash", p])) };
}

let n = 0;
function write(envelope: object): string {
  const f = path.join(dir, `${++n}.intoto.jsonl`);
  fs.writeFileSync(f, JSON.stringify(envelope) + "\n");
  return f;
}

const nar = (p: string, hex: string): Subject => ({ name: p, digest: { [NAR_SHA256]: hex } });

/** Signed SLSA provenance of `drv` by `key`, in attest's / audit's format. */
function provenance(key: Key, subjects: Subject[], drv = DRV): string {
  const predicate = provenancePredicate({
    source: { file: "default.nix", attribute: "image" },
    drvPath: drv,
    nixVersion: "test",
    sandbox: true,
    isolation: "bwrap",
    rebuilderImage: null,
    dependencies: [],
    builderId: `https://example.org/builders/${key.keyid.slice(0, 8)}`,
    toolVersion: "test",
    invocationId: crypto.randomUUID(),
    startedOn: null,
    finishedOn: null,
    byproducts: [],
  });
  return write(signEnvelope(Buffer.from(JSON.stringify(statement(subjects, SLSA_PROVENANCE_V1, predicate))), INTOTO_PAYLOAD_TYPE, parsePrivateKey(key.privatePem, "key")));
}

function summary(key: Key, reproducible: boolean): string {
  const predicate = verificationPredicate({
    verifierId: "https://example.org/verifier",
    toolVersion: "test",
    nixVersion: "test",
    timeVerified: "2024-01-01T00:00:00Z",
    resourceUri: `file://${image}`,
    provenance: { name: "provenance.intoto.jsonl", digest: { sha256: "00".repeat(32) } },
    rebuild: { reproducible, matched: 2, checked: 2, mismatched: [], isolation: "bwrap", interfaces: ["lo"], image: null, imageDigest: null },
    boot: { passed: true, probesPassed: 1, probes: [{ name: "reader", ok: true }], accel: "tcg" },
  });
  return write(signEnvelope(Buffer.from(JSON.stringify(statement([nar(image, imageNar)], SLSA_VSA_V1, predicate))), INTOTO_PAYLOAD_TYPE, parsePrivateKey(key.privatePem, "key")));
}

test.before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "consumer-approval-test-"));
  ({ path: image, nar: imageNar } = storePath("demo-image"));
  ({ path: dep, nar: depNar } = storePath("demo-dep"));
  for (const k of ["publisher", "a", "b", "other"] as const) keys[k] = generateKeyPair();
  publisherProv = provenance(keys.publisher, [{ name: "kernel", digest: { sha256: "11".repeat(32) } }, nar(image, imageNar), nar(dep, depNar)]);
  publisherVsa = summary(keys.publisher, true);
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const auditor = (stack: string, key: Key) => ({ stack, publicKey: key.publicPem });
function config(auditors: { stack: string; publicKey: string }[], requiredAgreeing: number): ApprovalConfig {
  return parseApprovalConfig({ supplyChainStack: PUBLISHER, publisherPublicKey: keys.publisher.publicPem, auditors: JSON.stringify(auditors), requiredAgreeing: String(requiredAgreeing) });
}
const outputs = (o: Record<string, unknown>): StackOutputs => ({ ok: true, outputs: o });
/** An audit stack's outputs (the audit role's contract), `auditAttestation` the signed provenance. */
const audited = (attestation: string, key: Key): StackOutputs => outputs({ auditAttestation: attestation, auditReproduced: true, auditorKeyId: key.keyid, auditorPublicKey: key.publicPem, auditedDrvPath: DRV, auditedOutPath: image });

/** Each decision's private directory, to show it is removed. */
const evidenceDirs: string[] = [];
/** The whole decision as index.ts makes it, minus Pulumi. */
function decide(cfg: ApprovalConfig, reads: StackOutputs[], pub = { provenance: publisherProv as unknown, verification: publisherVsa as unknown }) {
  const ev = new Evidence();
  try {
    const p = publisherProvenance(ev, cfg, pub.provenance, [image], image);
    publisherSummary(ev, cfg, pub.verification, [image], image, p.keyFile);
    return judgeAuditors(ev, cfg, p, image, reads);
  } finally {
    ev.remove();
    evidenceDirs.push(ev.dir);
  }
}

const full = () => [nar(image, imageNar), nar(dep, depNar)];
const k = (key: Key) => shortKeyid(key.keyid);

test("2 agreeing of 2 required: approved, approvedBy the publisher then both auditors; the private copies are removed", (t) => {
  const cfg = config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)], 2);
  const j = decide(cfg, [audited(provenance(keys.a, full()), keys.a), audited(provenance(keys.b, [nar(image, imageNar)]), keys.b)]);
  t.true(j.approved, j.line ?? "");
  t.is(j.agreeing, 2);
  t.deepEqual(j.approvedBy, [
    { stack: PUBLISHER, keyid: keys.publisher.keyid },
    { stack: AUDIT_A, keyid: keys.a.keyid },
    { stack: AUDIT_B, keyid: keys.b.keyid },
  ]);
  t.deepEqual(j.results.map((r) => [r.stack, r.verdict, r.compared]), [[AUDIT_A, "agree", 2], [AUDIT_B, "agree", 1]]);
  t.is(j.line, null);
  t.false(fs.existsSync(evidenceDirs[evidenceDirs.length - 1]));
});

test("1 agreeing of 2 required: refused in one line naming the missing auditor; a stack that cannot be read is missing too", (t) => {
  const cfg = config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)], 2);
  const j = decide(cfg, [audited(provenance(keys.a, full()), keys.a), outputs({ auditReproduced: true })]);
  t.false(j.approved);
  t.deepEqual(j.approvedBy, []);
  t.is(j.line, `${PUBLISHER}: image ${image} is not approved: 1 of the 2 required independent agreeing attestations; agreeing: ${AUDIT_A} (keyid ${k(keys.a)}); missing: ${AUDIT_B} (no auditAttestation among its outputs)`);
  t.false(j.line!.includes("\n"));

  const gone = decide(cfg, [audited(provenance(keys.a, full()), keys.a), { ok: false, reason: `unknown stack "${AUDIT_B}"` }]);
  t.false(gone.approved);
  t.regex(gone.line!, new RegExp(`missing: ${AUDIT_B} \\(its outputs cannot be read: unknown stack "${AUDIT_B}"\\)$`));
  const unreadable = decide(cfg, [audited(provenance(keys.a, full()), keys.a), audited(path.join(dir, "no-such.intoto.jsonl"), keys.b)]);
  t.regex(unreadable.line!, /missing: .* \(its auditAttestation .*no-such\.intoto\.jsonl cannot be read: ENOENT\)$/);
});

test("an auditor with another NAR digest for one path is disagreeing, with both digests; 1 of 1 required still approves, saying so", (t) => {
  const bad = "ab".repeat(32);
  const cfg = config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)], 2);
  const reads = [audited(provenance(keys.a, full()), keys.a), audited(provenance(keys.b, [nar(image, imageNar), nar(dep, bad)]), keys.b)];
  const j = decide(cfg, reads);
  t.false(j.approved);
  t.is(j.line, `${PUBLISHER}: image ${image} is not approved: 1 of the 2 required independent agreeing attestations; agreeing: ${AUDIT_A} (keyid ${k(keys.a)}); disagreeing: ${AUDIT_B} (${dep}: ${NAR_SHA256} publisher ${depNar}, auditor ${bad})`);

  const one = decide(config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)], 1), reads);
  t.true(one.approved);
  t.deepEqual(one.approvedBy.map((a) => a.stack), [PUBLISHER, AUDIT_A]);
  t.regex(one.line!, new RegExp(`is approved with 1 of the 1 required independent agreeing attestation; .*disagreeing: ${AUDIT_B} \\(${dep}: ${NAR_SHA256} publisher ${depNar}`));
});

test("an auditor signed with a key other than the configured one is named: key mismatch, or bad signature when a byte changed", (t) => {
  const cfg = config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)], 2);
  const byOther = provenance(keys.other, full());
  const j = decide(cfg, [audited(provenance(keys.a, full()), keys.a), audited(byOther, keys.other)]);
  t.false(j.approved);
  t.regex(j.line!, /: 1 of the 2 required /);
  t.true(j.line!.endsWith(`not verified: ${AUDIT_B} (${byOther}: key mismatch: signed by keyid ${keys.other.keyid}, the public key's keyid is ${keys.b.keyid})`), j.line!);

  const e = JSON.parse(fs.readFileSync(provenance(keys.b, full()), "utf8"));
  const payload = Buffer.from(e.payload, "base64");
  payload[payload.length >> 1] ^= 0x01;
  const tampered = write({ ...e, payload: payload.toString("base64") });
  const tj = decide(cfg, [audited(provenance(keys.a, full()), keys.a), audited(tampered, keys.b)]);
  t.false(tj.approved);
  t.regex(tj.line!, new RegExp(`not verified: ${AUDIT_B} \\(${tampered}: bad signature: `));
  // Only the bad one is refused: the other auditor still agrees.
  t.deepEqual(tj.results.map((r) => r.verdict), ["agree", "rejected"]);
});

test("an auditor using the publisher's key, or the key of an auditor already counted, is not independent", (t) => {
  const cfg = config([auditor(AUDIT_A, keys.publisher), auditor(AUDIT_B, keys.b)], 2);
  const j = decide(cfg, [audited(provenance(keys.publisher, full()), keys.publisher), audited(provenance(keys.b, full()), keys.b)]);
  t.false(j.approved);
  t.is(j.line, `${PUBLISHER}: image ${image} is not approved: 1 of the 2 required independent agreeing attestations; agreeing: ${AUDIT_B} (keyid ${k(keys.b)}); not independent: ${AUDIT_A} (its configured key is the publisher's (keyid ${k(keys.publisher)}))`);

  const same = config([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.a)], 2);
  const s = decide(same, [audited(provenance(keys.a, full()), keys.a), audited(provenance(keys.a, full()), keys.a)]);
  t.false(s.approved);
  t.true(s.line!.endsWith(`not independent: ${AUDIT_B} (agrees, but signed with the same key as ${AUDIT_A} (keyid ${k(keys.a)}))`), s.line!);
});

test("an auditor's provenance of a different drv, or not naming the image, is disagreeing", (t) => {
  const cfg = config([auditor(AUDIT_A, keys.a)], 1);
  const j = decide(cfg, [audited(provenance(keys.a, full(), OTHER_DRV), keys.a)]);
  t.false(j.approved);
  t.is(j.line, `${PUBLISHER}: image ${image} is not approved: 0 of the 1 required independent agreeing attestation; agreeing: none; disagreeing: ${AUDIT_A} (its provenance is of "${OTHER_DRV}", the publisher's of ${DRV})`);
  const noImage = decide(cfg, [audited(provenance(keys.a, [nar(dep, depNar)]), keys.a)]);
  t.regex(noImage.line!, new RegExp(`disagreeing: ${AUDIT_A} \\(its provenance does not attest the image ${image}\\)$`));
});

test("requiredAgreeing 0 (the default) approves on the publisher's evidence alone, which is still checked", (t) => {
  const cfg = parseApprovalConfig({ supplyChainStack: PUBLISHER, publisherPublicKey: keys.publisher.publicPem });
  t.is(cfg.requiredAgreeing, 0);
  t.deepEqual(cfg.auditors, []);
  const j = decide(cfg, []);
  t.true(j.approved);
  t.deepEqual(j.approvedBy, [{ stack: PUBLISHER, keyid: keys.publisher.keyid }]);
  // Built to fail: the publisher's provenance with another publisher key, and a FAILED summary.
  const wrong = parseApprovalConfig({ supplyChainStack: PUBLISHER, publisherPublicKey: keys.other.publicPem });
  const e = t.throws(() => decide(wrong, []), { instanceOf: NotApproved });
  t.regex(e!.message, new RegExp(`^${PUBLISHER}: image ${image} is not approved: the provenance attestation ${publisherProv} does not verify with publisherPublicKey: .*key mismatch`));
  const failed = t.throws(() => decide(cfg, [], { provenance: publisherProv, verification: summary(keys.publisher, false) }), { instanceOf: NotApproved });
  t.regex(failed!.message, /is not approved: the signed verification summary says FAILED, without SECURE_SUPPLY_CHAIN_REBUILT_BIT_IDENTICAL, SECURE_SUPPLY_CHAIN_BOOT_TESTED$/);
  const none = t.throws(() => decide(cfg, [], { provenance: undefined, verification: publisherVsa }), { instanceOf: NotApproved });
  t.is(none!.message, `${PUBLISHER}: image ${image} is not approved: no provenance attestation among its outputs`);
});

test("bad config values are one-line errors naming the key", (t) => {
  const pem = keys.a.publicPem;
  const raw = (o: Record<string, unknown>) => ({ supplyChainStack: PUBLISHER, publisherPublicKey: keys.publisher.publicPem, ...o }) as any;
  const two = JSON.stringify([auditor(AUDIT_A, keys.a), auditor(AUDIT_B, keys.b)]);
  const cases: [Record<string, unknown>, string][] = [
    [{ auditors: two, requiredAgreeing: "3" }, `requiredAgreeing is "3": give an integer from 0 to 2 (the number of auditors)`],
    [{ auditors: two, requiredAgreeing: "-1" }, `requiredAgreeing is "-1": give an integer from 0 to 2 (the number of auditors)`],
    [{ auditors: two, requiredAgreeing: "1.5" }, `requiredAgreeing is "1.5": give an integer from 0 to 2 (the number of auditors)`],
    [{ requiredAgreeing: "1" }, `requiredAgreeing is "1": give an integer from 0 to 0 (the number of auditors)`],
    [{ auditors: "[{stack:" }, `auditors is not JSON: give a list of {stack, publicKey} (pulumi config set --path 'auditors[0].stack' ...)`],
    [{ auditors: JSON.stringify({ stack: AUDIT_A }) }, `auditors is {"stack":"${AUDIT_A}"}, not a list of {stack, publicKey}`],
    [{ auditors: JSON.stringify(["x"]) }, `auditors[0] is "x", not {stack, publicKey}`],
    [{ auditors: JSON.stringify([{ stack: AUDIT_A }]) }, `auditors[0].publicKey is not set: give the signer's Ed25519 public key (SPKI PEM)`],
    [{ auditors: JSON.stringify([{ stack: AUDIT_A, publickey: pem }]) }, `auditors[0] has "publickey": an auditor is only {stack, publicKey}`],
    [{ auditors: JSON.stringify([{ stack: "demo-audit", publicKey: pem }]) }, `auditors[0].stack is "demo-audit", not organization/project/stack`],
    [{ auditors: JSON.stringify([{ stack: PUBLISHER, publicKey: pem }]) }, `auditors[0].stack is the publisher's stack ${PUBLISHER} (supplyChainStack): it cannot audit itself`],
    [{ auditors: JSON.stringify([auditor(AUDIT_A, keys.a), auditor(AUDIT_A, keys.b)]) }, `auditors[1].stack ${AUDIT_A} is auditors[0].stack again: each auditor stack is listed once`],
    [{ auditors: JSON.stringify([{ stack: AUDIT_A, publicKey: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n" }]) }, `auditors[0].publicKey is not a PEM public key (ERR_OSSL_UNSUPPORTED)`],
    [{ auditors: JSON.stringify([{ stack: AUDIT_A, publicKey: keys.a.privatePem }]) }, `auditors[0].publicKey is a private key: give the public key (signing.pub)`],
    [{ publisherPublicKey: undefined }, `publisherPublicKey is not set: give the signer's Ed25519 public key (SPKI PEM)`],
    [{ supplyChainStack: "demo" }, `supplyChainStack is "demo", not organization/project/stack`],
  ];
  for (const [o, message] of cases) {
    const e = t.throws(() => parseApprovalConfig(raw(o)), { instanceOf: ConfigError }, JSON.stringify(o));
    t.is(e?.message.replace(/\(ERR_[A-Z_]+\)/, "(ERR_OSSL_UNSUPPORTED)"), message);
    t.false(e!.message.includes("\n"));
    t.false(e!.message.includes("PRIVATE KEY"), "the message never quotes a key");
  }
  // Good values parse, whitespace around N allowed; each key's keyid is computed from OUR config.
  const ok = parseApprovalConfig(raw({ auditors: two, requiredAgreeing: " 2 " }));
  t.is(ok.requiredAgreeing, 2);
  t.deepEqual(ok.auditors.map((a) => [a.stack, a.keyid]), [[AUDIT_A, keys.a.keyid], [AUDIT_B, keys.b.keyid]]);
});
