// `supply-chain check-closure`: the auditor's offline tamper check of a source closure against the
// reviewed Nix files. Exit 1 naming each tampered, missing or unexpected source.
// `--stage DIR` (the Pulumi docker rebuild): the closure is first copied into DIR and the copy is what
// is checked and what the rebuild container then imports (stageClosure: no check-then-use gap).
import * as fs from "node:fs";
import { checkClosure, ClosureCheckResult, describeFailure, stageClosure } from "../lib/closure-check";
import { describeTarget, TARGET_OPTIONS, targetFrom } from "../lib/nix";
import { CheckFailed, log, StepDefinition } from "../lib/step";

export const step: StepDefinition<ClosureCheckResult & { staged?: string; closureSha256?: string }> = {
  name: "check-closure",
  summary: "re-hash every source in a closure against the hashes the reviewed Nix files declare",
  options: {
    ...TARGET_OPTIONS,
    closure: { type: "string", description: "closure file written by `supply-chain closure`", required: true },
    stage: { type: "string", description: "copy the closure into this (new, private) directory first and check the copy: what a later import must read" },
    "closure-sha256": { type: "string", description: "refuse the closure unless its SHA-256 (hex) is this (with --stage)" },
  },
  async run({ values }) {
    const target = targetFrom(values);
    let closure: string = values.closure;
    let staged: { file: string; sha256: string } | undefined;
    if (values.stage) {
      fs.rmSync(values.stage, { recursive: true, force: true });
      staged = await stageClosure(closure, values.stage, values["closure-sha256"]);
      closure = staged.file;
    }
    log("check-closure", `evaluating ${describeTarget(target)} and re-hashing ${closure}`);
    const r = await checkClosure({ ...target, closure });
    log("check-closure", `${r.checked} path(s) checked: ${r.tampered.length} tampered, ${r.missing.length} missing, ${r.extra.length} unexpected${r.unverifiable.length ? `, ${r.unverifiable.length} unverifiable` : ""}`);
    const result = staged ? { ...r, staged: staged.file, closureSha256: staged.sha256 } : r;
    if (!r.ok) {
      if (values.stage) fs.rmSync(values.stage, { recursive: true, force: true });
      throw new CheckFailed(`closure rejected: ${describeFailure(r)}`, result);
    }
    return result;
  },
};
