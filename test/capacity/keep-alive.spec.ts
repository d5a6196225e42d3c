/**
 * Short keep-alives (Heartbeat.refreshes): an idle vehicle's periodic
 * heartbeat carries only what changes without an event and names the full
 * heartbeat it confirms; every FULL_EVERY-th keep-alive, a join answer and
 * any change are full. A real advertiser publishes into a real directory.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { CapacityAdvertiser, FULL_EVERY } from '../../node/capacity/advertiser.ts'
import type { AdvertiserComponents } from '../../node/capacity/advertiser.ts'
import { FleetDirectory } from '../../node/capacity/directory.ts'
import { decodeHeartbeat, encodeHeartbeat } from '../../protocols/capacity.ts'
import type { Heartbeat } from '../../protocols/capacity.ts'
import { MalformedFrameError } from '../../protocols/errors.ts'
import { capacityTopic } from '../../protocols/ids.ts'

const FLEET = 'keepalive'
const TOPIC = capacityTopic(FLEET)
const STAGE = { manifest: 'bafkreib432rru55mgh4riuoujhi3g4a5pwxy5u63hh6ui3cbq2mrtxylle', stage: 1, cid: 'bafkreic6lnqek43xub7kbxdrw672fh2hd7co6d2ldjhq2blsnkapokgbhu', msPerItem: 7.5 }
const LINKS = Array.from({ length: 6 }, (_, i) => ({ peer: `12D3KooWFQNzDuVeVxMfJ5tZrX4nGcUVZBGjMUTbXTtXn6N5kmo${i}`, rttMs: 20 + i, bytesPerMs: 1000, relayed: false }))

interface Rig { adv: CapacityAdvertiser, sent: Uint8Array[], flooded: boolean[], from: ReturnType<typeof peerIdFromPrivateKey>, join: () => void }

async function rig (): Promise<Rig> {
  const privateKey = await generateKeyPair('Ed25519')
  const sent: Uint8Array[] = []
  const flooded: boolean[] = []
  const c = {
    peerId: peerIdFromPrivateKey(privateKey),
    privateKey,
    logger: defaultLogger(),
    pubsub: Object.assign(new EventTarget(), { subscribe: () => {}, publish: async (_t: string, data: Uint8Array, opts?: { floodPublish?: boolean }) => { sent.push(data); flooded.push(opts?.floodPublish !== false); return { recipients: [] } } }),
    contentRouting: { put: async () => {} },
    addresses: { getMultiaddrs: () => [] },
    runtime: { served: () => [STAGE], queued: () => 0, isAccepting: true },
    links: { recent: () => LINKS }
  } as unknown as AdvertiserComponents
  const adv = new CapacityAdvertiser(c, { fleet: FLEET, keepAliveMs: 40 })
  const inner = adv as unknown as { onSubscription: (e: CustomEvent) => void, lastBeat: number }
  return {
    adv,
    sent,
    flooded,
    from: c.peerId,
    join: () => {
      inner.lastBeat = 0
      inner.onSubscription(new CustomEvent('subscription-change', { detail: { peerId: { toString: () => 'client' }, subscriptions: [{ topic: TOPIC, subscribe: true }] } }))
    }
  }
}

function directory (): { d: FleetDirectory, deliver: (from: Rig['from'], data: Uint8Array) => void } {
  const pubsub = Object.assign(new EventTarget(), { subscribe () {} })
  const d = new FleetDirectory({ logger: defaultLogger(), pubsub: pubsub as never }, { fleet: FLEET })
  d.start()
  return { d, deliver: (from, data) => { pubsub.dispatchEvent(new CustomEvent('message', { detail: { topic: TOPIC, type: 'signed', from, data } })) } }
}

const until = async (ok: () => boolean): Promise<void> => {
  const end = Date.now() + 5000
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

describe('short keep-alives', () => {
  it('keep-alives are short and name the last full heartbeat; every FULL_EVERY-th is full; a directory merges them', async () => {
    const r = await rig()
    const { d, deliver } = directory()
    r.adv.start()
    await until(() => r.sent.length >= 2 * FULL_EVERY + 2)
    await r.adv.stop()
    const beats = r.sent.map(b => decodeHeartbeat(b))
    // the first is full (start, a change), the keep-alive after it repeats it in full, then FULL_EVERY - 1 short ones, then a full one again
    const kinds = beats.slice(0, 2 * FULL_EVERY + 2).map(b => b.refreshes === undefined ? 'full' : 'short').join(' ')
    const cycle = ['full', ...Array(FULL_EVERY - 1).fill('short')].join(' ')
    assert.equal(kinds, `full ${cycle} ${cycle} full`)
    for (const [i, b] of beats.entries()) {
      if (b.refreshes === undefined) continue
      const full = beats.slice(0, i).reverse().find(x => x.refreshes === undefined)
      assert.equal(b.refreshes, full?.seq, 'a keep-alive names the latest full heartbeat')
      assert.deepEqual([b.stages, b.addrs, b.links, b.vehicle], [[], [], undefined, undefined])
    }
    // the start (a change) is flooded to every peer of the topic; keep-alives, short or full, go to the mesh only
    assert.deepEqual(r.flooded.slice(0, 2 * FULL_EVERY + 2), [true, ...Array(2 * FULL_EVERY + 1).fill(false)])
    const fullBytes = r.sent[0].byteLength
    const shortBytes = r.sent[2].byteLength
    assert.ok(shortBytes * 4 < fullBytes, `a keep-alive is ${shortBytes} B, a full heartbeat ${fullBytes} B`)

    // a directory that heard the full one: the keep-alives refresh it and keep its stages and links
    for (const b of r.sent.slice(0, 4)) deliver(r.from, b)
    const p = d.get(r.from.toString())
    assert.equal(p?.heartbeat.seq, beats[3].seq)
    assert.deepEqual(p?.heartbeat.stages, [STAGE])
    assert.equal(p?.heartbeat.links?.length, 6)
    assert.equal(p?.fullSeq, beats[1].seq)
    d.stop()
  })

  it('a directory that missed a change hears it at the next keep-alive; one that missed every full heartbeat ignores keep-alives until the next full one', async () => {
    const r = await rig()
    r.adv.start()
    await until(() => r.sent.length >= FULL_EVERY + 2)
    await r.adv.stop()
    // the flooded change (sent[0]) lost: the keep-alive after it is full
    const late = directory()
    late.deliver(r.from, r.sent[1])
    assert.deepEqual(late.d.get(r.from.toString())?.heartbeat.stages, [STAGE])
    late.d.stop()
    // both lost: short keep-alives have nothing to merge into, until the next full one
    const { d, deliver } = directory()
    for (const b of r.sent.slice(2, FULL_EVERY + 1)) deliver(r.from, b)
    assert.equal(d.get(r.from.toString()), undefined, 'nothing to merge a keep-alive into')
    deliver(r.from, r.sent[FULL_EVERY + 1])
    assert.deepEqual(d.get(r.from.toString())?.heartbeat.stages, [STAGE])
    d.stop()
  })

  it('a join answer is a full heartbeat, flooded, even between keep-alives', async () => {
    const r = await rig()
    r.adv.start()
    await until(() => r.sent.length >= 2)
    const before = r.sent.length
    r.join()
    await until(() => r.sent.length > before)
    await r.adv.stop()
    assert.equal(decodeHeartbeat(r.sent[before]).refreshes, undefined)
    assert.equal(r.flooded[before], true, 'a join answer reaches a joiner outside the gossip mesh')
    assert.deepEqual(decodeHeartbeat(r.sent[before]).stages, [STAGE])
  })

  it('a hostile keep-alive is refused: one smuggling stages, one naming a later heartbeat, one naming another full heartbeat', async () => {
    const base: Heartbeat = { ts: Date.now(), seq: 9, eligible: true, load: 0, slots: 4, stages: [], addrs: [], refreshes: 5 }
    assert.throws(() => decodeHeartbeat(encodeHeartbeat({ ...base, stages: [STAGE] })), (e: Error) => e instanceof MalformedFrameError && /heartbeat\.refreshes/.test(e.message) && /carries no stages/.test(e.message))
    assert.throws(() => decodeHeartbeat(encodeHeartbeat({ ...base, refreshes: 9 })), (e: Error) => e instanceof MalformedFrameError && /earlier heartbeat/.test(e.message))
    const r = await rig()
    const { d, deliver } = directory()
    const full: Heartbeat = { ...base, seq: 4, stages: [STAGE], addrs: ['/ip4/127.0.0.1/tcp/1'], refreshes: undefined }
    deliver(r.from, encodeHeartbeat(full))
    const heard = d.get(r.from.toString())?.receivedAt
    deliver(r.from, encodeHeartbeat({ ...base, eligible: false }))
    assert.equal(d.get(r.from.toString())?.heartbeat.seq, 4, 'a keep-alive for heartbeat 5 does not refresh heartbeat 4')
    assert.equal(d.get(r.from.toString())?.receivedAt, heard)
    assert.equal(d.get(r.from.toString())?.heartbeat.eligible, true)
    d.stop()
  })
})
