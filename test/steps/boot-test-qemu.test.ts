// The pieces that decide how boot-test runs QEMU (pipeline/lib/accel.ts, image-layout.ts, qemu.ts):
// the KVM check's tiny long-mode guest (run for real), the accelerator choice against what KVM
// really does here, the cache and override, and the image layouts. Tests that set process.env run
// serially.
import test from "ava";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chooseAccel, longModeRom } from "../../pipeline/lib/accel";
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
  // (0 << 1) | 1 = 1: the `out` after the jump into the 64-bit code segment ran.
  t.is(await runRom("tcg", [], 30_000), 1);
  // On a CPU without long mode the same guest faults (EFER.LME) and QEMU just stops: not 1.
  t.not(await runRom("tcg", ["-cpu", "qemu32"], 30_000), 1);
});

test.serial("the accelerator choice matches what KVM really does on this host", async (t) => {
  const env = { ...process.env };
  process.env.XDG_CACHE_HOME = path.join(work, "cache-a");
  delete process.env.SUPPLY_CHAIN_ACCEL;
  t.teardown(() => Object.assign(process.env, env));
  const choice = await chooseAccel(findTool(QEMU));
  let usable = true;
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    usable = false;
  }
  if (!usable) {
    t.deepEqual(choice, { accel: "tcg", reason: "/dev/kvm is missing or not accessible" });
    return;
  }
  // Independent look, with far more patience than the check's 3 s.
  const real = await runRom("kvm", [], 15_000);
  t.is(choice.accel, real === 1 ? "kvm" : "tcg", `KVM guest: ${real}; choice: ${JSON.stringify(choice)}`);
  // The verdict is cached for the next run, keyed to this boot and this QEMU binary.
  const cached = JSON.parse(fs.readFileSync(path.join(work, "cache-a", "supply-chain", "accel.json"), "utf8"));
  t.is(cached.accel, choice.accel);
  t.regex((await chooseAccel(findTool(QEMU))).reason, /\(cached in /);
});

test.serial("a cache entry for another boot or binary is not trusted; SUPPLY_CHAIN_ACCEL overrides", async (t) => {
  const env = { ...process.env };
  t.teardown(() => {
    for (const k of ["XDG_CACHE_HOME", "SUPPLY_CHAIN_ACCEL"]) delete process.env[k];
    Object.assign(process.env, env);
  });
  process.env.XDG_CACHE_HOME = path.join(work, "cache-b");
  fs.mkdirSync(path.join(work, "cache-b", "supply-chain"), { recursive: true });
  fs.writeFileSync(path.join(work, "cache-b", "supply-chain", "accel.json"), JSON.stringify({ key: "another-boot|/usr/bin/qemu|1|1", accel: "kvm", reason: "stale" }));
  delete process.env.SUPPLY_CHAIN_ACCEL;
  const fresh = await chooseAccel(findTool(QEMU));
  t.notRegex(fresh.reason, /stale|cached/);

  process.env.SUPPLY_CHAIN_ACCEL = "tcg";
  t.deepEqual(await chooseAccel(findTool(QEMU)), { accel: "tcg", reason: "forced by SUPPLY_CHAIN_ACCEL=tcg" });
  process.env.SUPPLY_CHAIN_ACCEL = "hvf";
  const e = await t.throwsAsync(chooseAccel(findTool(QEMU)), { instanceOf: InputError });
  t.is(e!.message, "SUPPLY_CHAIN_ACCEL must be kvm, tcg or auto (got 'hvf')");
});

test("image layouts: kernel+initrd dir (cmdline appended after console=ttyS0), .iso, iso/*.iso", (t) => {
  const k = path.join(work, "k");
  fs.mkdirSync(k);
  for (const f of ["kernel", "initrd"]) fs.writeFileSync(path.join(k, f), "x");
  fs.writeFileSync(path.join(k, "cmdline"), "loglevel=4 panic=-1\n");
  const image = resolveImage(k);
  t.deepEqual(image, { kind: "kernel", dir: k, kernel: path.join(k, "kernel"), initrd: path.join(k, "initrd"), cmdline: "loglevel=4 panic=-1" });
  const args = qemuArgs({ image, accel: "tcg", memoryMiB: 256, forwards: [{ guest: 8000, host: 4321 }], serialLog: "/s.log", pidFile: "/q.pid" });
  t.is(args[args.indexOf("-append") + 1], "console=ttyS0 loglevel=4 panic=-1");
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
