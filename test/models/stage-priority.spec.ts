/**
 * A stage session's worker thread runs at the priority asked
 * (node/runtime/thread-priority.ts): SCHED_IDLE by default, nice 19 for
 * `low`, unchanged for `normal`; the node's own thread is never lowered, and
 * a session at the lowest priority still answers.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { workerSession } from '../../node/runtime/session-worker.ts'
import { STAGE_PRIORITIES, isStagePriority, threadId } from '../../node/runtime/thread-priority.ts'
import { buildShapeModel } from '../utils/onnx-builder.ts'

/** A thread's nice value and scheduling policy, from /proc (fields 19 and 41 of stat). */
function schedOf (tid: number): { nice: number, policy: number } {
  const stat = readFileSync(`/proc/${process.pid}/task/${tid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { nice: Number(f[19 - 3]), policy: Number(f[41 - 3]) }
}
const SCHED_OTHER = 0
const SCHED_IDLE = 5

describe('a stage session\'s thread priority', function () {
  this.timeout(60_000)

  it('knows its own thread: the main thread\'s id is the process\'s', () => {
    assert.equal(threadId(), process.pid)
  })

  for (const [asked, want] of [
    ['idle', { set: 'sched-idle', nice: 0, policy: SCHED_IDLE }],
    ['low', { set: 'nice 19', nice: 19, policy: SCHED_OTHER }],
    ['normal', { set: 'unchanged', nice: 0, policy: SCHED_OTHER }]
  ] as const) {
    it(`${asked}: the worker thread's priority is "${want.set}", the node's thread keeps its own, and the session answers`, async () => {
      const before = schedOf(process.pid)
      const session = await workerSession(buildShapeModel(8), {}, asked)
      try {
        assert.equal(session.priority?.asked, asked)
        assert.equal(session.priority?.set, want.set, session.priority?.problem)
        const tid = session.priority?.tid
        if (asked !== 'normal') {
          assert.ok(tid !== undefined && tid !== process.pid, `the worker's own thread, got ${tid}`)
          assert.deepEqual(schedOf(tid), { nice: want.nice, policy: want.policy })
        }
        assert.deepEqual(schedOf(process.pid), before, 'the node\'s own thread keeps its priority')
        const r = await session.run([{ name: 'x', dtype: 'float32', dims: [8], data: new Uint8Array(32) }])
        assert.deepEqual([...new BigInt64Array(r.outputs[0].data.buffer, r.outputs[0].data.byteOffset, 1)], [8n])
      } finally { await session.release() }
    })
  }

  it('onnxruntime\'s own threads (--threads 2) inherit it: made with the session, after the worker lowered itself', async () => {
    const tasks = (): Set<number> => new Set(readdirSync(`/proc/${process.pid}/task`).map(Number))
    const before = tasks()
    const session = await workerSession(buildShapeModel(8), { intraOpThreads: 2 }, 'low')
    try {
      const lowered = [...tasks()].filter(t => !before.has(t)).filter(t => { try { return schedOf(t).nice === 19 } catch { return false } })
      // the worker's thread and onnxruntime's second intra-op thread
      assert.ok(lowered.length >= 2, `${lowered.length} new thread(s) at nice 19: ${lowered.join(', ')}`)
      assert.ok(lowered.includes(session.priority!.tid!))
    } finally { await session.release() }
  })

  it('idle where chrt cannot be run: nice 19, and says why', async () => {
    const path = process.env.PATH
    process.env.PATH = '/nonexistent'
    let session
    // a worker takes a copy of the environment when it starts
    try { session = await workerSession(buildShapeModel(8), {}, 'idle') } finally { process.env.PATH = path }
    try {
      assert.equal(session.priority?.set, 'nice 19')
      assert.match(session.priority?.problem ?? '', /chrt could not set SCHED_IDLE .*nice 19 instead/)
      assert.deepEqual(schedOf(session.priority!.tid!), { nice: 19, policy: SCHED_OTHER })
    } finally { await session.release() }
  })

  it('names the priorities it takes', () => {
    assert.deepEqual([...STAGE_PRIORITIES], ['idle', 'low', 'normal'])
    assert.ok(isStagePriority('idle') && !isStagePriority('high') && !isStagePriority(undefined))
  })
})
