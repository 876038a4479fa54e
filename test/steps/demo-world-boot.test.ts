// The demo image really boots (QEMU, TCG) and its two services behave as docs/contracts.md "Demo-world
// services" says. The boot-test step is tested elsewhere; this checks the image itself.
import test from "ava";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../../support/ports";
import { cli } from "./demo-world.helpers";

/** Sends lines on one connection and collects as many reply lines. */
function tcpLines(port: number, lines: string[], timeoutMs = 5000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timeout; got ${JSON.stringify(buf)}`));
    }, timeoutMs);
    sock.on("connect", () => sock.write(lines.map((l) => l + "\n").join("")));
    sock.on("data", (d) => {
      buf += d;
      const got = buf.split("\n").filter(Boolean);
      if (got.length >= lines.length) {
        clearTimeout(timer);
        sock.end();
        resolve(got);
      }
    });
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function httpGet(port: number, p: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text() };
}

test("the demo image boots under QEMU and serves the writer (1300) and reader (8000) as the contract says", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "demo-boot-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const world = await cli(["demo-world", path.join(dir, "world")]);
  t.is(world.code, 0, world.stderr);
  const built = await cli(["build", "--file", world.json.file, "--attribute", world.json.attribute, "--offline"]);
  t.is(built.code, 0, built.stderr);
  const image = built.json.artifact;

  const [httpPort, tcpPort] = [await freePort(), await freePort()];
  const serial = path.join(dir, "serial.log");
  const cmdline = fs.readFileSync(path.join(image, "cmdline"), "utf8").trim();
  const qemu = spawn(
    "qemu-system-x86_64",
    [
      "-accel", "tcg", "-m", "512", "-no-reboot",
      "-kernel", path.join(image, "kernel"), "-initrd", path.join(image, "initrd"),
      "-append", `console=ttyS0 no_timer_check ${cmdline}`,
      "-display", "none", "-serial", `file:${serial}`,
      "-netdev", `user,id=n,hostfwd=tcp:127.0.0.1:${httpPort}-:8000,hostfwd=tcp:127.0.0.1:${tcpPort}-:1300`,
      "-device", "virtio-net-pci,netdev=n",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let qemuErr = "";
  qemu.stderr.on("data", (d) => (qemuErr += d));
  const exited = new Promise<void>((resolve) => qemu.on("close", () => resolve()));
  t.teardown(async () => {
    qemu.kill("SIGKILL");
    await exited;
  });
  qemu.on("error", (e) => t.fail(`cannot start qemu-system-x86_64 (install qemu-system-x86): ${e.message}`));

  const deadline = Date.now() + 120_000;
  let health: { status: number; body: string } | undefined;
  while (Date.now() < deadline && qemu.exitCode === null) {
    health = await httpGet(httpPort, "/healthz").catch(() => undefined);
    if (health) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const log = () => (fs.existsSync(serial) ? fs.readFileSync(serial, "utf8") : "") + qemuErr;
  t.is(health?.status, 200, `no healthy reader before the deadline; serial log:\n${log()}`);
  if (health?.status !== 200) return;

  // Two lines on one connection: two rows, ids in order.
  const first = await tcpLines(tcpPort, ["alpha one", "beta two"]);
  t.deepEqual(first, ["OK 1", "OK 2"]);
  // Concurrent writers never share an id.
  const many = await Promise.all([1, 2, 3, 4].map((i) => tcpLines(tcpPort, [`gamma ${i}`])));
  const ids = many.map((r) => Number(/^OK (\d+)$/.exec(r[0])![1]));
  t.deepEqual([...ids].sort(), [3, 4, 5, 6]);
  const last = await tcpLines(tcpPort, ["omega last"]);
  t.deepEqual(last, ["OK 7"]);

  const page = await httpGet(httpPort, "/");
  t.is(page.status, 200);
  const rows = page.body.trim().split("\n");
  t.is(rows.length, 7);
  for (const row of rows) t.regex(row, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \S/);
  t.regex(rows[0], /: omega last$/);
  t.regex(rows[5], /: beta two$/);
  t.regex(rows[6], /: alpha one$/);
  t.is((await httpGet(httpPort, "/no-such-page")).status, 404);

  const console = log();
  t.regex(console, /demo-init: loaded virtio_net/);
  t.regex(console, /demo-world: ready/);
  t.regex(console, /demo-writer: row 7/);
});
