// Watches a command for network attempts: strace -f of every connect/send with an address. An
// attempt is an IPv4/IPv6 address that is not loopback, or any DNS (port 53: a resolver may listen
// on loopback). Loopback itself is allowed: the boot test probes its guest through 127.0.0.1.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../../pipeline/lib/proc";

export interface Traced {
  code: number;
  stdout: string;
  stderr: string;
  /** "addr:port" of each network attempt, in order. */
  attempts: string[];
  seconds: number;
}

/** The network attempts in an strace log (`-e trace=connect,sendto,sendmsg,sendmmsg`). */
export function networkAttempts(trace: string): string[] {
  const found: string[] = [];
  for (const l of trace.split("\n")) {
    const v4 = /sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)/.exec(l);
    const v6 = /sa_family=AF_INET6, sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"/.exec(l);
    const m = v4 ?? v6;
    if (!m) continue;
    const [port, addr] = [m[1], m[2]];
    const loopback = /^127\./.test(addr) || addr === "::1" || /^::ffff:127\./.test(addr);
    if (!loopback || port === "53") found.push(`${addr}:${port}`);
  }
  return found;
}

/** Runs `sh -c command` under strace (the host's environment as given), collecting network attempts. */
export async function traced(command: string, o: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Traced> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-trace-"));
  const log = path.join(dir, "trace");
  // --seccomp-bpf: only the traced calls stop the process (QEMU and Nix run at full speed otherwise).
  const args = ["-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", log, "sh", "-c", command];
  const t0 = Date.now();
  try {
    const r = await run("strace", args, { cwd: o.cwd, env: o.env, allowFailure: true, streamStderr: false });
    const attempts = fs.existsSync(log) ? networkAttempts(fs.readFileSync(log, "utf8")) : [];
    return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr, attempts, seconds: (Date.now() - t0) / 1000 };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
