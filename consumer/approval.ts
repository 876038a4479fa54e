// The consumer's decision: the publisher's signed evidence, and N of M independent auditors whose signed
// provenance agrees with it (docs/attest.md, "Consumers: N of M"). Pure parts (the config, the judgement)
// are separate from the thin parts that run `supply-chain verify-attestation` and `supply-chain challenge`,
// so the comparison of NAR digests exists once, in the challenge step. No Pulumi here: index.ts turns the
// errors into RunErrors.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { keyidOf, parsePublicKey } from "../pipeline/lib/dsse";
import { LEVEL_BOOTED, LEVEL_REBUILT, NAR_SHA256, SLSA_PROVENANCE_V1, SLSA_VSA_V1 } from "../pipeline/lib/in-toto";

const CLI = path.join(__dirname, "..", "bin", "supply-chain.js");
/** The levels this consumer requires of the publisher's summary: rebuilt bit for bit, and booted. */
export const REQUIRED_LEVELS = [LEVEL_REBUILT, LEVEL_BOOTED];

/** Bad consumer config: one line naming the key. */
export class ConfigError extends Error {}
/** The image is refused: one line saying why. */
export class NotApproved extends Error {}

export interface Auditor {
  stack: string;
  publicKeyPem: string;
  keyid: string;
}

export interface ApprovalConfig {
  publisherStack: string;
  publisherPublicKeyPem: string;
  publisherKeyid: string;
  auditors: Auditor[];
  requiredAgreeing: number;
}

/** What `pulumi.Config#get` returns for each key (strings; structured values as their JSON). */
export interface RawConfig {
  supplyChainStack?: string;
  publisherPublicKey?: string;
  auditors?: string;
  requiredAgreeing?: string;
}

const STACK_NAME = /^[^/\s]+\/[^/\s]+\/[^/\s]+$/;

function publicKey(pem: unknown, key: string): { pem: string; keyid: string } {
  if (typeof pem !== "string" || !pem.trim()) throw new ConfigError(`${key} is not set: give the signer's Ed25519 public key (SPKI PEM)`);
  try {
    return { pem, keyid: keyidOf(parsePublicKey(pem, key)) };
  } catch (e: any) {
    throw new ConfigError(e.message); // never quotes the PEM (it may be a private key given by mistake)
  }
}

/** Pure: the consumer's config, validated up front; throws a ConfigError naming the key. */
export function parseApprovalConfig(raw: RawConfig): ApprovalConfig {
  const publisherStack = raw.supplyChainStack ?? "organization/secure-supply-chain/demo";
  if (!STACK_NAME.test(publisherStack)) throw new ConfigError(`supplyChainStack is ${JSON.stringify(publisherStack)}, not organization/project/stack`);
  const publisher = publicKey(raw.publisherPublicKey, "publisherPublicKey");

  let list: unknown = [];
  if (raw.auditors !== undefined) {
    try {
      list = JSON.parse(raw.auditors);
    } catch {
      throw new ConfigError(`auditors is not JSON: give a list of {stack, publicKey} (pulumi config set --path 'auditors[0].stack' ...)`);
    }
  }
  if (!Array.isArray(list)) throw new ConfigError(`auditors is ${JSON.stringify(list)}, not a list of {stack, publicKey}`);
  const auditors: Auditor[] = [];
  list.forEach((entry, i) => {
    const at = `auditors[${i}]`;
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) throw new ConfigError(`${at} is ${JSON.stringify(entry)}, not {stack, publicKey}`);
    const extra = Object.keys(entry).filter((k) => k !== "stack" && k !== "publicKey");
    if (extra.length) throw new ConfigError(`${at} has ${extra.map((k) => JSON.stringify(k)).join(", ")}: an auditor is only {stack, publicKey}`);
    const { stack, publicKey: pem } = entry as { stack?: unknown; publicKey?: unknown };
    if (typeof stack !== "string" || !STACK_NAME.test(stack)) throw new ConfigError(`${at}.stack is ${JSON.stringify(stack)}, not organization/project/stack`);
    if (stack === publisherStack) throw new ConfigError(`${at}.stack is the publisher's stack ${stack} (supplyChainStack): it cannot audit itself`);
    const dup = auditors.findIndex((a) => a.stack === stack);
    if (dup >= 0) throw new ConfigError(`${at}.stack ${stack} is auditors[${dup}].stack again: each auditor stack is listed once`);
    const k = publicKey(pem, `${at}.publicKey`);
    auditors.push({ stack, publicKeyPem: k.pem, keyid: k.keyid });
  });

  const n = raw.requiredAgreeing ?? "0";
  if (!/^\d+$/.test(n.trim()) || Number(n) > auditors.length) {
    throw new ConfigError(`requiredAgreeing is ${JSON.stringify(n)}: give an integer from 0 to ${auditors.length} (the number of auditors)`);
  }
  return { publisherStack, publisherPublicKeyPem: publisher.pem, publisherKeyid: publisher.keyid, auditors, requiredAgreeing: Number(n) };
}

export type Verdict = "agree" | "missing" | "rejected" | "disagree" | "notIndependent";

export interface AuditorResult {
  stack: string;
  keyid: string;
  verdict: Verdict;
  /** Why it is not agreement (absent for "agree"). */
  reason?: string;
  /** Store paths both it and the publisher attest, compared by challenge (for "agree"). */
  compared?: number;
}

export interface Judgement {
  approved: boolean;
  agreeing: number;
  /** The publisher first, then each auditor that counted, in config order. */
  approvedBy: { stack: string; keyid: string }[];
  /** One line: the refusal, or (approved) the auditors that did not count; null when all counted. */
  line: string | null;
  /** Each auditor's verdict, in config order, independence applied. */
  results: AuditorResult[];
}

export const shortKeyid = (k: string) => `${k.slice(0, 12)}…`;

/**
 * Pure: counts the agreeing auditors. One key is one party: an agreement signed with the publisher's key,
 * or with the key of an auditor already counted, is no independent evidence and does not count.
 */
export function judge(cfg: ApprovalConfig, outPath: string, results: AuditorResult[]): Judgement {
  const counted = new Map<string, string>([[cfg.publisherKeyid, `the publisher ${cfg.publisherStack}`]]);
  const judged = results.map((r): AuditorResult => {
    if (r.verdict !== "agree") return r;
    const other = counted.get(r.keyid);
    if (other) return { stack: r.stack, keyid: r.keyid, verdict: "notIndependent", reason: `agrees, but signed with the same key as ${other} (keyid ${shortKeyid(r.keyid)})` };
    counted.set(r.keyid, r.stack);
    return r;
  });
  const of = (v: Verdict) => judged.filter((r) => r.verdict === v);
  const agreeing = of("agree");
  const parts = [`agreeing: ${agreeing.length ? agreeing.map((r) => `${r.stack} (keyid ${shortKeyid(r.keyid)})`).join(", ") : "none"}`];
  for (const [v, label] of [["missing", "missing"], ["rejected", "not verified"], ["disagree", "disagreeing"], ["notIndependent", "not independent"]] as const) {
    const rs = of(v);
    if (rs.length) parts.push(`${label}: ${rs.map((r) => `${r.stack} (${r.reason})`).join(", ")}`);
  }
  const n = cfg.requiredAgreeing;
  const approved = agreeing.length >= n;
  const count = `${agreeing.length} of the ${n} required independent agreeing attestation${n === 1 ? "" : "s"}`;
  return {
    approved,
    agreeing: agreeing.length,
    approvedBy: approved ? [{ stack: cfg.publisherStack, keyid: cfg.publisherKeyid }, ...agreeing.map((r) => ({ stack: r.stack, keyid: r.keyid }))] : [],
    line: !approved
      ? `${cfg.publisherStack}: image ${outPath} is not approved: ${count}; ${parts.join("; ")}`
      : agreeing.length < judged.length
        ? `${cfg.publisherStack}: image ${outPath} is approved with ${count}; ${parts.join("; ")}`
        : null,
    results: judged,
  };
}

// ---- the thin parts: private copies of the evidence and the CLI ----

export interface Cli {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

export function runCli(args: string[]): Cli {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 });
  let json: any;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

const lastLine = (s: string) => s.trim().split("\n").pop() ?? "";
/** A step's own reason: its JSON's `reason` on exit 1, else its one line on stderr. */
const reasonOf = (r: Cli) => (r.code === 1 && typeof r.json?.reason === "string" ? r.json.reason : lastLine(r.stderr).replace(/^supply-chain [a-z-]+: /, ""));

/**
 * A private directory for one decision. Every attestation is read ONCE into it: the CLI checks the copy
 * and the statement is parsed from the same bytes, so a file changed after the check is never believed.
 */
export class Evidence {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "consumer-approval-"));
  private n = 0;

  /** The bytes of `file`, and the path of their private copy. */
  copy(file: string): { bytes: Buffer; path: string } {
    const bytes = fs.readFileSync(file);
    const p = path.join(this.dir, `${++this.n}.intoto.jsonl`);
    fs.writeFileSync(p, bytes, { mode: 0o400 });
    return { bytes, path: p };
  }

  key(pem: string): string {
    const p = path.join(this.dir, `${++this.n}.pub`);
    fs.writeFileSync(p, pem, { mode: 0o400 });
    return p;
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The statement inside an envelope the CLI has verified (parsed from the same bytes). */
function statementOf(bytes: Buffer): any {
  const envelope = JSON.parse(bytes.toString("utf8"));
  return JSON.parse(Buffer.from(envelope.payload, "base64").toString("utf8"));
}

export interface PublisherEvidence {
  keyid: string;
  keyFile: string;
  /** The private copy of the verified provenance (challenge compares it). */
  provenance: string;
  drvPath: string;
  /** The image's NAR sha256 (hex) as the signed provenance attests it. */
  imageNarSha256: string;
}

/**
 * The publisher's provenance: verify-attestation with publisherPublicKey, the predicate type, and each of
 * `storePaths` (the image: its NAR hash in this machine's store) a subject with that digest.
 */
export function publisherProvenance(ev: Evidence, cfg: ApprovalConfig, file: unknown, storePaths: string[], image: string): PublisherEvidence {
  const keyFile = ev.key(cfg.publisherPublicKeyPem);
  const c = verifiedCopy(ev, cfg, "provenance", file, keyFile, SLSA_PROVENANCE_V1, storePaths, image);
  const drvPath = c.statement.predicate?.buildDefinition?.internalParameters?.drvPath;
  if (typeof drvPath !== "string") throw new NotApproved(`${cfg.publisherStack}: image ${image} is not approved: the provenance attestation names no drvPath`);
  const digest = (c.statement.subject ?? []).find((x: any) => x?.name === image)?.digest?.[NAR_SHA256];
  if (typeof digest !== "string") throw new NotApproved(`${cfg.publisherStack}: image ${image} is not approved: the provenance attests no ${NAR_SHA256} for it`);
  return { keyid: cfg.publisherKeyid, keyFile, provenance: c.path, drvPath, imageNarSha256: digest.toLowerCase() };
}

/** The publisher's signed verification summary must say PASSED with both required levels. */
export function publisherSummary(ev: Evidence, cfg: ApprovalConfig, file: unknown, storePaths: string[], image: string, keyFile: string): void {
  const vsa = verifiedCopy(ev, cfg, "verification summary", file, keyFile, SLSA_VSA_V1, storePaths, image).statement.predicate ?? {};
  const missing = REQUIRED_LEVELS.filter((l) => !(vsa.verifiedLevels ?? []).includes(l));
  if (vsa.verificationResult !== "PASSED" || missing.length) {
    throw new NotApproved(`${cfg.publisherStack}: image ${image} is not approved: the signed verification summary says ${vsa.verificationResult}${missing.length ? `, without ${missing.join(", ")}` : ""}`);
  }
}

function verifiedCopy(ev: Evidence, cfg: ApprovalConfig, what: string, file: unknown, keyFile: string, predicateType: string, storePaths: string[], image: string) {
  const refuse = (why: string) => new NotApproved(`${cfg.publisherStack}: image ${image} is not approved: ${why}`);
  if (typeof file !== "string") throw refuse(`no ${what} attestation among its outputs`);
  let c: { bytes: Buffer; path: string };
  try {
    c = ev.copy(file);
  } catch (e: any) {
    throw refuse(`the ${what} attestation ${file} cannot be read: ${e.code ?? e.message}`);
  }
  const r = runCli(["verify-attestation", "--attestation", c.path, "--public-key", keyFile, "--predicate-type", predicateType, ...storePaths.flatMap((p) => ["--store-path", p])]);
  if (r.code !== 0) throw refuse(`the ${what} attestation ${file} does not verify with publisherPublicKey: ${lastLine(r.stderr)}`);
  return { path: c.path, statement: statementOf(c.bytes) };
}

/** An auditor stack's outputs, or why they cannot be read (a stack that does not exist). */
export type StackOutputs = { ok: true; outputs: Record<string, unknown> } | { ok: false; reason: string };

/**
 * One auditor, against the publisher's verified provenance: its own key (from OUR config) verifies its
 * attestation, which must be provenance of the publisher's drv naming the image; then challenge compares
 * every store path both attest. Each failure is this auditor's verdict, never an exception.
 */
export function checkAuditor(ev: Evidence, a: Auditor, read: StackOutputs, pub: PublisherEvidence, image: string): AuditorResult {
  const base = { stack: a.stack, keyid: a.keyid };
  const result = (verdict: Verdict, reason: string): AuditorResult => ({ ...base, verdict, reason });
  if (a.keyid === pub.keyid) return result("notIndependent", `its configured key is the publisher's (keyid ${shortKeyid(a.keyid)})`);
  if (!read.ok) return result("missing", `its outputs cannot be read: ${read.reason}`);
  const file = read.outputs.auditAttestation;
  if (typeof file !== "string") return result("missing", "no auditAttestation among its outputs");
  let c: { bytes: Buffer; path: string };
  try {
    c = ev.copy(file);
  } catch (e: any) {
    return result("missing", `its auditAttestation ${file} cannot be read: ${e.code ?? e.message}`);
  }
  const keyFile = ev.key(a.publicKeyPem);
  const v = runCli(["verify-attestation", "--attestation", c.path, "--public-key", keyFile, "--predicate-type", SLSA_PROVENANCE_V1]);
  if (v.code !== 0) return result("rejected", `${file}: ${reasonOf(v).split(c.path).join(file)}`);

  const st = statementOf(c.bytes);
  const drvPath = st.predicate?.buildDefinition?.internalParameters?.drvPath;
  if (drvPath !== pub.drvPath) return result("disagree", `its provenance is of ${JSON.stringify(drvPath)}, the publisher's of ${pub.drvPath}`);
  const subjects: any[] = Array.isArray(st.subject) ? st.subject : [];
  if (!subjects.some((s) => s?.name === image && typeof s.digest?.[NAR_SHA256] === "string")) {
    return result("disagree", `its provenance does not attest the image ${image}`);
  }

  const ch = runCli(["challenge", "--attestation", pub.provenance, "--public-key", pub.keyFile, "--attestation", c.path, "--public-key", keyFile]);
  if (ch.code === 0) return { ...base, verdict: "agree", compared: ch.json.paths.length };
  const differing = ch.code === 1 ? (ch.json?.paths ?? []).filter((p: any) => !p.agree) : [];
  if (differing.length) {
    const d = differing[0];
    const more = differing.length > 1 ? ` (and ${differing.length - 1} more paths differ)` : "";
    return result("disagree", `${d.path}: ${NAR_SHA256} publisher ${d.digests[pub.keyid]}, auditor ${d.digests[a.keyid]}${more}`);
  }
  return result("disagree", `challenge: ${reasonOf(ch)}`);
}

/** The whole auditor part: each auditor in config order, then the judgement. */
export function judgeAuditors(ev: Evidence, cfg: ApprovalConfig, pub: PublisherEvidence, image: string, reads: StackOutputs[]): Judgement {
  return judge(cfg, image, cfg.auditors.map((a, i) => checkAuditor(ev, a, reads[i], pub, image)));
}
