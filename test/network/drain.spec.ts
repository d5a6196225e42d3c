import assert from 'node:assert/strict'
import { drained } from '../../node/util/drain.ts'

describe('drained: waiting for room to write on a stream', () => {
  it('resolves on the stream\'s next drain, every time, and leaves no listener behind', async () => {
    const stream = new EventTarget()
    let listeners = 0
    const add = stream.addEventListener.bind(stream)
    const remove = stream.removeEventListener.bind(stream)
    stream.addEventListener = (...args: Parameters<EventTarget['addEventListener']>) => { listeners++; add(...args) }
    stream.removeEventListener = (...args: Parameters<EventTarget['removeEventListener']>) => { listeners--; remove(...args) }
    for (let i = 0; i < 2; i++) {
      let done = false
      const waiting = drained(stream).then(() => { done = true })
      await new Promise(resolve => setImmediate(resolve))
      // unlike @libp2p/utils' onDrain(), the second wait waits too
      assert.equal(done, false, `wait ${i + 1} resolved before a drain`)
      stream.dispatchEvent(new Event('drain'))
      await waiting
      assert.equal(listeners, 0)
    }
  })

  it('rejects, naming why, if the stream closes first', async () => {
    const stream = new EventTarget()
    const waiting = drained(stream)
    stream.dispatchEvent(new Event('close'))
    await assert.rejects(waiting, /closed while waiting for room to write/)
  })
})
