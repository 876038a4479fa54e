// pipeline/lib/host-tools.tsv is the one tool → package map: setup.sh installs from it and the steps' "missing
// tool" errors name its packages.
import test from "ava";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { findTool, TOOL_PACKAGES } from "../../pipeline/lib/proc";

const ROOT = path.resolve(__dirname, "..", "..");

test("the map is read from pipeline/lib/host-tools.tsv, and setup.sh keeps no map of its own", (t) => {
  t.is(TOOL_PACKAGES.diffoscope, "diffoscope-minimal");
  t.is(TOOL_PACKAGES["nix-store"], "nix-bin");
  t.is(TOOL_PACKAGES["/usr/include/boost/asio.hpp"], "libboost-dev");
  const setup = fs.readFileSync(path.join(ROOT, "scripts", "setup.sh"), "utf8");
  t.notRegex(setup, /declare -A/);
  t.regex(setup, /host-tools\.tsv/);
  for (const line of fs.readFileSync(path.join(ROOT, "pipeline", "lib", "host-tools.tsv"), "utf8").split("\n")) {
    if (line && !line.startsWith("#")) t.is(line.split("\t").length, 3, `three tab-separated columns: ${JSON.stringify(line)}`);
  }
});

test("a missing tool is one line naming the package from the map; the step says the same", (t) => {
  const err = t.throws(() => findTool("nix-store", "/nonexistent"));
  t.is(err!.message, "missing tool 'nix-store' on PATH (install the Debian package nix-bin, or run scripts/setup.sh)");
  const r = spawnSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), "closure", "--file", path.join(ROOT, "nix", "default.nix"), "--attribute", "iso", "--out", "/tmp/never"], { env: { ...process.env, PATH: "/nonexistent" }, encoding: "utf8" });
  t.is(r.status, 2);
  t.regex(r.stderr, /missing tool 'nix[-a-z]*' on PATH \(install the Debian package nix-bin/);
});
