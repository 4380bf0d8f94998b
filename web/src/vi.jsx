// Watching VIs: the list, and one VI with its topology on its placement
// coloured by VM state, its addresses and Home Addresses, its events, live
// job progress (server-sent events) and the actions its state allows.
import { useEffect, useState } from 'preact/hooks';
import { get, hasRoute, followJob, post } from './api.js';
import { PlacementGraph } from './placement.jsx';
import { navigate, usePoll, when } from './router.js';

const ACTIVE = ['accepted', 'deploying', 'suspending', 'resuming', 'migrating', 'terminating'];

export function ViList({ user }) {
  const [vis, error] = usePoll(() => get('/vis'), 3000, []);
  return (
    <main>
      <div class="heading">
        <h1>Virtual Infrastructures</h1>
        <a class="button primary" href="/design">New design</a>
      </div>
      {error && <p class="error">{error.message}</p>}
      {vis && !vis.length && <p>No VIs yet. <a href="/design">Design one</a>, or start from the catalogue.</p>}
      {vis && vis.length > 0 && (
        <table class="list" data-testid="vi-list">
          <thead>
            <tr>
              <th>name</th>
              {user.role === 'admin' && <th>owner</th>}
              <th>state</th><th>VMs</th><th>links</th><th>entry points</th><th>vCPU</th><th>RAM</th><th>home</th><th>updated</th>
            </tr>
          </thead>
          <tbody>
            {vis.map((vi) => (
              <tr>
                <td><a href={`/vis/${vi.id}`}>{vi.name}</a></td>
                {user.role === 'admin' && <td>{vi.owner}</td>}
                <td><span class={`state ${vi.state}`}>{vi.state}</span></td>
                <td>{vi.summary.nodes}</td>
                <td>{vi.summary.links}</td>
                <td>{vi.summary.entry_points}</td>
                <td>{vi.summary.vcpus}</td>
                <td>{vi.summary.ram_mib} MiB</td>
                <td>{vi.home_datacenter || ''}</td>
                <td>{when(vi.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}

function JobProgress({ job }) {
  const [live, setLive] = useState(job);
  useEffect(() => {
    setLive(job);
    if (!['running', 'rolling_back'].includes(job.state)) return undefined;
    return followJob(job.id, setLive);
  }, [job.id]);
  return (
    <div class="job" data-testid="job">
      <span>{live.kind}</span>
      <progress max="100" value={live.percent} aria-label={`${live.kind} progress`} />
      <span>{live.percent}% · {live.state} · {live.step_name}</span>
      {live.error && <span class="error">{live.error}</span>}
    </div>
  );
}

function Console({ vi, node, onClose }) {
  const [text, setText] = useState('');
  const [error, setError] = useState('');
  const [line, setLine] = useState('');
  useEffect(() => {
    let live = true;
    let timer;
    const read = async () => {
      try {
        const c = await get(`/vis/${vi}/vms/${encodeURIComponent(node)}/console?bytes=16384`);
        if (live) setText(c.text);
      } catch (e) {
        if (live) setError(e.message);
      }
      if (live) timer = setTimeout(read, 2000);
    };
    read();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [vi, node]);
  const send = async (e) => {
    e.preventDefault();
    try {
      await post(`/vis/${vi}/vms/${encodeURIComponent(node)}/console`, { input: `${line}\n` });
      setLine('');
    } catch (err) {
      setError(err.message);
    }
  };
  return (
    <section class="console" aria-label={`Console of ${node}`}>
      <div class="heading">
        <h2>Console of {node}</h2>
        <button type="button" onClick={onClose}>Close</button>
      </div>
      {error && <p class="error">{error}</p>}
      <pre tabindex="0">{text}</pre>
      <form onSubmit={send}>
        <input aria-label="Type a line" value={line} onInput={(e) => setLine(e.target.value)} />
        <button type="submit">Send</button>
      </form>
    </section>
  );
}

export function ViWatch({ id, user }) {
  const [detail, error, setDetail] = usePoll(() => get(`/vis/${id}`), 2500, [id]);
  const running = detail && ['running', 'deploying', 'suspending', 'resuming'].includes(detail.state);
  const [vms] = usePoll(() => (running ? get(`/vis/${id}/vms`) : Promise.resolve([])), running ? 2500 : 0, [id, running]);
  const [hosts] = usePoll(() => (user.role === 'admin' ? get('/hosts') : Promise.resolve(null)), 0, [user.role]);
  const [migrate, setMigrate] = useState(false);
  const [message, setMessage] = useState('');
  const [consoleNode, setConsoleNode] = useState(null);
  const [selected, setSelected] = useState('');
  useEffect(() => {
    hasRoute('post', '/api/v1/vis/{id}/migrate').then(setMigrate);
  }, []);
  if (error) return <main><p class="error">{error.message}</p></main>;
  if (!detail) return <main><p>Loading…</p></main>;

  const act = async (action, body) => {
    setMessage('');
    try {
      setDetail(await post(`/vis/${id}/${action}`, body));
    } catch (e) {
      setMessage(e.message);
    }
  };
  const saveTemplate = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    try {
      await post(`/vis/${id}/templates`, { node: form.get('node'), name: form.get('name') });
      setMessage(`Saving ${form.get('node')} as template ${form.get('name')}; it appears under Templates when done.`);
    } catch (err) {
      setMessage(err.message);
    }
  };
  const topology = { ...detail.topology, links: detail.topology.links || [] };
  const placement = Object.fromEntries(detail.vms.map((v) => [v.node, v.host]));
  const states = {};
  for (const n of topology.nodes) if (placement[n.node ?? n.id]) states[n.id] = detail.state === 'running' ? 'running' : 'planned';
  for (const v of vms || []) states[v.node] = v.state;
  const labels = {};
  for (const a of detail.addresses?.interfaces || []) labels[a.node] = [labels[a.node], `${a.interface} ${a.address}`].filter(Boolean).join('\n');
  for (const h of detail.addresses?.home_addresses || []) labels[h.node] = [labels[h.node], `home ${h.address}`].filter(Boolean).join('\n');
  const hostList = hosts
    ? hosts.filter((h) => Object.values(placement).includes(h.name))
    : [...new Set(Object.values(placement))].map((name) => ({ name, datacenter: detail.home_datacenter || 'datacenter' }));
  const jobs = detail.jobs || [];
  const lastJob = jobs[jobs.length - 1];
  const s = detail.state;
  const owner = user.role === 'admin' || detail.owner === user.name;

  return (
    <main class="watch">
      <div class="heading">
        <h1>
          {detail.name} <span class={`state ${s}`} data-testid="vi-state">{s}</span>
        </h1>
        <div class="actions" role="toolbar" aria-label="Actions">
          {s === 'defined' && owner && <a class="button" href={`/design/${id}`}>Edit design</a>}
          {s === 'defined' && owner && <button type="button" class="primary" onClick={() => act('request')}>Request</button>}
          {s === 'requested' && owner && <button type="button" onClick={() => act('withdraw')}>Withdraw</button>}
          {s === 'requested' && user.role === 'admin' && <a class="button primary" href={`/admin/queue/${id}`}>Review</a>}
          {s === 'rejected' && owner && <button type="button" onClick={() => act('revise')}>Revise</button>}
          {s === 'running' && <button type="button" onClick={() => act('suspend')}>Suspend</button>}
          {s === 'suspended' && <button type="button" onClick={() => act('resume')}>Resume</button>}
          {s === 'running' && migrate && <button type="button" onClick={() => act('migrate', {})}>Migrate</button>}
          {['running', 'suspended', 'failed'].includes(s) && (
            <button type="button" class="danger" onClick={() => confirm(`Terminate ${detail.name}? Its VMs and addresses are released.`) && act('terminate')}>
              Terminate
            </button>
          )}
        </div>
      </div>
      {message && <p class="status" role="status">{message}</p>}
      {detail.reject_reason && <p class="error">Rejected: {detail.reject_reason}</p>}
      {lastJob && <JobProgress job={lastJob} />}
      <p class="muted">
        {detail.summary.nodes} VMs · {detail.summary.links} links · {detail.summary.entry_points} entry points · {detail.summary.vcpus} vCPU ·{' '}
        {detail.summary.ram_mib} MiB RAM · {detail.summary.bandwidth_mbps} Mbit/s{detail.home_datacenter && ` · home ${detail.home_datacenter}`}
      </p>
      <div class="split">
        <PlacementGraph topology={topology} placement={placement} hosts={hostList} states={states} labels={labels} onSelect={setSelected} testid="vi-graph" />
        <aside>
          <h2>VMs</h2>
          <table class="compact" data-testid="vm-table">
            <thead><tr><th>VM</th><th>host</th><th>state</th><th /></tr></thead>
            <tbody>
              {topology.nodes.map((n) => (
                <tr class={selected === n.id ? 'selected' : ''}>
                  <td>{n.id}</td>
                  <td>{placement[n.id] || '—'}</td>
                  <td>{states[n.id] || s}</td>
                  <td>
                    {running && (
                      <button type="button" class="link" onClick={() => setConsoleNode(n.id)}>console</button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {detail.addresses && (
            <>
              <h2>Addresses</h2>
              <table class="compact" data-testid="addresses">
                <thead><tr><th>VM</th><th>if</th><th>link</th><th>address</th></tr></thead>
                <tbody>
                  {detail.addresses.interfaces.map((a) => (
                    <tr><td>{a.node}</td><td>{a.interface}</td><td>{a.link}</td><td><code>{a.address}</code></td></tr>
                  ))}
                </tbody>
              </table>
              <h2>Home Addresses</h2>
              <table class="compact" data-testid="home-addresses">
                <tbody>
                  {detail.addresses.home_addresses.map((h) => (
                    <tr><td>{h.node}/{h.interface}</td><td><code>{h.address}</code></td><td>{h.datacenter}</td></tr>
                  ))}
                </tbody>
              </table>
              <h2>Links</h2>
              <table class="compact">
                <tbody>
                  {detail.addresses.links.map((l) => (
                    <tr><td>{l.link}</td><td><code>{l.subnet}</code></td><td>{l.gateway || ''}</td></tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
          {s === 'running' && owner && (
            <form class="row" onSubmit={saveTemplate} aria-label="Save a VM as a template">
              <select name="node" aria-label="VM">{topology.nodes.map((n) => <option>{n.id}</option>)}</select>
              <input name="name" placeholder="template name" aria-label="Template name" required />
              <button type="submit">Save as template</button>
            </form>
          )}
        </aside>
      </div>
      {consoleNode && <Console vi={id} node={consoleNode} onClose={() => setConsoleNode(null)} />}
      <h2>Events</h2>
      <table class="compact" data-testid="events">
        <thead><tr><th>when</th><th>from</th><th>to</th><th>by</th><th>reason</th></tr></thead>
        <tbody>
          {[...detail.events].reverse().map((e) => (
            <tr><td>{when(e.at)}</td><td>{e.from}</td><td>{e.to}</td><td>{e.actor}</td><td>{e.reason || ''}</td></tr>
          ))}
        </tbody>
      </table>
      {ACTIVE.includes(s) && <p class="muted">Refreshing while the VI is {s}…</p>}
      <p><button type="button" class="link" onClick={() => navigate('/vis')}>All VIs</button></p>
    </main>
  );
}
