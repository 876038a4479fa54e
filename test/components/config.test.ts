// Config validation is plain code: tested directly, every rule with a case built to fail.
import test from "ava";
import { parseConfig as parseAny, chainConfig, ChainArgs, ConfigError, SupplyChainConfig, AuditConfig } from "../../pipeline/components/config";
import { TEST_SIGNING_KEY } from "./harness";

/** A publisher's config (role publish, the default): the fields of the chain. */
function parseConfig(all: Record<string, string>, stack: string): SupplyChainConfig {
  const c = parseAny(all, stack);
  if (c.role !== "publish") throw new Error(`role ${c.role}, expected publish`);
  return c;
}
function parseAudit(all: Record<string, string>, stack: string): AuditConfig {
  const c = parseAny(all, stack);
  if (c.role !== "audit") throw new Error(`role ${c.role}, expected audit`);
  return c;
}

const P = "secure-supply-chain";
const demo = { [`${P}:source`]: "demo-world", [`${P}:isolation`]: "bwrap", [`${P}:signingKey`]: TEST_SIGNING_KEY };
const unsigned = { [`${P}:source`]: "demo-world", [`${P}:isolation`]: "bwrap" };

test("demo defaults: generated world, its minimal image, bwrap, fail policy, boot test on", (t) => {
  const c = parseConfig(demo, "demo");
  t.is(c.file, ".supply-chain/demo/demo-world/default.nix");
  t.is(c.source === "demo-world" && c.demoWorld, "minimal");
  t.is(c.attribute, "image");
  t.is(c.probes, ".supply-chain/demo/demo-world/probes.json");
  t.is(c.policy, "fail");
  t.true(c.bootTest);
  t.is(c.workDir, ".supply-chain/demo");
  t.true(c.attest);
  t.false(JSON.stringify(c).includes("PRIVATE KEY"), "the key's value is not part of the parsed config: the program reads it as a secret");
});

test("demoWorld system: the system image and its probes; a nix source refuses the key", (t) => {
  const c = parseConfig({ ...demo, [`${P}:demoWorld`]: "system" }, "demo");
  t.is(c.attribute, "system");
  t.is(c.probes, ".supply-chain/demo/demo-world/system-probes.json");
  const wrong = t.throws(() => parseConfig({ ...demo, [`${P}:demoWorld`]: "full" }, "demo"));
  t.regex(wrong!.message, /config key 'secure-supply-chain:demoWorld' has value "full"; allowed: .*system.*minimal/);
  const nix = t.throws(() => parseConfig({ [`${P}:source`]: "nix", [`${P}:file`]: "f.nix", [`${P}:attribute`]: "a", [`${P}:demoWorld`]: "system" }, "dev"));
  t.regex(nix!.message, /config key 'secure-supply-chain:demoWorld' only applies to source "demo-world"/);
});

test("a signing key that is not a PKCS#8 PEM is refused without quoting it", (t) => {
  const secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n";
  const e = t.throws(() => parseConfig({ ...demo, [`${P}:signingKey`]: secret }, "s"), { instanceOf: ConfigError });
  t.regex(e!.message, /'secure-supply-chain:signingKey' is not an Ed25519 private key in PKCS#8 PEM/);
  t.false(e!.message.includes("c2VjcmV0"));
});

test("offline: on by default for the demo world (it needs nothing from outside), off for a reviewed Nix file, settable", (t) => {
  t.true(parseConfig(demo, "demo").offline);
  const nix = { [`${P}:source`]: "nix", [`${P}:file`]: "nix/default.nix", [`${P}:attribute`]: "iso", [`${P}:bootTest`]: "false", [`${P}:attest`]: "false" };
  t.false(parseConfig(nix, "dev").offline);
  t.true(parseConfig({ ...nix, [`${P}:offline`]: "true" }, "dev").offline);
  t.false(parseConfig({ ...demo, [`${P}:offline`]: "false" }, "demo").offline);
});

const BUILDER = "ssh-ng://root@b1 x86_64-linux /etc/builder.key 2 1 - - HOSTKEY".replace("HOSTKEY", "c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUovYTJmT2hoQUhnaE5BQVRKWVZMYnNRa1Z4N0Z6U2dLOWlsay9DVzRhVUUgYjEK");

test("builders and maxJobs: both roles pass them on; unset, no builders and Nix's own max-jobs", (t) => {
  const c = parseConfig({ ...demo, [`${P}:builders`]: BUILDER, [`${P}:maxJobs`]: "0" }, "demo");
  t.is(c.builders, BUILDER);
  t.is(c.maxJobs, 0);
  const a = parseAudit({ ...auditor, [`${P}:builders`]: BUILDER }, "demo-audit");
  t.is(a.builders, BUILDER);
  t.false("builders" in parseConfig(demo, "demo") || "maxJobs" in parseConfig(demo, "demo"));
});

test("keys of other namespaces (providers) are left alone", (t) => {
  t.notThrows(() => parseConfig({ ...demo, "docker:host": "unix:///x" }, "s"));
});

const without = (c: Record<string, string>, key: string) => Object.fromEntries(Object.entries(c).filter(([k]) => k !== `${P}:${key}`));
const auditor = { ...demo, [`${P}:role`]: "audit", [`${P}:publisherStack`]: "organization/secure-supply-chain/demo", [`${P}:publisherKey`]: "stacks/demo-signing.pub" };

test("role audit: the publisher's stack and key, this stack's own demo world, work dir and key", (t) => {
  const c = parseAudit(auditor, "demo-audit");
  t.is(c.publisherStack, "organization/secure-supply-chain/demo");
  t.is(c.publisherKey, "stacks/demo-signing.pub");
  t.is(c.file, ".supply-chain/demo-audit/demo-world/default.nix");
  t.is(c.workDir, ".supply-chain/demo-audit");
  t.true(c.attest);
  t.false("bootTest" in c, "an audit boots nothing");
  t.is(parseConfig(demo, "demo").role, "publish", "publish is the default role");
});

const bad: [string, Record<string, string>, RegExp][] = [
  ["unknown role", { ...demo, [`${P}:role`]: "rebuild" }, /'secure-supply-chain:role' has value "rebuild"; allowed: one of "publish", "audit"/],
  ["audit without the publisher's stack", without(auditor, "publisherStack"), /'secure-supply-chain:publisherStack' is required with role "audit"/],
  ["audit without the publisher's key", without(auditor, "publisherKey"), /'secure-supply-chain:publisherKey' is required with role "audit"/],
  ["publisher key given as PEM text", { ...auditor, [`${P}:publisherKey`]: "-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----" }, /'secure-supply-chain:publisherKey' has value .*allowed: the path of the publisher's Ed25519 public key/],
  ["a stack name that is not one", { ...auditor, [`${P}:publisherStack`]: "org/proj/demo/extra" }, /'secure-supply-chain:publisherStack' has value "org\/proj\/demo\/extra"; allowed: a stack name/],
  ["audit with a boot test", { ...auditor, [`${P}:bootTest`]: "true" }, /'secure-supply-chain:bootTest' does not apply to role "audit"/],
  ["publisher with an audited stack", { ...demo, [`${P}:publisherStack`]: "org/p/s" }, /'secure-supply-chain:publisherStack' does not apply to role "publish" \(set role: "audit"\)/],

  ["unknown key", { ...demo, [`${P}:polcy`]: "warn" }, /'secure-supply-chain:polcy' is not known \(allowed keys: .*secure-supply-chain:policy/],
  ["mistyped namespace", { ...demo, "supply-chain:policy": "warn" }, /'supply-chain:policy' is not known: its namespace 'supply-chain' is neither this project's \('secure-supply-chain'\)/],
  ["inherited property name as key", { ...demo, [`${P}:constructor`]: "x" }, /'secure-supply-chain:constructor' is not known \(allowed keys:/],
  ["bad enum", { ...demo, [`${P}:policy`]: "ignore" }, /'secure-supply-chain:policy' has value "ignore"; allowed: one of "fail", "warn"/],
  ["bad bool", { ...demo, [`${P}:bootTest`]: "yes" }, /'secure-supply-chain:bootTest' has value "yes"; allowed: true or false/],
  ["bad offline", { ...demo, [`${P}:offline`]: "yes" }, /'secure-supply-chain:offline' has value "yes"; allowed: true or false/],
  ["bad int", { ...demo, [`${P}:bootTimeout`]: "5" }, /'secure-supply-chain:bootTimeout' has value "5"; allowed: an integer from 10 to 7200/],
  ["image by tag, not digest", { ...demo, [`${P}:isolation`]: "docker", [`${P}:rebuilderImage`]: "nixos/nix:latest" }, /'secure-supply-chain:rebuilderImage' has value "nixos\/nix:latest"; allowed: an image pinned by digest/],
  ["docker without image", { ...demo, [`${P}:isolation`]: "docker" }, /'secure-supply-chain:rebuilderImage' is required with isolation "docker"/],
  ["image without docker", { ...demo, [`${P}:rebuilderImage`]: "nixos/nix@sha256:" + "0".repeat(64) }, /only applies to isolation "docker"/],
  ["no source", { [`${P}:isolation`]: "bwrap" }, /'secure-supply-chain:source' is required/],
  ["nix without file", { [`${P}:source`]: "nix", [`${P}:attribute`]: "iso" }, /'secure-supply-chain:file' is required with source "nix"/],
  ["nix boot test without probes", { [`${P}:source`]: "nix", [`${P}:file`]: "nix/default.nix", [`${P}:attribute`]: "iso" }, /'secure-supply-chain:probes' is required when bootTest is true/],
  ["demo with a file", { ...demo, [`${P}:file`]: "x.nix" }, /'secure-supply-chain:file' cannot be set with source "demo-world"/],
  ["attest without a signing key", unsigned, /'secure-supply-chain:signingKey' is required when attest is true: `pulumi config set --secret/],
  ["builderId without attest", { ...unsigned, [`${P}:attest`]: "false", [`${P}:builderId`]: "https://b/1" }, /'secure-supply-chain:builderId' only applies when attest is true/],
  ["builderId not a URI", { ...demo, [`${P}:builderId`]: "my laptop" }, /'secure-supply-chain:builderId' has value "my laptop"; allowed: a URI/],
  ["a builder without its host key", { ...demo, [`${P}:builders`]: "ssh-ng://root@b1 x86_64-linux /k 1" }, /'secure-supply-chain:builders' has value .*allowed: Nix remote builders in the machines format.*\(builder 'ssh-ng:\/\/root@b1': no public host key/],
  ["builders with the docker isolation", { ...demo, [`${P}:isolation`]: "docker", [`${P}:rebuilderImage`]: "nixos/nix@sha256:" + "0".repeat(64), [`${P}:builders`]: BUILDER }, /'secure-supply-chain:builders' needs isolation "bwrap"/],
  ["maxJobs 0 without builders", { ...demo, [`${P}:maxJobs`]: "0" }, /'secure-supply-chain:maxJobs' 0 builds nothing without builders/],
];
for (const [name, cfg, re] of bad) {
  test(`rejected: ${name}`, (t) => {
    const e = t.throws(() => parseConfig(cfg, "s"), { instanceOf: ConfigError });
    t.regex(e!.message, re);
  });
}

test("the committed stacks parse", (t) => {
  const fs = require("node:fs") as typeof import("node:fs");
  const path = require("node:path") as typeof import("node:path");
  const YAML = require("yaml");
  const dir = path.join(__dirname, "..", "..", "stacks");
  const stacks = fs.readdirSync(dir).filter((f) => /^Pulumi\.[a-z-]+\.yaml$/.test(f));
  t.true(stacks.length >= 3, stacks.join(", "));
  for (const f of stacks) {
    const cfg = YAML.parse(fs.readFileSync(path.join(dir, f), "utf8")).config as Record<string, unknown>;
    // An encrypted value ({secure: ...}) is the signing key; a stack that leaves it to its operator
    // (`pulumi config set --secret`) must parse once it is set.
    const flat = Object.fromEntries(Object.entries(cfg).map(([k, v]) => [k, typeof v === "object" ? TEST_SIGNING_KEY : String(v)]));
    if (flat[`${P}:attest`] !== "false") flat[`${P}:signingKey`] ??= TEST_SIGNING_KEY;
    t.notThrows(() => parseAny(flat, f.split(".")[1]), f);
  }
});

test("a chain's args (a user's program): the stack config's rules and defaults, own work dir per chain, source nix by default", (t) => {
  const c = chainConfig("web", { file: "images.nix", attribute: "web", probes: "probes/web.yaml", bootTimeout: 900, attest: false }, "dev", false);
  t.is(c.source, "nix");
  t.is(c.workDir, ".supply-chain/dev/web");
  t.is(c.bootTimeout, 900);
  t.is(c.policy, "fail");
  t.false(c.offline);
  const world = chainConfig("w", { source: "demo-world", demoWorld: "system", attest: false }, "dev", false);
  t.is(world.file, ".supply-chain/dev/w/demo-world/default.nix");
  t.is(world.attribute, "system");
  t.true(chainConfig("signed", { file: "f.nix", attribute: "a", probes: "p.yaml" }, "dev", true).attest, "attest is on by default, with the key passed");
});

const chainCases: [string, ChainArgs | Record<string, unknown>, boolean, RegExp][] = [
  ["bad enum", { file: "f.nix", attribute: "a", probes: "p.yaml", policy: "maybe" as any, attest: false }, false, /^chain 'web': arg 'policy' has value "maybe"; allowed: one of "fail", "warn"$/],
  ["a number that is not an integer", { file: "f.nix", attribute: "a", probes: "p.yaml", bootMemory: 512.5, attest: false }, false, /^chain 'web': arg 'bootMemory' has value "512.5"; allowed: an integer from 128 to 65536$/],
  ["a list where a string goes", { file: ["f.nix"], attribute: "a", attest: false }, false, /^chain 'web': arg 'file' is a list; allowed: a non-empty string$/],
  ["unknown arg", { file: "f.nix", attribute: "a", probe: "p.yaml", attest: false }, false, /^chain 'web': arg 'probe' is not known \(allowed args: .*probes.*signingKey\)$/],
  ["an audit's arg", { file: "f.nix", attribute: "a", publisherStack: "x", attest: false }, false, /^chain 'web': arg 'publisherStack' is not known/],
  ["nix without attribute", { file: "f.nix", attest: false }, false, /^chain 'web': arg 'attribute' is required with source "nix"/],
  ["boot test without probes", { file: "f.nix", attribute: "a", attest: false }, false, /^chain 'web': arg 'probes' is required when bootTest is true/],
  ["attest without a key", { file: "f.nix", attribute: "a", probes: "p.yaml" }, false, /^chain 'web': arg 'signingKey' is required when attest is true: pass signingKey/],
];
for (const [name, args, key, message] of chainCases) {
  test(`chain args rejected: ${name}`, (t) => {
    const err = t.throws(() => chainConfig("web", args as ChainArgs, "dev", key), { instanceOf: ConfigError });
    t.regex(err!.message, message);
  });
}
