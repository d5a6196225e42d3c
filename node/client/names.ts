/**
 * Model names as publishers gave them: announcements heard on the jobs topic
 * (only publishers may make them; every node's topic validator checks) and
 * name records read from the DHT. Names are never taken from heartbeats, so
 * a vehicle cannot make a name point at a model of its own.
 */
import { TypedEventEmitter } from '@libp2p/interface'
import type { AbortOptions, ComponentLogger, Logger, Startable } from '@libp2p/interface'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { jobsTopic } from '../../protocols/ids.ts'
import { decodeJobsMessage } from '../../protocols/jobs.ts'
import { compareVersions, latestVersion } from '../models/versions.ts'

export interface NamedModel { name: string, version: string, manifest: string, publisher: string, heardAt: number }

export interface ModelNamesComponents {
  logger: ComponentLogger
  pubsub: Pick<GossipSub, 'subscribe' | 'addEventListener' | 'removeEventListener'>
}

export interface ModelNamesInit {
  fleet: string
  /** A name not announced again for this long is forgotten here (its DHT record stays). @default 15 min */
  forgetMs?: number
  /** Most names kept. @default 1024 */
  maxNames?: number
}

export interface ModelNamesEvents { named: CustomEvent<NamedModel> }

export class ModelNames extends TypedEventEmitter<ModelNamesEvents> implements Startable {
  private readonly c: ModelNamesComponents
  private readonly init: ModelNamesInit
  private readonly log: Logger
  private readonly names = new Map<string, NamedModel>()
  private readonly listener = (evt: CustomEvent<Message>): void => { this.onMessage(evt.detail) }

  constructor (components: ModelNamesComponents, init: ModelNamesInit) {
    super()
    this.c = components
    this.init = init
    this.log = components.logger.forComponent('fleetmesh:names')
  }

  start (): void {
    this.c.pubsub.subscribe(jobsTopic(this.init.fleet))
    this.c.pubsub.addEventListener('message', this.listener)
  }

  stop (): void {
    this.c.pubsub.removeEventListener('message', this.listener)
  }

  private onMessage (msg: Message): void {
    if (msg.topic !== jobsTopic(this.init.fleet) || msg.type !== 'signed') return
    try {
      const m = decodeJobsMessage(msg.data)
      if (m.kind === 'model') this.add(m.model.name, m.model.version, m.model.manifest, msg.from.toString())
    } catch (err) { this.log('dropped a model announcement: %e', err) }
  }

  /** Records a name (from an announcement, a DHT record, or our own publishing). */
  add (name: string, version: string, manifest: string, publisher: string, now = Date.now()): void {
    const key = `${name}@${version}`
    const entry = { name, version, manifest, publisher, heardAt: now }
    this.names.set(key, entry)
    if (this.names.size > (this.init.maxNames ?? 1024)) this.prune(now, true)
    this.safeDispatchEvent('named', { detail: entry })
  }

  /** The manifest CID of `name` (its latest version) or `name@version`. */
  lookup (model: string, now = Date.now()): string | undefined {
    this.prune(now)
    const [name, version] = model.split('@')
    if (version !== undefined) return this.names.get(model)?.manifest
    const latest = latestVersion(this.list().filter(n => n.name === name).map(n => n.version))
    return latest !== undefined ? this.names.get(`${name}@${latest}`)?.manifest : undefined
  }

  list (now = Date.now()): NamedModel[] {
    this.prune(now)
    return [...this.names.values()].sort((a, b) => a.name.localeCompare(b.name) || compareVersions(a.version, b.version))
  }

  /** Resolves once `model` is named, or rejects when `opts.signal` aborts. */
  async waitFor (model: string, opts: AbortOptions = {}): Promise<string> {
    for (;;) {
      const found = this.lookup(model)
      if (found !== undefined) return found
      opts.signal?.throwIfAborted()
      await new Promise<void>(resolve => {
        const done = (): void => { this.removeEventListener('named', done); opts.signal?.removeEventListener('abort', done); resolve() }
        this.addEventListener('named', done)
        opts.signal?.addEventListener('abort', done, { once: true })
      })
    }
  }

  private prune (now: number, oldest = false): void {
    const forget = this.init.forgetMs ?? 15 * 60_000
    for (const [k, n] of this.names) if (now - n.heardAt > forget) this.names.delete(k)
    if (oldest) {
      const first = [...this.names.entries()].sort((a, b) => a[1].heardAt - b[1].heardAt)[0]
      if (first !== undefined) this.names.delete(first[0])
    }
  }
}
