// How the Pulumi program starts (Pulumi.yaml: typescript false, nodeargs --require ./bin/pulumi-preload.js):
// the SDK loads without its function serialization's dependencies, and serialization still works.
// Real node processes, the installed SDK; no engine (the engine runs the program in demo-stack.test.ts).
import test from "ava";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import * as YAML from "yaml";
import * as fs from "node:fs";

const ROOT = path.join(__dirname, "..", "..");
const PRELOAD = path.join(ROOT, "bin", "pulumi-preload.js");

/** Runs `script` in a fresh node at the project root, with the preload or without; its JSON output. */
function inNode(script: string, preload: boolean): any {
  const r = spawnSync(process.execPath, [...(preload ? ["--require", PRELOAD] : []), "-e", script], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`node exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// What a program's `import * as pulumi from "@pulumi/pulumi"` loads, then one serialized function.
const SDK_THEN_SERIALIZE = `
const heavy = () => Object.keys(require.cache).filter((f) => /[/]node_modules[/](typescript|@npmcli[/]arborist)[/]/.test(f)).length;
const pulumi = require("@pulumi/pulumi");
const atStart = heavy();
pulumi.runtime.serializeFunction(() => 6 * 7).then((s) => {
  console.log(JSON.stringify({ atStart, afterSerialize: heavy(), text: s.text, exportName: s.exportName }));
});`;

test("with the preload, @pulumi/pulumi loads without TypeScript or arborist, and serializeFunction still serializes (loading them then)", (t) => {
  const r = inNode(SDK_THEN_SERIALIZE, true);
  t.is(r.atStart, 0, "the TypeScript compiler or @npmcli/arborist was loaded at start-up");
  t.true(r.afterSerialize > 0, "serializing a function loaded neither");
  t.regex(r.text, /6 \* 7/);
  t.truthy(r.exportName);
});

test("without the preload the SDK loads TypeScript and arborist at start-up (the case the preload exists for)", (t) => {
  const r = inNode(SDK_THEN_SERIALIZE, false);
  t.true(r.atStart > 0);
  t.regex(r.text, /6 \* 7/);
});

test("the preload's stand-ins are every function the installed SDK's deferred modules export, all async as theirs", (t) => {
  // Read in a child: loading the preload here would replace this test process's own .ts hook.
  const DEFERRED = inNode(`console.log(JSON.stringify(require(${JSON.stringify(PRELOAD)}).DEFERRED))`, false) as Record<string, string[]>;
  const closureDir = path.dirname(require.resolve("@pulumi/pulumi/runtime/closure/serializeClosure", { paths: [ROOT] }));
  const real = inNode(
    `const path = require("node:path"); const out = {};
     for (const f of ${JSON.stringify(Object.keys(DEFERRED))}) out[f] = Object.entries(require(path.join(${JSON.stringify(closureDir)}, f))).map(([k, v]) => k + ":" + (typeof v === "function" ? v.constructor.name : typeof v)).sort();
     console.log(JSON.stringify(out));`,
    false,
  );
  for (const [file, names] of Object.entries(DEFERRED)) {
    t.deepEqual(real[file], names.map((n) => `${n}:AsyncFunction`).sort(), `${file}: the SDK's exports changed; update DEFERRED in bin/pulumi-preload.js`);
  }
});

test("a deferred module that fails to load makes the call reject, as the real async function would, not throw", (t) => {
  const r = inNode(
    `const Module = require("node:module");
     const compile = Module.prototype._compile;
     Module.prototype._compile = function (code, file) {
       if (file.endsWith("serializeClosure.js")) throw new Error("cannot load serializeClosure");
       return compile.call(this, code, file);
     };
     const pulumi = require("@pulumi/pulumi");
     const say = (how) => console.log(JSON.stringify({ how }));
     try {
       pulumi.runtime.serializeFunction(() => 1).then(() => say("resolved"), (e) => say("rejected: " + e.message));
     } catch (e) {
       say("threw: " + e.message);
     }`,
    true,
  );
  t.is(r.how, "rejected: cannot load serializeClosure");
});

test("the Pulumi projects run their TypeScript through the preload, not ts-node; the example through the package's export", (t) => {
  const optionsOf = (file: string) => YAML.parse(fs.readFileSync(path.join(ROOT, file), "utf8")).runtime.options;
  for (const [file, preload] of [["Pulumi.yaml", "./bin/pulumi-preload.js"], ["consumer/Pulumi.yaml", "../bin/pulumi-preload.js"]]) {
    t.is(optionsOf(file).typescript, false, file);
    t.is(optionsOf(file).nodeargs, `--require ${preload}`, file);
    t.true(fs.existsSync(path.resolve(ROOT, path.dirname(file), preload)), file);
  }
  const example = optionsOf("examples/two-images/Pulumi.yaml");
  t.is(example.typescript, false);
  t.is(example.nodeargs, "--require secure-supply-chain/pulumi-preload");
  const exported = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")).exports["./pulumi-preload"];
  t.is(path.resolve(ROOT, exported), PRELOAD);
});

// Where a stack frame of the SDK's resource.js points once source-map-support is installed (as the runner does).
const SDK_FRAME_SOURCE = `
require("source-map-support/register");
const file = require.resolve("@pulumi/pulumi/resource.js");
const lines = require("node:fs").readFileSync(file, "utf8").split("\\n");
const line = lines.findIndex((l) => l.includes("Resource.stackTrace("));
const pos = require("source-map-support").mapSourcePosition({ source: file, line: line + 1, column: lines[line].search(/\\S/) });
console.log(JSON.stringify({ file, mapped: pos.source }));`;

test("with the preload, stack frames in node_modules keep their .js file; without it they point at the SDK's .ts sources, which do not ship", (t) => {
  const withPreload = inNode(SDK_FRAME_SOURCE, true);
  t.is(withPreload.mapped, withPreload.file);
  const without = inNode(SDK_FRAME_SOURCE, false);
  t.regex(without.mapped, /resource\.ts$/);
  t.false(fs.existsSync(without.mapped), `${without.mapped} exists after all`);
});
