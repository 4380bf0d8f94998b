// Administration: the approval queue and its plan preview (placement on
// hosts, address plan, cut and bandwidth, quota impact) with manual
// placement by dragging; the owners' migration requests beside it; hosts,
// datacenters and their Edge Service Switches, and their use; templates;
// users and quotas; a page of its own for each host, datacenter, template
// and user.
import { useState } from 'preact/hooks';
import { api, del, get, post, upload } from './api.js';
import { PlacementGraph } from './placement.jsx';
import { navigate, usePoll, when } from './router.js';

const COUNTED = ['requested', 'accepted', 'deploying', 'running', 'suspending', 'suspended', 'resuming', 'migrating', 'terminating', 'failed'];

// Owners' requests to move their VIs to another datacenter: each links to
// its VI, whose page shows the plan; granting moves the VI at once.
function MigrationRequests({ vis }) {
  const [requests, error, setRequests] = usePoll(() => get('/migration-requests'), 3000, []);
  const [message, setMessage] = useState('');
  const name = (id) => vis?.find((v) => v.id === id)?.name || id;
  const grant = async (r) => {
    setMessage('');
    try {
      await post(`/vis/${r.vi}/migrate`, { to: r.to });
      navigate(`/vis/${r.vi}`);
    } catch (e) {
      setMessage(`Not granted: ${e.message}`);
    }
  };
  const refuse = async (r) => {
    setMessage('');
    try {
      await del(`/vis/${r.vi}/migrate`);
      setMessage(`Refused: ${name(r.vi)} stays where it is.`);
      setRequests(await get('/migration-requests'));
    } catch (e) {
      setMessage(e.message);
    }
  };
  return (
    <section aria-labelledby="migration-requests">
      <h2 id="migration-requests">Migration requests</h2>
      {error && <p class="error">{error.message}</p>}
      {message && <p class="status" role="status">{message}</p>}
      {requests && !requests.length && <p>No migration waits for approval.</p>}
      {requests?.length > 0 && (
        <table class="list" data-testid="migration-requests">
          <thead><tr><th>VI</th><th>requested by</th><th>to</th><th>requested</th><th /></tr></thead>
          <tbody>
            {requests.map((r) => (
              <tr>
                <td><a href={`/vis/${r.vi}`}>{name(r.vi)}</a></td>
                <td>{r.requested_by}</td>
                <td>{r.to}</td>
                <td>{when(r.requested_at)}</td>
                <td>
                  <button type="button" class="link" onClick={() => grant(r)} aria-label={`Grant moving ${name(r.vi)} to ${r.to}`}>grant</button>
                  <button type="button" class="link" onClick={() => refuse(r)} aria-label={`Refuse moving ${name(r.vi)} to ${r.to}`}>refuse</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function Queue() {
  const [vis, error] = usePoll(() => get('/vis'), 3000, []);
  const queue = (vis || []).filter((v) => v.state === 'requested');
  return (
    <main>
      <h1>Approval queue</h1>
      {error && <p class="error">{error.message}</p>}
      {vis && !queue.length && <p>No VI waits for approval.</p>}
      {queue.length > 0 && (
        <table class="list" data-testid="queue">
          <thead><tr><th>VI</th><th>owner</th><th>VMs</th><th>links</th><th>entry points</th><th>vCPU</th><th>RAM</th><th>bandwidth</th><th>requested</th></tr></thead>
          <tbody>
            {queue.map((v) => (
              <tr>
                <td><a href={`/admin/queue/${v.id}`}>{v.name}</a></td>
                <td>{v.owner}</td>
                <td>{v.summary.nodes}</td>
                <td>{v.summary.links}</td>
                <td>{v.summary.entry_points}</td>
                <td>{v.summary.vcpus}</td>
                <td>{v.summary.ram_mib} MiB</td>
                <td>{v.summary.bandwidth_mbps} Mbit/s</td>
                <td>{when(v.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <MigrationRequests vis={vis} />
    </main>
  );
}

// What a host has left once this VI's VMs in `map` are on it (the plan's
// own VMs are not yet reserved: a preview changes nothing).
function fits(host, nodes, topology) {
  let vcpus = 0;
  let ram = 0;
  let disk = 0;
  for (const id of nodes) {
    const n = topology.nodes.find((x) => x.id === id);
    vcpus += Math.max(1, Number(n?.cpu?.amount) || 0);
    ram += Number(n?.ram) || 0;
    disk += Number(n?.disk) || 0;
  }
  const problems = [];
  if (host.state !== 'ready') problems.push(`${host.name} is ${host.state}`);
  if (host.used_vcpus + vcpus > host.cpus) problems.push(`${host.name} has ${host.cpus - host.used_vcpus} vCPUs free, ${vcpus} wanted`);
  if (host.used_ram_mib + ram > host.ram_mib) problems.push(`${host.name} has ${host.ram_mib - host.used_ram_mib} MiB RAM free, ${ram} wanted`);
  if (host.used_disk_mib + disk > host.disk_mib) problems.push(`${host.name} has ${host.disk_mib - host.used_disk_mib} MiB disk free, ${disk} wanted`);
  if (host.used_slots + nodes.length > host.vm_slots) problems.push(`${host.name} has ${host.vm_slots - host.used_slots} VM slots free, ${nodes.length} wanted`);
  return problems;
}

export function Preview({ id }) {
  const [datacenter, setDatacenter] = useState('');
  const [detail] = usePoll(() => get(`/vis/${id}`), 0, [id]);
  const [dcs] = usePoll(() => get('/datacenters'), 0, []);
  const [hosts] = usePoll(() => get('/hosts'), 0, []);
  // The owner with what they hold of their quota, counted as the
  // Manager's checks count it.
  const ownerName = detail?.owner;
  const [owner] = usePoll(
    () => (ownerName ? get(`/users/${encodeURIComponent(ownerName)}`) : Promise.resolve(null)),
    0,
    [ownerName],
  );
  const [plan, planError] = usePoll(() => get(`/vis/${id}/plan${datacenter ? `?datacenter=${encodeURIComponent(datacenter)}` : ''}`), 0, [id, datacenter]);
  const [manual, setManual] = useState(null);
  const [message, setMessage] = useState('');
  const [reason, setReason] = useState('');
  if (!detail || !hosts || !dcs) return <main><p>Loading…</p></main>;
  const dc = datacenter || plan?.datacenter || dcs[0]?.name;
  const topology = { ...detail.topology, links: detail.topology.links || [] };
  const planned = plan ? Object.fromEntries(plan.vms.map((v) => [v.node, v.host])) : {};
  const placement = manual || planned;
  const dcHosts = hosts.filter((h) => h.datacenter === dc);

  const move = (node, host) => {
    const next = { ...placement, [node]: host };
    const h = hosts.find((x) => x.name === host);
    const problems = h ? fits(h, Object.keys(next).filter((k) => next[k] === host), topology) : ['unknown host'];
    if (problems.length) {
      setMessage(`${node} cannot go to ${host}: ${problems.join('; ')}`);
      setManual({ ...placement });
      return;
    }
    setMessage(`${node} moves to ${host} (manual placement; the Manager checks it again on accept).`);
    setManual(next);
  };

  const accept = async () => {
    try {
      await post(`/vis/${id}/accept`, { datacenter: dc, placement: manual });
      navigate(`/vis/${id}`);
    } catch (e) {
      setMessage(`Not accepted: ${e.message}`);
    }
  };
  const reject = async (e) => {
    e.preventDefault();
    try {
      await post(`/vis/${id}/reject`, { reason });
      navigate('/admin/queue');
    } catch (err) {
      setMessage(err.message);
    }
  };

  return (
    <main class="preview" data-testid="preview">
      <div class="heading">
        <h1>
          Review {detail.name} <span class={`state ${detail.state}`}>{detail.state}</span>
        </h1>
        <span>by {detail.owner}</span>
      </div>
      <div class="row">
        <label>
          Home datacenter{' '}
          <select value={dc} onChange={(e) => { setDatacenter(e.target.value); setManual(null); }}>
            {dcs.map((d) => <option>{d.name}</option>)}
          </select>
        </label>
        {plan && (
          <p class="facts" data-testid="plan-facts">
            cut <strong>{plan.cut_mbps} Mbit/s</strong> of {detail.summary.bandwidth_mbps} · {plan.admissible ? 'admissible' : 'NOT admissible'} ·{' '}
            {plan.optimal ? 'optimal' : `gap ${plan.gap == null ? '?' : `${Math.round(plan.gap * 100)}%`}`}
            {manual && ' · manual placement'}
          </p>
        )}
      </div>
      <p class="muted">Drag a VM onto another host to place it by hand; the Manager checks the map again when you accept.</p>
      {planError && <p class="error">{planError.message}</p>}
      {message && <p class="status" role="status">{message}</p>}
      <div class="split">
        <PlacementGraph topology={topology} placement={placement} hosts={dcHosts} onMove={move} testid="preview-graph" />
        <aside>
          <h2>Placement</h2>
          <table class="compact" data-testid="plan-vms">
            <thead><tr><th>VM</th><th>host</th><th>vCPU</th><th>RAM</th><th>disk</th></tr></thead>
            <tbody>
              {(plan?.vms || []).map((v) => (
                <tr><td>{v.node}</td><td>{placement[v.node]}</td><td>{v.vcpus}</td><td>{v.ram_mib}</td><td>{v.disk_mib}</td></tr>
              ))}
            </tbody>
          </table>
          {manual && <button type="button" onClick={() => setManual(null)}>Back to the automatic placement</button>}
          <h2>Address plan</h2>
          <table class="compact" data-testid="plan-addresses">
            <tbody>
              {(plan?.addresses.links || []).map((l) => <tr><td>{l.link}</td><td><code>{l.subnet}</code></td></tr>)}
              {(plan?.addresses.interfaces || []).map((a) => <tr><td>{a.node}/{a.interface}</td><td><code>{a.address}</code></td></tr>)}
              {(plan?.addresses.home_addresses || []).map((h) => <tr><td>{h.node}/{h.interface} (home)</td><td><code>{h.address}</code></td></tr>)}
            </tbody>
          </table>
          <h2>Quota of {detail.owner}</h2>
          {owner ? (
            <div data-testid="quota"><QuotaTable quota={owner.quota} usage={owner.usage} /></div>
          ) : <p class="muted">…</p>}
          <p class="muted">In use counts this VI and the owner's other VIs past their request (neither defined, rejected nor terminated), as the Manager's checks count them; designs count every VI not terminated.</p>
          <div class="actions">
            <button type="button" class="primary" onClick={accept} disabled={detail.state !== 'requested'}>Accept</button>
          </div>
          <form onSubmit={reject} class="row" aria-label="Reject">
            <input value={reason} onInput={(e) => setReason(e.target.value)} placeholder="reason" aria-label="Reason for rejecting" required />
            <button type="submit" class="danger" disabled={detail.state !== 'requested'}>Reject</button>
          </form>
        </aside>
      </div>
    </main>
  );
}

const Bar = ({ used, total, unit }) => (
  <span class="bar" title={`${used} of ${total} ${unit}`}>
    <meter min="0" max={total || 1} value={used} high={(total || 1) * 0.85} />
    <small>{used}/{total || '∞'} {unit}</small>
  </span>
);

// Each datacenter's Edge Service Switch: its Care-of Address, whether it
// answered the Manager's signed state request, its Mobility Binding Table's
// size and the addresses it delivers here for VIs away from home.
function Switches() {
  const [switches, error] = usePoll(() => get('/switches'), 5000, []);
  return (
    <section aria-labelledby="switches">
      <h2 id="switches">Edge Service Switches</h2>
      {error && <p class="error">{error.message}</p>}
      {switches && !switches.length && <p class="muted">No switch is registered.</p>}
      {switches?.length > 0 && (
        <table class="list" data-testid="switches">
          <thead><tr><th>datacenter</th><th>care-of</th><th>answers</th><th>bindings</th><th>visitors</th><th>control</th></tr></thead>
          <tbody>
            {switches.map((w) => (
              <tr>
                <td>{w.datacenter}</td>
                <td><code>{w.care_of}</code></td>
                <td><span class={`state ${w.reachable ? 'ready' : 'unreachable'}`}>{w.reachable ? 'yes' : 'no'}</span></td>
                <td>{w.bindings ?? '—'}</td>
                <td>{w.visitors ?? '—'}</td>
                <td><code>{w.url}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// A host's row: its name links to its own page.
function HostRows({ hosts }) {
  return (
    <tbody>
      {hosts.map((h) => (
        <tr>
          <td><a href={`/admin/hosts/${encodeURIComponent(h.name)}`}>{h.name}</a></td>
          <td><span class={`state ${h.state}`}>{h.state}</span></td>
          <td><Bar used={h.used_vcpus} total={h.cpus} unit="vCPU" /></td>
          <td><Bar used={h.used_ram_mib} total={h.ram_mib} unit="MiB" /></td>
          <td><Bar used={h.used_disk_mib} total={h.disk_mib} unit="MiB" /></td>
          <td><Bar used={h.used_slots} total={h.vm_slots} unit="" /></td>
          <td><Bar used={h.used_uplink_mbps} total={h.uplink_mbps} unit="Mbit/s" /></td>
          <td>{when(h.last_seen)}</td>
        </tr>
      ))}
    </tbody>
  );
}

const HOST_HEAD = (
  <thead><tr><th>host</th><th>state</th><th>CPU</th><th>RAM</th><th>disk</th><th>VM slots</th><th>uplink</th><th>last seen</th></tr></thead>
);

export function Hosts() {
  const [hosts, error] = usePoll(() => get('/hosts'), 5000, []);
  const [dcs] = usePoll(() => get('/datacenters'), 0, []);
  return (
    <main>
      <h1>Hosts and datacenters</h1>
      {error && <p class="error">{error.message}</p>}
      {(dcs || []).map((dc) => (
        <section>
          <h2><a href={`/admin/datacenters/${encodeURIComponent(dc.name)}`}>{dc.name}</a></h2>
          <p class="muted">Home pools {dc.home_pools.join(', ')}{dc.public_gateway && ` · gateway ${dc.public_gateway}`}</p>
          <table class="list" data-testid={`hosts-${dc.name}`}>
            {HOST_HEAD}
            <HostRows hosts={(hosts || []).filter((h) => h.datacenter === dc.name)} />
          </table>
        </section>
      ))}
      <Switches />
    </main>
  );
}

// States in which a VI's VMs hold room on their hosts.
const PLACED = COUNTED.filter((s) => s !== 'requested');

// Facts as a two-column table: [label, value] pairs.
const Facts = ({ rows, testid }) => (
  <table class="compact facts-table" data-testid={testid}>
    <tbody>
      {rows.map(([k, v]) => <tr><th scope="row">{k}</th><td>{v}</td></tr>)}
    </tbody>
  </table>
);

const Missing = ({ what, name, back, backText }) => (
  <main>
    <h1>Not found</h1>
    <p role="alert">No {what} {name}. <a href={back}>{backText}</a></p>
  </main>
);

// One host (`GET /api/v1/hosts/{name}`): its capacity and use, its state,
// and the VMs placed on it (found through the VIs that run in its
// datacenter or are moving: each VI's placement, read once).
export function HostPage({ name }) {
  const path = `/hosts/${encodeURIComponent(name)}`;
  const [h, error] = usePoll(() => get(path), 5000, [name]);
  const [placed] = usePoll(async () => {
    const dc = (await get(path)).datacenter;
    const vis = (await get('/vis')).filter((v) => PLACED.includes(v.state) && (v.location === dc || v.state === 'migrating'));
    const details = await Promise.all(vis.map((v) => get(`/vis/${v.id}`).catch(() => null)));
    return details
      .filter(Boolean)
      .flatMap((d) => d.vms.filter((vm) => vm.host === name || vm.moving_to === name).map((vm) => ({ ...vm, vi: d })));
  }, 0, [name]);
  if (error?.status === 404) return <Missing what="host" name={name} back="/admin/hosts" backText="All hosts" />;
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!h) return <main><p>Loading…</p></main>;
  return (
    <main data-testid="host-page">
      <div class="heading">
        <h1>Host {h.name} <span class={`state ${h.state}`}>{h.state}</span></h1>
        <a href="/admin/hosts">All hosts</a>
      </div>
      <Facts
        testid="host-facts"
        rows={[
          ['datacenter', <a href={`/admin/datacenters/${encodeURIComponent(h.datacenter)}`}>{h.datacenter}</a>],
          ['CPU', <Bar used={h.used_vcpus} total={h.cpus} unit="vCPU" />],
          ['RAM', <Bar used={h.used_ram_mib} total={h.ram_mib} unit="MiB" />],
          ['disk', <Bar used={h.used_disk_mib} total={h.disk_mib} unit="MiB" />],
          ['VM slots', <Bar used={h.used_slots} total={h.vm_slots} unit="" />],
          ['uplink', <Bar used={h.used_uplink_mbps} total={h.uplink_mbps} unit="Mbit/s" />],
          ['state', h.state],
          ['last seen', when(h.last_seen)],
          ['Agent', <code>{h.agent_url}</code>],
          ['id', <code>{h.id}</code>],
        ]}
      />
      <h2>VMs on {h.name}</h2>
      {!placed && <p class="muted">Looking through the VIs…</p>}
      {placed && !placed.length && <p>No VM is placed on {h.name}.</p>}
      {placed?.length > 0 && (
        <table class="list" data-testid="host-vms">
          <thead><tr><th>VM</th><th>VI</th><th>owner</th><th>VI state</th><th>vCPU</th><th>RAM</th><th>disk</th><th /></tr></thead>
          <tbody>
            {placed.map((vm) => (
              <tr>
                <td>{vm.node}</td>
                <td><a href={`/vis/${vm.vi.id}`}>{vm.vi.name}</a></td>
                <td>{vm.vi.owner}</td>
                <td><span class={`state ${vm.vi.state}`}>{vm.vi.state}</span></td>
                <td>{vm.vcpus}</td>
                <td>{vm.ram_mib} MiB</td>
                <td>{vm.disk_mib} MiB</td>
                <td>{vm.moving_to === name ? `moving here from ${vm.host}` : vm.moving_to ? `moving to ${vm.moving_to}` : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}

// One datacenter: its pools and public gateway, its Edge Service Switch,
// its hosts and their use, and the VIs running there.
export function DatacenterPage({ name }) {
  const [dcs, error] = usePoll(() => get('/datacenters'), 0, [name]);
  const [hosts] = usePoll(() => get('/hosts'), 5000, []);
  const [switches] = usePoll(() => get('/switches'), 5000, []);
  const [vis] = usePoll(() => get('/vis'), 5000, []);
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!dcs) return <main><p>Loading…</p></main>;
  const dc = dcs.find((d) => d.name === name);
  if (!dc) return <Missing what="datacenter" name={name} back="/admin/hosts" backText="All datacenters" />;
  const mine = (hosts || []).filter((h) => h.datacenter === name);
  const sum = (k) => mine.reduce((a, h) => a + h[k], 0);
  const w = (switches || []).find((x) => x.datacenter === name);
  const here = (vis || []).filter((v) => v.location === name && PLACED.includes(v.state));
  return (
    <main data-testid="datacenter-page">
      <div class="heading">
        <h1>Datacenter {dc.name}</h1>
        <a href="/admin/hosts">All hosts and datacenters</a>
      </div>
      <Facts
        testid="datacenter-facts"
        rows={[
          ['home pools', dc.home_pools.map((p) => <code>{p} </code>)],
          ['public gateway', dc.public_gateway ? <code>{dc.public_gateway}</code> : '—'],
          ['hosts', mine.length],
          ['CPU', <Bar used={sum('used_vcpus')} total={sum('cpus')} unit="vCPU" />],
          ['RAM', <Bar used={sum('used_ram_mib')} total={sum('ram_mib')} unit="MiB" />],
          ['disk', <Bar used={sum('used_disk_mib')} total={sum('disk_mib')} unit="MiB" />],
          ['VM slots', <Bar used={sum('used_slots')} total={sum('vm_slots')} unit="" />],
          ['uplinks', <Bar used={sum('used_uplink_mbps')} total={sum('uplink_mbps')} unit="Mbit/s" />],
        ]}
      />
      <h2>Edge Service Switch</h2>
      {!switches && <p class="muted">…</p>}
      {switches && !w && <p class="muted">No switch is registered for {name}.</p>}
      {w && (
        <Facts
          testid="datacenter-switch"
          rows={[
            ['care-of address', <code>{w.care_of}</code>],
            ['answers', <span class={`state ${w.reachable ? 'ready' : 'unreachable'}`}>{w.reachable ? 'yes' : 'no'}</span>],
            ['Mobility Bindings', w.bindings ?? '—'],
            ['visitors delivered', w.visitors ?? '—'],
            ['control', <code>{w.url}</code>],
            ['port', <code>{w.port}</code>],
            ['via', w.via ? <code>{w.via}</code> : '—'],
            ['registered', when(w.updated_at)],
          ]}
        />
      )}
      <h2>Hosts</h2>
      <table class="list" data-testid={`hosts-${name}`}>
        {HOST_HEAD}
        <HostRows hosts={mine} />
      </table>
      <h2>VIs running here</h2>
      {here.length ? (
        <ul data-testid="datacenter-vis">
          {here.map((v) => (
            <li><a href={`/vis/${v.id}`}>{v.name}</a> ({v.owner}, {v.state}{v.home_datacenter && v.home_datacenter !== name ? `, home ${v.home_datacenter}` : ''})</li>
          ))}
        </ul>
      ) : <p class="muted">None.</p>}
    </main>
  );
}

export function Templates({ user }) {
  const [templates, error, setTemplates] = usePoll(() => get('/templates'), 0, []);
  const [message, setMessage] = useState('');
  const [busy, setBusy] = useState(false);
  const importImage = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const query = new URLSearchParams({ name: f.get('name') });
    if (f.get('os_name')) query.set('os_name', f.get('os_name'));
    if (f.get('public')) query.set('visibility', 'public');
    setBusy(true);
    try {
      const t = await upload(`/templates/import?${query}`, f.get('image'));
      e.target.reset();
      setMessage(`Imported ${t.name} (${t.format}, ${t.size_mib} MiB).`);
      setTemplates(await get('/templates'));
    } catch (err) {
      setMessage(err.message);
    } finally {
      setBusy(false);
    }
  };
  const setVisibility = async (t, visibility) => {
    try {
      await post(`/templates/${t.id}/visibility`, { visibility });
      setTemplates(await get('/templates'));
    } catch (e) {
      setMessage(e.message);
    }
  };
  return (
    <main>
      <h1>Template repository</h1>
      {error && <p class="error">{error.message}</p>}
      {message && <p class="status" role="status">{message}</p>}
      <table class="list" data-testid="templates">
        <thead><tr><th>name</th><th>OS</th><th>owner</th><th>visibility</th><th>vCPU</th><th>RAM</th><th>disk</th><th>image</th><th>software</th><th /></tr></thead>
        <tbody>
          {(templates || []).map((t) => (
            <tr>
              <td><a href={`/templates/${t.id}`}>{t.name}</a></td><td>{t.os_name}</td><td>{t.owner}</td><td>{t.visibility}</td><td>{t.vcpus}</td><td>{t.ram_mib} MiB</td><td>{t.disk_mib} MiB</td>
              <td>{t.format} · {t.size_mib} MiB</td>
              <td>{t.software.map((s) => s.name).join(', ')}</td>
              <td>
                {user.role === 'admin' && (
                  <button type="button" class="link" onClick={() => setVisibility(t, t.visibility === 'public' ? 'private' : 'public')}>
                    {t.visibility === 'public' ? 'make private' : 'publish'}
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="muted">A running VM becomes a new template from its VI's page (Save as template).</p>
      <form class="create-user" onSubmit={importImage} aria-label="Import an image">
        <h2>Import an image (qcow2 or raw)</h2>
        <input name="image" type="file" aria-label="Image file" required />
        <input name="name" placeholder="name" aria-label="Template name" required />
        <input name="os_name" placeholder="OS, e.g. Debian 12" aria-label="OS" />
        {user.role === 'admin' && (
          <label>
            <input name="public" type="checkbox" /> public
          </label>
        )}
        <button type="submit" disabled={busy}>{busy ? 'Uploading…' : 'Import'}</button>
      </form>
    </main>
  );
}


// One template (`GET /api/v1/templates/{id}`): every field, its software,
// and (administrators) publish or make private.
export function TemplatePage({ id, user }) {
  const [t, error, setTemplate] = usePoll(() => get(`/templates/${id}`), 0, [id]);
  const [message, setMessage] = useState('');
  if (error?.status === 404) return <Missing what="template" name={id} back="/templates" backText="The template repository" />;
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!t) return <main><p>Loading…</p></main>;
  const setVisibility = async (visibility) => {
    setMessage('');
    try {
      setTemplate(await post(`/templates/${t.id}/visibility`, { visibility }));
      setMessage(visibility === 'public' ? `${t.name} is public.` : `${t.name} is private.`);
    } catch (e) {
      setMessage(e.message);
    }
  };
  return (
    <main data-testid="template-page">
      <div class="heading">
        <h1>Template {t.name} <span class="state">{t.visibility}</span></h1>
        <a href="/templates">The template repository</a>
      </div>
      {message && <p class="status" role="status">{message}</p>}
      <Facts
        testid="template-facts"
        rows={[
          ['name', t.name],
          ['owner', t.owner],
          ['visibility', t.visibility],
          ['OS', t.os_name || '—'],
          ['vCPUs', t.vcpus],
          ['RAM', `${t.ram_mib} MiB`],
          ['disk', `${t.disk_mib} MiB`],
          ['image', `${t.format} · ${t.size_mib} MiB`],
          ['id', <code>{t.id}</code>],
        ]}
      />
      <h2>Software</h2>
      {t.software.length ? (
        <table class="compact" data-testid="template-software">
          <thead><tr><th>name</th><th>kind</th><th>version</th></tr></thead>
          <tbody>{t.software.map((sw) => <tr><td>{sw.name}</td><td>{sw.kind}</td><td>{sw.version}</td></tr>)}</tbody>
        </table>
      ) : <p class="muted">Not known (not checked).</p>}
      {user.role === 'admin' && (
        <div class="actions">
          <button type="button" onClick={() => setVisibility(t.visibility === 'public' ? 'private' : 'public')}>
            {t.visibility === 'public' ? 'Make private' : 'Publish'}
          </button>
        </div>
      )}
    </main>
  );
}

// A quota's figures, in the API's order, with their labels.
const QUOTA = [
  ['vms', 'VMs'],
  ['vcpus', 'vCPUs'],
  ['ram_mib', 'RAM (MiB)'],
  ['public_addresses', 'public addresses'],
  ['designs', 'designs'],
  ['design_mib', 'design text (MiB)'],
  ['private_addresses', 'private addresses'],
];

// Design text in use, in MiB as its quota is given: to two places (the
// API's `design_mib` is rounded up, as the quota check counts it, so a
// small design would read as a whole MiB), the bytes in the title.
const designText = (bytes) => {
  const mib = bytes / 1048576;
  return <span title={`${bytes} bytes`}>{bytes && mib < 0.01 ? '< 0.01' : Number(mib.toFixed(2))}</span>;
};

// A quota beside what the user holds of it (the API's `usage`, as the
// quota checks count it).
export function QuotaTable({ quota, usage }) {
  const held = (k) => (k === 'design_mib' ? designText(usage.design_bytes) : usage[k]);
  return (
    <table class="compact quota" data-testid="user-quota">
      <thead><tr><th /><th>quota</th>{usage && <th>in use</th>}</tr></thead>
      <tbody>
        {QUOTA.map(([k, label]) => (
          <tr data-quota={k}><th scope="row">{label}</th><td>{quota[k]}</td>{usage && <td>{held(k)}</td>}</tr>
        ))}
      </tbody>
    </table>
  );
}

export function Users() {
  const [users, error, setUsers] = usePoll(() => get('/users'), 0, []);
  const [message, setMessage] = useState('');
  const [failed, setFailed] = useState(false);
  const refresh = async () => setUsers(await get('/users'));
  const say = (text, bad = false) => {
    setMessage(text);
    setFailed(bad);
  };
  const create = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    // A quota when any figure is given; the Manager's defaults otherwise.
    const given = QUOTA.filter(([k]) => f.get(k) !== '');
    const quota = given.length ? Object.fromEntries(given.map(([k]) => [k, Number(f.get(k))])) : null;
    try {
      await post('/users', { name: f.get('name'), password: f.get('password'), role: f.get('role'), quota });
      e.target.reset();
      say(`Created ${f.get('name')}.`);
      refresh();
    } catch (err) {
      say(`Not created: ${err.message}`, true);
    }
  };
  const toggle = async (u) => {
    try {
      await api('POST', `/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`, {});
      say(`${u.name} is ${u.disabled ? 'enabled' : 'disabled'}.`);
      refresh();
    } catch (err) {
      say(err.message, true);
    }
  };
  return (
    <main>
      <h1>Users and quotas</h1>
      {error && <p class="error">{error.message}</p>}
      {message && <p class={failed ? 'error' : 'status'} role={failed ? 'alert' : 'status'}>{message}</p>}
      <table class="list" data-testid="users">
        <thead>
          <tr><th>name</th><th>role</th><th>account</th>{QUOTA.map(([, label]) => <th>{label}</th>)}<th /></tr>
        </thead>
        <tbody>
          {(users || []).map((u) => (
            <tr class={u.disabled ? 'disabled' : ''}>
              <td><a href={`/admin/users/${encodeURIComponent(u.name)}`}>{u.name}</a></td>
              <td>{u.role}</td>
              <td>{u.disabled ? 'disabled' : 'active'}</td>
              {QUOTA.map(([k]) => <td>{u.quota[k]}</td>)}
              <td><button type="button" class="link" onClick={() => toggle(u)} aria-label={`${u.disabled ? 'Enable' : 'Disable'} ${u.name}`}>{u.disabled ? 'enable' : 'disable'}</button></td>
            </tr>
          ))}
        </tbody>
      </table>
      <form class="create-user" onSubmit={create} aria-label="New user">
        <h2>New user</h2>
        <input name="name" placeholder="name" aria-label="Name" required />
        <input name="password" type="password" placeholder="password (8 or more)" aria-label="Password" autocomplete="new-password" required />
        <select name="role" aria-label="Role"><option value="user">user</option><option value="admin">admin</option></select>
        {QUOTA.map(([k, label]) => <input name={k} type="number" min="0" placeholder={label} aria-label={`Quota ${label}`} size="8" />)}
        <button type="submit">Create</button>
        <p class="muted">Leave the quota empty for the Manager's defaults; VMs, vCPUs, RAM and public addresses go together.</p>
      </form>
    </main>
  );
}

// One user (`GET /api/v1/users/{name}`): role, whether disabled, the quota
// and what they hold of it, their VIs; the quota edited as a whole
// (`PUT /api/v1/users/{id}/quota`).
export function UserPage({ name, me }) {
  const [u, error, setUser] = usePoll(() => get(`/users/${encodeURIComponent(name)}`), 5000, [name]);
  const [vis] = usePoll(() => get('/vis'), 5000, []);
  const [message, setMessage] = useState('');
  const [failed, setFailed] = useState(false);
  if (error?.status === 404) return <Missing what="user" name={name} back="/admin/users" backText="All users" />;
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!u) return <main><p>Loading…</p></main>;
  const say = (text, bad = false) => {
    setMessage(text);
    setFailed(bad);
  };
  const saveQuota = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const quota = Object.fromEntries(QUOTA.map(([k]) => [k, Number(f.get(k))]));
    try {
      // The answer carries no usage: what the user holds did not change.
      const updated = await api('PUT', `/users/${u.id}/quota`, quota);
      setUser({ ...updated, usage: u.usage });
      say(`The quota of ${u.name} is saved.`);
    } catch (err) {
      say(`Not saved: ${err.message}`, true);
    }
  };
  const toggle = async () => {
    try {
      const updated = await api('POST', `/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`, {});
      setUser({ ...updated, usage: u.usage });
      say(`${u.name} is ${updated.disabled ? 'disabled' : 'enabled'}.`);
    } catch (err) {
      say(err.message, true);
    }
  };
  const theirs = (vis || []).filter((v) => v.owner === u.name);
  return (
    <main data-testid="user-page">
      <div class="heading">
        <h1>User {u.name} <span class={`state ${u.disabled ? 'unreachable' : 'ready'}`}>{u.disabled ? 'disabled' : 'active'}</span></h1>
        <a href="/admin/users">All users</a>
      </div>
      {message && <p class={failed ? 'error' : 'status'} role={failed ? 'alert' : 'status'}>{message}</p>}
      <Facts rows={[['role', u.role], ['id', <code>{u.id}</code>]]} />
      <div class="actions">
        <button type="button" onClick={toggle} disabled={u.id === me.id} title={u.id === me.id ? 'Administrators cannot disable themselves' : ''}>
          {u.disabled ? 'Enable' : 'Disable'}
        </button>
      </div>
      <h2>Quota</h2>
      <QuotaTable quota={u.quota} usage={u.usage} />
      <form class="quota-form" onSubmit={saveQuota} aria-label={`Quota of ${u.name}`} key={JSON.stringify(u.quota)}>
        {QUOTA.map(([k, label]) => (
          <label>
            {label} <input name={k} type="number" step="1" defaultValue={u.quota[k]} required aria-label={`Quota ${label}`} />
          </label>
        ))}
        <button type="submit" class="primary">Save quota</button>
      </form>
      <p class="muted">What the user holds already stays, even above a lower quota; only new designs and requests are held to it.</p>
      <h2>Virtual Infrastructures</h2>
      {theirs.length ? (
        <ul data-testid="user-vis">
          {theirs.map((v) => <li><a href={`/vis/${v.id}`}>{v.name}</a> ({v.state})</li>)}
        </ul>
      ) : <p class="muted">None.</p>}
    </main>
  );
}

// The signed-in user's own account: role and quota, and what they hold
// (`GET /api/v1/me` carries it).
export function Account() {
  const [me, error] = usePoll(() => get('/me'), 5000, []);
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!me) return <main><p>Loading…</p></main>;
  return (
    <main data-testid="account">
      <h1>Your account: {me.name}</h1>
      <Facts rows={[['role', me.role]]} />
      <h2>Your quota</h2>
      <QuotaTable quota={me.quota} usage={me.usage} />
      <p class="muted">An administrator sets it; ask one for more.</p>
    </main>
  );
}
