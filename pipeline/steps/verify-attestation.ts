// `supply-chain verify-attestation`: the auditor's offline check of an attestation with a public key:
// the DSSE signature, the in-toto Statement and its predicate type, and that each given file or store
// path is what a subject records. No network, no state of ours: only the envelope, the key, the bytes.
import * as fs from "node:fs";
import * as path from "node:path";
import { Envelope, INTOTO_PAYLOAD_TYPE, parseEnvelope, parsePublicKey, verifyEnvelope } from "../lib/dsse";
import { sha256File } from "../lib/fsx";
import { NAR_SHA256, STATEMENT_TYPE, Subject } from "../lib/in-toto";
import { run } from "../lib/proc";
import { CheckFailed, InputError, StepDefinition } from "../lib/step";
import { parseHash } from "../lib/storepath";

export interface Checked {
  kind: "artifact" | "storePath";
  name: string;
  digest: Record<string, string>;
  /** The subject that matched (or that has the same name, when the digests differ). */
  subject: string | null;
  ok: boolean;
  reason?: string;
}

export interface VerifyAttestationResult {
  verified: boolean;
  keyid: string;
  predicateType: string | null;
  subjects: Subject[];
  checked: Checked[];
  reason?: string;
}

/** One envelope: a JSON document, or the single line of an `.intoto.jsonl`. */
export function readEnvelope(file: string): Envelope {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e: any) {
    throw new InputError(`cannot read the attestation ${file}: ${e.code ?? e.message}`);
  }
  const lines = text.split("\n").filter((l) => l.trim());
  let value: unknown;
  try {
    value = JSON.parse(lines.length > 1 ? text : lines[0] ?? "");
  } catch {
    throw new InputError(lines.length > 1 ? `${file} holds ${lines.length} lines: verify-attestation checks one envelope per file` : `${file} is not JSON`);
  }
  try {
    return parseEnvelope(value, file);
  } catch (e: any) {
    throw new InputError(e.message);
  }
}

function readPublicKey(file: string) {
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

/** A file subject is named by its path relative to the build output: match on that suffix. */
function namedLike(file: string, subjectName: string): boolean {
  const abs = path.resolve(file);
  return subjectName === path.basename(abs) || abs.endsWith(`/${subjectName}`);
}

export async function checkArtifact(file: string, subjects: Subject[]): Promise<Checked> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new InputError(`--artifact ${file} does not exist`);
  if (!st.isFile()) throw new InputError(`--artifact ${file} is not a regular file (for an image directory give its files, e.g. kernel and initrd)`);
  const sha256 = await sha256File(file);
  const base = { kind: "artifact" as const, name: file, digest: { sha256 } };
  const byDigest = subjects.find((s) => s.digest.sha256 === sha256);
  const byName = subjects.find((s) => s.digest.sha256 !== undefined && namedLike(file, s.name));
  if (byDigest && (!byName || byName === byDigest)) return { ...base, subject: byDigest.name, ok: true };
  if (byName) {
    return { ...base, subject: byName.name, ok: false, reason: `artifact ${file} has sha256 ${sha256}, subject ${byName.name} records sha256 ${byName.digest.sha256}` };
  }
  return { ...base, subject: null, ok: false, reason: `artifact ${file} (sha256 ${sha256}) is not a subject of the attestation` };
}

async function localNarSha256(storePath: string): Promise<string> {
  const r = await run("nix-store", ["--query", "--hash", storePath], { allowFailure: true, streamStderr: false });
  if (r.code !== 0) throw new InputError(`--store-path ${storePath} is not a valid path in the local store: ${r.stderr.trim().split("\n").pop()}`);
  return parseHash(r.stdout.trim(), "sha256").hex;
}

export async function checkStorePath(storePath: string, subjects: Subject[]): Promise<Checked> {
  const hex = await localNarSha256(storePath);
  const base = { kind: "storePath" as const, name: storePath, digest: { [NAR_SHA256]: hex } };
  const s = subjects.find((x) => x.name === storePath);
  if (!s) return { ...base, subject: null, ok: false, reason: `store path ${storePath} is not a subject of the attestation` };
  if (s.digest[NAR_SHA256] !== hex) {
    return { ...base, subject: s.name, ok: false, reason: `store path ${storePath} has NAR sha256 ${hex} here, the subject records ${s.digest[NAR_SHA256] ?? "no " + NAR_SHA256}` };
  }
  return { ...base, subject: s.name, ok: true };
}

export interface VerifiedStatement {
  keyid: string;
  /** The exact bytes the signature covers (the statement is parsed from these, never re-read). */
  payload: Buffer;
  statement: { _type: string; subject: Subject[]; predicateType: string | null; predicate: any };
}

/**
 * The one way an attestation is believed: read once, the DSSE signature checked with the key, the
 * payload an in-toto Statement v1. Returns the reason instead of throwing so callers decide its exit.
 */
export function verifiedStatement(attestation: string, publicKey: string): { ok: true; v: VerifiedStatement } | { ok: false; keyid: string; reason: string } {
  const envelope = readEnvelope(attestation);
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
  return { ok: true, v: { keyid: v.keyid, payload: v.payload, statement: { _type: st._type, subject, predicateType, predicate: st.predicate } } };
}

export async function verifyAttestation(o: { attestation: string; publicKey: string; predicateType?: string; artifacts: string[]; storePaths: string[] }): Promise<VerifyAttestationResult> {
  const r = verifiedStatement(o.attestation, o.publicKey);
  const fail = (reason: string, extra: Partial<VerifyAttestationResult> = {}): never => {
    throw new CheckFailed(reason, { verified: false, keyid: r.ok ? r.v.keyid : r.keyid, predicateType: null, subjects: [], checked: [], reason, ...extra });
  };
  if (!r.ok) return fail(r.reason);
  const { keyid, statement } = r.v;
  const subjects = statement.subject;
  const predicateType = statement.predicateType;
  if (o.predicateType && predicateType !== o.predicateType) {
    return fail(`wrong predicate type: the statement is ${predicateType}, expected ${o.predicateType}`, { predicateType, subjects });
  }
  const checked: Checked[] = [];
  for (const a of o.artifacts) checked.push(await checkArtifact(a, subjects));
  for (const p of o.storePaths) checked.push(await checkStorePath(p, subjects));
  const failed = checked.filter((c) => !c.ok);
  const result: VerifyAttestationResult = { verified: failed.length === 0, keyid, predicateType, subjects, checked };
  if (failed.length) {
    const reason = failed.length > 1 ? `${failed[0].reason} (and ${failed.length - 1} more)` : failed[0].reason!;
    throw new CheckFailed(reason, { ...result, reason });
  }
  return result;
}

export const step: StepDefinition<VerifyAttestationResult> = {
  name: "verify-attestation",
  summary: "offline: check a DSSE/in-toto attestation's signature with a public key, its predicate type, and files or store paths against its subjects",
  options: {
    attestation: { type: "string", description: "the envelope (e.g. provenance.intoto.jsonl)", required: true },
    "public-key": { type: "string", description: "the signer's Ed25519 public key, SPKI PEM (signing.pub)", required: true },
    "predicate-type": { type: "string", description: "required predicate type, e.g. https://slsa.dev/provenance/v1 (default: any)" },
    artifact: { type: "string", description: "a file whose sha256 must equal a subject's", multiple: true },
    "store-path": { type: "string", description: "a store path whose NAR hash (local store) must equal its subject's", multiple: true },
  },
  async run({ values }) {
    return verifyAttestation({
      attestation: values.attestation,
      publicKey: values["public-key"],
      predicateType: values["predicate-type"],
      artifacts: values.artifact ?? [],
      storePaths: values["store-path"] ?? [],
    });
  },
};
