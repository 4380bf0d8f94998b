// Administration: the approval queue and its plan preview (placement on
// hosts, address plan, cut and bandwidth, quota impact) with manual
// placement by dragging; the owners' migration requests beside it; hosts,
// datacenters and their Edge Service Switches, and their use; templates;
// users and quotas.
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
  const [users] = usePoll(() => get('/users'), 0, []);
  const [vis] = usePoll(() => get('/vis'), 0, []);
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

  const owner = users?.find((u) => u.name === detail.owner);
  const held = (vis || []).filter((v) => v.owner === detail.owner && COUNTED.includes(v.state));
  const use = held.reduce(
    (a, v) => ({ vms: a.vms + v.summary.nodes, vcpus: a.vcpus + v.summary.vcpus, ram: a.ram + v.summary.ram_mib, pub: a.pub + v.summary.entry_points }),
    { vms: 0, vcpus: 0, ram: 0, pub: 0 },
  );

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
            <table class="compact" data-testid="quota">
              <tbody>
                <tr><td>VMs</td><td>{use.vms} / {owner.quota.vms}</td></tr>
                <tr><td>vCPUs</td><td>{use.vcpus} / {owner.quota.vcpus}</td></tr>
                <tr><td>RAM</td><td>{use.ram} / {owner.quota.ram_mib} MiB</td></tr>
                <tr><td>public addresses</td><td>{use.pub} / {owner.quota.public_addresses}</td></tr>
              </tbody>
            </table>
          ) : <p class="muted">…</p>}
          <p class="muted">Counts this VI and the owner's other requested or running VIs.</p>
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

export function Hosts() {
  const [hosts, error] = usePoll(() => get('/hosts'), 5000, []);
  const [dcs] = usePoll(() => get('/datacenters'), 0, []);
  return (
    <main>
      <h1>Hosts and datacenters</h1>
      {error && <p class="error">{error.message}</p>}
      {(dcs || []).map((dc) => (
        <section>
          <h2>{dc.name}</h2>
          <p class="muted">Home pools {dc.home_pools.join(', ')}{dc.public_gateway && ` · gateway ${dc.public_gateway}`}</p>
          <table class="list" data-testid={`hosts-${dc.name}`}>
            <thead><tr><th>host</th><th>state</th><th>CPU</th><th>RAM</th><th>disk</th><th>VM slots</th><th>uplink</th><th>last seen</th></tr></thead>
            <tbody>
              {(hosts || []).filter((h) => h.datacenter === dc.name).map((h) => (
                <tr>
                  <td>{h.name}</td>
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
          </table>
        </section>
      ))}
      <Switches />
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
              <td>{t.name}</td><td>{t.os_name}</td><td>{t.owner}</td><td>{t.visibility}</td><td>{t.vcpus}</td><td>{t.ram_mib} MiB</td><td>{t.disk_mib} MiB</td>
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

export function Users() {
  const [users, error, setUsers] = usePoll(() => get('/users'), 0, []);
  const [message, setMessage] = useState('');
  const refresh = async () => setUsers(await get('/users'));
  const create = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const quota = ['vms', 'vcpus', 'ram_mib', 'public_addresses'].every((k) => f.get(k))
      ? { vms: Number(f.get('vms')), vcpus: Number(f.get('vcpus')), ram_mib: Number(f.get('ram_mib')), public_addresses: Number(f.get('public_addresses')) }
      : null;
    try {
      await post('/users', { name: f.get('name'), password: f.get('password'), role: f.get('role'), quota });
      e.target.reset();
      setMessage(`Created ${f.get('name')}.`);
      refresh();
    } catch (err) {
      setMessage(err.message);
    }
  };
  const toggle = async (u) => {
    try {
      await api('POST', `/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`, {});
      refresh();
    } catch (err) {
      setMessage(err.message);
    }
  };
  return (
    <main>
      <h1>Users and quotas</h1>
      {error && <p class="error">{error.message}</p>}
      {message && <p class="status" role="status">{message}</p>}
      <table class="list" data-testid="users">
        <thead><tr><th>name</th><th>role</th><th>VMs</th><th>vCPU</th><th>RAM</th><th>public addresses</th><th>designs</th><th /></tr></thead>
        <tbody>
          {(users || []).map((u) => (
            <tr class={u.disabled ? 'disabled' : ''}>
              <td>{u.name}</td><td>{u.role}</td><td>{u.quota.vms}</td><td>{u.quota.vcpus}</td><td>{u.quota.ram_mib} MiB</td><td>{u.quota.public_addresses}</td><td>{u.quota.designs}</td>
              <td><button type="button" class="link" onClick={() => toggle(u)}>{u.disabled ? 'enable' : 'disable'}</button></td>
            </tr>
          ))}
        </tbody>
      </table>
      <form class="create-user" onSubmit={create} aria-label="New user">
        <h2>New user</h2>
        <input name="name" placeholder="name" aria-label="Name" required />
        <input name="password" type="password" placeholder="password" aria-label="Password" autocomplete="new-password" required />
        <select name="role" aria-label="Role"><option value="user">user</option><option value="admin">admin</option></select>
        <input name="vms" type="number" placeholder="VMs" aria-label="Quota VMs" />
        <input name="vcpus" type="number" placeholder="vCPUs" aria-label="Quota vCPUs" />
        <input name="ram_mib" type="number" placeholder="RAM MiB" aria-label="Quota RAM" />
        <input name="public_addresses" type="number" placeholder="public addr." aria-label="Quota public addresses" />
        <button type="submit">Create</button>
      </form>
    </main>
  );
}
