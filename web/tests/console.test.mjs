// The console's end-to-end proof in Debian's headless Chromium: against a
// `neptune up` of its own, a user designs a 3-VM VI with two links and an
// entry point by dragging and clicking, exports it (the XML passes
// `neptune topology check`), requests it; an administrator reviews the plan
// and accepts it; the user watches it run, suspends and resumes it, asks to
// move it to the other datacenter, and an administrator grants that from
// the queue (it runs away from home, its Home Address bound) and brings it
// back; the paper's Fig. 3 imports and renders; a design error is shown on its
// element; another user never sees the first one's VIs. Screenshots go to
// docs/screenshots/.
//
//   node web/tests/console.test.mjs      (after `cargo build -p neptune`)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { apiAs, launchChromiumBeside, logIn, neptuneBinary, newPage, repo, startNeptune } from './harness.mjs';

const shots = process.env.NEPTUNE_SCREENSHOTS || join(repo, 'docs', 'screenshots');
mkdirSync(shots, { recursive: true });

const steps = [];
async function step(name, fn) {
  const started = Date.now();
  await fn();
  steps.push(name);
  console.log(`ok ${steps.length} - ${name} (${Date.now() - started} ms)`);
}

// Where a graph element is drawn, in page coordinates.
const drawnAt = (page, id, graph = 'neptuneGraph') =>
  page.evaluate(
    ([id, graph]) => {
      const cy = window[graph];
      const el = cy.getElementById(id);
      if (!el.length) return null;
      const p = el.renderedPosition();
      const box = cy.container().getBoundingClientRect();
      return { x: box.left + p.x, y: box.top + p.y };
    },
    [id, graph],
  );

const graphIds = (page, selector, graph = 'neptuneGraph') =>
  page.evaluate(([s, g]) => window[g].elements(s).map((e) => e.id()), [selector, graph]);

const neptune = await startNeptune();
const browser = await launchChromiumBeside(neptune);
const problems = [];
let failed = false;
try {
  const admin = await apiAs(neptune.url, 'admin', neptune.password);
  await admin('POST', '/users', { name: 'alice', password: 'alice-password-1', role: 'user' });
  await admin('POST', '/users', { name: 'bob', password: 'bob-password-12', role: 'user' });

  const alice = await newPage(browser, problems);
  const streams = [];
  alice.on('response', (r) => {
    if (/\/api\/v1\/jobs\/[0-9a-f-]+\/events$/.test(r.url())) streams.push(r);
  });
  let viId;
  let xmlPath;

  await step('a user logs in with a cookie session (no token in the page)', async () => {
    await logIn(alice, neptune.url, 'alice', 'alice-password-1');
    const cookies = await alice.context().cookies();
    const session = cookies.find((c) => c.name === 'neptune_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await alice.evaluate(() => document.cookie), '', 'scripts cannot read the session');
  });

  await step('designs three VMs by dragging templates onto the canvas', async () => {
    await alice.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Design', exact: true }).click();
    await alice.waitForURL(/\/design$/);
    const canvas = alice.getByTestId('canvas');
    await canvas.waitFor();
    const blank = alice.locator('button.template[data-template="blank"]');
    for (const [x, y] of [[140, 120], [420, 120], [280, 330]]) {
      await blank.dragTo(canvas, { targetPosition: { x, y } });
    }
    assert.deepEqual(await graphIds(alice, 'node.vm'), ['n:blank1', 'n:blank2', 'n:blank3']);
    const p = await alice.evaluate(() => window.neptuneGraph.getElementById('n:blank2').renderedPosition());
    assert.ok(Math.abs(p.x - 420) < 2 && Math.abs(p.y - 120) < 2, `dropped where released: ${JSON.stringify(p)}`);
  });

  await step('draws two links with their bandwidth by dragging from VM to VM', async () => {
    await alice.getByLabel('Bandwidth of new links').fill('250');
    await alice.getByRole('button', { name: 'Draw links' }).click();
    await alice.getByRole('button', { name: 'Drawing links…', pressed: true }).waitFor();
    for (const [a, b] of [['n:blank1', 'n:blank2'], ['n:blank2', 'n:blank3']]) {
      const from = await drawnAt(alice, a);
      const to = await drawnAt(alice, b);
      await alice.mouse.move(from.x, from.y);
      await alice.mouse.down();
      await alice.mouse.move(to.x, to.y, { steps: 8 });
      await alice.mouse.up();
    }
    await alice.getByRole('button', { name: 'Drawing links…' }).click();
    const links = await alice.evaluate(() => window.neptuneGraph.edges('[link]').map((e) => [e.source().id(), e.target().id(), e.data('label')]));
    assert.deepEqual(links, [
      ['n:blank1', 'n:blank2', '250 Mbit/s'],
      ['n:blank2', 'n:blank3', '250 Mbit/s'],
    ]);
  });

  await step('marks an entry point and edits a VM in the inspector; undo and redo', async () => {
    const at = await drawnAt(alice, 'n:blank1');
    await alice.mouse.click(at.x, at.y);
    const form = alice.getByRole('form', { name: 'VM blank1' });
    await form.waitFor();
    await form.getByLabel('Id').fill('gw');
    await form.getByLabel('Id').press('Tab');
    const gw = alice.getByRole('form', { name: 'VM gw' });
    await gw.getByLabel('Entry point').check();
    await gw.getByLabel('RAM (MiB)').fill('384');
    await gw.getByLabel('RAM (MiB)').press('Tab');
    assert.ok(await alice.evaluate(() => window.neptuneGraph.getElementById('n:gw').hasClass('entry')));
    await alice.keyboard.press('Escape');
    await alice.getByRole('button', { name: 'Undo' }).click();
    await alice.getByText(/3 VMs · 2 links · 1 entry points · 3 vCPU · 1536 MiB RAM/).waitFor();
    await alice.getByRole('button', { name: 'Redo' }).click();
    await alice.getByTestId('summary').getByText(/3 VMs · 2 links · 1 entry points · 3 vCPU · 1408 MiB RAM/).waitFor();
    await alice.getByLabel('VI name').fill('shop');
    await alice.getByLabel('VI name').press('Tab');
    await alice.getByRole('button', { name: 'Fit' }).click();
    await alice.waitForTimeout(500); // the sharp frame after the scaled bitmap of a viewport change
    await alice.screenshot({ path: join(shots, 'editor.png') });
  });

  await step('the keyboard alone selects a VM and moves it', async () => {
    await alice.getByLabel('Select element').selectOption('node:blank3');
    const before = await alice.evaluate(() => window.neptuneGraph.getElementById('n:blank3').position());
    await alice.getByTestId('canvas').focus();
    for (const key of ['ArrowRight', 'ArrowRight', 'Shift+ArrowDown']) await alice.keyboard.press(key);
    const after = await alice.evaluate(() => window.neptuneGraph.getElementById('n:blank3').position());
    assert.deepEqual([after.x - before.x, after.y - before.y], [20, 50]);
  });

  await step('a VM dragged with the mouse moves; undo puts it back, redo moves it again', async () => {
    const pos = () => alice.evaluate(() => window.neptuneGraph.getElementById('n:blank3').position());
    const before = await pos();
    const at = await drawnAt(alice, 'n:blank3');
    await alice.mouse.move(at.x, at.y);
    await alice.mouse.down();
    await alice.mouse.move(at.x + 60, at.y + 30, { steps: 6 });
    await alice.mouse.up();
    const moved = await pos();
    assert.ok(Math.hypot(moved.x - before.x, moved.y - before.y) > 20, `moved: ${JSON.stringify([before, moved])}`);
    await alice.getByRole('button', { name: 'Undo' }).click();
    assert.deepEqual(await pos(), before);
    await alice.getByRole('button', { name: 'Redo' }).click();
    assert.deepEqual(await pos(), moved);
  });

  await step('exports the XML, which `neptune topology check` accepts unchanged', async () => {
    const download = alice.waitForEvent('download');
    await alice.getByRole('button', { name: 'Export XML' }).click();
    xmlPath = join(neptune.dir, 'shop.xml');
    await (await download).saveAs(xmlPath);
    const out = execFileSync(neptuneBinary(), ['topology', 'check', xmlPath], { encoding: 'utf8' });
    assert.match(out, /topology "shop": 3 nodes, 2 links, 1 entry point/);
    assert.match(out, /500 Mbit\/s total link bandwidth/);
  });

  await step('saves and requests the VI', async () => {
    await alice.getByRole('button', { name: 'Request' }).click();
    await alice.waitForURL(/\/vis\/[0-9a-f-]{36}$/);
    viId = alice.url().split('/').pop();
    await alice.getByTestId('vi-state').getByText('requested').waitFor();
    // The design the Manager stored is the one exported.
    const stored = await admin('GET', `/vis/${viId}`);
    const xmlStored = execFileSync(neptuneBinary(), ['topology', 'convert', xmlPath, '--to', 'json'], { encoding: 'utf8' });
    assert.deepEqual(stored.topology, JSON.parse(xmlStored));
  });

  const boss = await newPage(browser, problems);
  await step('an administrator sees the plan preview: placement on hosts, addresses, cut, quota', async () => {
    await logIn(boss, neptune.url, 'admin', neptune.password);
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Approval queue' }).click();
    await boss.getByTestId('queue').getByRole('link', { name: 'shop' }).click();
    await boss.waitForURL(`${neptune.url}/admin/queue/${viId}`);
    await boss.getByTestId('plan-facts').getByText(/cut .* Mbit\/s/).waitFor();
    assert.equal(await boss.getByTestId('plan-vms').locator('tbody tr').count(), 3);
    await boss.getByTestId('plan-addresses').getByText('(home)').waitFor();
    await boss.getByTestId('quota').getByText(/VMs/).waitFor();
    // What the owner holds is the Manager's count, this requested VI's
    // three VMs included.
    const owner = await admin('GET', `/users/${(await admin('GET', `/vis/${viId}`)).owner}`);
    assert.ok(owner.usage.vms >= 3, `the owner holds this VI's VMs: ${JSON.stringify(owner.usage)}`);
    const inUse = boss.getByTestId('quota').locator('[data-quota=vms] td').nth(1);
    await inUse.getByText(String(owner.usage.vms), { exact: true }).waitFor();
    const hosts = await graphIds(boss, 'node.host', 'neptunePlacement');
    assert.ok(hosts.length >= 3, `every host of the datacenter is drawn: ${hosts}`);
    const parents = await boss.evaluate(() => window.neptunePlacement.nodes('node.vm').map((n) => n.parent().id()));
    assert.ok(parents.every((p) => p.startsWith('h:')), `VMs are drawn inside their hosts: ${parents}`);
    await boss.screenshot({ path: join(shots, 'approval-preview.png') });
  });

  let manualHost;
  await step('the administrator drags a VM onto another host and accepts that placement', async () => {
    const from = await boss.evaluate(() => window.neptunePlacement.getElementById('n:gw').parent().data('host'));
    manualHost = ['napoli-1', 'napoli-2', 'napoli-3'].find((h) => h !== from);
    const vm = await drawnAt(boss, 'n:gw', 'neptunePlacement');
    const host = await drawnAt(boss, `h:${manualHost}`, 'neptunePlacement');
    await boss.mouse.move(vm.x, vm.y);
    await boss.mouse.down();
    await boss.mouse.move(host.x, host.y, { steps: 12 });
    await boss.mouse.up();
    await boss.getByRole('status').getByText(`gw moves to ${manualHost}`).waitFor();
    await boss.getByTestId('plan-facts').getByText(/manual placement/).waitFor();
    await boss.getByTestId('plan-vms').getByRole('row', { name: new RegExp(`^gw ${manualHost}`) }).waitFor();
    await boss.getByRole('button', { name: 'Accept' }).click();
    await boss.waitForURL(`${neptune.url}/vis/${viId}`);
    const placed = await admin('GET', `/vis/${viId}`);
    assert.equal(placed.vms.find((v) => v.node === 'gw').host, manualHost);
  });

  await step('the user watches it reach running, with addresses and live job progress', async () => {
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor({ timeout: 60000 });
    await alice.getByTestId('home-addresses').locator('code').first().waitFor();
    await alice.getByTestId('job').getByText(/deploy/).waitFor();
    await alice.getByTestId('vm-table').getByText('ready').first().waitFor({ timeout: 30000 });
    const colours = await alice.evaluate(() => window.neptunePlacement.nodes('node.vm').map((n) => n.data('state')));
    assert.equal(colours.length, 3);
    await alice.screenshot({ path: join(shots, 'running-vi.png') });
  });

  await step('suspends and resumes it', async () => {
    await alice.getByRole('button', { name: 'Suspend' }).click();
    await alice.getByTestId('vi-state').getByText('suspended').waitFor({ timeout: 60000 });
    await alice.getByRole('button', { name: 'Resume' }).click();
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor({ timeout: 60000 });
    // The jobs' progress came live, as server-sent events, on the cookie session.
    assert.ok(streams.length >= 1, 'a job was followed');
    for (const r of streams) {
      assert.equal(r.status(), 200);
      assert.match(r.headers()['content-type'], /^text\/event-stream/);
    }
  });

  await step("opens a VM's serial console, saves a VM as a template, uploads an image", async () => {
    await alice.getByTestId('vm-table').getByRole('row', { name: /^gw/ }).getByRole('button', { name: 'console' }).click();
    await alice.getByRole('region', { name: 'Console of gw' }).waitFor();
    await alice.getByRole('region', { name: 'Console of gw' }).getByRole('button', { name: 'Close' }).click();
    const form = alice.getByRole('form', { name: 'Save a VM as a template' });
    await form.getByLabel('VM').selectOption('blank3');
    await form.getByLabel('Template name').fill('backend-image');
    await form.getByRole('button', { name: 'Save as template' }).click();
    await alice.getByRole('status').getByText(/Saving blank3 as template backend-image/).waitFor();
    await alice.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Templates' }).click();
    for (let i = 0; i < 30 && !(await alice.getByTestId('templates').getByText('backend-image').count()); i += 1) {
      await alice.waitForTimeout(1000);
      await alice.reload();
    }
    await alice.getByTestId('templates').getByRole('row', { name: /backend-image/ }).getByText('alice').waitFor();
    // And an image of her own, uploaded: a 1 MiB raw disk.
    const image = join(neptune.dir, 'disk.raw');
    writeFileSync(image, Buffer.alloc(1 << 20));
    const upload = alice.getByRole('form', { name: 'Import an image' });
    await upload.getByLabel('Image file').setInputFiles(image);
    await upload.getByLabel('Template name').fill('my-disk');
    await upload.getByLabel('OS').fill('none');
    await upload.getByRole('button', { name: 'Import' }).click();
    await alice.getByRole('status').getByText('Imported my-disk (raw, 1 MiB).').waitFor({ timeout: 30000 });
    await alice.getByTestId('templates').getByRole('row', { name: /^my-disk none alice private/ }).waitFor();
  });

  await step('starts a design from the catalogue', async () => {
    await alice.goto(`${neptune.url}/design`);
    await alice.getByLabel('Catalogue kind').selectOption('star');
    await alice.getByLabel('Nodes').fill('5');
    await alice.getByLabel('Name', { exact: true }).fill('hub');
    await alice.getByRole('button', { name: 'Create' }).click();
    await alice.waitForURL(/\/design\/[0-9a-f-]{36}$/);
    await alice.waitForFunction(() => window.neptuneGraph?.nodes('node.vm').length === 5);
    await alice.getByTestId('summary').getByText(/5 VMs · 4 links/).waitFor();
  });

  await step('administrators see hosts with their use, users with their quotas', async () => {
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' }).click();
    const napoli = boss.getByTestId('hosts-napoli');
    await napoli.locator('tbody tr').nth(2).waitFor();
    assert.equal(await napoli.locator('tbody tr').count(), 3);
    assert.ok((await napoli.locator('meter').count()) >= 15, 'CPU, RAM, disk, slots and uplink per host');
    // The first meter of a row is its host's vCPUs: the running VI takes 3
    // (the page refreshes itself every 5 s).
    await boss.waitForFunction(
      () => [...document.querySelectorAll('[data-testid=hosts-napoli] tbody tr')].reduce((n, r) => n + r.querySelector('meter').value, 0) === 3,
      null,
      { timeout: 20000 },
    );
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
    await boss.getByTestId('users').getByRole('row', { name: /^alice user active 64/ }).waitFor();
  });

  await step('each host, datacenter, template and user has its own URL, which a fresh load opens', async () => {
    // Each page reads its one item (GET /api/v1/hosts/{name}, ...), not a list.
    const reads = [];
    const record = (r) => reads.push(new URL(r.url()).pathname);
    boss.on('request', record);
    // A host: from the list, then reloaded; the VMs placed on it.
    const busy = (await admin('GET', '/hosts')).find((h) => h.datacenter === 'napoli' && h.used_vcpus > 0);
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' }).click();
    await boss.getByTestId('hosts-napoli').getByRole('link', { name: busy.name, exact: true }).click();
    await boss.waitForURL(`${neptune.url}/admin/hosts/${busy.name}`);
    await boss.reload();
    const facts = boss.getByTestId('host-facts');
    await facts.getByRole('row', { name: /^datacenter napoli$/ }).waitFor();
    await facts.getByText(`${busy.used_vcpus}/${busy.cpus} vCPU`, { exact: true }).waitFor();
    assert.equal(await facts.locator('meter').count(), 5, 'CPU, RAM, disk, slots and uplink');
    await boss.getByTestId('host-vms').getByRole('row', { name: /shop alice running/ }).first().waitFor();
    await boss.screenshot({ path: join(shots, 'host.png') });
    assert.ok(reads.includes(`/api/v1/hosts/${busy.name}`), reads.join(' '));
    reads.length = 0;
    await boss.goto(`${neptune.url}/admin/hosts/nowhere`);
    await boss.getByRole('alert').getByText('No host nowhere.').waitFor();
    assert.ok(reads.includes('/api/v1/hosts/nowhere'), reads.join(' '));
    // A datacenter: its pools, gateway, switch, hosts and the VIs there.
    await boss.goto(`${neptune.url}/admin/datacenters/napoli`);
    await boss.getByRole('heading', { name: 'Datacenter napoli' }).waitFor();
    await boss.getByTestId('datacenter-facts').getByRole('row', { name: /^home pools \S/ }).waitFor();
    await boss.getByTestId('datacenter-switch').getByRole('row', { name: 'answers yes' }).waitFor();
    assert.equal(await boss.getByTestId('hosts-napoli').locator('tbody tr').count(), 3);
    await boss.getByTestId('datacenter-vis').getByRole('link', { name: 'shop' }).waitFor();
    // A template: every field; an administrator publishes it and makes it private again.
    const tpl = (await admin('GET', '/templates')).find((t) => t.visibility === 'private') || (await admin('GET', '/templates'))[0];
    reads.length = 0;
    await boss.goto(`${neptune.url}/templates/${tpl.id}`);
    const tfacts = boss.getByTestId('template-facts');
    await tfacts.getByRole('row', { name: `owner ${tpl.owner}` }).waitFor();
    await tfacts.getByRole('row', { name: `image ${tpl.format} · ${tpl.size_mib} MiB` }).waitFor();
    const flip = tpl.visibility === 'public' ? ['Make private', 'private', 'Publish', 'public'] : ['Publish', 'public', 'Make private', 'private'];
    await boss.getByRole('button', { name: flip[0] }).click();
    await boss.getByRole('status').getByText(`${tpl.name} is ${flip[1]}.`).waitFor();
    assert.equal((await admin('GET', '/templates')).find((t) => t.id === tpl.id).visibility, flip[1]);
    await boss.getByRole('button', { name: flip[2] }).click();
    await boss.getByRole('status').getByText(`${tpl.name} is ${flip[3]}.`).waitFor();
    assert.ok(reads.includes(`/api/v1/templates/${tpl.id}`) && !reads.includes('/api/v1/templates'), reads.join(' '));
    // A user: role, account, quota and what they hold, the stored design
    // text and private addresses included, as the API counts them.
    reads.length = 0;
    await boss.goto(`${neptune.url}/admin/users/alice`);
    await boss.getByRole('heading', { name: 'User alice active' }).waitFor();
    const quota = boss.getByTestId('user-quota');
    await quota.getByRole('row', { name: /^VMs 64 3$/ }).waitFor();
    await boss.getByTestId('user-vis').getByRole('link', { name: 'shop' }).waitFor();
    const held = (await admin('GET', '/users/alice')).usage;
    assert.ok(held.private_addresses > 0 && held.design_bytes > 0, JSON.stringify(held));
    await quota.getByRole('row', { name: `private addresses 4096 ${held.private_addresses}` }).waitFor();
    const text = quota.locator('[data-quota=design_mib] td').nth(1);
    assert.equal(await text.locator('span').getAttribute('title'), `${held.design_bytes} bytes`);
    assert.match(await text.innerText(), /^(< 0\.01|\d+(\.\d\d?)?)$/);
    assert.ok(reads.includes('/api/v1/users/alice') && !reads.includes('/api/v1/users'), reads.join(' '));
    boss.off('request', record);
  });

  await step('an administrator creates a user and edits the quota; the user sees it; admin URLs refuse her', async () => {
    await boss.goto(`${neptune.url}/admin/users`);
    const form = boss.getByRole('form', { name: 'New user' });
    await form.getByLabel('Name').fill('carol');
    await form.getByLabel('Password').fill('carol-password-1');
    await form.getByRole('button', { name: 'Create' }).click();
    await boss.getByRole('status').getByText('Created carol.').waitFor();
    await boss.getByTestId('users').getByRole('link', { name: 'carol', exact: true }).click();
    await boss.waitForURL(`${neptune.url}/admin/users/carol`);
    const quota = boss.getByRole('form', { name: 'Quota of carol' });
    // A negative figure: the Manager's message, nothing saved.
    await quota.getByLabel('Quota VMs').fill('-1');
    await quota.getByRole('button', { name: 'Save quota' }).click();
    await boss.getByRole('alert').getByText(/^Not saved: quota vms is -1: a quota is 0 or more$/).waitFor();
    await quota.getByLabel('Quota VMs').fill('7');
    await quota.getByLabel('Quota vCPUs').fill('9');
    await quota.getByLabel('Quota RAM (MiB)').fill('3072');
    await quota.getByRole('button', { name: 'Save quota' }).click();
    await boss.getByRole('status').getByText('The quota of carol is saved.').waitFor();
    await boss.reload();
    await boss.getByTestId('user-quota').getByRole('row', { name: /^VMs 7 0$/ }).waitFor();
    await boss.getByTestId('user-quota').getByRole('row', { name: /^RAM \(MiB\) 3072 0$/ }).waitFor();
    await boss.screenshot({ path: join(shots, 'user.png') });

    const carol = await newPage(browser, problems);
    await logIn(carol, neptune.url, 'carol', 'carol-password-1');
    await carol.getByRole('link', { name: 'carol', exact: true }).click();
    await carol.waitForURL(`${neptune.url}/account`);
    await carol.getByTestId('user-quota').getByRole('row', { name: /^VMs 7 0$/ }).waitFor();
    await carol.getByTestId('user-quota').getByRole('row', { name: /^vCPUs 9 0$/ }).waitFor();
    await carol.getByTestId('user-quota').getByRole('row', { name: 'private addresses 4096 0' }).waitFor();
    await carol.getByTestId('user-quota').getByRole('row', { name: 'design text (MiB) 64 0' }).waitFor();
    const asCarol = await apiAs(neptune.url, 'carol', 'carol-password-1');
    const me = await asCarol('GET', '/me');
    assert.deepEqual([me.quota.vms, me.quota.vcpus, me.quota.ram_mib], [7, 9, 3072]);
    // Admin URLs, opened directly: refused, no admin API called.
    const denied = [];
    carol.on('response', (r) => {
      if (r.status() === 403) denied.push(r.url());
    });
    for (const path of ['/admin/users/alice', `/admin/hosts/napoli-1`, '/admin/datacenters/napoli', '/admin/queue']) {
      await carol.goto(`${neptune.url}${path}`);
      await carol.getByRole('heading', { name: 'Administrators only' }).waitFor();
      await carol.getByRole('alert').getByText(`${path} is for administrators`).waitFor();
    }
    assert.deepEqual(denied, [], 'no admin API is called');
    // Disabled (her session ends), then enabled again.
    await boss.getByRole('button', { name: 'Disable' }).click();
    await boss.getByRole('status').getByText('carol is disabled.').waitFor();
    await boss.getByRole('heading', { name: 'User carol disabled' }).waitFor();
    assert.equal((await admin('GET', '/users')).find((u) => u.name === 'carol').disabled, true);
    assert.equal(await carol.evaluate(() => fetch('/api/v1/me').then((r) => r.status)), 401);
    await boss.getByRole('button', { name: 'Enable' }).click();
    await boss.getByRole('status').getByText('carol is enabled.').waitFor();
    assert.equal((await admin('GET', '/users')).find((u) => u.name === 'carol').disabled, false);
    await carol.context().close();
  });

  await step('the owner asks to move her running VI to roma: the plan, a request she may withdraw', async () => {
    await alice.goto(`${neptune.url}/vis/${viId}`);
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    await alice.getByTestId('location').getByText('napoli', { exact: true }).waitFor();
    assert.equal(await alice.getByText('away from home').count(), 0);
    const migrate = alice.getByRole('toolbar', { name: 'Actions' }).getByRole('button', { name: 'Migrate', exact: true });
    await migrate.click();
    const panel = alice.getByRole('region', { name: 'Migration' });
    await panel.getByTestId('migration-facts').getByText(/from napoli to roma · cut \d+ Mbit\/s .* 500 Mbit\/s between datacenters while split · copies up to \d+ MiB/).waitFor();
    assert.deepEqual(await panel.getByLabel('Target datacenter').locator('option').allTextContents(), ['roma'], 'every datacenter but its own');
    const rows = await panel.getByTestId('migration-vms').locator('tbody tr').allTextContents();
    assert.equal(rows.length, 3);
    assert.ok(rows.every((r) => /napoli-\droma-\d/.test(r)), `each VM from a napoli host to a roma host: ${rows}`);
    const home = (await admin('GET', `/vis/${viId}`)).addresses.home_addresses[0].address.split('/')[0];
    await panel.getByTestId('migration-bound').getByText(`Home Addresses tunnelled from napoli to roma: ${home}`).waitFor();
    await panel.getByRole('button', { name: 'Request migration' }).click();
    await panel.getByTestId('migration-request').getByText(/alice asks to move shop to roma .*; an administrator grants or refuses it/).waitFor();
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    assert.equal(await migrate.count(), 0, 'one request at a time');
    await panel.getByRole('button', { name: 'Withdraw request' }).click();
    await alice.getByRole('status').getByText('Migration request withdrawn.').waitFor();
    await alice.getByRole('region', { name: 'Migration' }).waitFor({ state: 'detached' });
    await migrate.click();
    await panel.getByRole('button', { name: 'Request migration' }).click();
    await panel.getByTestId('migration-request').waitFor();
  });

  await step('an administrator finds it beside the approval queue, reads its plan and grants it', async () => {
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Approval queue' }).click();
    const requests = boss.getByTestId('migration-requests');
    await requests.getByRole('row', { name: /^shop alice roma/ }).waitFor();
    await requests.getByRole('link', { name: 'shop' }).click();
    await boss.waitForURL(`${neptune.url}/vis/${viId}`);
    const panel = boss.getByRole('region', { name: 'Migration' });
    await panel.getByTestId('migration-request').getByText(/alice asks to move shop to roma/).waitFor();
    await panel.getByTestId('migration-facts').getByText(/from napoli to roma/).waitFor();
    assert.equal(await panel.getByTestId('migration-vms').locator('tbody tr').count(), 3);
    await boss.screenshot({ path: join(shots, 'migration-plan.png') });
    // Whether a move's progress is drawn while it lasts (a simulated move
    // is quick: it may end between two events).
    await boss.evaluate(() => {
      window.neptuneMovesSeen = [];
      new MutationObserver(() => {
        const t = document.querySelector('[data-testid=moves]');
        if (t) window.neptuneMovesSeen.push(t.textContent);
      }).observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    await panel.getByRole('button', { name: 'Grant' }).click();
    await boss.getByTestId('job').getByText(/^migrate$/).waitFor();
    await boss.getByTestId('location').getByText('roma', { exact: true }).waitFor({ timeout: 60000 });
    await boss.getByTestId('vi-state').getByText('running', { exact: true }).waitFor({ timeout: 60000 });
    await boss.getByTestId('location').getByText('away from home').waitFor();
    const seen = await boss.evaluate(() => window.neptuneMovesSeen);
    for (const t of seen) assert.match(t, /VMfromtosentremaining/);
  });

  await step('the owner sees her VI running in roma, away from home, its Home Address bound there', async () => {
    await alice.getByTestId('location').getByText('roma', { exact: true }).waitFor({ timeout: 10000 });
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    await alice.getByTestId('location').getByText('away from home').waitFor();
    assert.equal(await alice.getByRole('region', { name: 'Migration' }).count(), 0, 'the request is gone');
    const home = (await admin('GET', `/vis/${viId}`)).addresses.home_addresses[0].address.split('/')[0];
    await alice.getByTestId('bindings').getByRole('row', { name: new RegExp(`^${home.replaceAll('.', '\\.')} roma \\d+\\.`) }).waitFor();
    const hosts = await alice.getByTestId('vm-table').locator('tbody td:nth-child(2)').allTextContents();
    assert.ok(hosts.every((h) => /^roma-\d$/.test(h)), `every VM on a roma host: ${hosts}`);
    await alice.getByTestId('vm-table').getByText('ready').first().waitFor({ timeout: 30000 });
    await boss.goto(`${neptune.url}/admin/queue`);
    await boss.getByText('No migration waits for approval.').waitFor();
    await boss.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' }).click();
    const switches = boss.getByTestId('switches');
    // The home switch tunnels the Home Address (a binding), roma's delivers it (a visitor).
    await switches.getByRole('row', { name: /^napoli \S+ yes 1 0 / }).waitFor();
    await switches.getByRole('row', { name: /^roma \S+ yes 0 1 / }).waitFor();
    // The VI list shows where it runs beside its home.
    await boss.goto(`${neptune.url}/vis`);
    await boss.getByTestId('vi-list').getByRole('row', { name: /^shop alice running .*napoli at roma/ }).waitFor();
  });

  await step('an administrator brings it back home at once', async () => {
    await boss.goto(`${neptune.url}/vis/${viId}`);
    await boss.getByRole('toolbar', { name: 'Actions' }).getByRole('button', { name: 'Migrate', exact: true }).click();
    const panel = boss.getByRole('region', { name: 'Migration' });
    await panel.getByTestId('migration-facts').getByText(/from roma to napoli/).waitFor();
    assert.deepEqual(await panel.getByLabel('Target datacenter').locator('option').allTextContents(), ['napoli']);
    await panel.getByTestId('migration-bound').getByText(/No Home Address is tunnelled: napoli is the VI's home/).waitFor();
    await panel.getByRole('button', { name: 'Migrate now' }).click();
    await boss.getByTestId('location').getByText('napoli', { exact: true }).waitFor({ timeout: 60000 });
    await boss.getByTestId('vi-state').getByText('running', { exact: true }).waitFor({ timeout: 60000 });
    await alice.getByTestId('location').getByText('napoli', { exact: true }).waitFor({ timeout: 10000 });
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    assert.equal(await alice.getByText('away from home').count(), 0);
    assert.equal(await alice.getByTestId('bindings').count(), 0, 'no binding at home');
    const hosts = await alice.getByTestId('vm-table').locator('tbody td:nth-child(2)').allTextContents();
    assert.ok(hosts.every((h) => /^napoli-\d$/.test(h)), `every VM on a napoli host: ${hosts}`);
  });

  await step('an administrator refuses a request from the queue; the owner sees it gone', async () => {
    const asAlice = await apiAs(neptune.url, 'alice', 'alice-password-1');
    await asAlice('POST', `/vis/${viId}/migrate`, { to: 'roma' });
    await alice.getByTestId('migration-request').getByText(/alice asks to move shop to roma/).waitFor({ timeout: 10000 });
    await boss.goto(`${neptune.url}/admin/queue`);
    await boss.getByRole('button', { name: 'Refuse moving shop to roma' }).click();
    await boss.getByRole('status').getByText('Refused: shop stays where it is.').waitFor();
    await boss.getByText('No migration waits for approval.').waitFor();
    await alice.getByTestId('migration-request').waitFor({ state: 'detached', timeout: 10000 });
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    await alice.getByTestId('location').getByText('napoli', { exact: true }).waitFor();
  });

  await step("a migration in progress shows each VM's move and the host it is moving to", async () => {
    // Simulated moves end within milliseconds: the page is served one moment
    // of a migration as the API shows it (the VI's detail, then one progress
    // event of its job), to see that moment drawn.
    const job = '00000000-0000-4000-8000-00000000feed';
    const prefix = `nt-${viId.replaceAll('-', '').slice(0, 12)}-`;
    const GiB = 1 << 30;
    const moving = (vi, done) =>
      vi.vms.map((v, i) => ({
        vm: `${prefix}${v.node}`,
        from: v.host,
        to: `roma-${i + 1}`,
        bytes_done: i < done ? 4 * GiB : GiB,
        bytes_remaining: i < done ? 0 : 3 * GiB,
        done: i < done,
        total_ms: i < done ? 5400 : null,
        downtime_ms: i < done ? 38 : null,
      }));
    let progress;
    await alice.route(`**/api/v1/vis/${viId}`, async (route) => {
      const vi = await (await route.fetch()).json();
      const last = vi.jobs[vi.jobs.length - 1];
      const running = { ...last, id: job, kind: 'migrate', state: 'running', step: 4, total: 9, percent: 44, step_name: 'move the VMs', error: null };
      progress = { ...running, moves: moving(vi, 1) };
      vi.jobs.push({ ...running, moves: moving(vi, 0) });
      vi.state = 'migrating';
      vi.vms = vi.vms.map((v, i) => ({ ...v, moving_to: `roma-${i + 1}` }));
      await route.fulfill({ json: vi });
    });
    await alice.route(`**/api/v1/jobs/${job}/events`, (route) =>
      route.fulfill({ contentType: 'text/event-stream', body: `event: progress\ndata: ${JSON.stringify(progress)}\n\n` }),
    );
    await alice.reload();
    await alice.getByTestId('vi-state').getByText('migrating').waitFor();
    const moves = alice.getByTestId('moves');
    // The job's progress event: the first VM arrived, the others copy on.
    await moves.getByText(/^on roma-1 after 5400 ms, paused 38 ms$/).waitFor();
    const rows = await moves.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent).join('|')));
    const first = (await admin('GET', `/vis/${viId}`)).vms[0].node;
    assert.match(rows[0], new RegExp(`^${first}\\|napoli-\\d\\|roma-1\\|4096\\.0 MiB\\|0\\.0 MiB\\|\\|on roma-1`));
    assert.ok(rows.slice(1).every((r) => /^\w+\|napoli-\d\|roma-[23]\|1024\.0 MiB\|3072\.0 MiB\|\|copying$/.test(r)), rows.join('\n'));
    assert.equal(await moves.getByRole('progressbar').count(), 3);
    const hosts = await alice.getByTestId('vm-table').locator('tbody td:nth-child(2)').allTextContents();
    assert.ok(hosts.every((h) => /^napoli-\d → roma-[123]$/.test(h)), `each VM's host and the host it moves to: ${hosts}`);
    assert.equal(await alice.getByRole('button', { name: 'Migrate', exact: true }).count(), 0, 'no second move meanwhile');
    await alice.unrouteAll();
    await alice.reload();
    await alice.getByTestId('vi-state').getByText('running', { exact: true }).waitFor();
    assert.equal(await alice.getByTestId('moves').count(), 0);
  });

  await step('a suspended VI migrates by resuming in the other datacenter', async () => {
    await alice.getByRole('button', { name: 'Suspend' }).click();
    await alice.getByTestId('vi-state').getByText('suspended').waitFor({ timeout: 60000 });
    await boss.goto(`${neptune.url}/vis/${viId}`);
    await boss.getByTestId('vi-state').getByText('suspended').waitFor();
    await boss.getByRole('toolbar', { name: 'Actions' }).getByRole('button', { name: 'Migrate', exact: true }).click();
    const panel = boss.getByRole('region', { name: 'Migration' });
    await panel.getByText('The VI is suspended: it resumes in roma.').waitFor();
    await panel.getByTestId('migration-facts').getByText(/from napoli to roma/).waitFor();
    await panel.getByRole('button', { name: 'Migrate now' }).click();
    await boss.getByTestId('location').getByText('roma', { exact: true }).waitFor({ timeout: 60000 });
    await boss.getByTestId('vi-state').getByText('running', { exact: true }).waitFor({ timeout: 60000 });
    await alice.getByTestId('location').getByText('away from home').waitFor({ timeout: 10000 });
    await alice.getByTestId('bindings').getByRole('row', { name: / roma / }).waitFor();
  });

  await step("the paper's Fig. 3 imports and renders as the paper draws it", async () => {
    await alice.goto(`${neptune.url}/design`);
    const fig3 = join(repo, 'crates/neptune-topology/testdata/fig3.xml');
    await alice.getByLabel('Import XML').setInputFiles(fig3);
    await alice.getByRole('status').getByText(/Imported fig3.xml: 1 nodes, 0 links/).waitFor();
    assert.deepEqual(await graphIds(alice, 'node'), ['n:node0', 'p:node0/eth0', 'p:node0/eth1']);
    const labels = await alice.evaluate(() => window.neptuneGraph.nodes().map((n) => n.data('label')));
    assert.match(labels[0], /^node0\nCentOS · minicentos\n1 vCPU · 256 MiB · 2 GiB$/);
    assert.deepEqual(labels.slice(1), ['eth0 · HIF', 'eth1 · bridge']);
    // Exported again, it is the same topology (MACs, OS password, software included).
    const download = alice.waitForEvent('download');
    await alice.getByRole('button', { name: 'Export XML' }).click();
    const again = join(neptune.dir, 'fig3-again.xml');
    await (await download).saveAs(again);
    const json = (file) => JSON.parse(execFileSync(neptuneBinary(), ['topology', 'convert', file, '--to', 'json'], { encoding: 'utf8' }));
    assert.deepEqual(json(again), json(fig3));
    await alice.getByRole('button', { name: 'Save' }).click();
    await alice.getByRole('status').getByText(/Saved luigi/).waitFor();
    await alice.getByLabel('Select element').selectOption('node:node0');
    await alice.getByRole('form', { name: 'VM node0' }).getByLabel('OS', { exact: true }).waitFor();
    await alice.screenshot({ path: join(shots, 'fig3.png') });
  });

  await step('a design error is shown on the element it concerns', async () => {
    await alice.getByLabel('Select element').selectOption('node:node0');
    const form = alice.getByRole('form', { name: 'VM node0' });
    await form.getByLabel('RAM (MiB)').fill('0');
    await form.getByLabel('RAM (MiB)').press('Tab');
    await alice.getByRole('button', { name: 'Save' }).click();
    await form.getByTestId('element-problems').getByText(/RAM must be positive/).waitFor();
    assert.ok(await alice.evaluate(() => window.neptuneGraph.getElementById('n:node0').hasClass('error')));
    await alice.getByRole('region', { name: 'Problems' }).getByText(/node node0/).waitFor();
  });

  await step("another user never sees the first one's VIs; a request is rejected with a reason", async () => {
    const bob = await newPage(browser, problems);
    await logIn(bob, neptune.url, 'bob', 'bob-password-12');
    await bob.getByRole('heading', { name: 'Virtual Infrastructures' }).waitFor();
    await bob.getByText(/No VIs yet/).waitFor();
    assert.equal(await bob.getByText('shop').count(), 0);
    await bob.goto(`${neptune.url}/vis/${viId}`);
    await bob.getByText(/not found/i).first().waitFor();
    assert.equal(await bob.getByText('shop').count(), 0);
    await bob.goto(`${neptune.url}/admin/queue`);
    await bob.getByRole('heading', { name: 'Administrators only' }).waitFor();

    // Bob's own request, rejected with a reason he then reads.
    const asBob = await apiAs(neptune.url, 'bob', 'bob-password-12');
    const hub = await asBob('POST', '/vis', { catalogue: { kind: 'star', nodes: 3 }, name: 'bobs-star' });
    await asBob('POST', `/vis/${hub.id}/request`);
    await boss.goto(`${neptune.url}/admin/queue/${hub.id}`);
    await boss.getByLabel('Reason for rejecting').fill('no capacity for stars this week');
    await boss.getByRole('button', { name: 'Reject' }).click();
    await boss.waitForURL(`${neptune.url}/admin/queue`);
    await bob.goto(`${neptune.url}/vis/${hub.id}`);
    await bob.getByText('Rejected: no capacity for stars this week').waitFor();
    await bob.getByRole('button', { name: 'Revise' }).waitFor();
  });

  await step('logging out revokes the session', async () => {
    await alice.getByRole('button', { name: 'Log out' }).click();
    await alice.getByRole('button', { name: 'Log in' }).waitFor();
    const status = await alice.evaluate(() => fetch('/api/v1/vis').then((r) => r.status));
    assert.equal(status, 401);
  });

  assert.deepEqual(problems, [], 'no console errors (a CSP violation is one)');
} catch (e) {
  failed = true;
  console.error(`not ok - ${e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  console.error(neptune.log().split('\n').slice(-30).join('\n'));
} finally {
  await browser.close();
  await neptune.stop();
}
if (failed) process.exitCode = 1;
else console.log(`all ${steps.length} console checks passed`);
