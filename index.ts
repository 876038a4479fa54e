// The Pulumi program: reads the stack's config (validated up front), declares one SupplyChain,
// exports its outputs for other stacks (see consumer/: a StackReference reads them).
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseConfig, SupplyChainConfig } from "./pipeline/components/config";
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
const chain = new SupplyChain("chain", config);

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
