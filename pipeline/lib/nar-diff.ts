// Which files differ between two NARs of the same store path. NAR parsing is the closure
// engineer's (pipeline/lib/nar.ts); here: a listing with per-file content hashes, and its diff.
import * as fs from "node:fs";
import * as crypto from "node:crypto";
import { ByteReader, fileReader, parseNar } from "./nar";
import { nix32Encode } from "./storepath";

export interface NarFile {
  type: "regular" | "symlink" | "directory";
  executable?: boolean;
  size?: number;
  /** sha256 hex of a regular file's contents */
  sha256?: string;
  target?: string;
}

/** Nix's narHash form (`sha256:<nix32>`) of a NAR file, as `nix-store -q --hash` prints it. */
export async function narHashOfFile(file: string): Promise<string> {
  const h = crypto.createHash("sha256");
  for await (const c of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return `sha256:${nix32Encode(h.digest())}`;
}

/** path inside the NAR ("" = root) -> what is there. */
export async function listNar(source: ByteReader): Promise<Map<string, NarFile>> {
  const files = new Map<string, NarFile>();
  const hashers = new Map<NarFile, crypto.Hash>();
  await parseNar(source, {
    file(e) {
      const entry: NarFile = { type: "regular", executable: e.executable, size: e.size };
      const h = crypto.createHash("sha256");
      files.set(e.path, entry);
      hashers.set(entry, h);
      return (chunk: Buffer) => void h.update(chunk);
    },
    entry(e) {
      if (e.type === "symlink") files.set(e.path, { type: "symlink", target: e.target });
      else if (e.type === "directory") files.set(e.path, { type: "directory" });
    },
  });
  for (const [f, h] of hashers) f.sha256 = h.digest("hex");
  return files;
}

export function listNarFile(file: string): Promise<Map<string, NarFile>> {
  return listNar(fileReader(file));
}

export interface FileDifference {
  file: string;
  change: "added" | "removed" | "contents" | "type" | "mode" | "target";
}

/** Differences from `a` (original) to `b` (rebuild), sorted by file. Root is shown as ".". */
export function diffListings(a: Map<string, NarFile>, b: Map<string, NarFile>): FileDifference[] {
  const out: FileDifference[] = [];
  const names = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const n of names) {
    const x = a.get(n);
    const y = b.get(n);
    const file = n === "" ? "." : n;
    if (!x) out.push({ file, change: "added" });
    else if (!y) out.push({ file, change: "removed" });
    else if (x.type !== y.type) out.push({ file, change: "type" });
    else if (x.type === "symlink" && x.target !== y.target) out.push({ file, change: "target" });
    else if (x.type === "regular" && x.sha256 !== y.sha256) out.push({ file, change: "contents" });
    else if (x.type === "regular" && x.executable !== y.executable) out.push({ file, change: "mode" });
  }
  return out;
}
