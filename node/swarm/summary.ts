/**
 * The JSON summary of a swarm run (`fleetmesh swarm --json`, last line).
 */
import type { Tally } from './jobs.ts'
import type { LocalSwarm } from './mesh.ts'

import type { ControlTraffic } from './traffic.ts'
import type { CpuPerJob } from './cpu.ts'
import type { JobPath } from './trace.ts'
import { DEFAULT_STAGE_PRIORITY } from '../runtime/thread-priority.ts'
import type { StagePriority } from '../runtime/thread-priority.ts'

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
  /** Median over jobs of the summed stage run times (the rest of p50Ms is transfer and queueing; a job that went with others counts its group's runs). */
  computeP50Ms: number
  /** Median over jobs of each job's latency less its own summed stage runs: what a job spends beside its compute (p50Ms - computeP50Ms mixes two medians). */
  overheadP50Ms: number
  localJobsPerS: number
  /** Runs of 100 jobs or more: the whole model timed before and after the mesh's jobs (localJobsPerS and localCpuMsPerJob are both as one). */
  localBeforeAfter?: Array<{ jobsPerS: number, cpuMsPerJob: number }>
  /** Per-job runs: CPU ms per job of the vehicles' stage threads and main threads, the client and the bootstrap (swarm/cpu.ts), and the whole model's in one process. */
  cpuMsPerJob?: CpuPerJob
  localCpuMsPerJob?: number
  /** Per-job runs: jobs that went together (the client's coalesce): mesh jobs sent for them, and the jobs they carried. */
  coalesced?: { groups: number, items: number }
  /** `--trace`: the steps of a job's path through the processes (swarm/trace.ts). */
  path?: JobPath
  /** The CPU priority the vehicles' stage threads were asked to run at (`--stage-priority`, else chosen), and what they reported running at. */
  stagePriority: StagePriority
  stageThreads: string[]
  /** Without `--stage-priority` (and not `--chaos`): the idle cores measured before the swarm started, which chose it (swarm/spare-cpu.ts). */
  spareCoresAtStart?: number
  startupMs: number
  totalMs: number
  errors: string[]
  /** Result checks: the mode, vehicles told to lie (--liars), results delivered wrong, convictions, extra stage runs over plain ones. */
  verify: string
  liars: number
  wrongDelivered: number
  caught: number
  checked: number
  unverifiable: number
  verifyOverhead: number
  /** With --idle-s: idle control traffic per vehicle, bytes/s received and sent (connection level), and the rest of the measurement. */
  controlBytesPerNodePerS?: { in: number, out: number }
  control?: ControlTraffic
  /** With --scenario day. */
  departures?: number
  drained?: number
  lost?: number
  wrong?: number
  withdrawP95Ms?: number
  /** With --batch / --chaos. */
  kills?: number
  killsMidPipeline?: number
  restarts?: number
  duplicates?: number
  recoveryP50Ms?: number
  recoveryP95Ms?: number
  meshVsLocal?: number
  leases?: number
  leasesLost?: number
  microBatch?: number
  /** Batch mode, `--micro-batch auto` deciding again: what the first jobs cost beside their stages' compute (median ms). */
  microBatchMeshMs?: number
}

const r2 = (x: number): number => Math.round(x * 100) / 100

/** The fields every run reports. */
export function baseSummary (swarm: LocalSwarm, tally: Tally, jobs: number, jobsPerS: number, localJobsPerS: number, errors: string[]): SwarmSummary {
  return {
    model: swarm.sharded.manifest.name,
    manifest: swarm.sharded.manifestCid,
    nodes: swarm.init.nodes,
    stages: swarm.init.stages,
    stagePriority: swarm.init.stagePriority ?? DEFAULT_STAGE_PRIORITY,
    stageThreads: [...swarm.stageThreads].sort(),
    jobs,
    completed: tally.completed,
    failed: jobs - tally.completed,
    maxAbsDiff: tally.worstDiff,
    correctText: tally.hasText ? tally.correct : null,
    p50Ms: tally.p(50),
    p95Ms: tally.p(95),
    jobsPerS: r2(jobsPerS),
    routes: tally.routes.size,
    computeP50Ms: tally.computeP50(),
    overheadP50Ms: tally.overheadP50(),
    localJobsPerS: r2(localJobsPerS),
    startupMs: Math.round(swarm.startupMs),
    totalMs: 0,
    errors,
    ...checkFigures(swarm, tally)
  }
}

/** What the client's result checks did over the run. */
function checkFigures (swarm: LocalSwarm, tally: Tally): Pick<SwarmSummary, 'verify' | 'liars' | 'wrongDelivered' | 'caught' | 'checked' | 'unverifiable' | 'verifyOverhead'> {
  const v = swarm.client.verifier
  return {
    verify: v.mode,
    liars: swarm.init.liars ?? 0,
    wrongDelivered: tally.wrong,
    caught: v.stats.caught,
    checked: v.stats.checked,
    unverifiable: v.stats.unverifiable,
    verifyOverhead: v.stats.plainRuns > 0 ? Math.round(v.stats.checkRuns / v.stats.plainRuns * 1000) / 1000 : 0
  }
}
