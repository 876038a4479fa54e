// Progress a person can follow on long work (exporting and hashing GiBs, building many derivations):
// lines on stderr, which Pulumi shows for a step too. Polled, not counted per chunk: the hot loops
// (hashing, parsing NARs) pay nothing for it.
import { humanBytes } from "./files";
import { logForStep } from "./step";

export interface ByteProgress {
  /** The final line (total and rate), once: the work is done or has failed. */
  stop(outcome?: "done" | "failed"): void;
}

/**
 * Every `everyMs`, `<what>: <done> of <total> (<pct>%), <rate>/s` from `done()`; a last line on stop.
 * `total` null: no percentage (unknown in advance). `approximate`: the total is an estimate ("about").
 */
export function trackBytes(what: string, total: number | null, done: () => number, o: { everyMs?: number; approximate?: boolean } = {}): ByteProgress {
  const t0 = Date.now();
  const of = total === null ? "" : ` of ${o.approximate ? "about " : ""}${humanBytes(total)}`;
  const rate = (n: number) => `${humanBytes(Math.round(n / Math.max((Date.now() - t0) / 1000, 1e-3)))}/s`;
  const timer = setInterval(() => {
    const n = done();
    const pct = total ? ` (${Math.min(100, Math.floor((100 * n) / total))}%)` : "";
    logForStep(`${what}: ${humanBytes(n)}${of}${pct}, ${rate(n)}`);
  }, o.everyMs ?? 5000);
  timer.unref();
  let stopped = false;
  return {
    stop(outcome = "done") {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      const n = done();
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      logForStep(`${what}: ${outcome === "done" ? "" : "failed after "}${humanBytes(n)} in ${secs} s, ${rate(n)}`);
    },
  };
}

/**
 * Counts Nix's own build lines in a build's output: "these N derivations will be built:" (or "this
 * derivation will be built:") gives the total, each "building '/nix/store/…drv'..." one more; each
 * start is one line `built k-1 of N, building <name>` (`on <builder>` when Nix sent it to one). Fed arbitrary chunks (lines may be split).
 */
export function buildCounter(onLine: (message: string) => void = logForStep): (chunk: string) => void {
  let rest = "";
  let total: number | null = null;
  // With remote builders Nix prints "building '…drv' on 'ssh-ng://…'" and then the builder's own
  // "building '…drv'": one derivation, counted once.
  const started = new Set<string>();
  return (chunk) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      const planned = /these (\d+) derivations will be built:/.exec(line) ?? (/this derivation will be built:/.test(line) ? [line, "1"] : null);
      if (planned) total = (total ?? 0) + Number(planned[1]);
      const building = /building '\/nix\/store\/[0-9a-z]{32}-([^']+)\.drv'/.exec(line);
      if (building && !started.has(building[0])) {
        started.add(building[0]);
        const builder = /' on '([^']+)'/.exec(line)?.[1];
        onLine(`derivations: ${started.size - 1} of ${total ?? "?"} built, building ${building[1]}${builder ? ` on ${builder}` : ""}`);
      }
    }
  };
}
