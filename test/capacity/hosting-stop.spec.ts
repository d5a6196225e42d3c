/**
 * Stopping a vehicle's stage hosting while it fetches: stop aborts the fetch
 * and resolves only once the fetch has settled (its writes to the shard store
 * done), and nothing is fetched after. Before, stop returned at once and a
 * fetch went on writing into the store's directory while the vehicle's data
 * was being removed (a test's clean-up failed with ENOTEMPTY).
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { defaultLogger } from '@libp2p/logger'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { StageHosting } from '../../node/capacity/hosting.ts'
import type { HostingComponents } from '../../node/capacity/hosting.ts'
import type { ModelAnnouncement } from '../../protocols/jobs.ts'

/** An exchange whose fetches end only when aborted, and then take `settleMs` more (their last writes). */
function slowExchange (settleMs: number): { exchange: HostingComponents['exchange'], fetches: Array<{ cid: string, startedAt: number, settledAt?: number }> } {
  const fetches: Array<{ cid: string, startedAt: number, settledAt?: number }> = []
  const get = async (cid: string, opts: { signal?: AbortSignal } = {}): Promise<Uint8Array> => {
    const f: { cid: string, startedAt: number, settledAt?: number } = { cid, startedAt: performance.now() }
    fetches.push(f)
    await new Promise<void>(resolve => { opts.signal?.addEventListener('abort', () => { resolve() }, { once: true }) })
    await new Promise(resolve => setTimeout(resolve, settleMs))
    f.settledAt = performance.now()
    throw new Error(`fetch of ${cid} aborted`)
  }
  const exchange = { get, provide: async () => {}, store: { get: async () => undefined, put: async () => 'cid' } } as unknown as HostingComponents['exchange']
  return { exchange, fetches }
}

describe('stage hosting stops its fetches before it is stopped', function () {
  this.timeout(10_000)

  it('stop waits for a fetch under way to settle, and no fetch starts after it', async () => {
    const peerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const { exchange, fetches } = slowExchange(300)
    const jobs = new EventTarget()
    const hosting = new StageHosting({
      peerId,
      logger: defaultLogger(),
      runtime: { load: async () => {}, served: () => [], isAccepting: true },
      exchange,
      directory: { supply: () => ({ providers: 0, meanMsPerItem: 0 }), all: () => [], waitFor: async () => {} },
      jobs: jobs as unknown as NonNullable<HostingComponents['jobs']>
    } as unknown as HostingComponents, { room: 1 })
    hosting.start()
    const announcement: ModelAnnouncement = { name: 'm', version: '1', manifest: 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku', stages: 2, publishedAt: Date.now(), addrs: [] }
    jobs.dispatchEvent(new CustomEvent('model', { detail: { announcement, from: peerId.toString() } }))
    await new Promise(resolve => setTimeout(resolve, 50))
    assert.equal(fetches.length, 1, 'the announced manifest is being fetched')
    await hosting.stop()
    const stoppedAt = performance.now()
    assert.ok(fetches[0].settledAt !== undefined && fetches[0].settledAt <= stoppedAt, 'stop resolved before the fetch under way had settled')
    // announcements after stop are not heard, and nothing starts on its own
    jobs.dispatchEvent(new CustomEvent('model', { detail: { announcement: { ...announcement, manifest: 'bafkreie5u2ajqawa5lqhf5blx3ktgrmpqxmuf5xlcwdsooh3gruwsyu5lu' }, from: peerId.toString() } }))
    await new Promise(resolve => setTimeout(resolve, 100))
    assert.equal(fetches.length, 1, 'a fetch started after stop')
  })
})
