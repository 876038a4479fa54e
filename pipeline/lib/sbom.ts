// CycloneDX 1.6 SBOM of a source closure, built with the official @cyclonedx/cyclonedx-library and
// validated against its 1.6 JSON schema before anyone sees it. Deterministic by construction: lists
// sorted, no wall-clock time unless asked, serial number derived from the content.
import * as crypto from "node:crypto";
import * as path from "node:path";
import { Enums, Models, Serialize, Spec, Validation } from "@cyclonedx/cyclonedx-library";
import { PackageURL } from "packageurl-js";
import type { Manifest, ManifestSource } from "../steps/closure";
import { splitStorePath } from "./storepath";

const URL_NAMESPACE = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"; // RFC 4122 appendix C

/** RFC 4122 version-5 UUID (SHA-1, name-based): the same name always gives the same UUID. */
export function uuidV5(name: string, namespace = URL_NAMESPACE): string {
  const h = crypto.createHash("sha1").update(Buffer.from(namespace.replace(/-/g, ""), "hex")).update(name, "utf8").digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

const ARCHIVE = /\.(tar\.(gz|xz|bz2|zst)|tgz|txz|zip|deb|crate|gem|whl|nar)$/;

/** Name and version the way Nix splits them (builtins.parseDrvName: at the first '-' not followed by a letter). */
export function parseStoreName(storeName: string): { name: string; version?: string } {
  const m = /^(.*?)-([^A-Za-z].*)$/.exec(storeName);
  if (!m) return { name: storeName.replace(ARCHIVE, "") };
  return { name: m[1], version: m[2].replace(ARCHIVE, "") };
}

/** A package URL from where a source was fetched: registries we recognise, else generic with download_url. */
export function purlOf(url: string | undefined, name: string, version: string | undefined): string {
  if (url) {
    const crate = /^https:\/\/(?:crates\.io\/api\/v1\/crates\/([^/]+)\/([^/]+)\/download|static\.crates\.io\/crates\/([^/]+)\/\3-([^/]+)\.crate)$/.exec(url);
    if (crate) return new PackageURL("cargo", undefined, crate[1] ?? crate[3], crate[2] ?? crate[4], undefined, undefined).toString();
    const npm = /^https:\/\/registry\.npmjs\.org\/(?:(@[^/]+)\/)?([^/]+)\/-\/[^/]+-(\d[^/]*)\.tgz$/.exec(url);
    if (npm) return new PackageURL("npm", npm[1], npm[2], npm[3], undefined, undefined).toString();
    const gh = /^https:\/\/github\.com\/([^/]+)\/([^/]+)\/archive\/(?:refs\/tags\/)?([^/]+?)\.(?:tar\.gz|zip)$/.exec(url);
    if (gh) return new PackageURL("github", gh[1], gh[2], gh[3], undefined, undefined).toString();
    const deb = /\/debian\/pool\/[^/]+\/[^/]+\/[^/]+\/([^_/]+)_([^_/]+)_([^_/.]+)\.deb$/.exec(url);
    if (deb) return new PackageURL("deb", "debian", deb[1], decodeURIComponent(deb[2]), { arch: deb[3] }, undefined).toString();
  }
  return new PackageURL("generic", undefined, name, version, url ? { download_url: url } : undefined, undefined).toString();
}

const CDX_ALGO: Record<string, Enums.HashAlgorithm> = {
  md5: Enums.HashAlgorithm.MD5,
  sha1: Enums.HashAlgorithm["SHA-1"],
  sha256: Enums.HashAlgorithm["SHA-256"],
  sha512: Enums.HashAlgorithm["SHA-512"],
};

function sourceComponent(s: ManifestSource): Models.Component {
  const { name, version } = parseStoreName(splitStorePath(s.path).name);
  const c = new Models.Component(Enums.ComponentType.File, name, { bomRef: s.path, version, purl: purlOf(s.urls[0], name, version) });
  // A recursive hash covers the NAR serialisation of the unpacked source, a flat one the downloaded file.
  const algo = CDX_ALGO[s.hash.algo];
  if (algo && s.hash.mode !== "git") c.hashes.set(algo, s.hash.value);
  for (const u of s.urls) c.externalReferences.add(new Models.ExternalReference(u, Enums.ExternalReferenceType.Distribution));
  c.properties.add(new Models.Property("nix:storePath", s.path));
  c.properties.add(new Models.Property("nix:drvPath", s.drv));
  c.properties.add(new Models.Property("nix:kind", "fixed-output"));
  c.properties.add(new Models.Property("nix:hashMode", s.hash.mode));
  return c;
}

function evalPathComponent(p: string, narSha256: string | undefined, kind = "evaluation-time"): Models.Component {
  const { name, version } = parseStoreName(splitStorePath(p).name);
  const c = new Models.Component(Enums.ComponentType.File, name, { bomRef: p, version });
  if (narSha256) c.hashes.set(Enums.HashAlgorithm["SHA-256"], narSha256);
  c.properties.add(new Models.Property("nix:storePath", p));
  c.properties.add(new Models.Property("nix:kind", kind));
  c.properties.add(new Models.Property("nix:hashMode", "recursive"));
  return c;
}

export interface SbomInput {
  manifest: Manifest;
  /** NAR sha256 (hex) of each evaluation-time path. */
  evalPathNarSha256: Map<string, string>;
  /** Name and version of the target (metadata.component). */
  target: { name: string; version?: string; outPath: string };
  tool: { name: string; version: string };
  /** ISO 8601; omitted unless given, so the same inputs give the same bytes. */
  timestamp?: string;
}

const SPEC = Spec.Spec1dot6;

/**
 * The BOM as the JSON text to write. Components: one per source of the closure (fixed-output and
 * evaluation-time). The target is metadata.component; the derivations on the why-chains between it and
 * the sources are its sub-components, so that `dependencies` can record each chain link by link.
 */
export function buildSbom(input: SbomInput): string {
  const m = input.manifest;
  const bom = new Models.Bom();
  const target = new Models.Component(Enums.ComponentType.OperatingSystem, input.target.name, {
    bomRef: m.target.drvPath,
    version: input.target.version,
  });
  target.properties.add(new Models.Property("nix:drvPath", m.target.drvPath));
  target.properties.add(new Models.Property("nix:outPath", input.target.outPath));
  bom.metadata.component = target;
  bom.metadata.tools.components.add(new Models.Component(Enums.ComponentType.Application, input.tool.name, { version: input.tool.version }));
  if (input.timestamp) bom.metadata.timestamp = new Date(input.timestamp);

  const nodes = new Map<string, Models.Component>([[m.target.drvPath, target]]);
  for (const s of m.sources) {
    const c = sourceComponent(s);
    bom.components.add(c);
    nodes.set(s.path, c);
  }
  for (const e of m.evalPaths) {
    const c = evalPathComponent(e.path, input.evalPathNarSha256.get(e.path));
    bom.components.add(c);
    nodes.set(e.path, c);
  }
  // Inputs only the evaluation uses: no derivation chain leads to them, the target depends on them directly.
  for (const x of m.pinnedInputs ?? []) {
    const c = evalPathComponent(x.path, x.narSha256, "pinned-input");
    for (const p of x.pinnedIn) c.properties.add(new Models.Property("nix:pinnedIn", p.pin));
    bom.components.add(c);
    nodes.set(x.path, c);
    target.dependencies.add(c.bomRef);
  }
  // Intermediate derivations of the chains (the BFS tree the closure found), each once.
  const link = (from: string, to: string) => {
    let node = nodes.get(from);
    if (!node) {
      const { name, version } = parseStoreName(splitStorePath(from).name.replace(/\.drv$/, ""));
      node = new Models.Component(Enums.ComponentType.Application, name, { bomRef: from, version });
      node.properties.add(new Models.Property("nix:drvPath", from));
      target.components.add(node);
      nodes.set(from, node);
    }
    node.dependencies.add(nodes.get(to)!.bomRef);
  };
  for (const x of [...m.sources, ...m.evalPaths]) {
    // From the source upwards: each link's dependency exists when the link is made.
    for (let i = x.chain.length - 2; i >= 0; i--) link(x.chain[i], x.chain[i + 1]);
  }

  const serializer = new Serialize.JsonSerializer(new Serialize.JSON.Normalize.Factory(SPEC));
  const text = (serial?: string) => {
    bom.serialNumber = serial;
    return serializer.serialize(bom, { sortLists: true, space: 2 }) + "\n";
  };
  const unnumbered = text(undefined);
  return text(`urn:uuid:${uuidV5(`sha256:${crypto.createHash("sha256").update(unnumbered).digest("hex")}`)}`);
}

/** null when valid, else a one-line account of the first schema violations. */
export async function validateSbom(json: string): Promise<string | null> {
  const error = await new Validation.JsonStrictValidator(SPEC.version).validate(json);
  if (error === null) return null;
  return JSON.stringify(error).slice(0, 500);
}

/** For the target's name: the output's store name split like a package name. */
export function targetNameOf(outPath: string): { name: string; version?: string } {
  return parseStoreName(splitStorePath(path.resolve(outPath)).name);
}
