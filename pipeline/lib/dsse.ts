// DSSE (Dead Simple Signing Envelope, secure-systems-lab/dsse) with Ed25519 from node:crypto: the
// signature covers PAE(payloadType, payload), so a payload cannot be re-labelled as another type.
import * as crypto from "node:crypto";

export const INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";

export interface Signature {
  keyid: string;
  sig: string;
}

export interface Envelope {
  payload: string;
  payloadType: string;
  signatures: Signature[];
}

/** Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes. */
export function pae(payloadType: string, body: Buffer): Buffer {
  const type = Buffer.from(payloadType, "utf8");
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${body.length} `), body]);
}

/**
 * DSSE lets signers use standard or URL-safe base64, padded or not, and verifiers must accept both.
 * Node's decoder silently skips characters it does not know, so the alphabet is checked first: a
 * corrupted envelope is refused instead of decoding to something else.
 */
export function decodeBase64(s: string, what: string): Buffer {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(s) || /[+/]/.test(s) && /[-_]/.test(s) || s.replace(/=+$/, "").length % 4 === 1) {
    throw new Error(`${what} is not base64 (standard or URL-safe)`);
  }
  return Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

/** The keyid we publish: hex SHA-256 of the public key's SPKI DER (what `keygen` prints). */
export function keyidOf(key: crypto.KeyObject): string {
  const pub = key.type === "private" ? crypto.createPublicKey(key) : key;
  return crypto.createHash("sha256").update(pub.export({ type: "spki", format: "der" })).digest("hex");
}

function requireEd25519(key: crypto.KeyObject, what: string): crypto.KeyObject {
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`${what} is a ${key.asymmetricKeyType} key, not Ed25519`);
  return key;
}

function loadKey(create: (pem: string) => crypto.KeyObject, pem: string, what: string, kind: string): crypto.KeyObject {
  let key: crypto.KeyObject;
  try {
    key = create(pem);
  } catch (e: any) {
    throw new Error(`${what} is not a PEM ${kind} key (${e.code ?? "unreadable"})`);
  }
  return requireEd25519(key, what);
}

/** A PKCS#8 PEM private key; the message never quotes the PEM (it may be a secret from the environment). */
export function parsePrivateKey(pem: string, what: string): crypto.KeyObject {
  return loadKey((key) => crypto.createPrivateKey({ key, format: "pem" }), pem, what, "private");
}

export function parsePublicKey(pem: string, what: string): crypto.KeyObject {
  // createPublicKey would quietly derive the public half of a private key: an auditor never needs one.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new Error(`${what} is a private key: give the public key (signing.pub)`);
  return loadKey((key) => crypto.createPublicKey({ key, format: "pem" }), pem, what, "public");
}

export function generateKeyPair(): { privatePem: string; publicPem: string; keyid: string } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    keyid: keyidOf(publicKey),
  };
}

export function signEnvelope(payload: Buffer, payloadType: string, privateKey: crypto.KeyObject): Envelope {
  const sig = crypto.sign(null, pae(payloadType, payload), privateKey);
  return { payload: payload.toString("base64"), payloadType, signatures: [{ keyid: keyidOf(privateKey), sig: sig.toString("base64") }] };
}

/** Checks the envelope's shape; throws naming the field that is wrong. */
export function parseEnvelope(value: unknown, what: string): Envelope {
  const e = value as Envelope;
  if (!e || typeof e !== "object") throw new Error(`${what} is not a DSSE envelope (not a JSON object)`);
  if (typeof e.payload !== "string") throw new Error(`${what} is not a DSSE envelope (no string 'payload')`);
  if (typeof e.payloadType !== "string") throw new Error(`${what} is not a DSSE envelope (no string 'payloadType')`);
  if (!Array.isArray(e.signatures) || e.signatures.length === 0) throw new Error(`${what} has no signatures`);
  for (const s of e.signatures) if (!s || typeof s.sig !== "string") throw new Error(`${what} has a signature without 'sig'`);
  return e;
}

export type EnvelopeVerdict =
  | { ok: true; keyid: string; payload: Buffer }
  | { ok: false; keyid: string; reason: string };

/**
 * Accepts when any signature verifies with `publicKey`. keyids are unauthenticated hints (DSSE): they
 * never decide, they only explain a failure ("signed by another key" vs "bad signature").
 */
export function verifyEnvelope(e: Envelope, publicKey: crypto.KeyObject): EnvelopeVerdict {
  const keyid = keyidOf(publicKey);
  let payload: Buffer;
  try {
    payload = decodeBase64(e.payload, "the envelope's payload");
  } catch (err: any) {
    return { ok: false, keyid, reason: err.message };
  }
  const message = pae(e.payloadType, payload);
  const others: string[] = [];
  for (const s of e.signatures) {
    let sig: Buffer;
    try {
      sig = decodeBase64(s.sig, "a signature");
    } catch {
      continue;
    }
    if (crypto.verify(null, message, publicKey, sig)) return { ok: true, keyid, payload };
    if (s.keyid && s.keyid !== keyid) others.push(s.keyid);
  }
  if (others.length === e.signatures.length) {
    return { ok: false, keyid, reason: `key mismatch: signed by keyid ${others.join(", ")}, the public key's keyid is ${keyid}` };
  }
  return { ok: false, keyid, reason: `bad signature: no signature verifies with the public key (keyid ${keyid}) over the payload` };
}
