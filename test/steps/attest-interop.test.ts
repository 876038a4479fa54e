// A verifier that is not ours agrees: securesystemslib (PyPI) verifies both DSSE envelopes with the
// public key, and cyclonedx-python-lib's strict 1.6 schema validator accepts the SBOM; both reject a
// tampered copy. The venv comes from scripts/setup.sh; in CI a missing one fails the test.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { attestArgs, Chain, cli, demoChain } from "./attest.helpers";

const PYENV = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "secure-supply-chain", "pyenv");
const PYTHON = path.join(PYENV, "bin", "python");
const SCRIPT = path.join(__dirname, "..", "fixtures", "attest", "independent_verify.py");

let c: Chain;
let r: any;
test.before(() => {
  c = demoChain("attest-interop-");
  const a = cli([...attestArgs(c, path.join(c.dir, "att")), "--key", c.keys.privateKey]);
  if (a.code !== 0) throw new Error(`attest failed (exit ${a.code}): ${a.stderr.slice(-2000)}`);
  r = a.json;
});
test.after.always(() => c && fs.rmSync(c.dir, { recursive: true, force: true }));

function independent(sbom: string, envelopes: string[]): any {
  return JSON.parse(execFileSync(PYTHON, [SCRIPT, c.keys.publicKey, c.keys.keyid, sbom, ...envelopes]).toString());
}

test("securesystemslib verifies both envelopes and the CycloneDX schema validates the SBOM; tampered copies are rejected", (t) => {
  if (!fs.existsSync(PYTHON)) {
    if (process.env.CI) t.fail(`${PYTHON} is missing: scripts/setup.sh installs the interop verifiers`);
    else t.log(`SKIPPED: ${PYTHON} is missing (run scripts/setup.sh)`);
    return;
  }
  const ok = independent(r.sbom, [r.provenance, r.verification]);
  t.deepEqual(ok.envelopes[r.provenance], { ok: true, keyids: [c.keys.keyid], predicateType: "https://slsa.dev/provenance/v1" });
  t.deepEqual(ok.envelopes[r.verification], { ok: true, keyids: [c.keys.keyid], predicateType: "https://slsa.dev/verification_summary/v1" });
  t.deepEqual(ok.sbom, { ok: true, error: null });
  // Built to fail: one flipped payload byte, and a component type the schema does not know.
  const e = JSON.parse(fs.readFileSync(r.provenance, "utf8"));
  const b = Buffer.from(e.payload, "base64");
  b[100] ^= 0x01;
  const tampered = path.join(c.dir, "tampered.intoto.jsonl");
  fs.writeFileSync(tampered, JSON.stringify({ ...e, payload: b.toString("base64") }) + "\n");
  const bom = JSON.parse(fs.readFileSync(r.sbom, "utf8"));
  bom.components[0].type = "no-such-type";
  const badSbom = path.join(c.dir, "bad.cdx.json");
  fs.writeFileSync(badSbom, JSON.stringify(bom));
  const bad = independent(badSbom, [tampered]);
  t.false(bad.envelopes[tampered].ok);
  t.regex(bad.envelopes[tampered].error, /VerificationError/);
  t.false(bad.sbom.ok);
});
