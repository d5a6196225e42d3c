/**
 * gossipsub scoring fit for a fleet (issue 12): many cars share one public address behind a
 * carrier-grade NAT (and every test peer shares 127.0.0.1), so the IP-colocation penalty must not
 * graylist them; capacity topics are per locality cell and named at run time, and each is scored like
 * every fleet topic (an invalid message still costs its sender).
 */
import assert from 'node:assert/strict'
import { multiaddr } from '@multiformats/multiaddr'
import { encodeHeartbeat } from '../../protocols/capacity.ts'
import { capacityTopic } from '../../protocols/ids.ts'
import { testNode } from '../utils/node.ts'
import { until } from '../utils/until.ts'

const FLEET = 'scoring'
const CELL = 'u33db'
type Node = Awaited<ReturnType<typeof testNode>>
const score = (n: Node, peer: Node): number => (n.host.services.pubsub as unknown as { getScore: (p: string) => number }).getScore(peer.host.peerId.toString())

describe('gossip scoring for a fleet', function () {
  this.timeout(60_000)
  const nodes: Node[] = []
  const topic = capacityTopic(FLEET, CELL)

  before(async () => {
    // 14 peers on one address: past gossipsub's default IP-colocation threshold of 10
    for (let i = 0; i < 14; i++) nodes.push(await testNode({ fleet: FLEET, cells: [CELL] }))
    const hub = nodes[0]
    for (const n of nodes.slice(1)) await n.host.dial(multiaddr(hub.host.getMultiaddrs()[0].toString()))
    for (let i = 1; i < nodes.length; i++) await nodes[i].host.dial(multiaddr(nodes[(i % (nodes.length - 1)) + 1].host.getMultiaddrs()[0].toString())).catch(() => {})
    for (const n of nodes) n.host.services.pubsub.subscribe(topic)
    await until(() => nodes.every(n => n.host.services.pubsub.getSubscribers(topic).length >= 1), 15_000, 'every peer sees a subscriber')
  })

  after(async () => { await Promise.all(nodes.map(async n => { await n.node.stop() })) })

  it('fourteen peers on one IP all hear every heartbeat of their cell, and none scores another below zero', async () => {
    const heard = nodes.map(() => new Set<string>())
    nodes.forEach((n, i) => {
      n.host.services.pubsub.addEventListener('message', (e) => { if (e.detail.topic === topic && e.detail.type === 'signed') heard[i].add(e.detail.from.toString()) })
    })
    // gossipsub's heartbeat grafts the mesh first
    await new Promise(resolve => setTimeout(resolve, 1500))
    await Promise.all(nodes.map(async (n, i) => {
      await n.host.services.pubsub.publish(topic, encodeHeartbeat({ ts: Date.now(), seq: 1, eligible: true, load: 0, slots: 4, stages: [], addrs: [] }))
    }))
    await until(() => heard.every(h => h.size === nodes.length - 1), 20_000, `every peer hearing the other ${nodes.length - 1} (heard: ${heard.map(h => h.size).join(',')})`)
    for (const n of nodes) for (const p of nodes) if (n !== p) assert.ok(score(n, p) >= 0, `score ${score(n, p)} on one IP`)
    // the cell's topic has the fleet's score parameters
    const params = (nodes[0].host.services.pubsub as unknown as { score: { params: { topics: Record<string, { invalidMessageDeliveriesWeight: number }> } } }).score.params.topics[topic]
    assert.ok(params !== undefined && params.invalidMessageDeliveriesWeight < 0, 'cell topic scored')
  })

  it('invalid messages on a cell topic cost the sender its score', async () => {
    const [hub, bad] = [nodes[0], nodes[1]]
    let sent = 0
    const end = Date.now() + 15_000
    while (score(hub, bad) >= -80 && Date.now() < end) {
      await bad.host.services.pubsub.publish(topic, new Uint8Array([0xff, 0xff, 0xff, sent++])).catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    assert.ok(score(hub, bad) < -80, `score ${score(hub, bad)} after ${sent} invalid messages`)
    // the others stay in good standing
    assert.ok(score(hub, nodes[2]) >= 0)
  })
})
