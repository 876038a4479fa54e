// The real engine on the demo stack, relocated: `pulumi up` in one copy of the project, then the
// project, its state (the file backend's directory) and its work dir (.supply-chain) copied to
// another path, the first copy moved out of the way (a path into it that something still reads
// fails), and `pulumi preview --expect-no-changes` there: nothing in the state depends on where the
// checkout is, so a moved checkout or a CI workspace with another path re-runs no step.
// The boot test is off to keep this short: its command is built like the others (stepCommand, the
// work dir relative to the project; the mocked tests check every command of a stack with it on).
import test from "ava";
import * as fs from "node:fs";
import * as path from "node:path";
import * as engine from "./engine-helpers";
import { Engine, PROJECT, projectCopy } from "./engine-helpers";

let first: Engine | undefined;
let moved: Engine | undefined;

test.after.always(async () => {
  for (const e of [moved, first]) {
    if (!e || !fs.existsSync(e.dir)) continue;
    await engine.pulumi(e, ["destroy", "--yes", "--stack", "demo"], { allowFailure: true });
    fs.rmSync(e.dir, { recursive: true, force: true });
  }
});

test.serial("(real engine) the demo stack's state, copied with the project to another path, previews no change there", async (t) => {
  first = projectCopy("sc-relocate-a-");
  const a = first;
  await engine.pulumi(a, ["stack", "init", "demo"]);
  await engine.useMinimalWorld(a, "demo");
  await engine.pulumi(a, ["config", "set", `${PROJECT}:bootTest`, "false", "--stack", "demo"]);
  await engine.pulumi(a, ["up", "--yes", "--stack", "demo"]);
  const before = await engine.outputs(a, "demo");
  t.is(before.reproducible, true);
  // The control: in place, nothing changes.
  await engine.pulumi(a, ["preview", "--expect-no-changes", "--stack", "demo"]);

  const dir = fs.mkdtempSync(`${a.dir.replace(/-a-[^/]*$/, "-b-")}`);
  for (const f of fs.readdirSync(a.dir)) fs.cpSync(path.join(a.dir, f), path.join(dir, f), { recursive: true, verbatimSymlinks: true });
  const state = path.join(dir, ".state");
  moved = { dir, state, env: { ...a.env, PULUMI_BACKEND_URL: `file://${state}` } };
  t.true(fs.existsSync(path.join(dir, ".supply-chain", "demo", "rebuild", "rebuild.json")), "the work dir came along");
  // The first copy is gone from its path: nothing may still read from there.
  fs.renameSync(a.dir, `${a.dir}-away`);
  first = { dir: `${a.dir}-away`, state: `${a.dir}-away/.state`, env: { ...a.env, PULUMI_BACKEND_URL: `file://${a.dir}-away/.state` } };

  const preview = await engine.pulumi(moved, ["preview", "--diff", "--expect-no-changes", "--stack", "demo"], { allowFailure: true });
  t.is(preview.code, 0, `preview from ${dir} sees changes:\n${preview.stdout.slice(-6000)}\n${preview.stderr.slice(-2000)}`);

  // And `up` there runs nothing; the outputs name the files where they are now, and they verify.
  await engine.pulumi(moved, ["up", "--yes", "--stack", "demo"]);
  t.deepEqual(Object.keys(await engine.lastChanges(moved, "demo")), ["same"]);
  const after = await engine.outputs(moved, "demo");
  for (const k of ["closureFile", "closureReport", "verifyReport", "provenance", "verification", "sbom"]) {
    t.is(after[k], path.join(dir, path.relative(a.dir, before[k])), k);
    t.true(fs.existsSync(after[k]), after[k]);
  }
  t.is(after.imageOutPath, before.imageOutPath);
  t.deepEqual(engine.verifyDemoAttestations(after), [true, true]);
});
