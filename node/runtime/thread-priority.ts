/**
 * The CPU priority of a stage session's thread. A vehicle lends the compute
 * its car can spare: its sessions run at the lowest priority, so whatever
 * else runs on the car, and the node's own networking, takes a core from
 * them at once. The node's main thread keeps its priority: it takes
 * requests, hands work on and answers, in bursts of a millisecond or less,
 * and a burst that waits for a session to give up its core stalls the next
 * stage.
 *
 * - `idle` (the default): Linux's SCHED_IDLE, through util-linux's `chrt`.
 *   A thread of any other class that wakes takes the core at once.
 * - `low`: nice 19, the lowest weight of the ordinary class; also what
 *   `idle` falls back to where `chrt` cannot set it.
 * - `normal`: left as it is.
 *
 * Linux keeps both per thread, and threads inherit them: onnxruntime's
 * own threads (`--threads` above 1) are made after this, when the session
 * is created. What it gave is in docs/performance.md.
 */
import { execFileSync } from 'node:child_process'
import { readlinkSync } from 'node:fs'
import { setPriority } from 'node:os'

export const STAGE_PRIORITIES = ['idle', 'low', 'normal'] as const
export type StagePriority = typeof STAGE_PRIORITIES[number]
export const DEFAULT_STAGE_PRIORITY: StagePriority = 'idle'

/** Why a stage at `idle` may wait, and what to do: said where a stage is slow to load (capacity/hosting.ts, swarm/mesh.ts). */
export const IDLE_WAITS = 'its stage threads run at SCHED_IDLE, which gets a core only when nothing else on this computer wants one (--stage-priority normal shares the cores)'

/** What a thread's priority became. */
export interface AppliedPriority {
  asked: StagePriority
  /** The kernel's id of the thread, where it has one. */
  tid?: number
  set: 'sched-idle' | 'nice 19' | 'unchanged'
  /** Why less was set than was asked. */
  problem?: string
}

/** The kernel's id of the calling thread (Linux: /proc/thread-self), or undefined. */
export function threadId (): number | undefined {
  try {
    const id = Number(readlinkSync('/proc/thread-self').split('/').pop())
    return Number.isSafeInteger(id) && id > 0 ? id : undefined
  } catch { return undefined }
}

/** Lowers the calling thread's priority as asked (see the module's comment); never throws. */
export function lowerThisThread (asked: StagePriority): AppliedPriority {
  if (asked === 'normal') return { asked, set: 'unchanged' }
  const tid = threadId()
  if (tid === undefined) return { asked, set: 'unchanged', problem: 'this platform has no per-thread priority (no /proc/thread-self)' }
  let problem: string | undefined
  if (asked === 'idle') {
    try {
      execFileSync('chrt', ['--idle', '--pid', '0', String(tid)], { stdio: 'ignore', timeout: 5000 })
      return { asked, tid, set: 'sched-idle' }
    } catch (err) { problem = `chrt could not set SCHED_IDLE (${(err as Error).message.split('\n')[0]}), nice 19 instead` }
  }
  try {
    setPriority(tid, 19)
    return { asked, tid, set: 'nice 19', ...(problem !== undefined ? { problem } : {}) }
  } catch (err) {
    return { asked, tid, set: 'unchanged', problem: `${problem !== undefined ? `${problem}; ` : ''}nice 19 failed (${(err as Error).message})` }
  }
}

export function isStagePriority (name: unknown): name is StagePriority {
  return (STAGE_PRIORITIES as readonly unknown[]).includes(name)
}
