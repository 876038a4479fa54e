// Plain JavaScript on purpose: a worker thread starts without the CLI's TypeScript hook
// (bin/register-ts.js) or ts-node, and this file runs as is from pipeline/lib and from dist/ alike.
// range-hash.ts runs it in each worker, and in-process for small jobs (the same code either way).
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const { isMainThread, parentPort, workerData } = require("node:worker_threads");

/** One read buffer per thread, reused: memory stays bounded whatever the sizes hashed. */
const CHUNK = 1 << 20;

/**
 * Hashes bytes [start, end) of the open file `fd` with `algos`, and in the same pass the sub-range
 * `inner` with its own algorithms (a NAR and the single file inside it). `done(n)` after each read.
 */
function hashJob(fd, job, buf, done) {
  const outer = job.algos.map((a) => crypto.createHash(a));
  const inner = job.inner ? job.inner.algos.map((a) => crypto.createHash(a)) : [];
  for (let pos = job.start; pos < job.end; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, job.end - pos), pos);
    if (n === 0) throw new Error(`the file ended at byte ${pos}, before byte ${job.end}: it changed while it was read`);
    if (outer.length) {
      const chunk = buf.subarray(0, n);
      for (const h of outer) h.update(chunk);
    }
    if (inner.length) {
      const a = Math.max(pos, job.inner.start);
      const b = Math.min(pos + n, job.inner.end);
      if (b > a) for (const h of inner) h.update(buf.subarray(a - pos, b - pos));
    }
    pos += n;
    done(n);
  }
  const digest = (hs, algos) => Object.fromEntries(hs.map((h, i) => [algos[i], h.digest("hex")]));
  return { outer: digest(outer, job.algos), inner: job.inner ? digest(inner, job.inner.algos) : undefined };
}

module.exports = { hashJob, CHUNK };

if (!isMainThread && workerData && workerData.rangeHash) {
  // Each message is a batch of jobs; the reply is their digests. Bytes done go to this worker's slot of
  // a shared counter that the main thread polls for progress.
  const { fd, progress, slot } = workerData.rangeHash;
  const counter = new Float64Array(progress);
  const buf = Buffer.allocUnsafe(CHUNK);
  parentPort.on("message", (batch) => {
    try {
      parentPort.postMessage({ results: batch.map((j) => ({ id: j.id, ...hashJob(fd, j, buf, (n) => (counter[slot] += n)) })) });
    } catch (e) {
      parentPort.postMessage({ error: String((e && e.message) || e) });
    }
  });
}
