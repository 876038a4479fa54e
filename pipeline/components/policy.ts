// What a failed verdict does. `fail`: the step's exit 1 fails its command and so `pulumi up`.
// `warn`: the command tolerates exit 1 (never exit 2: bad input or a missing tool), the verdict is
// still an output, and the engine prints a warning.
import * as pulumi from "@pulumi/pulumi";
import { Policy } from "./config";

export function applyPolicy(policy: Policy, ok: pulumi.Output<boolean>, message: pulumi.Output<string>, resource: pulumi.Resource): pulumi.Output<boolean> {
  return pulumi.all([ok, message]).apply(([v, m]) => {
    if (!v) {
      if (policy === "fail") throw new Error(m);
      pulumi.log.warn(`${m} (policy "warn": not failing the update)`, resource);
    }
    return v;
  });
}
