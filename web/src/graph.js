// Drawing with Cytoscape.js: a design (VMs, their free interfaces, links,
// LANs, entry points) and a placement (datacenters and hosts as compound
// nodes around the VMs they run).
import cytoscape from 'cytoscape';

export const STATE_COLOURS = {
  ready: '#2e7d32',
  running: '#2e7d32',
  booting: '#f9a825',
  defined: '#78909c',
  missing: '#c62828',
  unknown: '#6a1b9a',
  planned: '#1565c0',
};

const style = [
  {
    selector: 'node.vm',
    style: {
      shape: 'round-rectangle',
      width: 132,
      height: 54,
      'background-color': '#e3eefc',
      'border-width': 2,
      'border-color': '#1565c0',
      label: 'data(label)',
      'text-wrap': 'wrap',
      'text-valign': 'center',
      'font-size': 10,
      'min-zoomed-font-size': 5,
      color: '#0d2a4a',
    },
  },
  { selector: 'node.vm.placed', style: { width: 150, height: 62 } },
  { selector: 'node.vm.entry', style: { 'border-width': 4, 'border-style': 'double', 'border-color': '#e65100' } },
  { selector: 'node.vm[state]', style: { 'background-color': 'data(colour)', color: '#fff', 'border-color': '#263238' } },
  {
    selector: 'node.port',
    style: {
      shape: 'ellipse',
      width: 14,
      height: 14,
      'background-color': '#fff',
      'border-width': 2,
      'border-color': '#455a64',
      label: 'data(label)',
      'font-size': 9,
      'text-valign': 'bottom',
      'text-margin-y': 3,
    },
  },
  { selector: 'node.port.hif', style: { shape: 'diamond', 'border-color': '#e65100', width: 18, height: 18 } },
  { selector: 'node.port.entry', style: { 'background-color': '#ffcc80' } },
  {
    selector: 'node.lan',
    style: { shape: 'rectangle', width: 60, height: 10, 'background-color': '#455a64', label: 'data(label)', 'font-size': 9, 'text-valign': 'top' },
  },
  {
    selector: 'edge',
    style: {
      width: 'data(width)',
      'line-color': '#546e7a',
      'curve-style': 'bezier',
      label: 'data(label)',
      'font-size': 9,
      'text-background-color': '#fff',
      'text-background-opacity': 0.85,
      'text-background-padding': 1,
      'source-label': 'data(sourceLabel)',
      'target-label': 'data(targetLabel)',
      'source-text-offset': 24,
      'target-text-offset': 24,
      'min-zoomed-font-size': 6,
    },
  },
  { selector: 'edge.stub', style: { width: 1, 'line-style': 'dashed', label: '' } },
  { selector: 'edge.cut', style: { 'line-color': '#c62828', 'line-style': 'dashed' } },
  { selector: '.error', style: { 'border-color': '#d50000', 'border-width': 5, 'line-color': '#d50000', 'overlay-color': '#d50000', 'overlay-opacity': 0.15 } },
  { selector: ':selected', style: { 'overlay-color': '#1565c0', 'overlay-opacity': 0.2, 'overlay-padding': 6 } },
  { selector: 'node.pending', style: { 'overlay-color': '#e65100', 'overlay-opacity': 0.25, 'overlay-padding': 8 } },
  {
    selector: 'node.datacenter',
    style: {
      shape: 'round-rectangle',
      'background-color': '#eceff1',
      'border-color': '#90a4ae',
      'border-width': 1,
      label: 'data(label)',
      'text-valign': 'top',
      'text-halign': 'center',
      'font-size': 13,
      'font-weight': 'bold',
      padding: 18,
    },
  },
  {
    selector: 'node.host',
    style: {
      shape: 'round-rectangle',
      'background-color': '#fff',
      'border-color': '#607d8b',
      'border-width': 2,
      label: 'data(label)',
      'text-valign': 'top',
      'text-halign': 'center',
      'text-wrap': 'wrap',
      'font-size': 10,
      padding: 12,
      width: 130,
      height: 50,
    },
  },
  { selector: 'node.host.drop', style: { 'border-color': '#2e7d32', 'border-width': 4 } },
  { selector: 'node.host.full', style: { 'border-color': '#c62828', 'border-width': 4 } },
];

export function makeGraph(container, elements, options = {}) {
  const big = elements.length > 600;
  const cy = cytoscape({
    container,
    elements,
    style,
    layout: { name: 'preset' },
    wheelSensitivity: 0.4,
    minZoom: 0.05,
    maxZoom: 3,
    boxSelectionEnabled: false,
    // Panning and zooming move a bitmap of the last frame: smooth with
    // designs of hundreds of VMs on a laptop. A fixed pixel ratio (not
    // 'auto', which asks the window on every draw), at most 1 for large
    // graphs — and never exactly 1: at 1 or less Cytoscape.js draws that
    // bitmap at twice the resolution, a whole frame of its own at other
    // cache levels (100 to 200 ms at the start of a pan of a 500-VM design
    // on 2 shared cores; 33 to 50 ms like this). The bitmap is as sharp as
    // the screen.
    textureOnViewport: true,
    hideEdgesOnViewport: false,
    pixelRatio: Math.max(1.0001, big ? 1 : window.devicePixelRatio || 1),
    ...options,
  });
  redrawOnlyTheDragLayer(cy);
  buildLayersWhenIdle(cy);
  return cy;
}

// Cytoscape.js draws the elements that do not move from a cached bitmap
// layer, made lazily: a redraw within 250 ms of a change draws element by
// element and queues no layer, and a queued layer is then drawn whole in
// one frame (about 40 ms for a 500-VM design). Left alone, that frame is
// the first of the next pan: its one dropped frame. So once the graph has
// been still for a moment, one more redraw queues the layer and it is
// built while nobody is looking.
function buildLayersWhenIdle(cy) {
  const r = cy.renderer();
  if (!r || typeof r.redrawHint !== 'function') return;
  let timer = null;
  let ours = false;
  cy.on('render', () => {
    if (ours) {
      ours = false;
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(() => {
      ours = true;
      r.redrawHint('eles', true);
      r.redraw();
    }, 300);
  });
  cy.on('destroy', () => clearTimeout(timer));
}

// While a VM is dragged, Cytoscape.js hears at every move that the bounds
// of the dragged elements changed and redraws the whole canvas for it,
// element by element (its layer cache is off while elements change): 997
// elements twice per move in a 500-VM ring, the dragging's dropped frames.
// The dragged elements are on a layer of their own, though: when every
// element whose bounds changed is on it, only that layer is redrawn. (A
// compound host around a dragged VM is not on it: that path is unchanged.)
function redrawOnlyTheDragLayer(cy) {
  const r = cy.renderer();
  if (!r || typeof r.notify !== 'function' || !r.hoverData || typeof r.redrawHint !== 'function') return;
  const notify = r.notify;
  r.notify = function dragAware(name, eles) {
    if (name === 'bounds' && r.hoverData.draggingEles && eles && eles.length) {
      let all = true;
      for (let i = 0; i < eles.length && all; i += 1) all = !!eles[i]._private.rscratch.inDragLayer;
      if (all) {
        r.redrawHint('drag', true);
        r.redraw();
        return;
      }
    }
    notify.call(this, name, eles);
  };
}

// Large designs draw haystack edges: straight, no control points computed.
export function tuneForSize(cy) {
  const big = cy.nodes().length > LARGE;
  cy.style().selector('edge').style('curve-style', big ? 'haystack' : 'bezier').update();
}

const vmLabel = (n, extra) => {
  const ram = typeof n.ram === 'number' ? `${n.ram} MiB` : n.ram;
  const disk = typeof n.disk === 'number' ? ` · ${+(n.disk / 1024).toFixed(1)} GiB` : '';
  const cpus = Math.max(1, Number(n.cpu?.amount) || 0);
  const os = (n.os?.name || '').length <= 12 ? n.os?.name : '';
  const tpl = [os, n.software?.template].filter(Boolean).join(' · ');
  return [n.id, tpl, `${cpus} vCPU · ${ram}${disk}`, extra].filter(Boolean).join('\n');
};

// Fits the drawing, magnifying a small one at most 1.5 times. A
// large one is fitted from its nodes' centres: Cytoscape's own fit measures
// every label first, which took a third of a 500-VM design's first frame.
export function fitGraph(cy, padding = 40) {
  const nodes = cy.nodes();
  if (nodes.length <= LARGE) {
    cy.fit(undefined, padding);
    if (cy.zoom() > 1.5) {
      cy.zoom(1.5);
      cy.center();
    }
    return;
  }
  let [x1, y1, x2, y2] = [Infinity, Infinity, -Infinity, -Infinity];
  nodes.forEach((n) => {
    const p = n.position();
    x1 = Math.min(x1, p.x);
    y1 = Math.min(y1, p.y);
    x2 = Math.max(x2, p.x);
    y2 = Math.max(y2, p.y);
  });
  // Half a VM's size around the centres.
  x1 -= 60;
  x2 += 60;
  y1 -= 30;
  y2 += 30;
  const w = cy.width();
  const h = cy.height();
  const zoom = Math.max(cy.minZoom(), Math.min(1, (w - 2 * padding) / (x2 - x1), (h - 2 * padding) / (y2 - y1)));
  cy.viewport({ zoom, pan: { x: (w - zoom * (x1 + x2)) / 2, y: (h - zoom * (y1 + y2)) / 2 } });
}

// From this many nodes on, a graph is drawn for speed: grid placement
// computed here, straight "haystack" edges, a fit from node centres.
export const LARGE = 200;

// Elements of a design. `state` colours VMs (a VI being watched); `labels`
// adds a line per VM (its addresses).
export function designElements(t, { positions = {}, state = {}, labels = {}, parent = {} } = {}) {
  const out = [];
  const linked = new Set();
  for (const l of t.links) for (const e of l.endpoints) linked.add(`${e.node}/${e.interface}`);
  for (const n of t.nodes) {
    const entry = n.interfaces.some((i) => i.entry_point);
    const data = { id: `n:${n.id}`, key: `node:${n.id}`, node: n.id, label: vmLabel(n, labels[n.id]) };
    if (state[n.id]) {
      data.state = state[n.id];
      data.colour = STATE_COLOURS[state[n.id]] || '#546e7a';
    }
    if (parent[n.id]) data.parent = `h:${parent[n.id]}`;
    const pos = positions[n.id];
    out.push({ group: 'nodes', data, classes: `vm${entry ? ' entry' : ''}`, position: pos ? { ...pos } : undefined });
    // Interfaces on no link are drawn as the paper's editor shows them:
    // ports on the VM (a diamond when bound to the host's interface).
    const free = n.interfaces.filter((i) => !linked.has(`${n.id}/${i.name}`));
    if (free.length) data.ports = free.map((i) => `p:${n.id}/${i.name}`);
    free.forEach((i, k) => {
      const id = `p:${n.id}/${i.name}`;
      const angle = -Math.PI / 2 + (k * 2 * Math.PI) / Math.max(free.length, 1) + Math.PI / 4;
      const base = pos || { x: 0, y: 0 };
      out.push({
        group: 'nodes',
        data: {
          id,
          key: `node:${n.id}`,
          port: n.id,
          label: `${i.name} · ${i.binding === 'hif' ? 'HIF' : i.binding || '—'}${i.entry_point ? ' · entry' : ''}`,
          dx: Math.cos(angle) * 95,
          dy: Math.sin(angle) * 60,
        },
        classes: `port ${i.binding === 'hif' ? 'hif' : ''} ${i.entry_point ? 'entry' : ''}`,
        position: { x: base.x + Math.cos(angle) * 95, y: base.y + Math.sin(angle) * 60 },
        grabbable: false,
      });
      out.push({ group: 'edges', data: { id: `pe:${n.id}/${i.name}`, key: `node:${n.id}`, source: `n:${n.id}`, target: id, width: 1 }, classes: 'stub' });
    });
  }
  for (const l of t.links) {
    const label = `${l.bandwidth} Mbit/s`;
    const width = Math.max(1.5, Math.min(8, Math.log10(Number(l.bandwidth) || 1) * 2));
    if (l.endpoints.length === 2) {
      const [a, b] = l.endpoints;
      out.push({
        group: 'edges',
        data: { id: `l:${l.id}`, key: `link:${l.id}`, link: l.id, source: `n:${a.node}`, target: `n:${b.node}`, label, width, sourceLabel: a.interface, targetLabel: b.interface },
      });
    } else {
      out.push({ group: 'nodes', data: { id: `lan:${l.id}`, key: `link:${l.id}`, link: l.id, label: `${l.id} · ${label}` }, classes: 'lan' });
      l.endpoints.forEach((e, k) =>
        out.push({
          group: 'edges',
          data: { id: `l:${l.id}/${k}`, key: `link:${l.id}`, link: l.id, source: `lan:${l.id}`, target: `n:${e.node}`, width, targetLabel: e.interface },
        }),
      );
    }
  }
  // Endpoints naming nodes that do not exist are left out (the Manager says why).
  const ids = new Set(out.filter((e) => e.group === 'nodes').map((e) => e.data.id));
  return out.filter((e) => e.group === 'nodes' || (ids.has(e.data.source) && ids.has(e.data.target)));
}

// Ports follow their VM when it moves.
// (Each VM names its ports: a lookup by id, not a query over every node,
// keeps dragging smooth in designs of hundreds of VMs.)
export function portsFollow(cy) {
  cy.on('position', 'node.vm[ports]', (event) => {
    const vm = event.target;
    const p = vm.position();
    for (const id of vm.data('ports')) {
      const port = cy.getElementById(id);
      port.position({ x: p.x + port.data('dx'), y: p.y + port.data('dy') });
    }
  });
}

// Lays out VMs without a position: a force layout for small designs, a grid
// (instant) for large ones.
export function layoutDesign(cy, animate = false) {
  const vms = cy.nodes('node.vm, node.lan');
  if (vms.length <= 80) {
    const options = { name: 'cose', animate, randomize: false, nodeRepulsion: () => 90000, idealEdgeLength: () => 160, padding: 40, numIter: 600 };
    vms.union(vms.connectedEdges()).layout(options).run();
  } else {
    // Rows in the design's order (neighbours in a ring or a line stay
    // close); a layout extension would measure every node first.
    const cols = Math.ceil(Math.sqrt(vms.length * 1.6));
    cy.batch(() => vms.forEach((n, k) => n.position({ x: (k % cols) * 150, y: Math.floor(k / cols) * 90 })));
  }
  cy.nodes('node.vm[ports]').forEach((vm) => vm.emit('position'));
  fitGraph(cy);
}

// Datacenters and hosts as compound nodes; `vms` maps node -> host.
export function placementElements(hosts, datacenters) {
  const out = [];
  for (const dc of datacenters) {
    out.push({ group: 'nodes', data: { id: `d:${dc}`, label: dc }, classes: 'datacenter', selectable: false });
  }
  for (const h of hosts) {
    const ram = h.ram_mib ? ` ${h.used_vcpus}/${h.cpus} vCPU · ${Math.round(h.used_ram_mib / 1024)}/${Math.round(h.ram_mib / 1024)} GiB` : '';
    out.push({
      group: 'nodes',
      data: {
        id: `h:${h.name}`,
        host: h.name,
        parent: `d:${h.datacenter}`,
        label: `${h.name}${ram}`,
      },
      classes: 'host',
      selectable: false,
      grabbable: false,
    });
  }
  return out;
}

// Positions of hosts in columns per datacenter and of VMs in rows inside
// their host, so placement views need no layout run.
export function placementPositions(hosts, datacenters, vmsOnHost) {
  const positions = {};
  const hostPos = {};
  datacenters.forEach((dc, d) => {
    let y = 0;
    hosts
      .filter((h) => h.datacenter === dc)
      .forEach((h) => {
        const vms = vmsOnHost[h.name] || [];
        const cols = Math.max(1, Math.min(3, vms.length));
        const rows = Math.max(1, Math.ceil(vms.length / 3));
        const x0 = d * 640;
        hostPos[h.name] = { x: x0 + 200, y: y + 40 };
        vms.forEach((vm, k) => {
          positions[vm] = { x: x0 + (k % cols) * 200, y: y + Math.floor(k / cols) * 90 };
        });
        y += rows * 90 + 70;
      });
  });
  return { positions, hostPos };
}
