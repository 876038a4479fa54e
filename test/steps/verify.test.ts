// verify's file-level diff and hash, on NARs made by the real `nix-store --dump`.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { diffListings, listNarFile, narHashOfFile } from "../../pipeline/lib/nar-diff";
import { cli, rm } from "./rebuild-helpers";

function tree(root: string, files: Record<string, string | { link: string } | { exec: string }>): void {
  for (const [name, v] of Object.entries(files)) {
    const p = path.join(root, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    if (typeof v === "string") fs.writeFileSync(p, v);
    else if ("link" in v) fs.symlinkSync(v.link, p);
    else {
      fs.writeFileSync(p, v.exec);
      fs.chmodSync(p, 0o755);
    }
  }
}

function dump(dir: string, to: string): string {
  fs.writeFileSync(to, execFileSync("nix-store", ["--dump", dir], { maxBuffer: 1 << 26 }));
  return to;
}

test("narHashOfFile is Nix's own NAR hash (nix-hash --type sha256 --base32)", async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "verify-hash-"));
  try {
    tree(path.join(tmp, "d"), { "a.txt": "hello\n", "bin/run": { exec: "#!/bin/sh\n" }, "l": { link: "a.txt" } });
    const nar = dump(path.join(tmp, "d"), path.join(tmp, "d.nar"));
    const expected = execFileSync("nix-hash", ["--type", "sha256", "--base32", path.join(tmp, "d")], { encoding: "utf8" }).trim();
    t.is(await narHashOfFile(nar), `sha256:${expected}`);
  } finally {
    rm(tmp);
  }
});

test("diffListings names each differing file and how it differs; identical trees give nothing", async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "verify-diff-"));
  try {
    const a = path.join(tmp, "a");
    const b = path.join(tmp, "b");
    const c = path.join(tmp, "c");
    tree(a, { "same.txt": "x", "changed.txt": "one", "gone.txt": "bye", "bin/tool": { exec: "t" }, "bin/mode": "m", "link": { link: "same.txt" } });
    tree(b, { "same.txt": "x", "changed.txt": "two", "new.txt": "hi", "bin/tool": { exec: "t" }, "bin/mode": { exec: "m" }, "link": { link: "changed.txt" } });
    tree(c, { "same.txt": "x", "changed.txt": "one", "gone.txt": "bye", "bin/tool": { exec: "t" }, "bin/mode": "m", "link": { link: "same.txt" } });
    const la = await listNarFile(dump(a, path.join(tmp, "a.nar")));
    const lb = await listNarFile(dump(b, path.join(tmp, "b.nar")));
    const lc = await listNarFile(dump(c, path.join(tmp, "c.nar")));
    t.deepEqual(diffListings(la, lb), [
      { file: "bin/mode", change: "mode" },
      { file: "changed.txt", change: "contents" },
      { file: "gone.txt", change: "removed" },
      { file: "link", change: "target" },
      { file: "new.txt", change: "added" },
    ]);
    t.deepEqual(diffListings(la, lc), []);
  } finally {
    rm(tmp);
  }
});

test("verify refuses input that is not a completed rebuild (exit 2, naming the file)", async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "verify-bad-"));
  try {
    const junk = path.join(tmp, "junk.json");
    fs.writeFileSync(junk, JSON.stringify({ hello: 1 }));
    const r = await cli(["verify", "--file", path.join(tmp, "default.nix"), "--attribute", "x", "--rebuilt", junk]);
    t.is(r.code, 2);
    t.true(r.stderr.includes(junk), r.stderr);
    const missing = await cli(["verify", "--file", path.join(tmp, "default.nix"), "--attribute", "x", "--rebuilt", path.join(tmp, "nope.json")]);
    t.is(missing.code, 2);
    t.regex(missing.stderr, /cannot read the rebuild result .*nope\.json/);
  } finally {
    rm(tmp);
  }
});
