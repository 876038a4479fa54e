// What the bwrap isolation shows of the host, probed for real: the host system read-only, the
// paths the step passes, the work dir; no home, no checkout, no other host file, not the demo
// world's file:// source cache. A probe given the same secret as a readOnly path sees it (the probe
// is not blind).
import test from "ava";
import * as fs from "node:fs";
import * as path from "node:path";
import { bwrapArgs } from "../../pipeline/lib/isolation";
import { demoWorld, DemoWorld, rm, ROOT } from "../steps/rebuild-helpers";
import { demoSourceCache, hostSecret, probeIsolation } from "../helpers/visibility";

let w: DemoWorld;
const secrets: { dir: string; file: string }[] = [];

test.before(async () => {
  w = await demoWorld("isolation-test-");
  // /root is the host's home here; /srv stands for any other host data; the checkout holds this test.
  for (const under of ["/root", "/srv", ROOT]) secrets.push(hostSecret(under));
});

test.after.always(() => {
  for (const s of secrets) rm(s.dir);
  if (w) rm(w.dir);
});

test("bwrap: host files outside the paths the step passes are not visible (home, /srv, the checkout, the demo world's file:// source cache)", async (t) => {
  const worldDir = path.dirname(w.file);
  const cache = demoSourceCache(worldDir);
  t.false(cache.startsWith(worldDir), `the kernel source lives outside the world dir: ${cache}`);
  const kernelDeb = fs.readdirSync(cache).find((f) => f.endsWith(".deb"));
  t.truthy(kernelDeb, `a kernel package in ${cache}`);
  const hidden = [...secrets.map((s) => s.file), path.join(ROOT, "package.json"), path.join(cache, kernelDeb!), cache, "/var", "/home", "/root", "/run", "/etc/nix", "/etc/hostname"];
  const seen = await probeIsolation({ backend: "bwrap", readOnly: [worldDir], see: [...hidden, w.file, "/usr/bin/nix-store", "/bin/sh"] });
  for (const p of hidden) t.is(seen[p], "hidden", p);
  // What the rebuild needs is there: the reviewed files (readOnly), Nix and sh.
  t.is(seen[w.file], "visible");
  t.is(seen["/usr/bin/nix-store"], "visible");
  t.is(seen["/bin/sh"], "visible");
});

test("bwrap: the probe is not blind: a secret passed as a readOnly path is visible, read-only; only the work dir, /nix and /tmp are writable", async (t) => {
  const s = secrets[0];
  const seen = await probeIsolation({ backend: "bwrap", readOnly: [s.dir], see: [s.file], write: [s.dir, "/", "/usr", "/etc", "/nix", "/tmp"] });
  t.is(seen[s.file], "visible");
  t.is(seen[s.dir], "read-only");
  for (const p of ["/", "/usr", "/etc"]) t.is(seen[p], "read-only", p);
  for (const p of ["/nix", "/tmp"]) t.is(seen[p], "writable", p);
});

test("bwrapArgs: no bind of the host root; merged-/usr symlinks are recreated, not bound", (t) => {
  const a = bwrapArgs({ backend: "bwrap", readOnly: ["/x/closure"], workDir: "/x/work", script: "/x/work/s.sh", args: [], env: {}, logFile: "/dev/null", owner: "o" });
  const binds = a.flatMap((x, i) => (x === "--ro-bind" || x === "--bind" ? [a[i + 1]] : []));
  t.false(binds.includes("/"), a.join(" "));
  t.true(binds.every((p) => p === "/usr" || p.startsWith("/usr/") || p.startsWith("/etc/") || p.startsWith("/x/")), binds.join(" "));
  if (fs.lstatSync("/bin").isSymbolicLink()) {
    const i = a.findIndex((x, j) => x === "--symlink" && a[j + 2] === "/bin");
    t.is(a[i + 1], fs.readlinkSync("/bin"));
  }
});
