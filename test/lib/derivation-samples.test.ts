// The real derivation JSON samples are what their Nix prints today: the host's 2.8 and sid's 2.34
// (the root scripts/setup.sh builds) record them again, under bwrap, byte for byte. trixie's 2.26 is
// re-recorded by hand (test/fixtures/derivations/README.md): its root is not built in CI.
import test from "ava";
import * as fs from "node:fs";
import * as path from "node:path";
import { recordDump, SAMPLES, sampleVersion } from "../fixtures/derivations/record";

for (const system of ["host", "sid"]) {
  test(`${SAMPLES[system]} is what the ${system} Nix prints for the closure world`, async (t) => {
    const { version, dump } = await recordDump(system);
    t.true(version.startsWith(`${sampleVersion(SAMPLES[system])}.`), version);
    t.is(dump, fs.readFileSync(path.join(__dirname, "..", "fixtures", "derivations", SAMPLES[system]), "utf8"));
  });
}
