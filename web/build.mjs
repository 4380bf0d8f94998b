// Bundles the console (src/main.jsx and its CSS) with esbuild into --outdir,
// writes index.html naming the content-hashed files, precompresses every
// file (gzip and Brotli, best levels) and writes manifest.tsv, which
// crates/neptune-console/build.rs turns into the table the binary embeds.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const arg = process.argv.indexOf('--outdir');
const outdir = arg > 0 ? process.argv[arg + 1] : 'dist';
mkdirSync(join(outdir, 'assets'), { recursive: true });

const result = await build({
  entryPoints: ['src/main.jsx'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: join(outdir, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'linked',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => relative(outdir, p));
const script = outputs.find((p) => p.endsWith('.js'));
const style = outputs.find((p) => p.endsWith('.css'));
// The stylesheet's id tells Cytoscape.js its container rule is already there,
// so it does not inject a <style> element (the CSP forbids inline styles).
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neptune</title>
<link rel="icon" href="data:,">
<link id="__________cytoscape_stylesheet" rel="stylesheet" href="/${style}">
<script type="module" src="/${script}"></script>
</head>
<body>
<div id="app"><noscript>The Neptune console needs JavaScript; the CLI and the REST API do not.</noscript></div>
</body>
</html>
`;
writeFileSync(join(outdir, 'index.html'), html);

const types = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  txt: 'text/plain; charset=utf-8',
  map: 'application/json',
};
const files = [];
const walk = (dir) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else files.push(relative(outdir, path));
  }
};
walk(outdir);
const lines = [];
for (const path of files.sort()) {
  const ext = path.split('.').pop();
  if (!(ext in types)) continue;
  const body = readFileSync(join(outdir, path));
  writeFileSync(join(outdir, `${path}.gz`), gzipSync(body, { level: 9 }));
  writeFileSync(
    join(outdir, `${path}.br`),
    brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
  );
  const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 20)}"`;
  const immutable = path.startsWith('assets/') && /-[A-Z0-9]{8}\./.test(path);
  lines.push([path, types[ext], etag, immutable].join('\t'));
}
writeFileSync(join(outdir, 'manifest.tsv'), `${lines.join('\n')}\n`);
