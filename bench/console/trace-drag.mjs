// Where a drag's long frames go: drags a VM of a large design (as
// run.mjs does; --pan: pans the canvas by its background instead) under
// Chromium's tracing (the DevTools timeline, V8's GC and its sampling
// profiler), then prints, for every frame interval longer than --gap ms,
// the main thread's work that overlaps it: the longest trace events and
// the functions the profiler sampled most.
//
//   node bench/console/trace-drag.mjs [--vms 500] [--drags 5] [--gap 50] [--pan]
//        [--bundle FILE.js]   serve this script instead of the binary's
//                             (e.g. an unminified build of web/src)
//        [--trace FILE.json]  keep the whole trace (chrome://tracing, Perfetto)
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiAs, launchChromiumBeside, logIn, neptuneBinary, startNeptune } from '../../web/tests/harness.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const vms = Number(opt('--vms', 500));
const drags = Number(opt('--drags', 5));
const longGap = Number(opt('--gap', 50));
const bundle = opt('--bundle', null);
const keep = opt('--trace', null);
const pan = args.includes('--pan');

const FRAMES = `
  window.__frames = [];
  const tick = (t) => { window.__frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
`;

const neptune = await startNeptune();
const browser = await launchChromiumBeside(neptune);
try {
  const admin = await apiAs(neptune.url, 'admin', neptune.password);
  await admin('POST', '/users', { name: 'bench', password: 'bench-password-1', role: 'user' });
  const xml = execFileSync(neptuneBinary(), ['topology', 'new', 'ring', '--nodes', String(vms)], { encoding: 'utf8' });
  const file = join(neptune.dir, `ring-${vms}.xml`);
  writeFileSync(file, xml);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(FRAMES);
  const page = await context.newPage();
  if (bundle) {
    const body = readFileSync(bundle);
    await page.route(/\/assets\/main-[^/]+\.js$/, (route) =>
      route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body }),
    );
  }
  await logIn(page, neptune.url, 'bench', 'bench-password-1');
  await page.goto(`${neptune.url}/design`);
  await page.getByTestId('canvas').waitFor();
  await page.getByLabel('Import XML').setInputFiles(file);
  await page.waitForFunction(() => performance.getEntriesByName('neptune:design-first-render').length > 0, null, { timeout: 60000 });
  // Nothing returned (see run.mjs): a returned graph is serialised in the page.
  await page.evaluate(() => {
    window.neptuneGraph.fit();
  });
  await page.waitForTimeout(1000);
  const box = await page.getByTestId('canvas').boundingBox();

  const cdp = await context.newCDPSession(page);
  const events = [];
  cdp.on('Tracing.dataCollected', (e) => events.push(...e.value));
  const done = new Promise((ok) => cdp.once('Tracing.tracingComplete', ok));
  await cdp.send('Tracing.start', {
    transferMode: 'ReportEvents',
    traceConfig: {
      includedCategories: [
        'devtools.timeline',
        'disabled-by-default-devtools.timeline',
        'disabled-by-default-devtools.timeline.frame',
        'v8',
        'v8.execute',
        'disabled-by-default-v8.gc',
        'disabled-by-default-v8.cpu_profiler',
        'blink.user_timing',
        'cc',
        'gpu',
      ],
    },
  });
  const windows = [];
  for (let d = 0; d < drags; d += 1) {
    const at = await page.evaluate(
      ([k, pan]) => {
        const cy = window.neptuneGraph;
        if (pan) {
          // The background right of the drawing, as run.mjs pans.
          const bb = cy.elements().renderedBoundingBox();
          return { x: bb.x2 + 5 < cy.width() ? bb.x2 + 5 : 5, y: 5 };
        }
        const vms = cy.nodes('node.vm');
        return vms[Math.floor(((k + 1) * vms.length) / 7) % vms.length].renderedPosition();
      },
      [d, pan],
    );
    await page.evaluate(() => {
      window.__frames = [];
      performance.mark('neptune:drag-start');
    });
    await page.mouse.move(box.x + at.x, box.y + at.y);
    await page.mouse.down();
    for (let k = 0; k < 120; k += 1) {
      if (pan) await page.mouse.move(box.x + at.x - k * 2, box.y + at.y + k);
      else await page.mouse.move(box.x + at.x + Math.sin(k / 10) * 120, box.y + at.y + Math.cos(k / 10) * 80);
      await page.waitForTimeout(16);
    }
    await page.mouse.up();
    // A pan moves the view: back to the whole design for the next.
    if (pan) {
      await page.evaluate(() => {
        window.neptuneGraph.fit();
      });
    }
    // The frames' times, and where performance.now() is in trace time (a mark).
    const frames = await page.evaluate(() => window.__frames);
    windows.push(frames);
    await page.waitForTimeout(300);
  }
  await cdp.send('Tracing.end');
  await done;
  if (keep) writeFileSync(keep, JSON.stringify({ traceEvents: events }));

  // performance.now() -> trace microseconds: the marks of each drag's start.
  const marks = events.filter((e) => e.name === 'neptune:drag-start' && e.ph !== 'e').map((e) => e.ts);
  const main = events.find((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain');
  const onMain = (e) => !main || (e.pid === main.pid && e.tid === main.tid);
  // The main thread's work, and long work on any other thread (raster,
  // compositor, the GPU process), named by its thread.
  const threads = new Map(events.filter((e) => e.name === 'thread_name').map((e) => [`${e.pid}/${e.tid}`, e.args.name]));
  const slices = events
    .filter((e) => e.ph === 'X' && e.dur && (onMain(e) || e.dur > 20000))
    .map((e) => (onMain(e) ? e : { ...e, name: `${threads.get(`${e.pid}/${e.tid}`) || e.tid}: ${e.name}` }));
  // Sampled stacks: ProfileChunk events carry nodes and samples.
  const nodes = new Map();
  const samples = [];
  let sampleTs = null;
  for (const e of events.filter((x) => x.name === 'ProfileChunk' || x.name === 'Profile')) {
    if (e.name === 'Profile') {
      sampleTs = e.args.data.startTime;
      continue;
    }
    const cp = e.args.data.cpuProfile || {};
    for (const n of cp.nodes || []) nodes.set(n.id, n);
    const deltas = e.args.data.timeDeltas || [];
    (cp.samples || []).forEach((id, i) => {
      sampleTs = (sampleTs ?? e.ts) + (deltas[i] || 0);
      samples.push({ ts: sampleTs, id });
    });
  }
  const fnOf = (id) => {
    const n = nodes.get(id);
    const f = n?.callFrame;
    return f ? `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').pop() : ''}:${f.lineNumber}` : '?';
  };
  const stackOf = (id) => {
    const out = [];
    for (let n = nodes.get(id); n && out.length < 6; n = nodes.get(n.parent)) out.push(n.callFrame?.functionName || '(anonymous)');
    return out.join(' < ');
  };

  const rows = [];
  windows.forEach((frames, d) => {
    const gaps = frames.slice(1).map((t, i) => [t - frames[i], frames[i], t]);
    const dropped = gaps.reduce((n, [g]) => n + Math.max(0, Math.round(g / 16.7) - 1), 0);
    const max = Math.max(0, ...gaps.map(([g]) => g));
    console.log(`${pan ? 'pan' : 'drag'} ${d + 1}: ${frames.length} frames, max ${max.toFixed(1)} ms, ${dropped} dropped`);
    // Frame times are performance.now() ms; the drag's mark is its origin.
    const origin = marks[d];
    if (origin === undefined) return;
    const t0 = frames[0];
    for (const [g, from, to] of gaps.filter(([x]) => x > longGap)) {
      // The mark was made just before the first frame was recorded: close
      // enough (a frame) to place gaps of 50 ms and more.
      const a = origin + (from - t0) * 1000;
      const b = origin + (to - t0) * 1000;
      const inside = slices.filter((e) => e.ts < b && e.ts + e.dur > a && e.dur > 3000);
      const top = inside
        .filter((e) => !['RunTask', 'ThreadControllerImpl::RunTask', 'RunMicrotasks'].includes(e.name))
        .sort((x, y) => y.dur - x.dur)
        .slice(0, 8)
        .map((e) => `${e.name}${e.args?.data?.type ? `(${e.args.data.type})` : ''} ${(e.dur / 1000).toFixed(1)} ms`);
      const hits = new Map();
      for (const s of samples.filter((x) => x.ts >= a && x.ts <= b)) {
        const k = `${fnOf(s.id)} [${stackOf(s.id)}]`;
        hits.set(k, (hits.get(k) || 0) + 1);
      }
      const hot = [...hits].sort((x, y) => y[1] - x[1]).slice(0, 6);
      rows.push({ drag: d + 1, gap: g, at: from - t0, top, hot });
      console.log(`  gap ${g.toFixed(1)} ms, ${(from - t0).toFixed(0)} ms into the drag`);
      for (const t of top) console.log(`    ${t}`);
      for (const [k, n] of hot) console.log(`    ${n} samples: ${k}`);
    }
  });
  await context.close();
} finally {
  await browser.close();
  await neptune.stop();
}
