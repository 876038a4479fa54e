// boot-test: boots the shipped artifact itself (kernel+initrd dir or ISO) in QEMU and probes its
// services through host port forwards. docs/boot-test.md documents the result and the probe spec.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { writeJsonAtomic } from "../lib/fsx";
import { findTool } from "../lib/proc";
import { freeHostPort } from "../lib/ports";
import { resolveImage } from "../lib/image-layout";
import { Accel, chooseAccel } from "../lib/accel";
import { Forward, qemuArgs, QEMU, startVm, RunningVm } from "../lib/qemu";
import { guestPorts, loadProbeSpec, newToken, ProbeResult, runProbe } from "../lib/probes";

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
    const timeoutS = Number(values.timeout);
    if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new InputError(`--timeout must be a positive number of seconds (got '${values.timeout}')`);
    const memory = Number(values.memory);
    if (!Number.isInteger(memory) || memory < 32) throw new InputError(`--memory must be an integer number of MiB, at least 32 (got '${values.memory}')`);
    const image = resolveImage(values.image);
    const spec = loadProbeSpec(values.probes);
    const qemu = findTool(QEMU);

    const { accel, reason: accelReason } = await chooseAccel(qemu);
    log(NAME, `accelerator ${accel}: ${accelReason}`);

    const outDir = values.out ? path.resolve(values.out) : fs.mkdtempSync(path.join(os.tmpdir(), "supply-chain-boot-"));
    fs.mkdirSync(outDir, { recursive: true });
    const serialLog = path.join(outDir, "serial.log");
    const pidFile = path.join(outDir, "qemu.pid");
    const resultFile = path.join(outDir, "result.json");
    for (const f of [serialLog, pidFile, resultFile]) fs.rmSync(f, { force: true });

    const token = newToken();
    const ports = guestPorts(spec);
    const deadlineMs = timeoutS * 1000;

    const results: ProbeResult[] = [];
    let vm: RunningVm;
    let forwards: Forward[];
    let startedAt: number;
    let firstPassMs: number | null;
    let qemuExit: { code: number | null; signal: NodeJS.Signals | null; stderr: string } | undefined;
    for (let tries = 1; ; tries++) {
      forwards = await Promise.all(ports.map(async (guest) => ({ guest, host: await freeHostPort() })));
      const args = qemuArgs({ image, accel, memoryMiB: memory, forwards, serialLog, pidFile });
      log(NAME, `${QEMU} ${args.map((a) => (/[\s,]/.test(a) ? JSON.stringify(a) : a)).join(" ")}`);
      startedAt = performance.now();
      vm = await startVm(qemu, args);
      log(NAME, `QEMU pid ${vm.pid}; guest ports ${forwards.map((f) => `${f.guest}->127.0.0.1:${f.host}`).join(", ")}; serial log ${serialLog}`);

      const guestGone = new AbortController();
      qemuExit = undefined;
      vm.exited.then((e) => {
        qemuExit = e;
        guestGone.abort(`QEMU exited (${e.signal ?? `status ${e.code}`}${e.stderr.trim() ? `: ${lastLine(e.stderr)}` : ""})`);
      });
      results.length = 0;
      firstPassMs = null;
      try {
        // In order: probes that write (e.g. the newest-first check) must not interleave.
        for (const probe of spec.probes) {
          const r = await runProbe(probe, {
            portMap: new Map(forwards.map((f) => [f.guest, f.host])),
            token,
            startedAt,
            deadline: startedAt + deadlineMs,
            signal: guestGone.signal,
          });
          if (r.ok && firstPassMs === null) firstPassMs = r.ms;
          log(NAME, `${r.ok ? "PASS" : "FAIL"} ${r.name} (${r.ms} ms): ${r.detail}`);
          results.push(r);
        }
      } finally {
        await vm.stop();
      }
      // A free port can be taken between our check and QEMU's bind: retry with fresh ports.
      const exit = qemuExit as { stderr: string } | undefined;
      if (exit && /host forwarding rule/i.test(exit.stderr) && tries < 3) {
        log(NAME, `a forwarded port was taken (${lastLine(exit.stderr)}); retrying with new ports`);
        continue;
      }
      break;
    }

    const result: BootTestResult = {
      passed: results.every((r) => r.ok),
      accel,
      bootSeconds: firstPassMs === null ? null : Math.round(firstPassMs / 100) / 10,
      probes: results,
      serialLog,
      accelReason,
      qemuPid: readPid(pidFile) ?? vm.pid,
      resultFile,
    };
    writeJsonAtomic(resultFile, result);
    if (!result.passed) {
      const failed = results.filter((r) => !r.ok);
      const first = failed[0];
      const more = failed.length > 1 ? ` (and ${failed.length - 1} more failed: ${failed.slice(1).map((r) => JSON.stringify(r.name)).join(", ")})` : "";
      const exit = qemuExit as { code: number | null; signal: NodeJS.Signals | null; stderr: string } | undefined;
      const exitNote = exit && !exit.signal ? ` QEMU exited early with status ${exit.code}${exit.stderr.trim() ? `: ${lastLine(exit.stderr)}` : ""}.` : "";
      throw new CheckFailed(
        `probe ${JSON.stringify(first.name)} failed: ${first.detail}${more}.${exitNote}\n` +
          `last ${TAIL_LINES} lines of the serial log ${serialLog}:\n${tail(serialLog, TAIL_LINES)}`,
        result,
      );
    }
    return result;
  },
};

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
