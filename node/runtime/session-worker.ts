/**
 * Stage sessions for the stage runtime: on the node's own thread, or (the
 * default for vehicles) on a worker thread each (ort-worker.ts), so a stage
 * run no longer stalls the node's networking: streams to the next hop open,
 * hand-offs arrive and answers leave while a stage computes.
 */
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { Tensor } from '../../protocols/tensor.ts'
import { createSession, runSession } from '../models/ort.ts'
import type { SessionTuning } from '../models/ort.ts'
import type { WorkerReply, WorkerRequest } from './ort-worker.ts'
import { DEFAULT_STAGE_PRIORITY } from './thread-priority.ts'
import type { AppliedPriority, StagePriority } from './thread-priority.ts'

/**
 * What the stage runtime needs of a session. A run reports its outputs and
 * how long the session itself ran, measured on the thread that ran it (a
 * worker's run leaves out handing the tensors over to it and back).
 */
export interface StageSession {
  run: (inputs: Tensor[]) => Promise<{ outputs: Tensor[], ms: number }>
  release: () => Promise<void>
  /** The priority its thread runs at (a worker's; a session on this thread keeps this thread's). */
  priority?: AppliedPriority
}

/** A session on this thread. */
export async function threadSession (model: Uint8Array, tuning: SessionTuning): Promise<StageSession> {
  const session = await createSession(model, tuning)
  return {
    run: async (inputs) => { const t0 = performance.now(); const outputs = await runSession(session, inputs); return { outputs, ms: performance.now() - t0 } },
    release: async () => { await session.release() }
  }
}

/**
 * What a run posts to its worker thread: tensors in shared memory (a request's
 * tensors, frameTensors' `shared`) as they are, read where they lie; any other
 * input copied into a buffer of its own and moved (`transfer`), so the
 * caller's tensor stays whole and a view into a larger frame buffer does not
 * carry all of it along.
 */
export function handOver (inputs: Tensor[]): { tensors: Tensor[], transfer: ArrayBuffer[] } {
  const tensors = inputs.map(t => t.data.buffer instanceof SharedArrayBuffer ? t : { name: t.name, dtype: t.dtype, dims: t.dims, data: new Uint8Array(t.data) })
  return { tensors, transfer: tensors.flatMap(t => t.data.buffer instanceof SharedArrayBuffer ? [] : [t.data.buffer as ArrayBuffer]) }
}

// .ts when run from source, .js when built
const WORKER = new URL(`./ort-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)

/**
 * A session on a worker thread of its own, at `priority` (thread-priority.ts);
 * inputs are copied to it, outputs moved back.
 */
export async function workerSession (model: Uint8Array, tuning: SessionTuning, priority: StagePriority = DEFAULT_STAGE_PRIORITY): Promise<StageSession> {
  const worker = new Worker(WORKER, { workerData: { model, tuning, priority } })
  const waiting = new Map<number, { resolve: (r: { outputs: Tensor[], ms: number }) => void, reject: (e: Error) => void }>()
  let next = 0
  let dead: Error | undefined
  const failAll = (err: Error): void => { dead = err; for (const w of waiting.values()) w.reject(err); waiting.clear() }
  const applied = await new Promise<AppliedPriority>((resolve, reject) => {
    const onFirst = (m: WorkerReply): void => {
      if ('ready' in m) resolve(m.priority)
      else if ('failed' in m) reject(new Error(m.failed))
    }
    worker.once('message', onFirst)
    worker.once('error', reject)
  })
  worker.on('message', (m: WorkerReply) => {
    if (!('id' in m)) return
    const w = waiting.get(m.id)
    if (w === undefined) return
    waiting.delete(m.id)
    if ('error' in m) w.reject(new Error(m.error))
    else w.resolve({ outputs: m.outputs, ms: m.ms })
  })
  worker.on('error', failAll)
  worker.on('exit', code => { failAll(new Error(`the session's worker thread exited (${code})`)) })
  const call = async (req: Omit<WorkerRequest, 'id'>, transfer: ArrayBuffer[] = []): Promise<{ outputs: Tensor[], ms: number }> => {
    if (dead !== undefined) throw dead
    const id = next++
    return await new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject })
      worker.postMessage({ ...req, id }, transfer)
    })
  }
  return {
    priority: applied,
    async run (inputs) {
      const { tensors, transfer } = handOver(inputs)
      return await call({ inputs: tensors }, transfer)
    },
    async release () {
      if (dead === undefined) await call({ release: true }).catch(() => {})
      await worker.terminate()
    }
  }
}
