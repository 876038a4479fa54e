// The steps' JSON (docs/contracts.md), as the components read it: the steps' own result types, so a
// field a step changes is a type error here rather than an undefined output at `pulumi up`.
export type { BuildResult as BuildJson } from "../steps/build";
export type { ClosureResult as ClosureJson } from "../steps/closure";
export type { RebuildResult as RebuildJson } from "../steps/rebuild";
export type { VerifyResult as VerifyJson } from "../steps/verify";
export type { BootTestResult as BootTestJson } from "../steps/boot-test";
