#!/usr/bin/env node
// The CLI unbundled (one module per file, as tsc emits them). The package's `bin` is ./bin.ts, which
// loads the same program bundled (scripts/build-cli.mjs).
import { runCli } from './program.js';

await runCli(process.argv);
