// A real, throwaway PostgreSQL cluster for tests: temp dir, free port, trust auth on loopback.
// initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "./ports";

function pgBin(): string {
  const base = "/usr/lib/postgresql";
  if (fs.existsSync(base)) {
    const versions = fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, "bin", "pg_ctl")));
    versions.sort((a, b) => Number(b) - Number(a));
    if (versions.length) return path.join(base, versions[0], "bin");
  }
  const which = spawnSync("sh", ["-c", "command -v pg_ctl"], { encoding: "utf8" });
  if (which.status === 0) return path.dirname(which.stdout.trim());
  throw new Error("PostgreSQL server binaries not found: apt-get install postgresql (or run scripts/setup.sh)");
}

export interface PgCluster {
  port: number;
  dir: string;
  /** libpq URL for the `testdb` database. */
  url: string;
  bin: string;
  start(): void;
  stop(mode?: "fast" | "immediate"): void;
  restart(): void;
  /** Runs SQL with psql, returns stdout (tuples only, unaligned). */
  sql(query: string): string;
  destroy(): void;
}

/** `firstPort` (tests of this fixture) is tried first; later attempts take a free port. */
export async function startPostgres(firstPort?: number): Promise<PgCluster> {
  // A port can still be taken between the check and PostgreSQL's bind: then start over on another.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startPostgresOn(attempt === 1 && firstPort ? firstPort : await freePort());
    } catch (e) {
      if (!(e instanceof PortTaken) || attempt === 5) throw e;
    }
  }
}

class PortTaken extends Error {}

async function startPostgresOn(port: number): Promise<PgCluster> {
  const bin = pgBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssc-pg-"));
  const data = path.join(dir, "data");
  const asRoot = process.getuid?.() === 0;
  const as = (cmd: string, args: string[]) => (asRoot ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args]) as [string, string[]];
  if (asRoot) execFileSync("chown", ["postgres:", dir]);
  execFileSync(...as(path.join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]), { stdio: "ignore" });
  const log = path.join(dir, "server.log");
  const cluster: PgCluster = {
    port,
    dir,
    bin,
    url: `postgresql://postgres@127.0.0.1:${port}/testdb`,
    start() {
      execFileSync(
        ...as(path.join(bin, "pg_ctl"), ["-D", data, "-l", log, "-w", "-t", "60", "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`, "start"]),
        { stdio: "ignore" },
      );
    },
    stop(mode = "fast") {
      execFileSync(...as(path.join(bin, "pg_ctl"), ["-D", data, "-m", mode, "-w", "stop"]), { stdio: "ignore" });
    },
    restart() {
      cluster.stop();
      cluster.start();
    },
    sql(query: string) {
      return execFileSync(path.join(bin, "psql"), ["-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "testdb", "-c", query], {
        encoding: "utf8",
      });
    },
    destroy() {
      try {
        cluster.stop("immediate");
      } catch {
        /* already stopped */
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    cluster.start();
  } catch (e) {
    const logTail = fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n").slice(-5).join("\n") : "(no server log)";
    fs.rmSync(dir, { recursive: true, force: true });
    if (/Address already in use/.test(logTail)) throw new PortTaken(`port ${port} was taken before PostgreSQL could bind it`);
    throw new Error(`PostgreSQL did not start on port ${port}: ${(e as Error).message}\n${logTail}`);
  }
  execFileSync(path.join(bin, "createdb"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "testdb"]);
  return cluster;
}
