// What boot-test boots: an image path resolved to a kernel+initrd directory or an ISO
// (docs/boot-test.md, "What it boots"), or an exit-2 error that says what is missing.
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "./step";

export type BootImage =
  | { kind: "kernel"; dir: string; kernel: string; initrd: string; cmdline: string }
  | { kind: "iso"; iso: string };

/** Resolves PATH into what to boot, or an exit-2 error that says what is missing. */
export function resolveImage(p: string): BootImage {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new InputError(`image ${p} does not exist`);
  }
  if (st.isFile()) {
    if (!p.endsWith(".iso")) throw new InputError(`image ${p} is a file but not an .iso (expected an ISO, or a directory with kernel+initrd or iso/*.iso)`);
    return { kind: "iso", iso: path.resolve(p) };
  }
  if (!st.isDirectory()) throw new InputError(`image ${p} is neither a file nor a directory`);
  const kernel = path.join(p, "kernel");
  const initrd = path.join(p, "initrd");
  if (fs.existsSync(kernel) || fs.existsSync(initrd)) {
    for (const f of [kernel, initrd]) if (!isFile(f)) throw new InputError(`image ${p} has no ${path.basename(f)} file (a kernel+initrd image needs both)`);
    const cmdlineFile = path.join(p, "cmdline");
    const cmdline = isFile(cmdlineFile) ? fs.readFileSync(cmdlineFile, "utf8").split("\n")[0].trim() : "";
    return { kind: "kernel", dir: path.resolve(p), kernel: path.resolve(kernel), initrd: path.resolve(initrd), cmdline };
  }
  const isoDir = path.join(p, "iso");
  const isos = fs.existsSync(isoDir) ? fs.readdirSync(isoDir).filter((f) => f.endsWith(".iso")).sort() : [];
  if (isos.length === 1) return { kind: "iso", iso: path.resolve(isoDir, isos[0]) };
  if (isos.length > 1) throw new InputError(`image ${p} has ${isos.length} ISOs in iso/ (${isos.join(", ")}): pass one of them`);
  throw new InputError(`image ${p} is neither a kernel+initrd image (kernel, initrd, optional cmdline) nor an ISO directory (iso/*.iso)`);
}

function isFile(f: string): boolean {
  try {
    return fs.statSync(f).isFile();
  } catch {
    return false;
  }
}
