/**
 * Gossip validation on the fleet's topics, on every node (so nothing invalid
 * is forwarded): a message must decode, come from a member with the right
 * role (vehicles heartbeat, clients announce jobs, publishers announce
 * models) and stay within its sender's rate. Invalid messages are rejected,
 * which counts against the peer that passed them on (gossipsub scoring).
 */
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { ComponentLogger, Logger, Startable } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { decodeHeartbeat } from '../../protocols/capacity.ts'
import { DEFAULT_CELL, capacityTopic, jobsTopic } from '../../protocols/ids.ts'
import { decodeJobsMessage } from '../../protocols/jobs.ts'
import type { Role } from '../../protocols/membership.ts'
import type { Membership } from './membership.ts'
import { fleetTopicScore } from './scoring.ts'
import type { TopicScoreParams } from '@libp2p/gossipsub/score'

export interface TopicGuardComponents {
  logger: ComponentLogger
  pubsub: Pick<GossipSub, 'topicValidators'> & { score?: { params: { topics: Record<string, TopicScoreParams> } } }
  membership?: Pick<Membership, 'checkSender' | 'knows'>
}

export interface TopicGuardInit {
  fleet: string
  /** Locality cells whose capacity topics this node validates (and may join). @default [DEFAULT_CELL] */
  cells?: string[]
  /** Heartbeats accepted per sender per second (averaged over 10 s). @default 2 */
  heartbeatsPerS?: number
  /** Announcements accepted per sender per minute. @default 60 */
  announcementsPerMin?: number
}

/** Counts events per key in a sliding window of `windowMs`, forgetting idle keys. */
export class RateWindow {
  private readonly hits = new Map<string, number[]>()
  private readonly windowMs: number
  private readonly max: number
  constructor (max: number, windowMs: number) { this.max = max; this.windowMs = windowMs }

  /** Counts one hit for `key`; false when it is over the rate. */
  allow (key: string, now = Date.now()): boolean {
    const times = (this.hits.get(key) ?? []).filter(t => t > now - this.windowMs)
    if (times.length >= this.max) { this.hits.set(key, times); return false }
    times.push(now)
    this.hits.set(key, times)
    if (this.hits.size > 100_000) for (const [k, v] of this.hits) if ((v.at(-1) ?? 0) <= now - this.windowMs) this.hits.delete(k)
    return true
  }
}

export class TopicGuard implements Startable {
  private readonly c: TopicGuardComponents
  private readonly init: TopicGuardInit
  private readonly log: Logger
  private readonly heartbeats: RateWindow
  private readonly announcements: RateWindow

  constructor (components: TopicGuardComponents, init: TopicGuardInit) {
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:topics')
    this.heartbeats = new RateWindow(10 * (init.heartbeatsPerS ?? 2), 10_000)
    this.announcements = new RateWindow(init.announcementsPerMin ?? 60, 60_000)
  }

  private get cellTopics (): string[] { return (this.init.cells ?? [DEFAULT_CELL]).map(c => capacityTopic(this.init.fleet, c)) }

  start (): void {
    for (const t of this.cellTopics) this.guard(t, 'heartbeat')
    this.guard(jobsTopic(this.init.fleet), 'jobs')
  }

  stop (): void {
    for (const t of [...this.cellTopics, jobsTopic(this.init.fleet)]) this.c.pubsub.topicValidators.delete(t)
  }

  /** Validates a topic's messages and scores its peers like every fleet topic's (cell topics are named at run time). */
  private guard (topic: string, kind: 'heartbeat' | 'jobs'): void {
    this.c.pubsub.topicValidators.set(topic, async (_from, msg) => await this.validate(msg, kind))
    const scored = this.c.pubsub.score?.params.topics
    if (scored !== undefined && scored[topic] === undefined) scored[topic] = fleetTopicScore()
  }

  private async validate (msg: Message, kind: 'heartbeat' | 'jobs'): Promise<TopicValidatorResult> {
    if (msg.type !== 'signed') return TopicValidatorResult.Reject
    const sender = msg.from.toString()
    try {
      let chain: Uint8Array[] | undefined
      let roles: Role[]
      // a short keep-alive carries no certificate: its sender's earlier full heartbeat did
      let keepAlive = false
      if (kind === 'heartbeat') {
        const hb = decodeHeartbeat(msg.data)
        chain = hb.membership
        keepAlive = hb.refreshes !== undefined && chain === undefined
        roles = ['vehicle']
        if (!this.heartbeats.allow(sender)) return TopicValidatorResult.Ignore
      } else {
        const m = decodeJobsMessage(msg.data)
        chain = m.membership
        roles = m.kind === 'model' ? ['publisher'] : ['client', 'publisher']
        if (!this.announcements.allow(sender)) return TopicValidatorResult.Ignore
      }
      if (this.c.membership !== undefined) {
        // from a sender not known here (its full heartbeat not heard), a keep-alive means nothing: not forwarded, not held against anyone
        if (keepAlive && !this.c.membership.knows(sender)) return TopicValidatorResult.Ignore
        await this.anyRole(sender, chain, roles)
      }
      return TopicValidatorResult.Accept
    } catch (err) {
      this.log('rejected a %s message from %p: %e', kind, msg.from, err)
      return TopicValidatorResult.Reject
    }
  }

  private async anyRole (sender: string, chain: Uint8Array[] | undefined, roles: Role[]): Promise<void> {
    const errors: Error[] = []
    for (const role of roles) {
      try { await this.c.membership!.checkSender(sender, chain, role); return } catch (err) { errors.push(err as Error) }
    }
    throw errors[0]
  }
}
