#!/usr/bin/env node
// The islet command; the code is TypeScript, built into dist/ by `npm install`.
import '../dist/engine/cli.js';
