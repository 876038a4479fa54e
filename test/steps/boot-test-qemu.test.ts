// The pieces that decide how boot-test runs QEMU (pipeline/lib/accel.ts, image-layout.ts, qemu.ts).
// Run everywhere: the KVM check's long-mode guest under real QEMU (TCG); every branch of the
// accelerator choice, its cache and override, against a stand-in QEMU and KVM device; the image
// layouts. Run only on the host it describes, otherwise skipped with the reason in its name: the
// choice against this host's real /dev/kvm (usable: compared with a patient real KVM guest; not
// usable: TCG without a check). Tests that set process.env run serially.
import test, { ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chooseAccel, KVM_CHECK_STATUS, longModeRom } from "../../pipeline/lib/accel";
import { resolveImage } from "../../pipeline/lib/image-layout";
import { findTool } from "../../pipeline/lib/proc";
import { QEMU, qemuArgs } from "../../pipeline/lib/qemu";
import { InputError } from "../../pipeline/lib/step";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "boot-test-qemu-"));
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));
const rom = path.join(work, "long-mode.rom");
fs.writeFileSync(rom, longModeRom());

/** Runs the check's guest; status, or "hung" after `ms` (the process group is killed). */
function runRom(accel: string, extra: string[], ms: number): Promise<number | "hung"> {
  return new Promise((resolve) => {
    const args = ["-accel", accel, "-nodefaults", "-no-user-config", "-display", "none", "-m", "16", "-bios", rom];
    const child = spawn(findTool(QEMU), [...args, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot", ...extra], { detached: true, stdio: "ignore" });
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      process.kill(-child.pid!, "SIGKILL");
    }, ms);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve(hung ? "hung" : (code as number));
    });
  });
}

test("the KVM check's guest reaches 64-bit long mode and exits through isa-debug-exit (TCG)", async (t) => {
  // (0x31 << 1) | 1 = 99: the `out` after the jump into the 64-bit code segment ran.
  t.is(KVM_CHECK_STATUS, 99);
  t.is(await runRom("tcg", [], 30_000), 99);
  // On a CPU without long mode the same guest faults (EFER.LME) and QEMU just stops: not 99.
  t.not(await runRom("tcg", ["-cpu", "qemu32"], 30_000), 99);
  // QEMU's own failure (here: no such firmware file) is status 1, which is why the guest's is not.
  t.is(await runRom("tcg", ["-bios", path.join(work, "no-such.rom")], 30_000), 1);
});

/** Sets (undefined: deletes) environment variables for one serial test, restored at its end. */
function setEnv(t: ExecutionContext, vars: Record<string, string | undefined>): void {
  const saved = { ...process.env };
  t.teardown(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

function canReadWrite(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

const kvmUsable = canReadWrite("/dev/kvm");
const ifKvmUsable = kvmUsable ? test.serial : test.serial.skip;
const ifKvmNotUsable = kvmUsable ? test.serial.skip : test.serial;

ifKvmUsable(
  `this host's usable /dev/kvm: the choice agrees with a long-mode guest given 15 s under KVM, and is cached${kvmUsable ? "" : " (skipped: /dev/kvm is missing or not accessible here)"}`,
  async (t) => {
    setEnv(t, { XDG_CACHE_HOME: path.join(work, "cache-a"), SUPPLY_CHAIN_ACCEL: undefined });
    const choice = await chooseAccel(findTool(QEMU));
    // Independent look, with far more patience than the check's 3 s.
    const real = await runRom("kvm", [], 15_000);
    t.is(choice.accel, real === KVM_CHECK_STATUS ? "kvm" : "tcg", `KVM guest: ${real}; choice: ${JSON.stringify(choice)}`);
    // The verdict is cached for the next run, keyed to this boot and this QEMU binary.
    const cached = JSON.parse(fs.readFileSync(path.join(work, "cache-a", "supply-chain", "accel.json"), "utf8"));
    t.is(cached.accel, choice.accel);
    t.regex((await chooseAccel(findTool(QEMU))).reason, /\(cached in /);
  },
);

ifKvmNotUsable(
  `this host's /dev/kvm is missing or not accessible: the choice is TCG, saying so${kvmUsable ? " (skipped: /dev/kvm is usable here)" : ""}`,
  async (t) => {
    setEnv(t, { XDG_CACHE_HOME: path.join(work, "cache-a"), SUPPLY_CHAIN_ACCEL: undefined });
    t.deepEqual(await chooseAccel(findTool(QEMU)), { accel: "tcg", reason: "/dev/kvm is missing or not accessible" });
  },
);

// --- the choice against a stand-in QEMU and KVM device: the same on every host ----------------

/** Stands in for /dev/kvm: a file we can read and write, so chooseAccel goes on to run the check. */
const fakeKvm = path.join(work, "kvm");
fs.writeFileSync(fakeKvm, "");

/** A stand-in qemu-system-x86_64 that runs `body` (sh) for the KVM check and logs each run's arguments. */
function fakeQemu(name: string, body: string): { bin: string; dir: string; runs(): string[] } {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  const bin = path.join(dir, "qemu-system-x86_64");
  const log = path.join(dir, "runs.log");
  fs.writeFileSync(bin, `#!/bin/sh\necho "$*" >> ${log}\n${body}\n`, { mode: 0o755 });
  return { bin, dir, runs: () => (fs.existsSync(log) ? fs.readFileSync(log, "utf8").trimEnd().split("\n") : []) };
}

function freshCache(t: ExecutionContext, name: string): string {
  setEnv(t, { XDG_CACHE_HOME: path.join(work, name), SUPPLY_CHAIN_ACCEL: undefined });
  return path.join(work, name, "supply-chain", "accel.json");
}

test.serial("no usable KVM device: TCG, naming the device, and no check is run", async (t) => {
  freshCache(t, "cache-nodev");
  const qemu = fakeQemu("nodev", "exit 99");
  const missing = path.join(work, "no-such-kvm");
  t.deepEqual(await chooseAccel(qemu.bin, missing), { accel: "tcg", reason: `${missing} is missing or not accessible` });
  t.deepEqual(qemu.runs(), []);
});

test.serial("a check that exits with status 99 (the guest's 0x31 through isa-debug-exit) means KVM; QEMU got -accel kvm, the exit device and the long-mode ROM", async (t) => {
  const cache = freshCache(t, "cache-exit99");
  const qemu = fakeQemu("exit99", 'while [ $# -gt 0 ]; do [ "$1" = -bios ] && cp "$2" "$(dirname "$0")/seen.rom"; shift; done\nexit 99');
  const choice = await chooseAccel(qemu.bin, fakeKvm);
  t.is(choice.accel, "kvm");
  t.regex(choice.reason, /^a long-mode guest under KVM exited in \d+ ms$/);
  const [args] = qemu.runs();
  t.regex(args, /-accel kvm .*-bios \S+ -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot$/);
  t.deepEqual(fs.readFileSync(path.join(qemu.dir, "seen.rom")), longModeRom());
  t.is(JSON.parse(fs.readFileSync(cache, "utf8")).accel, "kvm");
});

test.serial("a check still running after 3 s means TCG (nested KVM hang); its whole process group is killed", async (t) => {
  freshCache(t, "cache-hang");
  const qemu = fakeQemu("hang", 'sleep 60 &\necho $! > "$(dirname "$0")/sleep.pid"\nwait');
  const started = Date.now();
  t.deepEqual(await chooseAccel(qemu.bin, fakeKvm), { accel: "tcg", reason: "a long-mode guest under KVM did not finish within 3000 ms (nested KVM hang)" });
  const took = Date.now() - started;
  t.true(took >= 3000 && took < 10_000, `took ${took} ms`);
  const sleeper = Number(fs.readFileSync(path.join(qemu.dir, "sleep.pid"), "utf8"));
  const end = Date.now() + 2000;
  while (Date.now() < end && alive(sleeper)) await new Promise((r) => setTimeout(r, 50));
  t.false(alive(sleeper), `the check's child ${sleeper} outlived it`);
});

test.serial("QEMU's own exit status 1 (here: -accel kvm failed to initialise, as QEMU 7.2 says it) means TCG, not KVM", async (t) => {
  freshCache(t, "cache-kvm-init");
  const qemu = fakeQemu("kvm-init", "echo 'kvm version too old' >&2\necho 'qemu-system-x86_64: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device' >&2\nexit 1");
  t.deepEqual(await chooseAccel(qemu.bin, fakeKvm), { accel: "tcg", reason: "qemu -accel kvm failed (exit 1): qemu-system-x86_64: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device" });
});

test.serial("a check that exits with another status means TCG and names QEMU's last stderr line", async (t) => {
  freshCache(t, "cache-fail");
  const qemu = fakeQemu("fail", "echo 'first line' >&2\necho 'qemu-system-x86_64: something else failed' >&2\nexit 3");
  t.deepEqual(await chooseAccel(qemu.bin, fakeKvm), { accel: "tcg", reason: "qemu -accel kvm failed (exit 3): qemu-system-x86_64: something else failed" });
});

test.serial("the check's verdict is reused for this boot, this binary and this check's guest, and checked again for another check, another boot or a changed binary", async (t) => {
  const cache = freshCache(t, "cache-key");
  const qemu = fakeQemu("key", "exit 99");
  t.is((await chooseAccel(qemu.bin, fakeKvm)).accel, "kvm");
  t.regex((await chooseAccel(qemu.bin, fakeKvm)).reason, /^a long-mode guest under KVM exited in \d+ ms \(cached in /);
  t.is(qemu.runs().length, 1, "the second choice ran no check");

  const entry = JSON.parse(fs.readFileSync(cache, "utf8"));
  const [boot, ...binary] = entry.key.split("|");
  t.is(boot, fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(), "the key starts with this boot's id");
  const check = binary.pop();
  t.is(check, createHash("sha256").update(longModeRom()).digest("hex"), "the key ends with the check's guest");
  // A verdict of another check (the guest that wrote 0, whose status 1 QEMU's own failures share) is not trusted.
  fs.writeFileSync(cache, JSON.stringify({ ...entry, key: [boot, ...binary].join("|") }));
  t.notRegex((await chooseAccel(qemu.bin, fakeKvm)).reason, /cached/);
  t.is(qemu.runs().length, 2, "another check's verdict was not trusted");
  fs.writeFileSync(cache, JSON.stringify({ ...entry, key: ["another-boot", ...binary, check].join("|") }));
  t.notRegex((await chooseAccel(qemu.bin, fakeKvm)).reason, /cached/);
  t.is(qemu.runs().length, 3, "another boot's verdict was not trusted");

  fs.appendFileSync(qemu.bin, "# changed\n");
  t.notRegex((await chooseAccel(qemu.bin, fakeKvm)).reason, /cached/);
  t.is(qemu.runs().length, 4, "the old binary's verdict was not trusted");
});

test.serial("a cache entry for another boot or binary is not trusted; SUPPLY_CHAIN_ACCEL overrides", async (t) => {
  freshCache(t, "cache-b");
  fs.mkdirSync(path.join(work, "cache-b", "supply-chain"), { recursive: true });
  fs.writeFileSync(path.join(work, "cache-b", "supply-chain", "accel.json"), JSON.stringify({ key: "another-boot|/usr/bin/qemu|1|1", accel: "kvm", reason: "stale" }));
  // The stand-in's check says TCG: a trusted stale entry would say KVM.
  const qemu = fakeQemu("stale", "echo 'no KVM' >&2\nexit 3");
  const fresh = await chooseAccel(qemu.bin, fakeKvm);
  t.notRegex(fresh.reason, /stale|cached/);
  t.is(fresh.accel, "tcg");
  t.is(qemu.runs().length, 1);

  process.env.SUPPLY_CHAIN_ACCEL = "tcg";
  t.deepEqual(await chooseAccel(findTool(QEMU)), { accel: "tcg", reason: "forced by SUPPLY_CHAIN_ACCEL=tcg" });
  process.env.SUPPLY_CHAIN_ACCEL = "hvf";
  const e = await t.throwsAsync(chooseAccel(findTool(QEMU)), { instanceOf: InputError });
  t.is(e!.message, "SUPPLY_CHAIN_ACCEL must be kvm, tcg or auto (got 'hvf')");
});

test("image layouts: kernel+initrd dir (cmdline appended after console=ttyS0 no_timer_check), .iso, iso/*.iso", (t) => {
  const k = path.join(work, "k");
  fs.mkdirSync(k);
  for (const f of ["kernel", "initrd"]) fs.writeFileSync(path.join(k, f), "x");
  fs.writeFileSync(path.join(k, "cmdline"), "loglevel=4 panic=-1\n");
  const image = resolveImage(k);
  t.deepEqual(image, { kind: "kernel", dir: k, kernel: path.join(k, "kernel"), initrd: path.join(k, "initrd"), cmdline: "loglevel=4 panic=-1" });
  const args = qemuArgs({ image, accel: "tcg", memoryMiB: 256, forwards: [{ guest: 8000, host: 4321 }], serialLog: "/s.log", pidFile: "/q.pid" });
  t.is(args[args.indexOf("-append") + 1], "console=ttyS0 no_timer_check loglevel=4 panic=-1");
  t.is(args[args.indexOf("-netdev") + 1], "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:4321-:8000");
  t.is(args[args.indexOf("-serial") + 1], "file:/s.log");
  t.true(args.includes("-nodefaults") && args.includes("-no-reboot"));

  const d = path.join(work, "d");
  fs.mkdirSync(path.join(d, "iso"), { recursive: true });
  fs.writeFileSync(path.join(d, "iso", "nixos.iso"), "x");
  t.deepEqual(resolveImage(d), { kind: "iso", iso: path.join(d, "iso", "nixos.iso") });
  t.deepEqual(resolveImage(path.join(d, "iso", "nixos.iso")), { kind: "iso", iso: path.join(d, "iso", "nixos.iso") });
  const isoArgs = qemuArgs({ image: resolveImage(d), accel: "kvm", memoryMiB: 2048, forwards: [], serialLog: "/s", pidFile: "/p" });
  t.deepEqual(isoArgs.slice(isoArgs.indexOf("-cdrom")), ["-cdrom", path.join(d, "iso", "nixos.iso"), "-boot", "d"]);

  const f = path.join(work, "disk.img");
  fs.writeFileSync(f, "x");
  t.is(t.throws(() => resolveImage(f), { instanceOf: InputError })!.message, `image ${f} is a file but not an .iso (expected an ISO, or a directory with kernel+initrd or iso/*.iso)`);
  const empty = path.join(work, "empty");
  fs.mkdirSync(empty);
  t.regex(t.throws(() => resolveImage(empty), { instanceOf: InputError })!.message, /is neither a kernel\+initrd image .* nor an ISO directory/);
});

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
