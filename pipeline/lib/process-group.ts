// A child in its own process group (session) that never outlives the step: killed on exit (also
// after an uncaught exception), on SIGINT/SIGTERM/SIGHUP, and by a watchdog when the step dies in
// a way no handler sees (SIGKILL, the OOM killer). QEMU runs this way (docs/boot-test.md, "QEMU
// never outlives the step"); lifetime.ts stops the step itself when its starter is gone.
import { spawn, ChildProcess } from "node:child_process";
import { missingTool } from "./proc";

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

export interface GroupExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last 64 KiB of its stderr. */
  stderr: string;
}

export interface GroupProcess {
  pid: number;
  /** Resolves when the process has exited (and is reaped). */
  exited: Promise<GroupExit>;
  /** SIGKILLs the whole group. */
  kill(): void;
}

const STDERR_KEEP = 65536;

/**
 * Starts `cmd` in its own guarded process group; resolves once it runs. A missing binary is the
 * missing-tool error.
 */
export function spawnGroup(cmd: string, args: string[]): Promise<GroupProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    const guard = guardProcessGroup(child);
    let stderr = "";
    child.stderr!.on("data", (d) => {
      stderr += d;
      if (stderr.length > STDERR_KEEP) stderr = stderr.slice(-STDERR_KEEP);
    });
    const exited = new Promise<GroupExit>((res) => {
      child.on("close", (code, signal) => {
        guard.release();
        res({ code, signal, stderr });
      });
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      guard.release();
      reject(e.code === "ENOENT" ? missingTool(cmd) : e);
    });
    child.on("spawn", () => resolve({ pid: child.pid!, exited, kill: () => guard.kill() }));
  });
}
