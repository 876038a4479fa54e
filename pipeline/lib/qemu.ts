// QEMU for boot-test: what to boot (image layout from docs/contracts.md), which accelerator actually
// works (nested KVM here accepts a guest and then hangs it), the command line, and a QEMU process
// that never outlives the step (own process group, signal/exit handlers, a watchdog on a pipe).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as net from "node:net";
import { spawn, ChildProcess } from "node:child_process";
import { InputError } from "./step";
import { missingTool } from "./proc";
import { writeJsonAtomic } from "./fsx";

export const QEMU = "qemu-system-x86_64";

export type BootImage =
  | { kind: "kernel"; dir: string; kernel: string; initrd: string; cmdline: string }
  | { kind: "iso"; iso: string };

/** Resolves PATH into what to boot, or an exit-2 error that says what is missing. */
export function resolveImage(p: string): BootImage {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw new InputError(`image ${p} does not exist`);
  }
  if (st.isFile()) {
    if (!p.endsWith(".iso")) throw new InputError(`image ${p} is a file but not an .iso (expected an ISO, or a directory with kernel+initrd or iso/*.iso)`);
    return { kind: "iso", iso: path.resolve(p) };
  }
  if (!st.isDirectory()) throw new InputError(`image ${p} is neither a file nor a directory`);
  const kernel = path.join(p, "kernel");
  const initrd = path.join(p, "initrd");
  if (fs.existsSync(kernel) || fs.existsSync(initrd)) {
    for (const f of [kernel, initrd]) if (!isFile(f)) throw new InputError(`image ${p} has no ${path.basename(f)} file (a kernel+initrd image needs both)`);
    const cmdlineFile = path.join(p, "cmdline");
    const cmdline = isFile(cmdlineFile) ? fs.readFileSync(cmdlineFile, "utf8").split("\n")[0].trim() : "";
    return { kind: "kernel", dir: path.resolve(p), kernel: path.resolve(kernel), initrd: path.resolve(initrd), cmdline };
  }
  const isoDir = path.join(p, "iso");
  const isos = fs.existsSync(isoDir) ? fs.readdirSync(isoDir).filter((f) => f.endsWith(".iso")).sort() : [];
  if (isos.length === 1) return { kind: "iso", iso: path.resolve(isoDir, isos[0]) };
  if (isos.length > 1) throw new InputError(`image ${p} has ${isos.length} ISOs in iso/ (${isos.join(", ")}): pass one of them`);
  throw new InputError(`image ${p} is neither a kernel+initrd image (kernel, initrd, optional cmdline) nor an ISO directory (iso/*.iso)`);
}

function isFile(f: string): boolean {
  try {
    return fs.statSync(f).isFile();
  } catch {
    return false;
  }
}

/** Absolute path of a tool on PATH (no shell: PATH may not even contain one), or a missing-tool error. */
export function findTool(tool: string, envPath = process.env.PATH ?? ""): string {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, tool);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      /* next */
    }
  }
  throw missingTool(tool);
}

// ---------------------------------------------------------------------------------------------
// Accelerator

export type Accel = "kvm" | "tcg";

/**
 * A 64 KiB firmware image for the KVM check: from the reset vector it builds identity page tables,
 * enters 64-bit long mode and writes to isa-debug-exit (QEMU exits with status 1). Nested KVM on
 * this kind of host runs real mode fine but hangs the moment a guest enters long mode (the Linux
 * kernel stopped right after "Probing EDD"), so this is what the check must exercise; no SeaBIOS
 * either, which alone took 6 s under nested KVM. Source (GNU as, `as --32`, `ld -Ttext 0 --oformat binary`):
 *   cli; mov $0xf000,%ax; mov %ax,%ds; xor %ax,%ax; mov %ax,%es; mov $0x1000,%di; mov $0x3000,%cx; rep stosb
 *   movw $0x2003,%es:0x1000; movw $0x3003,%es:0x2000; movw $0x83,%es:0x3000   # PML4 -> PDPT -> 2 MiB page
 *   lgdtl gdtr; cr4 |= PAE; cr3 = 0x1000; EFER |= LME; cr0 |= PG|PE; ljmpl $0x08,$(long+0xf0000)
 *   long: mov $0,%al; out %al,$0xf4; hlt
 *   gdt: .quad 0, 0x00209A0000000000; gdtr: .word 15; .long gdt+0xf0000
 *   at 0xfff0 (reset vector): ljmp $0xf000,$0
 */
const LONG_MODE_ROM_CODE =
  "fab800f08ed831c08ec0bf0010b90030f3aa26c7060010032026c7060020033026c70600308300660f011680000f20e0" +
  "6683c8200f22e066b8001000000f22d866b9800000c00f32660d000100000f300f20c0660d010000800f22c066ea6400" +
  "0f000800b000e6f4f4ebfd8db4000090000000000000000000000000009a20000f0070000f00";
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

/** Under working KVM the check takes ~0.2 s; a hung one is killed after this. */
const KVM_CHECK_TIMEOUT_MS = 3000;

function cacheFile(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(base, "supply-chain", "accel.json");
}

/** What makes a cached verdict stale: another boot, another QEMU binary. */
function cacheKey(qemu: string): string {
  let bootId = "";
  try {
    bootId = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    /* no boot id: key on the binary alone */
  }
  const st = fs.statSync(qemu);
  return `${bootId}|${fs.realpathSync(qemu)}|${st.size}|${st.mtimeMs}`;
}

/**
 * KVM only when it actually works: /dev/kvm is usable AND a tiny long-mode guest exits within
 * 3 s. The verdict is cached per host boot and QEMU binary (a hung check would otherwise cost 3 s
 * on every run); SUPPLY_CHAIN_ACCEL=kvm|tcg overrides it.
 */
export async function chooseAccel(qemu: string): Promise<AccelChoice> {
  const forced = process.env.SUPPLY_CHAIN_ACCEL;
  if (forced === "kvm" || forced === "tcg") return { accel: forced, reason: `forced by SUPPLY_CHAIN_ACCEL=${forced}` };
  if (forced && forced !== "auto") throw new InputError(`SUPPLY_CHAIN_ACCEL must be kvm, tcg or auto (got '${forced}')`);
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: "tcg", reason: "/dev/kvm is missing or not accessible" };
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
    // isa-debug-exit turns the guest's 0 into exit status (0 << 1) | 1 = 1.
    if (code === 1) return { accel: "kvm", reason: `a long-mode guest under KVM exited in ${ms} ms` };
    if (timedOut) return { accel: "tcg", reason: `a long-mode guest under KVM did not finish within ${KVM_CHECK_TIMEOUT_MS} ms (nested KVM hang)` };
    return { accel: "tcg", reason: `qemu -accel kvm failed (exit ${code}): ${stderr.trim().split("\n").pop()}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a short QEMU in its own process group; the group is SIGKILLed at the time limit. */
function runBounded(cmd: string, args: string[], ms: number): Promise<{ code: number | null; timedOut: boolean; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    const guard = guardProcessGroup(child);
    let stderr = "";
    let timedOut = false;
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      guard.kill();
    }, ms);
    child.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      guard.release();
      reject(e.code === "ENOENT" ? missingTool(cmd) : e);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      guard.release();
      resolve({ code, timedOut, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Process lifetime: the group dies with us

const liveGroups = new Set<number>();
let handlersInstalled = false;

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    /* already gone */
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  // 'exit' also runs after an uncaught exception; process.kill is synchronous, so this is enough.
  process.on("exit", () => {
    for (const g of liveGroups) killGroup(g);
  });
  for (const [sig, num] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const) {
    process.on(sig, () => {
      for (const g of liveGroups) killGroup(g);
      process.stderr.write(`supply-chain: ${sig}: QEMU stopped\n`);
      process.exit(128 + num);
    });
  }
}

export interface GroupGuard {
  kill(): void;
  /** The child is gone: forget it and stop its watchdog. */
  release(): void;
}

/**
 * Ties a detached child's process group to our life. Exit and signal handlers cover normal ends;
 * for the ones no handler sees (SIGKILL, OOM killer) a watchdog shell blocks reading a pipe whose
 * only writer is this process: when we die the pipe closes, `read` returns, the group is killed.
 */
export function guardProcessGroup(child: ChildProcess): GroupGuard {
  installHandlers();
  const pgid = child.pid;
  if (pgid === undefined) return { kill() {}, release() {} };
  liveGroups.add(pgid);
  // `kill -s KILL -- -PGID` is the spelling dash and bash both accept (dash rejects `kill -KILL -- -PGID`).
  const watchdog = spawn("/bin/sh", ["-c", 'read _ ; kill -s KILL -- "-$1"', "sc-qemu-watchdog", String(pgid)], {
    detached: true, // not in our group: a Ctrl-C to the terminal must not kill it before it acts
    stdio: ["pipe", "ignore", "ignore"],
  });
  watchdog.on("error", () => undefined); // no /bin/sh: the handlers still cover normal ends
  watchdog.stdin!.on("error", () => undefined);
  watchdog.unref();
  (watchdog.stdin as any)?.unref?.();
  let released = false;
  return {
    kill() {
      killGroup(pgid);
    },
    release() {
      if (released) return;
      released = true;
      liveGroups.delete(pgid);
      // Stop the watchdog before it could ever act on a recycled process group id.
      try {
        watchdog.kill("SIGKILL");
      } catch {
        /* gone */
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The VM

export interface Forward {
  guest: number;
  host: number;
}

export interface VmOptions {
  image: BootImage;
  accel: Accel;
  memoryMiB: number;
  forwards: Forward[];
  serialLog: string;
  pidFile: string;
}

/** The QEMU arguments for one boot; the benchmark's bare loop uses exactly these. */
export function qemuArgs(o: VmOptions): string[] {
  const hostfwd = o.forwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.host}-:${f.guest}`).join("");
  const args = ["-accel", o.accel, "-nodefaults", "-no-user-config", "-m", String(o.memoryMiB)];
  args.push("-display", "none", "-serial", `file:${o.serialLog}`, "-pidfile", o.pidFile, "-no-reboot");
  // restrict=on: the guest reaches nothing outside; the host port forwards still work.
  args.push("-netdev", `user,id=net0,restrict=on${hostfwd}`, "-device", "virtio-net-pci,netdev=net0");
  if (o.image.kind === "kernel") {
    args.push("-kernel", o.image.kernel, "-initrd", o.image.initrd, "-append", `console=ttyS0 ${o.image.cmdline}`.trim());
  } else {
    args.push("-cdrom", o.image.iso, "-boot", "d");
  }
  return args;
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a server started next (QEMU's forwards,
 * test servers). Taken below the kernel's ephemeral range: a port the OS hands out for bind(0)
 * or as an outgoing connection's source port can be taken again before the server binds it (seen
 * here as PostgreSQL's "Address already in use"); ports below the range never are.
 */
export async function freeHostPort(): Promise<number> {
  const low = ephemeralLow();
  for (let attempt = 0; attempt < 50 && low > 10000; attempt++) {
    const port = 10000 + Math.floor(Math.random() * (low - 10000));
    if (await canBind(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function ephemeralLow(): number {
  try {
    return Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export interface RunningVm {
  pid: number;
  /** Resolves when QEMU exits, with its status and stderr. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** SIGKILLs the group and waits until QEMU is reaped. */
  stop(): Promise<void>;
}

export function startVm(qemu: string, args: string[]): Promise<RunningVm> {
  return new Promise((resolve, reject) => {
    const child = spawn(qemu, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    const guard = guardProcessGroup(child);
    let stderr = "";
    child.stderr!.on("data", (d) => {
      stderr += d;
      if (stderr.length > 65536) stderr = stderr.slice(-65536);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((res) => {
      child.on("close", (code, signal) => {
        guard.release();
        res({ code, signal, stderr });
      });
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      guard.release();
      reject(e.code === "ENOENT" ? missingTool(qemu) : e);
    });
    child.on("spawn", () =>
      resolve({
        pid: child.pid!,
        exited,
        async stop() {
          guard.kill();
          await exited;
        },
      }),
    );
  });
}
