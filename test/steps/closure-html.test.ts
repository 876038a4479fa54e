// closure's report.html in a real browser (Debian's chromium, headless): the page of the demo world's
// closure loads with no console error, references nothing to fetch, and its dependency graph is drawn (SVG nodes
// in the rendered DOM, one per derivation and source). A page with a script error is built to fail the
// same console check, so the check is shown able to fail. The screenshot's path is in the test log.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFile } from "node:child_process";
import { cli, closureOf, demoWorld, DemoWorld, ENV, requireTool, rm } from "./rebuild-helpers";
import { dependencyDot, renderHtmlReport } from "../../pipeline/steps/closure";

let w: DemoWorld;
let reportHtml: string;
let manifest: any;

test.before(async () => {
  requireTool("chromium");
  requireTool("dot");
  w = await demoWorld("closure-html-");
  await closureOf(w, w.attribute, "closure");
  reportHtml = path.join(w.dir, "closure", "report.html");
  manifest = JSON.parse(fs.readFileSync(path.join(w.dir, "closure", "manifest.json"), "utf8"));
});
test.after.always(() => w && rm(w.dir));

interface Loaded {
  dom: string;
  consoleErrors: string[];
}

/** Loads a file in headless Chromium: the rendered DOM, the console's errors, a screenshot beside it. */
function load(file: string, screenshot: string): Promise<Loaded> {
  const profile = fs.mkdtempSync(path.join(w.dir, "chromium-"));
  const args = [
    "--headless=new",
    "--no-sandbox", // as root
    "--disable-gpu",
    `--user-data-dir=${profile}`,
    "--enable-logging=stderr",
    "--v=0",
    "--disable-background-networking",
    "--no-first-run",
    "--window-size=1400,1800",
    "--virtual-time-budget=3000",
  ];
  const run = (extra: string[]) =>
    new Promise<{ stdout: string; stderr: string }>((resolve, reject) =>
      execFile("chromium", [...args, ...extra, `file://${file}`], { maxBuffer: 64 << 20, timeout: 120_000 }, (err, stdout, stderr) => (err ? reject(new Error(`chromium failed: ${err.message}\n${stderr.slice(-2000)}`)) : resolve({ stdout, stderr }))),
    );
  return (async () => {
    const dom = await run(["--dump-dom"]);
    await run([`--screenshot=${screenshot}`]);
    const consoleErrors = dom.stderr.split("\n").filter((l) => /CONSOLE\(\d+\)|Uncaught|console\.error/i.test(l) || (/:ERROR:/.test(l) && /CONSOLE|javascript/i.test(l)));
    return { dom: dom.stdout, consoleErrors };
  })();
}

test.serial("report.html loads in headless Chromium with no console error and references nothing to fetch, and its graph is drawn: a node per derivation and source", async (t) => {
  const shot = path.join(w.dir, "report.png");
  const page = await load(reportHtml, shot);
  t.deepEqual(page.consoleErrors, [], page.consoleErrors.join("\n"));
  // Self-contained: the rendered page references nothing to fetch (Chromium's own background traffic
  // is no measure of the page, so the DOM is what is checked).
  t.notRegex(page.dom, /\s(src|href|xlink:href|srcset|action)=|url\(|@import|<(script|link|iframe|img|object|embed)\b/i);
  const { dot } = dependencyDot(manifest, 10);
  const nodesInDot = (dot.match(/^ {2}n\d+ \[/gm) ?? []).length;
  const drawn = (page.dom.match(/<g id="node\d+" class="node/g) ?? []).length;
  t.true(nodesInDot > manifest.sources.length, `${nodesInDot} nodes: the sources and the derivations above them`);
  t.is(drawn, nodesInDot, "every node of the graph is in the rendered SVG");
  // The target and a source by name, as a reader sees them.
  t.true(page.dom.includes(">demo-image.drv<"), "the target is drawn");
  t.true(page.dom.includes("busybox-static"), "the busybox source is drawn");
  t.regex(page.dom, /<table id="all">[\s\S]*sha256:[0-9a-f]{64}/, "the full table has the hashes");
  const png = fs.readFileSync(shot);
  t.is(png.subarray(1, 4).toString(), "PNG");
  t.true(png.length > 10_000, `a screenshot with something on it (${png.length} bytes)`);
  // Attached: kept where the test output says (SC_TEST_ARTIFACTS, default a directory under the temp dir).
  const artifacts = process.env.SC_TEST_ARTIFACTS ?? path.join(os.tmpdir(), "secure-supply-chain-artifacts");
  fs.mkdirSync(artifacts, { recursive: true });
  fs.copyFileSync(shot, path.join(artifacts, "closure-report.png"));
  t.log(`screenshot: ${path.join(artifacts, "closure-report.png")}`);
});

test.serial("the console check fails on a page built to fail: the same report with a script that throws", async (t) => {
  const broken = path.join(w.dir, "broken.html");
  fs.writeFileSync(broken, fs.readFileSync(reportHtml, "utf8").replace("</body>", "<script>undefinedFunctionOfTheReport();</script></body>"));
  const page = await load(broken, path.join(w.dir, "broken.png"));
  t.true(page.consoleErrors.some((l) => l.includes("undefinedFunctionOfTheReport")), `the error is seen:\n${page.consoleErrors.join("\n")}`);
});

test("without Graphviz the page says so where the graph would be, and keeps its tables", (t) => {
  const html = renderHtmlReport(manifest, 10, { missing: "missing tool 'dot' on PATH (install the Debian package graphviz, or run scripts/setup.sh)" });
  t.regex(html, /<p class="missing">No graph: missing tool 'dot' on PATH \(install the Debian package graphviz/);
  t.false(html.includes("<svg"));
  t.true(html.includes('<table id="all">'));
});

test("the closure step names report.html in its JSON", async (t) => {
  const r = await cli(["closure", "--file", w.file, "--attribute", w.attribute, "--no-export", "--out", path.join(w.dir, "no-export")]);
  t.is(r.code, 0, r.stderr.slice(-2000));
  t.is(r.json.reportHtml, path.join(w.dir, "no-export", "report.html"));
  t.true(fs.readFileSync(r.json.reportHtml, "utf8").includes("<svg"));
});

test("a Graphviz that fails does not fail the closure: the page says why in place of the graph", async (t) => {
  const bin = fs.mkdtempSync(path.join(w.dir, "broken-dot-"));
  fs.writeFileSync(path.join(bin, "dot"), "#!/bin/sh\necho 'dot: out of memory' >&2\nexit 1\n", { mode: 0o755 });
  const r = await cli(["closure", "--file", w.file, "--attribute", w.attribute, "--no-export", "--out", path.join(w.dir, "broken-dot")], { ...ENV, PATH: `${bin}:${process.env.PATH}` });
  t.is(r.code, 0, r.stderr.slice(-2000));
  t.regex(r.stderr, /report\.html without its graph: dot -Tsvg failed/);
  t.regex(fs.readFileSync(r.json.reportHtml, "utf8"), /<p class="missing">No graph: dot -Tsvg failed \(exit 1\)/);
});
