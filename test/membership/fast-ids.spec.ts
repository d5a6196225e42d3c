/**
 * gossipsub's fast message ids (node/membership/scoring.ts): a car hears each
 * heartbeat from several mesh peers, and only the first copy has its
 * signature checked. A hostile peer must not use that to suppress a message:
 * a forged copy sent first is verified and rejected, and the genuine one that
 * follows is still delivered.
 */
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import { encodeHeartbeat } from '../../protocols/capacity.ts'
import { capacityTopic } from '../../protocols/ids.ts'
import { fastMessageId } from '../../node/membership/scoring.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

const FLEET = 'fastids'
const topic = capacityTopic(FLEET)
type Node = Awaited<ReturnType<typeof testNode>>
interface RpcMessage { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array, signature?: Uint8Array, key?: Uint8Array }
interface Internals {
  handleReceivedRpc: (from: PeerId, rpc: { messages?: RpcMessage[] }) => Promise<void>
  handleReceivedMessage: (from: PeerId, msg: RpcMessage) => Promise<void>
}
const internals = (n: Node): Internals => n.host.services.pubsub as unknown as Internals

describe('fast message ids', function () {
  this.timeout(30_000)
  const nodes: Node[] = []
  after(async () => { await Promise.all(nodes.map(async n => { await n.node.stop() })) })

  it('tell copies apart by every byte: sender, sequence number, topic, data, signature', () => {
    const m: RpcMessage = { from: new Uint8Array([1, 2]), seqno: new Uint8Array([3]), topic: 't', data: new Uint8Array([4, 5]), signature: new Uint8Array([6]) }
    assert.equal(fastMessageId(m), fastMessageId({ ...m, data: new Uint8Array([4, 5]) }))
    const variants: RpcMessage[] = [
      { ...m, from: new Uint8Array([1, 3]) }, { ...m, seqno: new Uint8Array([4]) }, { ...m, topic: 'u' },
      { ...m, data: new Uint8Array([4, 6]) }, { ...m, signature: new Uint8Array([7]) }, { ...m, signature: undefined },
      // a byte moved from one field to the next is another message
      { ...m, from: new Uint8Array([1]), seqno: new Uint8Array([2, 3]) }
    ]
    const ids = new Set([fastMessageId(m), ...variants.map(fastMessageId)])
    assert.equal(ids.size, variants.length + 1)
  })

  it('a forged copy sent first does not suppress the genuine message, and a replay is delivered once', async () => {
    const [a, b, c] = [await testNode({ fleet: FLEET }), await testNode({ fleet: FLEET }), await testNode({ fleet: FLEET })]
    nodes.push(a, b, c)
    for (const n of nodes) n.host.services.pubsub.subscribe(topic)
    await b.host.dial(multiaddr(a.host.getMultiaddrs()[0].toString()))
    // b records a's heartbeat as it came off the wire
    let genuine: RpcMessage | undefined
    const handle = internals(b).handleReceivedRpc.bind(b.host.services.pubsub)
    internals(b).handleReceivedRpc = async (from, rpc) => {
      genuine ??= rpc.messages?.find(m => m.topic === topic)
      await handle(from, rpc)
    }
    await until(() => a.host.services.pubsub.getSubscribers(topic).length > 0, 10_000, 'a sees b subscribed')
    await new Promise(resolve => setTimeout(resolve, 1200))
    await a.host.services.pubsub.publish(topic, encodeHeartbeat({ ts: Date.now(), seq: 1, eligible: true, load: 0, slots: 4, stages: [], addrs: [] }))
    await until(() => genuine !== undefined, 10_000, 'b got the heartbeat')
    const msg = genuine!
    // c, which never heard it, is handed a forged copy (same sender, sequence number and data) first
    const delivered: Uint8Array[] = []
    c.host.services.pubsub.addEventListener('message', e => { if (e.detail.topic === topic) delivered.push(e.detail.data) })
    const forgedSig = Uint8Array.from(msg.signature!)
    forgedSig[0] ^= 0xff
    const forgedData = Uint8Array.from(msg.data!)
    forgedData[forgedData.length - 1] ^= 0x01
    await internals(c).handleReceivedMessage(b.host.peerId, { ...msg, signature: forgedSig })
    await internals(c).handleReceivedMessage(b.host.peerId, { ...msg, data: forgedData })
    assert.equal(delivered.length, 0, 'forged copies rejected')
    await internals(c).handleReceivedMessage(b.host.peerId, msg)
    await internals(c).handleReceivedMessage(b.host.peerId, { ...msg })
    await until(() => delivered.length > 0, 5000, 'the genuine heartbeat delivered')
    await new Promise(resolve => setTimeout(resolve, 200))
    assert.equal(delivered.length, 1, 'delivered once')
    assert.deepEqual(delivered[0], msg.data)
  })
})
