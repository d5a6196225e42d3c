/**
 * A few Prometheus metrics in text exposition format, no dependencies:
 * counters, gauges read at scrape time, and fixed-bucket histograms.
 */
const LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]

type Labels = Record<string, string>
const key = (l: Labels): string => Object.entries(l).sort().map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',')

class Histogram {
  readonly counts = new Map<string, { labels: Labels, buckets: number[], sum: number, count: number }>()
  observe (labels: Labels, v: number): void {
    const k = key(labels)
    let h = this.counts.get(k)
    if (h === undefined) { h = { labels, buckets: LATENCY_BUCKETS_MS.map(() => 0), sum: 0, count: 0 }; this.counts.set(k, h) }
    LATENCY_BUCKETS_MS.forEach((b, i) => { if (v <= b) h.buckets[i]++ })
    h.sum += v
    h.count++
  }
}

export class Metrics {
  private readonly counters = new Map<string, { help: string, values: Map<string, number> }>()
  private readonly gauges = new Map<string, { help: string, read: () => number }>()
  private readonly histograms = new Map<string, { help: string, h: Histogram }>()

  inc (name: string, help: string, labels: Labels = {}, by = 1): void {
    let c = this.counters.get(name)
    if (c === undefined) { c = { help, values: new Map() }; this.counters.set(name, c) }
    const k = key(labels)
    c.values.set(k, (c.values.get(k) ?? 0) + by)
  }

  gauge (name: string, help: string, read: () => number): void { this.gauges.set(name, { help, read }) }

  observe (name: string, help: string, labels: Labels, v: number): void {
    let h = this.histograms.get(name)
    if (h === undefined) { h = { help, h: new Histogram() }; this.histograms.set(name, h) }
    h.h.observe(labels, v)
  }

  /** Prometheus text format (version 0.0.4). */
  render (): string {
    const out: string[] = []
    for (const [name, c] of this.counters) {
      out.push(`# HELP ${name} ${c.help}`, `# TYPE ${name} counter`)
      for (const [k, v] of c.values) out.push(`${name}${k === '' ? '' : `{${k}}`} ${v}`)
    }
    for (const [name, g] of this.gauges) out.push(`# HELP ${name} ${g.help}`, `# TYPE ${name} gauge`, `${name} ${g.read()}`)
    for (const [name, { help, h }] of this.histograms) {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`)
      for (const e of h.counts.values()) {
        const base = key(e.labels)
        LATENCY_BUCKETS_MS.forEach((b, i) => { out.push(`${name}_bucket{${base}${base === '' ? '' : ','}le="${b}"} ${e.buckets[i]}`) })
        const braces = base === '' ? '' : `{${base}}`
        out.push(`${name}_bucket{${base}${base === '' ? '' : ','}le="+Inf"} ${e.count}`, `${name}_sum${braces} ${e.sum}`, `${name}_count${braces} ${e.count}`)
      }
    }
    return out.join('\n') + '\n'
  }
}
