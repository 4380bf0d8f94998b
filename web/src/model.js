// The design model, in the JSON form of the REST API (docs/topology-xml.md),
// and the paper's XML dialect both ways. Export remembers which lines each
// node and link took, so that the Manager's `LINE:COL: MESSAGE` problems can
// be shown on the element they concern.

export const blank = (id = 'my-vi') => ({ id, nodes: [], links: [] });

export function newNode(topology, template, at) {
  const base = (template?.name || 'vm').replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'vm';
  let n = 1;
  while (topology.nodes.some((x) => x.id === `${base}${n}`)) n += 1;
  const node = {
    id: `${base}${n}`,
    name: '',
    description: '',
    cpu: { amount: template?.vcpus || 1, clock: 0, name: '', type: '' },
    ram: template?.ram_mib || 256,
    disk: template?.disk_mib || 1024,
    interfaces: [],
    os: { name: template?.os_name || '', username: '' },
    software: { template: template?.name || '', software: (template?.software || []).map((s) => ({ ...s })) },
  };
  topology.nodes.push(node);
  return node;
}

export function freeInterface(node) {
  let i = 0;
  while (node.interfaces.some((x) => x.name === `eth${i}`)) i += 1;
  return `eth${i}`;
}

export function addLink(topology, a, b, bandwidth) {
  const na = topology.nodes.find((n) => n.id === a);
  const nb = topology.nodes.find((n) => n.id === b);
  if (!na || !nb || a === b) return null;
  const ia = freeInterface(na);
  na.interfaces.push({ name: ia, mac: null, type: 'virtio', binding: 'bridge' });
  const ib = freeInterface(nb);
  nb.interfaces.push({ name: ib, mac: null, type: 'virtio', binding: 'bridge' });
  let n = 1;
  while (topology.links.some((l) => l.id === `link${n}`)) n += 1;
  const link = {
    id: `link${n}`,
    type: 'point_to_point',
    bandwidth,
    endpoints: [{ node: a, interface: ia }, { node: b, interface: ib }],
  };
  topology.links.push(link);
  return link;
}

export const isEntryPoint = (node) => node.interfaces.some((i) => i.entry_point);

export function setEntryPoint(node, on) {
  if (on && !isEntryPoint(node)) {
    node.interfaces.unshift({ name: freeInterface(node), mac: null, type: 'virtio', binding: 'hif', entry_point: {} });
  } else if (!on) {
    node.interfaces = node.interfaces.filter((i) => !(i.entry_point && i.binding === 'hif'));
    for (const i of node.interfaces) delete i.entry_point;
  }
}

export function removeNode(topology, id) {
  topology.nodes = topology.nodes.filter((n) => n.id !== id);
  const gone = topology.links.filter((l) => l.endpoints.some((e) => e.node === id));
  for (const link of gone) removeLink(topology, link.id);
}

export function removeLink(topology, id) {
  const link = topology.links.find((l) => l.id === id);
  if (!link) return;
  topology.links = topology.links.filter((l) => l.id !== id);
  for (const e of link.endpoints) {
    const node = topology.nodes.find((n) => n.id === e.node);
    if (node) node.interfaces = node.interfaces.filter((i) => i.name !== e.interface || i.entry_point);
  }
}

export function renameNode(topology, from, to) {
  const node = topology.nodes.find((n) => n.id === from);
  if (!node) return;
  node.id = to;
  for (const l of topology.links) for (const e of l.endpoints) if (e.node === from) e.node = to;
}

export function summary(topology) {
  let vcpus = 0;
  let ram = 0;
  let disk = 0;
  for (const n of topology.nodes) {
    vcpus += Math.max(1, Number(n.cpu?.amount) || 0);
    ram += Number(n.ram) || 0;
    disk += Number(n.disk) || 0;
  }
  return {
    nodes: topology.nodes.length,
    links: topology.links.length,
    entry_points: topology.nodes.reduce((k, n) => k + n.interfaces.filter((i) => i.entry_point).length, 0),
    vcpus,
    ram,
    disk,
  };
}

// --- the XML dialect ---------------------------------------------------

const esc = (v) =>
  String(v ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

// GiB as the dialect writes them: whole numbers plainly, others with a point.
const gib = (mib) => (typeof mib === 'number' ? String(mib / 1024) : String(mib));

// The document and, per element ('node:ID', 'link:ID'), its first and last line.
export function toXml(t) {
  const lines = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>', `<topology id="${esc(t.id)}">`, '  <nodes>'];
  const map = [];
  const mark = (key, from) => map.push({ key, from, to: lines.length });
  for (const n of t.nodes) {
    const from = lines.length + 1;
    lines.push(`    <node id="${esc(n.id)}">`);
    lines.push(n.description ? `      <description>${esc(n.description)}</description>` : '      <description/>');
    lines.push(n.name ? `      <name>${esc(n.name)}</name>` : '      <name/>');
    const c = n.cpu || {};
    lines.push(
      `      <cpu amount="${esc(c.amount ?? 0)}" clock="${esc(c.clock ?? 0)}" name="${esc(c.name)}" type="${esc(c.type)}"/>`,
    );
    lines.push(`      <ram dimension="${esc(n.ram)}"/>`);
    lines.push(`      <hd dimension="${esc(gib(n.disk))}"/>`);
    if (n.interfaces.length) {
      lines.push('      <network_interfaces>');
      for (const i of n.interfaces) {
        const attrs = [`name="${esc(i.name)}"`];
        if (i.mac) attrs.unshift(`MAC="${esc(i.mac)}"`);
        attrs.push(`type="${esc(i.type)}"`);
        if (i.address) attrs.push(`address="${esc(i.address)}"`);
        lines.push(`        <interface ${attrs.join(' ')}>`);
        if (i.binding && i.binding !== 'unspecified') {
          lines.push(`          <interface_binding type="${i.binding === 'hif' ? 'HIF' : esc(i.binding)}"/>`);
        }
        if (i.entry_point) {
          const home = i.entry_point.home_address ? ` home_address="${esc(i.entry_point.home_address)}"` : '';
          lines.push(`          <entry_point${home}/>`);
        }
        lines.push('        </interface>');
      }
      lines.push('      </network_interfaces>');
    }
    const os = n.os || {};
    const password = os.password ? ` password="${esc(os.password)}"` : '';
    lines.push(`      <operative_system name="${esc(os.name)}"${password} username="${esc(os.username)}"/>`);
    const sw = n.software || {};
    const items = sw.software || [];
    if (sw.ssh_port == null && !items.length) {
      lines.push(`      <software_configuration template="${esc(sw.template)}"/>`);
    } else {
      lines.push(`      <software_configuration template="${esc(sw.template)}">`);
      if (sw.ssh_port != null) lines.push(`        <sshServer port="${esc(sw.ssh_port)}"/>`);
      for (const s of items) {
        lines.push(`        <software name="${esc(s.name)}" type="${esc(s.type)}" version="${esc(s.version)}"/>`);
      }
      lines.push('      </software_configuration>');
    }
    lines.push('    </node>');
    mark(`node:${n.id}`, from);
  }
  lines.push('  </nodes>');
  if (t.links.length) {
    lines.push('  <links>');
    for (const l of t.links) {
      const from = lines.length + 1;
      const subnet = l.subnet ? ` subnet="${esc(l.subnet)}"` : '';
      lines.push(`    <link id="${esc(l.id)}" type="${esc(l.type)}" bandwidth="${esc(l.bandwidth)}"${subnet}>`);
      for (const e of l.endpoints) lines.push(`      <endpoint node="${esc(e.node)}" interface="${esc(e.interface)}"/>`);
      lines.push('    </link>');
      mark(`link:${l.id}`, from);
    }
    lines.push('  </links>');
  }
  lines.push('</topology>');
  return { xml: `${lines.join('\n')}\n`, map };
}

const num = (v, fallback = 0) => {
  if (v == null || v === '') return fallback;
  const n = Number(v);
  return Number.isFinite(n) ? n : v;
};

// The paper's GiB with a decimal comma or point, as MiB (rounded up).
const mibOfGib = (v) => {
  const n = Number(String(v ?? '').replace(',', '.'));
  return v != null && v !== '' && Number.isFinite(n) ? Math.ceil(n * 1024) : v;
};

export class XmlImportError extends Error {}

// Reads the dialect into the model. Structure only: the Manager judges the
// values when the design is saved (and says where a problem is).
export function fromXml(text) {
  const doc = new DOMParser().parseFromString(text, 'application/xml');
  const broken = doc.querySelector('parsererror');
  if (broken) throw new XmlImportError(`not well-formed XML: ${broken.textContent.trim().split('\n')[0]}`);
  const root = doc.documentElement;
  if (root.nodeName !== 'topology') throw new XmlImportError(`the root element is <${root.nodeName}>, not <topology>`);
  const kids = (el, name) => (el ? [...el.children].filter((c) => c.nodeName === name) : []);
  const kid = (el, name) => kids(el, name)[0];
  const attr = (el, name, fallback = '') => (el && el.hasAttribute(name) ? el.getAttribute(name) : fallback);
  const t = { id: attr(root, 'id'), nodes: [], links: [] };
  for (const n of kids(kid(root, 'nodes'), 'node')) {
    const cpu = kid(n, 'cpu');
    const os = kid(n, 'operative_system');
    const sc = kid(n, 'software_configuration');
    const ssh = kid(sc, 'sshServer');
    const node = {
      id: attr(n, 'id'),
      name: (kid(n, 'name')?.textContent || '').trim(),
      description: (kid(n, 'description')?.textContent || '').trim(),
      cpu: { amount: num(attr(cpu, 'amount')), clock: num(attr(cpu, 'clock')), name: attr(cpu, 'name'), type: attr(cpu, 'type') },
      ram: num(attr(kid(n, 'ram'), 'dimension', null), null),
      disk: mibOfGib(attr(kid(n, 'hd'), 'dimension', null)),
      interfaces: kids(kid(n, 'network_interfaces'), 'interface').map((i) => {
        const binding = attr(kid(i, 'interface_binding'), 'type', '');
        const ep = kid(i, 'entry_point');
        const out = {
          name: attr(i, 'name'),
          mac: attr(i, 'MAC') || null,
          type: attr(i, 'type'),
          binding: binding === 'HIF' || binding === 'hif' ? 'hif' : binding || 'unspecified',
        };
        if (ep) out.entry_point = ep.hasAttribute('home_address') ? { home_address: ep.getAttribute('home_address') } : {};
        if (i.hasAttribute('address')) out.address = i.getAttribute('address');
        return out;
      }),
      os: { name: attr(os, 'name'), username: attr(os, 'username') },
      software: {
        template: attr(sc, 'template'),
        software: kids(sc, 'software').map((s) => ({ name: attr(s, 'name'), type: attr(s, 'type'), version: attr(s, 'version') })),
      },
    };
    if (os && attr(os, 'password')) node.os.password = attr(os, 'password');
    if (ssh) node.software.ssh_port = num(attr(ssh, 'port'));
    t.nodes.push(node);
  }
  for (const l of kids(kid(root, 'links'), 'link')) {
    const endpoints = kids(l, 'endpoint').map((e) => ({ node: attr(e, 'node'), interface: attr(e, 'interface') }));
    const link = {
      id: attr(l, 'id'),
      type: attr(l, 'type') || (endpoints.length > 2 ? 'lan' : 'point_to_point'),
      bandwidth: num(attr(l, 'bandwidth', null), null),
      endpoints,
    };
    if (l.hasAttribute('subnet')) link.subnet = l.getAttribute('subnet');
    t.links.push(link);
  }
  return t;
}

// The model as the API's JSON takes it (an OS password only when typed here).
export function toApiJson(t) {
  const copy = structuredClone(t);
  for (const n of copy.nodes) {
    if (n.os) delete n.os.password_set;
    for (const i of n.interfaces) if (!i.mac) i.mac = null;
  }
  return copy;
}

// Which element a problem concerns: `LINE:COL: MESSAGE` through the line map
// of the exported document, or a JSON pointer `/nodes/3/...`.
export function locate(problem, t, map) {
  const pos = /^(\d+):(\d+):\s*(.*)$/.exec(problem);
  if (pos) {
    const line = Number(pos[1]);
    const hit = map.find((m) => line >= m.from && line <= m.to);
    return { key: hit ? hit.key : null, message: pos[3], where: `${pos[1]}:${pos[2]}` };
  }
  const ptr = /^\/(nodes|links)\/(\d+)[^:]*:\s*(.*)$/.exec(problem);
  if (ptr) {
    const list = ptr[1] === 'nodes' ? t.nodes : t.links;
    const el = list[Number(ptr[2])];
    return { key: el ? `${ptr[1] === 'nodes' ? 'node' : 'link'}:${el.id}` : null, message: ptr[3], where: '' };
  }
  return { key: null, message: problem, where: '' };
}
