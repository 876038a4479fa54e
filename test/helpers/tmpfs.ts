// A file system that fills up on purpose: the disk-full cases mount a tmpfs of a chosen size. Mounting
// needs root, as CI runs; elsewhere the case fails saying so rather than skipping.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";

/** Mounts a tmpfs of `size` (mount's syntax: 64k, 80m) at `dir`, creating it; returns its unmount. */
export function mountTmpfs(dir: string, size: string): () => void {
  if (process.getuid?.() !== 0) throw new Error("the disk-full cases mount a tmpfs: run them as root (as CI does)");
  fs.mkdirSync(dir, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]);
  return () => execFileSync("umount", [dir]);
}
