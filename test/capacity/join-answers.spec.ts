/**
 * Who answers a join with a heartbeat (node/capacity/advertiser.ts): every
 * member answers a client or gateway (it routes at once), a sample of about
 * JOIN_SAMPLE members answers a joining vehicle, so a cell's start-up costs
 * members x JOIN_SAMPLE messages, not members squared.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { CapacityAdvertiser, JOIN_SAMPLE } from '../../node/capacity/advertiser.ts'
import type { AdvertiserComponents } from '../../node/capacity/advertiser.ts'
import { capacityTopic } from '../../protocols/ids.ts'

const FLEET = 'joins'

async function advertiser (cellSize: number, vehicles: Set<string>): Promise<{ answers: () => number, join: (peer: string, topic?: string) => void }> {
  const privateKey = await generateKeyPair('Ed25519')
  const pubsub = new EventTarget()
  const c = {
    peerId: peerIdFromPrivateKey(privateKey),
    privateKey,
    logger: defaultLogger(),
    pubsub: Object.assign(pubsub, { subscribe: () => {}, publish: async () => ({ recipients: [] }) }),
    contentRouting: { put: async () => {} },
    addresses: { getMultiaddrs: () => [] },
    runtime: { served: () => [], queued: () => 0, isAccepting: true },
    membership: { hasRole: (peer: string, role: string) => role === 'vehicle' && vehicles.has(peer) },
    cellSize: () => cellSize
  } as unknown as AdvertiserComponents
  const adv = new CapacityAdvertiser(c, { fleet: FLEET })
  let runs = 0
  const inner = adv as unknown as { heartbeats: { run: () => void }, lastBeat: number, onSubscription: (e: CustomEvent) => void }
  inner.heartbeats = { run: () => { runs++ } }
  return {
    answers: () => runs,
    join: (peer, topic = capacityTopic(FLEET)) => {
      inner.lastBeat = 0
      inner.onSubscription(new CustomEvent('subscription-change', { detail: { peerId: { toString: () => peer }, subscriptions: [{ topic, subscribe: true }] } }))
    }
  }
}

describe('answering joins', () => {
  it('every member answers a joining client; a joining vehicle is answered by about JOIN_SAMPLE of a cell', async () => {
    const vehicles = new Set(Array.from({ length: 50 }, (_, i) => `car${i}`))
    // 2,000 members of cells of 100 each seeing one vehicle join: 20 joins' worth, so the sample's spread (about
    // 6 +- 0.5 answers a join) stays far inside the bounds (400 members, 4 joins' worth, failed about once in 200 runs)
    const members = 2000
    let vehicleAnswers = 0
    let clientAnswers = 0
    for (let m = 0; m < members; m++) {
      const a = await advertiser(100, vehicles)
      a.join(`car${m % 50}`)
      const forVehicle = a.answers()
      vehicleAnswers += forVehicle
      a.join('client')
      clientAnswers += a.answers() - forVehicle
    }
    assert.equal(clientAnswers, members, 'every member answered the client')
    const perJoin = vehicleAnswers / (members / 100) // answers a vehicle's join gets in a cell of 100
    assert.ok(perJoin > JOIN_SAMPLE / 2 && perJoin < JOIN_SAMPLE * 2, `${perJoin} answers per vehicle join, expected about ${JOIN_SAMPLE}`)
  })

  it('in a cell smaller than the sample every member answers a vehicle; joins of other cells are ignored', async () => {
    const a = await advertiser(4, new Set(['car']))
    a.join('car')
    assert.equal(a.answers(), 1)
    a.join('car', capacityTopic(FLEET, 'elsewhere'))
    assert.equal(a.answers(), 1)
  })
})
