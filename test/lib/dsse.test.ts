// DSSE against the spec's own test vector, and each way an envelope can be wrong, rejected by name.
import test from "ava";
import * as crypto from "node:crypto";
import { decodeBase64, generateKeyPair, keyidOf, pae, parsePrivateKey, parsePublicKey, signEnvelope, verifyEnvelope } from "../../pipeline/lib/dsse";

// secure-systems-lab/dsse protocol.md, "Test Vectors": body, type, PAE, the P-256 key and signature.
const VECTOR = {
  type: "http://example.com/HelloWorld",
  body: "hello world",
  pae: "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
  x: 46950820868899156662930047687818585632848591499744589407958293238635476079160n,
  y: 5640078356564379163099075877009565129882514886557779369047442380624545832820n,
  sig: "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==",
};

const b64url = (n: bigint) => Buffer.from(n.toString(16).padStart(64, "0"), "hex").toString("base64url");

test("PAE equals the DSSE spec's test vector, and the spec's signature verifies over our PAE only", (t) => {
  const ours = pae(VECTOR.type, Buffer.from(VECTOR.body));
  t.is(ours.toString(), VECTOR.pae);
  const key = crypto.createPublicKey({ key: { kty: "EC", crv: "P-256", x: b64url(VECTOR.x), y: b64url(VECTOR.y) }, format: "jwk" });
  const sig = decodeBase64(VECTOR.sig, "sig");
  t.true(crypto.verify("sha256", ours, { key, dsaEncoding: "ieee-p1363" }, sig));
  // Built to fail: a PAE that counted characters wrongly (or the body alone) is not what was signed.
  t.false(crypto.verify("sha256", Buffer.from("DSSEv1 28 http://example.com/HelloWorld 11 hello world"), { key, dsaEncoding: "ieee-p1363" }, sig));
  t.false(crypto.verify("sha256", Buffer.from(VECTOR.body), { key, dsaEncoding: "ieee-p1363" }, sig));
});

test("PAE lengths are byte lengths (UTF-8), not character counts", (t) => {
  t.is(pae("t/ü", Buffer.from("é", "utf8")).toString("utf8"), "DSSEv1 4 t/ü 2 é");
});

test("keyid is the hex SHA-256 of the SPKI DER (recomputed from the PEM text)", (t) => {
  const k = generateKeyPair();
  const der = Buffer.from(k.publicPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  t.is(k.keyid, crypto.createHash("sha256").update(der).digest("hex"));
  t.is(keyidOf(parsePrivateKey(k.privatePem, "key")), k.keyid);
});

function signed() {
  const k = generateKeyPair();
  const priv = parsePrivateKey(k.privatePem, "key");
  const pub = parsePublicKey(k.publicPem, "pub");
  const payload = Buffer.from(JSON.stringify({ _type: "https://in-toto.io/Statement/v1", subject: [] }));
  return { k, pub, env: signEnvelope(payload, "application/vnd.in-toto+json", priv) };
}

function flip(b64: string, at: number): string {
  const b = Buffer.from(b64, "base64");
  b[at] ^= 0x01;
  return b.toString("base64");
}

test("a signed envelope verifies; one flipped byte in the payload or the signature is a bad signature", (t) => {
  const { k, pub, env } = signed();
  const ok = verifyEnvelope(env, pub);
  t.true(ok.ok);
  t.is(ok.keyid, k.keyid);
  t.is(env.signatures[0].keyid, k.keyid);
  const badPayload = verifyEnvelope({ ...env, payload: flip(env.payload, 10) }, pub);
  t.false(badPayload.ok);
  t.regex((badPayload as any).reason, /^bad signature/);
  const badSig = verifyEnvelope({ ...env, signatures: [{ ...env.signatures[0], sig: flip(env.signatures[0].sig, 5) }] }, pub);
  t.false(badSig.ok);
  t.regex((badSig as any).reason, /^bad signature/);
  // The payload type is signed too: relabelling it breaks the signature.
  t.false(verifyEnvelope({ ...env, payloadType: "application/json" }, pub).ok);
});

test("another key's public half is a key mismatch naming both keyids", (t) => {
  const { k, env } = signed();
  const other = generateKeyPair();
  const v = verifyEnvelope(env, parsePublicKey(other.publicPem, "other"));
  t.false(v.ok);
  t.is((v as any).reason, `key mismatch: signed by keyid ${k.keyid}, the public key's keyid is ${other.keyid}`);
});

test("standard and URL-safe base64, padded or not, are both accepted; other characters are refused", (t) => {
  const { pub, env } = signed();
  const urlSafe = (s: string) => Buffer.from(s, "base64").toString("base64url"); // no padding, -_ alphabet
  const u = { ...env, payload: urlSafe(env.payload), signatures: [{ ...env.signatures[0], sig: urlSafe(env.signatures[0].sig) }] };
  t.not(u.signatures[0].sig, env.signatures[0].sig);
  t.true(verifyEnvelope(u, pub).ok);
  t.true(verifyEnvelope({ ...env, payload: env.payload.replace(/=+$/, "") }, pub).ok);
  t.deepEqual(decodeBase64("-_8", "x"), Buffer.from([0xfb, 0xff]));
  t.deepEqual(decodeBase64("+/8=", "x"), Buffer.from([0xfb, 0xff]));
  t.throws(() => decodeBase64("aGVs bG8=", "the payload"), { message: "the payload is not base64 (standard or URL-safe)" });
  t.throws(() => decodeBase64("ab+_", "x"));
  const v = verifyEnvelope({ ...env, payload: env.payload.slice(0, 8) + "*" + env.payload.slice(9) }, pub);
  t.is((v as any).reason, "the envelope's payload is not base64 (standard or URL-safe)");
});

test("keys: a non-Ed25519 key, a private key as public key, and garbage are refused by name", (t) => {
  const ec = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  t.throws(() => parsePrivateKey(ec.privateKey.export({ type: "pkcs8", format: "pem" }).toString(), "--key k.pem"), { message: "--key k.pem is a ec key, not Ed25519" });
  const k = generateKeyPair();
  t.throws(() => parsePublicKey(k.privatePem, "--public-key p"), { message: /--public-key p is a private key/ });
  const e = t.throws(() => parsePrivateKey("not a key SECRETLOOKING", "the environment variable K (--key-env)"));
  t.regex(e!.message, /^the environment variable K \(--key-env\) is not a PEM private key/);
  t.notRegex(e!.message, /SECRETLOOKING/);
});
