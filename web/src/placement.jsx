// A VI drawn on its placement: datacenters and hosts as compound nodes
// around the VMs they run, VMs coloured by state, links between them (a cut
// link, between two hosts, dashed red). With `onMove`, an administrator drags
// VMs onto other hosts (a manual placement).
import { useEffect, useRef } from 'preact/hooks';
import { designElements, fitGraph, makeGraph, placementElements, placementPositions, portsFollow } from './graph.js';

export function PlacementGraph({ topology, placement, hosts, states = {}, labels = {}, onMove, onSelect, testid = 'placement' }) {
  const box = useRef(null);
  const cy = useRef(null);
  const callbacks = useRef({});
  callbacks.current = { onMove, onSelect };

  const key = JSON.stringify([topology, placement, hosts.map((h) => [h.name, h.datacenter, h.used_vcpus, h.used_ram_mib]), states, labels]);
  useEffect(() => {
    if (!topology) return undefined;
    const datacenters = [...new Set(hosts.map((h) => h.datacenter))];
    const onHost = {};
    for (const [node, host] of Object.entries(placement)) (onHost[host] ||= []).push(node);
    const { positions, hostPos } = placementPositions(hosts, datacenters, onHost);
    const elements = [
      ...placementElements(hosts, datacenters).map((e) => (hostPos[e.data.host] ? { ...e, position: hostPos[e.data.host] } : e)),
      ...designElements(topology, { positions, state: states, labels, parent: placement }),
    ];
    const g = makeGraph(box.current, elements);
    cy.current = g;
    window.neptunePlacement = g;
    portsFollow(g);
    g.nodes('node.port').remove();
    g.nodes('node.vm').addClass('placed');
    // A LAN joins VMs on any hosts: drawn below the datacenters, under the
    // middle of its VMs.
    const below = g.nodes('node.vm').boundingBox().y2 + 110;
    g.nodes('node.lan').forEach((lan, k) => {
      const ends = lan.neighborhood('node.vm').boundingBox();
      lan.position({ x: (ends.x1 + ends.x2) / 2, y: below + k * 40 });
    });
    // Interface names crowd VMs side by side in a host: the tables say them.
    g.edges().data({ sourceLabel: '', targetLabel: '' });
    g.edges().forEach((e) => {
      const a = e.source().parent();
      const b = e.target().parent();
      if (a.length && b.length && a.id() !== b.id()) e.addClass('cut');
    });
    fitGraph(g, 30);
    g.on('select', 'node.vm', (e) => callbacks.current.onSelect?.(e.target.data('node')));
    if (onMove) {
      // The host under the dropped VM, if any, is its new host.
      g.on('free', 'node.vm', (e) => {
        const vm = e.target;
        const p = vm.position();
        const target = g.nodes('node.host').filter((h) => {
          if (h.id() === vm.parent().id()) return false;
          const bb = h.boundingBox();
          return p.x >= bb.x1 && p.x <= bb.x2 && p.y >= bb.y1 && p.y <= bb.y2;
        })[0];
        if (target) callbacks.current.onMove?.(vm.data('node'), target.data('host'));
        else g.emit('neptune:redraw');
      });
    } else {
      g.autoungrabify(true);
    }
    return () => g.destroy();
  }, [key]);

  return <div class="canvas placement" ref={box} data-testid={testid} aria-label="Placement of the VI on hosts" />;
}
