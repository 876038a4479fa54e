// docs/reliability.md is rendered from what the fault tests observed, never written by hand:
// test/engine/faults.test.ts records one row per case it passed, checks at its end that the committed
// doc is what its rows render, and (when every case ran) saves the rows to RESULTS_FILE;
// `npm run reliability-report` renders that file into the doc. Faults already proven by other tests
// are cited as static rows, with the test that proves them.
import * as fs from "node:fs";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");
export const DOC = path.join(ROOT, "docs", "reliability.md");
/** The last complete run's rows (.supply-chain/ is not committed). */
export const RESULTS_FILE = path.join(ROOT, ".supply-chain", "reliability-results.json");
const FAULTS_TEST = "test/engine/faults.test.ts";

export interface FaultRow {
  case: string;
  /** What was observed: deterministic text (no pids, paths of temp dirs or timings). */
  outcome: string;
}

/** The cases faults.test.ts proves, in the doc's order (the row of each is what the test recorded). */
export const FAULT_CASES = [
  "SIGKILL of `pulumi up` during build",
  "SIGKILL of `pulumi up` during closure export",
  "SIGKILL of `pulumi up` during rebuild (bwrap running)",
  "SIGKILL of `pulumi up` during boot test (QEMU running)",
  "two `pulumi up` on one stack at once (and a step run on a work dir in use)",
  "disk full: `closure --out` on an 8 MiB tmpfs",
  "disk full: `rebuild --out` on a 40 MiB tmpfs (too small for the staged closure)",
  "disk full: `rebuild --out` on an 80 MiB tmpfs (too small for the NARs)",
] as const;

/** Proven elsewhere: case, outcome, the test that proves it. */
export const STATIC_ROWS: { case: string; outcome: string; test: string }[] = [
  {
    case: "the closure swapped between check and import (item 2's attack)",
    outcome: "refused: the bytes checked are the bytes imported (one private copy), rebuild.json records their digest",
    test: 'test/steps/rebuild.test.ts "the closure swapped between check and import …"',
  },
  {
    case: "a closure whose bytes are not the closure step's (`--closure-sha256`)",
    outcome: "refused before anything reads it",
    test: 'test/steps/rebuild.test.ts "--closure-sha256: a closure whose bytes are not the closure step\'s …"',
  },
  {
    case: "a second step run on a locked work dir",
    outcome: "refused, exit 2 naming the holder's pid; touches nothing",
    test: 'test/lib/lifetime.test.ts "a second run on a locked directory is refused …"',
  },
  {
    case: "a lock whose process is gone (or whose pid was reused)",
    outcome: "stale: taken over",
    test: 'test/lib/lifetime.test.ts "a lock whose process is gone …"',
  },
  {
    case: "a rebuild whose starter is killed",
    outcome: "the step and everything below it stop, the lock is released, a re-run completes and cleans up",
    test: 'test/steps/rebuild.test.ts "a rebuild whose starter is killed …"',
  },
  {
    case: "a rebuild killed half-way",
    outcome: "nothing half-written is accepted, a re-run completes",
    test: 'test/steps/rebuild.test.ts "a rebuild killed half-way …"',
  },
];

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function renderReliability(rows: FaultRow[]): string {
  const byCase = new Map(rows.map((r) => [r.case, r.outcome]));
  const lines = [
    "# Reliability: faults and what they leave",
    "",
    "<!-- Generated: `npm run reliability-report` (from the last complete run of test/engine/faults.test.ts). Do not edit. -->",
    "",
    `Every row is what a test observed. The first table is rendered from the rows \`${FAULTS_TEST}\` records as its`,
    "cases pass (real engine, real steps, in a temp copy of the project with its own file backend); its last test",
    "fails when this file differs from what they recorded, so the doc cannot drift from the tests. A case that did",
    "not pass shows as `not observed`. Regenerate after changing a case: run the faults test, then",
    "`npm run reliability-report`.",
    "",
    "A killed `pulumi up` is SIGKILLed as a whole process group while the step runs (seen in /proc); then: no",
    "process of the project's copy is left within 20 s (steps, bwrap, nix, QEMU, the engine's plugins), the",
    "recovery of docs/pulumi.md (\"After a killed `pulumi up`\") converges, and nothing a step writes is left",
    "half-written or as a temp file, lock or staging dir.",
    "",
    `## Observed by ${FAULTS_TEST}`,
    "",
    "| case | outcome |",
    "| --- | --- |",
    ...FAULT_CASES.map((c) => `| ${cell(c)} | ${cell(byCase.get(c) ?? "not observed")} |`),
    "",
    "## Proven by other tests",
    "",
    "| case | outcome | test |",
    "| --- | --- | --- |",
    ...STATIC_ROWS.map((r) => `| ${cell(r.case)} | ${cell(r.outcome)} | ${cell(r.test)} |`),
    "",
  ];
  return lines.join("\n");
}

if (require.main === module) {
  if (!fs.existsSync(RESULTS_FILE)) {
    process.stderr.write(`reliability-report: no ${RESULTS_FILE}: run \`npx ava ${FAULTS_TEST}\` first (it writes it when every case ran)\n`);
    process.exit(2);
  }
  fs.writeFileSync(DOC, renderReliability(JSON.parse(fs.readFileSync(RESULTS_FILE, "utf8"))));
  process.stdout.write(`wrote ${DOC}\n`);
}
