/**
 * `--batch` and `--chaos`: the jobs as one batch job (announcement, offers,
 * leases, windowed pipelines); with chaos a vehicle holding items in flight
 * is killed with SIGKILL every few seconds, and most come back.
 */
import type { Job, Tally } from './jobs.ts'
import { localSpeed, percentile } from './jobs.ts'
import type { LocalSwarm, Say } from './mesh.ts'
import { PeerProcess } from './processes.ts'
import type { SwarmSummary } from './summary.ts'

export interface BatchRunOptions {
  chaos: boolean
  killEveryMs: number
  microBatch: number | 'auto'
  signal: AbortSignal
  say: Say
}

type BatchFigures = Pick<SwarmSummary, 'kills' | 'killsMidPipeline' | 'restarts' | 'duplicates' | 'recoveryP50Ms' | 'recoveryP95Ms' | 'meshVsLocal' | 'leases' | 'leasesLost' | 'microBatch' | 'microBatchMeshMs'> & { jobsPerS: number, localJobsPerS: number, errors: string[] }

export async function runBatch (swarm: LocalSwarm, items: Job[], tally: Tally, o: BatchRunOptions): Promise<BatchFigures> {
  const { say, signal } = o
  const runner = swarm.client.batchRunner(swarm.model, { signal, microBatch: o.microBatch })
  runner.addEventListener('lease', (e) => { say('lease', `${swarm.labelOf(e.detail.peer)} leased for stage${e.detail.stages.length > 1 ? 's' : ''} ${e.detail.stages.join(', ')}`) })
  runner.addEventListener('lease-lost', (e) => { say('lost', `lease of ${swarm.labelOf(e.detail.peer)} lost`) })
  const kills: Array<{ at: number, peer: string, pending: Set<number> }> = []
  const recovery: number[] = []
  let killsMid = 0; let restarts = 0; let itemsDone = 0
  const m = swarm.model
  // chaos kills processes: it runs on swarms whose vehicles each have their own
  const running = (): PeerProcess[] => swarm.vehicles.filter((v): v is PeerProcess => v instanceof PeerProcess && v.running && swarm.peerOf.has(v.label))

  const killer = async (): Promise<void> => {
    while (!signal.aborted && itemsDone < items.length) {
      await new Promise(resolve => setTimeout(resolve, o.killEveryMs))
      if (itemsDone >= items.length || signal.aborted) break
      // never take the last eligible holder of a stage
      const safe = running().filter(v => {
        const peer = swarm.peerOf.get(v.label)!
        return m.manifest.stages.every(st => {
          const holders = swarm.client.directory.holders(m.cid, st.index)
          return !holders.some(x => x.peer === peer) || holders.length >= 2
        })
      })
      const busy = safe.filter(v => runner.itemsThrough(swarm.peerOf.get(v.label)!).length > 0)
      const pool = busy.length > 0 ? busy : safe
      const victim = pool[Math.floor(Math.random() * pool.length)]
      if (victim === undefined) continue
      const peer = swarm.peerOf.get(victim.label)!
      const pending = new Set(runner.itemsThrough(peer))
      if (pending.size > 0) killsMid++
      victim.proc.kill('SIGKILL')
      kills.push({ at: Date.now(), peer, pending })
      say('kill', `${victim.label} killed with SIGKILL holding ${pending.size} item${pending.size === 1 ? '' : 's'} in flight`)
      await victim.exited
      // most come back (same identity and store, choosing the stages the swarm
      // serves worst); at most one stays down at a time
      const down = swarm.vehicles.filter(v => !v.running).length
      if (kills.length % 3 !== 0 || down > 1) {
        await new Promise(resolve => setTimeout(resolve, 1000))
        if (signal.aborted || itemsDone >= items.length) break
        const i = swarm.vehicles.indexOf(victim)
        const again = swarm.startVehicle(i, ['--auto-stages', String(swarm.placement[i].length)], swarm.placement[i])
        restarts++
        say('back', `${victim.label} restarted (pid ${again.pid}); it will choose the stages the swarm serves worst`)
      }
    }
  }

  const started = performance.now()
  say('batch', `${items.length} items as one batch job${o.chaos ? `; a vehicle is killed every ${o.killEveryMs / 1000} s` : ''}`)
  const killing = o.chaos ? killer() : Promise.resolve()
  const result = await runner.run(items.map(j => [j.input]), (e) => {
    if (e.result === undefined) return
    itemsDone++
    // per kill: the first completion of an item that was on the killed vehicle
    for (const k of kills) if (k.pending.has(e.index)) { recovery.push(Date.now() - k.at); k.pending.clear() }
    tally.add(items[e.index], e.result)
    if (itemsDone % 50 === 0) say('done', `${itemsDone}/${items.length} items`)
  })
  itemsDone = items.length
  await killing
  const meshItemsPerS = result.done / ((performance.now() - started) / 1000)
  // the same items through the whole model in this process, for the ratio
  const localItemsPerS = await localSpeed(swarm.modelBytes, items.map(j => j.input))
  return {
    jobsPerS: meshItemsPerS,
    localJobsPerS: localItemsPerS,
    errors: result.results.filter((r): r is Error => r instanceof Error).map(e => e.message).slice(0, 10),
    kills: kills.length,
    killsMidPipeline: killsMid,
    restarts,
    duplicates: result.duplicates,
    recoveryP50Ms: Math.round(percentile(recovery, 50)),
    recoveryP95Ms: Math.round(percentile(recovery, 95)),
    meshVsLocal: Math.round(meshItemsPerS / localItemsPerS * 1000) / 1000,
    leases: result.leases,
    leasesLost: result.leasesLost,
    microBatch: result.microBatch,
    ...(result.meshMs !== undefined ? { microBatchMeshMs: result.meshMs } : {})
  }
}
