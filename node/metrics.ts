/**
 * fleetmesh's metrics, one interface for every node (vehicles, clients,
 * gateways), kept in a prom-client registry. libp2p's own metrics (transport,
 * DHT, gossip; @libp2p/prometheus-metrics) go into the same registry, so
 * `GET /metrics` shows both. Each node has its own registry, so many nodes
 * can share a process (tests, a gateway on a vehicle).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

const MS_BUCKETS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]

export type Direction = 'in' | 'out'

export class FleetMetrics {
  readonly registry: Registry
  private readonly stageRuns: Histogram<'stage'>
  private readonly refusals: Counter<'code'>
  private readonly streamRefusals: Counter<'protocol'>
  private readonly bytesMoved: Counter<'protocol' | 'direction'>
  private readonly jobs: Counter<'outcome'>
  private readonly jobMs: Histogram
  private readonly hopMs: Histogram<'stage'>
  private processMetrics = false

  constructor (registry = new Registry()) {
    this.registry = registry
    const registers = [registry]
    this.stageRuns = new Histogram({ name: 'fleetmesh_stage_run_ms', help: 'Run time of one stage on this node, ms.', labelNames: ['stage'], buckets: MS_BUCKETS, registers })
    this.refusals = new Counter({ name: 'fleetmesh_refusals_total', help: 'Requests this node refused, by error code.', labelNames: ['code'], registers })
    this.streamRefusals = new Counter({ name: 'fleetmesh_streams_refused_total', help: 'Inbound streams refused because their peer opened them faster than the protocol\'s rate, by protocol.', labelNames: ['protocol'], registers })
    this.bytesMoved = new Counter({ name: 'fleetmesh_bytes_total', help: 'Payload bytes moved by fleetmesh protocols, by protocol and direction.', labelNames: ['protocol', 'direction'], registers })
    this.jobs = new Counter({ name: 'fleetmesh_jobs_total', help: 'Jobs run through the mesh from this node, by outcome.', labelNames: ['outcome'], registers })
    this.jobMs = new Histogram({ name: 'fleetmesh_job_latency_ms', help: 'Whole job as this node (the client) saw it, ms.', buckets: MS_BUCKETS, registers })
    this.hopMs = new Histogram({ name: 'fleetmesh_hop_stage_ms', help: 'Stage run times reported by the hops of this node\'s jobs, ms.', labelNames: ['stage'], buckets: MS_BUCKETS, registers })
  }

  /** A stage ran here (`stage`: manifest CID suffix and index, e.g. `…7tab/1`). */
  stageRun (stage: string, ms: number): void { this.stageRuns.observe({ stage }, ms) }
  /** A request was refused with `code`. */
  refused (code: string): void { this.refusals.inc({ code }) }
  /** An inbound stream of `protocol` was refused: its peer opened them too fast. */
  streamRefused (protocol: string): void { this.streamRefusals.inc({ protocol }) }
  bytes (protocol: string, direction: Direction, n: number): void { if (n > 0) this.bytesMoved.inc({ protocol, direction }, n) }
  /** A job from this node ended; its hops' stage times when it completed. */
  job (outcome: 'ok' | 'failed', result?: { ms: number, hops: Array<{ stage: number, ms: number }> }): void {
    this.jobs.inc({ outcome })
    if (result === undefined) return
    this.jobMs.observe(result.ms)
    for (const h of result.hops) this.hopMs.observe({ stage: String(h.stage) }, h.ms)
  }

  /** A gauge read at scrape time. */
  gauge (name: string, help: string, read: () => number): void {
    if (this.registry.getSingleMetric(name) !== undefined) this.registry.removeSingleMetric(name)
    new Gauge({ name, help, registers: [this.registry], collect () { this.set(read()) } }) // eslint-disable-line no-new
  }

  /**
   * Prometheus text exposition of every metric in the registry. The first
   * call starts the process's own metrics (`nodejs_*`, `process_*`), which
   * sample the event loop every 10 ms and observe every GC from then on;
   * started with the node, they were half an idle vehicle's CPU (README).
   */
  async render (): Promise<{ contentType: string, text: string }> {
    if (!this.processMetrics) {
      this.processMetrics = true
      collectDefaultMetrics({ register: this.registry })
    }
    return { contentType: this.registry.contentType, text: await this.registry.metrics() }
  }
}
