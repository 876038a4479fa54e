// The Pulumi program: reads the stack's config (validated up front) and declares what the stack's
// role is: a publisher's SupplyChain, or an Audit of a publisher's stack. Exports the outputs other
// stacks read (consumer/ and audit stacks: through a StackReference).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { AuditConfig, ConfigError, parseConfig, PROJECT, StackConfig } from "./pipeline/components/config";
import { SupplyChain } from "./pipeline/components/supply-chain";
import { Audit } from "./pipeline/components/audit";

function readConfig(): StackConfig {
  try {
    return parseConfig(pulumi.runtime.allConfig(), pulumi.getStack());
  } catch (e) {
    // A RunError ends the program with just this message: no stack trace for a config mistake.
    if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
    throw e;
  }
}

const config = readConfig();
/** This stack's signing key: a Pulumi secret, refused when set in clear (it would sit in the stack file). */
function signingKey(): pulumi.Output<string> | undefined {
  if (!config.attest) return undefined;
  const isSecret = (pulumi.runtime as any).isConfigSecret as ((k: string) => boolean) | undefined;
  if (isSecret && !isSecret(`${PROJECT}:signingKey`)) {
    throw new pulumi.RunError(`config key '${PROJECT}:signingKey' is set in clear: set it with \`pulumi config set --secret ${PROJECT}:signingKey < signing.key\``);
  }
  return new pulumi.Config(PROJECT).requireSecret("signingKey");
}
/** The publisher's key of an audit stack: the auditor's own trust anchor, checked before anything runs. */
function checkPublisherKey(c: AuditConfig): void {
  const file = path.resolve(__dirname, c.publisherKey);
  try {
    if (crypto.createPublicKey(fs.readFileSync(file)).asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 key");
  } catch (e) {
    throw new pulumi.RunError(`config key '${PROJECT}:publisherKey': ${c.publisherKey} is not a readable Ed25519 public key in SPKI PEM (${(e as Error).message.split("\n")[0]})`);
  }
}
/**
 * A file a step named, as it is in this checkout. A step prints absolute paths, and the state keeps
 * its JSON from its last run, which may have been in another checkout's path (a moved checkout, a CI
 * workspace): a file under the work dir (relative to the project) is named under this one's.
 */
function inThisCheckout(printed: string | null): string | null {
  if (!printed || path.isAbsolute(config.workDir)) return printed;
  const marker = `${path.sep}${path.normalize(config.workDir)}${path.sep}`;
  const i = printed.lastIndexOf(marker);
  return i < 0 ? printed : path.join(__dirname, printed.slice(i + 1));
}
const here = (o: pulumi.Output<string | null> | undefined) => o?.apply(inThisCheckout);
const key = signingKey();
/** The public half, for others to verify with (public: not a secret). */
const publicKey = key ? pulumi.unsecret(key.apply((pem) => crypto.createPublicKey(pem).export({ type: "spki", format: "pem" }).toString())) : undefined;
if (config.role === "audit") checkPublisherKey(config);
const chain = config.role === "publish" ? new SupplyChain("chain", config, { signingKey: key }) : undefined;
const audit = config.role === "audit" ? new Audit("audit", config, key) : undefined;

export const role = config.role;
export const imageDrvPath = chain?.drvPath;
export const imageOutPath = chain?.build.outPath;
export const imageNarHash = chain?.build.narHash;
export const imageDigest = chain?.build.imageDigest;
export const closureFile = here(chain?.closure.closureFile);
export const closureSha256 = chain?.closure.closureSha256;
export const closureSources = chain?.closure.sources;
export const closureReport = here(chain?.closure.report);
export const rebuildIsolation = config.isolation;
export const rebuildInterfaces = chain?.rebuild.interfaces;
export const reproducible = chain?.verify.reproducible;
export const reproducibleRatio = chain?.verify.reproducibleRatio;
export const verifyReport = here(chain?.verify.report);
export const bootTestPassed = chain?.bootTest?.passed;
export const bootTestAccel = chain?.bootTest?.accel;
export const policy = config.policy;
export const provenance = here(chain?.attest?.provenance);
export const verification = here(chain?.attest?.verification);
export const sbom = here(chain?.attest?.sbom);
export const sbomSha256 = chain?.attest?.sbomSha256;
export const attestationKeyId = chain?.attest?.keyId;
export const attestationPublicKey = chain ? publicKey : undefined;
// role audit: the verdict on the publisher's stack and this auditor's own signed claims.
export const auditedStack = config.role === "audit" ? config.publisherStack : undefined;
export const auditReproduced = audit?.reproduced;
export const auditAttestation = here(audit?.attestation);
export const auditVerification = here(audit?.verification);
export const auditorKeyId = audit?.result.apply((r) => r.auditor?.keyid ?? null);
export const auditorPublicKey = audit ? publicKey : undefined;
export const auditedDrvPath = audit?.result.drvPath;
export const auditedOutPath = audit?.result.outPath;
export const publisherKeyId = audit?.result.apply((r) => r.publisher?.keyid ?? null);
export const auditReport = config.role === "audit" ? audit?.result.apply(() => path.resolve(__dirname, config.workDir, "audit", "audit.json")) : undefined;
