// Audit (role audit): `supply-chain audit` of another stack's signed claims (docs/audit.md). The
// publisher's stack is read through a StackReference for WHERE its closure and provenance are; what
// is believed of them is only what verifies with the publisher's key from this stack's own config.
// The rebuild runs in an empty store of the audit's own, and the verdict is signed with this stack's key.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { AuditConfig } from "./config";
import { applyPolicy } from "./policy";
import { SIGNING_KEY_ENV } from "./attest";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, placementArgs, PROJECT_DIR, stepCommand } from "./step-command";
import { demoWorldShell } from "./supply-chain";
import { treeDigest } from "../lib/files";
import type { AuditResult } from "../steps/audit";

/** The publisher's outputs the audit reads (index.ts exports them under these names). */
const PUBLISHER_OUTPUTS = ["closureFile", "provenance"] as const;

const OUTPUTS = ["reproduced", "attestation", "verification"] as const;

/** `reproduced`: the verdict after the policy (docs/pulumi.md). */
export interface Audit extends OutputsOf<AuditResult, (typeof OUTPUTS)[number]> {}
export class Audit extends pulumi.ComponentResource {
  readonly result: pulumi.Output<AuditResult>;

  /** `signingKey`: the auditor's own key (a Pulumi secret); unset with attest false (a verdict, nothing signed). */
  constructor(name: string, c: AuditConfig, signingKey: pulumi.Input<string> | undefined, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Audit", name, {}, opts);
    const publisher = new pulumi.StackReference(`${name}-publisher`, { name: c.publisherStack }, { parent: this });
    const [closureFile, provenance] = PUBLISHER_OUTPUTS.map((o) =>
      publisher.getOutput(o).apply((v) => {
        if (typeof v !== "string") throw new Error(`stack ${c.publisherStack} has no output '${o}' (config secure-supply-chain:publisherStack): is it a publisher stack with attest on?`);
        return v;
      }),
    );
    // A file of the publisher's stack in this checkout (demo-audit of demo) is named relative to the
    // project, like every path in a command: a moved checkout changes no command.
    const named = (f: pulumi.Output<string>) => f.apply((p) => (path.isAbsolute(p) && p.startsWith(PROJECT_DIR + path.sep) ? path.relative(PROJECT_DIR, p) : p));
    // The reviewed files, by content (a demo world is generated first when absent).
    const reviewed = command.local
      .runOutput({ command: c.source === "demo-world" ? `${demoWorldShell(c)} && echo ok` : "echo ok" }, { parent: this })
      .stdout.apply(() => treeDigest(path.dirname(path.resolve(PROJECT_DIR, c.file))));
    // Triggers only: the step reads and verifies the files itself, whatever they hold then.
    const provenanceDigest = provenance.apply((f) => (fs.existsSync(f) ? crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex") : "absent"));
    const publisherKey = path.resolve(PROJECT_DIR, c.publisherKey);
    const keyDigest = crypto.createHash("sha256").update(fs.readFileSync(publisherKey)).digest("hex");
    const cmd = stepCommand(
      `${name}-audit`,
      {
        step: "audit",
        args: [
          "--file", c.file,
          "--attribute", c.attribute,
          "--closure", named(closureFile),
          "--attestation", named(provenance),
          "--public-key", c.publisherKey,
          "--isolation", c.isolation,
          ...(c.rebuilderImage ? ["--image", c.rebuilderImage] : []),
          "--out", `${c.workDir}/audit`,
          ...(signingKey ? ["--key-env", SIGNING_KEY_ENV] : []),
          ...(c.builderId ? ["--builder-id", c.builderId] : []),
          ...placementArgs(c),
        ],
        triggers: [reviewed, provenanceDigest, keyDigest, publisher.getOutput("closureSha256")],
        allowCheckFailure: c.policy === "warn",
        ...(signingKey ? { secretEnvironment: { [SIGNING_KEY_ENV]: signingKey } } : {}),
      },
      { parent: this },
    );
    const r = parseStepJson<AuditResult & { reason?: string }>("audit", cmd.stdout);
    this.result = r;
    const reproduced = applyPolicy(c.policy, r.apply((j) => j.reproduced === true), r.apply((j) => `audit of ${c.publisherStack}: ${j.reason ?? "not reproduced"}`), this);
    // A refusal's verdict (exit 1, tolerated under policy warn) is {reproduced, refused, reason}: nothing signed.
    const view = pulumi.all([r, reproduced]).apply(([j, v]) => ({ ...j, reproduced: v, attestation: j.attestation ?? null, verification: j.verification ?? null }));
    declareOutputs(this, view, OUTPUTS);
  }
}
