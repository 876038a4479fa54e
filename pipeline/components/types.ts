// The steps' JSON (docs/contracts.md), as the components read it.
export interface BuildJson {
  drvPath: string;
  outPath: string;
  narHash: string;
  narSize: number;
  artifact?: string;
  artifactSha256?: string;
}

export interface ClosureJson {
  closureFile: string;
  closureSha256: string;
  sources: number;
  evalPaths: number;
  bytes: number;
  manifest: string;
  report: string;
}

export interface RebuildJson {
  isolation: string;
  network: { interfaces: string[] };
  outPath: string;
  narHash: string;
  paths: { path: string; narHash: string }[];
  log: string;
  /** Present in the rebuild step's implementation: unique per run. */
  runId?: string;
}

export interface VerifyJson {
  reproducible: boolean;
  checked: number;
  matched: number;
  mismatched: { path: string; files: string[] }[];
  report: string;
}

export interface BootTestJson {
  passed: boolean;
  accel: string;
  bootSeconds: number;
  probes: { name: string; ok: boolean; ms: number; detail: string }[];
  serialLog: string;
}
