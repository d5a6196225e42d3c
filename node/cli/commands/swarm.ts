/**
 * `fleetmesh swarm`: a whole mesh on this machine. One bootstrap peer and N
 * vehicle nodes, each its own process on loopback; this process is the
 * client peer: it shards the model, seeds the shards, waits until every stage
 * is served, runs the jobs as pipelines across vehicles, checks every result
 * against the whole model run locally, prints a summary and shuts down.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FleetClient } from '../../client/client.ts'
import { textOf } from '../../client/inputs.ts'
import { parseCid } from '../../models/cid.ts'
import { DEFAULT_MODEL, modelSource } from '../../models/catalog.ts'
import type { ModelSource } from '../../models/catalog.ts'
import { shardModel } from '../../models/manifest.ts'
import type { ShardedModel } from '../../models/manifest.ts'
import { createSession, runSession } from '../../models/ort.ts'
import { sampleTensor } from '../../models/partition.ts'
import { placeStages } from '../../scheduler/placement.ts'
import { DEFAULT_FLEET } from '../../../protocols/ids.ts'
import { maxAbsDiff } from '../../../protocols/tensor-codec.ts'
import type { Tensor } from '../../../protocols/tensor-codec.ts'
import { intOption, shortPeer } from '../command.ts'
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
  usage: '[--nodes 4] [--stages 3] [--jobs 10] [--model pp-ocrv4-rec|pp-ocrv4-det|<file.onnx>] [--json]',
  options: {
    nodes: { type: 'string', arg: '<n>', description: 'vehicle processes', default: '4' },
    stages: { type: 'string', arg: '<k>', description: 'pipeline stages', default: '3' },
    jobs: { type: 'string', arg: '<n>', description: 'jobs to run', default: '10' },
    concurrency: { type: 'string', arg: '<n>', description: 'jobs in flight at once', default: '2' },
    model: { type: 'string', arg: '<model>', description: 'built-in model name, or a path to an .onnx file', default: DEFAULT_MODEL },
    fleet: { type: 'string', arg: '<name>', description: 'fleet name', default: DEFAULT_FLEET },
    json: { type: 'boolean', description: 'progress to stderr; the last line on stdout is the JSON summary' }
  },
  details: 'Every process listens on 127.0.0.1 only. Ctrl-C stops the swarm and every process it started.',
  async run (o) {
    const nodes = intOption(o.nodes, 'nodes', 1, 64)
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
      const sharded = await step(shardModel(modelBytes, { stages, name: src.name, probeShapes: src.probeShapes, ...(src.task !== undefined ? { task: src.task } : {}) }))
      say('shard', `${stages} stages, manifest …${sharded.manifestCid.slice(-12)}; cuts by estimated FLOPs, fewest bytes crossing`)
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

      // vehicles
      const vehicles = placement.map((st, i) => {
        const v = new PeerProcess(`v${i + 1}`, ['node', '--bootstrap', bootAddr, '--data', join(work, `v${i + 1}`), '--model', sharded.manifestCid, '--stages', st.join(','), '--fleet', fleet, '--json'], join(work, `v${i + 1}.log`))
        children.push(v)
        v.onEvent(e => {
          if (e?.type === 'listening') say('join', `${v.label} ${shortPeer(e.peer)} joined (pid ${v.pid}), will hold stage${st.length > 1 ? 's' : ''} ${st.join(', ')}`)
          if (e?.type === 'shard') say('fetch', `${v.label} got stage ${e.stage} (${mb(e.bytes)}) ${e.source === 'peer' ? 'peer to peer by CID, sha256 verified' : 'from its store'}, ${Math.round(e.ms)} ms`)
          if (e?.type === 'serving') say('serve', `${v.label} serving stage ${e.stage}`)
        })
        return v
      })
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
      const jobs = await makeJobs(src, sharded, jobCount)
      const whole = await createSession(modelBytes)
      const tl = performance.now()
      for (const j of jobs) j.reference = (await runSession(whole, [j.input]))[0]
      const localJobsPerS = jobs.length / ((performance.now() - tl) / 1000)
      await whole.release()
      say('jobs', `${jobs.length} jobs, ${concurrency} at a time; each result checked against the whole model run locally`)

      const latencies: number[] = []
      const computeMs: number[] = []
      const routes = new Set<string>()
      const errors: string[] = []
      let completed = 0; let correct = 0; let worst = 0; let next = 0
      const tj = performance.now()
      const resolved = { cid: sharded.manifestCid, manifest: sharded.manifest }
      const worker = async (): Promise<void> => {
        while (next < jobs.length && !abort.signal.aborted) {
          const n = next++
          const j = jobs[n]
          try {
            const r = await c.infer(resolved, [j.input], { signal: abort.signal })
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
            const what = text !== undefined ? `${JSON.stringify(text.text).padEnd(18)} expected ${JSON.stringify(j.expected).padEnd(18)} ${ok ? 'ok' : 'WRONG'}` : `${j.label.padEnd(12)} max|diff| ${diff.toExponential(1)}`
            say(`job ${String(n + 1).padStart(2)}`, `${what}  ${r.route.map(shortPeer).join(' > ')}  ${r.ms.toFixed(0)} ms${r.attempts > 1 ? ` (${r.attempts} attempts)` : ''}`)
          } catch (err) {
            if (abort.signal.aborted) return
            errors.push(`job ${n + 1}: ${(err as Error).message}`)
            say(`job ${String(n + 1).padStart(2)}`, `FAILED: ${(err as Error).message}`)
          }
        }
      }
      await step(Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker)))
      const elapsed = (performance.now() - tj) / 1000
      const summary: SwarmSummary = {
        model: sharded.manifest.name,
        manifest: sharded.manifestCid,
        nodes,
        stages,
        jobs: jobs.length,
        completed,
        failed: jobs.length - completed,
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
      failed = summary.failed > 0
      out('')
      out(`summary: ${completed}/${jobs.length} jobs completed${summary.correctText !== null ? `, ${correct}/${jobs.length} texts correct` : ''}, max |diff| vs whole model ${worst.toExponential(2)}`)
      out(`         latency p50 ${summary.p50Ms} ms, p95 ${summary.p95Ms} ms; ${summary.jobsPerS} jobs/s over ${routes.size} distinct route${routes.size === 1 ? '' : 's'} (whole model in one process: ${summary.localJobsPerS} jobs/s)`)
      out(`         mesh ready in ${(startupMs / 1000).toFixed(1)} s`)
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
      await client?.close().catch(() => {})
      client = undefined
      await Promise.all(children.map(async ch => { await ch.stop() }))
      if (!keepLogs) await rm(work, { recursive: true, force: true })
      const left = children.filter(ch => ch.running).length
      say('stop', `${running.length} processes stopped${left > 0 ? `, ${left} STILL RUNNING` : ', none left behind'}${keepLogs ? `; logs kept in ${work}` : ''}`)
    }
  }
}
