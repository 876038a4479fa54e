// The Pulumi program: reads the stack's config (validated up front) and declares what the stack's
// role is: a publisher's SupplyChain, or an Audit of a publisher's stack. Exports the outputs other
// stacks read (consumer/ and audit stacks: through a StackReference).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { AuditConfig, parseConfig, PROJECT, StackConfig } from "./pipeline/components/config";
import { asProgramError, SupplyChain } from "./pipeline/components/supply-chain";
import { Audit } from "./pipeline/components/audit";
import { parsePublicKey } from "./pipeline/lib/dsse";

function readConfig(): StackConfig {
  return asProgramError(() => parseConfig(pulumi.runtime.allConfig(), pulumi.getStack()));
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
    if (parsePublicKey(fs.readFileSync(file, "utf8"), c.publisherKey).asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 key");
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
  if (i < 0) return printed;
  // Only a file that is here: a checkout sharing the state that did not run the step keeps the name printed.
  const here = path.join(__dirname, printed.slice(i + 1));
  return fs.existsSync(here) ? here : printed;
}
const here = (o: pulumi.Output<string | null> | undefined) => o?.apply(inThisCheckout);
const key = signingKey();
/** The public half, for others to verify with (public: not a secret). */
const publicKey = key ? pulumi.unsecret(key.apply((pem) => crypto.createPublicKey(pem).export({ type: "spki", format: "pem" }).toString())) : undefined;
/** The publisher's outputs: the image by its content addresses, the verdicts, the signed files. */
function publisherOutputs(chain: SupplyChain) {
  return {
    imageDrvPath: chain.drvPath,
    imageOutPath: chain.build.outPath,
    imageNarHash: chain.build.narHash,
    imageDigest: chain.build.imageDigest,
    closureFile: here(chain.closure.closureFile),
    closureSha256: chain.closure.closureSha256,
    closureSources: chain.closure.sources,
    closureReport: here(chain.closure.report),
    closureReportHtml: here(chain.closure.reportHtml),
    rebuildIsolation: config.isolation,
    rebuildInterfaces: chain.rebuild.interfaces,
    reproducible: chain.verify.reproducible,
    reproducibleRatio: chain.verify.reproducibleRatio,
    verifyReport: here(chain.verify.report),
    bootTestPassed: chain.bootTest?.passed,
    bootTestAccel: chain.bootTest?.accel,
    policy: config.policy,
    provenance: here(chain.attest?.provenance),
    verification: here(chain.attest?.verification),
    sbom: here(chain.attest?.sbom),
    sbomSha256: chain.attest?.sbomSha256,
    attestationKeyId: chain.attest?.keyId,
    attestationPublicKey: publicKey,
  };
}

/** An auditor's outputs: the verdict on the publisher's stack and this auditor's own signed claims. */
function auditOutputs(audit: Audit, c: AuditConfig) {
  return {
    auditedStack: c.publisherStack,
    rebuildIsolation: c.isolation,
    policy: c.policy,
    auditReproduced: audit.reproduced,
    // attest false: a verdict only, nothing signed.
    ...(c.attest
      ? {
          auditAttestation: here(audit.attestation),
          auditVerification: here(audit.verification),
          auditorKeyId: audit.result.apply((r) => r.auditor?.keyid ?? null),
          auditorPublicKey: publicKey,
        }
      : {}),
    auditedDrvPath: audit.result.drvPath,
    auditedOutPath: audit.result.outPath,
    publisherKeyId: audit.result.apply((r) => r.publisher?.keyid ?? null),
    // A refusal writes no audit.json: the file there would be an earlier run's.
    auditReport: audit.result.apply((r) => ((r as { refused?: boolean }).refused ? null : path.resolve(__dirname, c.workDir, "audit", "audit.json"))),
  };
}

if (config.role === "audit") checkPublisherKey(config);
const outputs: Record<string, unknown> = {
  role: config.role,
  ...(config.role === "publish" ? publisherOutputs(SupplyChain.fromStackConfig("chain", config, key)) : auditOutputs(new Audit("audit", config, key), config)),
};
// Only what this stack has: an undefined export (another role's, a boot test or attest turned off)
// is one engine warning per name at every run.
export = Object.fromEntries(Object.entries(outputs).filter(([, v]) => v !== undefined));
