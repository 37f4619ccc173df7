// Validates an AsyncAPI document with the official parser: `node validate-asyncapi.mjs FILE`.
// Prints one JSON line per diagnostic; exits 0 when the document parses and has no error or
// warning (informational diagnostics, such as a newer AsyncAPI version existing, are printed
// and allowed), 1 otherwise.
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';

const ERROR = 0;
const WARNING = 1;
const source = readFileSync(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(source);
let failed = document === undefined;
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join('/') }));
  if (d.severity === ERROR || d.severity === WARNING) failed = true;
}
process.exit(failed ? 1 : 0);
