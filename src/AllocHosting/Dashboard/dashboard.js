// AllocHosting allocator dashboard: polls the JSON next to this page and draws SVG charts by hand.
// The snapshots are cumulative; rates and per-interval percentiles come from two consecutive ones.
(() => {
  'use strict';

  const SVG = 'http://www.w3.org/2000/svg';
  const WIDTH = 640, HEIGHT = 220, LEFT = 64, RIGHT = 10, TOP = 10, BOTTOM = 24;
  const WINDOW = 120;  // points kept and drawn
  const MIN_SPAN = 20; // the x axis never spans fewer intervals than this
  const COLORS = {
    request: '#2563eb', thread: '#16a34a', global: '#d97706', unknown: '#6b7280',
    p50: '#2563eb', p95: '#7c3aed', p99: '#dc2626',
    rents: '#2563eb', overflowed: '#d97706', rejected: '#dc2626', failures: '#6b7280',
    gen0: '#2563eb', gen1: '#7c3aed', gen2: '#dc2626',
  };
  const NODE_COLORS = ['#2563eb', '#16a34a', '#d97706', '#7c3aed', '#dc2626', '#0891b2', '#65a30d', '#db2777'];

  const body = document.body;
  const source = body.dataset.source;
  const query = new URLSearchParams(location.search);
  const interval = Math.min(Math.max(Number(query.get('interval')) || 1000, 100), 60000);

  let previous = null; // the last snapshot
  const points = [];   // what the charts draw, one per interval

  const bytes = (value) => {
    if (value === null || value === undefined || !Number.isFinite(value)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Math.abs(value), i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    const text = i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 1 : 0);
    return (value < 0 ? '-' : '') + text + ' ' + units[i];
  };
  const bytesPerSecond = (value) => value === null || value === undefined ? '–' : bytes(value) + '/s';
  const perSecond = (value) => {
    if (value === null || value === undefined || !Number.isFinite(value)) return '–';
    if (value === 0) return '0/s';
    return (value >= 100 ? Math.round(value).toString() : value.toFixed(value >= 10 ? 1 : 2)) + '/s';
  };
  const count = (value) => value === null || value === undefined ? '–' : Math.round(value).toLocaleString('en-US');

  // histogram_quantile over one interval: linear inside the bucket, the last boundary for the +Inf bucket.
  function quantile(q, boundaries, counts) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      if (counts[i] > 0 && seen + counts[i] >= rank) {
        if (i >= boundaries.length) return boundaries[boundaries.length - 1];
        const lower = i === 0 ? 0 : boundaries[i - 1], upper = boundaries[i];
        return lower + (upper - lower) * (rank - seen) / counts[i];
      }
      seen += counts[i];
    }
    return boundaries[boundaries.length - 1];
  }

  const sum = (object) => Object.values(object || {}).reduce((a, b) => a + b, 0);
  const rate = (now, before, seconds) => Math.max(0, (now - before) / seconds);
  const mappedByNode = (snapshot) => Object.fromEntries((snapshot.numa.mapped || []).map((m) => [String(m.node), m.bytes]));

  function derive(before, now) {
    const seconds = Math.max((now.timestamp - before.timestamp) / 1000, 0.001);
    const diff = now.used.buckets.map((c, i) => c - (before.used.buckets[i] || 0));
    const allocated = {};
    for (const [name, value] of Object.entries(now.allocated)) {
      allocated[name] = rate(value, before.allocated[name] || 0, seconds);
    }
    return {
      time: now.timestamp,
      p50: quantile(0.5, now.used.boundaries, diff),
      p95: quantile(0.95, now.used.boundaries, diff),
      p99: quantile(0.99, now.used.boundaries, diff),
      live: { ...now.live },
      allocated,
      rents: rate(now.rents, before.rents, seconds),
      overflowed: rate(now.overflowed, before.overflowed, seconds),
      rejected: rate(now.rejected, before.rejected, seconds),
      failures: rate(sum(now.failures), sum(before.failures), seconds),
      mapped: mappedByNode(now),
      gen0: rate(now.gc.gen0, before.gc.gen0, seconds),
      gen1: rate(now.gc.gen1, before.gc.gen1, seconds),
      gen2: rate(now.gc.gen2, before.gc.gen2, seconds),
    };
  }

  function element(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  // A round top for the y axis: 1, 2 or 5 times a power of ten (or of 1024 for bytes).
  function niceMax(value, binary) {
    if (!(value > 0)) return binary ? 1024 : 1;
    const base = binary && value >= 1024 ? 1024 : 10;
    let magnitude = 1;
    while (magnitude * base <= value) magnitude *= base;
    for (const step of binary && base === 1024 ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] : [1, 2, 5, 10]) {
      if (magnitude * step >= value) return magnitude * step;
    }
    return magnitude * base;
  }

  function legend(figure, entries) {
    const list = figure.querySelector('.legend');
    list.replaceChildren();
    for (const entry of entries) {
      const item = document.createElement('li');
      item.dataset.series = entry.name;
      item.dataset.latest = entry.latest === null || entry.latest === undefined ? '' : String(entry.latest);
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = entry.color;
      item.append(swatch, `${entry.name}: ${entry.text}`);
      list.appendChild(item);
    }
  }

  // series: [{ name, color, values: [number|null per point] }]
  function lineChart(id, series, format, binary) {
    const figure = document.getElementById(id);
    const svg = figure.querySelector('svg');
    svg.replaceChildren();
    const values = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
    const max = values.length ? Math.max(...values) : 0;
    figure.dataset.max = String(max);
    const top = niceMax(max, binary);
    const plotWidth = WIDTH - LEFT - RIGHT, plotHeight = HEIGHT - TOP - BOTTOM;
    for (const fraction of [0, 0.5, 1]) {
      const y = TOP + plotHeight * (1 - fraction);
      element('line', { class: 'grid', x1: LEFT, x2: WIDTH - RIGHT, y1: y, y2: y }, svg);
      element('text', { x: LEFT - 6, y: y + 4, 'text-anchor': 'end' }, svg).textContent = format(top * fraction);
    }
    // The x axis spans the points there are (at least MIN_SPAN intervals), up to the whole window.
    const span = Math.max(points.length, MIN_SPAN) - 1;
    const seconds = Math.round(span * interval / 1000);
    element('text', { x: LEFT, y: HEIGHT - 6 }, svg).textContent = `−${seconds} s`;
    element('text', { x: WIDTH - RIGHT, y: HEIGHT - 6, 'text-anchor': 'end' }, svg).textContent = 'now';
    const x = (i, n) => LEFT + plotWidth * (span - (n - 1 - i)) / span;
    const y = (v) => TOP + plotHeight * (1 - v / top);
    for (const s of series) {
      let path = '', pen = false;
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { pen = false; return; }
        path += `${pen ? 'L' : 'M'}${x(i, s.values.length).toFixed(1)} ${y(v).toFixed(1)} `;
        pen = true;
      });
      if (path) element('path', { class: 'line', d: path.trim(), stroke: s.color, 'data-series': s.name }, svg);
    }
    if (!points.length) {
      element('text', { class: 'empty', x: LEFT + plotWidth / 2, y: TOP + plotHeight / 2, 'text-anchor': 'middle' }, svg).textContent = 'Waiting for data…';
    }
    legend(figure, series.map((s) => {
      const latest = s.values.length ? s.values[s.values.length - 1] : null;
      return { name: s.name, color: s.color, latest, text: format(latest) };
    }));
  }

  function barChart(id, entries, format) {
    const figure = document.getElementById(id);
    const svg = figure.querySelector('svg');
    svg.replaceChildren();
    const total = entries.reduce((a, e) => a + e.value, 0);
    figure.dataset.max = String(entries.length ? Math.max(...entries.map((e) => e.value)) : 0);
    if (!entries.length) {
      element('text', { class: 'empty', x: WIDTH / 2, y: HEIGHT / 2, 'text-anchor': 'middle' }, svg).textContent = 'Nothing mapped yet';
    }
    const rowHeight = Math.min(36, (HEIGHT - TOP - BOTTOM) / Math.max(entries.length, 1));
    const plotWidth = WIDTH - LEFT - RIGHT - 120;
    entries.forEach((e, i) => {
      const y = TOP + i * rowHeight;
      const width = total > 0 ? plotWidth * e.value / total : 0;
      element('text', { x: LEFT - 6, y: y + rowHeight / 2 + 4, 'text-anchor': 'end' }, svg).textContent = e.name;
      element('rect', { x: LEFT, y: y + 4, width: Math.max(width, e.value > 0 ? 2 : 0), height: rowHeight - 8, rx: 3, fill: e.color, 'data-series': e.name }, svg);
      const share = total > 0 ? Math.round(100 * e.value / total) : 0;
      element('text', { x: LEFT + width + 8, y: y + rowHeight / 2 + 4 }, svg).textContent = `${format(e.value)} (${share} %)`;
    });
    legend(figure, entries.map((e) => ({ name: e.name, color: e.color, latest: e.value, text: format(e.value) })));
  }

  const column = (key) => points.map((p) => (p[key] === undefined ? null : p[key]));
  const nested = (key, name) => points.map((p) => (p[key] && p[key][name] !== undefined ? p[key][name] : null));
  const names = (key) => [...new Set(points.flatMap((p) => Object.keys(p[key] || {})))].sort(byAllocator);
  function byAllocator(a, b) {
    const order = ['request', 'thread', 'global'];
    return (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b);
  }

  function render(snapshot) {
    const last = points[points.length - 1];
    lineChart('chart-used', ['p50', 'p95', 'p99'].map((q) => ({ name: q, color: COLORS[q], values: column(q) })), bytes, true);
    lineChart('chart-live', names('live').map((n) => ({ name: n, color: COLORS[n] || COLORS.unknown, values: nested('live', n) })), bytes, true);
    lineChart('chart-rents', [{ name: 'rents', color: COLORS.rents, values: column('rents') }], perSecond, false);
    lineChart('chart-allocated', names('allocated').map((n) => ({ name: n, color: COLORS[n] || COLORS.unknown, values: nested('allocated', n) })), bytesPerSecond, true);
    lineChart('chart-pressure', ['overflowed', 'rejected', 'failures'].map((k) => ({ name: k, color: COLORS[k], values: column(k) })), perSecond, false);
    const nodes = (snapshot.numa.mapped || []).map((m, i) => ({
      name: m.node < 0 ? 'unbound' : `node ${m.node}`, value: m.bytes, color: NODE_COLORS[i % NODE_COLORS.length],
    }));
    barChart('chart-numa', nodes, bytes);
    lineChart('chart-gc', ['gen0', 'gen1', 'gen2'].map((g) => ({ name: g, color: COLORS[g], values: column(g) })), perSecond, false);

    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set('tile-rents', last ? perSecond(last.rents) : '–');
    set('tile-active', count(snapshot.active));
    set('tile-live', bytes(sum(snapshot.live)));
    set('tile-overflowed', count(snapshot.overflowed));
    set('tile-rejected', count(snapshot.rejected));
    set('tile-mapped', bytes((snapshot.numa.mapped || []).reduce((a, m) => a + m.bytes, 0)));
    set('tile-gc', last ? perSecond(last.gen0) : '–');
    const a = snapshot.arena;
    set('config', `${a.kind === 'bump' ? 'Bump' : 'Bit set'} arenas in chunks of ${bytes(a.chunkSize)}, up to ${bytes(a.maxPerRequest)} a request, ` +
      `${bytes(a.budget)} in all · ${snapshot.numa.nodes} NUMA node${snapshot.numa.nodes === 1 ? '' : 's'} · ` +
      `${count(snapshot.used.count)} requests rented since start · sampled every ${interval / 1000} s`);
  }

  function status(text, error) {
    const element = document.getElementById('status');
    element.textContent = text;
    element.classList.toggle('error', !!error);
  }

  async function poll() {
    try {
      const response = await fetch(source, { cache: 'no-store', headers: { accept: 'application/json' } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const snapshot = await response.json();
      if (previous && (snapshot.rents < previous.rents || snapshot.timestamp <= previous.timestamp)) {
        points.length = 0; // the app restarted: its counters began again
      } else if (previous) {
        points.push(derive(previous, snapshot));
        if (points.length > WINDOW) points.shift();
      }
      previous = snapshot;
      body.dataset.samples = String(Number(body.dataset.samples || 0) + 1);
      render(snapshot);
      status(`Live · updated ${new Date(snapshot.timestamp).toLocaleTimeString()}`, false);
    } catch (error) {
      status(`Cannot read ${source}: ${error.message}. Retrying.`, true);
    } finally {
      setTimeout(poll, interval);
    }
  }

  poll();
})();
