/**
 * Shard bytes by CID over `/fleetmesh/shard/2.0.0` (see protocols/shard.ts):
 * serving them from the store, fetching them from providers (in ranges,
 * from several at once, resuming from disk), and providing CIDs in the DHT.
 * Both directions are it-pipe pipelines over the stream. Fetched content is
 * hash-verified before it is stored; a provider that sends bad bytes is
 * skipped for the next one.
 */
import { open, readFile, rm, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { messageStreamToDuplex } from '@libp2p/utils'
import itFirst from 'it-first'
import * as lp from 'it-length-prefixed'
import { pipe } from 'it-pipe'
import type { AbortOptions, ComponentLogger, ContentRouting, Libp2p, Logger, PeerId, Startable, Stream } from '@libp2p/interface'
import { HashMismatchError } from '../../protocols/errors.ts'
import { SHARD_PROTOCOL } from '../../protocols/ids.ts'
import { MAX_SHARD_BYTES, MAX_SHARD_MESSAGE_BYTES, MiB, SHARD_CHUNK_BYTES, SHARD_READ_TIMEOUT_MS } from '../../protocols/limits.ts'
import { TokenBuckets } from '../peer-limits.ts'
import { decodeShardRequest, decodeShardResponse, encodeShardRequest, encodeShardResponse } from '../../protocols/shard.ts'
import type { ShardRequest } from '../../protocols/shard.ts'
import type { PeerDialer } from '../dial.ts'
import type { FleetMetrics } from '../metrics.ts'
import { parseCid, verifyCid } from './cid.ts'
import { ShardStore } from './shard-store.ts'
import { step, within } from '../util/abortable.ts'
import type { BlobStore } from './shard-store.ts'

export class ShardNotFoundError extends Error {
  readonly name = 'ShardNotFoundError'
  readonly code = 'ERR_SHARD_NOT_FOUND'
  readonly cid: string
  constructor (cid: string, detail: string) {
    super(`shard ${cid} could not be fetched: ${detail}`)
    this.cid = cid
  }
}

export interface Provider { id: PeerId, addrs: string[] }

/** How long one provider has to answer the first (size) request of a fetch. */
export const PROBE_TIMEOUT_MS = 5000
/** How long a DHT walk for providers may take. */
export const FIND_PROVIDERS_MS = 8000
/** How long ordering providers by distance may take before they are used as found. */
const NEAREST_MS = 3000
/** Range size of chunked fetches. */
export const RANGE_BYTES = SHARD_CHUNK_BYTES

export interface ShardExchangeComponents {
  peerId: PeerId
  logger: ComponentLogger
  registrar: Pick<Libp2p, 'handle' | 'unhandle'>
  dialer: PeerDialer
  contentRouting: ContentRouting
  metrics: FleetMetrics
}

export interface ShardExchangeInit {
  store: BlobStore
  /** Answer shard requests (a client sharing a vehicle's node leaves that to the vehicle). @default true */
  serve?: boolean
  /** Concurrent shard streams each way. @default 32 */
  maxStreams?: number
  /** A last check on each request: a message refuses it. */
  admit?: (req: ShardRequest, peer: string) => string | undefined
  /** Bytes one peer may pull from this node: a sustained rate and a burst. @default 8 MiB/s, bursts of 64 MiB */
  budget?: { bytesPerS: number, burstBytes: number }
  /** Told of each fetched range: bytes from `peer` in `ms` (link throughput, node/link-meter.ts). */
  onTransfer?: (peer: string, bytes: number, ms: number) => void
  /** Orders (and may trim) the providers to fetch from: the nearest first. @default as found */
  nearest?: (providers: Provider[]) => Promise<Provider[]>
}

export class ShardExchange implements Startable {
  readonly store: BlobStore
  private readonly c: ShardExchangeComponents
  private readonly init: ShardExchangeInit
  private readonly log: Logger
  private readonly provided = new Set<string>()
  /** Bytes the last chunked fetch found already on disk (for tests and logs). */
  resumedBytes = 0
  private readonly budget: TokenBuckets

  constructor (components: ShardExchangeComponents, init: ShardExchangeInit) {
    this.c = components
    this.init = init
    this.store = init.store
    this.budget = new TokenBuckets(init.budget?.bytesPerS ?? 8 * MiB, init.budget?.burstBytes ?? 64 * MiB)
    this.log = components.logger.forComponent('fleetmesh:shard')
  }

  async start (): Promise<void> {
    if (this.init.serve === false) return
    const max = this.init.maxStreams ?? 32
    await this.c.registrar.handle(SHARD_PROTOCOL, (stream, connection) => { void this.serve(stream, connection.remotePeer.toString()) }, { maxInboundStreams: max, maxOutboundStreams: max, runOnLimitedConnection: true })
  }

  async stop (): Promise<void> {
    if (this.init.serve !== false) await this.c.registrar.unhandle(SHARD_PROTOCOL)
  }

  /** Handler: one request, then the response and the chunks, as one pipeline. */
  private async serve (stream: Stream, peer: string): Promise<void> {
    const timer = setTimeout(() => { stream.abort(new Error('shard request timed out')) }, SHARD_READ_TIMEOUT_MS)
    try {
      const duplex = messageStreamToDuplex(stream)
      const first = await itFirst(lp.decode(duplex.source, { maxDataLength: MAX_SHARD_MESSAGE_BYTES }))
      if (first === undefined) throw new Error('stream ended before a request')
      const req: ShardRequest = decodeShardRequest(first.subarray())
      const store = this.store
      const metrics = this.c.metrics
      const budget = this.budget
      const refusal = this.init.admit?.(req, peer)
      await pipe(
        async function * () {
          if (refusal !== undefined) {
            yield encodeShardResponse({ ok: false, code: 'BAD_REQUEST', message: refusal })
            return
          }
          let bytes: Uint8Array | undefined
          try { parseCid(req.cid); bytes = await store.get(req.cid) } catch (err) {
            yield encodeShardResponse({ ok: false, code: 'BAD_REQUEST', message: (err as Error).message })
            return
          }
          if (bytes === undefined) {
            yield encodeShardResponse({ ok: false, code: 'NOT_FOUND', message: `no shard ${req.cid} here` })
            return
          }
          const offset = Math.min(req.offset, bytes.byteLength)
          const end = Math.min(bytes.byteLength, offset + (req.length ?? bytes.byteLength))
          if (!budget.take(peer, end - offset)) {
            yield encodeShardResponse({ ok: false, code: 'RATE_LIMITED', message: 'over this peer\'s shard budget here; try another provider or later' })
            return
          }
          yield encodeShardResponse({ ok: true, size: end - offset, total: bytes.byteLength })
          for (let o = offset; o < end; o += SHARD_CHUNK_BYTES) yield bytes.subarray(o, Math.min(o + SHARD_CHUNK_BYTES, end))
          metrics.bytes('shard', 'out', end - offset)
        },
        (source) => lp.encode(source),
        duplex.sink
      )
    } catch (err) {
      this.log('shard request failed: %e', err)
      stream.abort(err as Error)
    } finally {
      clearTimeout(timer)
    }
  }

  /** Fetches bytes [offset, offset + length) of `cid` from one peer (length undefined: to the end). */
  async fetchRange (provider: Provider, cid: string, offset: number, length: number | undefined, opts: AbortOptions = {}): Promise<{ bytes: Uint8Array, total: number }> {
    const signal = within(SHARD_READ_TIMEOUT_MS, opts.signal)
    let stream
    try { stream = await this.c.dialer.dialProtocol(provider.id, SHARD_PROTOCOL, { signal, addrs: provider.addrs }) } catch (err) {
      throw new ShardNotFoundError(cid, `${provider.id.toString().slice(-8)} could not be reached: ${(err as Error).message}`)
    }
    const onAbort = (): void => { stream.abort(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    const t0 = performance.now()
    try {
      const result = await pipe(
        [encodeShardRequest({ cid, offset, ...(length !== undefined ? { length } : {}) })],
        (source) => lp.encode(source),
        messageStreamToDuplex(stream),
        (source) => lp.decode(source, { maxDataLength: SHARD_CHUNK_BYTES }),
        async (source) => await this.receive(source, provider, cid, offset, length)
      )
      this.c.metrics.bytes('shard', 'in', result.bytes.byteLength)
      this.init.onTransfer?.(provider.id.toString(), result.bytes.byteLength, performance.now() - t0)
      return result
    } catch (err) {
      stream.abort(err as Error)
      throw signal.aborted ? new ShardNotFoundError(cid, `${provider.id.toString().slice(-8)} timed out or was aborted`) : err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** Reads a shard response and its chunks, checking every size against what was asked. */
  private async receive (source: AsyncIterable<{ subarray: () => Uint8Array }>, provider: Provider, cid: string, offset: number, length: number | undefined): Promise<{ bytes: Uint8Array, total: number }> {
    let out: Uint8Array | undefined
    let total = 0
    let got = 0
    for await (const msg of source) {
      if (out === undefined) {
        const head = decodeShardResponse(msg.subarray())
        if (!head.ok) throw new ShardNotFoundError(cid, `${provider.id.toString()} answered ${head.code}: ${head.message}`)
        if (head.total > MAX_SHARD_BYTES) throw new ShardNotFoundError(cid, `size ${head.total} over limit`)
        const want = length === undefined ? head.total - offset : Math.min(length, head.total - offset)
        if (head.size !== want) throw new ShardNotFoundError(cid, `provider offered ${head.size} bytes, asked for ${want}`)
        out = new Uint8Array(head.size)
        total = head.total
        continue
      }
      const chunk = msg.subarray()
      if (got + chunk.byteLength > out.byteLength) throw new ShardNotFoundError(cid, 'provider sent more bytes than announced')
      out.set(chunk, got)
      got += chunk.byteLength
    }
    if (out === undefined) throw new ShardNotFoundError(cid, `${provider.id.toString().slice(-8)} closed the stream without answering`)
    if (got !== out.byteLength) throw new ShardNotFoundError(cid, `provider sent ${got} of ${out.byteLength} bytes`)
    return { bytes: out, total }
  }

  /** Fetches the whole of `cid` from one peer and verifies it. */
  async fetchFrom (provider: Provider, cid: string, opts: AbortOptions = {}): Promise<Uint8Array> {
    const { bytes } = await this.fetchRange(provider, cid, 0, undefined, opts)
    verifyCid(cid, bytes)
    return bytes
  }

  /**
   * Fetches `cid` in RANGE_BYTES ranges from all `providers` at once. A
   * provider that fails gives its range back to the others; finished ranges
   * are kept on disk (when the store can), so a later attempt fetches only
   * what is missing. The whole is verified against the CID.
   */
  async fetchChunked (providers: Provider[], cid: string, opts: AbortOptions = {}): Promise<Uint8Array> {
    let total: number | undefined
    const errors: string[] = []
    const failed = new Set<Provider>()
    for (const p of providers) {
      // each provider on its own clock: one that hangs must not spend every other's time
      try { total = (await this.fetchRange(p, cid, 0, 0, { signal: within(PROBE_TIMEOUT_MS, opts.signal) })).total; break } catch (err) {
        errors.push((err as Error).message)
        failed.add(p)
      }
    }
    if (total === undefined) throw new ShardNotFoundError(cid, errors.join('; ') || 'no provider answered')
    const paths = this.store instanceof ShardStore ? this.store.partialPaths(cid) : undefined
    const buffer = new Uint8Array(total)
    const done = paths !== undefined ? await resume(paths, total, buffer) : []
    const queue: Array<[number, number]> = []
    for (let o = 0; o < total; o += RANGE_BYTES) {
      const l = Math.min(RANGE_BYTES, total - o)
      if (!done.some(([d, dl]) => d === o && dl === l)) queue.push([o, l])
    }
    this.resumedBytes = done.reduce((s, [, l]) => s + l, 0)
    let file: FileHandle | undefined
    if (paths !== undefined) file = await open(paths.data, done.length > 0 ? 'r+' : 'w').catch(async () => await open(paths.data, 'w'))
    // ranges being fetched; when the queue is empty, an idle provider also asks for the oldest one
    // another provider still holds (once each), and the first answer wins: a slow or silent provider
    // cannot hold the last range until the caller's time runs out
    const inFlight = new Map<number, { range: [number, number], copies: AbortController[] }>()
    const isDone = (o: number): boolean => done.some(([d]) => d === o)
    const next = (): { range: [number, number], ctrl: AbortController } | undefined => {
      const queued = queue.shift()
      if (queued !== undefined) {
        const ctrl = new AbortController()
        inFlight.set(queued[0], { range: queued, copies: [ctrl] })
        return { range: queued, ctrl }
      }
      const slow = [...inFlight.values()].find(f => f.copies.length === 1)
      if (slow === undefined) return undefined
      const ctrl = new AbortController()
      slow.copies.push(ctrl)
      return { range: slow.range, ctrl }
    }
    try {
      await Promise.all(providers.filter(p => !failed.has(p)).map(async p => {
        for (let job = next(); job !== undefined; job = next()) {
          const { range, ctrl } = job
          try {
            const { bytes } = await this.fetchRange(p, cid, range[0], range[1], { signal: AbortSignal.any([ctrl.signal, ...(opts.signal !== undefined ? [opts.signal] : [])]) })
            if (isDone(range[0])) continue
            buffer.set(bytes, range[0])
            done.push(range)
            for (const c of inFlight.get(range[0])?.copies ?? []) if (c !== ctrl) c.abort(new Error('another provider sent this range first'))
            inFlight.delete(range[0])
            if (file !== undefined && paths !== undefined) {
              await file.write(bytes, 0, bytes.byteLength, range[0])
              await writeFile(paths.ranges, JSON.stringify({ total, done }))
            }
          } catch (err) {
            if (ctrl.signal.aborted || isDone(range[0])) continue
            const f = inFlight.get(range[0])
            if (f !== undefined) f.copies = f.copies.filter(c => c !== ctrl)
            if (f !== undefined && f.copies.length === 0) { inFlight.delete(range[0]); queue.push(range) } // someone else takes it
            errors.push(`${p.id.toString().slice(-8)}: ${(err as Error).message}`)
            return
          }
        }
      }))
    } finally {
      await file?.close()
    }
    if (queue.length > 0) throw new ShardNotFoundError(cid, `${queue.length} ranges left after every provider failed (${errors.join('; ')}); progress kept for the next attempt`)
    try { verifyCid(cid, buffer) } finally {
      if (paths !== undefined) { await rm(paths.data, { force: true }); await rm(paths.ranges, { force: true }) }
    }
    return buffer
  }

  /** Providers of `cid` from the DHT (excluding ourselves). */
  async findProviders (cid: string, opts: AbortOptions & { max?: number } = {}): Promise<Provider[]> {
    const found: Provider[] = []
    // the walk gets part of the caller's time, so that fetching has the rest
    const signal = within(FIND_PROVIDERS_MS, opts.signal)
    try {
      for await (const p of this.c.contentRouting.findProviders(parseCid(cid), { signal })) {
        if (p.id.equals(this.c.peerId) || found.some(f => f.id.equals(p.id))) continue
        found.push({ id: p.id, addrs: p.multiaddrs.map(a => a.toString()) })
        if (found.length >= (opts.max ?? 8)) break
      }
    } catch (err) {
      if (found.length === 0 && !signal.aborted) throw err
    }
    return found
  }

  /** Publishes a provider record for `cid` in the DHT (once per CID). */
  async provide (cid: string, opts: AbortOptions = {}): Promise<void> {
    if (this.provided.has(cid)) return
    await this.c.contentRouting.provide(parseCid(cid), { signal: opts.signal ?? AbortSignal.timeout(30_000) })
    this.provided.add(cid)
  }

  /**
   * Returns the verified bytes of `cid`: from the local store, else from the
   * given providers or those the DHT knows, storing them locally.
   */
  async get (cid: string, opts: AbortOptions & { providers?: Provider[] } = {}): Promise<Uint8Array> {
    const local = await this.store.get(cid)
    if (local !== undefined) return local
    const found = opts.providers ?? await this.findProviders(cid, opts)
    if (found.length === 0) throw new ShardNotFoundError(cid, 'no provider found in the DHT')
    const near = this.init.nearest !== undefined ? await step(this.init.nearest(found), within(NEAREST_MS, opts.signal)).catch(() => found) : found
    const providers = near.length > 0 ? near : found
    const errors: string[] = []
    // the nearest first; when they all fail, every provider found
    const sets = providers.length < found.length ? [providers, found] : [providers]
    for (const set of sets) {
      try {
        const bytes = await this.fetchChunked(set, cid, opts)
        await this.store.put(bytes, cid)
        return bytes
      } catch (err) {
        errors.push((err as Error).message)
        // a provider may have sent bad bytes: fall back to whole copies, each verified on its own
        if (err instanceof HashMismatchError) break
        if (set === sets[sets.length - 1]) throw err
      }
    }
    for (const p of providers) {
      try {
        const bytes = await this.fetchFrom(p, cid, opts)
        await this.store.put(bytes, cid)
        return bytes
      } catch (err) {
        this.log('fetch of %s from %p failed: %e', cid, p.id, err)
        errors.push(`${p.id.toString().slice(-8)}: ${(err as Error).message}`)
      }
    }
    throw new ShardNotFoundError(cid, errors.join('; '))
  }
}

/** Ranges of a partly fetched shard kept on disk, copied into `buffer`. */
async function resume (paths: { data: string, ranges: string }, total: number, buffer: Uint8Array): Promise<Array<[number, number]>> {
  try {
    const saved = JSON.parse(await readFile(paths.ranges, 'utf8')) as { total: number, done: Array<[number, number]> }
    if (saved.total !== total) return []
    const partial = await readFile(paths.data)
    const done = saved.done.filter(([o, l]) => o + l <= partial.byteLength)
    for (const [o, l] of done) buffer.set(partial.subarray(o, o + l), o)
    return done
  } catch { return [] }
}
