// What a script run through runIsolated sees of the host: each probed path is "visible" (exists;
// a regular file is also read), "hidden" or "unreadable", and "writable" or "read-only" for the
// write probes. Shared by the bwrap and the docker tests, so both backends answer the same probe.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Backend, runIsolated } from "../../pipeline/lib/isolation";

const PROBE = String.raw`set -u
W="$1"; shift
while [ $# -gt 1 ]; do
  k="$1" p="$2"
  shift 2
  case "$k" in
    see)
      if [ -e "$p" ] || [ -L "$p" ]; then
        if [ -f "$p" ] && ! cat "$p" > /dev/null 2>&1; then echo "$p unreadable"; else echo "$p visible"; fi
      else echo "$p hidden"; fi ;;
    write)
      if ( : > "$p/.sc-probe" ) 2>/dev/null; then echo "$p writable"; rm -f "$p/.sc-probe"; else echo "$p read-only"; fi ;;
  esac
done > "$W/seen"
`;

export interface Probe {
  backend: Backend;
  image?: string;
  readOnly: string[];
  see: string[];
  write?: string[];
  /** bwrap: run on this root file system's system instead of the host's (IsolatedRun.systemRoot). */
  systemRoot?: string;
}

/** Runs the probe isolated; path → what the script saw. */
export async function probeIsolation(p: Probe): Promise<Record<string, string>> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "sc-visibility-"));
  try {
    fs.writeFileSync(path.join(work, "probe.sh"), PROBE);
    const r = await runIsolated({
      backend: p.backend,
      image: p.image,
      readOnly: p.readOnly,
      workDir: work,
      script: path.join(work, "probe.sh"),
      args: [work, ...p.see.flatMap((x) => ["see", x]), ...(p.write ?? []).flatMap((x) => ["write", x])],
      env: { PATH: "/usr/bin:/bin" },
      logFile: path.join(work, "log"),
      owner: work,
      systemRoot: p.systemRoot,
    });
    if (r.code !== 0) throw new Error(`probe in ${p.backend} exited ${r.code ?? r.signal}: ${fs.readFileSync(path.join(work, "log"), "utf8").slice(-2000)}`);
    const seen: Record<string, string> = {};
    for (const l of fs.readFileSync(path.join(work, "seen"), "utf8").split("\n").filter(Boolean)) {
      const i = l.lastIndexOf(" ");
      seen[l.slice(0, i)] = l.slice(i + 1);
    }
    return seen;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** A fresh directory holding one file `secret` (outside any path the isolation is given). */
export function hostSecret(under: string): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(under, ".sc-visibility-"));
  const file = path.join(dir, "secret");
  fs.writeFileSync(file, "not for the rebuild\n");
  return { dir, file };
}

/** The directory the demo world's file:// kernel source lives in (its lock.json), e.g. /var/cache/secure-supply-chain. */
export function demoSourceCache(worldDir: string): string {
  const lock = JSON.parse(fs.readFileSync(path.join(worldDir, "lock.json"), "utf8"));
  return path.dirname(new URL(lock.sources.kernel.url).pathname);
}
