/**
 * Jobs one by one through the mesh, `concurrency` at a time, each checked as
 * it completes; the default `fleetmesh swarm` run and `--scenario day`.
 */
import type { InferOptions } from '../client/pipeline.ts'
import { shortPeer } from '../util/text.ts'
import type { Job, Tally } from './jobs.ts'
import type { LocalSwarm, Say } from './mesh.ts'

export interface PerJobOptions {
  concurrency: number
  /** Whether to submit job number `n` (a count, or until a deadline). */
  more: (n: number) => boolean
  signal: AbortSignal
  /** Print every job (else only retried ones and every 20th). */
  everyJob: boolean
  infer?: InferOptions
  say: Say
}

/** Runs jobs until `more` says stop; returns how many were submitted and the errors. */
export async function runPerJob (swarm: LocalSwarm, jobs: Job[], tally: Tally, o: PerJobOptions): Promise<{ submitted: number, errors: string[], seconds: number }> {
  const errors: string[] = []
  let next = 0
  const t0 = performance.now()
  const worker = async (): Promise<void> => {
    while (o.more(next) && !o.signal.aborted) {
      const n = next++
      const j = jobs[n % jobs.length]
      const tag = `job ${String(n + 1).padStart(2)}`
      try {
        const r = await swarm.client.infer(swarm.model, [j.input], { ...o.infer, signal: o.signal })
        const c = tally.add(j, r)
        const what = c.text !== undefined
          ? `${JSON.stringify(c.text).padEnd(18)} expected ${JSON.stringify(j.expected).padEnd(18)} ${c.correct ? 'ok' : 'WRONG'}`
          : `${j.label.padEnd(12)} max|diff| ${c.diff.toExponential(1)}`
        if (o.everyJob || r.attempts > 1 || n % 20 === 0) o.say(tag, `${what}  ${r.route.map(shortPeer).join(' > ')}  ${r.ms.toFixed(0)} ms${r.attempts > 1 ? ` (${r.attempts} attempts)` : ''}`)
      } catch (err) {
        if (o.signal.aborted) return
        errors.push(`job ${n + 1}: ${(err as Error).message}`)
        o.say(tag, `FAILED: ${(err as Error).message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, worker))
  return { submitted: next, errors, seconds: (performance.now() - t0) / 1000 }
}
