// Streaming parsers for Nix archives (NAR) and `nix-store --export` streams. Constant memory: file
// contents are passed on in chunks (to hashers), never collected, so multi-GiB closures are fine.
//
// Wire format: integers are u64 little-endian; a string is its u64 length, the bytes, zero padding to 8.
// NAR: "nix-archive-1" then a node: "(" "type" ("regular" ["executable" ""] "contents" <bytes>
//      | "symlink" "target" <str> | "directory" ("entry" "(" "name" <str> "node" <node> ")")*) ")".
// Export: for each path: u64 1, NAR, u64 0x4558494e ("NIXE"), path, u64 n + n reference paths,
//      deriver (or ""), u64 0 (1 = a legacy signature string follows); then u64 0.
import { isUtf8 } from "node:buffer";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { promisify } from "node:util";
import { hashRanges, HashRangesOptions, RangeJob } from "./range-hash";

export class NarFormatError extends Error {}

const EXPORT_MAGIC = 0x4558494e;

const read = promisify(fs.read);
const MIN_WINDOW = 16 << 10;
const MAX_WINDOW = 1 << 20;

/**
 * A file read by position through an open descriptor, for a ByteReader that skips contents: reads in
 * windows that start small after each seek (a few header bytes are wanted) and double while reading
 * stays sequential (a NAR of many small files).
 */
export class PositionalSource implements AsyncIterable<Buffer> {
  private position = 0;
  private window = MIN_WINDOW;
  constructor(readonly fd: number, readonly size: number) {}

  seek(offset: number): void {
    this.position = offset;
    this.window = MIN_WINDOW;
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async () => {
        if (this.position >= this.size) return { done: true, value: undefined };
        const b = Buffer.allocUnsafe(Math.min(this.window, this.size - this.position));
        const { bytesRead } = await read(this.fd, b, 0, b.length, this.position);
        if (bytesRead === 0) return { done: true, value: undefined };
        this.position += bytesRead;
        this.window = Math.min(2 * this.window, MAX_WINDOW);
        return { done: false, value: b.subarray(0, bytesRead) };
      },
    };
  }
}

/** Pull reader over an async byte source with absolute offsets and taps that see every consumed byte. */
export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  /** Absolute offset of the next unread byte. */
  offset = 0;
  /** Called with every consumed slice (used to hash a NAR as it is parsed). */
  taps: ((b: Buffer) => void)[] = [];
  private it: AsyncIterator<Buffer>;
  private done = false;

  constructor(source: AsyncIterable<Buffer | string> | Buffer) {
    if (source instanceof PositionalSource) this.file = source;
    const iterable: AsyncIterable<Buffer | string> = Buffer.isBuffer(source)
      ? (async function* () {
          yield source;
        })()
      : source;
    const inner = iterable[Symbol.asyncIterator]();
    this.it = {
      next: async () => {
        const r = await inner.next();
        return r.done ? r : { done: false, value: typeof r.value === "string" ? Buffer.from(r.value) : r.value };
      },
    };
  }

  /** Set for a file read by position (`positionalReader`): contents can then be skipped, not read. */
  private file?: PositionalSource;

  /**
   * Passes over `len` bytes of file contents and their padding that nothing needs to see: by position,
   * without reading them, when the source is a file and no tap listens (the padding is still checked).
   */
  async skipContents(len: number): Promise<void> {
    const buffered = this.buf.length - this.pos;
    if (!this.file || this.taps.length || len <= buffered) {
      await this.readStreamed(len, () => undefined);
      return;
    }
    if (this.offset + len > this.file.size) throw new NarFormatError(`truncated file contents at byte ${this.file.size}`);
    this.buf = Buffer.alloc(0);
    this.pos = 0;
    this.offset += len;
    this.file.seek(this.offset);
    this.done = false;
    await this.skipPadding(len);
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length - this.pos < n) {
      if (this.done) return false;
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        return this.buf.length - this.pos >= n;
      }
      this.buf = this.pos < this.buf.length ? Buffer.concat([this.buf.subarray(this.pos), r.value]) : r.value;
      this.pos = 0;
    }
    return true;
  }

  private consume(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.offset += n;
    for (const t of this.taps) t(b);
    return b;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }

  async read(n: number): Promise<Buffer> {
    if (!(await this.fill(n))) throw new NarFormatError(`truncated stream at byte ${this.offset} (wanted ${n} more bytes)`);
    return this.consume(n);
  }

  async readU64(): Promise<number> {
    const b = await this.read(8);
    const v = b.readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NarFormatError(`integer too large at byte ${this.offset - 8}`);
    return Number(v);
  }

  private async skipPadding(len: number): Promise<void> {
    const pad = (8 - (len % 8)) % 8;
    if (pad) {
      const p = await this.read(pad);
      if (p.some((x) => x !== 0)) throw new NarFormatError(`non-zero padding at byte ${this.offset - pad}`);
    }
  }

  async readBytes(max = 1 << 20): Promise<Buffer> {
    const len = await this.readU64();
    if (len > max) throw new NarFormatError(`string of ${len} bytes at byte ${this.offset - 8} exceeds ${max}`);
    const b = Buffer.from(await this.read(len));
    await this.skipPadding(len);
    return b;
  }

  async readString(max?: number): Promise<string> {
    return (await this.readBytes(max)).toString("utf8");
  }

  async expect(token: string): Promise<void> {
    const at = this.offset;
    const s = await this.readString(256);
    if (s !== token) throw new NarFormatError(`expected '${token}' at byte ${at}, found '${s.slice(0, 40)}'`);
  }

  /** Streams `len` bytes to `sink` in chunks, then skips the padding. Returns the offset of the first byte. */
  async readStreamed(len: number, sink: (chunk: Buffer) => void): Promise<number> {
    const start = this.offset;
    let left = len;
    while (left > 0) {
      if (!(await this.fill(1))) throw new NarFormatError(`truncated file contents at byte ${this.offset}`);
      const n = Math.min(left, this.buf.length - this.pos);
      sink(this.consume(n));
      left -= n;
    }
    await this.skipPadding(len);
    return start;
  }
}

export type NarEntry =
  | { type: "regular"; path: string; executable: boolean; size: number; contentsOffset: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "directory"; path: string };

export interface NarVisitor {
  /** Called before a regular file's contents; the returned sink (if any) receives the contents. */
  file?(entry: { path: string; executable: boolean; size: number; contentsOffset: number }): ((chunk: Buffer) => void) | void;
  entry?(entry: NarEntry): void;
}

const MAX_DEPTH = 512;

/** Parses one NAR from the reader. Paths are relative ("" is the root). */
export async function parseNar(r: ByteReader, visitor: NarVisitor = {}): Promise<void> {
  await r.expect("nix-archive-1");
  await parseNode(r, "", visitor, 0);
}

async function parseNode(r: ByteReader, path: string, v: NarVisitor, depth: number): Promise<void> {
  if (depth > MAX_DEPTH) throw new NarFormatError(`NAR nested deeper than ${MAX_DEPTH} at ${path}`);
  await r.expect("(");
  await r.expect("type");
  const type = await r.readString(16);
  if (type === "regular") {
    let tag = await r.readString(16);
    let executable = false;
    if (tag === "executable") {
      executable = true;
      await r.expect("");
      tag = await r.readString(16);
    }
    if (tag !== "contents") throw new NarFormatError(`expected 'contents' for ${path || "/"} at byte ${r.offset}`);
    const size = await r.readU64();
    const contentsOffset = r.offset;
    const sink = v.file?.({ path, executable, size, contentsOffset }) || undefined;
    v.entry?.({ type: "regular", path, executable, size, contentsOffset });
    if (sink) await r.readStreamed(size, sink);
    else await r.skipContents(size);
    await r.expect(")");
  } else if (type === "symlink") {
    await r.expect("target");
    const target = bytesAsText(await r.readBytes(4096));
    v.entry?.({ type: "symlink", path, target });
    await r.expect(")");
  } else if (type === "directory") {
    v.entry?.({ type: "directory", path });
    let prev: Buffer | undefined;
    for (;;) {
      const tag = await r.readString(16);
      if (tag === ")") break;
      if (tag !== "entry") throw new NarFormatError(`expected 'entry' or ')' in ${path || "/"} at byte ${r.offset}`);
      await r.expect("(");
      await r.expect("name");
      // Nix orders entries by their bytes; names need not be UTF-8, so compare before decoding.
      const raw = await r.readBytes(255);
      const name = bytesAsText(raw);
      if (!name || name === "." || name === ".." || raw.includes(0x2f) || raw.includes(0)) {
        throw new NarFormatError(`invalid file name '${name}' in ${path || "/"}`);
      }
      if (prev !== undefined && Buffer.compare(raw, prev) <= 0) throw new NarFormatError(`directory ${path || "/"} entries not sorted/unique at '${name}'`);
      prev = raw;
      await r.expect("node");
      await parseNode(r, path ? `${path}/${name}` : name, v, depth + 1);
      await r.expect(")");
    }
  } else {
    throw new NarFormatError(`unknown node type '${type}' at ${path || "/"}`);
  }
}

/**
 * File names and symlink targets need not be UTF-8. Decoding them lossily would turn two different names
 * into the same string (both bytes become U+FFFD) and hide a difference between two NARs. This keeps every
 * byte and stays one-to-one: a backslash is written "\\"; a name that is not UTF-8 has each byte >= 0x80
 * written "\xNN" (a UTF-8 name never contains that escape, so the two kinds cannot meet).
 */
export function bytesAsText(raw: Buffer): string {
  if (isUtf8(raw)) {
    const text = raw.toString("utf8");
    return text.includes("\\") ? text.replace(/\\/g, "\\\\") : text;
  }
  let text = "";
  for (const b of raw) text += b === 0x5c ? "\\\\" : b >= 0x80 ? `\\x${b.toString(16).padStart(2, "0")}` : String.fromCharCode(b);
  return text;
}

export interface ExportedPath {
  path: string;
  references: string[];
  deriver: string;
  /** Stream offset of this path's NAR and its length (the NAR size). */
  narStart: number;
  narSize: number;
  /** Hash of the NAR serialisation, per requested algorithm (lowercase hex). */
  narHashes: Record<string, string>;
  /** When the NAR is a single regular file: hash of its contents (flat/text mode), per algorithm. */
  flatHashes?: Record<string, string>;
  /** Every entry of the NAR, in order (only when `entries` was requested). */
  entries?: NarEntry[];
}

export interface ExportOptions {
  /** Hash algorithms to compute over each NAR and each single-file content; default ["sha256"]. */
  algos?: string[];
  /** Keep each NAR's entry list (offsets of file contents), e.g. to locate bytes in tests. */
  entries?: boolean;
  /** Called as each path is complete. */
  onPath?(p: ExportedPath): void | Promise<void>;
}

/** Reads the marker before each path: true when a path follows, false at the end of the stream. */
async function nextExported(r: ByteReader): Promise<boolean> {
  const more = await r.readU64();
  if (more === 0) return false;
  if (more !== 1) throw new NarFormatError(`bad export stream marker ${more} at byte ${r.offset - 8}`);
  return true;
}

/** What follows each NAR in the stream: the path, its references and deriver (and a legacy signature). */
async function readTrailer(r: ByteReader): Promise<{ path: string; references: string[]; deriver: string }> {
  const magic = await r.readU64();
  if (magic !== EXPORT_MAGIC) throw new NarFormatError(`bad export magic at byte ${r.offset - 8}`);
  const path = await r.readString(4096);
  const n = await r.readU64();
  if (n > 1_000_000) throw new NarFormatError(`implausible reference count ${n} for ${path}`);
  const references: string[] = [];
  for (let i = 0; i < n; i++) references.push(await r.readString(4096));
  const deriver = await r.readString(4096);
  if ((await r.readU64()) === 1) await r.readString(1 << 16);
  return { path, references, deriver };
}

async function expectEnd(r: ByteReader): Promise<void> {
  if (!(await r.atEnd())) throw new NarFormatError(`trailing data after the export stream at byte ${r.offset}`);
}

/** Parses a `nix-store --export` stream, hashing as it goes; returns the paths in stream order. */
export async function parseExport(r: ByteReader, opts: ExportOptions = {}): Promise<ExportedPath[]> {
  const algos = [...new Set(opts.algos ?? ["sha256"])];
  const out: ExportedPath[] = [];
  while (await nextExported(r)) {
    const narStart = r.offset;
    const narHashers = algos.map((a) => crypto.createHash(a));
    const tap = (b: Buffer) => narHashers.forEach((h) => h.update(b));
    r.taps.push(tap);
    let flatHashers: crypto.Hash[] | undefined;
    const entries: NarEntry[] = [];
    try {
      await parseNar(r, {
        file(e) {
          if (e.path !== "") return undefined;
          const hs = algos.map((a) => crypto.createHash(a));
          flatHashers = hs;
          return (chunk) => hs.forEach((h) => h.update(chunk));
        },
        entry: opts.entries ? (e) => entries.push(e) : undefined,
      });
    } finally {
      r.taps.splice(r.taps.indexOf(tap), 1);
    }
    const narSize = r.offset - narStart;
    const trailer = await readTrailer(r);
    const digest = (hs: crypto.Hash[]) => Object.fromEntries(hs.map((h, i) => [algos[i], h.digest("hex")]));
    const p: ExportedPath = { ...trailer, narStart, narSize, narHashes: digest(narHashers) };
    if (flatHashers) p.flatHashes = digest(flatHashers);
    if (opts.entries) p.entries = entries;
    out.push(p);
    await opts.onPath?.(p);
  }
  await expectEnd(r);
  return out;
}

/** A path of an export stream located, not hashed (`indexExport`). */
export interface IndexedPath {
  path: string;
  references: string[];
  deriver: string;
  /** Stream offset of this path's NAR and its length: its NAR hash is the hash of that byte range. */
  narStart: number;
  narSize: number;
  /** When the NAR is a single regular file, the range of its contents (what a flat hash covers). */
  contents?: { start: number; size: number };
  entries?: NarEntry[];
}

/**
 * Indexes a `nix-store --export` stream in an open file by reading only its structure: file contents are
 * passed over by offset, never read (their padding is checked), so indexing GiBs touches a few pages per
 * file. Every path's NAR is a contiguous byte range, hashed later by range (range-hash.ts). Returns the
 * paths complete before a malformed or truncated part, and that error.
 */
export async function indexExport(fd: number, size: number, opts: { entries?: boolean } = {}): Promise<{ paths: IndexedPath[]; error?: NarFormatError }> {
  const r = new ByteReader(new PositionalSource(fd, size));
  const paths: IndexedPath[] = [];
  try {
    while (await nextExported(r)) {
      const narStart = r.offset;
      const entries: NarEntry[] = [];
      let contents: IndexedPath["contents"];
      await parseNar(r, {
        file(e) {
          if (e.path === "") contents = { start: e.contentsOffset, size: e.size };
        },
        entry: opts.entries ? (e) => entries.push(e) : undefined,
      });
      const narSize = r.offset - narStart;
      const p: IndexedPath = { ...(await readTrailer(r)), narStart, narSize };
      if (contents) p.contents = contents;
      if (opts.entries) p.entries = entries;
      paths.push(p);
    }
    await expectEnd(r);
  } catch (e) {
    if (!(e instanceof NarFormatError)) throw e;
    return { paths, error: e };
  }
  return { paths };
}

export function fileReader(file: string): ByteReader {
  return new ByteReader(fs.createReadStream(file, { highWaterMark: 1 << 20 }));
}

/** Which hashes a path needs: of its NAR, and (when the NAR is a single regular file) of that file's contents. */
export interface HashNeeds {
  nar: string[];
  flat: string[];
}

/**
 * Hashes indexed paths (`indexExport`) by byte range on every core (range-hash.ts), each with only the
 * algorithms `needs` asks of it (called in stream order). Returns them as `parseExport` would, with
 * `narHashes` and `flatHashes` holding those algorithms only.
 */
export async function hashIndexed(fd: number, paths: IndexedPath[], needs: (p: IndexedPath) => HashNeeds, o: HashRangesOptions = {}): Promise<ExportedPath[]> {
  const jobs: RangeJob[] = [];
  const plan = paths.map((p) => {
    const n = needs(p);
    const nar = [...new Set(n.nar)];
    const flat = p.contents ? [...new Set(n.flat)] : [];
    const c = p.contents && { start: p.contents.start, end: p.contents.start + p.contents.size };
    // A flat hash alone reads only the file's range; with a NAR hash, the same pass covers both.
    const job: RangeJob | undefined = nar.length
      ? { start: p.narStart, end: p.narStart + p.narSize, algos: nar, inner: flat.length ? { ...c!, algos: flat } : undefined }
      : flat.length ? { ...c!, algos: flat } : undefined;
    if (job) jobs.push(job);
    return { job: job ? jobs.length - 1 : -1, nar: nar.length > 0, flat: flat.length > 0 };
  });
  const digests = await hashRanges(fd, jobs, o);
  return paths.map((p, i) => {
    const { job, nar, flat } = plan[i];
    const d = job >= 0 ? digests[job] : undefined;
    const e: ExportedPath = { path: p.path, references: p.references, deriver: p.deriver, narStart: p.narStart, narSize: p.narSize, narHashes: nar ? d!.outer : {} };
    if (p.contents) e.flatHashes = flat ? (nar ? d!.inner! : d!.outer) : {};
    if (p.entries) e.entries = p.entries;
    return e;
  });
}

const strLen = (n: number) => 8 + n + ((8 - (n % 8)) % 8);
const TOKENS = (...t: string[]) => t.reduce((n, s) => n + strLen(Buffer.byteLength(s)), 0);
const NODE_OPEN = TOKENS("(", "type");
const CLOSE = TOKENS(")");

/**
 * Size of the NAR serialisation of a file system object, from lstat alone (no reading, no process):
 * what `nix-store -q --size` reports for a valid store path. Null when the path does not exist.
 */
export function narSizeOf(p: string): number | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return null;
  }
  return TOKENS("nix-archive-1") + nodeSize(Buffer.from(p), st);
}

const SLASH = Buffer.from("/");

// Paths as bytes: a file name that is not UTF-8 (some unpacked sources have them) would otherwise be
// mangled by decoding, and its lstat would fail.
function nodeSize(p: Buffer, st: fs.Stats): number {
  if (st.isSymbolicLink()) return NODE_OPEN + TOKENS("symlink", "target") + strLen(fs.readlinkSync(p, { encoding: "buffer" }).length) + CLOSE;
  if (st.isFile()) {
    const exec = st.mode & 0o100 ? TOKENS("executable", "") : 0;
    return NODE_OPEN + TOKENS("regular") + exec + TOKENS("contents") + strLen(st.size) + CLOSE;
  }
  if (st.isDirectory()) {
    let n = NODE_OPEN + TOKENS("directory");
    for (const name of fs.readdirSync(p, { encoding: "buffer" })) {
      const child = Buffer.concat([p, SLASH, name]);
      n += TOKENS("entry", "(", "name") + strLen(name.length) + TOKENS("node") + nodeSize(child, fs.lstatSync(child)) + CLOSE;
    }
    return n + CLOSE;
  }
  throw new NarFormatError(`${p.toString()} is neither a regular file, a directory nor a symlink`);
}
