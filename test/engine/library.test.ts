// The package as a library, the way a user depends on it: `npm pack` of this repository, installed
// from the tarball into a copy of examples/two-images in a temp dir (no relative import can reach the
// repository from there), whose own index.ts declares two chains in one stack. Real engine, real
// steps: `pulumi up` runs both chains; a wrong arg is one error at preview naming the chain and the arg.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { cliJson, Engine, engineBin, engineEnv, pulumi, ROOT } from "./engine-helpers";

const EXAMPLE = path.join(ROOT, "examples", "two-images");
const STACK = "dev";
const e = {} as Engine;

function sh(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, env: e.env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
}

test.before(() => {
  const bin = engineBin();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sc-library-"));
  const dir = path.join(tmp, "two-images");
  fs.cpSync(EXAMPLE, dir, { recursive: true, filter: (src) => !/\/(node_modules|world|\.supply-chain|\.pulumi)$/.test(src) });
  fs.mkdirSync(path.join(tmp, "state"));
  Object.assign(e, { dir, state: path.join(tmp, "state"), env: engineEnv(bin, path.join(tmp, "state")) });
  // The tarball a registry would serve (prepack compiles the library into dist/), named as package.json expects.
  const packed = JSON.parse(sh("npm", ["pack", ROOT, "--json", "--pack-destination", tmp], tmp))[0].filename as string;
  fs.renameSync(path.join(tmp, packed), path.join(dir, "secure-supply-chain-0.1.0.tgz"));
  sh("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund"], dir);
  // The project's world, made by the installed package's own CLI.
  sh(path.join(dir, "node_modules", ".bin", "supply-chain"), ["demo-world", "--full", "world"], dir);
});

test.after.always(() => {
  if (e.dir) fs.rmSync(path.dirname(e.dir), { recursive: true, force: true });
});

test.serial("(real engine) the installed library: its components find the step CLI inside node_modules, not in any checkout", (t) => {
  const lib = fs.realpathSync(path.join(e.dir, "node_modules", "secure-supply-chain"));
  t.true(lib.startsWith(path.join(fs.realpathSync(e.dir), "node_modules") + path.sep), `installed as a copy, not linked to the repository: ${lib}`);
  t.true(fs.existsSync(path.join(lib, "dist", "pipeline", "library.d.ts")), "typed: the declarations ship");
  t.false(fs.existsSync(path.join(lib, "test")), "tests do not ship");
  // The user's program type-checks against the shipped declarations (its own TypeScript, its own tsconfig).
  t.notThrows(() => sh(path.join(e.dir, "node_modules", ".bin", "tsc"), ["--noEmit", "-p", "."], e.dir));
  // And a wrong arg type is what an editor (tsc) flags, naming the arg.
  fs.writeFileSync(path.join(e.dir, "wrong.ts"), 'import { SupplyChain } from "secure-supply-chain";\nnew SupplyChain("x", { file: "a.nix", attribute: "a", bootTimeout: "long" });\n');
  const wrong = t.throws(() => sh(path.join(e.dir, "node_modules", ".bin", "tsc"), ["--noEmit", "--strict", "--esModuleInterop", "--skipLibCheck", "--target", "ES2022", "--module", "commonjs", "--moduleResolution", "node", "wrong.ts"], e.dir));
  t.regex(String((wrong as any).stdout), /wrong\.ts\(2,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
  fs.rmSync(path.join(e.dir, "wrong.ts"));
});

test.serial("(real engine) a wrong arg of one chain is one error at pulumi preview naming the chain and the arg", async (t) => {
  await pulumi(e, ["stack", "init", STACK]);
  const keys = cliJson(["keygen", "--out", path.join(path.dirname(e.dir), "keys")]);
  await pulumi(e, ["config", "set", "--secret", "signingKey", "--stack", STACK, "--", fs.readFileSync(keys.privateKey, "utf8")]);
  await pulumi(e, ["config", "set", "smallPolicy", "maybe", "--stack", STACK]);
  const preview = await pulumi(e, ["preview", "--stack", STACK], { allowFailure: true });
  t.not(preview.code, 0);
  const out = preview.stdout + preview.stderr;
  t.true(out.includes(`chain 'small': arg 'policy' has value "maybe"; allowed: one of "fail", "warn"`), out.slice(-2000));
  t.false(/\n\s+at /.test(out), "no stack trace for a wrong arg");
  await pulumi(e, ["config", "rm", "smallPolicy", "--stack", STACK]);
});

test.serial("(real engine) pulumi up of the user's program runs both chains: each built, rebuilt offline, verified, booted with its own probes; the outputs are the ones its index.ts exports", async (t) => {
  const up = await pulumi(e, ["up", "--yes", "--stack", STACK]);
  t.log(up.stdout.split("\n").filter((l) => /created \(|Duration/.test(l)).map((l) => l.slice(0, 160)).join("\n"));
  const outputs = JSON.parse((await pulumi(e, ["stack", "output", "--json", "--show-secrets", "--stack", STACK])).stdout);
  t.deepEqual(Object.keys(outputs), ["images"]);
  const { small, system } = outputs.images;
  t.not(small.outPath, system.outPath);
  t.regex(small.outPath, /-demo-image$/);
  t.regex(system.outPath, /-system-image$/);
  for (const [name, image] of Object.entries({ small, system }) as [string, any][]) {
    t.true(image.reproducible, `${name}: reproducible`);
    t.true(image.bootTestPassed, `${name}: its probes passed`);
  }
  // Each chain writes under its own work dir; the boot tests ran this project's own probe specs.
  for (const chain of ["small", "system"]) t.true(fs.existsSync(path.join(e.dir, ".supply-chain", STACK, chain, "closure")), chain);
  const state = (await pulumi(e, ["stack", "export", "--stack", STACK])).stdout;
  t.true(state.includes("--probes probes/small.yaml") && state.includes("--probes probes/system.yaml"), "each chain's own probes");
  // The commands name the CLI inside node_modules, relative: the state holds no path of this checkout or of the repository.
  t.true(state.includes("node node_modules/secure-supply-chain/bin/supply-chain.js build"), "the step CLI through the package");
  t.false(state.includes(ROOT + "/"), "nothing of the repository the package was packed from");
  // Only the system chain signs (the small one has attest: false), and its provenance verifies.
  t.false(fs.existsSync(path.join(e.dir, ".supply-chain", STACK, "small", "attest")), "the small chain signs nothing");
  const verified = cliJson(["verify-attestation", "--attestation", system.provenance, "--public-key", path.join(path.dirname(e.dir), "keys", "signing.pub"), "--predicate-type", "https://slsa.dev/provenance/v1", "--store-path", system.outPath]);
  t.true(verified.verified);
});
