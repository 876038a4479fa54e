// `supply-chain diff`: what a change does to the SOURCES of an image, for review. Two closure
// manifests (base and head: `closure` or `closure --no-export` output) compared source by source:
// which fixed-output sources and pinned inputs a change adds, removes or changes (same name, new
// hash or URL: a version bump, a re-pinned tarball), which evaluation-time paths come and go, and
// what it does to the bytes an auditor must fetch. Informational: exit 0 whatever differs.
import * as fs from "node:fs";
import * as path from "node:path";
import { humanBytes, writeFileAtomic } from "../lib/files";
import { storePathName } from "../lib/storepath";
import { InputError, StepDefinition } from "../lib/step";
import type { Manifest, ManifestPinnedInput, ManifestSource } from "./closure";

export interface SourceEntry {
  name: string;
  path: string;
  urls: string[];
  /** `<algo>:<hex>` as the Nix files declare it (pinned inputs: their pin's sha256). */
  hash: string;
  size: number | null;
  /** Why it is needed: the derivations from the target down to it (pinned inputs: where they are pinned). */
  chain: string[];
}

export interface ChangedEntry {
  name: string;
  base: SourceEntry;
  head: SourceEntry;
  /** What differs: the declared hash, the URLs. */
  what: ("hash" | "urls")[];
}

export interface KindDiff {
  added: SourceEntry[];
  removed: SourceEntry[];
  changed: ChangedEntry[];
}

export interface DiffResult extends KindDiff {
  base: { manifest: string; drvPath: string; sources: number; bytes: number };
  head: { manifest: string; drvPath: string; sources: number; bytes: number };
  /** Inputs only the evaluation uses (pins files, flake.lock), compared by pin name the same way. */
  pinnedInputs: KindDiff;
  evalPaths: { added: string[]; removed: string[] };
  /** head's bytes minus base's (every exported path; unrealised ones count as 0). */
  bytesDelta: number;
  markdown: string | null;
  /** One line per added, removed or changed source or pin, and the evaluation-time path counts: what a preview prints. */
  lines: string[];
}

/** A manifest.json, or a closure output directory holding one. */
export function readManifest(arg: string, option: string): { file: string; manifest: Manifest } {
  const file = fs.existsSync(arg) && fs.statSync(arg).isDirectory() ? path.join(arg, "manifest.json") : arg;
  if (!fs.existsSync(file)) throw new InputError(`${option} ${arg}: no such manifest (give manifest.json or the closure step's --out directory)`);
  let m: Manifest;
  try {
    m = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(`${option} ${file} is not JSON: ${(e as Error).message}`);
  }
  if (m?.version !== 1 || !Array.isArray(m.sources) || !Array.isArray(m.evalPaths)) throw new InputError(`${option} ${file} is not a closure manifest (version 1 with sources and evalPaths)`);
  return { file: path.resolve(file), manifest: m };
}

const sourceEntry = (s: ManifestSource): SourceEntry => ({ name: s.name, path: s.path, urls: s.urls, hash: `${s.hash.algo}:${s.hash.value}`, size: s.size, chain: s.chain });

/** A pinned input's name: the pin's own (`nix/sources.json#demo-lib` → demo-lib), else the store path's name. */
function pinnedEntry(p: ManifestPinnedInput): SourceEntry {
  const pin = p.pinnedIn[0];
  const name = pin ? pin.pin.slice(pin.pin.lastIndexOf("#") + 1) : storePathName(p.path);
  return { name, path: p.path, urls: p.pinnedIn.flatMap((x) => (x.url ? [x.url] : [])), hash: `sha256:${pin?.sha256 ?? p.narSha256}`, size: p.size, chain: p.pinnedIn.map((x) => x.pin) };
}

/**
 * Entries present on both sides at the same store path are unchanged. Of the rest, a name left
 * exactly once on each side is one source changed; anything else with that name is added or removed
 * (several sources of one name cannot be paired without guessing).
 */
export function diffEntries(base: SourceEntry[], head: SourceEntry[]): KindDiff {
  const headPaths = new Set(head.map((e) => e.path));
  const basePaths = new Set(base.map((e) => e.path));
  const group = (xs: SourceEntry[]) => {
    const m = new Map<string, SourceEntry[]>();
    for (const x of xs) m.set(x.name, [...(m.get(x.name) ?? []), x]);
    return m;
  };
  const gone = group(base.filter((e) => !headPaths.has(e.path)));
  const come = group(head.filter((e) => !basePaths.has(e.path)));
  const out: KindDiff = { added: [], removed: [], changed: [] };
  for (const [name, b] of gone) {
    const h = come.get(name) ?? [];
    if (b.length === 1 && h.length === 1) {
      const what = [...(b[0].hash !== h[0].hash ? (["hash"] as const) : []), ...(b[0].urls.join(" ") !== h[0].urls.join(" ") ? (["urls"] as const) : [])];
      out.changed.push({ name, base: b[0], head: h[0], what });
      come.delete(name);
    } else out.removed.push(...b);
  }
  for (const h of come.values()) out.added.push(...h);
  const bigFirst = (a: SourceEntry, b: SourceEntry) => (b.size ?? 0) - (a.size ?? 0) || (a.name < b.name ? -1 : 1);
  out.added.sort(bigFirst);
  out.removed.sort(bigFirst);
  out.changed.sort((a, b) => bigFirst(a.head, b.head));
  return out;
}

export function diffManifests(base: Manifest, head: Manifest): Omit<DiffResult, "base" | "head" | "markdown" | "lines"> {
  const sources = diffEntries(base.sources.map(sourceEntry), head.sources.map(sourceEntry));
  const pinnedInputs = diffEntries((base.pinnedInputs ?? []).map(pinnedEntry), (head.pinnedInputs ?? []).map(pinnedEntry));
  const basePaths = new Set(base.evalPaths.map((e) => e.path));
  const headPaths = new Set(head.evalPaths.map((e) => e.path));
  return {
    ...sources,
    pinnedInputs,
    evalPaths: { added: [...headPaths].filter((p) => !basePaths.has(p)).sort(), removed: [...basePaths].filter((p) => !headPaths.has(p)).sort() },
    bytesDelta: head.bytes - base.bytes,
  };
}

const size = (n: number | null) => (n === null ? "?" : humanBytes(n));

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
/** The chain as a reviewer reads it: the target first, store hashes dropped. */
const why = (e: SourceEntry) => e.chain.slice(0, -1).map(storePathName).join(" → ") || "-";

/** One line per difference, as a preview prints them under the Closure resource. */
export function diffLines(d: Omit<DiffResult, "markdown" | "lines">): string[] {
  const lines: string[] = [];
  for (const [kind, k] of [["source", d], ["pinned input", d.pinnedInputs]] as const) {
    for (const e of k.added) lines.push(`${kind} added: ${e.name} ${e.hash} (${size(e.size)}) from ${e.urls.join(" ") || "no URL"}`);
    for (const c of k.changed) lines.push(`${kind} changed: ${c.name} ${c.what.map((w) => (w === "hash" ? `${c.base.hash} → ${c.head.hash}` : `${c.base.urls.join(" ")} → ${c.head.urls.join(" ")}`)).join(", ")}`);
    for (const e of k.removed) lines.push(`${kind} removed: ${e.name} ${e.hash}`);
  }
  if (d.evalPaths.added.length || d.evalPaths.removed.length) {
    lines.push(`evaluation-time paths: ${d.evalPaths.added.length} added (${d.evalPaths.added.map(storePathName).join(", ") || "-"}), ${d.evalPaths.removed.length} removed`);
  }
  return lines;
}

/** What a reviewer pastes into a pull request: counts, then one table, biggest first. */
export function toMarkdown(d: Omit<DiffResult, "markdown" | "lines">): string {
  const rows: string[] = [];
  const row = (mark: string, kind: string, e: SourceEntry, detail: string, reason: string) =>
    rows.push(`| ${mark} | ${cell(e.name)} | ${kind} | ${size(e.size)} | ${cell(detail)} | ${cell(reason)} |`);
  for (const [kind, k] of [["source", d], ["pinned input", d.pinnedInputs]] as const) {
    for (const e of k.added) row("added", kind, e, e.urls.join(" ") || e.hash, kind === "source" ? why(e) : e.chain.join(", "));
    for (const c of k.changed) {
      const detail = c.what.map((w) => (w === "hash" ? `hash ${c.base.hash} → ${c.head.hash}` : `URL ${c.base.urls.join(" ")} → ${c.head.urls.join(" ")}`)).join("; ");
      row("changed", kind, c.head, detail, kind === "source" ? why(c.head) : c.head.chain.join(", "));
    }
    for (const e of k.removed) row("removed", kind, e, e.urls.join(" ") || e.hash, "no longer needed");
  }
  const count = (k: KindDiff) => `${k.added.length} added, ${k.changed.length} changed, ${k.removed.length} removed`;
  return [
    `### Supply-chain diff: \`${storePathName(d.base.drvPath)}\` → \`${storePathName(d.head.drvPath)}\``,
    "",
    `Sources: ${count(d)}. Pinned inputs: ${count(d.pinnedInputs)}. Evaluation-time paths: ${d.evalPaths.added.length} added, ${d.evalPaths.removed.length} removed. Closure size: ${d.bytesDelta >= 0 ? "+" : ""}${size(d.bytesDelta)}.`,
    "",
    ...(rows.length ? ["| | name | kind | size | what | why it is needed |", "| --- | --- | --- | --- | --- | --- |", ...rows] : ["No fixed-output source or pinned input changes."]),
    "",
  ].join("\n");
}

export const step: StepDefinition<DiffResult> = {
  name: "diff",
  summary: "what a change does to the sources: two closure manifests compared (added, removed, changed sources and pins), for review",
  options: {
    base: { type: "string", description: "the base's manifest.json, or its closure --out directory", required: true },
    head: { type: "string", description: "the head's manifest.json, or its closure --out directory", required: true },
    markdown: { type: "string", description: "also write the diff as a Markdown table (for a pull request) to this file" },
  },
  async run({ values }) {
    const base = readManifest(values.base, "--base");
    const head = readManifest(values.head, "--head");
    const summary = (x: typeof base) => ({ manifest: x.file, drvPath: x.manifest.target.drvPath, sources: x.manifest.sources.length, bytes: x.manifest.bytes });
    const d = { base: summary(base), head: summary(head), ...diffManifests(base.manifest, head.manifest) };
    if (values.markdown) writeFileAtomic(path.resolve(values.markdown), toMarkdown(d));
    return { ...d, markdown: values.markdown ? path.resolve(values.markdown) : null, lines: diffLines(d) };
  },
};
