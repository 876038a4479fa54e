// `supply-chain boot-test` with real QEMU (TCG here) on the demo world's image: it passes when the
// services answer, fails saying what it got when they answer wrongly, times out with the serial
// tail when they never start, and QEMU never outlives the step, however the step ends.
import test from "ava";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { cli, reason, ROOT } from "./demo-world.helpers";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "boot-test-"));
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));

let image = "";
let probes = "";
let neverStarts = "";

test.before(async () => {
  const world = await cli(["demo-world", path.join(work, "world")]);
  if (world.code !== 0) throw new Error(`demo-world failed: ${world.stderr}`);
  const built = await cli(["build", "--file", world.json.file, "--attribute", world.json.attribute]);
  if (built.code !== 0) throw new Error(`build failed: ${built.stderr}`);
  image = built.json.outPath;
  probes = world.json.probes;
  neverStarts = makeNeverStartImage(image, path.join(work, "never-starts"));
});

/** Same kernel as the demo image, an initrd whose init only says so on the console and sleeps. */
function makeNeverStartImage(from: string, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(from, "kernel"), path.join(dir, "kernel"));
  const init = "#!/bin/busybox sh\n/bin/busybox echo 'never-starts: no services in this image, sleeping'\nwhile :; do /bin/busybox sleep 3600; done\n";
  fs.writeFileSync(
    path.join(dir, "initrd"),
    zlib.gzipSync(
      newc([
        { name: "bin", mode: 0o40755 },
        { name: "bin/busybox", mode: 0o100755, data: fs.readFileSync("/bin/busybox") },
        { name: "init", mode: 0o100755, data: Buffer.from(init) },
      ]),
    ),
  );
  fs.writeFileSync(path.join(dir, "cmdline"), "\n");
  return dir;
}

/** A newc ("070701") cpio archive, the format the kernel unpacks as an initramfs. */
function newc(entries: { name: string; mode: number; data?: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const all = [...entries, { name: "TRAILER!!!", mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(e.name + "\0");
    const fields = [i + 1, e.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    const header = Buffer.from("070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join(""));
    parts.push(header, name, pad(header.length + name.length), data, pad(data.length));
  });
  return Buffer.concat(parts);
}

function writeProbes(name: string, spec: unknown): string {
  const file = path.join(work, name);
  fs.writeFileSync(file, typeof spec === "string" ? spec : JSON.stringify(spec));
  return file;
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie has already exited
  } catch {
    return false;
  }
}

/** Every live process whose command line mentions `needle` (e.g. a run's output directory). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/cmdline`, "utf8").includes(needle) && alive(Number(d))) pids.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

function serialTail(file: string): string {
  const text = fs.readFileSync(file, "utf8");
  if (!text.trim()) return "(serial log is empty: nothing reached the console)";
  return text.replace(/\r\n?/g, "\n").trimEnd().split("\n").slice(-40).join("\n");
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

test.serial("the demo image boots and every probe passes; the result is kept next to the serial log", async (t) => {
  const out = path.join(work, "pass");
  const r = await cli(["boot-test", "--image", image, "--probes", probes, "--timeout", "120", "--out", out]);
  t.is(r.code, 0, r.stderr);
  const res = r.json;
  t.true(res.passed);
  t.true(res.accel === "tcg" || res.accel === "kvm");
  t.deepEqual(
    res.probes.map((p: any) => [p.name, p.ok]),
    [["writer acknowledges a line", true], ["reader is healthy", true], ["end to end, newest first", true]],
  );
  t.regex(res.probes[0].detail, /got "OK \d+"/);
  // The e2e probe's token really went through the writer and came back at the top of the reader.
  t.regex(res.probes[2].detail, /first line "\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: e2e sc[0-9a-f]{12}"/);
  t.true(res.bootSeconds > 0 && res.bootSeconds * 1000 <= res.probes[0].ms + 100);
  t.is(res.serialLog, path.join(out, "serial.log"));
  t.regex(fs.readFileSync(res.serialLog, "utf8"), /demo-world: ready/);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, "result.json"), "utf8")), res);
  t.is(Number(fs.readFileSync(path.join(out, "qemu.pid"), "utf8")), res.qemuPid);
  t.false(alive(res.qemuPid), `QEMU ${res.qemuPid} still running`);
});

test.serial("a probe expecting the wrong text fails, names the probe and says what it got", async (t) => {
  const spec = writeProbes("wrong.yaml", [
    "probes:",
    "  - name: reader is healthy",
    "    http: { port: 8000, path: /healthz }",
    "  - name: writer says NOPE",
    '    tcp: { port: 1300, send: "wrong {{token}}", expect: "NOPE" }',
    "",
  ].join("\n"));
  const out = path.join(work, "wrong");
  // Every probe retries until the deadline, so this one waits it out: long enough for a slow boot.
  const r = await cli(["boot-test", "--image", image, "--probes", spec, "--timeout", "75", "--out", out]);
  t.is(r.code, 1, r.stderr);
  t.false(r.json.passed);
  t.true(r.json.probes[0].ok, r.json.probes[0].detail);
  const wrong = r.json.probes[1];
  t.false(wrong.ok);
  t.regex(wrong.detail, /expected first reply line to contain "NOPE", got "OK \d+"/);
  const stderr = r.stderr.trim().split("\n");
  const oneLiner = stderr.find((l) => l.startsWith("supply-chain boot-test: "));
  t.regex(oneLiner ?? "", /^supply-chain boot-test: probe "writer says NOPE" failed: .*got "OK \d+"/);
  t.true(r.stderr.includes(`last 40 lines of the serial log ${path.join(out, "serial.log")}:\n${serialTail(path.join(out, "serial.log"))}`));
  t.regex(r.stderr, /demo-writer: row \d+/); // the guest's own account of the rows it took
  t.false(alive(r.json.qemuPid));
});

test.serial("an image whose services never start times out with the serial tail, and QEMU is gone", async (t) => {
  const out = path.join(work, "never");
  const started = Date.now();
  const r = await cli(["boot-test", "--image", neverStarts, "--probes", probes, "--timeout", "20", "--out", out]);
  t.is(r.code, 1, r.stderr);
  t.true(Date.now() - started >= 20_000);
  t.false(r.json.passed);
  t.is(r.json.bootSeconds, null);
  t.true(r.json.probes.every((p: any) => !p.ok));
  t.regex(r.json.probes[0].detail, /boot deadline reached after \d+ attempts/);
  t.regex(r.stderr, /supply-chain boot-test: probe "writer acknowledges a line" failed: /);
  // The tail is what the console said (how far the boot got), so the reason explains itself.
  const tail = serialTail(path.join(out, "serial.log"));
  t.true(r.stderr.includes(`last 40 lines of the serial log ${path.join(out, "serial.log")}:\n${tail}`));
  const pid = Number(fs.readFileSync(path.join(out, "qemu.pid"), "utf8"));
  t.is(pid, r.json.qemuPid);
  t.false(alive(pid), `QEMU ${pid} still running`);
  t.deepEqual(processesMentioning(out), []);
});

for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  test.serial(`${sig} to the step stops QEMU with it (exit ${code})`, async (t) => {
    const out = path.join(work, `signal-${sig}`);
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), "boot-test", "--image", neverStarts, "--probes", probes, "--timeout", "120", "--out", out], { stdio: "ignore" });
    const closed = new Promise<number | null>((r) => child.on("close", (c) => r(c)));
    const pidFile = path.join(out, "qemu.pid");
    t.true(await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8").trim() !== "", 90_000), "QEMU never wrote its pidfile");
    const pid = Number(fs.readFileSync(pidFile, "utf8"));
    t.true(alive(pid));
    child.kill(sig);
    t.is(await closed, code);
    t.true(await waitFor(() => !alive(pid), 5000), `QEMU ${pid} outlived the step`);
    t.deepEqual(processesMentioning(out), []);
  });
}

test.serial("SIGKILL to the step (no handler runs) still stops QEMU: the watchdog does", async (t) => {
  const out = path.join(work, "sigkill");
  const child = spawn(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), "boot-test", "--image", neverStarts, "--probes", probes, "--timeout", "120", "--out", out], { stdio: "ignore" });
  const closed = new Promise<NodeJS.Signals | null>((r) => child.on("close", (_c, s) => r(s)));
  const pidFile = path.join(out, "qemu.pid");
  t.true(await waitFor(() => fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8").trim() !== "", 90_000), "QEMU never wrote its pidfile");
  const pid = Number(fs.readFileSync(pidFile, "utf8"));
  t.true(alive(pid));
  child.kill("SIGKILL");
  t.is(await closed, "SIGKILL");
  t.true(await waitFor(() => !alive(pid), 5000), `QEMU ${pid} outlived a SIGKILLed step`);
  t.true(await waitFor(() => processesMentioning(out).length === 0, 5000), "a process of this run is still alive");
});

test.serial("QEMU refusing to run on this machine (no memory for the guest) is exit 2 naming QEMU's reason, not a failed boot", async (t) => {
  const out = path.join(work, "qemu-refuses");
  const r = await cli(["boot-test", "--image", neverStarts, "--probes", probes, "--timeout", "60", "--memory", "100000000", "--out", out]);
  t.is(r.code, 2, r.stderr);
  t.is(r.stdout, "", "no verdict on stdout");
  t.regex(reason(r), new RegExp(`^supply-chain boot-test: QEMU could not run ${neverStarts}: qemu-system-x86_64: cannot set up guest memory 'pc\\.ram': Cannot allocate memory \\(exit \\d+; serial log ${out}/serial\\.log\\)$`));
  t.false(fs.existsSync(path.join(out, "result.json")), "no result a verification could sign");
});

test("a bad probe file is exit 2 naming the probe and the field", async (t) => {
  const bad = writeProbes("bad.yaml", "probes:\n  - name: reader\n    http: { port: eighty, path: / }\n");
  const r = await cli(["boot-test", "--image", image, "--probes", bad]);
  t.is(r.code, 2);
  t.is(reason(r), `supply-chain boot-test: probe file ${bad}: probe 1 "reader": http.port must be an integer 1-65535 (got "eighty")`);
  t.is(r.stdout, "");

  const notYaml = writeProbes("broken.yaml", "probes: [\n");
  const r2 = await cli(["boot-test", "--image", image, "--probes", notYaml]);
  t.is(r2.code, 2);
  t.regex(reason(r2), new RegExp(`^supply-chain boot-test: probe file ${notYaml}: not valid YAML: `));

  const missing = path.join(work, "nope.json");
  const r3 = await cli(["boot-test", "--image", image, "--probes", missing]);
  t.is(r3.code, 2);
  t.is(reason(r3), `supply-chain boot-test: probe file ${missing}: does not exist`);
});

test("a missing image is exit 2 naming it; so is a directory that is no image", async (t) => {
  const r = await cli(["boot-test", "--image", "/nonexistent/image", "--probes", probes]);
  t.is(r.code, 2);
  t.is(reason(r), "supply-chain boot-test: image /nonexistent/image does not exist");
  t.is(r.stdout, "");

  const half = path.join(work, "half");
  fs.mkdirSync(half);
  fs.writeFileSync(path.join(half, "kernel"), "");
  const r2 = await cli(["boot-test", "--image", half, "--probes", probes]);
  t.is(r2.code, 2);
  t.is(reason(r2), `supply-chain boot-test: image ${half} has no initrd file (a kernel+initrd image needs both)`);
});

test("missing qemu (not on PATH) is exit 2 naming the tool and its package", async (t) => {
  const emptyBin = fs.mkdtempSync(path.join(work, "bin-"));
  const r = await cli(["boot-test", "--image", image, "--probes", probes], { ...process.env, PATH: emptyBin });
  t.is(r.code, 2);
  t.is(
    reason(r),
    "supply-chain boot-test: missing tool 'qemu-system-x86_64' on PATH (install the Debian package qemu-system-x86, or run scripts/setup.sh)",
  );
  t.is(r.stdout, "");
});
