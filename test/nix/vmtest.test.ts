// nix/tests/integration.nix's Python test script, taken out by real nix with runNixOSTest replaced by
// the identity (mocked: nixpkgs and its test driver cannot be fetched here), must be valid Python
// that drives only the nodes it declares and the units the module defines.
import test from "ava";
import { run } from "../../pipeline/lib/proc";
import { nix } from "./nixfiles";

async function vmTest(): Promise<{ name: string; nodes: string[]; testScript: string }> {
  const r = await nix("nix-instantiate", [
    "--eval", "--strict", "--json", "-E",
    `let t = import ./nix/tests/integration.nix { pkgs = { testers.runNixOSTest = x: x; }; };
     in { inherit (t) name testScript; nodes = builtins.attrNames t.nodes; }`,
  ]);
  if (r.code !== 0) throw new Error(`evaluating nix/tests/integration.nix failed:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

const pythonParses = (source: string) =>
  run("python3", ["-c", "import ast, sys; ast.parse(sys.stdin.read(), 'testScript')"], {
    input: source,
    allowFailure: true,
    streamStderr: false,
  });

test("the VM test script is valid Python, uses only its own nodes, and waits for the module's units", async (t) => {
  const { name, nodes, testScript } = await vmTest();
  t.is(name, "messages-integration");
  t.deepEqual(nodes, ["client", "server"]);
  const parsed = await pythonParses(testScript);
  t.is(parsed.code, 0, parsed.stderr);
  const used = new Set([...testScript.matchAll(/^\s*(?:\w+ = )?(\w+)\.(?:succeed|fail|wait_\w+|systemctl)\(/gm)].map((m) => m[1]));
  // a helper's parameter (def send(machine, ...)) is not a node name
  for (const m of testScript.matchAll(/def \w+\(([^)]*)\)/g)) for (const p of m[1].split(",")) used.delete(p.trim());
  t.true(used.has("server") && used.has("client"));
  for (const node of used) t.true(nodes.includes(node), `the script drives '${node}', which is not a node`);
  for (const unit of ["postgresql.service", "messages-writer.service", "messages-reader.service"]) {
    t.true(testScript.includes(`wait_for_unit("${unit}")`), unit);
  }
  t.regex(testScript, /send\(client, "server", /, "lines go from the client to the server through its firewall");
  t.regex(testScript, /http:\/\/server:8000\//);
});

test("a script with a Python error is caught by the same check", async (t) => {
  const { testScript } = await vmTest();
  const broken = testScript.replace("def send(machine, host, lines):", "def send(machine, host, lines)");
  t.not(broken, testScript);
  const parsed = await pythonParses(broken);
  t.not(parsed.code, 0);
  t.regex(parsed.stderr, /SyntaxError/);
});
