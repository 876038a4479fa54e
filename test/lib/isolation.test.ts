// What the bwrap isolation shows of the host, probed for real: the host system read-only, the
// paths the step passes, the work dir; no home, no checkout, no other host file, not the demo
// world's file:// source cache. A probe given the same secret as a readOnly path sees it (the probe
// is not blind). With a systemRoot, the root's system (its Nix) replaces the host's.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { bwrapArgs, IsolatedRun, runIsolated } from "../../pipeline/lib/isolation";
import { describeSystemError } from "../../pipeline/lib/step";
import { mountTmpfs } from "../helpers/tmpfs";
import { demoWorld, DemoWorld, rm, ROOT } from "../steps/rebuild-helpers";
import { demoSourceCache, hostSecret, probeIsolation } from "../helpers/visibility";
import { hostNixVersion, nixRoot } from "../helpers/nix-root";

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

for (const sys of ["host", "sid root"] as const) {
  test(`bwrap (${sys} system): host files outside the paths the step passes are not visible (home, /srv, the checkout, the demo world's file:// source cache)`, async (t) => {
    const worldDir = path.dirname(w.file);
    const cache = demoSourceCache(worldDir);
    t.false(cache.startsWith(worldDir), `the kernel source lives outside the world dir: ${cache}`);
    const kernelDeb = fs.readdirSync(cache).find((f) => f.endsWith(".deb"));
    t.truthy(kernelDeb, `a kernel package in ${cache}`);
    const hidden = [...secrets.map((s) => s.file), path.join(ROOT, "package.json"), path.join(cache, kernelDeb!), cache, "/var", "/home", "/root", "/run", "/etc/nix", "/etc/hostname"];
    const systemRoot = sys === "host" ? undefined : nixRoot("sid").root;
    const seen = await probeIsolation({ backend: "bwrap", readOnly: [worldDir], see: [...hidden, w.file, "/usr/bin/nix-store", "/bin/sh"], systemRoot });
    for (const p of hidden) t.is(seen[p], "hidden", p);
    // What the rebuild needs is there: the reviewed files (readOnly), Nix and sh.
    t.is(seen[w.file], "visible");
    t.is(seen["/usr/bin/nix-store"], "visible");
    t.is(seen["/bin/sh"], "visible");
  });
}

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

/** `nix --version` and the network interfaces (/proc/net/dev) inside bwrap, with or without a system root. */
async function nixInside(systemRoot?: string): Promise<{ version: string; interfaces: string[] }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "sc-nix-inside-"));
  try {
    fs.writeFileSync(path.join(work, "s.sh"), `nix --version > "$1/version"\ntail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > "$1/interfaces"\n`);
    const run: IsolatedRun = { backend: "bwrap", readOnly: [], workDir: work, script: path.join(work, "s.sh"), args: [work], env: { PATH: "/usr/bin:/bin" }, logFile: path.join(work, "log"), owner: work, systemRoot };
    const r = await runIsolated(run);
    if (r.code !== 0) throw new Error(`exit ${r.code ?? r.signal}: ${fs.readFileSync(path.join(work, "log"), "utf8")}`);
    const read = (f: string) => fs.readFileSync(path.join(work, f), "utf8").trim();
    return { version: read("version").split(" ").pop()!, interfaces: read("interfaces").split("\n") };
  } finally {
    rm(work);
  }
}

test("bwrap with systemRoot: the root's Nix (sid: 2.34) runs, not the host's, still with loopback only; without it, the host's (2.8)", async (t) => {
  const sid = nixRoot("sid");
  const host = hostNixVersion();
  t.regex(sid.nixVersion, /^2\.34\./);
  t.regex(host, /^2\.8\./);
  const [withRoot, without] = await Promise.all([nixInside(sid.root), nixInside()]);
  t.is(withRoot.version, sid.nixVersion);
  t.deepEqual(withRoot.interfaces, ["lo"]);
  t.is(without.version, host);
  t.deepEqual(without.interfaces, ["lo"]);
});

test.serial("a log that cannot be written (a full disk) stops the isolated run and rejects naming the log, instead of crashing the step", async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "isolation-full-log-"));
  const full = path.join(work, "full");
  const unmount = mountTmpfs(full, "64k");
  try {
    // 1 MiB of output, then a marker the run must never reach once its log is full.
    fs.writeFileSync(path.join(work, "s.sh"), `head -c 1048576 /dev/zero | tr '\\0' x\nsleep 5\ntouch "$1/finished"\n`);
    const logFile = path.join(full, "log");
    const run: IsolatedRun = { backend: "bwrap", readOnly: [], workDir: work, script: path.join(work, "s.sh"), args: [work], env: { PATH: "/usr/bin:/bin" }, logFile, owner: work };
    const e = await t.throwsAsync(runIsolated(run));
    t.is((e as NodeJS.ErrnoException).code, "ENOSPC");
    t.is(describeSystemError(e), `no space left on device (ENOSPC, write ${logFile})`);
    t.false(fs.existsSync(path.join(work, "finished")), "the run was stopped, not waited for");
  } finally {
    unmount();
    rm(work);
  }
});

test("bwrapArgs with systemRoot: every system bind comes from the root, at the usual places; nothing else changes", (t) => {
  const base: IsolatedRun = { backend: "bwrap", readOnly: ["/x/closure"], workDir: "/x/work", script: "/x/work/s.sh", args: [], env: {}, logFile: "/dev/null", owner: "o" };
  const root = nixRoot("sid").root;
  const a = bwrapArgs({ ...base, systemRoot: root });
  const binds = a.flatMap((x, i) => (x === "--ro-bind" || x === "--bind" ? [[a[i + 1], a[i + 2]]] : []));
  for (const [src, dst] of binds) {
    if (dst.startsWith("/x/")) t.is(src, dst);
    else t.true(src.startsWith(`${root}/`) && (dst === "/usr" || dst.startsWith("/etc/")), `${src} -> ${dst}`);
  }
  t.true(binds.some(([src, dst]) => src === `${root}/usr` && dst === "/usr"));
  // Past the system part (up to the tmpfs /nix), the arguments are the host run's.
  const rest = (x: string[]) => x.slice(x.indexOf("--tmpfs"));
  t.deepEqual(rest(a), rest(bwrapArgs(base)));
});
