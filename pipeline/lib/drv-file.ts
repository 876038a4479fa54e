// Store derivations read straight from their `.drv` files (Nix's on-disk ATerm, `Derive(...)`, the same in
// every Nix since 1.x), normalised to the shape derivation.ts gives the JSON dumps. Why not only the JSON:
// `nix show-derivation -r` re-reads these very files and prints them as JSON, which we then parse again;
// instantiating the target and reading the files ourselves is one step less on the closure's critical path.
// Only the reading: evaluating the target to its .drv (and falling back to the JSON dump) is nix.ts.
import * as fs from "node:fs";
import * as path from "node:path";
import type { Derivation, DerivationGraph, DrvOutput } from "./derivation";
import { parseOutput } from "./derivation";

/** Thrown for text that is not a `Derive(...)` ATerm we understand (callers fall back to the JSON dump). */
export class DrvFormatError extends Error {}

// Nearly every input uses just "out": one shared, frozen list instead of one per edge (a quarter of a
// 5,000-derivation graph's memory, and the GC time that goes with it).
const ONLY_OUT = Object.freeze(["out"]) as unknown as string[];
const ESCAPES: Record<string, string> = { n: "\n", r: "\r", t: "\t" };

/** Parses one store derivation file. `drvPath` names it (for the name fallback and errors). */
export function parseDrvFile(text: string, drvPath: string): Derivation {
  let i = 0;
  // Position of the next backslash at or after the current string, -1 when none: escapes are rare (only
  // in env values), so a string is normally one indexOf for its closing quote.
  let nextBackslash = text.indexOf("\\");
  const fail = (what: string): never => {
    throw new DrvFormatError(`${drvPath}: expected ${what} at offset ${i} ('${text.slice(i, i + 24)}')`);
  };
  const expect = (c: string) => {
    if (text.charCodeAt(i) !== c.charCodeAt(0)) fail(`'${c}'`);
    i++;
  };
  const str = (): string => {
    if (text.charCodeAt(i) !== 34 /* " */) fail("a string");
    let j = i + 1;
    let out = "";
    for (;;) {
      const quote = text.indexOf('"', j);
      if (quote < 0) fail("the end of a string");
      if (nextBackslash >= 0 && nextBackslash < j) nextBackslash = text.indexOf("\\", j);
      if (nextBackslash >= 0 && nextBackslash < quote) {
        const c = text[nextBackslash + 1];
        out += text.slice(j, nextBackslash) + (ESCAPES[c] ?? c);
        j = nextBackslash + 2;
        continue;
      }
      out += text.slice(j, quote);
      i = quote + 1;
      return out;
    }
  };
  const list = <T>(item: () => T): T[] => {
    expect("[");
    const xs: T[] = [];
    if (text.charCodeAt(i) === 93 /* ] */) {
      i++;
      return xs;
    }
    for (;;) {
      xs.push(item());
      if (text.charCodeAt(i) === 44 /* , */) {
        i++;
        continue;
      }
      expect("]");
      return xs;
    }
  };

  if (!text.startsWith("Derive(")) fail("'Derive(' (another ATerm, e.g. a dynamic derivation's DrvWithVersion, is not supported)");
  i = 7;
  const rawOutputs = list(() => {
    expect("(");
    const name = str();
    expect(",");
    const p = str();
    expect(",");
    const hashAlgo = str();
    expect(",");
    const hash = str();
    expect(")");
    return { name, path: p, hashAlgo, hash };
  });
  expect(",");
  const inputDrvs: Record<string, string[]> = Object.create(null);
  list(() => {
    expect("(");
    const p = str();
    expect(",");
    const outs = list(str);
    inputDrvs[p] = outs.length === 1 && outs[0] === "out" ? ONLY_OUT : outs;
    expect(")");
  });
  expect(",");
  const inputSrcs = list(str);
  expect(",");
  str(); // platform
  expect(",");
  const builder = str();
  expect(",");
  list(str); // args
  expect(",");
  const env: Record<string, string> = {};
  list(() => {
    expect("(");
    const k = str();
    expect(",");
    env[k] = str();
    expect(")");
  });
  expect(")");
  if (i !== text.length) fail("the end of the derivation");

  const storeDir = path.dirname(drvPath);
  const name = env.name ?? path.basename(drvPath).replace(/^[0-9a-z]{32}-/, "").replace(/\.drv$/, "");
  const outputs: Record<string, DrvOutput> = {};
  for (const o of rawOutputs) outputs[o.name] = parseOutput(storeDir, name, o.name, o);
  return { drvPath, name, outputs, inputDrvs, inputSrcs, builder, env };
}

/**
 * Reads whole files as UTF-8 through one reused buffer: thousands of `readFileSync` calls cost more (option
 * parsing, a fresh buffer, an fstat each). A read that does not fill the buffer reached the end of the
 * (regular) file; one that does grows the buffer and goes on.
 */
function smallFileReader(): (file: string) => string {
  let buf = Buffer.allocUnsafe(64 * 1024);
  return (file) => {
    const fd = fs.openSync(file, "r");
    try {
      let n = 0;
      for (;;) {
        const got = fs.readSync(fd, buf, n, buf.length - n, null);
        n += got;
        if (n < buf.length) return buf.toString("utf8", 0, n);
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, n);
        buf = bigger;
      }
    } finally {
      fs.closeSync(fd);
    }
  };
}

/**
 * The derivation graph of `root` (a `.drv` in the local store), breadth-first from the files. Throws a
 * DrvFormatError for a file it cannot parse, and the fs error (ENOENT, EACCES) for one it cannot read,
 * e.g. when the store's files are not at their logical path (a `--store` elsewhere).
 */
export function readDerivationGraph(root: string): DerivationGraph {
  const drvs = new Map<string, Derivation>();
  const queue = [root];
  const parent = new Map<string, string>();
  const read = smallFileReader();
  for (let k = 0; k < queue.length; k++) {
    const d = parseDrvFile(read(queue[k]), queue[k]);
    drvs.set(d.drvPath, d);
    for (const dep in d.inputDrvs) {
      if (dep !== root && !parent.has(dep)) {
        parent.set(dep, d.drvPath);
        queue.push(dep);
      }
    }
  }
  return { storeDir: path.dirname(root), format: 0, drvs, walk: { root, parent } };
}

/** True for the errors after which the JSON dump can still give the graph: an unparsable or unreadable file. */
export function drvFilesUnreadable(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return e instanceof DrvFormatError || code === "ENOENT" || code === "EACCES";
}
