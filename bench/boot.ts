// npm run bench:boot — what boot-test costs over the bare minimum, measured in one run:
// (a) the boot-test step on the demo image, as a user runs it: `node bin/supply-chain.js
//     boot-test` (CLI start-up included; its module cache is warmed by the untimed build and --help runs);
// (b) a bare loop: the same QEMU command line, started directly, polling the first probe's port
//     until the service answers, then killing QEMU.
// Runs alternate a, b, a, b, ... so both see the same machine load; medians. Last line is JSON.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { chooseAccel } from "../pipeline/lib/accel";
import { resolveImage } from "../pipeline/lib/image-layout";
import { freeHostPort } from "../pipeline/lib/ports";
import { findTool } from "../pipeline/lib/proc";
import { qemuArgs, QEMU, startVm } from "../pipeline/lib/qemu";
import { guestPorts, loadProbeSpec } from "../pipeline/lib/probes";

const ROOT = path.resolve(__dirname, "..");
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
// The demo stack's world by default, the system image (BENCH_WORLD=minimal: the small busybox one).
const WORLD = process.env.BENCH_WORLD ?? "system";

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; seconds: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr, seconds: (performance.now() - t0) / 1000 }));
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const r2 = (x: number) => Math.round(x * 100) / 100;

/** One attempt of the bare loop: connect, send a line, wait for any reply line. */
function replies(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on("connect", () => sock.write("GET /healthz HTTP/1.0\r\n\r\n"));
    sock.on("data", (d) => d.toString().includes("\n") && done(true));
    sock.on("end", () => done(false));
    sock.on("error", () => done(false));
  });
}

async function bare(image: string, probesFile: string, accel: "kvm" | "tcg", dir: string): Promise<number> {
  const spec = loadProbeSpec(probesFile);
  const forwards = await Promise.all(guestPorts(spec).map(async (guest) => ({ guest, host: await freeHostPort() })));
  const args = qemuArgs({
    image: resolveImage(image),
    accel,
    memoryMiB: 1024,
    forwards,
    serialLog: path.join(dir, "bare-serial.log"),
    pidFile: path.join(dir, "bare.pid"),
  });
  const t0 = performance.now();
  const vm = await startVm(findTool(QEMU), args);
  // The first probe's port (the step's bootSeconds is its first pass too). A line sent to the
  // writer or an HTTP request to the reader both get a reply line once the service is up.
  const port = forwards[0].host;
  const deadline = t0 + 300_000;
  let up = false;
  while (!up && performance.now() < deadline) {
    // A fresh connection at least every 1.1 s: one made before the guest's network is up only
    // gets through at user-mode networking's next SYN retry, seconds later.
    up = await replies(port, 1000);
    if (!up) await new Promise((r) => setTimeout(r, 100));
  }
  await vm.stop();
  if (!up) throw new Error("bare loop: the service never answered");
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "bench-boot-"));
  try {
    if (WORLD !== "system" && WORLD !== "minimal") throw new Error(`BENCH_WORLD must be system or minimal (got '${WORLD}')`);
    const world = await cli(["demo-world", ...(WORLD === "system" ? ["--full"] : []), path.join(work, "world")]);
    if (world.code !== 0) throw new Error(`demo-world failed: ${world.stderr}`);
    const made = JSON.parse(world.stdout);
    const [attribute, probes] = WORLD === "system" ? [made.systemAttribute, made.systemProbes] : [made.attribute, made.probes];
    const file = made.file;
    const built = await cli(["build", "--file", file, "--attribute", attribute]);
    if (built.code !== 0) throw new Error(`build failed: ${built.stderr}`);
    const image = JSON.parse(built.stdout).outPath;
    const { accel, reason } = await chooseAccel(findTool(QEMU));
    console.error(`bench:boot: image ${image}, accelerator ${accel} (${reason})`);

    // Start-up alone: the part of (a) that is not QEMU at all.
    const startup: number[] = [];
    for (let i = 0; i < 3; i++) startup.push((await cli(["boot-test", "--help"])).seconds);

    const step: number[] = [];
    const bareRuns: number[] = [];
    const bootSeconds: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await cli(["boot-test", "--image", image, "--probes", probes, "--timeout", "300", "--out", path.join(work, `step-${i}`)]);
      if (r.code !== 0) throw new Error(`boot-test failed: ${r.stderr.trim().split("\n").slice(-5).join("\n")}`);
      const result = JSON.parse(r.stdout);
      if (result.accel !== accel) throw new Error(`boot-test used ${result.accel}, the bare loop ${accel}`);
      step.push(r.seconds);
      bootSeconds.push(result.bootSeconds);
      const b = await bare(image, probes, accel, work);
      bareRuns.push(b);
      console.error(`bench:boot: run ${i + 1}/${RUNS}: step ${r2(r.seconds)} s (bootSeconds ${result.bootSeconds}), bare ${r2(b)} s`);
    }
    const stepSeconds = median(step);
    const bareSeconds = median(bareRuns);
    console.error(`bench:boot: CLI start-up (boot-test --help): median ${r2(median(startup))} s of ${startup.map(r2).join(", ")}`);
    console.error(`bench:boot: step runs ${step.map(r2).join(", ")}; bare runs ${bareRuns.map(r2).join(", ")}`);
    console.log(JSON.stringify({ stepSeconds: r2(stepSeconds), bareSeconds: r2(bareSeconds), ratio: r2(stepSeconds / bareSeconds), startupSeconds: r2(median(startup)), accel, world: WORLD, runs: RUNS }));
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench:boot: ${e.message}`);
  process.exit(1);
});
