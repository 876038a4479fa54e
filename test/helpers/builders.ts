// Nix remote builders as test hosts on this machine (scripts/nix-builder.sh): each its own network
// namespace joined only to the host, its own store and sshd. For the remote-builder tests and
// `npm run bench:builders`.
import { ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const SCRIPT = path.join(__dirname, "..", "..", "scripts", "nix-builder.sh");

export interface TestBuilder {
  name: string;
  index: number;
  address: string;
  /** base64 OpenSSH public host key, the machines format's 8th field. */
  hostKey: string;
  /** The builder's own /nix on the host. */
  store: string;
  /** Its line of Nix's machines format, with `jobs` slots. */
  line: string;
  /** Derivations this builder built itself (since `since`, ms): the build logs its Nix kept (names like leaf-3.drv). */
  built(since?: number): string[];
}

export interface TestBuilders {
  builders: TestBuilder[];
  /** Every builder's line, joined as `--builders` takes them. */
  spec: string;
  key: string;
  stop(): void;
}

/** Starts `n` builders (indexes from `firstIndex`), each with `jobs` build slots, under `dir`. */
export async function startBuilders(dir: string, n: number, o: { jobs?: number; firstIndex?: number; prefix?: string } = {}): Promise<TestBuilders> {
  const jobs = o.jobs ?? 1;
  const first = o.firstIndex ?? 101;
  fs.mkdirSync(dir, { recursive: true });
  const key = path.join(dir, "id_ed25519");
  if (!fs.existsSync(key)) execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "supply-chain test", "-f", key]);
  const procs: { child: ChildProcess; name: string; index: number }[] = [];
  const stop = () => {
    for (const p of procs) {
      p.child.kill("SIGTERM");
      execFileSync("bash", [SCRIPT, "stop", p.name, String(p.index)], { stdio: "ignore" });
    }
  };
  try {
    const builders = await Promise.all(
      Array.from({ length: n }, (_, i) => {
        const name = `${o.prefix ?? "t"}${first + i}`;
        const index = first + i;
        const state = path.join(dir, name);
        const child = spawn("bash", [SCRIPT, "start", name, String(index), state, `${key}.pub`, String(jobs)], { stdio: ["ignore", "pipe", "pipe"] });
        procs.push({ child, name, index });
        return new Promise<TestBuilder>((resolve, reject) => {
          let out = "";
          let err = "";
          child.stderr!.on("data", (d) => (err += d));
          child.stdout!.on("data", (d) => {
            out += d;
            const line = out.split("\n").find((l) => l.startsWith("{"));
            if (!line) return;
            const j = JSON.parse(line);
            const sshdLog = path.join(state, "sshd.log");
            // Ready when sshd says it listens (the JSON line comes just before it starts).
            const wait = setInterval(() => {
              if (fs.existsSync(sshdLog) && /Server listening/.test(fs.readFileSync(sshdLog, "utf8"))) {
                clearInterval(wait);
                resolve({
                  ...j,
                  index,
                  line: `ssh-ng://root@${j.address} x86_64-linux ${key} ${jobs} 1 - - ${j.hostKey}`,
                  built: (since?: number) => builtBy(j.store, since),
                });
              }
            }, 100);
            child.once("close", () => clearInterval(wait));
          });
          child.once("close", (code) => reject(new Error(`nix-builder.sh start ${name} exited ${code}: ${err.trim()}`)));
        });
      }),
    );
    return { builders, spec: builders.map((b) => b.line).join(";"), key, stop };
  } catch (e) {
    stop();
    throw e;
  }
}

/** The derivations whose build logs a store keeps (Nix writes one where it builds, not where it copies;
 * a build again rewrites it): those written since `since`. */
function builtBy(store: string, since = 0): string[] {
  const logs = path.join(store, "var", "log", "nix", "drvs");
  if (!fs.existsSync(logs)) return [];
  return fs
    .readdirSync(logs)
    .flatMap((d) => fs.readdirSync(path.join(logs, d)).map((f) => path.join(logs, d, f)))
    .filter((f) => fs.statSync(f).mtimeMs >= since)
    .map((f) => path.basename(f).replace(/^[0-9a-z]{30}-/, "").replace(/\.bz2$/, ""))
    .sort();
}
