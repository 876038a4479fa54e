// `supply-chain demo-world <dir>`: writes the hermetic demo world (docs/demo-world.md): Nix expressions with
// no nixpkgs whose only inputs are two fixed-output bootstrap sources taken from the host's Debian
// packages (a static busybox, a kernel package), pinned in <dir>/lock.json, plus a probe spec.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { InputError, log, StepDefinition } from "../lib/step";
import { run } from "../lib/proc";
import { produceAtomic, sha256File, writeFileAtomic, writeJsonAtomic } from "../lib/files";
import { instantiateMany, realise } from "../lib/nix";

export const TEMPLATE_DIR = path.join(__dirname, "..", "demo-world");
export const DEFAULT_CACHE_DIR = "/var/cache/secure-supply-chain";
/** Template sub-directory of libraries the world pins as tarballs (not copied into the world). */
const PINNED_DIR = "pinned";
/** flake.nix with the pinned library's URL left out: an input's URL must be a literal. */
const FLAKE_TEMPLATE = "flake.nix.in";
const KERNEL_DEB = /^linux-image-(\d[^_]*-amd64)_([^_]+)_amd64\.deb$/;

export interface DemoWorldResult {
  file: string;
  attribute: string;
  nonReproducibleAttribute: string;
  probes: string;
  /** --full: the system image's attribute and probe spec. */
  systemAttribute?: string;
  systemProbes?: string;
  lock: string;
  /** nix/sources.json: the evaluation-time pins (niv layout). */
  pins: string;
  /** The same world as a flake (flake.nix, flake.lock): `path:<dir>`, its image at `#image`. */
  flake: string;
  kernelVersion: string;
}

export interface LockedSource {
  name: string;
  url: string;
  unpack?: boolean;
  hash: { algo: "sha256"; mode: "flat" | "recursive"; value: string };
  /** Where the bytes come from on the host (informational; the hash is what is pinned). */
  origin: { debianPackage?: string; toolchain?: string; version?: string; file: string };
}

/** `--full`: what the system image (world attribute `system`) is built from. */
export interface SystemLock {
  /** One flat source per Debian package of pipeline/demo-world/system/packages.txt, by package name. */
  debs: Record<string, LockedSource & { role: "runtime" | "toolchain" }>;
  /** rustc, cargo and the x86_64 standard library of the host's rustup toolchain, as a NAR. */
  rust: LockedSource;
  /** Where db-reader's crates are fetched from: cargo's registry cache, as a file:// directory URL.
   * Their hashes are Cargo.lock's checksums (the world reads Cargo.lock itself). */
  crates: { url: string };
}

export interface DemoLock {
  lockVersion: 1;
  kernelVersion: string;
  sources: { busybox: LockedSource; kernel: LockedSource };
  system?: SystemLock;
}

/** The probe spec for the demo image (docs/contracts.md "Probe spec" and "Demo-world services"). */
export const DEMO_PROBES = {
  probes: [
    { name: "writer acknowledges a line", tcp: { port: 1300, send: "hello {{token}}", expect: "OK" } },
    { name: "reader is healthy", http: { port: 8000, path: "/healthz", status: 200 } },
    {
      name: "end to end, newest first",
      sequence: [
        { tcp: { port: 1300, send: "e2e {{token}}", expect: "OK" } },
        { http: { port: 8000, path: "/", status: 200, firstLineContains: "e2e {{token}}" } },
      ],
    },
  ],
};

/** `YYYY-mm-dd HH:MM:SS: ` as db-reader prints each row (docs/db-reader.md). */
const ROW = String.raw`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}: `;

/**
 * The probe spec for the system image (attribute `system`): the real apps end to end, as the VM
 * test of nix/tests checks them: acknowledged lines, rows newest first in the exact format, an
 * over-long line refused with the connection still usable, SQL metacharacters stored verbatim.
 */
export const SYSTEM_PROBES = {
  probes: [
    { name: "writer acknowledges a line", tcp: { port: 1300, send: "hello {{token}}", expect: "OK " } },
    { name: "reader is healthy", http: { port: 8000, path: "/healthz", status: 200 } },
    {
      name: "end to end, newest first, in the reader's format",
      sequence: [
        { tcp: { port: 1300, send: ["older {{token}}", "newer {{token}}"], expect: ["OK ", "OK "] } },
        { http: { port: 8000, path: "/", status: 200, firstLineMatches: `${ROW}newer {{token}}` } },
      ],
    },
    { name: "an over-long line gets ERR and the connection stays usable", tcp: { port: 1300, send: ["{{pad:70000}}", "after {{token}}"], expect: ["ERR", "OK "] } },
    {
      name: "SQL metacharacters come back verbatim",
      sequence: [
        { tcp: { port: 1300, send: `it's "{{token}}"; DROP TABLE testcounter; --`, expect: "OK " } },
        { http: { port: 8000, path: "/", status: 200, firstLineMatches: `${ROW}it's "{{token}}"; DROP TABLE testcounter; --` } },
      ],
    },
  ],
};

/** True when the ELF file has no PT_INTERP program header (a dynamic busybox cannot run sandboxed). */
export function isStaticElf(file: string): boolean {
  const fd = fs.openSync(file, "r");
  try {
    const h = Buffer.alloc(64);
    fs.readSync(fd, h, 0, 64, 0);
    if (h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2) return false; // ELF, 64-bit
    const phoff = Number(h.readBigUInt64LE(0x20));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3) return false;
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

async function debVersion(pkg: string): Promise<string | undefined> {
  const r = await run("dpkg-query", ["-W", "-f=${Version}", pkg], { allowFailure: true, streamStderr: false }).catch(() => undefined);
  return r && r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/** The Debian kernel package to use: the one given, or the newest in the cache directory. */
export function findKernelDeb(cacheDir: string, explicit?: string): { file: string; kernelVersion: string; version: string } {
  const hint = `run scripts/fetch-demo-inputs.sh (part of scripts/setup.sh), or: apt-get download linux-image-<version>-amd64 into ${cacheDir}`;
  if (explicit) {
    const file = path.resolve(explicit);
    if (!fs.existsSync(file)) throw new InputError(`kernel package not found: ${explicit}`);
    const m = KERNEL_DEB.exec(path.basename(file));
    if (!m) throw new InputError(`${explicit} is not named like a Debian kernel package (linux-image-<version>-amd64_<debversion>_amd64.deb)`);
    return { file, kernelVersion: m[1], version: m[2] };
  }
  const found = fs.existsSync(cacheDir)
    ? fs.readdirSync(cacheDir).map((f) => ({ f, m: KERNEL_DEB.exec(f) })).filter((x) => x.m)
    : [];
  if (found.length === 0) throw new InputError(`no Debian kernel package (linux-image-<version>-amd64_*.deb) in ${cacheDir}: ${hint}`);
  found.sort((x, y) => compareVersions(x.m![2], y.m![2]) || compareVersions(x.f, y.f));
  const best = found[found.length - 1];
  return { file: path.join(cacheDir, best.f), kernelVersion: best.m![1], version: best.m![2] };
}

/**
 * Copies the world's Nix expressions, builders and guest scripts (pipeline/demo-world/**). A file
 * already there with other content is someone's edit (the point of a demo: change a source, see the
 * image change): it is kept unless `reset`. Returns the kept files.
 */
function copyTemplate(src: string, dst: string, reset: boolean, kept: string[] = []): string[] {
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    // Generated per world (lock.json, nix/sources.json), or upstream of a pinned tarball (pinned/).
    if (entry.name === "lock.json" || entry.name === "sources.json" || entry.name === FLAKE_TEMPLATE || (src === TEMPLATE_DIR && entry.name === PINNED_DIR)) continue;
    const from = path.join(src, entry.name);
    const to = path.join(dst, entry.name);
    if (entry.isDirectory()) copyTemplate(from, to, reset, kept);
    else if (entry.isFile()) {
      const content = fs.readFileSync(from);
      if (fs.existsSync(to) && !reset) {
        if (!fs.readFileSync(to).equals(content)) kept.push(to);
        continue;
      }
      writeFileAtomic(to, content);
      fs.chmodSync(to, fs.statSync(from).mode & 0o777);
    }
  }
  return kept;
}

/** Serialises a directory holding bin/busybox as a NAR, the form builtin:fetchurl can `unpack`. */
async function busyboxNar(busybox: string, target: string): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "demo-busybox-"));
  try {
    fs.mkdirSync(path.join(tmp, "bin"));
    fs.copyFileSync(busybox, path.join(tmp, "bin", "busybox"));
    fs.chmodSync(path.join(tmp, "bin", "busybox"), 0o755);
    await dumpNar(tmp, target);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** `nix-store --dump DIR > target`, written atomically. */
async function dumpNar(dir: string, target: string): Promise<void> {
  await produceAtomic(target, async (out) => {
    const fd = fs.openSync(out, "w");
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn("nix-store", ["--dump", dir], { stdio: ["ignore", fd, "inherit"] });
        child.on("error", reject);
        child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`nix-store --dump ${dir} failed (exit ${code})`))));
      });
    } finally {
      fs.closeSync(fd);
    }
  });
}

/** The apps the system image compiles, copied into the world (what the host's builds read too). */
const APPS_DIR = path.join(__dirname, "..", "..", "apps");
const APP_FILES: Record<string, RegExp> = { "db-writer": /^(CMakeLists\.txt|src\/.*)$/, "db-reader": /^(Cargo\.toml|Cargo\.lock|src\/.*)$/ };
const SYSTEM_PACKAGES = path.join(TEMPLATE_DIR, "system", "packages.txt");

/** The apps' sources as the repository has them: a world always builds the repository's apps. */
function copyApps(dir: string): void {
  for (const [app, wanted] of Object.entries(APP_FILES)) {
    const from = path.join(APPS_DIR, app);
    const to = path.join(dir, "apps", app);
    if (!fs.existsSync(from)) throw new InputError(`missing ${from}: the system image builds the repository's apps`);
    fs.rmSync(to, { recursive: true, force: true });
    for (const rel of fs.readdirSync(from, { recursive: true }) as string[]) {
      if (!wanted.test(rel) || !fs.statSync(path.join(from, rel)).isFile()) continue;
      fs.mkdirSync(path.dirname(path.join(to, rel)), { recursive: true });
      fs.copyFileSync(path.join(from, rel), path.join(to, rel));
    }
  }
}

/** `<role> <package>` lines of pipeline/demo-world/system/packages.txt. */
export function systemPackages(): { role: "runtime" | "toolchain"; pkg: string }[] {
  return fs.readFileSync(SYSTEM_PACKAGES, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#")).map((l) => {
    const [role, pkg] = l.split(/\s+/);
    if (role !== "runtime" && role !== "toolchain") throw new Error(`${SYSTEM_PACKAGES}: role '${role}' is neither runtime nor toolchain`);
    return { role, pkg };
  });
}

/** A store path name from a file name: Nix allows letters, digits and +-._?= only. */
const storeName = (file: string) => file.replace(/[^A-Za-z0-9+\-._?=]/g, "_");

/** The newest <pkg>_<version>_<arch>.deb in the cache's debs/ directory. */
function findDeb(debsDir: string, pkg: string): { file: string; version: string } {
  const prefix = `${pkg}_`;
  const found = fs.existsSync(debsDir) ? fs.readdirSync(debsDir).filter((f) => f.startsWith(prefix) && f.endsWith(".deb")) : [];
  if (found.length === 0)
    throw new InputError(`missing the Debian package ${pkg} in ${debsDir}: run scripts/fetch-demo-inputs.sh (part of scripts/setup.sh), or apt-get download ${pkg} there`);
  const version = (f: string) => f.slice(prefix.length).replace(/_[^_]+\.deb$/, "");
  found.sort((a, b) => compareVersions(version(a), version(b)));
  const best = found[found.length - 1];
  return { file: path.join(debsDir, best), version: version(best) };
}

/**
 * The host's rustup toolchain as a NAR of what `cargo build` needs (rustc, cargo, their libraries,
 * the x86_64 standard library (rlib and rmeta: rustc reads the metadata from the .rmeta); no docs, sources, sanitizer runtimes or rust-lld), cached by version.
 */
async function rustNar(cacheDir: string): Promise<{ file: string; version: string; sysroot: string }> {
  const missing = "install Rust with rustup (the stable x86_64-unknown-linux-gnu toolchain builds the system image's db-reader)";
  const sysroot = (await run("rustc", ["--print", "sysroot"], { streamStderr: false }).catch(() => { throw new InputError(`missing tool 'rustc': ${missing}`); })).stdout.trim();
  const version = /^rustc (\S+)/.exec((await run(path.join(sysroot, "bin", "rustc"), ["--version"], { streamStderr: false })).stdout)?.[1];
  if (!version || !fs.existsSync(path.join(sysroot, "bin", "cargo"))) throw new InputError(`no rustc/cargo in ${sysroot}: ${missing}`);
  const file = path.join(cacheDir, "rust", `rust-${version}-x86_64-unknown-linux-gnu.nar`);
  if (fs.existsSync(file)) return { file, version, sysroot };
  log("demo-world", `packing the Rust ${version} toolchain from ${sysroot} into ${file}`);
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), "demo-rust-"));
  try {
    const std = path.join("lib", "rustlib", "x86_64-unknown-linux-gnu", "lib");
    const wanted = (rel: string) =>
      rel === "bin/rustc" || rel === "bin/cargo" || /^lib\/lib(rustc_driver-|LLVM)[^/]*$/.test(rel) ||
      (path.dirname(rel) === std && /\.(rlib|rmeta|so)$/.test(rel));
    for (const rel of fs.readdirSync(sysroot, { recursive: true }) as string[]) {
      if (!wanted(rel)) continue;
      const from = path.join(sysroot, rel);
      const to = path.join(stage, rel);
      fs.mkdirSync(path.dirname(to), { recursive: true });
      const st = fs.lstatSync(from);
      if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(from), to);
      else fs.copyFileSync(from, to);
    }
    if (!fs.existsSync(path.join(stage, std))) throw new InputError(`${sysroot} has no x86_64-unknown-linux-gnu standard library: rustup target add x86_64-unknown-linux-gnu`);
    await dumpNar(stage, file);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
  return { file, version, sysroot };
}

/** cargo's registry cache of crates.io (where `cargo fetch` puts .crate files). */
function cargoRegistryCache(): string {
  const base = path.join(process.env.CARGO_HOME ?? path.join(os.homedir(), ".cargo"), "registry", "cache");
  const dirs = fs.existsSync(base) ? fs.readdirSync(base).filter((d) => d.startsWith("index.crates.io-")) : [];
  if (dirs.length === 0)
    throw new InputError(`no crates.io registry cache in ${base}: run cargo fetch --locked --manifest-path apps/db-reader/Cargo.toml (scripts/fetch-demo-inputs.sh does)`);
  return path.join(base, dirs.sort()[0]);
}

/** Pins the system image's Debian packages, Rust toolchain and crate directory (`--full`). */
async function lockSystem(cacheDir: string): Promise<SystemLock> {
  const debsDir = path.join(cacheDir, "debs");
  const debs: SystemLock["debs"] = {};
  for (const { role, pkg } of systemPackages()) {
    const deb = findDeb(debsDir, pkg);
    debs[pkg] = {
      name: storeName(path.basename(deb.file)),
      url: pathToFileURL(deb.file).href,
      hash: { algo: "sha256", mode: "flat", value: await sha256File(deb.file) },
      origin: { debianPackage: pkg, version: deb.version, file: deb.file },
      role,
    };
  }
  const rust = await rustNar(cacheDir);
  return {
    debs,
    rust: {
      name: storeName(`rust-${rust.version}`),
      url: pathToFileURL(rust.file).href,
      unpack: true,
      hash: { algo: "sha256", mode: "recursive", value: await sha256File(rust.file) },
      origin: { toolchain: "rustup x86_64-unknown-linux-gnu", version: rust.version, file: rust.sysroot },
    },
    crates: { url: pathToFileURL(cargoRegistryCache()).href + "/" },
  };
}

/** Every source a lock pins, by a name for messages: the two bootstrap tools, then the system's. */
function lockedSources(lock: DemoLock): [string, LockedSource][] {
  return [...Object.entries(lock.sources), ...Object.entries(lock.system?.debs ?? {}), ...(lock.system ? [["rust", lock.system.rust] as [string, LockedSource]] : [])];
}

/**
 * Packs pinned/<name> as bootstrap/<name>.tar.gz (sorted, mtime 0, root-owned, gzip without a name or
 * time: the same bytes on every machine) and returns its niv-style pin: the sha256 (base32) of the
 * unpacked tree's NAR, the hash builtins.fetchTarball checks.
 */
async function packPinned(name: string, dir: string): Promise<{ url: string; sha256: string; type: "tarball" }> {
  const tarball = path.join(dir, "bootstrap", `${name}.tar.gz`);
  const src = path.join(TEMPLATE_DIR, PINNED_DIR);
  await produceAtomic(tarball, async (tmp) => {
    await run("sh", ["-c", 'tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - "$2" | gzip -n -9 > "$3"', "sh", src, name, tmp], { streamStderr: false });
  });
  const hash = await run("nix-hash", ["--type", "sha256", "--base32", path.join(src, name)], { streamStderr: false });
  return { url: pathToFileURL(tarball).href, sha256: hash.stdout.trim(), type: "tarball" };
}

/**
 * The flake form: flake.nix from its template with demo-lib's URL, and flake.lock by `nix flake lock`
 * (Nix fetches the tarball and pins its NAR hash). A lock whose flake.nix changed is written again.
 */
async function writeFlake(dir: string, demoLibUrl: string): Promise<string> {
  const text = fs.readFileSync(path.join(TEMPLATE_DIR, FLAKE_TEMPLATE), "utf8").replace("@DEMO_LIB_URL@", demoLibUrl);
  const flakeFile = path.join(dir, "flake.nix");
  if (!fs.existsSync(flakeFile) || fs.readFileSync(flakeFile, "utf8") !== text) {
    writeFileAtomic(flakeFile, text);
    fs.rmSync(path.join(dir, "flake.lock"), { force: true });
  }
  const ref = `path:${dir}`;
  await run("nix", ["--extra-experimental-features", "nix-command flakes", "flake", "lock", ref], { streamStderr: false });
  return ref;
}

/** Re-hashes each locally available source and fails if it no longer matches the lock. */
async function verifyLock(lock: DemoLock, lockFile: string): Promise<void> {
  for (const [key, src] of lockedSources(lock)) {
    if (!src.url.startsWith("file://")) continue;
    const file = fileURLToPath(src.url);
    if (!fs.existsSync(file))
      throw new InputError(`${lockFile} pins source '${key}' at ${file}, which does not exist (restore it, or rerun with --update-lock)`);
    const actual = await sha256File(file);
    if (actual !== src.hash.value)
      throw new InputError(`${lockFile} pins source '${key}' as sha256 ${src.hash.value} but ${file} now hashes to ${actual} (rerun with --update-lock to re-pin)`);
  }
}

export interface DemoWorldOptions {
  dir: string;
  cacheDir?: string;
  kernelDeb?: string;
  busybox?: string;
  updateLock?: boolean;
  /** Overwrite edited world files with the template. */
  reset?: boolean;
  /** Realise the two bootstrap sources now (default true). */
  fetch?: boolean;
  /** Also pin (and fetch) what the system image is built from: Debian packages, Rust, crates. */
  full?: boolean;
}

export async function demoWorld(o: DemoWorldOptions): Promise<DemoWorldResult> {
  // Fails with "missing tool nix-store (install nix-bin)" when Nix is absent.
  await run("nix-store", ["--version"], { streamStderr: false });
  const dir = path.resolve(o.dir);
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new InputError(`${o.dir} exists and is not a directory`);
  const busybox = o.busybox ?? "/bin/busybox";
  if (!fs.existsSync(busybox)) throw new InputError(`missing ${busybox}: install the Debian package busybox-static (or run scripts/setup.sh)`);
  if (!isStaticElf(busybox))
    throw new InputError(`${busybox} is not a static x86_64 binary: install the Debian package busybox-static (the dynamic busybox cannot run in the Nix sandbox)`);
  const cacheDir = path.resolve(o.cacheDir ?? process.env.SUPPLY_CHAIN_CACHE ?? DEFAULT_CACHE_DIR);

  fs.mkdirSync(dir, { recursive: true });
  log("demo-world", `writing the demo world to ${dir}`);
  const kept = copyTemplate(TEMPLATE_DIR, dir, !!o.reset);
  for (const f of kept) log("demo-world", `keeping edited ${path.relative(dir, f)} (--reset restores the template)`);

  const narFile = path.join(dir, "bootstrap", "busybox-static.nar");
  await busyboxNar(busybox, narFile);

  const lockFile = path.join(dir, "lock.json");
  let lock: DemoLock;
  if (fs.existsSync(lockFile) && !o.updateLock) {
    try {
      lock = JSON.parse(fs.readFileSync(lockFile, "utf8"));
    } catch (e: any) {
      throw new InputError(`${lockFile} is not valid JSON (${e.message}); rerun with --update-lock to regenerate it`);
    }
    if (lock?.lockVersion !== 1 || !lock.sources?.busybox || !lock.sources?.kernel)
      throw new InputError(`${lockFile} is not a demo-world lock (lockVersion 1); rerun with --update-lock`);
    if (o.kernelDeb && path.resolve(o.kernelDeb) !== lock.sources.kernel.origin?.file)
      throw new InputError(`${lockFile} already pins ${lock.sources.kernel.name}: add --update-lock to pin ${o.kernelDeb} instead`);
    log("demo-world", `keeping the existing lock ${lockFile}; checking its sources`);
    // A world that was copied or moved: its busybox NAR was just rewritten here. The URL only says
    // where to fetch from; the pinned hash (checked next) is what must not change.
    const narUrl = pathToFileURL(narFile).href;
    if (lock.sources.busybox.url !== narUrl) {
      log("demo-world", `busybox source moved: ${lock.sources.busybox.url} -> ${narUrl}`);
      lock.sources.busybox.url = narUrl;
      await verifyLock(lock, lockFile);
      writeJsonAtomic(lockFile, lock);
    } else await verifyLock(lock, lockFile);
    if (o.full && !lock.system) {
      log("demo-world", "pinning the system image's sources (--full)");
      lock.system = await lockSystem(cacheDir);
      writeJsonAtomic(lockFile, lock);
    }
  } else {
    const deb = findKernelDeb(cacheDir, o.kernelDeb);
    log("demo-world", `pinning ${busybox} and ${deb.file}`);
    lock = {
      lockVersion: 1,
      kernelVersion: deb.kernelVersion,
      sources: {
        busybox: {
          name: "busybox-static",
          url: pathToFileURL(narFile).href,
          unpack: true,
          hash: { algo: "sha256", mode: "recursive", value: await sha256File(narFile) },
          origin: { debianPackage: "busybox-static", version: await debVersion("busybox-static"), file: busybox },
        },
        kernel: {
          name: path.basename(deb.file),
          url: pathToFileURL(deb.file).href,
          hash: { algo: "sha256", mode: "flat", value: await sha256File(deb.file) },
          origin: { debianPackage: `linux-image-${deb.kernelVersion}`, version: deb.version, file: deb.file },
        },
      },
      ...(o.full ? { system: await lockSystem(cacheDir) } : {}),
    };
    writeJsonAtomic(lockFile, lock);
  }
  // Only the system image compiles the apps: a minimal world has no use for their sources.
  if (lock.system) copyApps(dir);
  const probes = path.join(dir, "probes.json");
  writeJsonAtomic(probes, DEMO_PROBES);
  const systemProbes = path.join(dir, "system-probes.json");
  if (lock.system) writeJsonAtomic(systemProbes, SYSTEM_PROBES);
  const pins = path.join(dir, "nix", "sources.json");
  const demoLib = await packPinned("demo-lib", dir);
  writeJsonAtomic(pins, { "demo-lib": demoLib });
  const flake = await writeFlake(dir, demoLib.url);

  const file = path.join(dir, "default.nix");
  if (o.fetch !== false) {
    // builtin:fetchurl runs inside the sandbox, which sees a file:// URL only when its directory is
    // an extra sandbox path. Fetching here (rather than `nix-store --add-fixed`) runs the real
    // fetcher and its hash check; later builds, and an offline rebuild from a closure, find the
    // sources already valid in the store.
    const dirs = [...new Set(lockedSources(lock).map(([, s]) => s.url).filter((u) => u.startsWith("file://")).map((u) => path.dirname(fileURLToPath(u))))];
    if (lock.system) dirs.push(fileURLToPath(lock.system.crates.url).replace(/\/$/, ""));
    for (const attribute of ["busybox", "kernelDeb", ...(lock.system ? ["systemSources"] : [])]) {
      const drvs = await instantiateMany({ file, attribute });
      log("demo-world", `fetching ${attribute} (${drvs.length === 1 ? drvs[0] : `${drvs.length} sources`})`);
      try {
        // A GC root per source: once collected, a source could only come back through this command.
        const root = path.join(dir, "gcroots", attribute);
        fs.mkdirSync(path.dirname(root), { recursive: true });
        await realise(drvs, { sandbox: true, offline: true, options: { "extra-sandbox-paths": dirs.join(" ") }, label: attribute }, ["--add-root", root]);
      } catch (e: any) {
        const mismatch = /hash mismatch[^\n]*/.exec(e.stderr ?? "");
        if (mismatch) throw new InputError(`source '${attribute}' does not match ${lockFile}: ${mismatch[0]} (rerun with --update-lock to re-pin)`);
        throw e;
      }
    }
  }
  log("demo-world", `ready: nix-build ${file} -A image --option sandbox true`);
  return {
    file, attribute: "image", nonReproducibleAttribute: "nonReproducible", probes,
    ...(lock.system ? { systemAttribute: "system", systemProbes } : {}),
    lock: lockFile, pins, flake, kernelVersion: lock.kernelVersion,
  };
}

export const step: StepDefinition<DemoWorldResult> = {
  name: "demo-world",
  summary: "Write the hermetic demo world (no nixpkgs; bootstrap sources pinned in lock.json) to <dir>",
  positionals: [{ name: "dir", description: "directory to write default.nix, lock.json, probes.json and the builders into" }],
  options: {
    "cache-dir": { type: "string", description: `where the Debian kernel package is (default $SUPPLY_CHAIN_CACHE or ${DEFAULT_CACHE_DIR})` },
    "kernel-deb": { type: "string", description: "use this linux-image-*-amd64 .deb instead of the newest in the cache dir" },
    busybox: { type: "string", description: "static busybox to bootstrap from (default /bin/busybox from busybox-static)" },
    "update-lock": { type: "boolean", description: "re-pin the sources even if <dir>/lock.json exists" },
    reset: { type: "boolean", description: "overwrite edited world files (default.nix, builders/, rootfs/) with the template" },
    "no-fetch": { type: "boolean", description: "don't realise the two bootstrap sources into the Nix store now" },
    full: { type: "boolean", description: "also pin and fetch the system image's sources (attribute `system`: Debian toolchain and runtime, Rust, crates)" },
  },
  async run({ values, positionals }) {
    return demoWorld({
      dir: positionals[0],
      cacheDir: values["cache-dir"],
      kernelDeb: values["kernel-deb"],
      busybox: values.busybox,
      updateLock: !!values["update-lock"],
      reset: !!values.reset,
      fetch: !values["no-fetch"],
      full: !!values.full,
    });
  },
};
