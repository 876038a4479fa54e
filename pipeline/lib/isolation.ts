// Runs a shell script with NO network, by bubblewrap (empty /nix) or by a Docker container (/nix as
// the image has it, e.g. nixos/nix's own closure: the script checks none of it is the target's).
// Both backends see the same things of ours: the host paths in `readOnly` (closure, reviewed Nix
// files) at the same paths read-only, `workDir` read-write, no other host file (bwrap adds only the
// host's system dirs, or those of `systemRoot`, read-only, to run Nix from). Output goes to `logFile`.
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { spawn } from "node:child_process";
import { InputError } from "./step";
import { missingTool, requireTools, run } from "./proc";

export type Backend = "bwrap" | "docker";

export interface IsolatedRun {
  backend: Backend;
  /** Docker image (required for docker), e.g. nixos/nix@sha256:… or pipeline/rebuilder-image. */
  image?: string;
  /** Host paths visible read-only at the same path. */
  readOnly: string[];
  /** Host directory visible read-write at the same path (the only writable host path). */
  workDir: string;
  /** A host directory to be /nix (read-write) instead of an empty tmpfs: a store that outlives one run, so
   * checks can run outside between two runs on it (the audit). Docker: only for images whose Nix is
   * not in /nix/store (pipeline/rebuilder-image). */
  nixDir?: string;
  /** Shell script (POSIX sh, busybox-compatible) and its arguments. */
  script: string;
  args: string[];
  env: Record<string, string>;
  logFile: string;
  /** Labels a docker container so a re-run can remove one a killed run left behind. */
  owner: string;
  /** Copy log lines to our stderr with this prefix. */
  label?: string;
  /** Sees every chunk of the run's output as it arrives (e.g. lib/progress.ts buildCounter). */
  onOutput?: (chunk: string) => void;
  /** bwrap only: a root file system (scripts/nix-rootfs.sh) whose system dirs and /etc files replace
   * the host's, so the script runs that root's Nix (another release) instead of the host's. */
  systemRoot?: string;
}

export interface IsolatedResult {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export async function checkBackend(backend: string, image?: string): Promise<void> {
  if (backend === "bwrap") return requireTools("bwrap");
  if (backend === "docker") {
    await requireTools("docker");
    if (!image) throw new InputError("--isolation docker needs --image (build one with pipeline/rebuilder-image/build.sh)");
    const info = await run("docker", ["info", "--format", "{{.ServerVersion}}"], { allowFailure: true, streamStderr: false });
    if (info.code !== 0) {
      throw new InputError(`cannot reach the Docker engine${process.env.DOCKER_HOST ? ` at ${process.env.DOCKER_HOST}` : ""}: start it with scripts/dockerd.sh (${info.stderr.trim().split("\n").pop()})`);
    }
    const img = await run("docker", ["image", "inspect", "--format", "{{.Id}}", image], { allowFailure: true, streamStderr: false });
    if (img.code !== 0) throw new InputError(`Docker image ${image} is not present locally (no registry is used: build it with pipeline/rebuilder-image/build.sh, or docker load it)`);
    return;
  }
  throw new InputError(`unknown --isolation '${backend}' (expected bwrap or docker)`);
}

/** The host system the script runs (Nix, its libraries, sh, coreutils), read-only. /usr merged: on
 * Debian 12 these are symlinks into /usr, recreated as such. */
export const HOST_SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** The /etc files Nix and coreutils open (strace of a rebuild): the loader cache, user and group
 * names. Not /etc/nix: the host's Nix config (extra-sandbox-paths, a post-build-hook, substituters)
 * must not shape the rebuild; the script's --option flags are its whole config. */
export const HOST_ETC_FILES = ["/etc/ld.so.cache", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime"];

/** Where `p` of the system at `root` ("" = the host) is on the host, its symlinks followed inside that
 * root: /etc/localtime links into /usr/share/zoneinfo, and in a root file system an absolute link
 * names a path of that root, not of the host. */
function resolveIn(root: string, p: string): string | undefined {
  for (let hops = 0; hops < 40; hops++) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(root + p);
    } catch {
      return undefined;
    }
    if (!st.isSymbolicLink()) return root + p;
    p = path.posix.resolve(path.posix.dirname(p), fs.readlinkSync(root + p));
  }
  return undefined;
}

/** The system dirs and /etc files of `root` ("" = the host), read-only at their usual places. */
function systemArgs(root: string): string[] {
  const a: string[] = [];
  for (const p of HOST_SYSTEM_DIRS) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(root + p);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) a.push("--symlink", fs.readlinkSync(root + p), p);
    else if (st.isDirectory()) a.push("--ro-bind", root + p, p);
  }
  a.push("--dir", "/etc");
  for (const f of HOST_ETC_FILES) {
    const src = resolveIn(root, f);
    if (src) a.push("--ro-bind", src, f);
  }
  return a;
}

/**
 * bwrap: an empty root holding only the host system read-only (HOST_SYSTEM_DIRS, HOST_ETC_FILES; or
 * those of `systemRoot`), tmpfs /nix and /tmp, the `readOnly` paths and `workDir`; no home, no checkout, no /var (the demo
 * world's file:// source cache), no /run. A fresh network namespace (loopback only) and pid
 * namespace. Nix's own sandbox then runs inside (same build environment as the original build). It
 * clones a user namespace and mounts a fresh /proc, which the kernel allows only if a fully visible
 * proc is mounted; bwrap's --proc adds read-only submounts that forbid that, so the script mounts its
 * own /proc first.
 */
export function bwrapArgs(r: IsolatedRun): string[] {
  const root = r.systemRoot ? path.resolve(r.systemRoot).replace(/\/+$/, "") : "";
  const a = [...systemArgs(root), ...(r.nixDir ? ["--bind", r.nixDir, "/nix"] : ["--tmpfs", "/nix"]), "--tmpfs", "/tmp", "--dev", "/dev", "--dir", "/proc"];
  for (const p of r.readOnly) a.push("--ro-bind", p, p);
  a.push("--bind", r.workDir, r.workDir);
  // The root itself is read-only: the only writable places are /nix, /tmp, /dev and workDir.
  a.push("--remount-ro", "/");
  a.push("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session", "--clearenv");
  for (const [k, v] of Object.entries(r.env)) a.push("--setenv", k, v);
  a.push("--", "/bin/sh", "-c", 'mount -t proc proc /proc && exec /bin/sh "$@"', "sh", r.script, ...r.args);
  return a;
}

export function containerName(owner: string): string {
  return `sc-rebuild-${crypto.createHash("sha256").update(owner).digest("hex").slice(0, 16)}`;
}

/** Docker parses --mount as one CSV record: a path with a comma or quote must be a quoted field. */
function csvField(f: string): string {
  return /[",]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f;
}

function bindMount(p: string, readonly: boolean, target = p): string {
  return ["type=bind", csvField(`source=${p}`), csvField(`target=${target}`), ...(readonly ? ["readonly"] : [])].join(",");
}

/** What a container of ours is, whoever runs it: the CLI's docker route (dockerArgs) and the Pulumi
 * Container resource (components/rebuild.ts) are both made from this. */
export interface ContainerSpec {
  image: string;
  networkMode: "none";
  mounts: { type: "bind"; source: string; target: string; readOnly: boolean }[];
  entrypoints: string[];
  command: string[];
  envs: string[];
}

/** No network; the read-only inputs at their own paths, the work dir writable, and `nixDir` as /nix if given. */
export function containerSpec(o: { image: string; readOnly: string[]; workDir: string; nixDir?: string; env: Record<string, string>; command: string[] }): ContainerSpec {
  return {
    image: o.image,
    networkMode: "none",
    mounts: [
      ...o.readOnly.map((p) => ({ type: "bind" as const, source: p, target: p, readOnly: true })),
      { type: "bind", source: o.workDir, target: o.workDir, readOnly: false },
      ...(o.nixDir ? [{ type: "bind" as const, source: o.nixDir, target: "/nix", readOnly: false }] : []),
    ],
    entrypoints: ["/bin/sh"],
    command: o.command,
    envs: Object.entries(o.env).map(([k, v]) => `${k}=${v}`),
  };
}

/** `docker run` arguments (after `run` and any naming) that create exactly the spec's container. */
export function dockerRunArgs(s: ContainerSpec): string[] {
  const a = [`--network=${s.networkMode}`];
  for (const m of s.mounts) a.push("--mount", bindMount(m.source, m.readOnly, m.target));
  for (const e of s.envs) a.push("-e", e);
  a.push("--entrypoint", s.entrypoints[0], s.image, ...s.command);
  return a;
}

/** docker: --network=none; only the read-only inputs and the work dir are mounted. */
export function dockerArgs(r: IsolatedRun): string[] {
  const spec = containerSpec({ image: r.image!, readOnly: r.readOnly, workDir: r.workDir, nixDir: r.nixDir, env: r.env, command: [r.script, ...r.args] });
  return ["run", "--rm", "--name", containerName(r.owner), "--label", "supply-chain.rebuild=1", ...dockerRunArgs(spec)];
}

/** Removes a container a killed earlier run with the same owner left behind. */
async function removeStale(owner: string): Promise<void> {
  await run("docker", ["rm", "-f", containerName(owner)], { allowFailure: true, streamStderr: false });
}

export async function runIsolated(r: IsolatedRun): Promise<IsolatedResult> {
  let cmd: string;
  let args: string[];
  if (r.backend === "bwrap") {
    if (r.systemRoot && !fs.existsSync(path.join(r.systemRoot, "bin", "sh"))) throw new InputError(`system root ${r.systemRoot} has no /bin/sh (build one with scripts/nix-rootfs.sh)`);
    cmd = "bwrap";
    args = bwrapArgs(r);
  } else {
    if (!r.image) throw new InputError("docker isolation needs an image");
    if (r.systemRoot) throw new InputError("a system root is for bwrap only (a docker image is its own system)");
    await removeStale(r.owner);
    cmd = "docker";
    args = dockerArgs(r);
  }
  const log = fs.openSync(r.logFile, "a");
  fs.writeSync(log, `# ${cmd} ${args.map((x) => (/[\s'"]/.test(x) ? JSON.stringify(x) : x)).join(" ")}\n`);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  // A killed `docker run` client leaves its container running: stop the container, not only the client.
  const stopChild = (then: () => void = () => undefined) => {
    if (r.backend === "docker") spawn("docker", ["rm", "-f", containerName(r.owner)], { stdio: "ignore" }).on("close", then);
    else {
      child.kill("SIGKILL");
      then();
    }
  };
  const onSignal = (sig: NodeJS.Signals) => stopChild(() => process.kill(process.pid, sig));
  const sigs: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const handlers = sigs.map((s) => {
    const h = () => {
      for (const [i, x] of sigs.entries()) process.removeListener(x, handlers[i]);
      onSignal(s);
    };
    process.on(s, h);
    return h;
  });
  // A log that cannot be written (a full disk) ends the run as the machine refusing (exit 2, naming the
  // log): thrown from this handler it would crash the step (exit 1, no verdict) and leave the child running.
  let logFailed: NodeJS.ErrnoException | undefined;
  const copy = (d: Buffer) => {
    if (!logFailed) {
      try {
        fs.writeSync(log, d);
      } catch (e) {
        logFailed = Object.assign(e as NodeJS.ErrnoException, { path: r.logFile });
        stopChild();
      }
    }
    const chunk = d.toString();
    r.onOutput?.(chunk);
    if (r.label) {
      const text = chunk.replace(/\n$/, "").split("\n").map((l) => `  ${r.label}| ${l}\n`).join("");
      process.stderr.write(text);
    }
  };
  child.stdout!.on("data", copy);
  child.stderr!.on("data", copy);
  try {
    return await new Promise<IsolatedResult>((resolve, reject) => {
      child.on("error", (e: NodeJS.ErrnoException) => reject(e.code === "ENOENT" ? missingTool(cmd) : e));
      child.on("close", (code, signal) => (logFailed ? reject(logFailed) : resolve({ code, signal })));
    });
  } finally {
    for (const [i, s] of sigs.entries()) process.removeListener(s, handlers[i]);
    fs.closeSync(log);
  }
}
