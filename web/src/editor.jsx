// The design editor: a canvas of VMs and links (Cytoscape.js), a palette of
// templates to drag from, an inspector for the selected element, undo/redo,
// the paper's XML both ways, and the Manager's own validation shown on the
// element each problem concerns.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, get, post } from './api.js';
import { designElements, fitGraph, layoutDesign, makeGraph, portsFollow, tuneForSize } from './graph.js';
import * as M from './model.js';
import { navigate } from './router.js';

const posKey = (id) => `neptune:positions:${id}`;

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function Editor({ id }) {
  const box = useRef(null);
  const cy = useRef(null);
  const model = useRef(M.blank());
  const positions = useRef({});
  const undo = useRef([]);
  const redo = useRef([]);
  const pending = useRef(null);
  const [, setTick] = useState(0);
  const [vi, setVi] = useState(null);
  const [templates, setTemplates] = useState([]);
  const [catalogue, setCatalogue] = useState([]);
  const [selected, setSelected] = useState(null);
  const [linkMode, setLinkMode] = useState(false);
  const [bandwidth, setBandwidth] = useState(100);
  const [problems, setProblems] = useState([]);
  const [status, setStatus] = useState('');
  const lineMap = useRef([]);
  const rerender = () => setTick((t) => t + 1);

  const readPositions = () => {
    cy.current?.nodes('node.vm, node.lan').forEach((n) => {
      positions.current[n.data('node') || n.id()] = { ...n.position() };
    });
  };

  const draw = (fit = false) => {
    const g = cy.current;
    if (!g) return;
    readPositions();
    const t = model.current;
    const elements = designElements(t, { positions: positions.current });
    g.batch(() => {
      g.elements().remove();
      g.add(elements);
    });
    tuneForSize(g);
    const unplaced = g.nodes('node.vm').filter((n) => !positions.current[n.data('node')]);
    if (unplaced.length === g.nodes('node.vm').length && unplaced.length) layoutDesign(g);
    else if (unplaced.length) {
      const ext = g.extent();
      unplaced.forEach((n, k) => n.position({ x: ext.x1 + 80 + k * 140, y: ext.y1 + 60 }));
    }
    g.nodes('node.lan').forEach((lan) => {
      if (!positions.current[lan.id()]) {
        const ends = lan.neighborhood('node.vm');
        if (ends.length) {
          const bb = ends.boundingBox();
          lan.position({ x: (bb.x1 + bb.x2) / 2, y: (bb.y1 + bb.y2) / 2 });
        }
      }
    });
    g.nodes('node.vm[ports]').forEach((n) => n.emit('position'));
    markProblems(problems);
    if (fit) fitGraph(g);
    rerender();
  };

  // How long a whole design took to lay out and draw (read by
  // bench/console): from `start` to the first frame Cytoscape renders.
  const measureFirstRender = (start) => {
    cy.current.one('render', () => {
      performance.measure('neptune:design-first-render', { start });
    });
  };

  const markProblems = (list) => {
    const g = cy.current;
    if (!g) return;
    g.elements().removeClass('error');
    for (const p of list) if (p.key) g.elements(`[key = "${p.key.replace(/"/g, '\\"')}"]`).addClass('error');
  };

  const snapshot = () => JSON.stringify({ t: model.current, p: positions.current });
  const change = (fn) => {
    readPositions();
    undo.current.push(snapshot());
    if (undo.current.length > 200) undo.current.shift();
    redo.current = [];
    fn(model.current);
    draw();
  };
  const restore = (from, to) => {
    if (!from.current.length) return;
    readPositions();
    to.current.push(snapshot());
    const { t, p } = JSON.parse(from.current.pop());
    model.current = t;
    positions.current = p;
    cy.current.elements().remove();
    draw();
  };

  // The graph, once.
  useEffect(() => {
    const g = makeGraph(box.current, []);
    cy.current = g;
    window.neptuneGraph = g; // for the browser test and benchmarks
    portsFollow(g);
    g.on('select', 'node.vm', (e) => setSelected({ kind: 'node', id: e.target.data('node') }));
    g.on('select', 'node.port', (e) => setSelected({ kind: 'node', id: e.target.data('port') }));
    g.on('select', 'edge[link], node.lan', (e) => setSelected({ kind: 'link', id: e.target.data('link') }));
    g.on('tap', (e) => {
      if (e.target === g) {
        setSelected(null);
        pending.current = null;
        g.nodes().removeClass('pending');
      }
    });
    // A drag's undo step. The grab only notes where the VMs were (a
    // snapshot there would cost the drag's first frame); the release
    // writes the step. (Not in cy.scratch: setting it restyles every
    // element.)
    const grabbed = new Map();
    let release = null;
    g.on('grab', 'node.vm', (e) => {
      grabbed.set(e.target.data('node'), { ...e.target.position() });
    });
    g.on('free', 'node.vm', () => {
      clearTimeout(release);
      // Every VM dragged together is freed before this runs.
      release = setTimeout(() => {
        readPositions();
        const moved = [...grabbed].filter(([key, at]) => {
          const now = positions.current[key];
          return now && (now.x !== at.x || now.y !== at.y);
        });
        grabbed.clear();
        if (!moved.length) return;
        const now = moved.map(([key]) => [key, positions.current[key]]);
        for (const [key, at] of moved) positions.current[key] = at;
        const before = snapshot();
        for (const [key, at] of now) positions.current[key] = at;
        // Re-render only when the Undo and Redo buttons change: with a
        // large design the inspector's lists make a render cost a frame.
        const buttonsChange = undo.current.length === 0 || redo.current.length > 0;
        undo.current.push(before);
        redo.current = [];
        if (buttonsChange) rerender();
      });
    });
    return () => g.destroy();
  }, []);

  // Link mode: press on one VM, release on another (or click one, then the
  // other). A layout effect, so that the handlers are on the graph by the time
  // the button shows the mode: a press right after the click is a link, never
  // a node drag.
  useLayoutEffect(() => {
    const g = cy.current;
    // On mount this runs before the graph exists, in a mode that needs nothing.
    if (!g) return undefined;
    g.autoungrabify(linkMode);
    g.userPanningEnabled(!linkMode);
    if (!linkMode) return undefined;
    const start = (e) => {
      if (!pending.current) {
        pending.current = e.target.data('node');
        e.target.addClass('pending');
      }
    };
    const end = (e) => {
      const to = e.target.data('node');
      const from = pending.current;
      if (from && to && from !== to) {
        pending.current = null;
        g.nodes().removeClass('pending');
        change((t) => {
          const link = M.addLink(t, from, to, Number(bandwidth) || 100);
          if (link) setTimeout(() => setSelected({ kind: 'link', id: link.id }));
        });
      }
    };
    g.on('tapstart', 'node.vm', start);
    g.on('tapend', 'node.vm', end);
    return () => {
      g.removeListener('tapstart', 'node.vm', start);
      g.removeListener('tapend', 'node.vm', end);
    };
  }, [linkMode, bandwidth]);

  // Templates, the catalogue and, when editing, the VI.
  useEffect(() => {
    get('/templates').then(setTemplates, () => {});
    get('/catalogue').then(setCatalogue, () => {});
    if (!id) {
      model.current = M.blank();
      positions.current = {};
      draw(true);
      return;
    }
    const start = performance.now();
    get(`/vis/${id}`).then(
      (detail) => {
        measureFirstRender(start);
        setVi(detail);
        model.current = { id: detail.topology.id, nodes: detail.topology.nodes, links: detail.topology.links || [] };
        try {
          positions.current = JSON.parse(localStorage.getItem(posKey(id)) || '{}');
        } catch {
          positions.current = {};
        }
        undo.current = [];
        redo.current = [];
        draw(true);
      },
      (e) => setStatus(e.message),
    );
  }, [id]);

  // Keyboard: undo/redo, delete, link mode (not while typing in a field).
  useEffect(() => {
    const key = (e) => {
      const typing = /INPUT|TEXTAREA|SELECT/.test(document.activeElement?.tagName || '');
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z' && !typing) {
        e.preventDefault();
        if (e.shiftKey) restore(redo, undo);
        else restore(undo, redo);
      } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'y' && !typing) {
        e.preventDefault();
        restore(redo, undo);
      } else if ((e.key === 'Delete' || e.key === 'Backspace') && !typing) {
        deleteSelected();
      } else if (e.key === 'l' && !typing && !e.ctrlKey && !e.metaKey) {
        setLinkMode((m) => !m);
      } else if (e.key === 'Escape') {
        setLinkMode(false);
      } else if (document.activeElement === box.current && /^Arrow/.test(e.key)) {
        // The canvas has the focus: arrows move the selected VM (Shift: further),
        // or pan when none is selected; + and - zoom.
        e.preventDefault();
        const step = e.shiftKey ? 50 : 10;
        const [dx, dy] = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key];
        const vm = selected?.kind === 'node' && cy.current.getElementById(`n:${selected.id}`);
        if (vm && vm.length) {
          const p = vm.position();
          vm.position({ x: p.x + dx, y: p.y + dy });
          readPositions();
        } else {
          cy.current.panBy({ x: -dx, y: -dy });
        }
      } else if (document.activeElement === box.current && (e.key === '+' || e.key === '-')) {
        const g = cy.current;
        g.zoom({ level: g.zoom() * (e.key === '+' ? 1.2 : 1 / 1.2), renderedPosition: { x: g.width() / 2, y: g.height() / 2 } });
      }
    };
    window.addEventListener('keydown', key);
    return () => window.removeEventListener('keydown', key);
  });

  const addVm = (template, at) =>
    change((t) => {
      const node = M.newNode(t, template);
      const g = cy.current;
      const ext = g.extent();
      positions.current[node.id] = at || { x: (ext.x1 + ext.x2) / 2 + (t.nodes.length % 5) * 20, y: (ext.y1 + ext.y2) / 2 };
      setTimeout(() => setSelected({ kind: 'node', id: node.id }));
    });

  const onDrop = (e) => {
    e.preventDefault();
    const name = e.dataTransfer.getData('application/x-neptune-template');
    if (name === null || name === undefined) return;
    const template = templates.find((x) => x.name === name) || (name === '' ? null : { name });
    const rect = box.current.getBoundingClientRect();
    const g = cy.current;
    const pan = g.pan();
    const zoom = g.zoom();
    addVm(template, { x: (e.clientX - rect.left - pan.x) / zoom, y: (e.clientY - rect.top - pan.y) / zoom });
  };

  const deleteSelected = () => {
    if (!selected) return;
    change((t) => (selected.kind === 'node' ? M.removeNode(t, selected.id) : M.removeLink(t, selected.id)));
    setSelected(null);
  };

  const importXml = async (file) => {
    try {
      const text = await file.text();
      const start = performance.now();
      const t = M.fromXml(text);
      measureFirstRender(start);
      change(() => {
        model.current = t;
        positions.current = {};
        cy.current.elements().remove();
      });
      setProblems([]);
      setStatus(`Imported ${file.name}: ${t.nodes.length} nodes, ${t.links.length} links.`);
      fitGraph(cy.current, 60);
    } catch (e) {
      setStatus(`Import failed: ${e.message}`);
    }
  };

  const save = async () => {
    readPositions();
    const { xml, map } = M.toXml(model.current);
    lineMap.current = map;
    setStatus('Saving…');
    try {
      const detail = vi
        ? await api('PUT', `/vis/${vi.id}`, { xml, version: vi.version })
        : await api('POST', '/vis', { xml, name: model.current.id });
      localStorage.setItem(posKey(detail.id), JSON.stringify(positions.current));
      setVi(detail);
      setProblems([]);
      markProblems([]);
      setStatus(`Saved ${detail.name} (version ${detail.version}).`);
      if (!vi) history.replaceState(null, '', `/design/${detail.id}`);
      return detail;
    } catch (e) {
      const list = (e.details.length ? e.details : [e.message]).map((p) => M.locate(p, model.current, map));
      setProblems(list);
      markProblems(list);
      setStatus(e.code === 'invalid_topology' ? `The Manager found ${list.length} problem(s); each is marked on its element.` : e.message);
      return null;
    }
  };

  const request = async () => {
    const detail = await save();
    if (!detail) return;
    try {
      await post(`/vis/${detail.id}/request`);
      navigate(`/vis/${detail.id}`);
    } catch (e) {
      setStatus(e.message);
    }
  };

  const fromCatalogue = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      const detail = await post('/vis', {
        catalogue: { kind: form.get('kind'), nodes: Number(form.get('nodes')) || null, bandwidth: Number(form.get('bandwidth')) || null },
        name: form.get('name') || null,
      });
      navigate(`/design/${detail.id}`);
    } catch (e) {
      setStatus(e.message);
    }
  };

  const t = model.current;
  const editable = !vi || vi.state === 'defined';
  const s = M.summary(t);
  const node = selected?.kind === 'node' ? t.nodes.find((n) => n.id === selected.id) : null;
  const link = selected?.kind === 'link' ? t.links.find((l) => l.id === selected.id) : null;
  const problemsOf = (key) => problems.filter((p) => p.key === key);

  return (
    <main class="editor">
      <section class="toolbar" aria-label="Design tools">
        <label>
          VI <input aria-label="VI name" value={t.id} onChange={(e) => change((m) => { m.id = e.target.value.trim(); })} size="14" />
        </label>
        <button type="button" aria-pressed={linkMode} onClick={() => setLinkMode(!linkMode)} title="Draw links: press on a VM, release on another (L)">
          {linkMode ? 'Drawing links…' : 'Draw links'}
        </button>
        <label>
          Mbit/s <input aria-label="Bandwidth of new links" type="number" min="1" value={bandwidth} onInput={(e) => setBandwidth(e.target.value)} size="6" />
        </label>
        <button type="button" onClick={() => restore(undo, redo)} disabled={!undo.current.length} title="Undo (Ctrl+Z)">Undo</button>
        <button type="button" onClick={() => restore(redo, undo)} disabled={!redo.current.length} title="Redo (Ctrl+Y)">Redo</button>
        <button type="button" onClick={() => { readPositions(); positions.current = {}; draw(); layoutDesign(cy.current); }}>Layout</button>
        <button type="button" onClick={() => fitGraph(cy.current, 60)} title="Show the whole design">Fit</button>
        <label class="file">
          Import XML
          <input type="file" accept=".xml,application/xml,text/xml" aria-label="Import XML" onChange={(e) => e.target.files[0] && importXml(e.target.files[0])} />
        </label>
        <button type="button" onClick={() => download(`${t.id || 'topology'}.xml`, M.toXml(t).xml, 'application/xml')}>Export XML</button>
        <span class="spacer" />
        <button type="button" class="primary" onClick={save} disabled={!editable}>Save</button>
        <button type="button" class="primary" onClick={request} disabled={!editable || !t.nodes.length}>Request</button>
      </section>
      <aside class="palette" aria-label="Templates">
        <h2>Templates</h2>
        <p class="muted">Drag onto the canvas, or press to add.</p>
        <ul>
          {[{ name: '', os_name: 'blank VM', vcpus: 1, ram_mib: 256, disk_mib: 1024, software: [] }, ...templates].map((tpl) => (
            <li key={tpl.name || '-'}>
              <button
                type="button"
                class="template"
                draggable
                data-template={tpl.name}
                onDragStart={(e) => e.dataTransfer.setData('application/x-neptune-template', tpl.name)}
                onClick={() => addVm(tpl.name ? tpl : null)}
              >
                <strong>{tpl.name || 'VM'}</strong>
                <small>
                  {tpl.os_name} · {tpl.vcpus} vCPU · {tpl.ram_mib} MiB
                </small>
              </button>
            </li>
          ))}
        </ul>
        {!id && (
          <form class="catalogue" onSubmit={fromCatalogue}>
            <h2>From the catalogue</h2>
            <select name="kind" aria-label="Catalogue kind">
              {catalogue.map((k) => (
                <option value={k.kind} title={k.description}>{k.kind}</option>
              ))}
            </select>
            <input name="nodes" type="number" min="1" placeholder="nodes" aria-label="Nodes" />
            <input name="bandwidth" type="number" min="1" placeholder="Mbit/s" aria-label="Bandwidth" />
            <input name="name" placeholder="name" aria-label="Name" />
            <button type="submit">Create</button>
          </form>
        )}
      </aside>
      <div
        class={`canvas${linkMode ? ' linking' : ''}`}
        ref={box}
        tabindex="0"
        aria-label="Design canvas"
        data-testid="canvas"
        onDragOver={(e) => e.preventDefault()}
        onDrop={onDrop}
      />
      <aside class="inspector" aria-label="Inspector">
        <p class="summary" data-testid="summary">
          {s.nodes} VMs · {s.links} links · {s.entry_points} entry points · {s.vcpus} vCPU · {s.ram} MiB RAM
          {vi && ` · ${vi.state}`}
        </p>
        {status && <p class="status" role="status">{status}</p>}
        {!editable && <p class="muted">This VI is {vi.state}: its design can no longer change here.</p>}
        <label>
          Element{' '}
          <select
            aria-label="Select element"
            value={selected ? `${selected.kind}:${selected.id}` : ''}
            onChange={(e) => {
              const [kind, ...rest] = e.target.value.split(':');
              setSelected(kind ? { kind, id: rest.join(':') } : null);
            }}
          >
            <option value="">—</option>
            {t.nodes.map((n) => <option value={`node:${n.id}`}>VM {n.id}</option>)}
            {t.links.map((l) => <option value={`link:${l.id}`}>link {l.id}</option>)}
          </select>
        </label>
        {node && <NodeForm node={node} topology={t} templates={templates} change={change} problems={problemsOf(`node:${node.id}`)} onRename={(to) => setSelected({ kind: 'node', id: to })} positions={positions} onDelete={deleteSelected} />}
        {link && <LinkForm link={link} change={change} problems={problemsOf(`link:${link.id}`)} onDelete={deleteSelected} />}
        {problems.length > 0 && (
          <section class="problems" aria-label="Problems">
            <h2>Problems</h2>
            <ul>
              {problems.map((p) => (
                <li>
                  {p.key ? (
                    <button type="button" class="link" onClick={() => { const [kind, ...rest] = p.key.split(':'); setSelected({ kind, id: rest.join(':') }); }}>
                      {p.key.replace(':', ' ')}
                    </button>
                  ) : (
                    'design'
                  )}{' '}
                  {p.where && <code>{p.where}</code>} {p.message}
                </li>
              ))}
            </ul>
          </section>
        )}
      </aside>
    </main>
  );
}

const field = (label, value, onChange, props = {}) => (
  <label>
    {label} <input value={value ?? ''} onChange={(e) => onChange(e.target.value)} {...props} />
  </label>
);

const asNumber = (v) => (v.trim() === '' ? 0 : Number.isFinite(Number(v)) ? Number(v) : v);

function Problems({ list }) {
  return list.length ? (
    <ul class="element-problems" role="alert" data-testid="element-problems">
      {list.map((p) => <li>{p.where && <code>{p.where}</code>} {p.message}</li>)}
    </ul>
  ) : null;
}

function NodeForm({ node, topology, templates, change, problems, onRename, positions, onDelete }) {
  const edit = (fn) => change((t) => fn(t.nodes.find((n) => n.id === node.id)));
  const [to, setTo] = useState('');
  const others = topology.nodes.filter((n) => n.id !== node.id);
  return (
    <form class="node-form" aria-label={`VM ${node.id}`} onSubmit={(e) => e.preventDefault()}>
      <h2>VM {node.id}</h2>
      <Problems list={problems} />
      {field('Id', node.id, (v) => {
        const next = v.trim();
        if (!next || topology.nodes.some((n) => n.id === next)) return;
        change((t) => {
          M.renameNode(t, node.id, next);
          positions.current[next] = positions.current[node.id];
        });
        onRename(next);
      })}
      {field('Name', node.name, (v) => edit((n) => { n.name = v; }))}
      {field('Description', node.description, (v) => edit((n) => { n.description = v; }))}
      <div class="row">
        {field('vCPUs', node.cpu?.amount, (v) => edit((n) => { n.cpu.amount = asNumber(v); }), { type: 'number', min: 0, 'aria-label': 'vCPUs' })}
        {field('Clock (MHz)', node.cpu?.clock, (v) => edit((n) => { n.cpu.clock = asNumber(v); }), { type: 'number', min: 0 })}
      </div>
      <div class="row">
        {field('RAM (MiB)', node.ram, (v) => edit((n) => { n.ram = asNumber(v); }), { type: 'number', 'aria-label': 'RAM (MiB)' })}
        {field('Disk (MiB)', node.disk, (v) => edit((n) => { n.disk = asNumber(v); }), { type: 'number', 'aria-label': 'Disk (MiB)' })}
      </div>
      <label>
        <input type="checkbox" checked={M.isEntryPoint(node)} onChange={(e) => edit((n) => M.setEntryPoint(n, e.target.checked))} /> Entry point (a public Home Address)
      </label>
      <fieldset>
        <legend>Interfaces</legend>
        <table class="compact">
          <thead><tr><th>name</th><th>binding</th><th>type</th><th>MAC</th><th /></tr></thead>
          <tbody>
            {node.interfaces.map((i, k) => (
              <tr>
                <td><input aria-label={`Interface ${k + 1} name`} value={i.name} size="5" onChange={(e) => edit((n) => { n.interfaces[k].name = e.target.value; })} /></td>
                <td>
                  <select aria-label={`Interface ${i.name} binding`} value={i.binding || 'unspecified'} onChange={(e) => edit((n) => { n.interfaces[k].binding = e.target.value; })}>
                    <option value="unspecified">—</option>
                    <option value="bridge">bridge</option>
                    <option value="hif">HIF</option>
                  </select>
                </td>
                <td><input aria-label={`Interface ${i.name} type`} value={i.type} size="6" onChange={(e) => edit((n) => { n.interfaces[k].type = e.target.value; })} /></td>
                <td><input aria-label={`Interface ${i.name} MAC`} value={i.mac || ''} size="12" placeholder="auto" onChange={(e) => edit((n) => { n.interfaces[k].mac = e.target.value.trim() || null; })} /></td>
                <td><button type="button" class="link" aria-label={`Remove ${i.name}`} onClick={() => edit((n) => { n.interfaces.splice(k, 1); })}>✕</button></td>
              </tr>
            ))}
          </tbody>
        </table>
        <button type="button" onClick={() => edit((n) => n.interfaces.push({ name: M.freeInterface(n), mac: null, type: 'virtio', binding: 'bridge' }))}>Add interface</button>
      </fieldset>
      <fieldset>
        <legend>Operating system</legend>
        {field('OS', node.os?.name, (v) => edit((n) => { n.os.name = v; }))}
        <div class="row">
          {field('User', node.os?.username, (v) => edit((n) => { n.os.username = v; }))}
          {field('Password', '', (v) => edit((n) => { n.os.password = v; }), { type: 'password', placeholder: node.os?.password_set || node.os?.password ? 'set' : '', autocomplete: 'new-password' })}
        </div>
        {node.os?.password_set && !node.os?.password && (
          <p class="muted">A password is set; the Manager never shows it. Type it again, or saving this design clears it.</p>
        )}
      </fieldset>
      <fieldset>
        <legend>Software</legend>
        <label>
          Template{' '}
          <select value={node.software?.template || ''} onChange={(e) => edit((n) => { n.software.template = e.target.value; })}>
            <option value="">(the Manager's default)</option>
            {[...new Set([...templates.map((x) => x.name), node.software?.template].filter(Boolean))].map((name) => <option value={name}>{name}</option>)}
          </select>
        </label>
        {field('SSH port', node.software?.ssh_port ?? '', (v) => edit((n) => { if (v.trim() === '') delete n.software.ssh_port; else n.software.ssh_port = asNumber(v); }), { type: 'number', min: 1, max: 65535 })}
        {(node.software?.software || []).map((sw, k) => (
          <div class="row">
            <input aria-label="Software name" value={sw.name} size="8" onChange={(e) => edit((n) => { n.software.software[k].name = e.target.value; })} />
            <input aria-label="Software type" value={sw.type} size="8" onChange={(e) => edit((n) => { n.software.software[k].type = e.target.value; })} />
            <input aria-label="Software version" value={sw.version} size="4" onChange={(e) => edit((n) => { n.software.software[k].version = e.target.value; })} />
            <button type="button" class="link" aria-label={`Remove ${sw.name}`} onClick={() => edit((n) => { n.software.software.splice(k, 1); })}>✕</button>
          </div>
        ))}
        <button type="button" onClick={() => edit((n) => { n.software.software = [...(n.software.software || []), { name: 'package', type: '', version: '' }]; })}>Add software</button>
      </fieldset>
      {others.length > 0 && (
        <div class="row">
          <select aria-label="Link to" value={to} onChange={(e) => setTo(e.target.value)}>
            <option value="">link to…</option>
            {others.map((n) => <option value={n.id}>{n.id}</option>)}
          </select>
          <button type="button" disabled={!to} onClick={() => change((t) => M.addLink(t, node.id, to, 100))}>Add link</button>
        </div>
      )}
      <button type="button" class="danger" onClick={onDelete}>Delete VM</button>
    </form>
  );
}

function LinkForm({ link, change, problems, onDelete }) {
  const edit = (fn) => change((t) => fn(t.links.find((l) => l.id === link.id)));
  return (
    <form class="link-form" aria-label={`Link ${link.id}`} onSubmit={(e) => e.preventDefault()}>
      <h2>Link {link.id}</h2>
      <Problems list={problems} />
      {field('Bandwidth (Mbit/s)', link.bandwidth, (v) => edit((l) => { l.bandwidth = asNumber(v); }), { type: 'number', 'aria-label': 'Link bandwidth' })}
      <label>
        Kind{' '}
        <select value={link.type} onChange={(e) => edit((l) => { l.type = e.target.value; })}>
          <option value="point_to_point">point to point</option>
          <option value="lan">LAN</option>
        </select>
      </label>
      {field('Subnet', link.subnet || '', (v) => edit((l) => { if (v.trim()) l.subnet = v.trim(); else delete l.subnet; }), { placeholder: 'planned by Neptune' })}
      <p class="muted">{link.endpoints.map((e) => `${e.node}/${e.interface}`).join(' — ')}</p>
      <button type="button" class="danger" onClick={onDelete}>Delete link</button>
    </form>
  );
}
