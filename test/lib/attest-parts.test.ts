// The pure parts of attest: digest keys, package URLs and names from store names, and what the
// provenance records about a source file in a git checkout (commit, tree, dirty); which bytes a
// verified statement's file digest is of.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { declaredDigest } from "../../pipeline/lib/in-toto";
import { parseStoreName, purlOf, uuidV5 } from "../../pipeline/lib/sbom";
import { imageDigest } from "../../pipeline/steps/attest";
import { sourceParameters, verifiedStatement } from "../../pipeline/lib/attestation";
import { generateKeyPair, INTOTO_PAYLOAD_TYPE, parsePrivateKey, signEnvelope } from "../../pipeline/lib/dsse";
import { statement, STATEMENT_TYPE } from "../../pipeline/lib/in-toto";

test("declared hashes are keyed by what they cover: the file (flat) or its NAR (recursive)", (t) => {
  t.deepEqual(declaredDigest({ mode: "flat", algo: "sha256", value: "ab" }), { sha256: "ab" });
  t.deepEqual(declaredDigest({ mode: "recursive", algo: "sha256", value: "ab" }), { nixNarSha256: "ab" });
  t.deepEqual(declaredDigest({ mode: "recursive", algo: "sha512", value: "ab" }), { nixNarSha512: "ab" });
  t.deepEqual(declaredDigest({ mode: "git", algo: "sha1", value: "ab" }), { nixGitSha1: "ab" });
});

test("names and versions split like builtins.parseDrvName; purls for crates, npm, GitHub, Debian, else generic", (t) => {
  t.deepEqual(parseStoreName("busybox-static"), { name: "busybox-static" });
  t.deepEqual(parseStoreName("serde-1.0.200.tar.gz"), { name: "serde", version: "1.0.200" });
  t.is(purlOf("https://crates.io/api/v1/crates/serde/1.0.200/download", "serde", "1.0.200"), "pkg:cargo/serde@1.0.200");
  t.is(purlOf("https://static.crates.io/crates/tokio/tokio-1.38.0.crate", "x", undefined), "pkg:cargo/tokio@1.38.0");
  t.is(purlOf("https://registry.npmjs.org/@types/node/-/node-20.11.0.tgz", "x", undefined), "pkg:npm/%40types/node@20.11.0");
  t.is(purlOf("https://github.com/NixOS/nixpkgs/archive/abc123.tar.gz", "x", undefined), "pkg:github/nixos/nixpkgs@abc123"); // the purl spec lowercases GitHub names
  t.is(purlOf("https://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2Bb3_amd64.deb", "x", undefined), "pkg:deb/debian/busybox-static@1.35.0-4+b3?arch=amd64"); // as packageurl-js encodes it
  t.is(purlOf("file:///var/cache/k.deb", "k", "1"), "pkg:generic/k@1?download_url=file%3A%2F%2F%2Fvar%2Fcache%2Fk.deb");
  t.is(purlOf(undefined, "rootfs.sh", undefined), "pkg:generic/rootfs.sh");
});

test("uuidV5 equals Python's uuid.uuid5(NAMESPACE_URL, ...) (computed there, recorded here)", (t) => {
  t.is(uuidV5("https://example.com/"), "dd2c1780-811a-5296-81c5-178a0ef488bc");
  t.regex(uuidV5("x"), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test("imageDigest: only a digest-pinned reference or an image id names content", (t) => {
  t.is(imageDigest(`nixos/nix@sha256:${"a".repeat(64)}`), `sha256:${"a".repeat(64)}`);
  t.is(imageDigest(`sha256:${"b".repeat(64)}`), `sha256:${"b".repeat(64)}`);
  t.is(imageDigest("nixos/nix:2.8.0"), null);
  t.is(imageDigest(undefined), null);
});

test("a source file in a git checkout is recorded relative to it, with commit, tree and the dirty flag", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "attest-git-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const git = (...a: string[]) => execFileSync("git", ["-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com", ...a]).toString().trim();
  fs.mkdirSync(path.join(dir, "nix"));
  const file = path.join(dir, "nix", "default.nix");
  fs.writeFileSync(file, "{ }\n");
  t.deepEqual(await sourceParameters({ file, attribute: "iso" }), { file, attribute: "iso" }); // not a checkout yet
  git("init", "-q");
  git("add", ".");
  git("commit", "-q", "-m", "x");
  const clean = await sourceParameters({ file, attribute: "iso" });
  t.deepEqual(clean, { file: "nix/default.nix", attribute: "iso", git: { commit: git("rev-parse", "HEAD"), tree: git("rev-parse", "HEAD^{tree}"), dirty: false } });
  fs.writeFileSync(path.join(dir, "untracked.nix"), "{ }\n");
  t.true((await sourceParameters({ file, attribute: "iso" })).git!.dirty);
  t.deepEqual(await sourceParameters({ flake: "path:/src#iso" }), { flake: "path:/src#iso" });
});

test("verifiedStatement's fileSha256 is of the very bytes it verified: the file as read once, not re-read or re-serialised", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "attest-parts-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const keys = generateKeyPair();
  fs.writeFileSync(path.join(dir, "key.pub"), keys.publicPem);
  const envelope = signEnvelope(Buffer.from(JSON.stringify(statement([], "https://example.com/p", {}))), INTOTO_PAYLOAD_TYPE, parsePrivateKey(keys.privatePem, "test key"));
  const file = path.join(dir, "a.intoto.jsonl");
  const bytes = Buffer.from(JSON.stringify(envelope) + "\n");
  fs.writeFileSync(file, bytes);
  const r = verifiedStatement(file, path.join(dir, "key.pub"));
  if (!r.ok) return t.fail(r.reason);
  t.is(r.v.statement._type, STATEMENT_TYPE);
  t.is(r.v.fileSha256, crypto.createHash("sha256").update(bytes).digest("hex"));
  // The same envelope, pretty-printed: the same statement, other bytes, another digest.
  const pretty = path.join(dir, "b.json");
  fs.writeFileSync(pretty, JSON.stringify(JSON.parse(bytes.toString()), null, 2));
  const p = verifiedStatement(pretty, path.join(dir, "key.pub"));
  if (!p.ok) return t.fail(p.reason);
  t.deepEqual(p.v.payload, r.v.payload);
  t.is(p.v.fileSha256, crypto.createHash("sha256").update(fs.readFileSync(pretty)).digest("hex"));
});
