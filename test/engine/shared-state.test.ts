// Shared state, for real: the Pulumi CLI's PostgreSQL DIY backend (`postgres://…` as the backend
// URL, v3.248: pkg/backend/diy/postgres, one table `pulumi_state`) on a throwaway PostgreSQL cluster
// (support/postgres.ts). Two copies of the project in different directories stand for two machines:
// both point PULUMI_BACKEND_URL at the one database and neither has a state of its own. A runs the
// demo stack; B reads it (outputs, secrets config), B's consumer approves A's image through its
// StackReference; then A and B run `pulumi up` on the demo stack at once and the backend's lock, a
// row of that table, refuses the second. docs/scaling.md says what this shows and what it does not.
// The step files stay in A's checkout: B's consumer reads them by the absolute paths A's outputs name,
// which works here because both copies are on one machine (a real deployment publishes them).
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ChildProcess, spawn } from "node:child_process";
import * as engine from "./engine-helpers";
import { DEMO_PUB, Engine, PROJECT, projectCopy, Run, verifyDemoAttestations } from "./engine-helpers";
import { startPostgres, type PgCluster } from "../../support/postgres";

const STACK = "demo";
const CONSUMER_STACK = "dev";
let pg: PgCluster;
let url = "";
const A = {} as Engine;
const B = {} as Engine;
let aOutputs: Record<string, any> = {};

/** The backend's rows: the blob keys, prefixed by the URL's path (the database name, `testdb/`). */
const keys = (like: string) => pg.sql(`SELECT key FROM pulumi_state WHERE key LIKE '${like}' ORDER BY key`).split("\n").filter(Boolean);
const lockRows = () => keys("testdb/.pulumi/locks/%");

/** `pulumi up` that must succeed; its failure names the lines that say why (the helper keeps only the tail). */
async function up(e: Engine, args: string[], cwd?: string): Promise<Run> {
  const r = await engine.pulumi(e, ["up", "--yes", ...args], { cwd, allowFailure: true });
  if (r.code !== 0) {
    const why = (r.stdout + r.stderr).split("\n").filter((l) => /error|fail|timed out|refus/i.test(l)).slice(0, 40).join("\n");
    throw new Error(`pulumi up ${args.join(" ")} exited ${r.code}:\n${why}`);
  }
  return r;
}

test.before(async () => {
  pg = await startPostgres();
  url = `postgres://postgres@127.0.0.1:${pg.port}/testdb?sslmode=disable`;
  for (const [e, prefix] of [[A, "sc-shared-a-"], [B, "sc-shared-b-"]] as const) {
    Object.assign(e, projectCopy(prefix));
    e.env.PULUMI_BACKEND_URL = url; // instead of the copy's own file:// backend
  }
});

test.after.always(async () => {
  if (B.dir) await engine.pulumi(B, ["destroy", "--yes", "--stack", CONSUMER_STACK], { cwd: path.join(B.dir, "consumer"), allowFailure: true });
  if (A.dir) await engine.pulumi(A, ["destroy", "--yes", "--stack", STACK], { allowFailure: true });
  for (const e of [A, B]) if (e.dir) fs.rmSync(e.dir, { recursive: true, force: true });
  pg?.destroy();
});

test.serial("(real engine) two checkouts, one PostgreSQL backend: A's pulumi up on the demo stack is what B sees (outputs, stack list, its secrets with the empty passphrase); no file state anywhere", async (t) => {
  await engine.pulumi(A, ["stack", "init", STACK]);
  // Stack config lives in each checkout's stack file: both checkouts take the small world.
  for (const e of [A, B]) await engine.useMinimalWorld(e, STACK);
  const first = await up(A, ["--stack", STACK]);
  t.log(first.stdout.split("\n").filter((l) => /\d+ created|Duration/.test(l)).join("\n"));
  aOutputs = await engine.outputs(A, STACK);
  t.is(aOutputs.reproducible, true);
  t.is(aOutputs.bootTestPassed, true);
  t.deepEqual(verifyDemoAttestations(aOutputs), [true, true]);

  // B, another directory with the same URL: the stack, its outputs and its update are A's.
  const listed = JSON.parse((await engine.pulumi(B, ["stack", "ls", "--json"])).stdout);
  t.deepEqual(listed.map((s: any) => s.name), [STACK]);
  t.deepEqual(await engine.outputs(B, STACK), aOutputs);
  t.true((await engine.lastChanges(B, STACK)).create! >= 14);
  // The demo key is a secret under the passphrase provider: the salt is in the committed stack file,
  // the passphrase (empty) in the environment, so B decrypts it too; the backend holds no key.
  const pem = (await engine.pulumi(B, ["config", "get", `${PROJECT}:signingKey`, "--stack", STACK])).stdout;
  t.regex(pem, /^-----BEGIN PRIVATE KEY-----\n/);
  const exported = JSON.parse((await engine.pulumi(B, ["stack", "export", "--stack", STACK])).stdout);
  t.is(exported.deployment.secrets_providers?.type, "passphrase");

  // Where the state is: rows of one table, none in either checkout.
  t.deepEqual(keys("testdb/.pulumi/stacks/%").filter((k) => !k.endsWith(".bak")), [`testdb/.pulumi/stacks/${PROJECT}/${STACK}.json`]);
  t.true(keys("testdb/.pulumi/history/%").length > 0, "the update history is in the table too");
  t.deepEqual(lockRows(), [], "no lock left after the update");
  for (const e of [A, B]) {
    t.false(fs.existsSync(path.join(e.dir, ".pulumi")), `no file backend in ${e.dir}`);
    t.deepEqual(fs.readdirSync(e.state), [], "the copy's own file:// state dir stays empty");
  }
  // What is NOT shared: the step files are in A's checkout, and the outputs name them there.
  for (const f of ["closureFile", "provenance", "verification"]) t.true(String(aOutputs[f]).startsWith(path.join(A.dir, ".supply-chain", STACK) + "/"), `${f}: ${aOutputs[f]}`);
  t.false(fs.existsSync(path.join(B.dir, ".supply-chain")), "B ran no step");
});

test.serial("(real engine) in the other checkout, the consumer reads A's outputs through its StackReference and approves the image", async (t) => {
  const cwd = path.join(B.dir, "consumer");
  const run = (args: string[]) => engine.pulumi(B, args, { cwd });
  await run(["stack", "init", CONSUMER_STACK]);
  await run(["config", "set", "supplyChainStack", `organization/${PROJECT}/${STACK}`, "--stack", CONSUMER_STACK]);
  await run(["config", "set", "publisherPublicKey", "--stack", CONSUMER_STACK, "--", fs.readFileSync(DEMO_PUB, "utf8")]);
  await up(B, ["--stack", CONSUMER_STACK], cwd);
  const o = await engine.outputs(B, CONSUMER_STACK, cwd);
  t.deepEqual(o.approvedImage, { path: aOutputs.imageOutPath, narHash: aOutputs.imageNarHash });
  t.deepEqual(o.approvedBy, [{ stack: `organization/${PROJECT}/${STACK}`, keyid: aOutputs.attestationKeyId }]);
  t.true(keys("testdb/.pulumi/stacks/supply-chain-consumer/%").includes(`testdb/.pulumi/stacks/supply-chain-consumer/${CONSUMER_STACK}.json`), "the consumer's state is in the same table");
  // A sees the consumer's stack too (another project, same backend).
  t.deepEqual(await engine.outputs(A, CONSUMER_STACK, path.join(A.dir, "consumer")), o);
});

/** The processes whose command line runs the given step in the given checkout. */
function stepRunningIn(dir: string, step: string): boolean {
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, "utf8").replace(/\0/g, " ");
      if (!cmd.includes(`bin/supply-chain.js ${step} `)) continue;
      if (cmd.includes(dir + "/") || fs.readlinkSync(`/proc/${name}/cwd`) === dir) return true;
    } catch {
      // exited meanwhile
    }
  }
  return false;
}

function start(e: Engine, args: string[]): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn("pulumi", ["--non-interactive", ...args], { cwd: e.dir, env: e.env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const done = new Promise<Run>((resolve) => child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr })));
  return { child, done };
}

async function waitFor(what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.serial("(real engine) two pulumi up of the demo stack at once, from A and B: the second is refused by the lock row in PostgreSQL, naming the first; the state is intact and converged afterwards", async (t) => {
  const before = JSON.parse((await engine.pulumi(A, ["stack", "export", "--stack", STACK])).stdout);
  const bootTest = before.deployment.resources.find((r: any) => r.urn.endsWith("::chain-boot-test-boot-test")).urn;
  // A's up re-runs the boot test (QEMU: long enough to be sure it still holds the lock when B asks).
  const first = start(A, ["up", "--yes", "--stack", STACK, "--replace", bootTest]);
  try {
    await waitFor("A's boot test to run", () => stepRunningIn(A.dir, "boot-test"), 10 * 60_000);
  } catch (e) {
    first.child.kill("SIGTERM");
    const r = await first.done;
    throw new Error(`${(e as Error).message}; A's up: ${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  }
  // The lock is a row of the table, written by A's CLI.
  const locks = lockRows();
  t.is(locks.length, 1, locks.join(", "));
  t.regex(locks[0], new RegExp(`^testdb/\\.pulumi/locks/organization/${PROJECT}/${STACK}/[0-9a-f-]{36}\\.json$`));
  const lock = JSON.parse(Buffer.from(JSON.parse(pg.sql(`SELECT data FROM pulumi_state WHERE key = '${locks[0]}'`)).data, "base64").toString());
  t.is(lock.pid, first.child.pid);
  t.is(lock.hostname, os.hostname());

  const started = Date.now();
  const second = await engine.pulumi(B, ["up", "--yes", "--stack", STACK], { allowFailure: true });
  t.log(`B's up was refused in ${((Date.now() - started) / 1000).toFixed(1)} s:\n${(second.stdout + second.stderr).split("\n").filter((l) => /locked by|created by/.test(l)).join("\n")}`);
  t.not(second.code, 0);
  const port = pg.port;
  t.regex(
    second.stdout + second.stderr,
    new RegExp(`the stack is currently locked by 1 lock\\(s\\)[^]*postgres://\\*\\*\\*\\*:\\*\\*\\*\\*@127\\.0\\.0\\.1:${port}/testdb/\\.pulumi/locks/organization/${PROJECT}/${STACK}/[0-9a-f-]{36}\\.json[^]*created by \\S+@${os.hostname()} \\(pid ${first.child.pid}\\)`),
    "refused, naming the lock's row and A's pid",
  );
  t.false(fs.existsSync(path.join(B.dir, ".supply-chain")), "B's refused up ran no step");

  const done = await first.done;
  t.is(done.code, 0, done.stdout.slice(-3000) + done.stderr.slice(-3000));
  t.deepEqual(lockRows(), [], "A's lock is gone once its up completed");

  // Intact: the state parses, from either checkout, with every resource; nothing left to do.
  const after = JSON.parse((await engine.pulumi(B, ["stack", "export", "--stack", STACK])).stdout);
  const urns = (d: any) => d.deployment.resources.map((r: any) => r.urn).sort();
  t.deepEqual(urns(after), urns(before), "the same resources");
  t.deepEqual(after.deployment.pending_operations ?? [], []);
  const o = await engine.outputs(B, STACK);
  t.is(o.reproducible, true);
  t.is(o.bootTestPassed, true);
  t.is(o.imageNarHash, aOutputs.imageNarHash);
  t.deepEqual(verifyDemoAttestations(o), [true, true]);
  const preview = await engine.pulumi(A, ["preview", "--expect-no-changes", "--stack", STACK], { allowFailure: true });
  t.is(preview.code, 0, preview.stdout.slice(-3000) + preview.stderr.slice(-3000));
  // And the consumer, from B, still approves the image.
  const cwd = path.join(B.dir, "consumer");
  await up(B, ["--stack", CONSUMER_STACK], cwd);
  t.deepEqual((await engine.outputs(B, CONSUMER_STACK, cwd)).approvedImage, { path: aOutputs.imageOutPath, narHash: aOutputs.imageNarHash });
});

test.serial("(real engine) `pulumi login postgres://…` alone does not move these projects' state: Pulumi.yaml's backend.url wins over the stored login, PULUMI_BACKEND_URL over both", async (t) => {
  // A PULUMI_HOME of its own: the login is stored in its credentials.json, not the user's.
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "sc-shared-home-"));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "sc-shared-project-"));
  fs.copyFileSync(path.join(A.dir, "Pulumi.yaml"), path.join(scratch, "Pulumi.yaml"));
  const { PULUMI_BACKEND_URL: _, ...rest } = A.env;
  const e: Engine = { dir: scratch, state: "", env: { ...rest, PULUMI_HOME: home } };
  const backendOf = async (cwd: string, env = e) => /Backend URL: (\S+)/.exec((await engine.pulumi(env, ["whoami", "-v"], { cwd, allowFailure: true })).stdout)?.[1];
  try {
    await engine.pulumi(e, ["login", url], { cwd: home });
    t.is(await backendOf(home), url, "outside a project: the login");
    const inProject = await engine.pulumi(e, ["whoami", "-v"], { cwd: scratch, allowFailure: true });
    t.regex(inProject.stdout + inProject.stderr, /file:\/\/\S*\/\.pulumi/, "in the project: its backend.url (file://./.pulumi)");
    t.is(await backendOf(scratch, { ...e, env: { ...e.env, PULUMI_BACKEND_URL: url } }), url, "PULUMI_BACKEND_URL wins");
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
    fs.rmSync(scratch, { recursive: true, force: true });
  }
});
