/**
 * A stage's onnxruntime session on a thread of its own (session-worker.ts is
 * the other end): onnxruntime-node runs a session synchronously on the
 * thread that calls it, so on the main thread every stage run stalls the
 * node's networking for its whole duration.
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { Tensor } from '../../protocols/tensor.ts'
import { createSession, runSession } from '../models/ort.ts'
import type { SessionTuning } from '../models/ort.ts'
import { mark, NO_JOB } from '../util/job-path.ts'
import { lowerThisThread } from './thread-priority.ts'
import type { AppliedPriority, StagePriority } from './thread-priority.ts'

interface Init { model: Uint8Array, tuning: SessionTuning, priority: StagePriority }
export type WorkerRequest = { id: number, inputs: Tensor[] } | { id: number, release: true }
export type WorkerReply = { id: number, outputs: Tensor[], ms: number } | { id: number, error: string } | { ready: true, outputNames: readonly string[], priority: AppliedPriority } | { failed: string }

const port = parentPort!
const init = workerData as Init
// before the session: onnxruntime's own threads, made with it, inherit the priority
const priority = lowerThisThread(init.priority)
try {
  const session = await createSession(init.model, init.tuning)
  port.on('message', (m: WorkerRequest) => {
    if ('release' in m) { void session.release().finally(() => { port.postMessage({ id: m.id, outputs: [], ms: 0 }); port.close() }); return }
    mark(NO_JOB, 'worker.start')
    const t0 = performance.now()
    runSession(session, m.inputs).then(outputs => {
      const ms = performance.now() - t0
      mark(NO_JOB, 'worker.end')
      // the outputs are buffers of their own (fromOrt): moved, not copied
      port.postMessage({ id: m.id, outputs, ms } satisfies WorkerReply, outputs.map(t => t.data.buffer as ArrayBuffer))
    }, (err: Error) => { port.postMessage({ id: m.id, error: err.message } satisfies WorkerReply) })
  })
  port.postMessage({ ready: true, outputNames: session.outputNames, priority } satisfies WorkerReply)
} catch (err) {
  port.postMessage({ failed: (err as Error).message } satisfies WorkerReply)
}
