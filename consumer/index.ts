// A second Pulumi project consuming the supply chain's stack outputs through a StackReference. It
// approves the image only on signed evidence it checks itself with the PUBLISHER'S public key (its
// own config, not the publisher's outputs): the provenance must name the image's store path with
// its NAR hash, and the signed verification summary must say PASSED — not the `reproducible`
// boolean alone, which anyone who can write the publisher's state could set.
//   pulumi -C consumer config set supplyChainStack organization/secure-supply-chain/demo
//   pulumi -C consumer config set publisherPublicKey -- "$(cat stacks/demo-signing.pub)"
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";

const config = new pulumi.Config();
const source = config.get("supplyChainStack") ?? "organization/secure-supply-chain/demo";
const publicKeyPem = config.require("publisherPublicKey");
const chain = new pulumi.StackReference(source);

const CLI = path.join(__dirname, "..", "bin", "supply-chain.js");
const PROVENANCE = "https://slsa.dev/provenance/v1";
const VSA = "https://slsa.dev/verification_summary/v1";
/** The levels this consumer requires (docs/attest.md): rebuilt bit for bit, and booted. */
const REQUIRED_LEVELS = ["SECURE_SUPPLY_CHAIN_REBUILT_BIT_IDENTICAL", "SECURE_SUPPLY_CHAIN_BOOT_TESTED"];

/**
 * `supply-chain verify-attestation`: the signature with our key, the predicate type, the image as a
 * subject. The attestation is read ONCE: those bytes are what is verified (from a private copy) and
 * what the statement is parsed from, so a file changed after the check is never believed.
 */
function verifiedStatement(what: string, file: unknown, predicateType: string, storePath: string): any {
  if (typeof file !== "string") throw new pulumi.RunError(`${source}: no ${what} attestation among its outputs: the image is not approved`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "consumer-verify-"));
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
    fs.writeFileSync(path.join(dir, "publisher.pub"), publicKeyPem);
    fs.writeFileSync(path.join(dir, "attestation.jsonl"), bytes);
    const args = ["verify-attestation", "--attestation", path.join(dir, "attestation.jsonl"), "--public-key", path.join(dir, "publisher.pub"), "--predicate-type", predicateType, "--store-path", storePath];
    execFileSync(process.execPath, [CLI, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e: any) {
    const why = String(e.stderr ?? e.message).trim().split("\n").pop();
    throw new pulumi.RunError(`${source}: image ${storePath} is not approved: the ${what} attestation ${file} does not verify with publisherPublicKey: ${why}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const envelope = JSON.parse(bytes.toString("utf8"));
  return JSON.parse(Buffer.from(envelope.payload, "base64").toString("utf8"));
}

const narHash = chain.requireOutput("imageNarHash");

/** What this project would deploy: the image by its content address, only when the signed evidence says so. */
export const approvedImage = pulumi
  .all([chain.requireOutput("imageOutPath"), narHash, chain.getOutput("provenance"), chain.getOutput("verification")])
  .apply(([p, h, provenanceFile, verificationFile]) => {
    verifiedStatement("provenance", provenanceFile, PROVENANCE, p);
    const vsa = verifiedStatement("verification summary", verificationFile, VSA, p).predicate;
    const missing = REQUIRED_LEVELS.filter((l) => !(vsa.verifiedLevels ?? []).includes(l));
    if (vsa.verificationResult !== "PASSED" || missing.length) {
      throw new pulumi.RunError(
        `${source}: image ${p} is not approved: the signed verification summary says ${vsa.verificationResult}${missing.length ? `, without ${missing.join(", ")}` : ""}`,
      );
    }
    return { path: p as string, narHash: h as string };
  });
export const imageDrvPath = chain.requireOutput("imageDrvPath");
export const closureSha256 = chain.requireOutput("closureSha256");
export const reproducibleRatio = chain.requireOutput("reproducibleRatio");
export const attestationKeyId = chain.getOutput("attestationKeyId");
