#!/usr/bin/env node
// The CLI: steps are TypeScript run in place (register-ts.js strips types, cached by content hash).
require("./register-ts");
require("../pipeline/cli").main(process.argv.slice(2));
