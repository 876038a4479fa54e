// The second Nix's root file system (scripts/nix-rootfs.sh: built once, ~35 s, then cached).
import { execFileSync } from "node:child_process";
import * as path from "node:path";

export interface NixRoot {
  suite: string;
  root: string;
  tarball: string;
  sha256: string;
  nixVersion: string;
  pinned: boolean;
}

export function nixRoot(suite = "sid"): NixRoot {
  const script = path.join(__dirname, "..", "..", "scripts", "nix-rootfs.sh");
  return JSON.parse(execFileSync("bash", [script, suite], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }));
}

/** The version `nix --version` of the host prints, e.g. "2.8.0". */
export function hostNixVersion(): string {
  return execFileSync("nix", ["--version"], { encoding: "utf8" }).trim().split(" ").pop()!;
}
