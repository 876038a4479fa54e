import test from "ava";
import * as fs from "node:fs";
import * as path from "node:path";
import { collectSources, chainTo, DumpStreamParser, findRoot, isFixedOutput, parseDerivationDump, urlsOf } from "../../pipeline/lib/derivation";
import { fixedOutputPath, nix32Decode, nix32Encode, parseHash } from "../../pipeline/lib/storepath";

const FIX = path.join(__dirname, "..", "fixtures", "derivations");
const load = (f: string) => parseDerivationDump(fs.readFileSync(path.join(FIX, f), "utf8"));

const BUSYBOX = "/nix/store/71fc7s32zl20dc955bhghy5dvalm7ndz-busybox";
const GREETING = "/nix/store/72i6g0x7q14nz19sqrama21v2v0gnp7j-greeting.txt";

/** The samples (README.md): real recordings of Nix 2.8, 2.26 and 2.34; 2.32's format converted by hand. */
const SAMPLES = [["nix-2.8.json", 2], ["nix-2.26.json", 2], ["nix-2.32-v3-basenames.json", 3], ["nix-2.34-v4.json", 4]] as const;

/** A format-independent view of the graph, to compare the samples. */
function normalise(g: ReturnType<typeof load>) {
  return [...g.drvs.values()]
    .map((d) => ({ drv: d.drvPath, name: d.name, outputs: d.outputs, inputDrvs: d.inputDrvs, inputSrcs: [...d.inputSrcs].sort() }))
    .sort((a, b) => a.drv.localeCompare(b.drv));
}

for (const [file, format] of SAMPLES) {
  test(`parses the ${file} sample (format ${format}) into absolute paths and declared hashes`, (t) => {
    const g = load(file);
    t.is(g.format, format);
    t.is(g.storeDir, "/nix/store");
    t.is(g.drvs.size, 5);
    const fods = [...g.drvs.values()].filter(isFixedOutput);
    t.deepEqual(fods.map((d) => d.name).sort(), ["busybox", "greeting.txt"]);
    const bb = fods.find((d) => d.name === "busybox")!;
    t.is(bb.outputs.out.path, BUSYBOX);
    t.is(bb.outputs.out.fixed!.mode, "recursive");
    t.is(bb.outputs.out.fixed!.algo, "sha256");
    t.is(bb.outputs.out.fixed!.hex, "494cdad037cf7d0a75ee816fc060b92663de1309602aff43c2f9ce55dade4c40");
    const gr = fods.find((d) => d.name === "greeting.txt")!;
    t.is(gr.outputs.out.path, GREETING);
    t.is(gr.outputs.out.fixed!.mode, "flat");
    t.true(urlsOf(gr)[0].startsWith("file:///"));
    for (const d of g.drvs.values()) {
      for (const p of [...Object.keys(d.inputDrvs), ...d.inputSrcs, d.drvPath]) t.regex(p, /^\/nix\/store\/[0-9a-z]{32}-/);
    }
    const s = collectSources(g);
    t.regex(s.root, /-target\.drv$/);
    t.deepEqual([...s.evalPaths.keys()].map((p) => p.replace(/^.*?-/, "")).sort(), ["build-layer.sh", "local-note.txt"]);
    const chain = chainTo(s, gr.drvPath);
    t.is(chain[0], s.root);
    t.deepEqual(chain.map((p) => p.replace(/^.*?-/, "")), ["target.drv", "base.drv", "greeting.txt.drv"]);
  });
}

test("every sample describes the same graph", (t) => {
  const a = normalise(load("nix-2.8.json"));
  for (const [file] of SAMPLES) t.deepEqual(normalise(load(file)), a, file);
});

test("v4 fixed output with a structured hash object and no path: path is computed", (t) => {
  const hex = "e5d53b3ad5222924d553116e1e5a18dabd3b17f04ca0ddd74297a0bc3586234f";
  const g = parseDerivationDump({
    version: 4,
    derivations: {
      "kcdxbmam7apdn33dah35177m5fklr4c3-a.txt.drv": {
        name: "a.txt",
        version: 4,
        outputs: { out: { method: "flat", hash: { algorithm: "sha256", format: "base64", hash: Buffer.from(hex, "hex").toString("base64") } } },
        inputs: { srcs: [], drvs: {} },
        builder: "builtin:fetchurl",
        env: { url: "file:///tmp/a.txt" },
      },
    },
  });
  const d = [...g.drvs.values()][0];
  t.is(d.outputs.out.fixed!.hex, hex);
  // Matches what Nix 2.8 printed for this exact derivation on this machine.
  t.is(d.outputs.out.path, "/nix/store/m6mw5bvdihni708gb3vxy27dd5lcyry7-a.txt");
});

test("hash spellings: base16, nix32, SRI, algo:nix32 all decode to the same bytes; bad ones are refused", (t) => {
  const hex = "e5d53b3ad5222924d553116e1e5a18dabd3b17f04ca0ddd74297a0bc3586234f";
  const n32 = "0kr3hqsvr84p8bbxv82cy0bkpgfs31d1wvhiagaj8a92slx3pmg5"; // nix-hash --to-base32
  t.is(nix32Encode(Buffer.from(hex, "hex")), n32);
  t.is(nix32Decode(n32, 32).toString("hex"), hex);
  t.is(parseHash(hex, "sha256").hex, hex);
  t.is(parseHash(`sha256:${n32}`).hex, hex);
  t.is(parseHash(`sha256-${Buffer.from(hex, "hex").toString("base64")}`).hex, hex);
  t.throws(() => parseHash("sha256:abc"));
  t.throws(() => parseHash(hex)); // no algorithm
});

test("fixed-output path computation matches Nix for flat and recursive hashes", (t) => {
  t.is(fixedOutputPath("flat", "sha256", "e5d53b3ad5222924d553116e1e5a18dabd3b17f04ca0ddd74297a0bc3586234f", "a.txt"), "/nix/store/m6mw5bvdihni708gb3vxy27dd5lcyry7-a.txt");
  t.is(fixedOutputPath("recursive", "sha256", "494cdad037cf7d0a75ee816fc060b92663de1309602aff43c2f9ce55dade4c40", "busybox"), BUSYBOX);
});

test("a dump with two roots or a dangling input is refused", (t) => {
  const drv = (inputs: Record<string, string[]>) => ({ outputs: { out: { path: "/nix/store/" + "a".repeat(32) + "-x" } }, inputSrcs: [], inputDrvs: inputs, env: {} });
  const two = parseDerivationDump({ ["/nix/store/" + "b".repeat(32) + "-one.drv"]: drv({}), ["/nix/store/" + "c".repeat(32) + "-two.drv"]: drv({}) });
  t.throws(() => findRoot(two), { message: /expected one target derivation/ });
  const dangling = parseDerivationDump({ ["/nix/store/" + "b".repeat(32) + "-one.drv"]: drv({ ["/nix/store/" + "d".repeat(32) + "-gone.drv"]: ["out"] }) });
  t.throws(() => collectSources(dangling), { message: /missing from the dump/ });
});

test("DumpStreamParser: any chunking of each format (and tricky strings) gives the same graph as one JSON.parse", (t) => {
  const tricky = JSON.stringify({
    ["/nix/store/" + "b".repeat(32) + "-x.drv"]: {
      outputs: { out: { path: "/nix/store/" + "a".repeat(32) + "-x" } },
      inputSrcs: [],
      inputDrvs: {},
      env: { script: 'echo "}{" \\\\ \\" ]["\n\t\\', "}": "{", "": "\\\\" },
    },
  });
  // 2.8 and 2.26 pretty-print (split while streaming), 2.34 prints one line (parsed whole).
  const texts = [...SAMPLES.map(([f]) => fs.readFileSync(path.join(FIX, f), "utf8")), tricky];
  for (const text of texts) {
    const whole = normalise(parseDerivationDump(text));
    for (const size of [1, 2, 3, 7, 64, 4096]) {
      const p = new DumpStreamParser();
      for (let i = 0; i < text.length; i += size) p.push(text.slice(i, i + size));
      const g = parseDerivationDump(p.result());
      t.deepEqual(normalise(g), whole, `chunk size ${size}`);
    }
  }
  const cut = new DumpStreamParser();
  cut.push(texts[0].slice(0, 1000));
  t.throws(() => cut.result(), { message: /ended in the middle/ });
});
