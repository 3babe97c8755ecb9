// Module hooks, registered by run.mjs only on a Node.js without fs.globSync (added in Node 22;
// Node 20 is what this machine has): @modelcontextprotocol/conformance's bundle does
// `import { globSync } from "fs"`, which fails to link on Node 20 even though only its
// `tier-check` command calls it. A namespace cannot gain an export at run time, so its imports
// of fs are pointed at this module's shim: fs plus a globSync that says it is missing.

const SHIM = `data:text/javascript,${encodeURIComponent(`
import fs from 'node:fs';
export * from 'node:fs';
export default fs;
export function globSync() {
  throw new Error('fs.globSync needs Node.js >= 22 (only tier-check uses it)');
}
`)}`;

export async function resolve(specifier, context, nextResolve) {
  if (
    (specifier === 'fs' || specifier === 'node:fs')
    && context.parentURL?.includes('/@modelcontextprotocol/conformance/')
  ) {
    return { url: SHIM, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
