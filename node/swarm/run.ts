/**
 * One `fleetmesh swarm` run: start the local mesh, run the chosen scenario
 * (jobs one by one, a simulated day, a batch, chaos), check every result,
 * and stop every process it started, also when interrupted or failing.
 */
import type { OutputMode } from '../../protocols/infer.ts'
import type { CompressMode } from '../../protocols/compression.ts'
import type { StagePriority } from '../runtime/thread-priority.ts'
import type { VerifyMode } from '../client/verifier.ts'
import { Gateway } from '../gateway/server.ts'
import { issueToken } from '../gateway/tokens.ts'
import type { ModelSource } from '../models/catalog.ts'
import type { ShardedModel } from '../models/shard.ts'
import { runBatch } from './chaos.ts'
import { dayFigures, scenarioSchedules } from './day.ts'
import { Tally, addReferences, bracketSpeeds, makeJobs, wholeModelSpeed } from './jobs.ts'
import { CpuMeter, describeCpu } from './cpu.ts'
import { LocalSwarm } from './mesh.ts'
import type { Say } from './mesh.ts'
import { runPerJob } from './per-job.ts'
import { measureControl } from './traffic.ts'
import type { ControlTraffic } from './traffic.ts'
import { baseSummary } from './summary.ts'
import { describePath, startTrace } from './trace.ts'
import { describeBusy, measureSpareCpu, swarmStagePriority, SPARE_WINDOW_MS } from './spare-cpu.ts'
import type { SwarmSummary } from './summary.ts'

export interface SwarmRunOptions {
  model: ModelSource
  nodes: number
  stages: number
  jobs: number
  concurrency: number
  fleet: string
  scenario: 'none' | 'day' | 'batch' | 'chaos'
  /** Wall-clock seconds of a simulated day (scenario day). */
  durationS: number
  killEveryMs: number
  microBatch: number | 'auto'
  /** Open an OIP gateway on the client peer (host:port). */
  http?: string
  /** Serve the gateway over HTTPS. */
  tls?: { cert: Buffer, key: Buffer }
  /** Keep running after the jobs until `signal` aborts. */
  keep: boolean
  /** Locality cells the vehicles are spread over (the client routes in all of them). */
  cells?: string[]
  /** Seconds of idle control traffic to measure before the jobs (0: none). */
  idleS?: number
  /** The client's result checks. */
  verify: VerifyMode
  /** Vehicles that lie about their outputs (the last ones). */
  liars: number
  /** With verify sample: the lowest share of a proven vehicle's runs checked. */
  checkRate?: number
  /** The client runs this many first stages itself. */
  localStages?: number
  /** What the last hop returns (raw, text, top-k). */
  output?: OutputMode
  /** Lossy hand-offs for the model (shardModel's `handOff`). */
  handOff?: 'fp16'
  /** The client's coalescing (ClientInit `coalesce`). */
  coalesce?: number
  /** Where the client and the vehicles compress tensors (`--compress`). @default 'auto' */
  compress?: CompressMode
  /** The vehicles' stage threads' CPU priority (`--stage-priority`). @default 'idle'; 'normal' for the chaos scenario */
  stagePriority?: StagePriority
  /** Mark each job's path through the processes and report its steps (swarm/trace.ts); jobs one at a time. */
  trace?: boolean
  signal: AbortSignal
}

export interface SwarmIo {
  /** Progress lines with a tag. */
  say: Say
  /** Plain lines (tables, the summary). */
  out: (line: string) => void
  /** Called once the model is sharded (to print its table). */
  onSharded?: (sharded: ShardedModel) => void
}

/** Runs of at least this many jobs print their CPU per job (the JSON summary always has it). */
const CPU_LINE_MIN_JOBS = 100

/** Drains get this long before a day's departure counts as not drained. */
const DRAIN_BOUND_MS = 11_000

/** Runs the swarm; `ok` is false when a job failed, was duplicated or was wrong. Throws when interrupted or broken. */
export async function runSwarm (o: SwarmRunOptions, io: SwarmIo): Promise<{ summary: SwarmSummary, ok: boolean }> {
  const day = o.scenario === 'day'
  const t0 = performance.now()
  // the day starts when the mesh is ready (vehicles wait for a sim-start message)
  const schedules = day ? scenarioSchedules(o.nodes, o.durationS, Date.now() + 3_600_000) : undefined
  // a vehicle starting up takes both cores for a second or more; under chaos one starts every few seconds, and at
  // SCHED_IDLE the other vehicles' stages would wait out each start (7 against 13-17 items/s, three pairs)
  // otherwise SCHED_IDLE as a car lends, unless other processes keep the cores busy (spare-cpu.ts)
  const spareAtStart = o.stagePriority === undefined && o.scenario !== 'chaos' ? await measureSpareCpu(SPARE_WINDOW_MS, o.signal) : undefined
  const stagePriority = o.stagePriority ?? (o.scenario === 'chaos' ? 'normal' : swarmStagePriority(spareAtStart))
  if (spareAtStart !== undefined && stagePriority === 'normal') io.say('cpu', describeBusy(spareAtStart))
  // before the swarm starts: its processes take the trace file from the environment
  const trace = o.trace === true ? await startTrace() : undefined
  const swarm = await LocalSwarm.create({ model: o.model, nodes: o.nodes, stages: o.stages, fleet: o.fleet, say: io.say, signal: o.signal, verify: o.verify, liars: o.liars, ...(o.checkRate !== undefined ? { checkRate: o.checkRate } : {}), ...(o.localStages !== undefined ? { localStages: o.localStages } : {}), ...(o.output !== undefined ? { output: o.output } : {}), ...(o.handOff !== undefined ? { handOff: o.handOff } : {}), ...(o.coalesce !== undefined ? { coalesce: o.coalesce } : {}), ...(o.compress !== undefined ? { compress: o.compress } : {}), stagePriority, ...(o.cells !== undefined ? { cells: o.cells } : {}), ...(io.onSharded !== undefined ? { onSharded: io.onSharded } : {}), ...(schedules !== undefined ? { schedules } : {}) }).catch(async (err: unknown) => { await trace?.stop(); throw err })
  let gateway: Gateway | undefined
  let crashed = false
  let failed: boolean
  try {
    await swarm.start()
    let control: ControlTraffic | undefined
    if ((o.idleS ?? 0) > 0) {
      io.say('idle', `measuring control traffic for ${o.idleS} s with no jobs (kernel byte counts per process)`)
      const processes = new Map<number, number>()
      for (const v of swarm.vehicles) if (v.pid !== undefined) processes.set(v.pid, v.share)
      control = await measureControl({ vehicles: [...processes].map(([pid, vehicles]) => ({ pid, vehicles })), ...(swarm.children[0]?.pid !== undefined ? { bootstrap: swarm.children[0].pid } : {}) }, o.idleS ?? 0, o.signal)
      io.say('idle', `per vehicle ${control.perVehicle.in} B/s in, ${control.perVehicle.out} B/s out (max ${control.maxVehicle.in} / ${control.maxVehicle.out}); bootstrap ${control.bootstrap.in} / ${control.bootstrap.out}; ${control.connectionsPerVehicle} connections${control.cpuPctPerVehicle !== undefined ? `, ${control.cpuPctPerVehicle}% of a core` : ''} per vehicle${control.rssMbPerProcess !== undefined ? `, ${control.rssMbPerProcess} MB per process of ${control.vehiclesPerProcess}` : ''}`)
    }
    const jobs = await makeJobs(o.model, swarm.sharded, day ? 10 : o.jobs)
    const localBefore = await addReferences(swarm.modelBytes, jobs)
    let { jobsPerS: localJobsPerS, cpuMsPerJob: localCpuMsPerJob } = localBefore
    if (o.http !== undefined) {
      gateway = new Gateway({ client: swarm.client, listen: o.http, ...(o.tls !== undefined ? { tls: o.tls } : {}) })
      // the swarm's own fleet authority issues a bearer token for it
      const token = await issueToken(swarm.members.authority, 'swarm', { days: 1 })
      io.say('http', `Open Inference Protocol gateway on ${await gateway.start()}/v2; bearer token: ${token}`)
      io.say('http', `try: curl${o.tls !== undefined ? ' -k' : ''} -H "Authorization: Bearer $TOKEN" ${gateway.url}/v2/models/${swarm.sharded.manifest.name}`)
      io.say('http', `dashboard: ${gateway.url}/dashboard?token=${encodeURIComponent(token)}`)
    }
    const tally = new Tally(swarm.sharded.manifest, o.output)
    let summary: SwarmSummary
    if (o.scenario === 'batch' || o.scenario === 'chaos') {
      const items = Array.from({ length: o.jobs }, (_, n) => jobs[n % jobs.length])
      const b = await runBatch(swarm, items, tally, { chaos: o.scenario === 'chaos', killEveryMs: o.killEveryMs, microBatch: o.microBatch, signal: o.signal, say: io.say })
      const { jobsPerS, localJobsPerS: local, errors, ...rest } = b
      summary = { ...baseSummary(swarm, tally, items.length, jobsPerS, local, errors), ...rest, wrong: tally.wrong }
      io.out('')
      io.out(`summary: ${summary.completed}/${items.length} items completed, ${summary.failed} failed, ${summary.duplicates} duplicates, ${tally.wrong} wrong, max |diff| ${tally.worstDiff.toExponential(2)}`)
      if (o.scenario === 'chaos') io.out(`         ${summary.kills} kills (${summary.killsMidPipeline} mid-pipeline), ${summary.restarts} restarts, ${summary.leases} leases (${summary.leasesLost} lost); recovery p50 ${summary.recoveryP50Ms} ms, p95 ${summary.recoveryP95Ms} ms (kill -> next completed item that had been on the killed vehicle)`)
      else io.out(`         ${summary.leases} leases, micro-batches of ${summary.microBatch}${summary.microBatchMeshMs !== undefined ? ` (auto: the first jobs cost ${summary.microBatchMeshMs} ms each beside their stages)` : ''}; latency p50 ${summary.p50Ms} ms (stage compute ${summary.computeP50Ms} ms; beside it ${summary.overheadP50Ms} ms a job)`)
      io.out(`         mesh ${summary.jobsPerS} items/s vs whole model in one process ${summary.localJobsPerS} items/s: ratio ${summary.meshVsLocal}`)
      failed = summary.failed > 0 || (summary.duplicates ?? 0) > 0 || tally.wrong > 0
    } else {
      const routeLog: Array<{ peers: string[], at: number }> = []
      swarm.client.addEventListener('route', (e) => { routeLog.push(e.detail) })
      const dayEnd = day ? swarm.startDay(2000) + o.durationS * 1000 : 0
      io.say('jobs', day
        ? `jobs run until the simulated day ends (${o.durationS} s, from 2 s from now), ${o.concurrency} at a time; each checked against the whole model`
        : `${jobs.length} jobs, ${o.concurrency} at a time; each result checked against the whole model run locally`)
      const cpu = day ? undefined : await CpuMeter.start(swarm.vehicles.flatMap(v => v.pid !== undefined ? [v.pid] : []), swarm.children[0]?.pid)
      const run = await runPerJob(swarm, jobs, tally, {
        concurrency: Math.min(o.concurrency, day ? o.concurrency : jobs.length),
        more: n => day ? Date.now() < dayEnd : n < jobs.length,
        signal: o.signal,
        everyJob: !day,
        ...(day ? { infer: { maxAttempts: 30, timeoutMs: 120_000 } } : {}),
        say: io.say
      })
      const cpuMsPerJob = await cpu?.perJob(run.submitted)
      // long runs time the whole model again after the mesh's run: the machine's speed drifts
      const after = !day && run.submitted >= CPU_LINE_MIN_JOBS ? await wholeModelSpeed(swarm.modelBytes, jobs) : undefined
      if (after !== undefined) {
        ;({ jobsPerS: localJobsPerS, cpuMsPerJob: localCpuMsPerJob } = bracketSpeeds(localBefore, after))
        io.say('local', `the whole model in this process: ${localBefore.jobsPerS.toFixed(1)} jobs/s before the mesh's jobs, ${after.jobsPerS.toFixed(1)} after`)
      }
      summary = baseSummary(swarm, tally, run.submitted, tally.completed / run.seconds, localJobsPerS, run.errors)
      if (after !== undefined) summary.localBeforeAfter = [localBefore, after].map(l => ({ jobsPerS: Math.round(l.jobsPerS * 100) / 100, cpuMsPerJob: l.cpuMsPerJob }))
      if (cpuMsPerJob !== undefined) Object.assign(summary, { cpuMsPerJob, localCpuMsPerJob })
      summary.coalesced = { groups: swarm.client.coalesced.groups, items: swarm.client.coalesced.items }
      if (day) {
        // departures still draining report within their bound
        const until = Date.now() + DRAIN_BOUND_MS + 1000
        const count = (type: string): number => swarm.reports.filter(x => x.e.type === type).length
        while (count('departed') < count('ineligible') && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 100))
        Object.assign(summary, dayFigures(swarm.reports, routeLog, DRAIN_BOUND_MS), { lost: summary.failed, wrong: tally.wrong })
      }
      io.out('')
      io.out(`summary: ${summary.completed}/${summary.jobs} jobs completed${summary.correctText !== null ? `, ${summary.correctText}/${summary.jobs} texts correct` : ''}, max |diff| vs whole model ${tally.worstDiff.toExponential(2)}`)
      io.out(`         latency p50 ${summary.p50Ms} ms, p95 ${summary.p95Ms} ms (stage compute p50 ${summary.computeP50Ms} ms; beside it ${summary.overheadP50Ms} ms a job); ${summary.jobsPerS} jobs/s over ${summary.routes} distinct route${summary.routes === 1 ? '' : 's'} (whole model in one process: ${summary.localJobsPerS} jobs/s)`)
      if (summary.coalesced.items > summary.coalesced.groups) io.out(`         ${summary.coalesced.items} jobs went as ${summary.coalesced.groups} mesh jobs (jobs waiting for room go together: --coalesce)`)
      // over a few jobs the figure is mostly warming up (compilers, first connections, first checks)
      if (cpuMsPerJob !== undefined && run.submitted >= CPU_LINE_MIN_JOBS) io.out(`         CPU per job ${describeCpu(cpuMsPerJob)}; whole model in one process: ${localCpuMsPerJob} ms`)
      if (trace !== undefined) {
        summary.path = await trace.path(run.submitted)
        for (const line of describePath(summary.path)) io.out(`         ${line}`)
      }
      io.out(`         mesh ready in ${(summary.startupMs / 1000).toFixed(1)} s`)
      if (o.verify !== 'off' || o.liars > 0) io.out(`         checks (${o.verify}): ${summary.checked} runs checked, ${summary.caught} liar${summary.caught === 1 ? '' : 's'} caught, ${summary.wrongDelivered} wrong results delivered; ${Math.round(summary.verifyOverhead * 1000) / 10}% extra stage runs`)
      if (day) io.out(`         day: ${summary.departures} departures, ${summary.drained} drained within the bound, ${summary.lost} jobs lost, ${summary.wrong} wrong, withdrawal p95 ${summary.withdrawP95Ms} ms (eligibility lost -> last new work routed there)`)
      // with liars, a share of wrong results is what the checks trade for their cost: reported, not a failure
      failed = summary.failed > 0 || (o.liars === 0 && tally.wrong > 0)
    }
    if (!o.keep) o.signal.throwIfAborted()
    if (o.keep) {
      io.say('keep', `swarm kept running; bootstrap ${swarm.bootAddr}; Ctrl-C to stop it`)
      await new Promise<void>(resolve => { if (o.signal.aborted) resolve(); else o.signal.addEventListener('abort', () => { resolve() }, { once: true }) })
    }
    if (control !== undefined) Object.assign(summary, { controlBytesPerNodePerS: control.perVehicle, control })
    if (spareAtStart !== undefined) summary.spareCoresAtStart = spareAtStart.spare
    summary.totalMs = Math.round(performance.now() - t0)
    return { summary, ok: !failed }
  } catch (err) {
    if (o.signal.aborted) {
      io.out('interrupted; stopping the swarm')
    } else {
      crashed = true
      io.out(`swarm failed: ${(err as Error).message}`)
      for (const tail of await swarm.logTails()) io.out(tail)
    }
    throw err
  } finally {
    await gateway?.stop().catch(() => {})
    const keepLogs = crashed
    const { stopped, left } = await swarm.stop(keepLogs)
    io.say('stop', `${stopped} processes stopped${left > 0 ? `, ${left} STILL RUNNING` : ', none left behind'}${keepLogs ? `; logs kept in ${swarm.work}` : ''}`)
    await trace?.stop()
  }
}
