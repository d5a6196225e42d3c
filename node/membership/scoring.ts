/**
 * gossipsub peer scoring for the fleet's topics. Every message on them is
 * validated (topics.ts); a rejected one (bad bytes, a sender without the
 * role, a forged chain) counts heavily against the peer that passed it on,
 * so a peer that floods invalid messages is soon graylisted: its messages
 * are no longer processed and nothing is gossiped to it.
 *
 * The IP-colocation penalty is off: identities are certified by the fleet
 * authority (a Sybil needs certificates), and many cars share one address
 * behind a carrier-grade NAT (and every test peer shares 127.0.0.1).
 */
import { createHash } from 'node:crypto'
import type { GossipsubOpts } from '@libp2p/gossipsub'
import type { TopicScoreParams } from '@libp2p/gossipsub/score'
import { capacityTopic, jobsTopic, revocationsTopic } from '../../protocols/ids.ts'

/** What gossipsub's RPC message carries (the fields a copy is told apart by). */
interface WireMessage { from?: Uint8Array, seqno?: Uint8Array, topic: string, data?: Uint8Array, signature?: Uint8Array, key?: Uint8Array }

/**
 * gossipsub's "fast message id": a digest of every byte of a received
 * message, signature included. gossipsub checks it before the signature, so
 * the second and later copies of a message (a car hears each one from
 * several mesh peers) are dropped without verifying Ed25519 again, which
 * was the largest CPU cost of a cell while cars joined. It is remembered
 * only after a copy verified, so a forged copy that arrives first is
 * verified (and rejected) and cannot suppress the genuine message, and any
 * changed byte gives another id.
 */
export function fastMessageId (msg: WireMessage): string {
  const h = createHash('sha256')
  for (const part of [msg.from, msg.seqno, new TextEncoder().encode(msg.topic), msg.data, msg.signature, msg.key]) {
    const len = Buffer.alloc(4)
    len.writeUInt32BE(part?.byteLength ?? 0xffffffff)
    h.update(len)
    if (part !== undefined) h.update(part)
  }
  return h.digest('base64')
}

/** Score parameters of one fleet topic: invalid messages cost, delivering first earns a little. */
export function fleetTopicScore (): TopicScoreParams {
  return {
    topicWeight: 1,
    timeInMeshWeight: 0.01,
    timeInMeshQuantum: 1000,
    timeInMeshCap: 100,
    firstMessageDeliveriesWeight: 0.5,
    firstMessageDeliveriesDecay: 0.9,
    firstMessageDeliveriesCap: 20,
    // fleets are small and bursty: no penalty for a quiet mesh peer
    meshMessageDeliveriesWeight: 0,
    meshMessageDeliveriesDecay: 0.9,
    meshMessageDeliveriesCap: 10,
    meshMessageDeliveriesThreshold: 1,
    meshMessageDeliveriesWindow: 10,
    meshMessageDeliveriesActivation: 5000,
    meshFailurePenaltyWeight: 0,
    meshFailurePenaltyDecay: 0.9,
    // each invalid message: -weight x count^2, decaying by half per decay interval (1 s)
    invalidMessageDeliveriesWeight: -20,
    invalidMessageDeliveriesDecay: 0.5
  }
}

/**
 * The gossip mesh's degree and gossip. Each car hears a message about once
 * per mesh peer, so the degree multiplies every cell's heartbeat bytes:
 * gossipsub's default (D 6, up to 12) made an idle car of a 20-car cell hear
 * each heartbeat 6.8 times; D 3 (2 to 6) hears it about 2.1 times
 * (in-process 20-car mesh, 60 s idle, counted by a hook on sendRpc;
 * README, "A million cars"). Gossip (IHAVE) went to a quarter of all other
 * peers of the topic each second, for 3 seconds: 38% of the cell's bytes;
 * to 3 peers for 2 seconds it is 26%, about 6 message ids per message per
 * car. A cell's mesh stays connected at that degree, a copy lost on the way
 * is recovered by gossip, and a heartbeat that still went missing is
 * repeated by the next keep-alive.
 */
export const FLEET_GOSSIP = { D: 3, Dlo: 2, Dhi: 6, Dout: 1, Dlazy: 3, gossipFactor: 0, mcacheGossip: 2 } as const satisfies Partial<GossipsubOpts>

/** The scoring a fleet's nodes use (see the module comment). */
export function fleetScoring (fleet: string): Pick<GossipsubOpts, 'scoreParams' | 'scoreThresholds'> {
  return {
    scoreParams: {
      // capacity topics are per cell, named at run time: TopicGuard adds each one this node joins
      topics: { [capacityTopic(fleet)]: fleetTopicScore(), [jobsTopic(fleet)]: fleetTopicScore(), [revocationsTopic(fleet)]: fleetTopicScore() },
      topicScoreCap: 50,
      IPColocationFactorWeight: 0,
      behaviourPenaltyWeight: -10,
      behaviourPenaltyThreshold: 6,
      behaviourPenaltyDecay: 0.9,
      decayInterval: 1000,
      decayToZero: 0.01,
      retainScore: 3_600_000
    },
    scoreThresholds: {
      gossipThreshold: -10,
      publishThreshold: -50,
      graylistThreshold: -80,
      acceptPXThreshold: 10,
      opportunisticGraftThreshold: 1
    }
  }
}
