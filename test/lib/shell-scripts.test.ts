// The shell the product runs, linted: the rebuild script both isolations (and the Pulumi container) run,
// and the scripts/ a fresh machine runs. shellcheck at warning level; a script built to fail shows the
// lint is not a rubber stamp.
import test from "ava";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");
const shellcheck = (args: string[]) => spawnSync("shellcheck", ["-S", "warning", ...args], { cwd: ROOT, encoding: "utf8" });

test("pipeline/lib/rebuild.sh (POSIX sh) and scripts/*.sh pass shellcheck", (t) => {
  const scripts = fs.readdirSync(path.join(ROOT, "scripts")).filter((f) => f.endsWith(".sh")).map((f) => path.join("scripts", f));
  t.true(scripts.length >= 5);
  for (const [args, what] of [[["-s", "sh", "pipeline/lib/rebuild.sh"], "rebuild.sh"], [[...scripts, "pipeline/rebuilder-image/build.sh"], "scripts"]] as const) {
    const r = shellcheck([...args]);
    t.is(r.error, undefined, "shellcheck is installed by scripts/setup.sh");
    t.is(r.status, 0, `${what}:\n${r.stdout}`);
  }
});

test("a script with an unquoted command substitution in a test fails the lint, naming the line", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "shellcheck-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, "bad.sh"), '#!/bin/sh\nif [ $(cat "$1") = x ]; then echo yes; fi\n');
  const r = shellcheck([path.join(dir, "bad.sh")]);
  t.is(r.status, 1);
  t.regex(r.stdout, /line 2:[\s\S]*SC2046/);
});
