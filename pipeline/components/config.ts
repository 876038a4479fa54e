// The stack's configuration, validated up front: a wrong key or value is ONE error that names the
// key and what is allowed, before any resource is declared. Pure (no Pulumi import) so it is tested
// directly and by the mocked program.
import { parseMachines } from "../lib/builders";

export const PROJECT = "secure-supply-chain";

export type Isolation = "bwrap" | "docker";
export type Policy = "fail" | "warn";

/** The publisher's chain (build … attest), or an independent party's audit of a publisher's stack. */
export interface SupplyChainConfig {
  role: "publish";
  /** `demo-world`: generate the hermetic demo world; `nix`: a reviewed Nix file of this repo. */
  source: "demo-world" | "nix";
  /** demo-world: directory the demo world is generated into (once; edits there are kept). */
  demoWorldDir: string;
  /** demo-world: `minimal` (default: busybox stand-ins, seconds to build; attribute `image`) or
   * `system` (the real apps on PostgreSQL, built from the pinned toolchain; attribute `system`). */
  demoWorld: "system" | "minimal";
  /** The reviewed Nix file and the attribute that is the image. */
  file: string;
  attribute: string;
  /** Probe spec for the boot test (demo-world: its generated probes.json). */
  probes: string;
  isolation: Isolation;
  /** docker: the rebuilder image, pinned by digest (`repo@sha256:<64 hex>`). */
  rebuilderImage?: string;
  /** What a failed verdict (not reproducible, probe failed) does to `pulumi up`. */
  policy: Policy;
  bootTest: boolean;
  bootTimeout: number;
  bootMemory: number;
  /** Where the steps write their files (closure, rebuild, reports). */
  workDir: string;
  closureTop: number;
  /** Sign provenance, a verification summary and an SBOM (needs signingKey). */
  attest: boolean;
  /** runDetails.builder.id of the provenance (a URI); unset: the attest step's default. */
  builderId?: string;
  /** No step may try the network: substituters off for build and closure (demo-world: true). */
  offline: boolean;
  /** Nix remote builders (machines format, entries separated by ';') for build, rebuild and audit. */
  builders?: string;
  /** Builds this machine runs at once beside the builders (Nix's max-jobs; 0: all on the builders). */
  maxJobs?: number;
}

/**
 * role audit: `supply-chain audit` of another stack's signed claims (docs/audit.md), with this
 * stack's own checkout, store and key. What it needs of the publisher's chain, and nothing else.
 */
export interface AuditConfig extends Pick<SupplyChainConfig, "source" | "demoWorldDir" | "demoWorld" | "file" | "attribute" | "isolation" | "rebuilderImage" | "policy" | "workDir" | "attest" | "builderId" | "builders" | "maxJobs"> {
  role: "audit";
  /** The publisher's stack (`org/project/stack`), read through a StackReference. */
  publisherStack: string;
  /** The publisher's public key (SPKI PEM file, relative to the checkout): the auditor's own trust anchor, never the publisher's outputs. */
  publisherKey: string;
}

export type StackConfig = SupplyChainConfig | AuditConfig;
type ConfigKey = Exclude<keyof SupplyChainConfig | keyof AuditConfig, "role"> | "role";

/** The publisher-only keys: what the audit role does not do (build, boot, explain the closure). */
const PUBLISH_ONLY = ["probes", "bootTest", "bootTimeout", "bootMemory", "closureTop", "offline"] as const;
const AUDIT_ONLY = ["publisherStack", "publisherKey"] as const;

/**
 * Keys that are never part of SupplyChainConfig: their value is read as a Pulumi secret by the
 * program (`pulumi.Config.requireSecret`), and messages about them never quote the value.
 */
export const SECRET_KEYS = ["signingKey"] as const;

interface KeySpec {
  allowed: string;
  parse(v: string): unknown;
}

const oneOf = (...vals: string[]): KeySpec => ({
  allowed: `one of ${vals.map((v) => JSON.stringify(v)).join(", ")}`,
  parse(v) {
    if (!vals.includes(v)) throw new Error();
    return v;
  },
});
const text: KeySpec = {
  allowed: "a non-empty string",
  parse(v) {
    if (!v.trim()) throw new Error();
    return v;
  },
};
const bool: KeySpec = {
  allowed: "true or false",
  parse(v) {
    if (v !== "true" && v !== "false") throw new Error();
    return v === "true";
  },
};
const int = (min: number, max: number): KeySpec => ({
  allowed: `an integer from ${min} to ${max}`,
  parse(v) {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < min || n > max) throw new Error();
    return n;
  },
});
const digestPinned: KeySpec = {
  allowed: "an image pinned by digest, like nixos/nix@sha256:<64 hex digits>",
  parse(v) {
    if (!/^[a-z0-9][a-z0-9._\/:-]*@sha256:[0-9a-f]{64}$/.test(v)) throw new Error();
    return v;
  },
};

export const KEYS: Record<ConfigKey, KeySpec> = {
  role: oneOf("publish", "audit"),
  publisherStack: {
    allowed: "a stack name, like organization/secure-supply-chain/demo",
    parse(v) {
      if (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+){0,2}$/.test(v)) throw new Error();
      return v;
    },
  },
  publisherKey: {
    allowed: "the path of the publisher's Ed25519 public key (SPKI PEM), like stacks/demo-signing.pub",
    parse(v) {
      if (!v.trim() || v.includes("-----BEGIN")) throw new Error();
      return v;
    },
  },
  source: oneOf("demo-world", "nix"),
  demoWorldDir: text,
  demoWorld: oneOf("system", "minimal"),
  file: text,
  attribute: text,
  probes: text,
  isolation: oneOf("bwrap", "docker"),
  rebuilderImage: digestPinned,
  policy: oneOf("fail", "warn"),
  bootTest: bool,
  bootTimeout: int(10, 7200),
  bootMemory: int(128, 65536),
  workDir: text,
  closureTop: int(1, 1000),
  offline: bool,
  attest: bool,
  builders: {
    allowed: "Nix remote builders in the machines format, entries separated by ';', each with its ssh key file and base64 host key (ssh-ng://root@host x86_64-linux /key 1 1 - - <host key>)",
    parse(v) {
      if (!parseMachines(v).length) throw new Error();
      return v;
    },
  },
  maxJobs: int(0, 1024),
  builderId: {
    allowed: "a URI naming the builder, like https://example.com/builders/ci-1",
    parse(v) {
      if (!/^[a-z][a-z0-9+.-]*:\S+$/.test(v)) throw new Error();
      return v;
    },
  },
};

const SECRET_SPECS: Record<(typeof SECRET_KEYS)[number], KeySpec> = {
  signingKey: {
    allowed: "an Ed25519 private key in PKCS#8 PEM (the signing.key of `supply-chain keygen`), set with `pulumi config set --secret`",
    parse(v) {
      if (!/^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----\s*$/.test(v.trim() + "\n")) throw new Error();
      return v;
    },
  },
};

export class ConfigError extends Error {}

/** Namespaces whose keys belong to the engine or to a provider this program uses: left alone. */
export const OTHER_NAMESPACES = ["pulumi", "docker", "command"];

/**
 * `all` is what `pulumi.runtime.allConfig()` returns: `<namespace>:<key>` → string (objects as
 * JSON). Keys of the providers' namespaces (e.g. `docker:host`) are left alone; any other namespace
 * is a mistyped project name, whose keys would otherwise be silently ignored.
 */
export function parseConfig(all: Record<string, string>, stack: string): StackConfig {
  const raw: Record<string, string> = {};
  const secretsSet = new Set<string>();
  for (const [k, v] of Object.entries(all)) {
    const i = k.indexOf(":");
    const ns = k.slice(0, i);
    if (ns !== PROJECT) {
      if (OTHER_NAMESPACES.includes(ns)) continue;
      throw new ConfigError(
        `config key '${k}' is not known: its namespace '${ns}' is neither this project's ('${PROJECT}') nor one of ${OTHER_NAMESPACES.map((x) => `'${x}'`).join(", ")}`,
      );
    }
    const key = k.slice(i + 1);
    if ((SECRET_KEYS as readonly string[]).includes(key)) {
      try {
        SECRET_SPECS[key as (typeof SECRET_KEYS)[number]].parse(v);
      } catch {
        // The value is a secret: never in a message.
        throw new ConfigError(`config key '${PROJECT}:${key}' is not ${SECRET_SPECS[key as (typeof SECRET_KEYS)[number]].allowed}`);
      }
      secretsSet.add(key);
      continue;
    }
    // Own keys only: 'constructor' or 'toString' are not config keys.
    if (!Object.hasOwn(KEYS, key)) {
      throw new ConfigError(
        `config key '${k}' is not known (allowed keys: ${[...Object.keys(KEYS), ...SECRET_KEYS].map((x) => `${PROJECT}:${x}`).join(", ")})`,
      );
    }
    raw[key] = v;
  }
  return resolve(raw, secretsSet.has("signingKey"), {
    name: (key) => `config key '${PROJECT}:${key}'`,
    withSigningKey: `\`pulumi config set --secret ${PROJECT}:signingKey < signing.key\` (a key from \`supply-chain keygen\`), or set ${PROJECT}:attest to false`,
    workDir: `.supply-chain/${stack}`,
    demoWorldDir: `.supply-chain/${stack}/demo-world`,
  });
}

/** How one source of settings (a stack's config, a chain's args) names a key, and its defaults. */
interface Naming {
  /** `config key 'secure-supply-chain:policy'`, `chain 'web': arg 'policy'`. */
  name(key: string): string;
  /** How to provide the signing key, for the message when it is missing. */
  withSigningKey: string;
  workDir: string;
  demoWorldDir: string;
}

/** Values (as strings) checked against KEYS, then the combinations and defaults: one contract for stack config and chain args. */
function resolve(raw: Record<string, string>, hasSigningKey: boolean, n: Naming): StackConfig {
  const v: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    try {
      v[key] = KEYS[key as ConfigKey].parse(value);
    } catch (e) {
      // A parser that knows what is wrong (the builders' machines format) says it; the others throw no message.
      const why = e instanceof Error && e.message ? ` (${e.message})` : "";
      throw new ConfigError(`${n.name(key)} has value ${JSON.stringify(value)}; allowed: ${KEYS[key as ConfigKey].allowed}${why}`);
    }
  }
  const need = (key: ConfigKey, why: string): never => {
    throw new ConfigError(`${n.name(key)} is required${why ? ` ${why}` : ""}; allowed: ${KEYS[key].allowed}`);
  };

  const role = (v.role as StackConfig["role"] | undefined) ?? "publish";
  for (const k of role === "audit" ? PUBLISH_ONLY : AUDIT_ONLY) {
    if (k in v) throw new ConfigError(`${n.name(k)} does not apply to role "${role}"${role === "audit" ? " (an audit rebuilds and compares; booting and explaining the closure are the publisher's)" : ' (set role: "audit")'}`);
  }
  const source = (v.source as SupplyChainConfig["source"] | undefined) ?? need("source", "");
  const demoWorldDir = (v.demoWorldDir as string | undefined) ?? n.demoWorldDir;
  let file: string, attribute: string, probes: string;
  const demoWorld = (v.demoWorld as SupplyChainConfig["demoWorld"] | undefined) ?? "minimal";
  if (source === "demo-world") {
    for (const k of ["file", "probes"] as const) {
      if (k in v) throw new ConfigError(`${n.name(k)} cannot be set with source "demo-world" (the demo world generates it; set demoWorldDir instead)`);
    }
    file = `${demoWorldDir}/default.nix`;
    attribute = (v.attribute as string | undefined) ?? (demoWorld === "system" ? "system" : "image");
    probes = `${demoWorldDir}/${demoWorld === "system" ? "system-probes.json" : "probes.json"}`;
  } else {
    for (const k of ["demoWorldDir", "demoWorld"] as const)
      if (k in v) throw new ConfigError(`${n.name(k)} only applies to source "demo-world"`);
    file = (v.file as string | undefined) ?? need("file", 'with source "nix"');
    attribute = (v.attribute as string | undefined) ?? need("attribute", 'with source "nix"');
    probes = (v.probes as string | undefined) ?? "";
  }
  const isolation = (v.isolation as Isolation | undefined) ?? "bwrap";
  const rebuilderImage = v.rebuilderImage as string | undefined;
  if (isolation === "docker" && !rebuilderImage) need("rebuilderImage", 'with isolation "docker"');
  if (isolation !== "docker" && rebuilderImage) {
    throw new ConfigError(`${n.name("rebuilderImage")} only applies to isolation "docker" (isolation is "${isolation}")`);
  }
  const bootTest = role === "publish" && ((v.bootTest as boolean | undefined) ?? true);
  if (bootTest && !probes) need("probes", "when bootTest is true");
  const attest = (v.attest as boolean | undefined) ?? true;
  if (attest && !hasSigningKey) throw new ConfigError(`${n.name("signingKey")} is required when attest is true: ${n.withSigningKey}`);
  if (!attest && "builderId" in v) throw new ConfigError(`${n.name("builderId")} only applies when attest is true`);
  if (v.builders && isolation !== "bwrap") throw new ConfigError(`${n.name("builders")} needs isolation "bwrap" (the docker isolation cannot reach remote builders)`);
  if (v.maxJobs === 0 && !v.builders) throw new ConfigError(`${n.name("maxJobs")} 0 builds nothing without builders`);
  // What both roles share: the reviewed target, the isolation, the verdict's policy, where files go, signing.
  const common = {
    source,
    demoWorldDir,
    demoWorld,
    file,
    attribute,
    isolation,
    ...(rebuilderImage ? { rebuilderImage } : {}),
    policy: (v.policy as Policy | undefined) ?? "fail",
    workDir: (v.workDir as string | undefined) ?? n.workDir,
    attest,
    ...(v.builderId ? { builderId: v.builderId as string } : {}),
    ...(v.builders ? { builders: v.builders as string } : {}),
    ...(v.maxJobs !== undefined ? { maxJobs: v.maxJobs as number } : {}),
  };
  if (role === "audit") {
    return {
      role,
      ...common,
      publisherStack: (v.publisherStack as string | undefined) ?? need("publisherStack", 'with role "audit"'),
      publisherKey: (v.publisherKey as string | undefined) ?? need("publisherKey", 'with role "audit"'),
    };
  }
  return {
    role,
    ...common,
    probes,
    bootTest,
    bootTimeout: (v.bootTimeout as number | undefined) ?? 600,
    bootMemory: (v.bootMemory as number | undefined) ?? 1024,
    closureTop: (v.closureTop as number | undefined) ?? 10,
    // The demo world needs nothing from outside; a real image fetches what it lacks.
    offline: (v.offline as boolean | undefined) ?? source === "demo-world",
  };
}

/**
 * A supply chain declared in a user's own program (`new SupplyChain(name, args)`): the stack
 * config's keys of role publish, typed. Unset keys take the same defaults as a stack's config, except
 * `source` (`nix`: your own Nix file) and `workDir` (`.supply-chain/<stack>/<chain>`, one per chain).
 */
export interface ChainArgs {
  /** `nix` (default): `file` and `attribute` name the image; `demo-world`: the generated hermetic demo world. */
  source?: "nix" | "demo-world";
  /** The reviewed Nix file, relative to the project (nix: required). */
  file?: string;
  /** The attribute of `file` that is the image (nix: required). */
  attribute?: string;
  /** The probe spec of the boot test (docs/boot-test.md; required unless bootTest is false). */
  probes?: string;
  /** demo-world: `minimal` (the busybox world) or `system` (the real apps on PostgreSQL). */
  demoWorld?: "system" | "minimal";
  /** demo-world: where it is generated (default `<workDir>/demo-world`). */
  demoWorldDir?: string;
  /** How the offline rebuild is isolated (default `bwrap`; `docker` needs rebuilderImage). */
  isolation?: "bwrap" | "docker";
  /** docker: the rebuilder image, pinned by digest (`repo@sha256:<64 hex>`). */
  rebuilderImage?: string;
  /** What a failed verdict (not reproducible, probe failed) does: `fail` (default) fails the update, `warn` warns. */
  policy?: "fail" | "warn";
  /** Boot the image in QEMU and run the probes (default true). */
  bootTest?: boolean;
  /** Seconds the boot test may take (default 600). */
  bootTimeout?: number;
  /** The VM's memory in MiB (default 1024). */
  bootMemory?: number;
  /** Where this chain's steps write their files (default `.supply-chain/<stack>/<chain>`). */
  workDir?: string;
  /** How many of the biggest sources the closure report explains (default 10). */
  closureTop?: number;
  /** Sign provenance, a verification summary and an SBOM (default true: needs signingKey). */
  attest?: boolean;
  /** runDetails.builder.id of the provenance (a URI). */
  builderId?: string;
  /** No step may try the network: substituters off for build and closure (default: true for demo-world, false for nix). */
  offline?: boolean;
  /** Nix remote builders for build and rebuild (machines format, entries separated by ';'; bwrap only; docs/scaling.md). */
  builders?: string;
  /** Builds this machine runs at once beside the builders (Nix's max-jobs; 0: all on the builders). */
  maxJobs?: number;
}

const CHAIN_KEYS = Object.keys(KEYS).filter((k) => !["role", ...AUDIT_ONLY].includes(k));

/** A key added to SupplyChainConfig but not to ChainArgs (or the reverse) is a type error here. */
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type ChainArgsCoverTheConfig = SameKeys<keyof ChainArgs, Exclude<keyof SupplyChainConfig, "role">> extends true ? true : never;
const chainArgsCoverTheConfig: ChainArgsCoverTheConfig = true;
void chainArgsCoverTheConfig;

/**
 * A chain's args checked as a stack's config is (the same KEYS and combinations), every message naming
 * the chain and the arg. `hasSigningKey`: whether a signing key was passed with them.
 */
export function chainConfig(chain: string, args: ChainArgs, stack: string, hasSigningKey: boolean): SupplyChainConfig {
  const raw: Record<string, string> = {};
  for (const [key, value] of Object.entries(args ?? {})) {
    if (value === undefined) continue;
    if (!CHAIN_KEYS.includes(key)) throw new ConfigError(`chain '${chain}': arg '${key}' is not known (allowed args: ${[...CHAIN_KEYS, "signingKey"].join(", ")})`);
    if (!["string", "number", "boolean"].includes(typeof value)) {
      const kind = value === null ? "null" : Array.isArray(value) ? "a list" : `a ${typeof value}`;
      throw new ConfigError(`chain '${chain}': arg '${key}' is ${kind}; allowed: ${KEYS[key as ConfigKey].allowed}`);
    }
    raw[key] = String(value);
  }
  raw.source ??= "nix";
  const workDir = raw.workDir ?? `.supply-chain/${stack}/${chain}`;
  return resolve(raw, hasSigningKey, {
    name: (key) => `chain '${chain}': arg '${key}'`,
    withSigningKey: "pass signingKey (a Pulumi secret holding the PEM of `supply-chain keygen`), or set attest to false",
    workDir,
    demoWorldDir: `${workDir}/demo-world`,
  }) as SupplyChainConfig;
}
