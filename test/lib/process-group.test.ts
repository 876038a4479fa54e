// guardProcessGroup (pipeline/lib/process-group.ts): a child in its own process group dies with
// its parent however the parent ends, checked by the child's pid.
import test from "ava";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

for (const [how, code] of [
  ["an uncaught exception", "setTimeout(() => { throw new Error('boom'); }, 50);"],
  ["an unhandled promise rejection", "setTimeout(() => Promise.reject(new Error('boom')), 50);"],
  ["SIGKILL (the watchdog acts)", "setTimeout(() => process.kill(process.pid, 'SIGKILL'), 50);"],
] as const) {
  test(`a guarded process group dies with its parent on ${how}`, async (t) => {
    // The parent: starts a long sleep in its own group under guardProcessGroup, says its pid, dies.
    const script = [
      "const { spawn } = require('node:child_process');",
      `const { guardProcessGroup } = require(${JSON.stringify(path.join(__dirname, "..", "..", "pipeline", "lib", "process-group"))});`,
      "const child = spawn('/bin/sleep', ['300'], { detached: true, stdio: 'ignore' });",
      "guardProcessGroup(child);",
      "child.on('spawn', () => { process.stdout.write(String(child.pid) + '\\n'); " + code + " });",
    ].join("\n");
    const parent = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "-e", script], { cwd: path.join(__dirname, "..", ".."), stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    parent.stdout.on("data", (d) => (out += d));
    await new Promise((r) => parent.on("close", r));
    const pid = Number(out.trim());
    t.true(pid > 0, `no pid from the parent: ${JSON.stringify(out)}`);
    const end = Date.now() + 5000;
    while (Date.now() < end && alive(pid)) await new Promise((r) => setTimeout(r, 50));
    t.false(alive(pid), `the guarded sleep ${pid} outlived its parent`);
  });
}

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
