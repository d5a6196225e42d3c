/**
 * The simulated day as a picture: cars eligible (area, share of the fleet),
 * jobs completed and failed per hour (bars), p95 latency and control bytes
 * per car (lines, right axes). Plain SVG, no dependencies.
 */
import type { SimResult } from './run.ts'

const W = 900; const H = 420; const L = 70; const R = 90; const T = 50; const B = 60

export function daySvg (r: SimResult): string {
  const hours = r.hourly.length
  const x = (h: number): number => L + (W - L - R) * h / Math.max(1, hours)
  const bw = (W - L - R) / Math.max(1, hours) * 0.6
  const y = (v: number, max: number): number => H - B - (H - T - B) * (max > 0 ? v / max : 0)
  const maxJobs = Math.max(1, ...r.hourly.map(h => h.jobs))
  const maxCtl = Math.max(1, ...r.hourly.map(h => h.controlInPerVehiclePerS + h.controlOutPerVehiclePerS))
  const area = r.hourly.map(h => `${x(h.hour + 0.5).toFixed(1)},${y(h.eligible, r.vehicles).toFixed(1)}`).join(' ')
  const ctl = r.hourly.map(h => `${x(h.hour + 0.5).toFixed(1)},${y(h.controlInPerVehiclePerS + h.controlOutPerVehiclePerS, maxCtl).toFixed(1)}`).join(' ')
  const bars = r.hourly.map(h => {
    const x0 = x(h.hour + 0.5) - bw / 2
    return `<rect x="${x0.toFixed(1)}" y="${y(h.completed, maxJobs).toFixed(1)}" width="${bw.toFixed(1)}" height="${(H - B - y(h.completed, maxJobs)).toFixed(1)}" fill="#6a9fd8" opacity="0.7"/>` +
      (h.failed > 0 ? `<rect x="${x0.toFixed(1)}" y="${y(h.jobs, maxJobs).toFixed(1)}" width="${bw.toFixed(1)}" height="${(y(h.completed, maxJobs) - y(h.jobs, maxJobs)).toFixed(1)}" fill="#d86a6a"/>` : '')
  }).join('')
  const ticks = r.hourly.filter(h => h.hour % 3 === 0).map(h => `<text x="${x(h.hour + 0.5).toFixed(1)}" y="${H - B + 18}" font-size="11" text-anchor="middle">${h.hour % 24}h</text>`).join('')
  const label = (v: number, max: number, xx: number, anchor: string, fmt: (v: number) => string): string => `<text x="${xx}" y="${(y(v, max) + 4).toFixed(1)}" font-size="11" text-anchor="${anchor}">${fmt(v)}</text>`
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${L}" y="24" font-size="15">fleetmesh sim: ${r.vehicles.toLocaleString('en')} cars in cells of ${r.cellSize}, ${r.hours} h</text>
<text x="${L}" y="40" font-size="11" fill="#555">green: cars eligible (left axis, share of fleet); bars: jobs per hour (blue done, red failed); orange: control bytes/s per car (right axis)</text>
<polygon points="${x(0.5).toFixed(1)},${H - B} ${area} ${x(hours - 0.5).toFixed(1)},${H - B}" fill="#7bc47f" opacity="0.35"/>
<polyline points="${area}" fill="none" stroke="#3a8f3e" stroke-width="2"/>
${bars}
<polyline points="${ctl}" fill="none" stroke="#e08a2c" stroke-width="2"/>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/>
<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
<line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#333"/>
${[0, 0.5, 1].map(f => label(f * r.vehicles, r.vehicles, L - 6, 'end', v => `${Math.round(100 * v / r.vehicles)}%`)).join('')}
${[0, 0.5, 1].map(f => label(f * maxCtl, maxCtl, W - R + 6, 'start', v => `${Math.round(v)} B/s`)).join('')}
${ticks}
</svg>
`
}
