// Config validation is plain code: tested directly, every rule with a case built to fail.
import test from "ava";
import { parseConfig, ConfigError } from "../../pipeline/components/config";

const P = "secure-supply-chain";
const demo = { [`${P}:source`]: "demo-world", [`${P}:isolation`]: "bwrap" };

test("demo defaults: generated world, bwrap, fail policy, boot test on", (t) => {
  const c = parseConfig(demo, "demo");
  t.is(c.file, ".supply-chain/demo/demo-world/default.nix");
  t.is(c.attribute, "image");
  t.is(c.probes, ".supply-chain/demo/demo-world/probes.json");
  t.is(c.policy, "fail");
  t.true(c.bootTest);
  t.is(c.workDir, ".supply-chain/demo");
});

test("offline: on by default for the demo world (it needs nothing from outside), off for a reviewed Nix file, settable", (t) => {
  t.true(parseConfig(demo, "demo").offline);
  const nix = { [`${P}:source`]: "nix", [`${P}:file`]: "nix/default.nix", [`${P}:attribute`]: "iso", [`${P}:bootTest`]: "false" };
  t.false(parseConfig(nix, "dev").offline);
  t.true(parseConfig({ ...nix, [`${P}:offline`]: "true" }, "dev").offline);
  t.false(parseConfig({ ...demo, [`${P}:offline`]: "false" }, "demo").offline);
});

test("keys of other namespaces (providers) are left alone", (t) => {
  t.notThrows(() => parseConfig({ ...demo, "docker:host": "unix:///x" }, "s"));
});

const bad: [string, Record<string, string>, RegExp][] = [
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
  const stacks = fs.readdirSync(dir).filter((f) => /^Pulumi\.[a-z]+\.yaml$/.test(f));
  t.true(stacks.length >= 3, stacks.join(", "));
  for (const f of stacks) {
    const cfg = YAML.parse(fs.readFileSync(path.join(dir, f), "utf8")).config as Record<string, unknown>;
    const flat = Object.fromEntries(Object.entries(cfg).map(([k, v]) => [k, String(v)]));
    t.notThrows(() => parseConfig(flat, f.split(".")[1]), f);
  }
});
