// What attesting and verifying steps share: reading an envelope and a key once, believing a signed
// statement only through its signature (verifiedStatement), the signer's private key, and the facts
// every statement records about the tool and the reviewed source.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { Envelope, INTOTO_PAYLOAD_TYPE, parseEnvelope, parsePrivateKey, parsePublicKey, verifyEnvelope } from "./dsse";
import { SourceParameters, STATEMENT_TYPE, Subject } from "./in-toto";
import { run } from "./proc";
import { InputError } from "./step";

export const DEFAULT_BUILDER_ID = "https://github.com/secure-supply-chain/builders/local/v1";

export function toolVersion(): string {
  return JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8")).version;
}

/**
 * One envelope: a JSON document, or the single line of an `.intoto.jsonl`; read once, with the
 * sha256 of the bytes it was parsed from (what records of "this attestation" must name).
 */
export function readEnvelope(file: string): { envelope: Envelope; sha256: string } {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e: any) {
    throw new InputError(`cannot read the attestation ${file}: ${e.code ?? e.message}`);
  }
  const sha256 = crypto.createHash("sha256").update(bytes).digest("hex");
  const text = bytes.toString("utf8");
  const lines = text.split("\n").filter((l) => l.trim());
  let value: unknown;
  try {
    value = JSON.parse(lines.length > 1 ? text : lines[0] ?? "");
  } catch {
    throw new InputError(lines.length > 1 ? `${file} holds ${lines.length} lines: verify-attestation checks one envelope per file` : `${file} is not JSON`);
  }
  try {
    return { envelope: parseEnvelope(value, file), sha256 };
  } catch (e: any) {
    throw new InputError(e.message);
  }
}

export function readPublicKey(file: string) {
  let pem: string;
  try {
    pem = fs.readFileSync(file, "utf8");
  } catch (e: any) {
    throw new InputError(`cannot read the public key ${file}: ${e.code ?? e.message}`);
  }
  try {
    return parsePublicKey(pem, `--public-key ${file}`);
  } catch (e: any) {
    throw new InputError(e.message);
  }
}

export interface VerifiedStatement {
  keyid: string;
  /** The exact bytes the signature covers (the statement is parsed from these, never re-read). */
  payload: Buffer;
  /** The sha256 (hex) of the attestation file's bytes as read for this verification, not re-read. */
  fileSha256: string;
  statement: { _type: string; subject: Subject[]; predicateType: string | null; predicate: any };
}

/**
 * The one way an attestation is believed: read once, the DSSE signature checked with the key, the
 * payload an in-toto Statement v1. Returns the reason instead of throwing so callers decide its exit.
 */
export function verifiedStatement(attestation: string, publicKey: string): { ok: true; v: VerifiedStatement } | { ok: false; keyid: string; reason: string } {
  const { envelope, sha256: fileSha256 } = readEnvelope(attestation);
  const key = readPublicKey(publicKey);
  const v = verifyEnvelope(envelope, key);
  if (!v.ok) return { ok: false, keyid: v.keyid, reason: v.reason };
  if (envelope.payloadType !== INTOTO_PAYLOAD_TYPE) return { ok: false, keyid: v.keyid, reason: `payload type is '${envelope.payloadType}', not ${INTOTO_PAYLOAD_TYPE}` };
  let st: any;
  try {
    st = JSON.parse(v.payload.toString("utf8"));
  } catch {
    return { ok: false, keyid: v.keyid, reason: `the signed payload is not JSON` };
  }
  if (st?._type !== STATEMENT_TYPE) return { ok: false, keyid: v.keyid, reason: `the payload is not an in-toto Statement v1 (_type ${JSON.stringify(st?._type)})` };
  const subject: Subject[] = Array.isArray(st.subject) ? st.subject.filter((s: any) => s && typeof s.name === "string" && s.digest && typeof s.digest === "object") : [];
  const predicateType = typeof st.predicateType === "string" ? st.predicateType : null;
  return { ok: true, v: { keyid: v.keyid, payload: v.payload, fileSha256, statement: { _type: st._type, subject, predicateType, predicate: st.predicate } } };
}

/**
 * The private key's PEM from a file or an environment variable. The variable is removed from our
 * environment once read, so no child (nix, git) inherits it; messages never quote the key.
 */
export function readSigningKey(values: { key?: string; "key-env"?: string }): crypto.KeyObject {
  if (!!values.key === !!values["key-env"]) throw new InputError("give exactly one of --key FILE and --key-env NAME");
  let pem: string;
  let what: string;
  if (values.key) {
    what = `--key ${values.key}`;
    try {
      pem = fs.readFileSync(values.key, "utf8");
    } catch (e: any) {
      throw new InputError(`cannot read the signing key ${values.key}: ${e.code ?? e.message}`);
    }
  } else {
    const name = values["key-env"]!;
    what = `the environment variable ${name} (--key-env)`;
    const v = process.env[name];
    if (!v) throw new InputError(`${what} is not set or empty`);
    pem = v;
    delete process.env[name];
  }
  try {
    return parsePrivateKey(pem, what);
  } catch (e: any) {
    throw new InputError(e.message);
  }
}

async function git(dir: string, args: string[]): Promise<string | null> {
  const r = await run("git", ["-C", dir, ...args], { allowFailure: true, streamStderr: false }).catch(() => null);
  return r && r.code === 0 ? r.stdout.trim() : null;
}

/** The reviewed source: file + attribute (relative to its git checkout, with commit, tree and dirtiness) or flake ref. */
export async function sourceParameters(target: { file?: string; attribute?: string; flake?: string }): Promise<SourceParameters> {
  if (target.flake) return { flake: target.flake };
  const file = target.file!;
  const top = await git(path.dirname(file), ["rev-parse", "--show-toplevel"]);
  const commit = top && (await git(top, ["rev-parse", "--verify", "HEAD"]));
  if (!top || !commit) return { file, attribute: target.attribute };
  const tree = (await git(top, ["rev-parse", "HEAD^{tree}"]))!;
  const status = await git(top, ["status", "--porcelain", "--untracked-files=normal"]);
  const remote = await git(top, ["remote", "get-url", "origin"]);
  return {
    file: path.relative(fs.realpathSync(top), fs.realpathSync(file)),
    attribute: target.attribute,
    git: { commit, tree, dirty: status !== "", ...(remote ? { remote } : {}) },
  };
}

