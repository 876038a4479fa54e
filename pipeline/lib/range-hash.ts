// Hashing byte ranges of one open file on every core. A closure's sources are independent byte ranges
// of its export stream (nar.ts `indexExport`), so re-hashing GiBs need not wait on one core: jobs go to
// one worker thread per core, biggest first, in batches each worker pulls when it is free (so the cores
// stay balanced by bytes). Each worker reads through one 1 MiB buffer: memory does not grow with the file.
import * as os from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";

export interface RangeJob {
  /** Bytes [start, end) of the file, hashed with each of `algos` (may be none). */
  start: number;
  end: number;
  algos: string[];
  /** A sub-range hashed in the same pass with its own algorithms (a NAR's single file). */
  inner?: { start: number; end: number; algos: string[] };
}

export interface RangeDigests {
  /** Lowercase hex per algorithm. */
  outer: Record<string, string>;
  inner?: Record<string, string>;
}

export interface HashRangesOptions {
  /** Worker threads; 0 hashes in this thread. Default: one per core, none for a few MiB. */
  workers?: number;
  /** Progress from the bytes hashed so far (progress.ts trackBytes). */
  track?: (done: () => number, total: number) => { stop(outcome?: "done" | "failed"): void };
}

// The worker is plain JavaScript beside this file (pipeline/lib and dist/pipeline/lib alike): see its header.
const WORKER_FILE = path.join(__dirname, "range-hash-worker.js");
const worker: { hashJob(fd: number, job: RangeJob, buf: Buffer, done: (n: number) => void): RangeDigests; CHUNK: number } = require(WORKER_FILE);

/** Below this many bytes, starting workers costs more than it saves. */
const IN_PROCESS_BYTES = 8 << 20;
/** A batch a worker pulls: enough bytes that messages are rare, few enough that the last ones balance. */
const BATCH_BYTES = 8 << 20;
const BATCH_JOBS = 256;

export function defaultWorkers(totalBytes: number, jobs: number): number {
  if (totalBytes < IN_PROCESS_BYTES) return 0;
  return Math.max(1, Math.min(os.availableParallelism(), 8, jobs));
}

/** Digests of each job, in the order given. Throws (one line) when the file cannot be read as far as a job says. */
export async function hashRanges(fd: number, jobs: RangeJob[], o: HashRangesOptions = {}): Promise<RangeDigests[]> {
  const size = (j: RangeJob) => j.end - j.start;
  const total = jobs.reduce((n, j) => n + size(j), 0);
  const n = Math.min(o.workers ?? defaultWorkers(total, jobs.length), jobs.length);
  // One slot per thread, each written only by its thread: bytes hashed so far, for progress.
  const progress = new SharedArrayBuffer(8 * Math.max(1, n));
  const counter = new Float64Array(progress);
  const tracker = o.track?.(() => counter.reduce((a, b) => a + b, 0), total);
  const results: RangeDigests[] = new Array(jobs.length);
  try {
    if (n === 0) {
      const buf = Buffer.allocUnsafe(Math.min(worker.CHUNK, jobs.reduce((m, j) => Math.max(m, size(j)), 1)));
      jobs.forEach((j, i) => (results[i] = worker.hashJob(fd, j, buf, (k) => (counter[0] += k))));
    } else {
      await inWorkers(fd, jobs, n, progress, results);
    }
  } catch (e) {
    tracker?.stop("failed");
    throw e;
  }
  tracker?.stop("done");
  return results;
}

function inWorkers(fd: number, jobs: RangeJob[], n: number, progress: SharedArrayBuffer, results: RangeDigests[]): Promise<void> {
  const order = jobs.map((_, i) => i).sort((a, b) => jobs[b].end - jobs[b].start - (jobs[a].end - jobs[a].start));
  // At most a quarter of a worker's share per batch, so that every worker has some even of a small file.
  const total = jobs.reduce((t, j) => t + j.end - j.start, 0);
  const batchBytes = Math.min(BATCH_BYTES, Math.ceil(total / (4 * n)));
  let next = 0;
  const batch = () => {
    const b: (RangeJob & { id: number })[] = [];
    let bytes = 0;
    while (next < order.length && (b.length === 0 || (bytes < batchBytes && b.length < BATCH_JOBS))) {
      const i = order[next++];
      b.push({ ...jobs[i], id: i });
      bytes += jobs[i].end - jobs[i].start;
    }
    return b;
  };
  const threads: Worker[] = [];
  return new Promise<void>((resolve, reject) => {
    let remaining = jobs.length;
    let failed = false;
    const fail = (e: Error) => {
      if (failed) return;
      failed = true;
      reject(e);
    };
    for (let slot = 0; slot < n; slot++) {
      const w = new Worker(WORKER_FILE, { workerData: { rangeHash: { fd, progress, slot } } });
      threads.push(w);
      let inFlight = 0;
      const send = () => {
        const b = batch();
        if (b.length) {
          inFlight++;
          w.postMessage(b);
        }
      };
      w.on("message", (m: { results?: (RangeDigests & { id: number })[]; error?: string }) => {
        inFlight--;
        if (m.error !== undefined) return fail(new Error(m.error));
        for (const { id, outer, inner } of m.results!) results[id] = inner ? { outer, inner } : { outer };
        remaining -= m.results!.length;
        if (remaining === 0) resolve();
        else send();
      });
      w.on("error", fail);
      w.on("exit", (code) => {
        if (remaining > 0 && inFlight > 0) fail(new Error(`a hashing worker exited (code ${code}) with work unfinished`));
      });
      // Two batches in flight: a worker never waits for its next one.
      send();
      send();
    }
  }).finally(() => Promise.all(threads.map((w) => w.terminate())).then(() => undefined));
}
