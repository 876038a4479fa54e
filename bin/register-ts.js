// Runs TypeScript in place: `require("./register-ts")` (or `node --require`) makes `.ts` files loadable.
// Types are only stripped (type checking is `npm run typecheck`), by sucrase, and each file's output is
// cached by content hash, so a start costs about what bare node does: the CLI's steps (a benchmark that
// compares a step with its bare tool measures the step, not a compiler) and the Pulumi program
// (Pulumi.yaml runs it with `typescript: false` and this file preloaded, instead of ts-node).
const crypto = require("node:crypto");
const fs = require("node:fs");
const Module = require("node:module");
const path = require("node:path");

const cacheDir = path.join(__dirname, "..", "node_modules", ".cache", "supply-chain-cli");
// Node 20 runs ES2022 as is: sucrase's rewrites of `?.`, `??` and class fields into helper calls only cost
// time (they showed in the closure step's profile). The options and sucrase's version are part of the
// cache key, so an upgraded sucrase does not reuse an older one's output.
const TRANSFORM = { transforms: ["typescript", "imports"], disableESTransforms: true };
const TRANSFORM_ID = JSON.stringify(TRANSFORM) + require("sucrase/package.json").version + "\0";
let sucrase;
Module._extensions[".ts"] = function loadTypeScript(module, filename) {
  const source = fs.readFileSync(filename, "utf8");
  const key = crypto.createHash("sha256").update(TRANSFORM_ID).update(filename).update("\0").update(source).digest("hex");
  const cached = path.join(cacheDir, `${key}.js`);
  let code;
  try {
    code = fs.readFileSync(cached, "utf8");
  } catch {
    sucrase ??= require("sucrase");
    code = sucrase.transform(source, { ...TRANSFORM, filePath: filename }).code;
    try {
      fs.mkdirSync(cacheDir, { recursive: true });
      const tmp = `${cached}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, code);
      fs.renameSync(tmp, cached); // concurrent starts may race here: either complete copy wins
    } catch {
      /* a read-only checkout still runs, just without the cache */
    }
  }
  module._compile(code, filename);
};
