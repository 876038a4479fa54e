// A component's outputs, declared once: named in one list and typed by its step's result type
// (docs/contracts.md), so a field a step renames or drops is a type error in the component rather
// than an undefined output at `pulumi up`.
import * as pulumi from "@pulumi/pulumi";

/** One typed Output per field K of T: a step's result type, or what a component makes of it. */
export type OutputsOf<T, K extends keyof T> = { readonly [P in K]: pulumi.Output<T[P]> };

/**
 * Fields `keys` of `result` (the step's parsed JSON, or a view of it) become `component`'s outputs:
 * one Output each, set as its fields, registered (`registerOutputs`) and returned. The class declares
 * the fields by merging an interface, so each output is named once, in the list:
 *
 *     const OUTPUTS = ["outPath", "narHash"] as const;
 *     export interface Build extends OutputsOf<BuildResult, (typeof OUTPUTS)[number]> {}
 *     export class Build extends pulumi.ComponentResource { … declareOutputs(this, r, OUTPUTS); }
 *
 * `extra`: outputs that are no field of the result (known before the step runs); the interface
 * declares them itself. Call it once, last: a component registers its outputs once.
 */
export function declareOutputs<T, K extends keyof T & string, E extends Record<string, pulumi.Output<unknown>> = Record<never, never>>(
  component: pulumi.ComponentResource,
  result: pulumi.Output<T>,
  keys: readonly K[],
  extra?: E,
): OutputsOf<T, K> & E {
  const outputs = { ...Object.fromEntries(keys.map((k) => [k, result.apply((j) => j[k])])), ...extra } as OutputsOf<T, K> & E;
  Object.assign(component, outputs);
  // registerOutputs is protected: the component hands itself in to have its outputs registered here.
  component["registerOutputs"](outputs);
  return outputs;
}
