// A second, independent Nix rebuilds the demo image: the host's Nix 2.8 builds it and exports its
// closure; `rebuild --nix-root` runs Debian sid's Nix 2.34 (scripts/nix-rootfs.sh) under bwrap on
// an empty /nix with no network, importing the closure, instantiating the reviewed files and
// realising them with substituters off. The image's NAR hash (and every rebuilt path's) must be
// the 2.8 build's.
import test from "ava";
import * as fs from "node:fs";
import * as path from "node:path";
import { cli, closureOf, demoWorld, DemoWorld, rm } from "./rebuild-helpers";
import { hostNixVersion, nixRoot, NixRoot } from "../helpers/nix-root";

let w: DemoWorld;
let sid: NixRoot;

test.before(async () => {
  sid = nixRoot("sid");
  w = await demoWorld("rebuild-nix-root-test-");
});

test.after.always(() => {
  if (w) rm(w.dir);
});

test("Nix 2.34 from the sid root rebuilds the host 2.8 build's image bit for bit, offline in an empty store", async (t) => {
  const target = ["--file", w.file, "--attribute", w.attribute];
  const built = await cli(["build", ...target, "--offline"]);
  t.is(built.code, 0, built.stderr.slice(-3000));
  const closure = await closureOf(w, w.attribute, "closure");

  const out = path.join(w.dir, "rb-sid");
  const r = await cli(["rebuild", ...target, "--closure", closure, "--isolation", "bwrap", "--nix-root", sid.root, "--out", out]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.not(sid.nixVersion, hostNixVersion());
  t.is(r.json.nixVersion, sid.nixVersion, "the Nix inside reported the root's version");
  t.is(r.json.nixRoot, sid.root);
  t.deepEqual(r.json.network.interfaces, ["lo"]);
  t.regex(fs.readFileSync(r.json.log, "utf8"), /importing .* into the empty store/);
  t.is(r.json.drvPath, built.json.drvPath, "2.34 instantiates the reviewed files to the .drv 2.8 evaluated");
  t.is(r.json.outPath, built.json.outPath);
  t.is(r.json.narHash, built.json.narHash, "the image's NAR hash is the 2.8 build's");
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, "rebuild.json"), "utf8")), r.json, "rebuild.json records it");

  // Every rebuilt path, not only the image, against the host's store.
  const v = await cli(["verify", ...target, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.matched, r.json.paths.length);
});

test("--nix-root is refused with docker (an image is its own system) and for a directory without Nix", async (t) => {
  const base = ["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", w.file, "--out", path.join(w.dir, "rb-refused")];
  const docker = await cli([...base, "--isolation", "docker", "--image", "any", "--nix-root", sid.root]);
  t.is(docker.code, 2);
  t.regex(docker.stderr, /--nix-root is for --isolation bwrap only/);
  const empty = await cli([...base, "--isolation", "bwrap", "--nix-root", w.dir]);
  t.is(empty.code, 2);
  t.regex(empty.stderr, /has no \/usr\/bin\/nix-store/);
});
