/**
 * The CPU a machine has to spare before a swarm starts, and the stage
 * priority its vehicles get from it when none was asked for.
 *
 * A vehicle's stage threads run at SCHED_IDLE by default (a car lends only
 * what nothing else on it wants; runtime/thread-priority.ts). On a developer's
 * machine whose cores other processes keep busy (a build, a second test run),
 * such threads get no CPU at all: every vehicle of a swarm timed out loading
 * its stages (`fleetmesh swarm` beside two busy loops on 2 cores: "timed out
 * after 90000 ms waiting for serving stage 0"), where at normal priority the
 * same swarm finished in 28 s. So a swarm measures first and, when less than
 * MIN_SPARE_CORES is idle, runs its stage threads at normal priority and says so.
 */
import { cpus } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { StagePriority } from '../runtime/thread-priority.ts'

/** Idle CPU over a short window: `spare` cores' worth of `cores`. */
export interface SpareCpu { cores: number, spare: number }

/** Below this many idle cores, stage threads at SCHED_IDLE would wait behind other processes for every run. */
export const MIN_SPARE_CORES = 0.5

/** How long a swarm watches the cores before it starts. */
export const SPARE_WINDOW_MS = 500

interface Ticks { idle: number, total: number }

function ticks (): Ticks[] {
  return cpus().map(c => ({ idle: c.times.idle, total: c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq }))
}

/** The idle share of each core over `ms` (os.cpus()), summed; undefined where the platform tells nothing. Rejects if `signal` aborts. */
export async function measureSpareCpu (ms = SPARE_WINDOW_MS, signal?: AbortSignal): Promise<SpareCpu | undefined> {
  const before = ticks()
  await sleep(ms, undefined, signal !== undefined ? { signal } : {})
  return spareBetween(before, ticks())
}

/** Spare cores between two readings of the same cores; undefined when they do not compare (no cores, no time passed). */
export function spareBetween (before: Ticks[], after: Ticks[]): SpareCpu | undefined {
  if (before.length === 0 || before.length !== after.length) return undefined
  let spare = 0
  for (let i = 0; i < before.length; i++) {
    const total = after[i].total - before[i].total
    if (total <= 0) return undefined
    spare += Math.min(1, Math.max(0, (after[i].idle - before[i].idle) / total))
  }
  return { cores: before.length, spare: Math.round(spare * 100) / 100 }
}

/** A swarm's stage priority when none was asked for: SCHED_IDLE as a car lends, unless the machine has too little to spare. */
export function swarmStagePriority (cpu: SpareCpu | undefined): StagePriority {
  return cpu !== undefined && cpu.spare < MIN_SPARE_CORES ? 'normal' : 'idle'
}

/** The progress line for a swarm that runs its stage threads at normal priority because the cores were busy. */
export function describeBusy (cpu: SpareCpu): string {
  const busy = Math.round((1 - cpu.spare / cpu.cores) * 100)
  return `the cores are ${busy}% busy with other work (${cpu.spare.toFixed(2)} of ${cpu.cores} idle): stage threads run at normal priority, as at SCHED_IDLE they would get no CPU (--stage-priority idle to lend only spare CPU anyway)`
}
