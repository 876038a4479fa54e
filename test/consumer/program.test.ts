// consumer/index.ts under Pulumi's mocks (no engine): the wiring of config, the publisher's
// StackReference, the auditor stacks read with the readStackOutputs invoke (a failing invoke is a
// missing auditor, not a failed program), the RunError and the approvedBy output. The evidence is real
// (keys, envelopes, the CLIs, a store path); what the engine would return for each stack is given.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { generateKeyPair, INTOTO_PAYLOAD_TYPE, parsePrivateKey, signEnvelope } from "../../pipeline/lib/dsse";
import { NAR_SHA256, provenancePredicate, SLSA_PROVENANCE_V1, SLSA_VSA_V1, statement, Subject, verificationPredicate } from "../../pipeline/lib/in-toto";
import { narHashHex } from "../../pipeline/lib/nix";
import { runProgramFile } from "../components/harness";

const P = "supply-chain-consumer";
const PUBLISHER = "organization/secure-supply-chain/demo";
const AUDIT = "organization/secure-supply-chain/demo-audit";
const GONE = "organization/secure-supply-chain/no-such-audit";
const DRV = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-demo-image.drv";
type Key = ReturnType<typeof generateKeyPair>;

let dir: string;
let image: string;
let imageNar: string;
const publisher = generateKeyPair();
const auditorKey = generateKeyPair();
let publisherOutputs: Record<string, unknown>;
let auditOutputs: Record<string, unknown>;

function signed(key: Key, name: string, predicateType: string, predicate: unknown, subjects: Subject[]): string {
  const f = path.join(dir, `${name}.intoto.jsonl`);
  fs.writeFileSync(f, JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(statement(subjects, predicateType, predicate))), INTOTO_PAYLOAD_TYPE, parsePrivateKey(key.privatePem, name))) + "\n");
  return f;
}
const provenance = (key: Key, name: string, subjects: Subject[]) =>
  signed(key, name, SLSA_PROVENANCE_V1, provenancePredicate({ source: { file: "default.nix", attribute: "image" }, drvPath: DRV, nixVersion: "test", sandbox: true, isolation: "bwrap", rebuilderImage: null, dependencies: [], builderId: `https://example.org/${name}`, toolVersion: "test", invocationId: crypto.randomUUID(), startedOn: null, finishedOn: null, byproducts: [] }), subjects);

test.before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "consumer-program-test-"));
  const f = path.join(dir, "demo-image");
  fs.writeFileSync(f, `image ${crypto.randomUUID()}\n`);
  image = execFileSync("nix-store", ["--add", f], { encoding: "utf8" }).trim();
  imageNar = narHashHex(execFileSync("nix-store", ["--query", "--hash", image], { encoding: "utf8" }).trim());
  const subjects = [{ name: image, digest: { [NAR_SHA256]: imageNar } }];
  const vsa = verificationPredicate({
    verifierId: "https://example.org/verifier", toolVersion: "test", nixVersion: "test", timeVerified: "2024-01-01T00:00:00Z", resourceUri: `file://${image}`,
    provenance: { name: "provenance.intoto.jsonl", digest: { sha256: "00".repeat(32) } },
    rebuild: { reproducible: true, matched: 1, checked: 1, mismatched: [], isolation: "bwrap", interfaces: ["lo"], image: null, imageDigest: null },
    boot: { passed: true, probesPassed: 1, probes: [{ name: "reader", ok: true }], accel: "tcg" },
  });
  publisherOutputs = {
    imageOutPath: image, imageNarHash: `sha256:${imageNar}`, imageDrvPath: DRV, closureSha256: "c", reproducibleRatio: 1, attestationKeyId: publisher.keyid,
    provenance: provenance(publisher, "publisher", subjects), verification: signed(publisher, "vsa", SLSA_VSA_V1, vsa, subjects),
  };
  auditOutputs = { auditAttestation: provenance(auditorKey, "auditor", subjects), auditReproduced: true, auditorKeyId: auditorKey.keyid, auditedDrvPath: DRV, auditedOutPath: image };
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs consumer/index.ts with `config`; resolves its exports, or rejects with the program's error. */
async function runConsumer(config: Record<string, string>): Promise<{ outputs: Record<string, any>; invokes: string[] }> {
  const invokes: string[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        if (args.type !== "pulumi:pulumi:StackReference") throw new Error(`unexpected resource ${args.type}`);
        return { id: args.inputs.name, state: { name: args.inputs.name, outputs: args.inputs.name === PUBLISHER ? publisherOutputs : {}, secretOutputNames: [] } };
      },
      call(args) {
        invokes.push(`${args.token} ${args.inputs.name}`);
        if (args.token !== "pulumi:pulumi:readStackOutputs") throw new Error(`unexpected invoke ${args.token}`);
        // What the engine's builtin provider returns; a stack that does not exist is its error, which
        // reaches the SDK as a gRPC error whose `details` is the message (the mock passes the error as is).
        if (args.inputs.name === AUDIT) return { name: AUDIT, outputs: auditOutputs, secretOutputNames: [] };
        throw Object.assign(new Error("grpc"), { details: `invocation of pulumi:pulumi:readStackOutputs returned an error: unknown stack "${args.inputs.name}"` });
      },
    },
    P,
    "test",
    false,
  );
  pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(config).map(([k, v]) => [`${P}:${k}`, v])), []);
  const file = path.resolve(__dirname, "..", "..", "consumer", "index.ts");
  delete require.cache[file];
  return { outputs: await runProgramFile(file), invokes };
}

const base = () => ({ supplyChainStack: PUBLISHER, publisherPublicKey: publisher.publicPem });

test.serial("(mocked: no engine) 1 of 1 required: approvedImage and approvedBy; the auditor stack is read with the readStackOutputs invoke", async (t) => {
  const r = await runConsumer({ ...base(), auditors: JSON.stringify([{ stack: AUDIT, publicKey: auditorKey.publicPem }]), requiredAgreeing: "1" });
  t.deepEqual(r.outputs.approvedImage, { path: image, narHash: `sha256:${imageNar}` });
  t.is(r.outputs.imageDrvPath, DRV, "the drv the signed provenance names");
  t.deepEqual(r.outputs.approvedBy, [{ stack: PUBLISHER, keyid: publisher.keyid }, { stack: AUDIT, keyid: auditorKey.keyid }]);
  t.deepEqual(r.invokes, [`pulumi:pulumi:readStackOutputs ${AUDIT}`]);
});

test.serial("(mocked: no engine) an auditor stack the engine cannot read is counted as missing, by name, and the program fails with a RunError", async (t) => {
  const auditors = JSON.stringify([{ stack: AUDIT, publicKey: auditorKey.publicPem }, { stack: GONE, publicKey: generateKeyPair().publicPem }]);
  const e = await t.throwsAsync(runConsumer({ ...base(), auditors, requiredAgreeing: "2" }));
  t.true(e instanceof pulumi.RunError, String(e));
  t.is(e!.message, `${PUBLISHER}: image ${image} is not approved: 1 of the 2 required independent agreeing attestations; agreeing: ${AUDIT} (keyid ${auditorKey.keyid.slice(0, 12)}…); missing: ${GONE} (its outputs cannot be read: invocation of pulumi:pulumi:readStackOutputs returned an error: unknown stack "${GONE}")`);
  // With 1 of 2 required the same missing stack only warns: the image is approved.
  const ok = await runConsumer({ ...base(), auditors, requiredAgreeing: "1" });
  t.deepEqual(ok.outputs.approvedBy.map((a: any) => a.stack), [PUBLISHER, AUDIT]);
});

test.serial("(mocked: no engine) bad config is a RunError naming the key", async (t) => {
  const e = await t.throwsAsync(runConsumer({ ...base(), requiredAgreeing: "1" }));
  t.true(e instanceof pulumi.RunError, String(e));
  t.is(e!.message, `consumer config: requiredAgreeing is "1": give an integer from 0 to 0 (the number of auditors)`);
});
