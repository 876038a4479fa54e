// A second Pulumi project consuming the supply chain's stack outputs through a StackReference. It
// approves the image only on signed evidence it checks itself with keys from ITS OWN config, never with
// a key a stack outputs: the publisher's provenance must name the image's store path with its NAR hash
// and its signed verification summary must say PASSED (not the `reproducible` boolean alone, which
// anyone who can write the publisher's state could set); and at least `requiredAgreeing` of the
// `auditors` must have signed provenance that agrees with the publisher's (consumer/approval.ts,
// docs/attest.md "Consumers: N of M").
//   pulumi -C consumer config set supplyChainStack organization/secure-supply-chain/demo
//   pulumi -C consumer config set publisherPublicKey -- "$(cat stacks/demo-signing.pub)"
//   pulumi -C consumer config set --path 'auditors[0].stack' organization/secure-supply-chain/demo-audit
//   pulumi -C consumer config set --path 'auditors[0].publicKey' -- "$(cat stacks/demo-audit-signing.pub)"
//   pulumi -C consumer config set requiredAgreeing 1
import * as pulumi from "@pulumi/pulumi";
import { narHashHex } from "../pipeline/lib/nix";
import { ConfigError, Evidence, judgeAuditors, NotApproved, parseApprovalConfig, publisherProvenance, publisherSummary, StackOutputs } from "./approval";

const config = new pulumi.Config();
const cfg = (() => {
  try {
    return parseApprovalConfig({
      supplyChainStack: config.get("supplyChainStack"),
      publisherPublicKey: config.get("publisherPublicKey"),
      auditors: config.get("auditors"),
      requiredAgreeing: config.get("requiredAgreeing"),
    });
  } catch (e) {
    if (e instanceof ConfigError) throw new pulumi.RunError(`consumer config: ${e.message}`);
    throw e;
  }
})();
const chain = new pulumi.StackReference(cfg.publisherStack);

/**
 * An auditor's outputs through the engine's own stack-reference read, as an invoke: a StackReference
 * resource of a stack that does not exist fails the whole update, an invoke's error is ours to catch,
 * so a missing auditor stack is counted as missing, by name.
 */
function auditorOutputs(stack: string): Promise<StackOutputs> {
  return pulumi.runtime.invoke("pulumi:pulumi:readStackOutputs", { name: stack }).then(
    (r: any) => ({ ok: true as const, outputs: (r?.outputs ?? {}) as Record<string, unknown> }),
    (e: any) => ({ ok: false as const, reason: String(e?.message ?? e).trim().split("\n").pop() || "the engine gave no reason" }),
  );
}

const approval = pulumi
  .all([chain.requireOutput("imageOutPath"), chain.requireOutput("imageNarHash"), chain.getOutput("provenance"), chain.getOutput("verification"), Promise.all(cfg.auditors.map((a) => auditorOutputs(a.stack)))])
  .apply(([p, h, provenanceFile, verificationFile, reads]) => {
    const image = p as string;
    const ev = new Evidence();
    try {
      const pub = publisherProvenance(ev, cfg, provenanceFile, [image], image);
      // The stack's imageNarHash and imageDrvPath are unsigned: exported only when the signed provenance says the same.
      if (narHashHex(h as string) !== pub.imageNarSha256) {
        throw new NotApproved(`${cfg.publisherStack}: image ${image} is not approved: its stack output imageNarHash ${h} is not the ${pub.imageNarSha256} its signed provenance attests`);
      }
      publisherSummary(ev, cfg, verificationFile, [image], image, pub.keyFile);
      const j = judgeAuditors(ev, cfg, pub, image, reads);
      if (!j.approved) throw new NotApproved(j.line!);
      if (j.line) pulumi.log.warn(j.line);
      return { image: { path: image, narHash: h as string }, drvPath: pub.drvPath, approvedBy: j.approvedBy };
    } catch (e) {
      if (e instanceof NotApproved) throw new pulumi.RunError(e.message);
      throw e;
    } finally {
      ev.remove();
    }
  });

/** What this project would deploy: the image by its content address, only when the signed evidence says so. */
export const approvedImage = approval.image;
/** Whose signed claims approved it: the publisher first, then each independent agreeing auditor. */
export const approvedBy = approval.approvedBy;
/** The image's derivation as the signed provenance names it (not the stack's unsigned output). */
export const imageDrvPath = approval.drvPath;
export const closureSha256 = chain.requireOutput("closureSha256");
export const reproducibleRatio = chain.requireOutput("reproducibleRatio");
export const attestationKeyId = chain.getOutput("attestationKeyId");
