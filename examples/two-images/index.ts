// A user's own Pulumi program: two supply chains in one stack, one per image of this project's
// images.nix, each with its own probes and policy. The chains are the secure-supply-chain library's
// (docs/dsl.md); this file decides what the stack exports.
import * as pulumi from "@pulumi/pulumi";
import { SupplyChain } from "secure-supply-chain";

const config = new pulumi.Config();

// The small image: a failed verdict only warns (it is a preview environment), nothing is signed.
const small = new SupplyChain("small", {
  file: "images.nix",
  attribute: "small",
  probes: "probes/small.yaml",
  policy: (config.get("smallPolicy") ?? "warn") as "fail" | "warn",
  attest: false,
  offline: true,
});

// The system image: not reproduced fails the update, and the proof is signed with this stack's key.
const system = new SupplyChain("system", {
  file: "images.nix",
  attribute: "system",
  probes: "probes/system.yaml",
  policy: "fail",
  offline: true,
  signingKey: config.requireSecret("signingKey"),
});

export const images = {
  small: { outPath: small.build.outPath, reproducible: small.verify.reproducible, bootTestPassed: small.bootTest?.passed },
  system: {
    outPath: system.build.outPath,
    reproducible: system.verify.reproducible,
    bootTestPassed: system.bootTest?.passed,
    provenance: system.attest?.provenance,
  },
};
