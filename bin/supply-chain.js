#!/usr/bin/env node
// Steps are TypeScript run in place: transpile-only keeps start-up short, type errors are `npm run typecheck`'s job.
require("ts-node").register({ transpileOnly: true, project: require("path").join(__dirname, "..", "tsconfig.json") });
require("../pipeline/cli").main(process.argv.slice(2));
