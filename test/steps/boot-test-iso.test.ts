// boot-test's ISO path (-cdrom), the form the real NixOS image ships in: a real El Torito ISO
// (isolinux) around the demo world's kernel and initrd, given as a file and as a dir with iso/*.iso.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../../pipeline/lib/proc";
import { cli } from "./demo-world.helpers";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "boot-test-iso-"));
process.on("exit", () => fs.rmSync(work, { recursive: true, force: true }));

const ISOLINUX = "/usr/lib/ISOLINUX/isolinux.bin"; // Debian package isolinux
const LDLINUX = "/usr/lib/syslinux/modules/bios/ldlinux.c32"; // Debian package syslinux-common

let probes = "";
let isoDir = "";

test.before(async () => {
  for (const [file, pkg] of [[ISOLINUX, "isolinux"], [LDLINUX, "syslinux-common"]]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: install the Debian package ${pkg} (scripts/setup.sh does)`);
  }
  const world = await cli(["demo-world", path.join(work, "world")]);
  if (world.code !== 0) throw new Error(`demo-world failed: ${world.stderr}`);
  const built = await cli(["build", "--file", world.json.file, "--attribute", world.json.attribute]);
  if (built.code !== 0) throw new Error(`build failed: ${built.stderr}`);
  probes = world.json.probes;

  const root = path.join(work, "isoroot");
  fs.mkdirSync(path.join(root, "isolinux"), { recursive: true });
  fs.copyFileSync(ISOLINUX, path.join(root, "isolinux", "isolinux.bin"));
  fs.copyFileSync(LDLINUX, path.join(root, "isolinux", "ldlinux.c32"));
  for (const f of ["kernel", "initrd"]) fs.copyFileSync(path.join(built.json.outPath, f), path.join(root, f));
  // The ISO brings its own command line (boot-test cannot append to it): console on ttyS0, like nix/profiles/iso.nix.
  fs.writeFileSync(
    path.join(root, "isolinux", "isolinux.cfg"),
    "serial 0 115200\ndefault demo\nprompt 0\ntimeout 1\nlabel demo\n  kernel /kernel\n  append initrd=/initrd console=ttyS0 loglevel=4\n",
  );
  isoDir = path.join(work, "image");
  fs.mkdirSync(path.join(isoDir, "iso"), { recursive: true });
  await run("xorriso", ["-as", "mkisofs", "-quiet", "-o", path.join(isoDir, "iso", "demo.iso"), "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", root], { streamStderr: false });
});

test.serial("an ISO in iso/*.iso boots from -cdrom and the probes pass", async (t) => {
  const r = await cli(["boot-test", "--image", isoDir, "--probes", probes, "--timeout", "120", "--out", path.join(work, "dir")]);
  t.is(r.code, 0, r.stderr);
  t.true(r.json.passed);
  t.regex(r.stderr, /-cdrom \S+\/iso\/demo\.iso -boot d/);
  t.regex(fs.readFileSync(r.json.serialLog, "utf8"), /demo-world: ready/);
});

test.serial("an .iso file is booted the same way; a directory with two ISOs is exit 2", async (t) => {
  const iso = path.join(isoDir, "iso", "demo.iso");
  const r = await cli(["boot-test", "--image", iso, "--probes", probes, "--timeout", "120", "--out", path.join(work, "file")]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`-cdrom ${iso} -boot d`));

  const two = path.join(work, "two");
  fs.mkdirSync(path.join(two, "iso"), { recursive: true });
  for (const n of ["a.iso", "b.iso"]) fs.copyFileSync(iso, path.join(two, "iso", n));
  const bad = await cli(["boot-test", "--image", two, "--probes", probes]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, new RegExp(`supply-chain boot-test: image ${two} has 2 ISOs in iso/ \\(a\\.iso, b\\.iso\\): pass one of them\\n$`));
});
