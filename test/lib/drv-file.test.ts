import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { collectSources, Derivation, DerivationGraph, parseDerivationDump } from "../../pipeline/lib/derivation";
import { DrvFormatError, parseDrvFile, readDerivationGraph } from "../../pipeline/lib/drv-file";
import { cli, makeWorld, OFFLINE_ENV, removeWorld, World } from "../fixtures/closure-world/world";

let world: World;
test.before(() => {
  world = makeWorld("drv-file");
  // Every escape the ATerm writer uses (\" \\ \n \r \t), a value ending in a backslash, UTF-8, a file
  // bigger than the reader's first buffer, two outputs, and the world's recursive and flat fixed-output
  // sources below it.
  fs.writeFileSync(
    path.join(world.dir, "tricky.nix"),
    String.raw`let w = import ./default.nix; in {
  tricky = derivation {
    name = "tricky"; system = "x86_64-linux"; builder = "/bin/sh";
    outputs = [ "out" "doc" ];
    args = [ "-c" "echo \"quoted\" \\ > $out; echo > $doc" ];
    text = "line1\nline2\ttab\r\"q\" \\ \\\\ é 日本 \${not-interpolated} $HOME";
    trailing = "ends with a backslash \\";
    empty = "";
    big = builtins.concatStringsSep "" (builtins.genList (i: "0123456789") 20000);
    dep = w.target;
  };
}
`,
  );
});
test.after.always(() => removeWorld(world));

const instantiate = (file: string, attr: string) => execFileSync("nix-instantiate", [file, "-A", attr], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
const jsonDump = (drv: string) =>
  parseDerivationDump(execFileSync("nix", ["--extra-experimental-features", "nix-command", "show-derivation", "-r", drv], { encoding: "utf8", maxBuffer: 1 << 28 }));

/** Plain objects, sorted: the two readers may differ in key order and prototypes, never in content. */
function normalise(g: DerivationGraph) {
  const one = (d: Derivation) => ({
    drvPath: d.drvPath,
    name: d.name,
    outputs: { ...d.outputs },
    inputDrvs: Object.fromEntries(Object.entries(d.inputDrvs).sort()),
    inputSrcs: [...d.inputSrcs].sort(),
    builder: d.builder,
    env: Object.fromEntries(Object.entries(d.env).sort()),
  });
  return [...g.drvs.values()].map(one).sort((a, b) => (a.drvPath < b.drvPath ? -1 : 1));
}

test("the graph read from the .drv files equals Nix's own JSON dump of it (real nix: escapes, UTF-8, two outputs, fixed outputs)", (t) => {
  const root = instantiate(path.join(world.dir, "tricky.nix"), "tricky");
  const fromFiles = readDerivationGraph(root);
  const fromJson = jsonDump(root);
  t.is(fromFiles.storeDir, "/nix/store");
  t.is(fromFiles.drvs.size, fromJson.drvs.size);
  t.deepEqual(normalise(fromFiles), normalise(fromJson));
  // The reader's own breadth-first walk, reused by collectSources, gives what collectSources' walk gives.
  t.truthy(fromFiles.walk);
  const [a, b] = [collectSources(fromFiles, root), collectSources(fromJson, root)];
  t.deepEqual([...a.parent].sort(), [...b.parent].sort());
  t.deepEqual([...a.evalPaths], [...b.evalPaths]);
  t.deepEqual(a.fods.map((d) => d.drvPath), b.fods.map((d) => d.drvPath));
  const tricky = fromFiles.drvs.get(root)!;
  t.is(tricky.env.text, 'line1\nline2\ttab\r"q" \\ \\\\ é 日本 ${not-interpolated} $HOME');
  t.is(tricky.env.trailing, "ends with a backslash \\");
  t.is(tricky.env.empty, "");
  t.is(tricky.env.big.length, 200_000);
  t.true(fs.statSync(root).size > 64 * 1024);
  t.deepEqual(Object.keys(tricky.outputs).sort(), ["doc", "out"]);
  const fixed = [...fromFiles.drvs.values()].filter((d) => d.outputs.out?.fixed).map((d) => `${d.name}:${d.outputs.out.fixed!.mode}`);
  t.deepEqual(fixed.sort(), ["busybox:recursive", "greeting.txt:flat"]);
});

test("parseDrvFile refuses what is not a Derive(...) ATerm, naming the file (callers then fall back to the JSON dump)", (t) => {
  const root = instantiate(world.file, world.attribute);
  const text = fs.readFileSync(root, "utf8");
  t.notThrows(() => parseDrvFile(text, root));
  const cases: [string, RegExp][] = [
    [`DrvWithVersion("xp-dyn-drv",${text.slice("Derive(".length)}`, /expected 'Derive\('/],
    [text.slice(0, text.length - 40), /expected/],
    [text + "x", /the end of the derivation/],
    [text.replace('[("out"', '[(out"'), /expected a string/],
  ];
  for (const [bad, why] of cases) {
    const e = t.throws(() => parseDrvFile(bad, "/nix/store/bad.drv"), { instanceOf: DrvFormatError });
    t.regex(e!.message, /^\/nix\/store\/bad\.drv: /);
    t.regex(e!.message, why);
  }
});

test("closure in a store whose files are not at their store paths (real chroot store, NIX_REMOTE=local?root=...) falls back to the JSON dump and finds the same sources", (t) => {
  // A fresh world: its .drv files exist only inside the chroot store, so reading /nix/store/... fails.
  const w = makeWorld(`drv-file-chroot-${process.pid}-${Date.now()}`);
  const storeRoot = fs.mkdtempSync(path.join(w.dir, "chroot-"));
  try {
    const out = path.join(w.dir, "out");
    const env = { ...OFFLINE_ENV, NIX_REMOTE: `local?root=${storeRoot}` };
    const r = cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", out, "--no-export"], env);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stderr, /cannot read the \.drv files directly .*ENOENT.*reading the graph from Nix's JSON dump instead/);
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    t.deepEqual(m.sources.map((s: any) => s.name).sort(), ["busybox", "greeting.txt"]);
    t.false(fs.existsSync(m.target.drvPath), "the target's .drv is only in the chroot store");
    t.true(fs.existsSync(path.join(storeRoot, m.target.drvPath)));
  } finally {
    removeWorld(w);
  }
});

test("hash modes as the ATerm spells them: r:sha256 recursive, sha256 flat, text:sha256 text, git:sha1 git (never treated as a NAR hash)", (t) => {
  const hex = "0123456789abcdef0123456789abcdef01234567";
  const modes = ["r:sha256", "sha256", "text:sha256", "git:sha1"].map((algo) => {
    const h = algo.endsWith("sha1") ? hex : hex + "0".repeat(24);
    const text = `Derive([("out","/nix/store/${"a".repeat(32)}-x","${algo}","${h}")],[],[],"x86_64-linux","builtin:fetchurl",[],[("name","x")])`;
    return parseDrvFile(text, `/nix/store/${"b".repeat(32)}-x.drv`).outputs.out.fixed!.mode;
  });
  t.deepEqual(modes, ["recursive", "flat", "text", "git"]);
});

test("an instantiated target is evaluated read-only; a .drv file on disk that Nix has not registered is not trusted (real store: a crash leftover is rebuilt)", (t) => {
  const w = makeWorld(`drv-file-readonly-${process.pid}-${Date.now()}`);
  const out = path.join(w.dir, "out");
  try {
    const closure = () => cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", out, "--no-export"]);
    const readOnly = /\(already in the store\); read its derivation graph/;
    const first = closure(); // a new world: nothing instantiated yet, so the writing evaluation runs
    t.is(first.code, 0, first.stderr);
    t.notRegex(first.stderr, readOnly);
    const manifest = () => fs.readFileSync(path.join(out, "manifest.json"), "utf8");
    const expected = manifest();
    const second = closure();
    t.is(second.code, 0, second.stderr);
    t.regex(second.stderr, readOnly);
    t.is(manifest(), expected);

    // The root .drv unregistered but its file back in place, as an interrupted write can leave it.
    const root = JSON.parse(expected).target.drvPath as string;
    const text = fs.readFileSync(root);
    execFileSync("nix-store", ["--delete", root], { stdio: "ignore" });
    t.false(fs.existsSync(root));
    fs.writeFileSync(root, text);
    const third = closure();
    t.is(third.code, 0, third.stderr);
    t.notRegex(third.stderr, readOnly, "an unregistered .drv must not be read as if Nix had written it");
    t.is(execFileSync("nix-store", ["--check-validity", "--print-invalid", root], { encoding: "utf8" }), "", "the writing evaluation registered it again");
    t.is(manifest(), expected);
  } finally {
    removeWorld(w);
  }
});

test("graphOfDrv of a .drv that is only in a chroot store (real nix, NIX_REMOTE=local?root=...) falls back to Nix's JSON dump", (t) => {
  const w = makeWorld(`drv-file-graph-of-drv-${process.pid}-${Date.now()}`);
  try {
    const env = { ...OFFLINE_ENV, NIX_REMOTE: `local?root=${fs.mkdtempSync(path.join(w.dir, "chroot-"))}` };
    const drv = execFileSync("nix-instantiate", [w.file, "-A", w.attribute], { env, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    t.false(fs.existsSync(drv), "the .drv is not at its store path on this file system");
    const inStore = execFileSync("nix-store", ["--query", "--requisites", drv], { env, encoding: "utf8" }).split("\n").filter((p) => p.endsWith(".drv"));
    const lib = path.join(__dirname, "..", "..", "pipeline", "lib", "nix");
    const script = `require(${JSON.stringify(lib)}).graphOfDrv(process.argv[1]).then((g) => console.log(JSON.stringify({ format: g.format, drvs: [...g.drvs.keys()].sort() })))`;
    const out = JSON.parse(execFileSync(process.execPath, ["-r", "sucrase/register", "-e", script, drv], { env, encoding: "utf8" }));
    t.not(out.format, 0, "read from the dump, not from files");
    t.deepEqual(out.drvs, inStore.sort());
  } finally {
    removeWorld(w);
  }
});
