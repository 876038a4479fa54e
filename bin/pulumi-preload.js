// Preloaded into the node that runs a Pulumi program of this repository (Pulumi.yaml
// `runtime.options.nodeargs: --require ./bin/pulumi-preload.js`, with `typescript: false`): a no-op
// `pulumi preview|up` then costs little more than an empty program's (npm run bench:pulumi).
//  1. `.ts` files load through register-ts.js (types stripped by sucrase, cached by content) instead
//     of the runner's ts-node, which loads the TypeScript compiler (9 MB of JS) at every run.
//  2. The SDK's function serialization is loaded when first used instead of at start-up. The index of
//     `@pulumi/pulumi/runtime` re-exports serializeFunction and computeCodePaths, so every program that
//     imports the SDK loads their dependencies: the TypeScript compiler and @npmcli/arborist (pacote,
//     sigstore...), about 880 modules and half a second here, though only dynamic providers and
//     closure serialization use them (the SDK's own dynamic/index.js defers them for that reason).
//     These programs serialize no functions. A program that does still gets the real functions: each
//     stand-in loads its module on its first call. test/engine/program-start.test.ts checks the
//     stand-ins against the installed SDK's exports.
//  3. Stack traces leave frames in node_modules as they are. The runner installs source-map-support,
//     and the SDK formats a stack for every promise it makes (runtime/debuggable.js) and resource it
//     registers, so each run parsed the SDK's own source maps, about 0.1 s of a no-op run here. Those
//     maps name .ts files the package does not ship; the .js positions name files that exist. The
//     program's own frames are unchanged (register-ts keeps line numbers, and looks up no map).
require("./register-ts");
const fs = require("node:fs");
const Module = require("node:module");
const path = require("node:path");

/** Modules of @pulumi/pulumi/runtime/closure deferred, with every function each exports (all async). */
const DEFERRED = {
  "serializeClosure.js": ["serializeFunction", "serializeFunctionAsync"],
  "codePaths.js": ["computeCodePaths", "findWorkspaceRoot"],
};

/** The SDK the runner uses: the program directory's (the runner's cwd); undefined without one. */
function sdkDir() {
  try {
    return path.dirname(require.resolve("@pulumi/pulumi/package.json", { paths: [process.cwd()] }));
  } catch {
    return undefined;
  }
}

function deferClosureSerialization(sdk) {
  const closureDir = path.join(sdk, "runtime", "closure");
  for (const [file, names] of Object.entries(DEFERRED)) {
    const filename = path.join(closureDir, file);
    if (!fs.existsSync(filename)) continue; // another layout: that module loads as it would
    let real;
    const load = () => {
      if (!real) {
        delete require.cache[filename]; // the stand-in: from now on, `require` gives the real module
        real = require(filename);
      }
      return real;
    };
    const standIn = new Module(filename, module);
    standIn.filename = filename;
    standIn.loaded = true;
    standIn.exports = Object.fromEntries(
      names.map((name) => [
        name,
        // async, as the real ones are: a module that fails to load rejects, as a real call would.
        async function (...args) {
          return load()[name].apply(this, args);
        },
      ]),
    );
    require.cache[filename] = standIn;
  }
}

const NO_MAP = JSON.stringify({ version: 3, sources: [], names: [], mappings: "" });
function leaveLibraryFramesUnmapped(sdk) {
  let sourceMapSupport;
  try {
    // The copy the runner's `source-map-support/register` loads (resolved from the SDK, as it does).
    sourceMapSupport = require(require.resolve("source-map-support", { paths: [sdk] }));
  } catch {
    return;
  }
  sourceMapSupport.install({
    handleUncaughtExceptions: false, // the runner's own install sets that up, as without this file
    retrieveSourceMap: (source) => (source.includes(`${path.sep}node_modules${path.sep}`) ? { url: source, map: NO_MAP } : null),
  });
}
const sdk = sdkDir();
if (sdk) {
  deferClosureSerialization(sdk);
  leaveLibraryFramesUnmapped(sdk);
}

module.exports = { DEFERRED };
