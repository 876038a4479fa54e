// What keeps a step honest about the processes around it:
// - a lock on the directory it writes, so a second run of a step on the same directory is refused
//   ("in use by pid N") instead of deleting the first one's live files; a lock whose process is
//   gone (killed, machine rebooted) is stale and taken over;
// - temp files a killed run left there (`.<name>.<pid>.<hex>.tmp`, files.ts tempPathFor) are removed;
// - a step whose starter went away (a killed `pulumi up`, a closed terminal) stops, and takes its
//   children (nix, bwrap, QEMU, docker) with it, instead of running on with no one listening.
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError, log } from "./step";

export const LOCK_NAME = ".supply-chain.lock";

interface ProcessId {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22): a reused pid has another. */
  start: string;
}

interface ProcStat {
  ppid: number;
  start: string;
}

function procStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(fields[1]), start: fields[19] };
}

function alive(p: ProcessId): boolean {
  return procStat(p.pid)?.start === p.start;
}

function self(): ProcessId {
  return { pid: process.pid, start: procStat(process.pid)!.start };
}

interface LockRecord extends ProcessId {
  step: string;
  since: string;
}

export interface DirLock {
  release(): void;
}

/**
 * Locks `dir` for `step` (creating it). Refused with exit 2 while another live process holds it.
 * On release, a directory this call created and that stayed empty is removed again (a refused run
 * leaves no empty --out behind).
 */
export function lockDir(dir: string, step: string): DirLock {
  const existed = fs.existsSync(dir);
  if (existed && !fs.statSync(dir).isDirectory()) throw new InputError(`--out ${dir} exists and is not a directory`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, LOCK_NAME);
  const mine: LockRecord = { ...self(), step, since: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(mine) + "\n", { flag: "wx" });
      break;
    } catch (e: any) {
      if (e.code !== "EEXIST" || attempt > 0) throw e;
    }
    let held: LockRecord | undefined;
    try {
      held = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch {
      held = undefined; // half-written by a process killed while writing it: stale
    }
    if (held && typeof held.pid === "number" && alive(held)) {
      throw new InputError(`${dir} is in use by supply-chain ${held.step} (pid ${held.pid}, since ${held.since}): wait for it, or stop it`);
    }
    log(step, `${dir}: taking over the stale lock of ${held ? `pid ${held.pid} (${held.step}), which is gone` : "a run killed while locking"}`);
    fs.rmSync(file, { force: true });
  }
  removeStaleTemps(dir, step);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      try {
        const held = JSON.parse(fs.readFileSync(file, "utf8"));
        if (held.pid === mine.pid && held.start === mine.start) fs.rmSync(file, { force: true });
      } catch {
        // already gone
      }
      if (!existed) {
        try {
          fs.rmdirSync(dir); // only if empty
        } catch {
          // it holds results: keep it
        }
      }
    },
  };
}

const TEMP_NAME = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/;

/** Temp files (files.ts tempPathFor) in `dir` whose writer is no longer running: a killed run's. */
export function removeStaleTemps(dir: string, step: string): void {
  for (const name of fs.readdirSync(dir)) {
    const m = TEMP_NAME.exec(name);
    if (!m || Number(m[1]) === process.pid || procStat(Number(m[1]))) continue;
    log(step, `removing ${path.join(dir, name)}, left by a killed run (pid ${m[1]})`);
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

/** Every process below `pid`, children after their parents. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = procStat(Number(name));
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(Number(name));
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of children.get(queue.shift()!) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** The chain of processes that started this one, up to (not including) init. */
function ancestors(): ProcessId[] {
  const chain: ProcessId[] = [];
  let pid = process.ppid;
  while (pid > 1) {
    const s = procStat(pid);
    if (!s) break;
    chain.push({ pid, start: s.start });
    pid = s.ppid;
  }
  return chain;
}

/** Set to run a step on purpose with no one waiting for it (e.g. started by a shell about to exit). */
export const KEEP_RUNNING_ENV = "SUPPLY_CHAIN_KEEP_RUNNING";

/**
 * Watches the processes that started this step; once one is gone, `onOrphaned` runs (release the
 * lock), every descendant is killed, and SIGTERM ends this process through its own handlers (the
 * docker isolation removes its container, QEMU's VM is stopped).
 */
export function stopWhenOrphaned(step: string, onOrphaned: () => void, intervalMs = 1000): () => void {
  if (process.env[KEEP_RUNNING_ENV] === "1") return () => undefined;
  const chain = ancestors();
  const timer = setInterval(() => {
    const gone = chain.find((p) => !alive(p));
    if (!gone) return;
    clearInterval(timer);
    log(step, `pid ${gone.pid}, which started this step, is gone: stopping (set ${KEEP_RUNNING_ENV}=1 to run on)`);
    onOrphaned();
    for (const pid of descendants(process.pid).reverse()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already exited
      }
    }
    process.kill(process.pid, "SIGTERM");
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
