// What the console's browser test and benchmark share: a `neptune up` of
// their own (simulated hypervisor, free port, temporary directory), the
// system's Chromium through playwright-core, and API calls with bearer
// tokens for the set-up that is not under test.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

// The `neptune` binary: $NEPTUNE_BIN, else the debug build of
// $CARGO_TARGET_DIR (or the repository's target/); made absolute, as
// `neptune up` runs in a directory of its own.
export function neptuneBinary() {
  if (process.env.NEPTUNE_BIN) return resolve(process.env.NEPTUNE_BIN);
  const target = resolve(process.env.CARGO_TARGET_DIR || join(repo, 'target'));
  for (const profile of ['debug', 'release']) {
    const bin = join(target, profile, 'neptune');
    if (existsSync(bin)) return bin;
  }
  throw new Error(`no neptune binary under ${target}: run \`cargo build -p neptune\` or set NEPTUNE_BIN`);
}

const freePort = () =>
  new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });

// Starts `neptune up`; resolves once it has printed its URL.
export async function startNeptune() {
  const dir = mkdtempSync(join(tmpdir(), 'neptune-console-'));
  const port = await freePort();
  const child = spawn(neptuneBinary(), ['up', '--listen', `127.0.0.1:${port}`, '--data-dir', join(dir, 'neptune-data')], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
  });
  const url = await new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`neptune up printed no URL in 60 s:\n${out}\n${log}`)), 60000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /Neptune is up at (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.once('exit', (code) => fail(new Error(`neptune up exited (${code}):\n${out}\n${log}`)));
  });
  const password = readFileSync(join(dir, 'neptune-data', 'admin.password'), 'utf8').trim();
  return {
    url,
    password,
    dir,
    log: () => log,
    async stop() {
      child.kill('SIGINT');
      await new Promise((ok) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          ok();
        }, 10000);
        child.once('exit', () => {
          clearTimeout(t);
          ok();
        });
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A bearer-token client of the API (set-up only; the console uses cookies).
export async function apiAs(url, name, password) {
  const call = async (method, path, body, token) => {
    const r = await fetch(`${url}/api/v1${path}`, {
      method,
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  const { token } = await call('POST', '/auth/login', { name, password });
  return (method, path, body) => call(method, path, body, token);
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

// Chromium beside a started `neptune up`: should it not launch (no
// chromium installed, say), the server is stopped before the error goes
// on, so that no `neptune up` outlives the script.
export async function launchChromiumBeside(neptune) {
  try {
    return await launchChromium();
  } catch (e) {
    await neptune.stop();
    throw e;
  }
}

// A page whose console errors (a CSP violation among them) fail the test.
export async function newPage(browser, problems, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[149]|status of 422|status of 409/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return page;
}

export async function logIn(page, url, name, password) {
  await page.goto(`${url}/`);
  await page.getByLabel('User').fill(name);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}
