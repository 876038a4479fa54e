// Store path arithmetic (Nix's makeStorePath and friends), hash encodings, so the closure check can
// recompute a path from content without asking the store that may have been fed a tampered closure.
import * as crypto from "node:crypto";

export const NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

export type HashAlgo = "md5" | "sha1" | "sha256" | "sha512";
export const HASH_SIZES: Record<HashAlgo, number> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

export function isHashAlgo(s: string): s is HashAlgo {
  return Object.prototype.hasOwnProperty.call(HASH_SIZES, s);
}

export function nix32Encode(bytes: Uint8Array): string {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const c = (bytes[i] >> j) | (i + 1 < bytes.length ? bytes[i + 1] << (8 - j) : 0);
    out += NIX32_ALPHABET[c & 0x1f];
  }
  return out;
}

export function nix32Decode(s: string, size: number): Buffer {
  if (s.length !== Math.ceil((size * 8) / 5)) throw new Error(`nix32 hash '${s}' has the wrong length for ${size} bytes`);
  const out = Buffer.alloc(size);
  for (let n = 0; n < s.length; n++) {
    const digit = NIX32_ALPHABET.indexOf(s[s.length - n - 1]);
    if (digit < 0) throw new Error(`invalid nix32 character in hash '${s}'`);
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] = (out[i] | (digit << j)) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < size) out[i + 1] = (out[i + 1] | carry) & 0xff;
    else if (carry) throw new Error(`nix32 hash '${s}' does not fit in ${size} bytes`);
  }
  return out;
}

/**
 * Parses any hash spelling Nix prints: base16, nix32, base64, SRI (`sha256-...`), `algo:...`, or the
 * structured JSON object of Nix >= 2.33 (`{algorithm, format, hash}`). Returns lowercase hex.
 */
export function parseHash(value: unknown, algoHint?: string): { algo: HashAlgo; hex: string } {
  if (value && typeof value === "object") {
    const o = value as Record<string, unknown>;
    const algo = String(o.algorithm ?? o.algo ?? algoHint ?? "");
    return parseHash(String(o.hash ?? ""), algo);
  }
  let s = String(value);
  let algo = algoHint;
  const sri = /^(md5|sha1|sha256|sha512)-([A-Za-z0-9+/=]+)$/.exec(s);
  const colon = /^(md5|sha1|sha256|sha512):(.+)$/.exec(s);
  if (sri) {
    algo = sri[1];
    s = sri[2];
  } else if (colon) {
    algo = colon[1];
    s = colon[2];
  }
  if (!algo || !isHashAlgo(algo)) throw new Error(`unknown hash algorithm for hash '${String(value)}'`);
  const size = HASH_SIZES[algo];
  let bytes: Buffer;
  if (sri) bytes = Buffer.from(s, "base64");
  else if (s.length === size * 2 && /^[0-9a-fA-F]+$/.test(s)) bytes = Buffer.from(s, "hex");
  else if (s.length === Math.ceil((size * 8) / 5)) bytes = nix32Decode(s, size);
  else bytes = Buffer.from(s, "base64");
  if (bytes.length !== size) throw new Error(`hash '${String(value)}' is not a valid ${algo} hash`);
  return { algo, hex: bytes.toString("hex") };
}

function sha256(data: string | Buffer): Buffer {
  return crypto.createHash("sha256").update(data).digest();
}

function compressHash(hash: Buffer, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < hash.length; i++) out[i % size] ^= hash[i];
  return out;
}

/** A store path's name: its last component without the hash part (`…-busybox-static`, `…-demo-image.drv`). */
export function storePathName(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1).replace(/^[0-9a-z]{32}-/, "");
}

export function splitStorePath(p: string): { storeDir: string; hashPart: string; name: string } {
  const m = /^(.*)\/([0-9a-df-np-sv-z]{32})-([^/]+)$/.exec(p);
  if (!m) throw new Error(`not a store path: '${p}'`);
  return { storeDir: m[1], hashPart: m[2], name: m[3] };
}

/** Nix's makeStorePath: `type` like "source", "text:<refs>", "output:out". */
export function makeStorePath(type: string, sha256Hex: string, name: string, storeDir = "/nix/store"): string {
  const fingerprint = `${type}:sha256:${sha256Hex}:${storeDir}:${name}`;
  return `${storeDir}/${nix32Encode(compressHash(sha256(fingerprint), 20))}-${name}`;
}

function typeWithRefs(type: string, references: string[], selfPath?: string): string {
  let hasSelf = false;
  const refs: string[] = [];
  for (const r of references) {
    if (selfPath && r === selfPath) hasSelf = true;
    else refs.push(r);
  }
  refs.sort();
  return type + refs.map((r) => `:${r}`).join("") + (hasSelf ? ":self" : "");
}

/** `git`: Nix's experimental git-hashing ingestion (a git tree/blob hash, not a NAR or file hash). */
export type HashMode = "flat" | "recursive" | "text" | "git";

/** Store path of a fixed-output derivation's output (makeFixedOutputPath). */
export function fixedOutputPath(mode: HashMode, algo: HashAlgo, hex: string, name: string, storeDir = "/nix/store"): string {
  if (mode === "text") return makeStorePath("text", hex, name, storeDir);
  if (mode === "recursive" && algo === "sha256") return makeStorePath("source", hex, name, storeDir);
  const prefix = mode === "recursive" ? "r:" : mode === "git" ? "git:" : "";
  const inner = sha256(`fixed:out:${prefix}${algo}:${hex}:`).toString("hex");
  return makeStorePath("output:out", inner, name, storeDir);
}

/** Path of a store object added as a NAR (`nix-store --add`, local sources): type "source" with references. */
export function sourcePath(narSha256Hex: string, name: string, references: string[], selfPath?: string, storeDir = "/nix/store"): string {
  return makeStorePath(typeWithRefs("source", references, selfPath), narSha256Hex, name, storeDir);
}

/** Path of a text store object (builtins.toFile, .drv files): sha256 of the contents, type "text" with references. */
export function textPath(contentSha256Hex: string, name: string, references: string[], storeDir = "/nix/store"): string {
  return makeStorePath(typeWithRefs("text", references), contentSha256Hex, name, storeDir);
}
