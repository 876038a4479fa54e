// The VM for boot-test: QEMU's command line for one boot (docs/boot-test.md) and the running VM.
// What to boot is image-layout.ts, the accelerator accel.ts, the VM's lifetime process-group.ts.
import { Accel } from "./accel";
import { BootImage } from "./image-layout";
import { GroupExit, spawnGroup } from "./process-group";

export const QEMU = "qemu-system-x86_64";

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
    // no_timer_check: under emulation on a busy host, Linux's early check of the IO-APIC timer can see
    // no ticks in time and panic ("IO-APIC + timer doesn't work!"): seen once here in a CI run at load 9
    // (a stack trace at 0.064 s, the guest gone). Direct kernel boots under QEMU commonly pass it.
    args.push("-kernel", o.image.kernel, "-initrd", o.image.initrd, "-append", `console=ttyS0 no_timer_check ${o.image.cmdline}`.trim());
  } else {
    args.push("-cdrom", o.image.iso, "-boot", "d");
  }
  return args;
}

export type VmExit = GroupExit;

export interface RunningVm {
  pid: number;
  /** Resolves when QEMU exits, with its status and stderr. */
  exited: Promise<VmExit>;
  /** SIGKILLs the group and waits until QEMU is reaped. */
  stop(): Promise<void>;
}

/** Starts QEMU in its own guarded process group: it never outlives the step. */
export async function startVm(qemu: string, args: string[]): Promise<RunningVm> {
  const vm = await spawnGroup(qemu, args);
  return {
    pid: vm.pid,
    exited: vm.exited,
    async stop() {
      vm.kill();
      await vm.exited;
    },
  };
}
