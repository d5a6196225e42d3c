/**
 * A stage run's time is the session's own (node/runtime/session-worker.ts):
 * measured on the thread that ran it, so what the receipts and the swarm's
 * stage compute report leaves out handing the tensors to a session's worker
 * thread and back, which is overhead (the swarm's overheadP50Ms counts it);
 * and a request's tensors in shared memory reach the thread without a copy.
 */
import assert from 'node:assert/strict'
import { threadSession, workerSession } from '../../node/runtime/session-worker.ts'
import type { Tensor } from '../../protocols/tensor.ts'
import { buildShapeModel } from '../utils/onnx-builder.ts'

const N = 16 * 1024 * 1024

describe('a session reports its own run time', function () {
  this.timeout(60_000)

  for (const [where, open] of [['on a worker thread', workerSession], ['on this thread', threadSession]] as const) {
    it(`${where}: the run's time, not the hand-over's`, async () => {
      const session = await open(buildShapeModel(N), {})
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

  it('a worker thread reads inputs in shared memory where they are: no copy, and the caller keeps them', async () => {
    const session = await workerSession(buildShapeModel(N), {})
    try {
      const plain: Tensor = { name: 'x', dtype: 'float32', dims: [N], data: new Uint8Array(4 * N).fill(1) }
      const shared: Tensor = { ...plain, data: new Uint8Array(new SharedArrayBuffer(4 * N)).fill(1) }
      const wall = async (x: Tensor): Promise<number> => { const t0 = performance.now(); await session.run([x]); return performance.now() - t0 }
      await wall(plain)
      await wall(shared)
      // alternating, the best of three each: 64 MB copied against none
      const [p, s] = [[] as number[], [] as number[]]
      for (let i = 0; i < 3; i++) { p.push(await wall(plain)); s.push(await wall(shared)) }
      assert.ok(Math.min(...s) < Math.min(...p) / 2, `shared ${Math.min(...s).toFixed(2)} ms, copied ${Math.min(...p).toFixed(2)} ms`)
      assert.equal(shared.data.byteLength, 4 * N)
      assert.equal(shared.data[4 * N - 1], 1)
    } finally { await session.release() }
  })
})
