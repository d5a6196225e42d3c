/**
 * `fleetmesh swarm --trace`: the path of a job through the swarm's processes
 * (node/util/job-path.ts), one job at a time, as the median time between
 * each two consecutive marks: the client's write, each stage's arrival,
 * hand-over to its session's thread and back, the hand-off, the last hop's
 * result and the client's check. What is not stage compute in this path is
 * what a sequential job spends beside it (the swarm's overheadP50Ms).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TRACE_ENV, flushTrace, jobPaths, traceTo } from '../util/job-path.ts'
import type { PathStep } from '../util/job-path.ts'

/** Jobs left out of the path as warming up (compilers, first connections): this many, at most a quarter of the jobs. */
const WARM_UP_JOBS = 20
/** The vehicles append their marks every 250 ms: this long after the last job, they all have. */
const SETTLE_MS = 600

export interface JobPath {
  /** Jobs the medians are over. */
  jobs: number
  /** The median over jobs of the time from a job's first mark to its last. */
  spanMs: number
  steps: PathStep[]
}

export interface SwarmTrace {
  /** Reads the marks of every process (once they have written them): the path's steps. */
  path: (jobs: number) => Promise<JobPath>
  /** Stops marking, in this process and in processes started after; removes the trace file. */
  stop: () => Promise<void>
}

/** Starts marking in this process and (through the environment) in every process and thread the swarm starts after this. */
export async function startTrace (): Promise<SwarmTrace> {
  const dir = await mkdtemp(join(tmpdir(), 'fleetmesh-trace-'))
  const file = join(dir, 'marks.txt')
  const before = process.env[TRACE_ENV]
  process.env[TRACE_ENV] = file
  traceTo(file)
  return {
    async path (jobs) {
      flushTrace()
      await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
      const text = await readFile(file, 'utf8').catch(() => '')
      return jobPaths(text, Math.min(WARM_UP_JOBS, Math.floor(jobs / 4)))
    },
    async stop () {
      traceTo(undefined)
      if (before === undefined) delete process.env[TRACE_ENV]
      else process.env[TRACE_ENV] = before
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** The path as lines of text: each step's median ms, the marks between which it falls, and over how many jobs. */
export function describePath (p: JobPath): string[] {
  if (p.steps.length === 0) return ['no marks were read: nothing to show']
  const width = Math.max(...p.steps.map(s => s.from.length))
  const total = p.steps.reduce((n, s) => n + s.ms, 0)
  return [
    `path of a job, median ms over ${p.jobs} jobs between consecutive marks (steps inside a stage's session are its compute):`,
    ...p.steps.map(s => `  ${s.from.padEnd(width)} -> ${s.to.padEnd(width)} ${s.ms.toFixed(3).padStart(8)}${s.jobs < p.jobs ? `  (${s.jobs} jobs)` : ''}`),
    `  ${'sum of the steps\' medians'.padEnd(2 * width + 4)} ${total.toFixed(3).padStart(8)}`,
    `  ${'first mark to last, median'.padEnd(2 * width + 4)} ${p.spanMs.toFixed(3).padStart(8)}`
  ]
}
