// Which accelerator boot-test uses: KVM only when it actually works. Nested KVM on this kind of
// host accepts a guest and then hangs it, so the check runs a real long-mode guest (docs/boot-test.md,
// "Accelerator"); the verdict is cached per host boot, QEMU binary and check guest.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { InputError } from "./step";
import { writeJsonAtomic } from "./files";
import { spawnGroup } from "./process-group";

export type Accel = "kvm" | "tcg";

/**
 * A 64 KiB firmware image for the KVM check: from the reset vector it builds identity page tables,
 * enters 64-bit long mode and writes 0x31 to isa-debug-exit, so QEMU exits with status (0x31 << 1) | 1 = 99
 * (KVM_CHECK_STATUS): not 1, which QEMU itself exits with when it fails, e.g. when `-accel kvm`
 * cannot initialise, nor 0 (a triple fault under -no-reboot). Nested KVM on
 * this kind of host runs real mode fine but hangs the moment a guest enters long mode (the Linux
 * kernel stopped right after "Probing EDD"), so this is what the check must exercise; no SeaBIOS
 * either, which alone took 6 s under nested KVM. Source (GNU as, `as --32`, `ld -Ttext 0 --oformat binary`):
 *   cli; mov $0xf000,%ax; mov %ax,%ds; xor %ax,%ax; mov %ax,%es; mov $0x1000,%di; mov $0x3000,%cx; rep stosb
 *   movw $0x2003,%es:0x1000; movw $0x3003,%es:0x2000; movw $0x83,%es:0x3000   # PML4 -> PDPT -> 2 MiB page
 *   lgdtl gdtr; cr4 |= PAE; cr3 = 0x1000; EFER |= LME; cr0 |= PG|PE; ljmpl $0x08,$(long+0xf0000)
 *   long: mov $0x31,%al; out %al,$0xf4; 1: hlt; jmp 1b
 *   gdt: .quad 0, 0x00209A0000000000; gdtr: .word 15; .long gdt+0xf0000
 *   at 0xfff0 (reset vector): ljmp $0xf000,$0
 */
const LONG_MODE_ROM_CODE =
  "fab800f08ed831c08ec0bf0010b90030f3aa26c7060010032026c7060020033026c70600308300660f011680000f20e0" +
  "6683c8200f22e066b8001000000f22d866b9800000c00f32660d000100000f300f20c0660d010000800f22c066ea6400" +
  "0f000800b031e6f4f4ebfd8db4000090000000000000000000000000009a20000f0070000f00";
const RESET_VECTOR = "ea000000f0";

export function longModeRom(): Buffer {
  const rom = Buffer.alloc(0x10000);
  Buffer.from(LONG_MODE_ROM_CODE, "hex").copy(rom, 0);
  Buffer.from(RESET_VECTOR, "hex").copy(rom, 0xfff0);
  return rom;
}

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

/** The exit status of a check whose guest ran: isa-debug-exit turns the guest's 0x31 into (0x31 << 1) | 1. */
export const KVM_CHECK_STATUS = (0x31 << 1) | 1;

/** Under working KVM the check takes ~0.2 s; a hung one is killed after this. */
const KVM_CHECK_TIMEOUT_MS = 3000;

function cacheFile(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(base, "supply-chain", "accel.json");
}

/** What makes a cached verdict stale: another boot, another QEMU binary, another check (its guest). */
function cacheKey(qemu: string): string {
  let bootId = "";
  try {
    bootId = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    /* no boot id: key on the binary alone */
  }
  const st = fs.statSync(qemu);
  const check = crypto.createHash("sha256").update(longModeRom()).digest("hex");
  return `${bootId}|${fs.realpathSync(qemu)}|${st.size}|${st.mtimeMs}|${check}`;
}

/**
 * KVM only when it actually works: /dev/kvm is usable AND a tiny long-mode guest exits within
 * 3 s. The verdict is cached per host boot, QEMU binary and check guest (a hung check would otherwise cost 3 s
 * on every run); SUPPLY_CHAIN_ACCEL=kvm|tcg overrides it. Only tests pass another `kvmDevice`: it
 * lets them run the check and its cache on hosts without /dev/kvm.
 */
export async function chooseAccel(qemu: string, kvmDevice = "/dev/kvm"): Promise<AccelChoice> {
  const forced = process.env.SUPPLY_CHAIN_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: `forced by SUPPLY_CHAIN_ACCEL=${forced}` };
  if (forced && forced !== "auto") throw new InputError(`SUPPLY_CHAIN_ACCEL must be kvm, tcg or auto (got '${forced}')`);
  try {
    fs.accessSync(kvmDevice, fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: "tcg", reason: `${kvmDevice} is missing or not accessible` };
  }
  const key = cacheKey(qemu);
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile(), "utf8"));
    if (cached.key === key && (cached.accel === "kvm" || cached.accel === "tcg")) {
      return { accel: cached.accel, reason: `${cached.reason} (cached in ${cacheFile()})` };
    }
  } catch {
    /* no cache yet */
  }
  const choice = await kvmCheck(qemu);
  try {
    writeJsonAtomic(cacheFile(), { key, ...choice, checkedAt: new Date().toISOString() });
  } catch {
    /* an unwritable cache only costs time */
  }
  return choice;
}

async function kvmCheck(qemu: string): Promise<AccelChoice> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "supply-chain-kvm-"));
  try {
    const rom = path.join(dir, "long-mode.rom");
    fs.writeFileSync(rom, longModeRom());
    const args = ["-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none", "-m", "16", "-bios", rom];
    args.push("-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot");
    const t0 = performance.now();
    const { code, timedOut, stderr } = await runBounded(qemu, args, KVM_CHECK_TIMEOUT_MS);
    const ms = Math.round(performance.now() - t0);
    // Only the guest's own write gives this status; QEMU's failures (no KVM, a bad option) exit 1.
    if (code === KVM_CHECK_STATUS) return { accel: "kvm", reason: `a long-mode guest under KVM exited in ${ms} ms` };
    if (timedOut) return { accel: "tcg", reason: `a long-mode guest under KVM did not finish within ${KVM_CHECK_TIMEOUT_MS} ms (nested KVM hang)` };
    return { accel: "tcg", reason: `qemu -accel kvm failed (exit ${code}): ${stderr.trim().split("\n").pop()}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a short QEMU in its own process group; the group is SIGKILLed at the time limit. */
async function runBounded(cmd: string, args: string[], ms: number): Promise<{ code: number | null; timedOut: boolean; stderr: string }> {
  const child = await spawnGroup(cmd, args);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill();
  }, ms);
  const { code, stderr } = await child.exited;
  clearTimeout(timer);
  return { code, timedOut, stderr };
}
