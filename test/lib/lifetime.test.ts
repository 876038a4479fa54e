// One run per work directory, stale locks and temp files of killed runs, on the real CLI.
import test from "ava";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LOCK_NAME, lockDir } from "../../pipeline/lib/lifetime";

const ROOT = path.resolve(__dirname, "..", "..");
const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { encoding: "utf8" });
const deadPid = () => spawnSync("true").pid!;
// A closure run that gets as far as its first check of the input (the file does not exist).
const closureInto = (out: string) => cli("closure", "--file", path.join(out, "..", "missing.nix"), "--attribute", "a", "--out", out);

function tmpdir(t: any): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "lifetime-"));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

test("a second run on a locked directory is refused, exit 2 naming the holder's pid, and touches nothing", (t) => {
  const out = path.join(tmpdir(t), "out");
  const lock = lockDir(out, "closure");
  try {
    fs.writeFileSync(path.join(out, "manifest.json"), "{}");
    const r = closureInto(out);
    t.is(r.status, 2, r.stderr);
    t.regex(r.stderr.trim(), new RegExp(`^supply-chain closure: ${out} is in use by supply-chain closure \\(pid ${process.pid}, since .*\\): wait for it, or stop it$`));
    t.is(fs.readFileSync(path.join(out, "manifest.json"), "utf8"), "{}");
    t.true(fs.existsSync(path.join(out, LOCK_NAME)), "the holder's lock stays");
  } finally {
    lock.release();
  }
  t.false(fs.existsSync(path.join(out, LOCK_NAME)));
  t.is(closureInto(out).status, 2, "after release the run gets past the lock (to its own check)");
  t.regex(closureInto(out).stderr, /Nix file not found/);
});

test("a lock whose process is gone (or a pid reused by another process) is stale and taken over", (t) => {
  const out = tmpdir(t);
  const gone = deadPid();
  fs.writeFileSync(path.join(out, LOCK_NAME), JSON.stringify({ pid: gone, start: "1", step: "rebuild", since: "then" }));
  let r = closureInto(out);
  t.regex(r.stderr, new RegExp(`taking over the stale lock of pid ${gone} \\(rebuild\\)`));
  t.regex(r.stderr, /Nix file not found/);
  t.false(fs.existsSync(path.join(out, LOCK_NAME)), "released at the end");
  // Our own pid with another start time: a reused pid, not the holder.
  fs.writeFileSync(path.join(out, LOCK_NAME), JSON.stringify({ pid: process.pid, start: "1", step: "rebuild", since: "then" }));
  r = closureInto(out);
  t.regex(r.stderr, /taking over the stale lock/);
  // Half-written (killed while locking).
  fs.writeFileSync(path.join(out, LOCK_NAME), "{\"pid\": 1");
  r = closureInto(out);
  t.regex(r.stderr, /taking over the stale lock of a run killed while locking/);
});

test("temp files a killed run left in the directory are removed; a live writer's are kept", (t) => {
  const out = tmpdir(t);
  const stale = path.join(out, `.source-export.closure.${deadPid()}.0123abcd.tmp`);
  const live = path.join(out, `.source-export.closure.${process.pid}.4567cdef.tmp`);
  const unrelated = path.join(out, ".notes.tmp");
  for (const f of [stale, live, unrelated]) fs.writeFileSync(f, "x");
  const r = closureInto(out);
  t.regex(r.stderr, /removing .*\.tmp, left by a killed run/);
  t.false(fs.existsSync(stale));
  t.true(fs.existsSync(live));
  t.true(fs.existsSync(unrelated));
});

test("a refused run leaves no empty --out behind; a directory that existed is kept", (t) => {
  const base = tmpdir(t);
  const fresh = path.join(base, "fresh");
  t.is(closureInto(fresh).status, 2);
  t.false(fs.existsSync(fresh));
  t.is(closureInto(base).status, 2);
  t.true(fs.existsSync(base));
  const file = path.join(base, "a-file");
  fs.writeFileSync(file, "");
  const r = closureInto(file);
  t.is(r.status, 2);
  t.regex(r.stderr, /exists and is not a directory/);
});
