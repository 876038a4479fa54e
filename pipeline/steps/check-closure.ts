// `supply-chain check-closure`: the auditor's offline tamper check of a source closure against the
// reviewed Nix files. Exit 1 naming each tampered, missing or unexpected source.
import { checkClosure, ClosureCheckResult, describeFailure } from "../lib/closure-check";
import { CheckFailed, log, StepDefinition } from "../lib/step";

export const step: StepDefinition<ClosureCheckResult> = {
  name: "check-closure",
  summary: "re-hash every source in a closure against the hashes the reviewed Nix files declare",
  options: {
    file: { type: "string", description: "reviewed Nix file (with --attribute)" },
    attribute: { type: "string", description: "attribute of --file whose sources the closure must hold" },
    flake: { type: "string", description: "flake reference instead of --file/--attribute (Nix with flakes)" },
    closure: { type: "string", description: "closure file written by `supply-chain closure`", required: true },
  },
  async run({ values }) {
    log("check-closure", `evaluating ${values.flake ?? `${values.file} -A ${values.attribute}`} and re-hashing ${values.closure}`);
    const r = await checkClosure({ file: values.file, attribute: values.attribute, flake: values.flake, closure: values.closure });
    log("check-closure", `${r.checked} path(s) checked: ${r.tampered.length} tampered, ${r.missing.length} missing, ${r.extra.length} unexpected${r.unverifiable.length ? `, ${r.unverifiable.length} unverifiable` : ""}`);
    if (!r.ok) throw new CheckFailed(`closure rejected: ${describeFailure(r)}`, r);
    return r;
  },
};
