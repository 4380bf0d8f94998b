// The web console's benchmark, in Debian's headless Chromium against a
// `neptune up` of its own:
// 1. first load: bytes transferred (compressed, headers included) and time
//    to interactive, for the login page (a new visitor) and the VI list (a
//    user with a session), each in a fresh browser context (empty cache);
// 2. the editor with a large design (default 500 VMs in a ring): layout and
//    first render after an XML import, and after opening the saved VI;
// 3. panning the canvas and dragging a VM: frame intervals while doing it.
//
//   node bench/console/run.mjs [--vms N] [--runs R] [--smoke]
// (after `cargo build -p neptune`; see bench/console/README.md)
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiAs, launchChromiumBeside, logIn, neptuneBinary, startNeptune } from '../../web/tests/harness.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const smoke = args.includes('--smoke');
const vms = opt('--vms', smoke ? 50 : 500);
const runs = opt('--runs', smoke ? 1 : 5);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (x) => `${x.toFixed(0)} ms`;
const kb = (x) => `${(x / 1024).toFixed(1)} KB`;

// Frame timestamps from the page's own requestAnimationFrame loop.
const FRAMES = `
  window.__frames = [];
  const tick = (t) => { window.__frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
`;

async function firstLoad(browser, url, path, ready, cookies) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (cookies) await context.addCookies(cookies);
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  let bytes = 0;
  cdp.on('Network.loadingFinished', (e) => {
    bytes += e.encodedDataLength;
  });
  const started = Date.now();
  await page.goto(`${url}${path}`);
  await page.locator(ready).first().waitFor();
  // Interactive: the element is there and the main thread answers.
  const tti = await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => ok(performance.now()))));
  await page.waitForLoadState('networkidle');
  const wall = Date.now() - started;
  await context.close();
  return { bytes, tti, wall };
}

async function frameStats(page, action) {
  await page.evaluate(() => {
    window.__frames = [];
  });
  await action();
  const frames = await page.evaluate(() => window.__frames);
  const gaps = frames.slice(1).map((t, i) => t - frames[i]);
  const sorted = [...gaps].sort((a, b) => a - b);
  const p = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] || 0;
  // A frame is dropped when a gap spans more than one and a half 60 Hz periods.
  const dropped = gaps.reduce((n, g) => n + Math.max(0, Math.round(g / 16.7) - 1), 0);
  return { frames: frames.length, p50: p(0.5), p95: p(0.95), max: sorted[sorted.length - 1] || 0, dropped };
}

const neptune = await startNeptune();
const browser = await launchChromiumBeside(neptune);
const report = { vms, runs, machine: `${(await import('node:os')).cpus().length} cores` };
try {
  const admin = await apiAs(neptune.url, 'admin', neptune.password);
  await admin('POST', '/users', { name: 'bench', password: 'bench-password-1', role: 'user' });

  // 1. First load.
  const anonymous = [];
  for (let i = 0; i < runs; i += 1) anonymous.push(await firstLoad(browser, neptune.url, '/', 'form[aria-label="Log in"] input[name=name]'));
  const session = await browser.newContext();
  const p0 = await session.newPage();
  await logIn(p0, neptune.url, 'bench', 'bench-password-1');
  const cookies = await session.cookies();
  await session.close();
  const signed = [];
  for (let i = 0; i < runs; i += 1) signed.push(await firstLoad(browser, neptune.url, '/vis', 'a.button.primary', cookies));
  report.first_load = {
    login_page: { bytes: median(anonymous.map((r) => r.bytes)), tti_ms: median(anonymous.map((r) => r.tti)) },
    vi_list: { bytes: median(signed.map((r) => r.bytes)), tti_ms: median(signed.map((r) => r.tti)) },
  };
  console.log(`first load, login page: ${kb(report.first_load.login_page.bytes)} transferred, interactive after ${ms(report.first_load.login_page.tti_ms)} (median of ${runs})`);
  console.log(`first load, VI list with a session: ${kb(report.first_load.vi_list.bytes)} transferred, interactive after ${ms(report.first_load.vi_list.tti_ms)} (median of ${runs})`);

  // 2. A large design: import, then open the saved VI.
  const xml = execFileSync(neptuneBinary(), ['topology', 'new', 'ring', '--nodes', String(vms)], { encoding: 'utf8' });
  const file = join(neptune.dir, `ring-${vms}.xml`);
  writeFileSync(file, xml);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addCookies(cookies);
  await context.addInitScript(FRAMES);
  const page = await context.newPage();
  const imports = [];
  const opens = [];
  let viId = null;
  for (let i = 0; i < runs; i += 1) {
    await page.goto(`${neptune.url}/design`);
    await page.getByTestId('canvas').waitFor();
    await page.getByLabel('Import XML').setInputFiles(file);
    await page.waitForFunction(() => performance.getEntriesByName('neptune:design-first-render').length > 0, null, { timeout: 60000 });
    imports.push(await page.evaluate(() => performance.getEntriesByName('neptune:design-first-render')[0].duration));
    const n = await page.evaluate(() => window.neptuneGraph.nodes('node.vm').length);
    if (n !== vms) throw new Error(`${n} VMs drawn, ${vms} imported`);
    if (!viId) {
      await page.getByRole('button', { name: 'Save' }).click();
      await page.getByRole('status').getByText(/Saved/).waitFor({ timeout: 60000 });
      viId = page.url().split('/').pop();
    }
  }
  for (let i = 0; i < runs; i += 1) {
    await page.goto(`${neptune.url}/design/${viId}`);
    await page.waitForFunction(() => performance.getEntriesByName('neptune:design-first-render').length > 0, null, { timeout: 60000 });
    opens.push(await page.evaluate(() => performance.getEntriesByName('neptune:design-first-render')[0].duration));
  }
  report.large_design = { import_first_render_ms: median(imports), open_first_render_ms: median(opens) };
  console.log(`editor, ${vms} VMs: import -> laid out and drawn ${ms(report.large_design.import_first_render_ms)}; open saved VI -> laid out and drawn ${ms(report.large_design.open_first_render_ms)} (median of ${runs})`);

  // 3. Panning (drag on the background) and dragging a VM, 2 s each.
  const box = await page.getByTestId('canvas').boundingBox();
  // Nothing returned: cy.fit() returns the whole graph, which playwright
  // would serialise in the page (4 GB of garbage for 500 VMs, collected by
  // a 130 to 230 ms major GC in the middle of the pan or the drag).
  await page.evaluate(() => {
    window.neptuneGraph.fit();
  });
  const empty = await page.evaluate(() => {
    const cy = window.neptuneGraph;
    const bb = cy.elements().renderedBoundingBox();
    return { x: bb.x2 + 5 < cy.width() ? bb.x2 + 5 : 5, y: 5 };
  });
  const pan = await frameStats(page, async () => {
    await page.mouse.move(box.x + empty.x, box.y + empty.y);
    await page.mouse.down();
    for (let k = 0; k < 120; k += 1) {
      await page.mouse.move(box.x + empty.x - k * 2, box.y + empty.y + k);
      await page.waitForTimeout(16);
    }
    await page.mouse.up();
  });
  const at = await page.evaluate(() => {
    const cy = window.neptuneGraph;
    const p = cy.nodes('node.vm')[Math.floor(cy.nodes('node.vm').length / 2)].renderedPosition();
    return p;
  });
  const drag = await frameStats(page, async () => {
    await page.mouse.move(box.x + at.x, box.y + at.y);
    await page.mouse.down();
    for (let k = 0; k < 120; k += 1) {
      await page.mouse.move(box.x + at.x + Math.sin(k / 10) * 120, box.y + at.y + Math.cos(k / 10) * 80);
      await page.waitForTimeout(16);
    }
    await page.mouse.up();
  });
  report.interaction = { pan, drag };
  for (const [name, s] of Object.entries(report.interaction)) {
    console.log(
      `${name}, ${vms} VMs: ${s.frames} frames, interval p50 ${s.p50.toFixed(1)} ms, p95 ${s.p95.toFixed(1)} ms, max ${s.max.toFixed(1)} ms, ${s.dropped} dropped (60 Hz)`,
    );
  }
  await context.close();
  console.log('```json');
  console.log(JSON.stringify(report, null, 2));
  console.log('```');
} finally {
  await browser.close();
  await neptune.stop();
}
