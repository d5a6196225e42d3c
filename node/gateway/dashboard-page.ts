/**
 * The dashboard page: one HTML document with its style and script inline
 * (no network beyond this gateway), fed by `/dashboard/events` (dashboard.ts).
 * Elements carry ids and data attributes so the browser test can read what
 * it shows.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetmesh dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#d8dee4}
 header{display:flex;gap:24px;align-items:baseline;padding:12px 20px;background:#161b22;border-bottom:1px solid #30363d}
 h1{font-size:18px;margin:0} h2{font-size:14px;margin:0 0 8px;color:#8b949e;text-transform:uppercase;letter-spacing:.05em}
 .kpi b{font-size:20px;color:#fff} .kpi{color:#8b949e}
 main{display:grid;grid-template-columns:3fr 2fr;gap:16px;padding:16px 20px}
 section{background:#161b22;border:1px solid #30363d;border-radius:6px;padding:12px}
 table{border-collapse:collapse;width:100%} td,th{padding:4px 6px;text-align:left;border-bottom:1px solid #21262d;white-space:nowrap}
 th{color:#8b949e;font-weight:normal} .ok{color:#3fb950} .no{color:#f85149} .why{color:#8b949e;white-space:normal;font-size:12px}
 .bar{display:inline-block;height:10px;background:#238636;margin-right:2px;border-radius:2px;vertical-align:middle}
 .bar.zero{background:#f85149;width:10px} ol{margin:0;padding-left:18px;max-height:260px;overflow:auto} li{margin:2px 0}
 .join,.back{color:#3fb950} .departure,.failed{color:#f0883e} .failover{color:#d29922} .conviction{color:#f85149}
 #state{color:#8b949e} svg text{fill:#d8dee4;font-size:11px}
</style></head><body>
<header><h1>fleetmesh</h1><span class="kpi">node <b id="node">…</b></span>
<span class="kpi">vehicles <b id="eligible">0</b>/<b id="vehicle-count">0</b> eligible</span>
<span class="kpi">jobs <b id="jobs-total">0</b> (<b id="jobs-failed">0</b> failed)</span>
<span class="kpi"><b id="jobs-rate">0</b> jobs/s</span><span class="kpi">p50 <b id="latency">–</b> ms</span>
<span id="state">connecting…</span></header>
<main>
<section style="grid-column:1/3"><h2>Vehicles</h2><table><thead><tr><th>vehicle</th><th>eligible</th><th>charge</th><th>temp</th><th>charger</th><th>network</th><th>departs in</th><th>stages</th><th>load</th><th>heard</th></tr></thead><tbody id="vehicles"></tbody></table></section>
<section><h2>Jobs per second and p50 latency, last 2 minutes</h2><svg id="jobs-chart" width="100%" height="140" viewBox="0 0 600 140" preserveAspectRatio="none"></svg></section>
<section><h2>Models: vehicles per stage</h2><div id="models"></div></section>
<section><h2>Routes: stage to stage</h2><svg id="routes" width="100%" height="220" viewBox="0 0 600 220"></svg></section>
<section><h2>Events</h2><ol id="events"></ol></section>
</main>
<script>
const $ = id => document.getElementById(id)
const esc = s => String(s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]))
const fmt = (v, unit) => v === undefined || v === null ? '–' : v + unit
function render (d) {
  $('node').textContent = d.node
  $('vehicle-count').textContent = d.vehicles.length
  $('eligible').textContent = d.vehicles.filter(v => v.eligible).length
  $('jobs-total').textContent = d.jobs.total
  $('jobs-failed').textContent = d.jobs.failed
  $('jobs-rate').textContent = d.jobs.perS
  $('latency').textContent = d.jobs.p50Ms ?? '–'
  $('vehicles').innerHTML = d.vehicles.map(v => '<tr data-peer="' + esc(v.peer) + '" data-eligible="' + v.eligible + '"><td>' + esc(v.short) + '</td><td>' +
    (v.eligible ? '<span class="ok">yes</span>' : '<span class="no">no</span><div class="why">' + esc(v.reasons.join('; ')) + '</div>') + '</td><td>' + fmt(v.socPct, '%') + '</td><td>' + fmt(v.computeTempC, ' °C') +
    '</td><td>' + fmt(v.chargerKw, ' kW') + '</td><td>' + esc(v.network ?? '–') + '</td><td>' + fmt(v.departureMin, ' min') + '</td><td class="stages">' + v.stages.join(', ') +
    '</td><td>' + v.load + ' / ' + (v.load + v.slots) + '</td><td>' + v.heardS + ' s</td></tr>').join('')
  $('models').innerHTML = d.models.map(m => '<div class="model" data-name="' + esc(m.name) + '"><b>' + esc(m.name) + '@' + esc(m.version) + '</b><table>' +
    m.stages.map(s => '<tr class="stage" data-stage="' + s.stage + '" data-holders="' + s.holders + '"><td>stage ' + s.stage + '</td><td>' +
      (s.holders === 0 ? '<span class="bar zero"></span> none' : '<span class="bar" style="width:' + (14 * s.holders) + 'px"></span> ' + s.holders) + '</td></tr>').join('') + '</table></div>').join('')
  chart(d.jobs.history, d.at)
  routes(d.flows)
  $('events').innerHTML = d.events.map(e => '<li class="' + e.kind + '">' + new Date(e.at).toLocaleTimeString() + ' ' + esc(e.text) + '</li>').join('')
}
function chart (h, at) {
  const now = Math.floor(at / 1000), x = t => 600 - (now - t) * 5
  const maxJ = Math.max(1, ...h.map(s => s.ok)), maxL = Math.max(1, ...h.map(s => s.p50Ms ?? 0))
  const bars = h.map(s => '<rect x="' + (x(s.t) - 4) + '" y="' + (130 - 110 * s.ok / maxJ) + '" width="4" height="' + (110 * s.ok / maxJ) + '" fill="#238636"/>').join('')
  const pts = h.filter(s => s.p50Ms !== null).map(s => x(s.t) + ',' + (130 - 110 * s.p50Ms / maxL)).join(' ')
  $('jobs-chart').innerHTML = bars + '<polyline points="' + pts + '" fill="none" stroke="#d29922" stroke-width="2"/><text x="4" y="12">' + maxJ + ' jobs/s</text><text x="520" y="12" style="fill:#d29922">' + maxL + ' ms</text>'
}
function routes (flows) {
  const stages = [...new Set(flows.flatMap(f => [f.stage, f.stage + 1]))].sort((a, b) => a - b)
  if (stages.length === 0) { $('routes').innerHTML = '<text x="10" y="20">no jobs yet</text>'; return }
  const col = s => 40 + (s - stages[0]) * (520 / Math.max(1, stages.length - 1))
  const peersAt = s => [...new Set(flows.flatMap(f => (f.stage === s ? [f.from] : []).concat(f.stage + 1 === s ? [f.to] : [])))].sort()
  const pos = {}
  for (const s of stages) peersAt(s).forEach((p, i, all) => { pos[s + '|' + p] = [col(s), 30 + i * (180 / Math.max(1, all.length))] })
  const maxN = Math.max(...flows.map(f => f.n))
  const lines = flows.map(f => { const a = pos[f.stage + '|' + f.from], b = pos[(f.stage + 1) + '|' + f.to]
    return '<line class="flow" data-from="' + esc(f.from) + '" data-to="' + esc(f.to) + '" data-n="' + f.n + '" x1="' + a[0] + '" y1="' + a[1] + '" x2="' + b[0] + '" y2="' + b[1] + '" stroke="#388bfd" stroke-opacity=".7" stroke-width="' + (1 + 9 * f.n / maxN) + '"/>' }).join('')
  const nodes = Object.entries(pos).map(([k, [x, y]]) => '<circle cx="' + x + '" cy="' + y + '" r="6" fill="#d8dee4"/><text x="' + (x + 9) + '" y="' + (y + 4) + '">' + esc(k.split('|')[1]) + '</text>').join('')
  const heads = stages.map(s => '<text x="' + (col(s) - 16) + '" y="14">stage ' + s + '</text>').join('')
  $('routes').innerHTML = heads + lines + nodes
}
const token = new URLSearchParams(location.search).get('token')
const es = new EventSource('/dashboard/events' + (token ? '?token=' + encodeURIComponent(token) : ''))
es.onmessage = e => { $('state').textContent = 'live'; document.body.dataset.updated = String(Date.now()); render(JSON.parse(e.data)) }
es.onerror = () => { $('state').textContent = 'reconnecting…' }
</script></body></html>
`
