import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Host } from '../../node/host.ts'
import { cidOf } from '../../node/models/cid.ts'
import { PROBE_TIMEOUT_MS, RANGE_BYTES, ShardExchange } from '../../node/models/shard-exchange.ts'
import type { Provider } from '../../node/models/shard-exchange.ts'
import { MemoryStore, ShardStore } from '../../node/models/shard-store.ts'
import { SHARD_PROTOCOL } from '../../protocols/ids.ts'
import { SHARD_READ_TIMEOUT_MS } from '../../protocols/limits.ts'
import { testNode } from '../utils/node.ts'

describe('shard fetches and the shard store', function () {
  this.timeout(60_000)
  const hosts: Host[] = []
  let dir: string
  const blob = new Uint8Array(randomBytes(5 * RANGE_BYTES + 12345))
  const cid = cidOf(blob)
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'fm-fetch-')) })
  after(async () => {
    await Promise.all(hosts.map(async h => { await h.stop() }))
    await rm(dir, { recursive: true, force: true })
  })

  /** A provider serving `blob`; counts ranges asked of it; refuses every request after `failAfter`. */
  async function provider (failAfter = Infinity): Promise<{ p: Provider, served: () => number, bytes: () => number }> {
    const { host, components } = await testNode()
    hosts.push(host)
    const store = new MemoryStore()
    await store.put(blob)
    let served = 0; let bytes = 0
    const ex = new ShardExchange(components, {
      store,
      admit: (req) => {
        if (served >= failAfter) return 'provider went away'
        served++
        bytes += Math.min(req.length ?? blob.byteLength, blob.byteLength - req.offset)
        return undefined
      }
    })
    await ex.start()
    return { p: { id: host.peerId, addrs: host.getMultiaddrs().map(a => a.toString()) }, served: () => served, bytes: () => bytes }
  }

  async function fetcher (dirName: string): Promise<ShardExchange> {
    const { host, components } = await testNode()
    hosts.push(host)
    return new ShardExchange(components, { store: await new ShardStore(join(dir, dirName)).init() })
  }

  it('draws ranges from several providers at once and verifies the whole', async () => {
    const a = await provider(); const b = await provider()
    const ex = await fetcher('c1')
    const got = await ex.get(cid, { providers: [a.p, b.p] })
    assert.equal(cidOf(got), cid)
    assert.ok(a.served() > 1 && b.served() > 1, `both served ranges (${a.served()}, ${b.served()})`)
  })

  it('a provider that breaks mid-fetch hands its ranges to the others', async () => {
    const flaky = await provider(2); const good = await provider()
    const ex = await fetcher('c2')
    const got = await ex.get(cid, { providers: [flaky.p, good.p] })
    assert.equal(cidOf(got), cid)
    assert.equal(flaky.served(), 2)
  })

  it('an interrupted fetch resumes where it stopped', async () => {
    const dying = await provider(3) // the size probe and two ranges, then it is gone
    const ex = await fetcher('c3')
    await assert.rejects(ex.get(cid, { providers: [dying.p] }), /progress kept/)
    assert.ok((await readdir(join(dir, 'c3'))).some(f => f.endsWith('.partial')))
    const fresh = await provider()
    const got = await ex.get(cid, { providers: [fresh.p] })
    assert.equal(cidOf(got), cid)
    assert.equal(ex.resumedBytes, 2 * RANGE_BYTES, 'two ranges came from the first attempt')
    assert.equal(fresh.bytes(), blob.byteLength - 2 * RANGE_BYTES, 'only the rest was fetched again')
    assert.ok(!(await readdir(join(dir, 'c3'))).some(f => f.endsWith('.partial')), 'partial files are removed')
  })

  it('a provider that takes the request and never answers costs one probe, not the whole fetch', async () => {
    // it holds every shard stream open and silent (a hung or hostile car)
    const { host } = await testNode()
    hosts.push(host)
    await host.handle(SHARD_PROTOCOL, () => {})
    const silent = { id: host.peerId, addrs: host.getMultiaddrs().map(a => a.toString()) }
    const good = await provider()
    const ex = await fetcher('c4')
    // less time than one silent range read (SHARD_READ_TIMEOUT_MS) takes to give up
    const t0 = Date.now()
    const got = await ex.get(cid, { providers: [silent, good.p], signal: AbortSignal.timeout(SHARD_READ_TIMEOUT_MS / 2) })
    assert.equal(cidOf(got), cid)
    assert.ok(Date.now() - t0 < PROBE_TIMEOUT_MS + 5000, `${Date.now() - t0} ms`)
    // and with only silent providers the error names what happened
    await assert.rejects(ex.get(cidOf(new Uint8Array(randomBytes(100))), { providers: [silent], signal: AbortSignal.timeout(SHARD_READ_TIMEOUT_MS / 2) }), /timed out or was aborted/)
  })

  it('a provider that goes silent mid-fetch does not hold its range: an idle provider fetches it too, the first answer wins', async () => {
    const stalling = await provider()
    const host = hosts[hosts.length - 1]
    const { handler } = (host as unknown as { components: { registrar: { getHandler: (p: string) => { handler: (s: unknown, c: unknown) => void } } } }).components.registrar.getHandler(SHARD_PROTOCOL)
    await host.unhandle(SHARD_PROTOCOL)
    let streams = 0
    // the size probe and one range are answered, later requests are taken and never answered
    await host.handle(SHARD_PROTOCOL, (stream, conn) => { if (streams++ < 2) handler(stream, conn) })
    const good = await provider()
    const ex = await fetcher('c5')
    const t0 = Date.now()
    const got = await ex.get(cid, { providers: [stalling.p, good.p], signal: AbortSignal.timeout(SHARD_READ_TIMEOUT_MS / 2) })
    assert.equal(cidOf(got), cid)
    assert.ok(streams >= 3, `the stalling provider was asked for ${streams - 1} ranges`)
    assert.ok(Date.now() - t0 < SHARD_READ_TIMEOUT_MS / 4, `${Date.now() - t0} ms`)
  })

  it('the store keeps within its bound, evicting least recently used shards that are not pinned', async () => {
    const pinned = new Set<string>()
    const store = await new ShardStore(join(dir, 's'), { maxBytes: 2500, pinned: c => pinned.has(c) }).init()
    const blobs = [0, 1, 2, 3].map(i => new Uint8Array(1000).fill(i + 1))
    const cids = blobs.map(b => cidOf(b))
    await store.put(blobs[0]); pinned.add(cids[0])
    await store.put(blobs[1])
    await store.get(cids[1]) // recently used
    await store.put(blobs[2])
    assert.deepEqual((await store.list()).sort(), [cids[0], cids[2]].sort(), 'the unpinned least recently used one went (1 was used before 2 arrived)')
    await store.put(blobs[3])
    assert.ok((await store.list()).includes(cids[0]), 'pinned stays')
    assert.ok((await store.list()).includes(cids[3]))
    assert.ok(!(await store.list()).includes(cids[2]))
  })
})
