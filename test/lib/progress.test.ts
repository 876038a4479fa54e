// Progress lines (lib/progress.ts): what a person sees of long work, on stderr.
import test from "ava";
import { buildCounter, trackBytes } from "../../pipeline/lib/progress";

/** Runs f with process.stderr captured. */
async function stderrOf(f: () => Promise<void> | void): Promise<string> {
  const write = process.stderr.write;
  let text = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    await f();
  } finally {
    process.stderr.write = write;
  }
  return text;
}

test.serial("trackBytes: a line every interval with done, total, percentage and rate, and one last line", async (t) => {
  let done = 0;
  const text = await stderrOf(async () => {
    const p = trackBytes("hashing", 4 << 20, () => done, { everyMs: 40 });
    done = 1 << 20;
    await new Promise((r) => setTimeout(r, 100));
    done = 4 << 20;
    p.stop();
    p.stop(); // once
  });
  t.regex(text, /\] hashing: 1\.0 MiB of 4\.0 MiB \(25%\), [\d.]+ [KMG]?i?B\/s\n/);
  t.regex(text, /\] hashing: 4\.0 MiB in [\d.]+ s, [\d.]+ [KMG]?i?B\/s\n$/);
  t.is(text.match(/ in [\d.]+ s/g)!.length, 1);
});

test.serial("trackBytes: a failure says so", async (t) => {
  const text = await stderrOf(() => trackBytes("exporting", null, () => 512, { approximate: true }).stop("failed"));
  t.regex(text, /exporting: failed after 512 B in /);
});

test("buildCounter: Nix's plan gives the total, each building line one more, lines split across chunks", (t) => {
  const seen: string[] = [];
  const feed = buildCounter((m) => seen.push(m));
  feed("these 3 derivations will be built:\n  /nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv\n");
  feed("building '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv'...\nbuilding '/nix/st");
  feed("ore/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b-1.0.drv'...\nsome build output\n");
  feed("this derivation will be built:\nbuilding '/nix/store/cccccccccccccccccccccccccccccccc-c.drv'...\n");
  t.deepEqual(seen, ["derivations: 0 of 3 built, building a", "derivations: 1 of 3 built, building b-1.0", "derivations: 2 of 4 built, building c"]);
});

test("buildCounter: a derivation sent to a remote builder counts once, naming the builder (its own 'building' line follows)", (t) => {
  const seen: string[] = [];
  const feed = buildCounter((m) => seen.push(m));
  feed("these 2 derivations will be built:\n");
  feed("building '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv' on 'ssh-ng://root@b1'...\ncopying 0 paths...\n");
  feed("building '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv'...\n");
  feed("building '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b.drv'...\n");
  t.deepEqual(seen, ["derivations: 0 of 2 built, building a on ssh-ng://root@b1", "derivations: 1 of 2 built, building b"]);
});
