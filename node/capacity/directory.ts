/**
 * The fleet as this peer hears it: the latest capacity heartbeat of every
 * sender on the fleet's capacity topic. Entries go stale after `staleMs`
 * without a heartbeat, and at once when a sender says it is leaving.
 */
import type { Logger } from '@libp2p/interface'
import type { Message } from '@libp2p/gossipsub'
import type { Host } from '../host.ts'
import { capacityTopic } from '../../protocols/ids.ts'
import { decodeHeartbeat } from '../../protocols/capacity.ts'
import type { Heartbeat } from '../../protocols/capacity.ts'
import { DEFAULT_HEARTBEAT_MS } from './advertiser.ts'

export interface PeerState { peer: string, heartbeat: Heartbeat, receivedAt: number }

export interface StageServer { peer: string, addrs: string[], load: number, msPerItem: number }

export class FleetDirectory {
  private readonly host: Host
  private readonly topic: string
  private readonly staleMs: number
  private readonly log: Logger
  private readonly peers = new Map<string, PeerState>()
  private readonly listener = (evt: CustomEvent<Message>): void => { this.onMessage(evt.detail) }
  private readonly waiters = new Set<() => void>()
  /** Called when a peer's heartbeats show that its process restarted. */
  onRestart?: (peer: string) => void

  constructor (host: Host, opts: { fleet: string, staleMs?: number }) {
    this.host = host
    this.topic = capacityTopic(opts.fleet)
    this.staleMs = opts.staleMs ?? 3 * DEFAULT_HEARTBEAT_MS + 500
    this.log = host.logger.forComponent('fleetmesh:directory')
  }

  start (): void {
    this.host.services.pubsub.subscribe(this.topic)
    this.host.services.pubsub.addEventListener('message', this.listener)
  }

  stop (): void {
    this.host.services.pubsub.removeEventListener('message', this.listener)
  }

  private onMessage (msg: Message): void {
    if (msg.topic !== this.topic || msg.type !== 'signed') return
    let hb: Heartbeat
    try { hb = decodeHeartbeat(msg.data) } catch (err) {
      this.log('dropped heartbeat from %p: %e', msg.from, err)
      return
    }
    const peer = msg.from.toString()
    const prev = this.peers.get(peer)
    if (prev !== undefined && prev.heartbeat.seq >= hb.seq && prev.heartbeat.ts >= hb.ts) return
    this.peers.set(peer, { peer, heartbeat: hb, receivedAt: Date.now() })
    // a lower sequence with a newer clock: the peer's process started again
    if (prev !== undefined && hb.seq < prev.heartbeat.seq && hb.ts > prev.heartbeat.ts) this.onRestart?.(peer)
    for (const w of this.waiters) w()
  }

  /** Records a heartbeat directly (unit tests, or our own state). */
  record (peer: string, hb: Heartbeat, receivedAt = Date.now()): void {
    this.peers.set(peer, { peer, heartbeat: hb, receivedAt })
  }

  /** Heard recently, not leaving, and its capacity record has not expired. */
  isFresh (p: PeerState, now = Date.now()): boolean {
    return now - p.receivedAt <= this.staleMs && p.heartbeat.leaving !== true &&
      (p.heartbeat.expiresAt === undefined || p.heartbeat.expiresAt > now)
  }

  /** Every peer heard from, fresh or not. */
  all (): PeerState[] { return [...this.peers.values()] }

  /** Peers whose latest fresh heartbeat says they are eligible and serve `manifest` stage `stage`. */
  servers (manifest: string, stage: number, now = Date.now()): StageServer[] {
    const out: StageServer[] = []
    for (const p of this.peers.values()) {
      if (!this.isFresh(p, now) || !p.heartbeat.eligible) continue
      const s = p.heartbeat.stages.find(x => x.manifest === manifest && x.stage === stage)
      if (s !== undefined) out.push({ peer: p.peer, addrs: p.heartbeat.addrs, load: p.heartbeat.load, msPerItem: s.msPerItem })
    }
    return out
  }

  /** Fresh peers (other than `except`) that serve or are loading `manifest` stage `stage`: supply, for choosing stages. */
  supply (manifest: string, stage: number, except: string, now = Date.now()): { providers: number, meanMsPerItem: number } {
    let providers = 0; let ms = 0
    for (const p of this.peers.values()) {
      if (p.peer === except || !this.isFresh(p, now)) continue
      const s = p.heartbeat.stages.find(x => x.manifest === manifest && x.stage === stage)
      const claimed = p.heartbeat.claims?.some(c => c.manifest === manifest && c.stage === stage) === true
      if (s !== undefined && p.heartbeat.eligible) { providers++; ms += s.msPerItem } else if (claimed) providers++
    }
    return { providers, meanMsPerItem: providers > 0 ? ms / providers : 0 }
  }

  /** Model names announced by fresh peers, name -> manifest CID. */
  models (now = Date.now()): Map<string, string> {
    const out = new Map<string, string>()
    for (const p of this.peers.values()) if (this.isFresh(p, now)) for (const [k, v] of Object.entries(p.heartbeat.models)) out.set(k, v)
    // a plain name means its latest version among those heard
    const latest = new Map<string, string>()
    for (const k of out.keys()) {
      const at = k.lastIndexOf('@')
      if (at < 0) continue
      const name = k.slice(0, at); const version = k.slice(at + 1)
      const best = latest.get(name)
      if (best === undefined || compareVersions(version, best) > 0) latest.set(name, version)
    }
    for (const [name, version] of latest) out.set(name, out.get(`${name}@${version}`)!)
    return out
  }

  /** Resolves once `predicate` holds (checked on every heartbeat), or rejects after `timeoutMs`. */
  async waitFor (predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const check = (): void => { if (predicate()) { done(); resolve() } }
      const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)) }, timeoutMs)
      const done = (): void => { clearTimeout(timer); this.waiters.delete(check) }
      this.waiters.add(check)
    })
  }
}

/** Numeric when both are numbers, else lexical. */
export function compareVersions (a: string, b: string): number {
  const x = Number(a); const y = Number(b)
  return Number.isFinite(x) && Number.isFinite(y) ? x - y : a.localeCompare(b)
}
