// Nix remote builders (Nix's machines format) for a build that runs with no network: the isolated
// rebuild keeps only loopback, and each builder reaches it as a Unix socket that this process forwards
// to that builder's ssh port and nowhere else. Inside, ssh's ProxyCommand (socat) connects to the
// socket; Nix's own build hook does the rest (ssh-ng/ssh store, scheduling over the builders' slots).
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { InputError, OptionSpec } from "./step";

/** One line of Nix's machines format (nix.conf `builders`; `-` is an empty field). */
export interface RemoteBuilder {
  /** ssh-ng://[user@]host or ssh://[user@]host, as written. */
  uri: string;
  host: string;
  /** The ssh private key file (3rd field). */
  key: string;
  /** The builder's base64 public host key (8th field): who the sources are sent to is checked. */
  hostKey: string;
  /** The line as Nix reads it (fields normalised to single spaces). */
  line: string;
}

// No leading '-' (it would read as an ssh option), nothing a shell or ssh's config would interpret.
const SSH_URI = /^(ssh-ng|ssh):\/\/(?:([A-Za-z0-9_][A-Za-z0-9._-]*)@)?([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9a-fA-F:]+\])$/;

/** Parses a machines spec (entries separated by newlines or `;`): the syntax only, no file is read
 * (a stack's config is checked this way at preview). */
export function parseMachines(text: string): RemoteBuilder[] {
  const entries = text.split(/[\n;]/).map((l) => l.replace(/#.*$/, "").trim()).filter(Boolean);
  return entries.map((entry) => {
    const f = entry.split(/\s+/).map((x) => (x === "-" ? "" : x));
    const [uri, , key = "", jobs = "", speed = "", , , hostKey = ""] = f;
    const m = SSH_URI.exec(uri);
    if (f.length > 8) throw new InputError(`builder '${uri}': ${f.length} fields, the machines format has 8 (URI, systems, key, jobs, speed, features, mandatory features, host key)`);
    for (const [what, v] of [["jobs (4th field)", jobs], ["speed factor (5th field)", speed]]) {
      if (v && !/^\d+$/.test(v)) throw new InputError(`builder '${uri}': ${what} ${v} is not a whole number`);
    }
    if (!m) throw new InputError(`builder '${uri}': only ssh-ng://[user@]host or ssh://[user@]host builders can be reached from the isolation (no port: ssh's 22)`);
    if (!key) throw new InputError(`builder '${uri}': no ssh key file (the machines format's 3rd field): the isolated build has no ~/.ssh`);
    if (!path.isAbsolute(key) || !/^[A-Za-z0-9._\/+-]+$/.test(key)) throw new InputError(`builder '${uri}': ssh key ${key} must be an absolute path of letters, digits and . _ / + -`);
    if (!hostKey) throw new InputError(`builder '${uri}': no public host key (the machines format's 8th field, base64): the sources would go to whoever answers`);
    const decoded = Buffer.from(hostKey, "base64").toString("utf8");
    if (!/^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+/.test(decoded)) throw new InputError(`builder '${uri}': the 8th field is not a base64 OpenSSH public key`);
    return { uri, host: m[3], key, hostKey, line: f.map((x) => x || "-").join(" ") };
  });
}

/** What a result and a signed provenance record of a builder: its URI and the host key required of it. */
export interface BuilderRecord {
  uri: string;
  hostKey: string;
}

export function builderRecords(builders: RemoteBuilder[] | undefined): BuilderRecord[] | undefined {
  return builders?.length ? builders.map((b) => ({ uri: b.uri, hostKey: b.hostKey })) : undefined;
}

/** The builder as a store URI of its own (its key and host key as parameters), for Nix commands on its store. */
export function storeUri(b: RemoteBuilder): string {
  return `${b.uri}?ssh-key=${encodeURIComponent(b.key)}&base64-ssh-public-host-key=${encodeURIComponent(b.hostKey)}`;
}

/** The builders as Nix's `builders` setting takes them: one line each, joined by ';'. */
export function machinesSpec(builders: RemoteBuilder[]): string {
  return builders.map((b) => b.line).join(";");
}

/** A step's `--builders`: a machines spec or `@FILE` holding one, each entry's key file readable. */
export function parseBuilders(spec: string): RemoteBuilder[] {
  let text = spec;
  if (spec.startsWith("@")) {
    const file = spec.slice(1);
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e: any) {
      throw new InputError(`--builders ${spec}: cannot read ${file} (${e.code ?? e.message})`);
    }
  }
  const builders = parseMachines(text);
  for (const b of builders) {
    try {
      fs.accessSync(b.key, fs.constants.R_OK);
    } catch {
      throw new InputError(`builder '${b.uri}': ssh key file ${b.key} not found or not readable`);
    }
  }
  return builders;
}

/** What the isolated run needs to reach its builders. */
export interface BuilderTunnels {
  /** Host paths the isolation must see read-only: the sockets' dir (with the ssh config) and the keys. */
  readOnly: string[];
  /** For NIX_SSHOPTS: ssh reads only this config inside. */
  sshConfig: string;
  close(): Promise<void>;
}

/**
 * One Unix socket per builder host in a fresh short directory (a socket path has at most 107 bytes),
 * each forwarding to host:22 from this process, on the host's network; and the ssh config that sends
 * ssh there. The isolation itself stays without a network interface.
 */
export async function openBuilderTunnels(builders: RemoteBuilder[], port = 22): Promise<BuilderTunnels> {
  // Always /tmp: a socket's path has at most 107 bytes, and the path goes into ssh's ProxyCommand (a shell
  // line) and NIX_SSHOPTS (split on spaces), where a TMPDIR of other characters would break it.
  const base = "/tmp";
  removeDeadRunsDirs(base);
  const dir = fs.mkdtempSync(path.join(base, `sc-builders-${process.pid}-`));
  const servers: net.Server[] = [];
  const open = new Set<net.Socket>();
  const hosts = [...new Set(builders.map((b) => b.host))];
  const config: string[] = [];
  try {
    for (const [i, host] of hosts.entries()) {
      const sock = path.join(dir, `${i}.sock`);
      const server = net.createServer((inside) => {
        const outside = net.connect({ host: host.replace(/^\[|\]$/g, ""), port });
        for (const s of [inside, outside]) {
          open.add(s);
          s.on("close", () => open.delete(s));
          s.on("error", () => {
            inside.destroy();
            outside.destroy();
          });
        }
        inside.pipe(outside).pipe(inside);
      });
      await new Promise<void>((resolve, reject) => server.once("error", reject).listen(sock, resolve));
      servers.push(server);
      // Only the host key Nix passes for the entry counts (no global known hosts), only the entry's key is offered.
      config.push(`Host ${host}`, `  ProxyCommand socat - UNIX-CONNECT:${sock}`, "  BatchMode yes", "  StrictHostKeyChecking yes", "  GlobalKnownHostsFile /dev/null", "  IdentitiesOnly yes", "");
    }
    const sshConfig = path.join(dir, "ssh_config");
    fs.writeFileSync(sshConfig, config.join("\n"));
    return {
      readOnly: [dir, ...new Set(builders.map((b) => b.key))],
      sshConfig,
      async close() {
        for (const s of open) s.destroy();
        await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const s of servers) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** A killed step (SIGKILL, or stopped as an orphan) leaves its sockets' dir: removed once its pid is gone
 * (only this user's; one that cannot be removed is left, it costs nothing but a name). */
function removeDeadRunsDirs(base: string): void {
  for (const name of fs.readdirSync(base)) {
    const pid = Number(/^sc-builders-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      if (fs.statSync(path.join(base, name)).uid !== process.getuid?.()) continue;
      process.kill(pid, 0);
    } catch (e: any) {
      if (e.code === "ESRCH") fs.rmSync(path.join(base, name), { recursive: true, force: true });
    }
  }
}

/** The options of every step that can use remote builders (rebuild, audit, build). */
export const BUILDER_OPTIONS: Record<"builders" | "max-jobs", OptionSpec> = {
  builders: { type: "string", description: "Nix remote builders, machines format (or @FILE): 'ssh-ng://root@host x86_64-linux /key 2 1 - - <base64 host key>', entries separated by ';'" },
  "max-jobs": { type: "string", description: "builds run on this machine at once beside the builders (Nix's max-jobs; 0: all on the builders)" },
};

/** The builders and max-jobs a step was given (none: Nix's defaults, no builders). */
export function buildersFrom(values: Record<string, unknown>): { builders: RemoteBuilder[]; maxJobs?: number } {
  const spec = values.builders as string | undefined;
  const jobs = values["max-jobs"] as string | undefined;
  if (jobs !== undefined && !/^\d+$/.test(jobs)) throw new InputError(`--max-jobs ${jobs}: expected a whole number (0: only the remote builders build)`);
  const builders = spec ? parseBuilders(spec) : [];
  if (jobs === "0" && !builders.length) throw new InputError("--max-jobs 0 builds nothing without --builders");
  return { builders, ...(jobs !== undefined ? { maxJobs: Number(jobs) } : {}) };
}

/** ssh options for Nix's connections to builders from this machine's own ssh (the build step): only the host
 * key the entry gives counts, whatever the user's ssh config says (the command line comes first). */
export const STRICT_HOST_KEY_SSHOPTS = "-oStrictHostKeyChecking=yes -oGlobalKnownHostsFile=/dev/null -oBatchMode=yes";

/** Nix's options for builders on this machine's own network (the build step; rebuild.sh sets the same inside). */
export function builderArgs(builders: RemoteBuilder[], maxJobs?: number): string[] {
  const a = builders.length ? ["--option", "builders", machinesSpec(builders), "--option", "builders-use-substitutes", "false"] : [];
  return maxJobs === undefined ? a : [...a, "--option", "max-jobs", String(maxJobs)];
}

/** The commands the isolation runs for builders: ssh, and socat for the ProxyCommand. */
export const BUILDER_TOOLS = ["ssh", "socat"];
