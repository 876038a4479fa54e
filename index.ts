// The Pulumi program: reads the stack's config (validated up front), declares one SupplyChain,
// exports its outputs for other stacks (see consumer/: a StackReference reads them).
import * as crypto from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseConfig, PROJECT, SupplyChainConfig } from "./pipeline/components/config";
import { SupplyChain } from "./pipeline/components/supply-chain";

function readConfig(): SupplyChainConfig {
  try {
    return parseConfig(pulumi.runtime.allConfig(), pulumi.getStack());
  } catch (e) {
    // A RunError ends the program with just this message: no stack trace for a config mistake.
    if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
    throw e;
  }
}

const config = readConfig();
/** The attestation key: a Pulumi secret, refused when set in clear (it would sit in the stack file). */
function signingKey(): pulumi.Output<string> | undefined {
  if (!config.attest) return undefined;
  const isSecret = (pulumi.runtime as any).isConfigSecret as ((k: string) => boolean) | undefined;
  if (isSecret && !isSecret(`${PROJECT}:signingKey`)) {
    throw new pulumi.RunError(`config key '${PROJECT}:signingKey' is set in clear: set it with \`pulumi config set --secret ${PROJECT}:signingKey < signing.key\``);
  }
  return new pulumi.Config(PROJECT).requireSecret("signingKey");
}
const key = signingKey();
const chain = new SupplyChain("chain", config, { signingKey: key });

export const imageDrvPath = chain.drvPath;
export const imageOutPath = chain.build.outPath;
export const imageNarHash = chain.build.narHash;
export const imageDigest = chain.build.imageDigest;
export const closureFile = chain.closure.closureFile;
export const closureSha256 = chain.closure.closureSha256;
export const closureSources = chain.closure.sources;
export const closureReport = chain.closure.report;
export const rebuildIsolation = config.isolation;
export const rebuildInterfaces = chain.rebuild.interfaces;
export const reproducible = chain.verify.reproducible;
export const reproducibleRatio = chain.verify.reproducibleRatio;
export const verifyReport = chain.verify.report;
export const bootTestPassed = chain.bootTest ? chain.bootTest.passed : undefined;
export const bootTestAccel = chain.bootTest?.accel;
export const policy = config.policy;
export const provenance = chain.attest?.provenance;
export const verification = chain.attest?.verification;
export const sbom = chain.attest?.sbom;
export const sbomSha256 = chain.attest?.sbomSha256;
export const attestationKeyId = chain.attest?.keyId;
/** The public half, for consumers to verify with (public: not a secret). */
export const attestationPublicKey = key ? pulumi.unsecret(key.apply((pem) => crypto.createPublicKey(pem).export({ type: "spki", format: "pem" }).toString())) : undefined;
