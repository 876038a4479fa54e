// Nix remote builders for the offline rebuild: two builder hosts on this machine (scripts/nix-builder.sh:
// each its own network namespace with no route beyond the host, its own store, sshd and Nix 2.34), a
// wide graph rebuilt in bwrap with only loopback inside, every derivation sent to them (--max-jobs 0).
// Their own stores show who built what; verify compares the result with the host's build. Cases
// built to fail: a builder whose host key is not the one given; malformed machines entries.
import test from "ava";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cli, demoWorld, DemoWorld, requireTool, rm } from "./rebuild-helpers";
import { startBuilders, TestBuilders } from "../helpers/builders";
import { wideGraphNix } from "../helpers/wide-graph";
import { parseBuilders } from "../../pipeline/lib/builders";

const LEAVES = 6;
let w: DemoWorld;
let b: TestBuilders;
let target: string[];
let closure: string;
let built: any;


test.before(async () => {
  for (const t of ["ip", "bwrap", "ssh", "ssh-keygen", "socat"]) requireTool(t);
  w = await demoWorld("remote-builders-test-");
  const file = path.join(path.dirname(w.file), "wide.nix");
  // LEAVES derivations of equal cost under one root.
  fs.writeFileSync(file, wideGraphNix({ world: "./default.nix", leaves: LEAVES, leaf: "${sh} sleep 1; ${sh} yes ${name} | ${sh} head -c 65536 > $out" }));
  target = ["--file", file, "--attribute", "wide"];
  const r = await cli(["build", ...target, "--offline"]);
  if (r.code !== 0) throw new Error(`build of the wide graph failed: ${r.stderr.slice(-2000)}`);
  built = r.json;
  const c = await cli(["closure", ...target, "--offline", "--out", path.join(w.dir, "closure")]);
  if (c.code !== 0) throw new Error(`closure failed: ${c.stderr.slice(-2000)}`);
  closure = c.json.closureFile;
  b = await startBuilders(path.join(w.dir, "builders"), 2);
});

test.after.always(() => {
  b?.stop();
  if (w) rm(w.dir);
});

test.serial("the builders are test hosts without a route beyond this machine, each with its own Nix", (t) => {
  for (const x of b.builders) {
    const ns = `sc-builder-t${x.index}`;
    const routes = execFileSync("ip", ["-n", ns, "route"], { encoding: "utf8" });
    t.notRegex(routes, /default/, `${ns} has no default route`);
    // The kernel's answer for an address outside: no route (asked, nothing sent).
    const outside = spawnSync("ip", ["-n", ns, "route", "get", "192.0.2.1"], { encoding: "utf8" });
    t.not(outside.status, 0);
    t.regex(outside.stderr, /unreachable/i);
    t.true(fs.existsSync(x.store), "its store is its own directory");
  }
});

test.serial("a wide graph rebuilt offline in bwrap spreads over both builders, and verify says reproducible", async (t) => {
  const out = path.join(w.dir, "rb");
  const r = await cli(["rebuild", ...target, "--closure", closure, "--isolation", "bwrap", "--out", out, "--builders", b.spec, "--max-jobs", "0"]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.deepEqual(r.json.network.interfaces, ["lo"], "the rebuild itself still sees only loopback");
  t.deepEqual(r.json.builders, b.builders.map((x) => ({ uri: `ssh-ng://root@${x.address}`, hostKey: x.hostKey })), "the builders and the host key required of each");
  t.regex(r.stderr, /derivations: \d+ of \d+ built, building leaf-\d on ssh-ng:\/\/root@10\.231\./, "progress names the builder");
  // Each builder's own store keeps the build logs of what it built: together every derivation, each a part.
  const parts = b.builders.map((x) => x.built());
  t.log(b.builders.map((x, i) => `${x.name}: ${parts[i].join(" ")}`).join("\n"));
  for (const p of parts) t.true(p.some((d) => /^leaf-\d+\.drv$/.test(d)), "each builder built some leaves");
  const all = parts.flat().sort();
  const expected = [...Array.from({ length: LEAVES }, (_, i) => `leaf-${i}.drv`), "wide-root.drv"].sort();
  t.deepEqual(all, expected, "every derivation built exactly once, on one of the builders");

  const v = await cli(["verify", ...target, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.matched, LEAVES + 1);
  t.is(r.json.narHash, built.narHash);
});

test.serial("an audit sends its build phase to the auditor's builders (import and evaluation stay in its own empty store) and reproduces the signed digests", async (t) => {
  const file = (name: string, json: unknown) => {
    fs.writeFileSync(path.join(w.dir, name), JSON.stringify(json));
    return path.join(w.dir, name);
  };
  const v = await cli(["verify", ...target, "--rebuilt", path.join(w.dir, "rb", "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-2000));
  const publisher = (await cli(["keygen", "--out", path.join(w.dir, "publisher")])).json;
  const auditor = (await cli(["keygen", "--out", path.join(w.dir, "auditor")])).json;
  const attest = await cli(["attest", "--build", file("build.json", built), "--closure", path.dirname(closure), "--verify", file("verify.json", v.json), "--key", publisher.privateKey, "--out", path.join(w.dir, "attest")]);
  t.is(attest.code, 0, attest.stderr.slice(-2000));
  const out = path.join(w.dir, "audit");
  // The builders hold every output from the rebuild above: the audit must have them deleted there and built again.
  const started = Date.now() - 1000; // mtimes may be coarser than the clock
  const a = await cli(["audit", ...target, "--closure", closure, "--attestation", path.join(w.dir, "attest", "provenance.intoto.jsonl"), "--public-key", publisher.publicKey, "--isolation", "bwrap", "--out", out, "--builders", b.spec, "--max-jobs", "0", "--key", auditor.privateKey]);
  t.is(a.code, 0, a.stderr.slice(-3000));
  t.true(a.json.reproduced);
  // Both signed provenances name the builders their rebuild trusted, and the host key required of each.
  const trusted = b.builders.map((x) => ({ uri: `ssh-ng://root@${x.address}`, hostKey: x.hostKey }));
  const signedStatement = (file: string) => JSON.parse(Buffer.from(JSON.parse(fs.readFileSync(file, "utf8").split("\n")[0]).payload, "base64").toString("utf8"));
  t.deepEqual(signedStatement(path.join(w.dir, "attest", "provenance.intoto.jsonl")).predicate.buildDefinition.internalParameters.remoteBuilders, trusted);
  t.deepEqual(signedStatement(a.json.attestation).predicate.buildDefinition.internalParameters.remoteBuilders, trusted);
  const log = fs.readFileSync(path.join(out, "audit.log"), "utf8");
  const sent = [...log.matchAll(/building '\/nix\/store\/[0-9a-z]{32}-([^']+)\.drv' on '(ssh-ng:\/\/[^']+)'/g)];
  t.is(new Set(sent.map((m) => m[1])).size, LEAVES + 1, "every derivation went to a builder");
  t.regex(log, /importing .* into the empty store/);
  t.regex(log, /remote builder ssh-ng:\/\/root@10\.231\.\d+\.2 already holds \d+ output\(s\) of the graph: deleting them there/);
  const again = b.builders.flatMap((x) => x.built(started)).sort();
  t.deepEqual(again, [...Array.from({ length: LEAVES }, (_, i) => `leaf-${i}.drv`), "wide-root.drv"].sort(), "the builders' own logs show each built again, not answered from their stores");
});

test.serial("a builder that keeps an output of the graph alive (a GC root there) is refused in one line: it would not be rebuilt", async (t) => {
  const [one] = b.builders;
  const held = fs.readdirSync(path.join(one.store, "store")).find((n) => /-leaf-\d+$/.test(n))!;
  t.truthy(held, "the builder holds a leaf from the runs above");
  const root = path.join(one.store, "var", "nix", "gcroots", "test-keeps-a-leaf");
  fs.symlinkSync(`/nix/store/${held}`, root);
  try {
    const r = await cli(["rebuild", ...target, "--closure", closure, "--isolation", "bwrap", "--out", path.join(w.dir, "rb-held"), "--builders", one.line, "--max-jobs", "0"]);
    t.is(r.code, 2, r.stderr.slice(-2000));
    t.regex(r.stderr, new RegExp(`remote builder ssh-ng://root@${one.address.replace(/\./g, "\\.")} holds /nix/store/\\S+ of the target's graph and cannot delete it \\(alive there\\): it would not be rebuilt`));
  } finally {
    fs.rmSync(root);
  }
});

test.serial("a builder whose host key is not the one given is never used: the rebuild fails naming it", async (t) => {
  const [one, two] = b.builders;
  const impostor = one.line.replace(one.hostKey, two.hostKey);
  const since = Date.now() - 1000;
  // The sockets' dir a killed run left behind (its pid is gone) goes with the next run.
  const dead = spawnSync("true").pid!;
  const leftover = path.join("/tmp", `sc-builders-${dead}-killed`);
  fs.mkdirSync(leftover);
  const r = await cli(["rebuild", ...target, "--closure", closure, "--isolation", "bwrap", "--out", path.join(w.dir, "rb-bad-key"), "--builders", impostor, "--max-jobs", "0"]);
  t.is(r.code, 2, r.stderr.slice(-2000));
  t.false(fs.existsSync(leftover), "a dead run's sockets dir is removed");
  t.regex(r.stderr, new RegExp(`remote builder ssh-ng://root@${one.address.replace(/\./g, "\\.")} could not be used: its host key is not the one given`));
  t.deepEqual(one.built(since), [], "nothing was built there");
});

test("machines entries the isolation cannot use are refused in one line, naming the entry", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "builders-spec-"));
  const key = path.join(dir, "key");
  fs.writeFileSync(key, "");
  const hostKey = Buffer.from("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ/a2fOhhAHghNAATJYVLbsQkVx7FzSgK9ilk/CW4aUE b1\n").toString("base64");
  try {
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux ${key} 1 1 - -`), { message: /builder 'ssh-ng:\/\/root@b1': no public host key/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux - 1 1 - - ${hostKey}`), { message: /no ssh key file/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux key 1 1 - - ${hostKey}`), { message: /must be an absolute path/ });
    t.throws(() => parseBuilders(`ssh-ng://-oProxyCommand=x@b1 x86_64-linux ${key} 1 1 - - ${hostKey}`), { message: /only ssh-ng:\/\/\[user@\]host/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux ${key} two 1 - - ${hostKey}`), { message: /jobs \(4th field\) two is not a whole number/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux ${key} 1 1 - - ${hostKey} extra`), { message: /9 fields, the machines format has 8/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux ${dir}/none 1 1 - - ${hostKey}`), { message: /none not found or not readable/ });
    t.throws(() => parseBuilders(`unix:///run/nix/socket x86_64-linux ${key} 1 1 - - ${hostKey}`), { message: /only ssh-ng:\/\/\[user@\]host or ssh:\/\/\[user@\]host/ });
    t.throws(() => parseBuilders(`ssh-ng://root@b1 x86_64-linux ${key} 1 1 - - bm90IGEga2V5`), { message: /not a base64 OpenSSH public key/ });
    t.throws(() => parseBuilders(`@${dir}/machines`), { message: /cannot read .*machines/ });
    fs.writeFileSync(path.join(dir, "machines"), `# two\nssh-ng://root@b1 x86_64-linux ${key} 2 1 - - ${hostKey}\nssh://b2  x86_64-linux ${key} 1\t1 - - ${hostKey}\n`);
    const parsed = parseBuilders(`@${dir}/machines`);
    t.deepEqual(parsed.map((p) => [p.uri, p.host]), [["ssh-ng://root@b1", "b1"], ["ssh://b2", "b2"]]);
    t.is(parsed[1].line, `ssh://b2 x86_64-linux ${key} 1 1 - - ${hostKey}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("remote builders with the docker isolation are refused before anything runs", async (t) => {
  const r = await cli(["rebuild", ...target, "--closure", closure, "--isolation", "docker", "--image", "none", "--out", path.join(w.dir, "rb-docker"), "--builders", b.spec]);
  t.is(r.code, 2);
  t.regex(r.stderr, /remote builders need --isolation bwrap/);
});
