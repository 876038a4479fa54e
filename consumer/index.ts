// A second Pulumi project consuming the supply chain's stack outputs through a StackReference:
// it accepts the image only if the chain said reproducible and booted, and pins it by content.
//   pulumi -C consumer config set supplyChainStack organization/secure-supply-chain/demo
import * as pulumi from "@pulumi/pulumi";

const config = new pulumi.Config();
const source = config.get("supplyChainStack") ?? "organization/secure-supply-chain/demo";
const chain = new pulumi.StackReference(source);

const reproducible = chain.requireOutput("reproducible");
// Absent when that stack skips the boot test: then the image is not approved either.
const bootTestPassed = chain.getOutput("bootTestPassed");
const narHash = chain.requireOutput("imageNarHash");

/** What this project would deploy: the image by its content address, only when it was verified. */
export const approvedImage = pulumi.all([reproducible, bootTestPassed, narHash, chain.requireOutput("imageOutPath")]).apply(([r, b, h, p]) => {
  if (r !== true || b !== true) {
    throw new pulumi.RunError(`${source}: image ${p} is not approved (reproducible: ${r}, boot test passed: ${b})`);
  }
  return { path: p as string, narHash: h as string };
});
export const imageDrvPath = chain.requireOutput("imageDrvPath");
export const closureSha256 = chain.requireOutput("closureSha256");
export const reproducibleRatio = chain.requireOutput("reproducibleRatio");
