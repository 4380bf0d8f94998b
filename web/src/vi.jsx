// Watching VIs: the list, and one VI with its topology on its placement
// coloured by VM state, its addresses and Home Addresses, its events, live
// job progress (server-sent events, a migration's moves VM by VM) and the
// actions its state allows, migration to another datacenter among them.
import { useEffect, useState } from 'preact/hooks';
import { del, get, followJob, post } from './api.js';
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
                <td>
                  {vi.home_datacenter || ''}
                  {vi.location && vi.location !== vi.home_datacenter && (
                    <span class="state away" title={`runs in ${vi.location}, away from home`}> at {vi.location}</span>
                  )}
                </td>
                <td>{when(vi.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}

const mib = (bytes) => `${(bytes / 1048576).toFixed(1)} MiB`;
// A VM's name on its hosts is `nt-` and 12 hex digits of its VI's id, then
// its node's id.
const nodeOf = (vm) => vm.replace(/^nt-[0-9a-f]{12}-/, '');

// A migration's live moves, VM by VM: bytes sent and still to send (the
// remainder changes as the guest writes), and whether it runs on its new
// host.
function Moves({ moves }) {
  return (
    <table class="compact moves" data-testid="moves" aria-label="Moves">
      <thead><tr><th>VM</th><th>from</th><th>to</th><th>sent</th><th>remaining</th><th /><th>state</th></tr></thead>
      <tbody>
        {moves.map((m) => (
          <tr>
            <td>{nodeOf(m.vm)}</td>
            <td>{m.from}</td>
            <td>{m.to}</td>
            <td>{mib(m.bytes_done)}</td>
            <td>{mib(m.bytes_remaining)}</td>
            <td><progress max={m.bytes_done + m.bytes_remaining || 1} value={m.bytes_done} aria-label={`${nodeOf(m.vm)} sent`} /></td>
            <td>{m.done ? `on ${m.to}${m.total_ms != null ? ` after ${m.total_ms} ms` : ''}${m.downtime_ms != null ? `, paused ${m.downtime_ms} ms` : ''}` : 'copying'}</td>
          </tr>
        ))}
      </tbody>
    </table>
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
    <>
      <div class="job" data-testid="job">
        <span>{live.kind}</span>
        <progress max="100" value={live.percent} aria-label={`${live.kind} progress`} />
        <span>{live.percent}% · {live.state} · {live.step_name}</span>
        {live.error && <span class="error">{live.error}</span>}
      </div>
      {live.moves?.length > 0 && <Moves moves={live.moves} />}
    </>
  );
}

// What moving the VI would do: where each VM goes, the cut in the target
// datacenter, what the network between datacenters carries while the VI is
// split, what is copied and which Home Addresses get tunnelled.
function MigrationPlanView({ plan, detail }) {
  const p = plan.plan;
  const now = Object.fromEntries(detail.vms.map((v) => [v.node, v.host]));
  return (
    <>
      <p class="facts" data-testid="migration-facts">
        from {plan.from} to <strong>{p.datacenter}</strong> · cut <strong>{p.cut_mbps} Mbit/s</strong> · {p.admissible ? 'admissible' : 'NOT admissible'} ·{' '}
        {p.optimal ? 'optimal' : `gap ${p.gap == null ? '?' : `${Math.round(p.gap * 100)}%`}`} · <strong>{plan.split_mbps} Mbit/s</strong> between
        datacenters while split · copies up to <strong>{plan.copy_mib} MiB</strong>
      </p>
      <table class="compact" data-testid="migration-vms">
        <thead><tr><th>VM</th><th>now on</th><th>goes to</th><th>vCPU</th><th>RAM</th><th>disk</th></tr></thead>
        <tbody>
          {p.vms.map((v) => (
            <tr><td>{v.node}</td><td>{now[v.node] || '—'}</td><td>{v.host}</td><td>{v.vcpus}</td><td>{v.ram_mib} MiB</td><td>{v.disk_mib} MiB</td></tr>
          ))}
        </tbody>
      </table>
      <p data-testid="migration-bound">
        {plan.bound_addresses.length ? (
          <>
            Home Addresses tunnelled from {detail.home_datacenter} to {p.datacenter}:{' '}
            {plan.bound_addresses.map((a, i) => <>{i > 0 && ', '}<code>{a}</code></>)}
          </>
        ) : (
          `No Home Address is tunnelled: ${p.datacenter} is the VI's home, its addresses are delivered there directly.`
        )}
      </p>
    </>
  );
}

// Moving a running or suspended VI to another datacenter: the target, the
// plan, then the move at once (administrators) or a request that waits for
// an administrator (the owner), who grants or refuses it; the owner may
// withdraw it meanwhile.
function Migration({ detail, user, onMigrate, onCancel, onClose }) {
  const admin = user.role === 'admin';
  const request = detail.migration_request;
  const [dcs, dcsError] = usePoll(() => get('/datacenters'), 0, []);
  const [choice, setChoice] = useState('');
  const targets = (dcs || []).filter((d) => d.name !== detail.location);
  const to = request ? request.to : choice || targets[0]?.name || '';
  const [plan, planError] = usePoll(
    () => (to ? get(`/vis/${detail.id}/migrate/plan?to=${encodeURIComponent(to)}`) : Promise.resolve(null)),
    0,
    [detail.id, to],
  );
  const shown = plan && plan.plan.datacenter === to ? plan : null;
  return (
    <section class="migration" aria-label="Migration" data-testid="migration">
      {request ? (
        <>
          <h2>Migration requested</h2>
          <p class="status" data-testid="migration-request">
            {request.requested_by} asks to move {detail.name} to <strong>{request.to}</strong> ({when(request.requested_at)})
            {admin ? '.' : '; an administrator grants or refuses it.'}
          </p>
        </>
      ) : (
        <>
          <h2>Migrate to another datacenter</h2>
          <label>
            Target datacenter{' '}
            <select value={to} onChange={(e) => setChoice(e.target.value)}>
              {targets.map((d) => <option>{d.name}</option>)}
            </select>
          </label>
          {dcs && !targets.length && <p class="muted">There is no other datacenter.</p>}
        </>
      )}
      {detail.state === 'suspended' && to && <p class="muted">The VI is suspended: it resumes in {to}.</p>}
      {(dcsError || planError) && <p class="error">{(dcsError || planError).message}</p>}
      {shown && <MigrationPlanView plan={shown} detail={detail} />}
      <div class="actions">
        {request && admin && <button type="button" class="primary" onClick={() => onMigrate(request.to)}>Grant</button>}
        {request && admin && <button type="button" class="danger" onClick={onCancel}>Refuse</button>}
        {request && !admin && <button type="button" onClick={onCancel}>Withdraw request</button>}
        {!request && (
          <button type="button" class="primary" disabled={!shown} onClick={() => onMigrate(to)}>
            {admin ? 'Migrate now' : 'Request migration'}
          </button>
        )}
        {!request && <button type="button" onClick={onClose}>Cancel</button>}
      </div>
    </section>
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
  const running = detail && ['running', 'deploying', 'suspending', 'resuming', 'migrating'].includes(detail.state);
  const [vms] = usePoll(() => (running ? get(`/vis/${id}/vms`) : Promise.resolve([])), running ? 2500 : 0, [id, running]);
  const [hosts] = usePoll(() => (user.role === 'admin' ? get('/hosts') : Promise.resolve(null)), 0, [user.role]);
  const [migrationOpen, setMigrationOpen] = useState(false);
  const [message, setMessage] = useState('');
  const [consoleNode, setConsoleNode] = useState(null);
  const [selected, setSelected] = useState('');
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
  const migrate = async (to) => {
    setMessage('');
    try {
      const next = await post(`/vis/${id}/migrate`, { to });
      setDetail(next);
      setMigrationOpen(false);
      setMessage(next.migration_request ? `Migration to ${to} requested; an administrator grants or refuses it.` : `${next.name} moves to ${to}.`);
    } catch (e) {
      setMessage(e.message);
    }
  };
  const cancelMigration = async () => {
    setMessage('');
    try {
      await del(`/vis/${id}/migrate`);
      setDetail(await get(`/vis/${id}`));
      setMessage(user.role === 'admin' ? 'Migration request refused.' : 'Migration request withdrawn.');
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
  const movingTo = Object.fromEntries(detail.vms.filter((v) => v.moving_to).map((v) => [v.node, v.moving_to]));
  const states = {};
  for (const n of topology.nodes) if (placement[n.node ?? n.id]) states[n.id] = detail.state === 'running' ? 'running' : 'planned';
  for (const v of vms || []) states[v.node] = v.state;
  const labels = {};
  for (const a of detail.addresses?.interfaces || []) labels[a.node] = [labels[a.node], `${a.interface} ${a.address}`].filter(Boolean).join('\n');
  for (const h of detail.addresses?.home_addresses || []) labels[h.node] = [labels[h.node], `home ${h.address}`].filter(Boolean).join('\n');
  const hostList = hosts
    ? hosts.filter((h) => Object.values(placement).includes(h.name))
    : [...new Set(Object.values(placement))].map((name) => ({ name, datacenter: detail.location || detail.home_datacenter || 'datacenter' }));
  const jobs = detail.jobs || [];
  const lastJob = jobs[jobs.length - 1];
  const s = detail.state;
  const owner = user.role === 'admin' || detail.owner === user.name;
  const movable = ['running', 'suspended'].includes(s) && owner;
  const away = detail.location && detail.home_datacenter && detail.location !== detail.home_datacenter;

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
          {movable && !detail.migration_request && (
            <button type="button" aria-expanded={migrationOpen ? 'true' : 'false'} onClick={() => setMigrationOpen(!migrationOpen)}>
              Migrate
            </button>
          )}
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
      {movable && (migrationOpen || detail.migration_request) && (
        <Migration detail={detail} user={user} onMigrate={migrate} onCancel={cancelMigration} onClose={() => setMigrationOpen(false)} />
      )}
      <p class="muted">
        {detail.summary.nodes} VMs · {detail.summary.links} links · {detail.summary.entry_points} entry points · {detail.summary.vcpus} vCPU ·{' '}
        {detail.summary.ram_mib} MiB RAM · {detail.summary.bandwidth_mbps} Mbit/s{detail.home_datacenter && ` · home ${detail.home_datacenter}`}
      </p>
      {detail.location && (
        <p data-testid="location">
          In datacenter <strong>{detail.location}</strong>
          {away && (
            <>
              {' '}<span class="state away">away from home</span> (home {detail.home_datacenter}; its Home Addresses are tunnelled here)
            </>
          )}
        </p>
      )}
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
                  <td>
                    {placement[n.id] || '—'}
                    {movingTo[n.id] && <> → <strong>{movingTo[n.id]}</strong></>}
                  </td>
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
              {detail.bindings?.length > 0 && (
                <>
                  <h2>Mobility bindings</h2>
                  <table class="compact" data-testid="bindings">
                    <thead><tr><th>Home Address</th><th>tunnelled to</th><th>care-of</th></tr></thead>
                    <tbody>
                      {detail.bindings.map((b) => (
                        <tr><td><code>{b.address}</code></td><td>{b.datacenter}</td><td>{b.care_of ? <code>{b.care_of}</code> : '—'}</td></tr>
                      ))}
                    </tbody>
                  </table>
                </>
              )}
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
