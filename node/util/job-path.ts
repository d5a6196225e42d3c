/**
 * Where a job's time goes between its processes (`fleetmesh swarm --trace`).
 *
 * With FLEETMESH_TRACE naming a file, every process and thread that loads
 * this module keeps a line per mark (`ns pid thread job event`) and appends
 * them to that file every 250 ms and as it exits. The times come from
 * process.hrtime (CLOCK_MONOTONIC), one clock for every process of a
 * machine, so marks of the client and of each vehicle order into one path
 * per job; `jobPaths` turns them into the median time between each two
 * consecutive marks. Off (the variable unset), a mark is one comparison.
 */
import { appendFileSync } from 'node:fs'
import { threadId } from 'node:worker_threads'

/** The environment variable naming the trace file. */
export const TRACE_ENV = 'FLEETMESH_TRACE'
/** Marks made outside any job (a session's worker thread, which does not know the job): placed by pid and time. */
export const NO_JOB = '-'
const FLUSH_MS = 250

let file: string | undefined
let lines: string[] = []
let timer: ReturnType<typeof setInterval> | undefined

function flush (): void {
  if (file === undefined || lines.length === 0) return
  const out = lines.join('\n') + '\n'
  lines = []
  try { appendFileSync(file, out) } catch { /* the trace is a diagnostic: never fail a job over it */ }
}

/** Starts (or, with undefined, stops) this thread's marks, appended to `path`; the module starts itself from FLEETMESH_TRACE. */
export function traceTo (path: string | undefined): void {
  flush()
  file = path
  if (timer !== undefined) { clearInterval(timer); timer = undefined }
  if (path === undefined) return
  timer = setInterval(flush, FLUSH_MS)
  timer.unref()
}

process.on('exit', flush)
if (process.env[TRACE_ENV] !== undefined && process.env[TRACE_ENV] !== '') traceTo(process.env[TRACE_ENV])

/** Writes this thread's marks to the file now. */
export function flushTrace (): void { flush() }

/**
 * Marks that `job` reached `event` here, now. Events are dotted names, e.g.
 * `stage0.ran`. A job id comes from a peer's request: whitespace and control
 * characters in it become `?`, so it cannot add lines or fields to the trace.
 */
export function mark (job: string, event: string): void {
  if (file !== undefined) lines.push(`${process.hrtime.bigint()} ${process.pid} ${threadId} ${job.replace(/[\s\p{Cc}]/gu, '?')} ${event}`)
}

/** One step of the path: the median ms from one mark to the next, over the jobs that had both. */
export interface PathStep { from: string, to: string, ms: number, jobs: number }

interface Mark { ns: bigint, pid: string, job: string, event: string }

function parse (text: string): Mark[] {
  const out: Mark[] = []
  for (const line of text.split('\n')) {
    const [ns, pid, , job, event] = line.split(' ')
    if (event === undefined || !/^\d+$/.test(ns)) continue
    out.push({ ns: BigInt(ns), pid, job, event })
  }
  return out
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1] }

/**
 * The steps of the jobs' paths in `text` (a trace file). Each job's marks
 * (a job-less mark of a process joins the job whose `<stage>.run` ..
 * `<stage>.ran` marks of that process surround it, its event prefixed with
 * that stage; with one job at a time there is one) are timed from its first;
 * the events, in the order of their median times, make the path, and each
 * step is the median over jobs of the time from one event to the next. A
 * mark that comes again in a job (a retry) counts the first time. The first
 * `skip` jobs (warming up) are left out. `spanMs`: the median over jobs of
 * the time from a job's first mark to its last (the medians of the steps need
 * not add up to it).
 */
export function jobPaths (text: string, skip = 0): { jobs: number, spanMs: number, steps: PathStep[] } {
  const marks = parse(text)
  const byNs = (a: Mark, b: Mark): number => a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0
  // job-less marks per process, in time order (found by binary search: a long run has many)
  const free = new Map<string, Mark[]>()
  const byJob = new Map<string, Mark[]>()
  for (const m of marks) {
    const [map, key] = m.job === NO_JOB ? [free, m.pid] : [byJob, m.job]
    const list = map.get(key)
    if (list === undefined) map.set(key, [m]); else list.push(m)
  }
  for (const list of free.values()) list.sort(byNs)
  const jobs = [...byJob.values()].map(ms => ms.sort(byNs)).sort((a, b) => byNs(a[0], b[0])).slice(skip)
  const times = jobs.map(ms => {
    const at = new Map<string, bigint>()
    const put = (event: string, ns: bigint): void => { if (!at.has(event)) at.set(event, ns) }
    for (const m of ms) put(m.event, m.ns)
    for (const run of ms) {
      const stage = /^(stage\d+)\.run$/.exec(run.event)?.[1]
      const ran = stage !== undefined ? ms.find(x => x.pid === run.pid && x.event === `${stage}.ran` && x.ns >= run.ns) : undefined
      const list = free.get(run.pid)
      if (ran === undefined || list === undefined) continue
      let lo = 0
      for (let hi = list.length; lo < hi;) { const mid = (lo + hi) >> 1; if (list[mid].ns < run.ns) lo = mid + 1; else hi = mid }
      for (let i = lo; i < list.length && list[i].ns <= ran.ns; i++) put(`${stage!}.${list[i].event}`, list[i].ns)
    }
    return at
  })
  const offsets = new Map<string, number[]>()
  const spans: number[] = []
  for (const at of times) {
    const t0 = [...at.values()].reduce((a, b) => a < b ? a : b)
    let last = t0
    for (const [event, ns] of at) {
      const list = offsets.get(event)
      if (list === undefined) offsets.set(event, [Number(ns - t0) / 1e6]); else list.push(Number(ns - t0) / 1e6)
      if (ns > last) last = ns
    }
    spans.push(Number(last - t0) / 1e6)
  }
  const path = [...offsets].sort((a, b) => median(a[1]) - median(b[1])).map(([event]) => event)
  const steps: PathStep[] = []
  for (let i = 1; i < path.length; i++) {
    const [from, to] = [path[i - 1], path[i]]
    const gaps = times.flatMap(at => at.has(from) && at.has(to) ? [Number(at.get(to)! - at.get(from)!) / 1e6] : [])
    if (gaps.length > 0) steps.push({ from, to, ms: Math.round(median(gaps) * 1000) / 1000, jobs: gaps.length })
  }
  return { jobs: jobs.length, spanMs: spans.length > 0 ? Math.round(median(spans) * 1000) / 1000 : 0, steps }
}
