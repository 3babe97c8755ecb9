// Module hooks, registered by server.mjs only on a Node.js without crypto.hash (Node 18, which
// is what Debian 12's `nodejs` package is): oidc-provider 9 does `import * as crypto from
// 'node:crypto'` and calls crypto.hash, and a namespace cannot gain an export at run time, so
// its imports of node:crypto are pointed at this module's shim: node:crypto plus hash().

const SHIM = `data:text/javascript,${encodeURIComponent(`
import * as crypto from 'node:crypto';
export * from 'node:crypto';
export default crypto.default;
export const hash = (algorithm, data, encoding = 'hex') =>
  crypto.createHash(algorithm).update(data).digest(encoding);
`)}`;

export async function resolve(specifier, context, nextResolve) {
  if (
    (specifier === 'node:crypto' || specifier === 'crypto')
    && context.parentURL?.includes('/node_modules/')
  ) {
    return { url: SHIM, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
