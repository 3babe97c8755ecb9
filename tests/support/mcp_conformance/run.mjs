// `node run.mjs ARGS` is `conformance ARGS` (@modelcontextprotocol/conformance's CLI), also on
// Node 20, whose fs lacks the globSync that the CLI's bundle imports (see node20-compat.mjs).

import * as fs from 'node:fs';
import { register } from 'node:module';

if (typeof fs.globSync !== 'function') {
  register('./node20-compat.mjs', import.meta.url);
}

await import('@modelcontextprotocol/conformance/dist/index.js');
