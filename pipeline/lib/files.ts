// Files a step writes appear atomically: written under a temporary name in the same directory,
// fsynced, then renamed, so a killed step never leaves a file that looks complete.
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";

export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`);
}

function writeSynced(file: string, data: string | Buffer, flags: string, mode?: number): void {
  const fd = fs.openSync(file, flags, mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeFileAtomic(target: string, data: string | Buffer): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempPathFor(target);
  try {
    writeSynced(tmp, data, "w");
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true }); // e.g. a full disk: no half-written temp file left behind
    throw e;
  }
}

/** Lets `produce` write a temp file (e.g. by a child process) and renames it to `target` only on success. */
export async function produceAtomic<T>(target: string, produce: (tmpPath: string) => Promise<T>): Promise<T> {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempPathFor(target);
  try {
    const result = await produce(tmp);
    const fd = fs.openSync(tmp, "r");
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, target);
    return result;
  } catch (e) {
    fs.rmSync(tmp, { force: true, recursive: true });
    throw e;
  }
}

export function writeJsonAtomic(target: string, value: unknown): void {
  writeFileAtomic(target, JSON.stringify(value, null, 2) + "\n");
}

/** A file's size, or null when it cannot be stat'ed (reading it will then say why, naming it). */
export function sizeOrNull(file: string): number | null {
  try {
    return fs.statSync(file).size;
  } catch {
    return null;
  }
}

/**
 * `track`: progress for files people wait for, e.g. `(done, total) => trackBytes("hashing", total, done)`
 * (lib/progress.ts): called with the bytes read so far and the file's size; stopped at the end.
 */
export async function sha256File(file: string, track?: (done: () => number, total: number | null) => { stop(outcome?: "done" | "failed"): void }): Promise<string> {
  const hash = crypto.createHash("sha256");
  const input = fs.createReadStream(file);
  const progress = track?.(() => input.bytesRead, sizeOrNull(file));
  try {
    for await (const chunk of input) hash.update(chunk as Buffer);
  } catch (e) {
    progress?.stop("failed");
    throw e;
  }
  progress?.stop();
  return hash.digest("hex");
}

/**
 * SHA-256 of a file that another process is writing, read close behind the writer (from the page cache)
 * while it writes: the digest is ready when the file is, instead of after a second pass over GiBs.
 * `finish()` once the writer is done: reads the rest and returns the digest. `stop()` abandons it, resolving
 * once the reader has let go (its progress line printed), so that a step's one-line reason comes after it.
 */
export function sha256Following(file: string, track?: (done: () => number) => { stop(outcome?: "done" | "failed"): void }, pollMs = 20): { finish(): Promise<string>; stop(): Promise<void> } {
  const fd = fs.openSync(file, "r");
  const hash = crypto.createHash("sha256");
  const buf = Buffer.allocUnsafe(1 << 20);
  let writerDone = false;
  let stopped = false;
  let pos = 0;
  const progress = track?.(() => pos);
  const reading = (async () => {
    try {
      while (!stopped) {
        // Seen before the read: a writer done then wrote nothing after, so reading 0 bytes is the end.
        const done = writerDone;
        const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (e, k) => (e ? reject(e) : resolve(k))));
        if (n > 0) {
          hash.update(buf.subarray(0, n));
          pos += n;
        } else if (done) {
          const size = fs.fstatSync(fd).size;
          if (size !== pos) throw new Error(`${file} is ${size} bytes, ${pos} were hashed`);
          progress?.stop("done");
          return hash.digest("hex");
        } else await new Promise((r) => setTimeout(r, pollMs));
      }
      return "";
    } catch (e) {
      progress?.stop("failed");
      throw e;
    } finally {
      if (stopped) progress?.stop("failed");
      fs.closeSync(fd);
    }
  })();
  reading.catch(() => undefined); // awaited by finish(); a stopped follower's error is not news
  return {
    finish() {
      writerDone = true;
      return reading;
    },
    stop() {
      stopped = true;
      return reading.then(
        () => undefined,
        () => undefined,
      );
    },
  };
}

/**
 * Like writeFileAtomic, but the file has `mode` from its first byte and an existing `target` is never
 * replaced: published by link(2), which fails with EEXIST instead of overwriting (for keys).
 */
export function writeFileExclusive(target: string, data: string | Buffer, mode: number): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempPathFor(target);
  try {
    writeSynced(tmp, data, "wx", mode);
    fs.linkSync(tmp, target);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * A content address of a directory tree: every entry's relative path, kind, executable bit and
 * content (a symlink's target, not followed), in sorted order. Changes with any edit below `dir`.
 */
export function treeDigest(dir: string): string {
  const hash = crypto.createHash("sha256");
  const walk = (rel: string): void => {
    const abs = path.join(dir, rel);
    const st = fs.lstatSync(abs);
    if (st.isSymbolicLink()) hash.update(`l ${rel} ${fs.readlinkSync(abs)}\0`);
    else if (st.isDirectory()) {
      hash.update(`d ${rel}\0`);
      for (const e of fs.readdirSync(abs).sort()) walk(rel ? `${rel}/${e}` : e);
    } else {
      const content = crypto.createHash("sha256").update(fs.readFileSync(abs)).digest("hex");
      hash.update(`f ${rel} ${st.mode & 0o111 ? "x" : "-"} ${content}\0`);
    }
  };
  walk("");
  return hash.digest("hex");
}

/** A size for a person to read (reports, reviews): bytes in B, KiB, MiB or GiB, one decimal above bytes. */
export function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${n < 0 ? "-" : ""}${u ? v.toFixed(1) : v} ${units[u]}`;
}
