/**
 * `fleetmesh swarm`: a whole mesh on this machine. One bootstrap peer and N
 * vehicle nodes, each its own process on loopback; this process is the
 * client peer: it shards the model, seeds the shards, waits until every stage
 * is served, runs the jobs as pipelines across vehicles, checks every result
 * against the whole model run locally, prints a summary and shuts down.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FleetClient } from '../../client/client.ts'
import { textOf } from '../../client/inputs.ts'
import { BatchRunner } from '../../client/batch.ts'
import { Gateway } from '../../gateway/server.ts'
import { parseCid } from '../../models/cid.ts'
import { DEFAULT_MODEL, modelSource } from '../../models/catalog.ts'
import type { ModelSource } from '../../models/catalog.ts'
import { shardModel } from '../../models/manifest.ts'
import type { ShardedModel } from '../../models/manifest.ts'
import { createSession, runSession } from '../../models/ort.ts'
import { sampleTensor } from '../../models/partition.ts'
import { placeStages } from '../../scheduler/placement.ts'
import type { SimSchedule } from '../../vehicle/sources.ts'
import { maxAbsDiff } from '../../../protocols/tensor-codec.ts'
import type { Tensor } from '../../../protocols/tensor-codec.ts'
import { FLEET_OPTION, UsageError, intOption, shortPeer } from '../command.ts'
import type { Command } from '../command.ts'
import { manifestTable, mb, percentile } from '../format.ts'
import { PeerProcess } from '../processes.ts'

const SAMPLES = fileURLToPath(new URL('../../../samples/text-lines/', import.meta.url))

interface Job { label: string, input: Tensor, expected?: string, reference?: Tensor }

export interface SwarmSummary {
  model: string
  manifest: string
  nodes: number
  stages: number
  jobs: number
  completed: number
  failed: number
  maxAbsDiff: number
  correctText: number | null
  p50Ms: number
  p95Ms: number
  jobsPerS: number
  routes: number
  /** Median over jobs of the summed stage run times (the rest of p50Ms is transfer and queueing). */
  computeP50Ms: number
  localJobsPerS: number
  startupMs: number
  totalMs: number
  errors: string[]
  /** With --scenario day. */
  departures?: number
  drained?: number
  lost?: number
  wrong?: number
  withdrawP95Ms?: number
  /** With --chaos. */
  kills?: number
  killsMidPipeline?: number
  restarts?: number
  duplicates?: number
  recoveryP95Ms?: number
  meshVsLocal?: number
  leases?: number
  leasesLost?: number
  microBatch?: number
}

/** Sim seconds per hour. */
const H = 3600

/**
 * Commuter days for a scenario: everyone starts at home, plugged in; vehicle
 * i leaves at 3 + 14 i / N hours for 5 hours, the first two leave again in
 * the evening, so stays overlap and every stage keeps a holder at home (for
 * the default 6 vehicles and 3 stages). Vehicle 2 comes back below the resume
 * SoC and waits to charge.
 */
export function scenarioSchedules (n: number, durationS: number, wallStart: number): SimSchedule[] {
  return Array.from({ length: n }, (_, i) => {
    const away: Array<[number, number]> = [[3 + 14 * i / n, 5]]
    if (i < 2) away.push([19.5 + i, 3])
    const sessions: SimSchedule['sessions'] = []
    let from = -12 * H
    let soc = 70
    for (const [start, len] of away) {
      sessions.push({ arrive: from, depart: start * H, socAtArrival: soc, chargerKw: 7.4, network: 'wifi', computeTempC: 45 + i })
      from = (start + len) * H
      soc = i === 2 ? 45 : 60
    }
    sessions.push({ arrive: from, depart: 36 * H, socAtArrival: soc, chargerKw: 7.4, network: 'wifi', computeTempC: 45 + i })
    return { speed: 24 * H / durationS, wallStart, sessions }
  })
}

async function makeJobs (src: ModelSource, sharded: ShardedModel, count: number): Promise<Job[]> {
  const input = sharded.manifest.inputs[0]
  if (src.fromImage !== undefined) {
    const labels = JSON.parse(await readFile(join(SAMPLES, 'labels.json'), 'utf8')) as { items: Array<{ image: string, text: string }> }
    return Array.from({ length: count }, (_, i) => {
      const item = labels.items[i % labels.items.length]
      const t = src.fromImage!(join(SAMPLES, item.image))
      return { label: item.image, input: { ...t, name: input.name }, ...(sharded.manifest.task !== undefined ? { expected: item.text } : {}) }
    })
  }
  if (sharded.manifest.inputs.length !== 1) throw new Error(`swarm jobs need a single-input model; ${sharded.manifest.name} has ${sharded.manifest.inputs.length}`)
  return Array.from({ length: count }, (_, i) => ({ label: `random #${i + 1}`, input: sampleTensor(input, sharded.manifest.probeShapes[input.name], 1000 + i) }))
}

export const swarmCommand: Command = {
  name: 'swarm',
  summary: 'Start a local mesh (bootstrap + vehicles as separate processes), shard a model across it, run jobs, show what happened.',
  usage: '[--nodes 4] [--stages 3] [--jobs 10] [--model pp-ocrv4-rec|pp-ocrv4-det|<file.onnx>] [--batch | --chaos] [--scenario day [--duration 60]] [--json]',
  options: {
    nodes: { type: 'string', arg: '<n>', description: 'vehicle processes (default: 4, or 6 with --scenario day)' },
    stages: { type: 'string', arg: '<k>', description: 'pipeline stages', default: '3' },
    jobs: { type: 'string', arg: '<n>', description: 'jobs to run (with --scenario day: jobs run until the day ends)', default: '10' },
    batch: { type: 'boolean', description: 'run the jobs as one batch job (announcement, offers, leases, windowed pipelines)' },
    chaos: { type: 'boolean', description: 'run the jobs as one batch (announce, offers, leases) while vehicles are killed with SIGKILL every few seconds and most are restarted' },
    'kill-every': { type: 'string', arg: '<s>', description: 'with --chaos: seconds between kills', default: '3' },
    'micro-batch': { type: 'string', arg: '<n|auto>', description: 'with --batch/--chaos: items run together; auto uses the vehicles\' batched timings', default: 'auto' },
    scenario: { type: 'string', arg: '<name>', description: 'none, or day: vehicles follow simulated commuter days (leave, come back) while jobs keep running', default: 'none' },
    duration: { type: 'string', arg: '<s>', description: 'with --scenario day: wall-clock seconds one simulated day takes', default: '60' },
    concurrency: { type: 'string', arg: '<n>', description: 'jobs in flight at once', default: '2' },
    model: { type: 'string', arg: '<model>', description: 'built-in model name, or a path to an .onnx file', default: DEFAULT_MODEL },
    fleet: FLEET_OPTION,
    http: { type: 'string', arg: '<host:port>', description: 'open an Open Inference Protocol gateway on the client peer, e.g. 127.0.0.1:8080' },
    keep: { type: 'boolean', description: 'keep the swarm running after the jobs, until Ctrl-C (use with --http)' },
    json: { type: 'boolean', description: 'progress to stderr; the last line on stdout is the JSON summary' }
  },
  details: 'Every process listens on 127.0.0.1 only. Ctrl-C stops the swarm and every process it started.',
  async run (o) {
    const scenario = String(o.scenario)
    if (scenario !== 'none' && scenario !== 'day') throw new UsageError(`--scenario must be none or day, got ${scenario}`)
    const day = scenario === 'day'
    const durationS = intOption(o.duration, 'duration', 5, 24 * 3600)
    const chaos = o.chaos === true
    const batchMode = chaos || o.batch === true
    if (batchMode && day) throw new UsageError('--batch/--chaos and --scenario day do not combine yet')
    const killEveryMs = intOption(o['kill-every'], 'kill-every', 1, 3600) * 1000
    const nodes = intOption(o.nodes ?? (day || chaos ? '6' : '4'), 'nodes', 1, 64)
    const stages = intOption(o.stages, 'stages', 1, 32)
    const jobCount = intOption(o.jobs, 'jobs', 1, 100_000)
    const concurrency = intOption(o.concurrency, 'concurrency', 1, 64)
    const fleet = String(o.fleet)
    const json = o.json === true
    const placement = placeStages(nodes, stages)
    const src = modelSource(String(o.model))
    const T0 = performance.now()
    const out = (line: string): void => { (json ? process.stderr : process.stdout).write(line + '\n') }
    const say = (tag: string, msg: string): void => { out(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(5)}s] ${tag.padEnd(6)} ${msg}`) }

    const work = await mkdtemp(join(tmpdir(), 'fleetmesh-swarm-'))
    const children: PeerProcess[] = []
    let client: FleetClient | undefined
    let gateway: Gateway | undefined
    const abort = new AbortController()
    let interrupted = false
    const onSignal = (): void => { interrupted = true; abort.abort(new Error('interrupted')) }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const stopped = new Promise<never>((_resolve, reject) => {
      abort.signal.addEventListener('abort', () => { reject(new Error('interrupted')) }, { once: true })
    })
    stopped.catch(() => {})
    const step = async <T>(p: Promise<T>): Promise<T> => await Promise.race([p, stopped])
    let failed = false
    try {
      say('model', `${src.name}: ${src.description}`)
      const modelBytes = await readFile(src.path)
      const sharded = await step(shardModel(modelBytes, { stages, name: src.name, probeShapes: src.probeShapes, baseDir: dirname(src.path), ...(src.task !== undefined ? { task: src.task } : {}) }))
      say('shard', `${stages} stages, manifest …${sharded.manifestCid.slice(-12)}; cuts balance ${sharded.manifest.balancedBy === 'ms' ? 'measured node times' : 'estimated FLOPs'}, fewest bytes crossing`)
      if (!json) out(manifestTable(sharded.manifest).split('\n').map(l => `         ${l}`).join('\n'))

      // bootstrap peer
      const boot = new PeerProcess('bootstrap', ['bootstrap', '--listen', '/ip4/127.0.0.1/tcp/0', '--key', join(work, 'bootstrap.key'), '--fleet', fleet], join(work, 'bootstrap.log'))
      children.push(boot)
      const bootInfo = await step(boot.waitFor<{ peer: string, addrs: string[] }>(e => e?.type === 'listening', 30_000, 'its addresses'))
      const bootAddr = bootInfo.addrs[0]
      say('boot', `bootstrap ${shortPeer(bootInfo.peer)} on ${bootAddr.replace(/\/p2p\/.*/, '')} (pid ${boot.pid})`)

      // this process: the client peer, which also seeds the shards
      client = await FleetClient.connect({ bootstrap: [bootAddr], fleet })
      const seed = client
      await seed.exchange.store.put(sharded.manifestBytes)
      for (const [cid, bytes] of sharded.shards) await seed.exchange.store.put(bytes, cid)
      await step(Promise.all([sharded.manifestCid, ...sharded.shards.keys()].map(async cid => { await seed.host.contentRouting.provide(parseCid(cid), { signal: AbortSignal.timeout(20_000) }) })))
      say('seed', `client ${shortPeer(client.peerId)} provides the manifest and ${sharded.shards.size} shards (${mb([...sharded.shards.values()].reduce((s, b) => s + b.byteLength, 0))})`)

      // vehicles (with --scenario day, each follows a simulated day starting when the mesh should be ready)
      const dayStart = Date.now() + 10_000
      const dayEnd = dayStart + durationS * 1000
      const schedules = day ? scenarioSchedules(nodes, durationS, dayStart) : []
      const vehicleEvents: Array<{ vehicle: string, peer: string, e: any }> = []
      const peerOf = new Map<string, string>()
      const vehicles = await Promise.all(placement.map(async (st, i) => {
        const args = ['node', '--bootstrap', bootAddr, '--data', join(work, `v${i + 1}`), '--model', sharded.manifestCid, '--stages', st.join(','), '--fleet', fleet, '--json']
        if (day) {
          const file = join(work, `v${i + 1}-day.json`)
          await writeFile(file, JSON.stringify(schedules[i], null, 2))
          args.push('--vehicle', `sim:${file}`)
        }
        const v = new PeerProcess(`v${i + 1}`, args, join(work, `v${i + 1}.log`))
        children.push(v)
        watch(v, st)
        return v
      }))
      function watch (v: PeerProcess, st: number[]): void {
        v.onEvent(e => {
          if (e?.type === 'listening') peerOf.set(v.label, e.peer)
          if (['eligible', 'ineligible', 'departed'].includes(e?.type)) vehicleEvents.push({ vehicle: v.label, peer: peerOf.get(v.label) ?? '', e })
          if (day && e?.type === 'ineligible') say('leave', `${v.label} not eligible: ${e.reasons.join('; ')}; no new work, withdrawal published`)
          if (day && e?.type === 'departed') say('drain', `${v.label} drained in ${Math.round(e.ms)} ms: ${e.finished} finished, ${e.handedOff} handed back`)
          if (day && e?.type === 'eligible' && performance.now() - T0 > 1000 && vehicleEvents.some(x => x.vehicle === v.label && x.e.type === 'ineligible')) say('back', `${v.label} eligible again`)
          if (e?.type === 'listening') say('join', `${v.label} ${shortPeer(e.peer)} joined (pid ${v.pid}), will hold stage${st.length > 1 ? 's' : ''} ${st.join(', ')}`)
          if (e?.type === 'shard') say('fetch', `${v.label} got stage ${e.stage} (${mb(e.bytes)}) ${e.source === 'peer' ? 'peer to peer by CID, sha256 verified' : 'from its store'}, ${Math.round(e.ms)} ms`)
          if (e?.type === 'serving') say('serve', `${v.label} serving stage ${e.stage}`)
          if (e?.type === 'chose') say('chose', `${v.label} chose stage ${e.stage} (${e.providers} other holder${e.providers === 1 ? '' : 's'})`)
        })
      }
      const labelOf = (peer: string): string => [...peerOf].find(([, p]) => p === peer)?.[0] ?? shortPeer(peer)
      await step(Promise.all(vehicles.map(async (v, i) => {
        for (const s of placement[i]) await v.waitFor(e => e?.type === 'serving' && e.stage === s, 90_000, `serving stage ${s}`)
      })))
      const c = client
      // every placed replica heard from, so the first jobs can use all of them
      const holders = (stage: number): number => placement.filter(p => p.includes(stage)).length
      await step(c.directory.waitFor(() => sharded.manifest.stages.every(s => c.directory.servers(sharded.manifestCid, s.index).length >= holders(s.index)), 30_000, 'heartbeats from every vehicle'))
      const startupMs = performance.now() - T0
      say('ready', `every stage served: ${sharded.manifest.stages.map(s => `stage ${s.index} x${c.directory.servers(sharded.manifestCid, s.index).length}`).join(', ')}`)

      // jobs and their references (the whole model in this process)
      const jobs = await makeJobs(src, sharded, day ? 10 : jobCount)
      // references: the whole model in this process, once per distinct input (also the local speed)
      const whole = await createSession(modelBytes)
      const refs = new Map<string, Tensor>()
      const tl = performance.now()
      for (const j of jobs) {
        let ref = refs.get(j.label)
        if (ref === undefined) { ref = (await runSession(whole, [j.input]))[0]; refs.set(j.label, ref) }
        j.reference = ref
      }
      const localJobsPerS = refs.size / ((performance.now() - tl) / 1000)
      await whole.release()
      const routeLog: Array<{ peers: string[], at: number }> = []
      c.onRoute = (peers, _first, at) => { routeLog.push({ peers, at }) }
      const total = day ? Infinity : jobs.length
      const more = (n: number): boolean => day ? Date.now() < dayEnd : n < total
      if (!chaos) say('jobs', day
        ? `jobs run until the simulated day ends (${durationS} s, from ${Math.max(0, Math.round((dayStart - Date.now()) / 1000))} s from now), ${concurrency} at a time; each checked against the whole model`
        : `${jobs.length} jobs, ${concurrency} at a time; each result checked against the whole model run locally`)

      const resolved = { cid: sharded.manifestCid, manifest: sharded.manifest }
      if (typeof o.http === 'string') {
        gateway = new Gateway({ client: c, listen: o.http })
        say('http', `Open Inference Protocol gateway on ${await gateway.start()}/v2 (try: curl ${gateway.url}/v2/models/${sharded.manifest.name})`)
      }
      const keepRunning = async (): Promise<void> => {
        say('keep', `swarm kept running; bootstrap ${bootAddr}; Ctrl-C to stop it`)
        await new Promise<void>(resolve => { abort.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
        interrupted = false
      }
      if (batchMode) {
        const summary = await runChaos()
        failed = summary.failed > 0 || (summary.duplicates ?? 0) > 0 || (summary.wrong ?? 0) > 0
        await shutdown()
        summary.totalMs = Math.round(performance.now() - T0)
        if (json) console.log(JSON.stringify(summary))
        return failed ? 1 : 0
      }

      async function runChaos (): Promise<SwarmSummary> {
        const items = Array.from({ length: jobCount }, (_, n) => jobs[n % jobs.length])
        const microBatch = o['micro-batch'] === 'auto' ? 'auto' as const : intOption(o['micro-batch'], 'micro-batch', 1, 64)
        const runner = new BatchRunner(c, resolved, { fleet, signal: abort.signal, microBatch })
        runner.addEventListener('lease', (e) => { const d = (e as CustomEvent).detail; say('lease', `${labelOf(d.peer)} leased for stage${d.stages.length > 1 ? 's' : ''} ${d.stages.join(', ')}`) })
        runner.addEventListener('lease-lost', (e) => { say('lost', `lease of ${labelOf((e as CustomEvent).detail.peer)} lost`) })
        const kills: Array<{ at: number, peer: string, pending: Set<number> }> = []
        const recovery: number[] = []
        let killsMid = 0; let restarts = 0; let wrongItems = 0; let worstDiff = 0; let correctItems = 0
        const latencies: number[] = []; const computeMs: number[] = []; const routes = new Set<string>()
        let itemsDone = 0
        const running = (): PeerProcess[] => vehicles.filter(v => v.running && peerOf.has(v.label))
        const killer = async (): Promise<void> => {
          let k = 0
          while (!abort.signal.aborted && itemsDone < items.length) {
            await new Promise(resolve => setTimeout(resolve, killEveryMs))
            if (itemsDone >= items.length || abort.signal.aborted) break
            // never take the last eligible holder of a stage
            const safe = running().filter(v => {
              const peer = peerOf.get(v.label)!
              return sharded.manifest.stages.every(st => {
                const servers = c.directory.servers(sharded.manifestCid, st.index)
                return !servers.some(x => x.peer === peer) || servers.length >= 2
              })
            })
            const busy = safe.filter(v => runner.itemsThrough(peerOf.get(v.label)!).length > 0)
            const victim = (busy.length > 0 ? busy : safe)[Math.floor(Math.random() * (busy.length > 0 ? busy.length : safe.length))]
            if (victim === undefined) continue
            const peer = peerOf.get(victim.label)!
            const pending = new Set(runner.itemsThrough(peer))
            if (pending.size > 0) killsMid++
            victim.proc.kill('SIGKILL')
            kills.push({ at: Date.now(), peer, pending })
            say('kill', `${victim.label} killed with SIGKILL holding ${pending.size} item${pending.size === 1 ? '' : 's'} in flight`)
            k++
            await victim.exited
            // most come back (same identity and store, choosing the stages the swarm serves worst);
            // at most one stays down at a time
            const down = vehicles.filter(v => !v.running).length
            if (k % 3 !== 0 || down > 1) {
              await new Promise(resolve => setTimeout(resolve, 1000))
              if (abort.signal.aborted || itemsDone >= items.length) break
              const i = vehicles.indexOf(victim)
              const again = new PeerProcess(`${victim.label}`, ['node', '--bootstrap', bootAddr, '--data', join(work, victim.label), '--model', sharded.manifestCid, '--auto-stages', String(placement[i].length), '--fleet', fleet, '--json'], join(work, `${victim.label}-${k}.log`))
              children.push(again)
              vehicles[i] = again
              watch(again, placement[i])
              restarts++
              say('back', `${victim.label} restarted (pid ${again.pid}); it will choose the stages the swarm serves worst`)
            }
          }
        }
        const started = performance.now()
        say('batch', `${items.length} items as one batch job${chaos ? `; a vehicle is killed every ${killEveryMs / 1000} s` : ''}`)
        const killing = chaos ? killer() : Promise.resolve()
        const result = await runner.run(items.map(j => [j.input]), (e) => {
          if (e.result === undefined) return
          itemsDone++
          const now = Date.now()
          // per kill: the first completion of an item that was on the killed vehicle
          for (const k of kills) if (k.pending.has(e.index)) { recovery.push(now - k.at); k.pending.clear() }
          const j = items[e.index]
          const out0 = e.result.outputs.find(t => t.name === sharded.manifest.outputs[0].name) ?? e.result.outputs[0]
          const diff = maxAbsDiff(j.reference!, out0)
          worstDiff = Math.max(worstDiff, diff)
          const text = textOf(sharded.manifest, e.result.outputs)
          if (text !== undefined && text.text === j.expected) correctItems++
          if (diff > 1e-4 || (text !== undefined && text.text !== j.expected)) wrongItems++
          latencies.push(e.result.ms)
          computeMs.push(e.result.hops.reduce((a, h) => a + h.ms, 0))
          routes.add(e.result.route.join('>'))
          if (itemsDone % 50 === 0) say('done', `${itemsDone}/${items.length} items`)
        })
        itemsDone = items.length
        await killing
        const meshS = (performance.now() - started) / 1000
        // the same items through the whole model in this process, for the ratio
        const whole2 = await createSession(modelBytes)
        const tl2 = performance.now()
        for (const j of items) await runSession(whole2, [j.input])
        const localItemsPerS = items.length / ((performance.now() - tl2) / 1000)
        await whole2.release()
        const meshItemsPerS = result.done / meshS
        const summary: SwarmSummary = {
          model: sharded.manifest.name,
          manifest: sharded.manifestCid,
          nodes,
          stages,
          jobs: items.length,
          completed: result.done,
          failed: result.failed,
          maxAbsDiff: worstDiff,
          correctText: sharded.manifest.task !== undefined ? correctItems : null,
          p50Ms: Math.round(percentile(latencies, 50) * 10) / 10,
          p95Ms: Math.round(percentile(latencies, 95) * 10) / 10,
          jobsPerS: Math.round(meshItemsPerS * 100) / 100,
          routes: routes.size,
          computeP50Ms: Math.round(percentile(computeMs, 50) * 10) / 10,
          localJobsPerS: Math.round(localItemsPerS * 100) / 100,
          startupMs: Math.round(startupMs),
          totalMs: 0,
          errors: result.results.filter((r): r is Error => r instanceof Error).map(e => e.message).slice(0, 10),
          kills: kills.length,
          killsMidPipeline: killsMid,
          restarts,
          duplicates: result.duplicates,
          wrong: wrongItems,
          recoveryP95Ms: Math.round(percentile(recovery, 95)),
          meshVsLocal: Math.round(meshItemsPerS / localItemsPerS * 1000) / 1000,
          leases: result.leases,
          leasesLost: result.leasesLost,
          microBatch: result.microBatch
        }
        out('')
        out(`summary: ${result.done}/${items.length} items completed, ${result.failed} failed, ${result.duplicates} duplicates, ${wrongItems} wrong, max |diff| ${worstDiff.toExponential(2)}`)
        if (chaos) out(`         ${kills.length} kills (${killsMid} mid-pipeline), ${restarts} restarts, ${result.leases} leases (${result.leasesLost} lost); recovery p95 ${summary.recoveryP95Ms} ms (kill -> next completed item that had been on the killed vehicle)`)
        else out(`         ${result.leases} leases, micro-batches of ${result.microBatch}; latency p50 ${summary.p50Ms} ms (stage compute ${summary.computeP50Ms} ms)`)
        out(`         mesh ${meshItemsPerS.toFixed(2)} items/s vs whole model in one process ${localItemsPerS.toFixed(2)} items/s: ratio ${summary.meshVsLocal}`)
        return summary
      }

      const latencies: number[] = []
      const computeMs: number[] = []
      const routes = new Set<string>()
      const errors: string[] = []
      let completed = 0; let correct = 0; let worst = 0; let next = 0; let wrong = 0
      const tj = performance.now()
      const worker = async (): Promise<void> => {
        while (more(next) && !abort.signal.aborted) {
          const n = next++
          const j = jobs[n % jobs.length]
          try {
            const r = await c.infer(resolved, [j.input], { signal: abort.signal, ...(day ? { maxAttempts: 30, timeoutMs: 120_000 } : {}) })
            const out0 = r.outputs.find(t => t.name === sharded.manifest.outputs[0].name) ?? r.outputs[0]
            const diff = maxAbsDiff(j.reference!, out0)
            worst = Math.max(worst, diff)
            latencies.push(r.ms)
            computeMs.push(r.hops.reduce((sum, h) => sum + h.ms, 0))
            routes.add(r.route.join('>'))
            completed++
            const text = textOf(sharded.manifest, r.outputs)
            const ok = text !== undefined && text.text === j.expected
            if (ok) correct++
            if (diff > 1e-4 || (text !== undefined && !ok)) wrong++
            const what = text !== undefined ? `${JSON.stringify(text.text).padEnd(18)} expected ${JSON.stringify(j.expected).padEnd(18)} ${ok ? 'ok' : 'WRONG'}` : `${j.label.padEnd(12)} max|diff| ${diff.toExponential(1)}`
            if (!day || r.attempts > 1 || n % 20 === 0) say(`job ${String(n + 1).padStart(2)}`, `${what}  ${r.route.map(shortPeer).join(' > ')}  ${r.ms.toFixed(0)} ms${r.attempts > 1 ? ` (${r.attempts} attempts)` : ''}`)
          } catch (err) {
            if (abort.signal.aborted) return
            errors.push(`job ${n + 1}: ${(err as Error).message}`)
            say(`job ${String(n + 1).padStart(2)}`, `FAILED: ${(err as Error).message}`)
          }
        }
      }
      await step(Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker)))
      const elapsed = (performance.now() - tj) / 1000
      const submitted = next
      // departures still draining report within their bound
      const departuresOf = (): number => vehicleEvents.filter(x => x.e.type === 'ineligible').length
      const drainedOf = (): number => vehicleEvents.filter(x => x.e.type === 'departed').length
      const waitUntil = Date.now() + 12_000
      while (day && drainedOf() < departuresOf() && Date.now() < waitUntil) await new Promise(resolve => setTimeout(resolve, 100))
      const summary: SwarmSummary = {
        model: sharded.manifest.name,
        manifest: sharded.manifestCid,
        nodes,
        stages,
        jobs: submitted,
        completed,
        failed: submitted - completed,
        maxAbsDiff: worst,
        correctText: sharded.manifest.task !== undefined ? correct : null,
        p50Ms: Math.round(percentile(latencies, 50) * 10) / 10,
        p95Ms: Math.round(percentile(latencies, 95) * 10) / 10,
        jobsPerS: Math.round(completed / elapsed * 100) / 100,
        routes: routes.size,
        computeP50Ms: Math.round(percentile(computeMs, 50) * 10) / 10,
        localJobsPerS: Math.round(localJobsPerS * 100) / 100,
        startupMs: Math.round(startupMs),
        totalMs: 0,
        errors
      }
      if (day) {
        const deps = vehicleEvents.filter(x => x.e.type === 'ineligible')
        const withdraw = deps.map(d => {
          const back = vehicleEvents.find(x => x.vehicle === d.vehicle && x.e.type === 'eligible' && x.e.at > d.e.at)?.e.at ?? Infinity
          const last = Math.max(d.e.at, ...routeLog.filter(r => r.at > d.e.at && r.at < back && r.peers.includes(d.peer)).map(r => r.at))
          return last - d.e.at
        })
        summary.departures = deps.length
        summary.drained = vehicleEvents.filter(x => x.e.type === 'departed' && x.e.drained === true && x.e.ms <= 11_000).length
        summary.lost = submitted - completed
        summary.wrong = wrong
        summary.withdrawP95Ms = Math.round(percentile(withdraw, 95))
      }
      failed = summary.failed > 0
      out('')
      out(`summary: ${completed}/${submitted} jobs completed${summary.correctText !== null ? `, ${correct}/${submitted} texts correct` : ''}, max |diff| vs whole model ${worst.toExponential(2)}`)
      out(`         latency p50 ${summary.p50Ms} ms, p95 ${summary.p95Ms} ms; ${summary.jobsPerS} jobs/s over ${routes.size} distinct route${routes.size === 1 ? '' : 's'} (whole model in one process: ${summary.localJobsPerS} jobs/s)`)
      out(`         mesh ready in ${(startupMs / 1000).toFixed(1)} s`)
      if (o.keep === true) await keepRunning()
      if (day) out(`         day: ${summary.departures} departures, ${summary.drained} drained within the bound, ${summary.lost} jobs lost, ${summary.wrong} wrong, withdrawal p95 ${summary.withdrawP95Ms} ms (eligibility lost -> last new work routed there)`)
      await shutdown()
      summary.totalMs = Math.round(performance.now() - T0)
      if (json) console.log(JSON.stringify(summary))
      return failed ? 1 : 0
    } catch (err) {
      if (interrupted) {
        out('interrupted; stopping the swarm')
        await shutdown()
        return 130
      }
      out(`swarm failed: ${(err as Error).message}`)
      for (const ch of children) {
        const tail = await ch.logTail(8)
        if (tail !== '') out(`--- ${ch.label} (${ch.logFile}) ---\n${tail}`)
      }
      await shutdown(true)
      return 1
    } finally {
      process.removeListener('SIGINT', onSignal)
      process.removeListener('SIGTERM', onSignal)
    }

    async function shutdown (keepLogs = false): Promise<void> {
      const running = children.filter(ch => ch.running)
      await gateway?.stop().catch(() => {})
      gateway = undefined
      await client?.close().catch(() => {})
      client = undefined
      await Promise.all(children.map(async ch => { await ch.stop() }))
      if (!keepLogs) await rm(work, { recursive: true, force: true })
      const left = children.filter(ch => ch.running).length
      say('stop', `${running.length} processes stopped${left > 0 ? `, ${left} STILL RUNNING` : ', none left behind'}${keepLogs ? `; logs kept in ${work}` : ''}`)
    }
  }
}
