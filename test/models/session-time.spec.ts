/**
 * A stage run's time is the session's own (node/runtime/session-worker.ts):
 * measured on the thread that ran it, so what the receipts and the swarm's
 * stage compute report leaves out handing the tensors to a session's worker
 * thread and back, which is overhead (the swarm's overheadP50Ms counts it);
 * and a request's tensors in shared memory reach the thread without a copy.
 * The worker threads here run at normal priority: a stage's default
 * (SCHED_IDLE) would let any busy thread on the machine stretch the timed run.
 * What the shared hand-over saves is a speed figure, so it is not timed here.
 */
import assert from 'node:assert/strict'
import { handOver, threadSession, workerSession } from '../../node/runtime/session-worker.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { buildShapeModel } from '../utils/onnx-builder.ts'

const N = 16 * 1024 * 1024

describe('a session reports its own run time', function () {
  this.timeout(60_000)

  for (const [where, open] of [['on a worker thread', async (m: Uint8Array) => await workerSession(m, {}, 'normal')], ['on this thread', async (m: Uint8Array) => await threadSession(m, {})]] as const) {
    it(`${where}: the run's time, not the hand-over's`, async () => {
      const session = await open(buildShapeModel(N))
      try {
        // 64 MB in: handing it to a worker copies it; the run itself reads only its shape
        const x = { name: 'x', dtype: 'float32' as const, dims: [N], data: new Uint8Array(4 * N) }
        await session.run([x])
        const t0 = performance.now()
        const r = await session.run([x])
        const wall = performance.now() - t0
        assert.deepEqual([...new BigInt64Array(r.outputs[0].data.buffer, r.outputs[0].data.byteOffset, 1)], [BigInt(N)])
        assert.ok(r.ms >= 0 && r.ms <= wall, `${r.ms} of ${wall} ms`)
        if (where === 'on a worker thread') assert.ok(r.ms < wall / 2, `the worker's run ${r.ms.toFixed(2)} ms of ${wall.toFixed(2)} ms with the 64 MB hand-over`)
      } finally { await session.release() }
    })
  }

  it('a worker thread gets inputs in shared memory as they are, any other input as a copy of its own, moved', () => {
    const shared: Tensor = { name: 'x', dtype: 'float32', dims: [4], data: new Uint8Array(new SharedArrayBuffer(16)).fill(1) }
    const frame = new Uint8Array(64).fill(2)
    const view: Tensor = { name: 'y', dtype: 'float32', dims: [2], data: frame.subarray(8, 16) }
    const { tensors, transfer } = handOver([shared, view])
    // the same memory: postMessage shares a SharedArrayBuffer, it does not copy it
    assert.equal(tensors[0].data, shared.data)
    // the view: only its 8 bytes, in a buffer of its own that is moved; the frame stays whole
    assert.notEqual(tensors[1].data.buffer, frame.buffer)
    assert.deepEqual([tensors[1].data.byteLength, tensors[1].data.buffer.byteLength], [8, 8])
    assert.deepEqual([...tensors[1].data], [...frame.subarray(8, 16)])
    assert.deepEqual(transfer, [tensors[1].data.buffer])
    assert.deepEqual([tensors[1].name, tensors[1].dtype, tensors[1].dims], ['y', 'float32', [2]])
  })

  it('a worker thread runs on shared and copied inputs alike, and the caller keeps both', async () => {
    const session = await workerSession(buildShapeModel(N), {}, 'normal')
    try {
      const plain: Tensor = { name: 'x', dtype: 'float32', dims: [N], data: new Uint8Array(4 * N).fill(1) }
      const shared: Tensor = { ...plain, data: new Uint8Array(new SharedArrayBuffer(4 * N)).fill(1) }
      for (const x of [plain, shared]) {
        const r = await session.run([x])
        assert.deepEqual([...new BigInt64Array(r.outputs[0].data.buffer, r.outputs[0].data.byteOffset, 1)], [BigInt(N)])
        assert.equal(x.data.byteLength, 4 * N)
        assert.equal(x.data[4 * N - 1], 1)
      }
    } finally { await session.release() }
  })
})
