import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { deadline } from '../../node/util/abortable.ts'

describe('deadline: a step\'s timeout that goes when the step is over', () => {
  it('aborts with a TimeoutError, as AbortSignal.timeout does', async () => {
    const { signal } = deadline(5)
    await sleep(30)
    assert.equal(signal.aborted, true)
    assert.equal((signal.reason as Error).name, 'TimeoutError')
  })

  it('aborts with the reason of the signal it follows, at once when that one has already aborted', () => {
    const parent = new AbortController()
    const { signal } = deadline(60_000, parent.signal)
    parent.abort(new Error('departing'))
    assert.equal((signal.reason as Error).message, 'departing')
    const { signal: late } = deadline(60_000, parent.signal)
    assert.equal(late.aborted, true)
    assert.equal((late.reason as Error).message, 'departing')
  })

  it('cleared, neither its timer nor the signal it follows aborts it, and no listener is left behind', async () => {
    const parent = new AbortController()
    let listeners = 0
    const add = parent.signal.addEventListener.bind(parent.signal)
    const remove = parent.signal.removeEventListener.bind(parent.signal)
    parent.signal.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => { listeners++; add(...args) }
    parent.signal.removeEventListener = (...args: Parameters<AbortSignal['removeEventListener']>) => { listeners--; remove(...args) }
    const { signal, clear } = deadline(5, parent.signal)
    assert.equal(listeners, 1)
    clear()
    assert.equal(listeners, 0)
    await sleep(30)
    parent.abort()
    assert.equal(signal.aborted, false)
  })
})
