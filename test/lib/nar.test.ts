import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ByteReader, NarEntry, narSizeOf, parseExport, parseNar } from "../../pipeline/lib/nar";
import { sourcePath } from "../../pipeline/lib/storepath";

function tree(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nar-test-"));
  const root = path.join(dir, "pkg");
  fs.mkdirSync(path.join(root, "bin"), { recursive: true });
  fs.writeFileSync(path.join(root, "bin", "tool"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  fs.writeFileSync(path.join(root, "README"), "x".repeat(100_003)); // not a multiple of 8: padding
  fs.writeFileSync(path.join(root, "empty"), "");
  fs.symlinkSync("bin/tool", path.join(root, "link"));
  return root;
}

/** Feeds a buffer in small odd-sized chunks, to exercise every buffer boundary in the reader. */
async function* chunked(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

test("parses a real NAR (nix-store --dump) entry by entry; its bytes hash to nix-hash's NAR hash", async (t) => {
  const root = tree();
  const nar = execFileSync("nix-store", ["--dump", root], { maxBuffer: 1 << 26 });
  const expected = execFileSync("nix-hash", ["--type", "sha256", root]).toString().trim();
  const r = new ByteReader(chunked(nar, 13));
  const h = crypto.createHash("sha256");
  r.taps.push((b) => h.update(b));
  const entries: NarEntry[] = [];
  const readme = crypto.createHash("sha256");
  await parseNar(r, {
    entry: (e) => entries.push(e),
    file: (e) => (e.path === "README" ? (c: Buffer) => readme.update(c) : undefined),
  });
  t.is(h.digest("hex"), expected);
  t.is(readme.digest("hex"), crypto.createHash("sha256").update("x".repeat(100_003)).digest("hex"));
  t.deepEqual(
    entries.map((e) => `${e.type}:${e.path}${e.type === "regular" ? `:${e.executable}:${e.size}` : ""}${e.type === "symlink" ? `->${e.target}` : ""}`),
    ["directory:", "regular:README:false:100003", "directory:bin", "regular:bin/tool:true:18", "regular:empty:false:0", "symlink:link->bin/tool"],
  );
  const tool = entries.find((e) => e.path === "bin/tool") as Extract<NarEntry, { type: "regular" }>;
  t.is(nar.subarray(tool.contentsOffset, tool.contentsOffset + tool.size).toString(), "#!/bin/sh\necho hi\n");
  fs.rmSync(path.dirname(root), { recursive: true, force: true });
});

test("a truncated or corrupted NAR is an error, not a silent success", async (t) => {
  const root = tree();
  const nar = execFileSync("nix-store", ["--dump", root], { maxBuffer: 1 << 26 });
  await t.throwsAsync(parseNar(new ByteReader(nar.subarray(0, nar.length - 20))), { message: /truncated/ });
  const bad = Buffer.from(nar);
  bad.write("nix-archive-2", 8);
  await t.throwsAsync(parseNar(new ByteReader(bad)), { message: /expected 'nix-archive-1'/ });
  fs.rmSync(path.dirname(root), { recursive: true, force: true });
});

test("parses a real nix-store --export stream: paths, references, NAR hashes and sizes match the store", async (t) => {
  const root = tree();
  const added = execFileSync("nix-store", ["--add", root]).toString().trim();
  const stream = execFileSync("nix-store", ["--export", added], { maxBuffer: 1 << 26 });
  const paths = await parseExport(new ByteReader(chunked(stream, 4097)), { algos: ["sha256", "sha512"], entries: true });
  t.is(paths.length, 1);
  const p = paths[0];
  t.is(p.path, added);
  t.deepEqual(p.references, []);
  t.is(String(p.narSize), execFileSync("nix-store", ["-q", "--size", added]).toString().trim());
  // The path of an added tree is the "source" store path of its NAR's sha256: recomputed, not trusted.
  t.is(sourcePath(p.narHashes.sha256, "pkg", p.references, p.path), added);
  t.is(p.narHashes.sha512.length, 128);
  t.is(p.flatHashes, undefined); // a directory has no flat hash
  t.true(p.entries!.some((e) => e.path === "link"));
  await t.throwsAsync(parseExport(new ByteReader(Buffer.concat([stream, Buffer.from("junk")]))), { message: /trailing data/ });
  fs.rmSync(path.dirname(root), { recursive: true, force: true });
});

test("narSizeOf (lstat only) equals nix-store -q --size for store paths of every node type", (t) => {
  const root = tree();
  const added = execFileSync("nix-store", ["--add", root]).toString().trim();
  const file = execFileSync("nix-store", ["--add", path.join(root, "README")]).toString().trim();
  for (const p of [added, file]) t.is(narSizeOf(p), Number(execFileSync("nix-store", ["-q", "--size", p]).toString().trim()));
  t.is(narSizeOf(path.join(root, "no-such-file")), null);
  fs.rmSync(path.dirname(root), { recursive: true, force: true });
});

test("names and symlink targets that are not UTF-8 stay distinct (a lossy decode made both U+FFFD: a difference verify could not see)", async (t) => {
  const { diffListings, listNar } = await import("../../pipeline/lib/nar-diff");
  const { bytesAsText } = await import("../../pipeline/lib/nar");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nar-names-"));
  const bytes = (...parts: (string | number)[]) => Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p) : Buffer.from([p]))));
  const make = (name: string, fileName: Buffer, linkTarget: Buffer) => {
    const root = Buffer.from(path.join(dir, name));
    fs.mkdirSync(root);
    fs.writeFileSync(Buffer.concat([root, Buffer.from("/"), fileName]), "same contents\n");
    fs.writeFileSync(Buffer.concat([root, Buffer.from("/x\\xff")]), "a valid name that spells the escape\n");
    fs.symlinkSync(linkTarget, Buffer.concat([root, Buffer.from("/link")]));
    return listNar(new ByteReader(execFileSync("nix-store", ["--dump", root.toString()], { maxBuffer: 1 << 26 })));
  };
  try {
    const a = await make("a", bytes("x", 0xff), bytes("target-", 0xfe));
    const b = await make("b", bytes("x", 0xfe), bytes("target-", 0xff));
    t.deepEqual([...a.keys()].sort(), ["", "link", "x\\\\xff", "x\\xff"]);
    t.deepEqual(diffListings(a, b), [
      { file: "link", change: "target" },
      { file: "x\\xfe", change: "added" },
      { file: "x\\xff", change: "removed" },
    ]);
    t.is(bytesAsText(Buffer.from("naïve")), "naïve");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** An export stream of a tree, a single file and an empty file, written to a temp file: [dir, file, stream]. */
function exportedFile(): { dir: string; file: string; stream: Buffer } {
  const root = tree();
  const single = path.join(path.dirname(root), "single.txt");
  fs.writeFileSync(single, "y".repeat(70_001));
  const empty = path.join(path.dirname(root), "empty.txt");
  fs.writeFileSync(empty, "");
  const added = [root, single, empty].map((p) => execFileSync("nix-store", ["--add", p]).toString().trim());
  const stream = execFileSync("nix-store", ["--export", ...added], { maxBuffer: 1 << 26 });
  const file = path.join(path.dirname(root), "stream.closure");
  fs.writeFileSync(file, stream);
  return { dir: path.dirname(root), file, stream };
}

test("indexExport locates every path and file without reading contents; hashing the ranges (in workers) equals parseExport's hashes", async (t) => {
  const { indexExport, hashIndexed } = await import("../../pipeline/lib/nar");
  const { dir, file, stream } = exportedFile();
  const parsed = await parseExport(new ByteReader(stream), { algos: ["sha256", "sha1", "sha512"], entries: true });
  const fd = fs.openSync(file, "r");
  try {
    const index = await indexExport(fd, stream.length, { entries: true });
    t.is(index.error, undefined);
    t.deepEqual(
      index.paths.map((p) => [p.path, p.narStart, p.narSize, p.references, p.deriver, p.entries]),
      parsed.map((p) => [p.path, p.narStart, p.narSize, p.references, p.deriver, p.entries]),
    );
    // The single file's range is its contents, as the NAR's own entry says.
    for (const p of index.paths) {
      const root = p.entries!.find((e) => e.path === "");
      t.deepEqual(p.contents, root?.type === "regular" ? { start: root.contentsOffset, size: root.size } : undefined);
    }
    const all = { nar: ["sha256", "sha1", "sha512"], flat: ["sha256", "sha1", "sha512"] };
    for (const workers of [0, 2]) {
      const hashed = await hashIndexed(fd, index.paths, () => all, { workers });
      t.deepEqual(hashed.map((e) => [e.narHashes, e.flatHashes]), parsed.map((e) => [e.narHashes, e.flatHashes]), `workers: ${workers}`);
    }
    // Only what is asked: a flat hash alone, or nothing.
    const some = await hashIndexed(fd, index.paths, (p) => (p.contents ? { nar: [], flat: ["sha1"] } : { nar: [], flat: [] }), { workers: 2 });
    t.deepEqual(some.map((e) => [e.narHashes, e.flatHashes]), parsed.map((e) => [{}, e.flatHashes && { sha1: e.flatHashes.sha1 }]));
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("indexExport refuses a truncated or malformed stream with one line, keeping the paths complete before it", async (t) => {
  const { indexExport } = await import("../../pipeline/lib/nar");
  const { dir, file, stream } = exportedFile();
  const parsed = await parseExport(new ByteReader(stream), { entries: true });
  const index = async (bytes: Buffer) => {
    fs.writeFileSync(file, bytes);
    const fd = fs.openSync(file, "r");
    try {
      return await indexExport(fd, bytes.length);
    } finally {
      fs.closeSync(fd);
    }
  };
  try {
    // Cut inside the big README, whose contents the index passes over by offset rather than reading.
    const tree = parsed.findIndex((p) => p.entries!.some((e) => e.path === "README"));
    const readme = parsed[tree].entries!.find((e) => e.path === "README") as Extract<NarEntry, { type: "regular" }>;
    const cut = await index(stream.subarray(0, readme.contentsOffset + 10));
    t.deepEqual(cut.paths.map((p) => p.path), parsed.slice(0, tree).map((p) => p.path));
    t.regex(cut.error!.message, /^truncated file contents at byte \d+$/);
    // Cut in the second path's NAR: the first is complete.
    const second = await index(stream.subarray(0, parsed[1].narStart + 50));
    t.deepEqual(second.paths.map((p) => p.path), [parsed[0].path]);
    t.regex(second.error!.message, /truncated/);
    // Non-zero padding after contents that were skipped, not read, is still found.
    const padded = Buffer.from(stream);
    const end = readme.contentsOffset + readme.size; // 100,003 bytes: 5 bytes of padding follow
    padded[end + 1] = 1;
    t.regex((await index(padded)).error!.message, /non-zero padding at byte/);
    // A file length beyond the end of the stream.
    const huge = Buffer.from(stream);
    huge.writeBigUInt64LE(BigInt(stream.length), readme.contentsOffset - 8);
    t.regex((await index(huge)).error!.message, /truncated/);
    const trailing = await index(Buffer.concat([stream, Buffer.from("junk")]));
    t.is(trailing.paths.length, parsed.length);
    t.regex(trailing.error!.message, /trailing data/);
    t.is((await index(stream)).error, undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
