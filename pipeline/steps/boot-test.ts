// boot-test: boots the shipped artifact itself (kernel+initrd dir or ISO) in QEMU and probes its
// services through host port forwards. docs/boot-test.md documents the result and the probe spec.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { writeJsonAtomic } from "../lib/files";
import { findTool } from "../lib/proc";
import { freeHostPort } from "../lib/ports";
import { Accel, chooseAccel } from "../lib/accel";
import { BootImage, resolveImage } from "../lib/image-layout";
import { Forward, qemuArgs, QEMU, startVm, VmExit } from "../lib/qemu";
import { guestPorts, loadProbeSpec, newToken, ProbeContext, ProbeResult, ProbeSpec, runProbe } from "../lib/probes";

export interface BootTestResult {
  passed: boolean;
  accel: Accel;
  /** Seconds from QEMU's start until the first probe passed; null when none did. */
  bootSeconds: number | null;
  probes: ProbeResult[];
  serialLog: string;
  /** Why this accelerator (KVM check verdict, or forced). */
  accelReason: string;
  /** QEMU's pid (from its -pidfile); the process is gone when the step returns. */
  qemuPid: number;
  /** This result, also kept next to the serial log. */
  resultFile: string;
}

const NAME = "boot-test";
const TAIL_LINES = 40;

export const step: StepDefinition<BootTestResult> = {
  name: NAME,
  summary: "boot the image (kernel+initrd dir or ISO) in QEMU and probe its services",
  options: {
    image: { type: "string", required: true, description: "kernel+initrd directory (kernel, initrd, cmdline), .iso file, or directory with iso/*.iso" },
    probes: { type: "string", required: true, description: "probe spec, YAML or JSON (docs/boot-test.md)" },
    timeout: { type: "string", default: "300", description: "boot deadline in seconds: every probe retries until then" },
    memory: { type: "string", default: "1024", description: "guest memory in MiB" },
    out: { type: "string", description: "directory for serial.log, qemu.pid and result.json (default: a new temp dir)" },
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const { timeoutS, memoryMiB } = limits(values);
    const image = resolveImage(values.image);
    const spec = loadProbeSpec(values.probes);
    const qemu = findTool(QEMU);
    const { accel, reason: accelReason } = await chooseAccel(qemu);
    log(NAME, `accelerator ${accel}: ${accelReason}`);
    const files = runFiles(values.out);

    const boot = await bootAndProbe({ qemu, image, accel, memoryMiB, spec, deadlineMs: timeoutS * 1000, token: newToken(), files });
    const passed = boot.results.every((r) => r.ok);
    // QEMU ending by itself with an error status is QEMU refusing to run here (no memory for the guest, a
    // port or file it cannot open): the machine, exit 2, and no result a verification could sign. A guest
    // cannot choose QEMU's status: it powers off or reboots (-no-reboot) with status 0.
    if (!passed && boot.exit.signal === null && boot.exit.code !== 0 && boot.exit.code !== null) {
      throw new InputError(`QEMU could not run ${values.image}: ${lastLine(boot.exit.stderr) || "no message"} (exit ${boot.exit.code}; serial log ${files.serialLog})`);
    }

    const firstPass = boot.results.find((r) => r.ok);
    const result: BootTestResult = {
      passed,
      accel,
      bootSeconds: firstPass === undefined ? null : Math.round(firstPass.ms / 100) / 10,
      probes: boot.results,
      serialLog: files.serialLog,
      accelReason,
      qemuPid: readPid(files.pidFile) ?? boot.vmPid,
      resultFile: files.resultFile,
    };
    writeJsonAtomic(files.resultFile, result);
    if (!result.passed) throw failure(result, boot.exit);
    return result;
  },
};

function limits(values: Record<string, any>): { timeoutS: number; memoryMiB: number } {
  const timeoutS = Number(values.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new InputError(`--timeout must be a positive number of seconds (got '${values.timeout}')`);
  const memoryMiB = Number(values.memory);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 32) throw new InputError(`--memory must be an integer number of MiB, at least 32 (got '${values.memory}')`);
  return { timeoutS, memoryMiB };
}

interface RunFiles {
  serialLog: string;
  pidFile: string;
  resultFile: string;
}

/** The run directory (--out, or a new temp dir), without a previous run's files. */
function runFiles(out: string | undefined): RunFiles {
  const outDir = out ? path.resolve(out) : fs.mkdtempSync(path.join(os.tmpdir(), "supply-chain-boot-"));
  fs.mkdirSync(outDir, { recursive: true });
  const files = { serialLog: path.join(outDir, "serial.log"), pidFile: path.join(outDir, "qemu.pid"), resultFile: path.join(outDir, "result.json") };
  for (const f of Object.values(files)) fs.rmSync(f, { force: true });
  return files;
}

interface BootPlan {
  qemu: string;
  image: BootImage;
  accel: Accel;
  memoryMiB: number;
  spec: ProbeSpec;
  /** From QEMU's start. */
  deadlineMs: number;
  token: string;
  files: RunFiles;
}

interface Boot {
  vmPid: number;
  results: ProbeResult[];
  /** How QEMU ended (SIGKILL when the step stopped it). */
  exit: VmExit;
}

const BOOT_TRIES = 3;

/** Boots and probes; a boot whose forwarded port was taken meanwhile is retried with fresh ports. */
async function bootAndProbe(plan: BootPlan): Promise<Boot> {
  for (let tries = 1; ; tries++) {
    const boot = await bootOnce(plan, await freeForwards(guestPorts(plan.spec)));
    // A free port can be taken between our check and QEMU's bind.
    if (tries < BOOT_TRIES && /host forwarding rule/i.test(boot.exit.stderr)) {
      log(NAME, `a forwarded port was taken (${lastLine(boot.exit.stderr)}); retrying with new ports`);
      continue;
    }
    return boot;
  }
}

function freeForwards(guestPorts: number[]): Promise<Forward[]> {
  return Promise.all(guestPorts.map(async (guest) => ({ guest, host: await freeHostPort() })));
}

/** One QEMU: start it, run the probes until they are decided or it exits, stop it. */
async function bootOnce(plan: BootPlan, forwards: Forward[]): Promise<Boot> {
  const { serialLog, pidFile } = plan.files;
  const args = qemuArgs({ image: plan.image, accel: plan.accel, memoryMiB: plan.memoryMiB, forwards, serialLog, pidFile });
  log(NAME, `${QEMU} ${args.map((a) => (/[\s,]/.test(a) ? JSON.stringify(a) : a)).join(" ")}`);
  const startedAt = performance.now();
  const vm = await startVm(plan.qemu, args);
  log(NAME, `QEMU pid ${vm.pid}; guest ports ${forwards.map((f) => `${f.guest}->127.0.0.1:${f.host}`).join(", ")}; serial log ${serialLog}`);
  const guestGone = new AbortController();
  vm.exited.then((e) => guestGone.abort(`QEMU exited (${e.signal ?? `status ${e.code}`}${e.stderr.trim() ? `: ${lastLine(e.stderr)}` : ""})`));
  let results: ProbeResult[];
  try {
    results = await probeInOrder(plan.spec, {
      portMap: new Map(forwards.map((f) => [f.guest, f.host])),
      token: plan.token,
      startedAt,
      deadline: startedAt + plan.deadlineMs,
      signal: guestGone.signal,
    });
  } finally {
    await vm.stop();
  }
  return { vmPid: vm.pid, results, exit: await vm.exited };
}

/** In order: probes that write (e.g. the newest-first check) must not interleave. */
async function probeInOrder(spec: ProbeSpec, ctx: ProbeContext): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  for (const probe of spec.probes) {
    const r = await runProbe(probe, ctx);
    log(NAME, `${r.ok ? "PASS" : "FAIL"} ${r.name} (${r.ms} ms): ${r.detail}`);
    results.push(r);
  }
  return results;
}

/** Exit 1: the first failed probe, the others' names, an early QEMU exit, the serial log's tail. */
function failure(result: BootTestResult, exit: VmExit): CheckFailed {
  const failed = result.probes.filter((r) => !r.ok);
  const first = failed[0];
  const more = failed.length > 1 ? ` (and ${failed.length - 1} more failed: ${failed.slice(1).map((r) => JSON.stringify(r.name)).join(", ")})` : "";
  const exitNote = !exit.signal ? ` QEMU exited early with status ${exit.code}${exit.stderr.trim() ? `: ${lastLine(exit.stderr)}` : ""}.` : "";
  return new CheckFailed(
    `probe ${JSON.stringify(first.name)} failed: ${first.detail}${more}.${exitNote}\n` +
      `last ${TAIL_LINES} lines of the serial log ${result.serialLog}:\n${tail(result.serialLog, TAIL_LINES)}`,
    result,
  );
}

function lastLine(s: string): string {
  return s.trim().split("\n").pop() ?? "";
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined; // QEMU removes its pidfile on a clean exit; we kill it, so it stays
  }
}

export function tail(file: string, n: number): string {
  let text = "";
  try {
    text = fs.readFileSync(file, "latin1");
  } catch {
    return "(no serial log)";
  }
  // Kernel consoles emit \r\n; bare \r and other control bytes would garble a terminal.
  const lines = text.replace(/\r\n?/g, "\n").replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "").trimEnd().split("\n");
  return text.trim() ? lines.slice(-n).join("\n") : "(serial log is empty: nothing reached the console)";
}
