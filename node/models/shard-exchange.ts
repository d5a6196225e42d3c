/**
 * Serves and fetches shard bytes by CID over `/fleetmesh/shard/1.0.0`
 * (see protocols/shard.ts). Fetched content is hash-verified before it is
 * stored; a provider that sends bad bytes is skipped for the next one.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions, Logger, PeerId, Stream } from '@libp2p/interface'
import { open, readFile, rm, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { parseCid, verifyCid } from './cid.ts'
import { ShardStore } from './shard-store.ts'
import type { BlobStore } from './shard-store.ts'
import { HashMismatchError } from '../../protocols/errors.ts'
import type { Host } from '../host.ts'
import { SHARD_PROTOCOL } from '../../protocols/ids.ts'
import { MAX_SHARD_BYTES, MAX_SHARD_REQUEST_BYTES, SHARD_CHUNK_BYTES, SHARD_READ_TIMEOUT_MS, MiB } from '../../protocols/limits.ts'
import { decodeShardRequest, decodeShardResponseHeader, encodeJson } from '../../protocols/shard.ts'

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

/** Range size of chunked fetches. */
export const RANGE_BYTES = SHARD_CHUNK_BYTES

export class ShardExchange {
  private readonly host: Host
  readonly store: BlobStore
  private readonly log: Logger
  private started = false

  constructor (host: Host, store: BlobStore) {
    this.host = host
    this.store = store
    this.log = host.logger.forComponent('fleetmesh:shard')
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.host.handle(SHARD_PROTOCOL, (stream) => { void this.serve(stream) }, { maxInboundStreams: 32, maxOutboundStreams: 32 })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    await this.host.unhandle(SHARD_PROTOCOL)
    this.started = false
  }

  /** Handler: one request, then the header and the chunks. */
  async serve (stream: Stream): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: MAX_SHARD_REQUEST_BYTES })
    try {
      const req = decodeShardRequest((await lp.read({ signal: AbortSignal.timeout(SHARD_READ_TIMEOUT_MS) })).subarray())
      let bytes: Uint8Array | undefined
      try { parseCid(req.cid); bytes = await this.store.get(req.cid) } catch (err) {
        await lp.write(encodeJson({ ok: false, code: 'BAD_REQUEST', message: (err as Error).message }))
        await stream.close()
        return
      }
      if (bytes === undefined) {
        await lp.write(encodeJson({ ok: false, code: 'NOT_FOUND', message: `no shard ${req.cid} here` }))
        await stream.close()
        return
      }
      const offset = Math.min(req.offset, bytes.byteLength)
      const end = Math.min(bytes.byteLength, offset + (req.length ?? bytes.byteLength))
      await lp.write(encodeJson({ ok: true, size: end - offset, total: bytes.byteLength }))
      for (let o = offset; o < end; o += SHARD_CHUNK_BYTES) {
        await lp.write(bytes.subarray(o, Math.min(o + SHARD_CHUNK_BYTES, end)))
      }
      await stream.close()
    } catch (err) {
      this.log.error('shard request failed: %e', err)
      stream.abort(err as Error)
    }
  }

  /** Fetches bytes [offset, offset + length) of `cid` from one peer (length undefined: to the end). */
  async fetchRange (provider: Provider, cid: string, offset: number, length: number | undefined, opts: AbortOptions = {}): Promise<{ bytes: Uint8Array, total: number }> {
    if (provider.addrs.length > 0 && this.host.getConnections(provider.id).length === 0) await this.host.peerStore.merge(provider.id, { multiaddrs: provider.addrs.map(a => multiaddr(a)) })
    const signal = AbortSignal.any([AbortSignal.timeout(SHARD_READ_TIMEOUT_MS), ...(opts.signal !== undefined ? [opts.signal] : [])])
    const stream = await this.host.dialProtocol(provider.id, SHARD_PROTOCOL, { signal })
    const lp = lpStream(stream, { maxDataLength: SHARD_CHUNK_BYTES, maxBufferSize: SHARD_CHUNK_BYTES + MiB })
    try {
      await lp.write(encodeJson({ cid, offset, ...(length !== undefined ? { length } : {}) }))
      const head = decodeShardResponseHeader((await lp.read({ signal })).subarray())
      if (!head.ok) throw new ShardNotFoundError(cid, `${provider.id.toString()} answered ${head.code}: ${head.message}`)
      if (head.total > MAX_SHARD_BYTES) throw new ShardNotFoundError(cid, `size ${head.total} over limit`)
      const want = length === undefined ? head.total - offset : Math.min(length, head.total - offset)
      if (head.size !== want) throw new ShardNotFoundError(cid, `provider offered ${head.size} bytes, asked for ${want}`)
      const out = new Uint8Array(head.size)
      let got = 0
      while (got < head.size) {
        const chunk = (await lp.read({ signal })).subarray()
        if (got + chunk.byteLength > head.size) throw new ShardNotFoundError(cid, 'provider sent more bytes than announced')
        out.set(chunk, got)
        got += chunk.byteLength
      }
      await stream.close()
      return { bytes: out, total: head.total }
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
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
    for (const p of providers) {
      try { total = (await this.fetchRange(p, cid, 0, 0, opts)).total; break } catch (err) { errors.push((err as Error).message) }
    }
    if (total === undefined) throw new ShardNotFoundError(cid, errors.join('; ') || 'no provider answered')
    const paths = this.store instanceof ShardStore ? this.store.partialPaths(cid) : undefined
    const buffer = new Uint8Array(total)
    let done: Array<[number, number]> = []
    if (paths !== undefined) {
      try {
        const saved = JSON.parse(await readFile(paths.ranges, 'utf8')) as { total: number, done: Array<[number, number]> }
        if (saved.total === total) {
          const partial = await readFile(paths.data)
          done = saved.done.filter(([o, l]) => o + l <= partial.byteLength)
          for (const [o, l] of done) buffer.set(partial.subarray(o, o + l), o)
        }
      } catch { /* nothing to resume */ }
    }
    const queue: Array<[number, number]> = []
    for (let o = 0; o < total; o += RANGE_BYTES) {
      const l = Math.min(RANGE_BYTES, total - o)
      if (!done.some(([d, dl]) => d === o && dl === l)) queue.push([o, l])
    }
    this.resumedBytes = done.reduce((s, [, l]) => s + l, 0)
    let file: FileHandle | undefined
    if (paths !== undefined) file = await open(paths.data, done.length > 0 ? 'r+' : 'w').catch(async () => await open(paths.data, 'w'))
    try {
      await Promise.all(providers.map(async p => {
        for (;;) {
          const range = queue.shift()
          if (range === undefined) return
          try {
            const { bytes } = await this.fetchRange(p, cid, range[0], range[1], opts)
            buffer.set(bytes, range[0])
            done.push(range)
            if (file !== undefined && paths !== undefined) {
              await file.write(bytes, 0, bytes.byteLength, range[0])
              await writeFile(paths.ranges, JSON.stringify({ total, done }))
            }
          } catch (err) {
            queue.push(range) // someone else takes it
            errors.push(`${p.id.toString().slice(-8)}: ${(err as Error).message}`)
            return
          }
        }
      }))
    } finally {
      await file?.close()
    }
    if (queue.length > 0) throw new ShardNotFoundError(cid, `${queue.length} ranges left after every provider failed (${errors.join('; ')}); progress kept for the next attempt`)
    try { verifyCid(cid, buffer) } catch (err) {
      if (paths !== undefined) { await rm(paths.data, { force: true }); await rm(paths.ranges, { force: true }) }
      throw err
    }
    if (paths !== undefined) { await rm(paths.data, { force: true }); await rm(paths.ranges, { force: true }) }
    return buffer
  }

  /** Bytes the last chunked fetch found already on disk (for tests and logs). */
  resumedBytes = 0

  /** Providers of `cid` from the DHT (excluding ourselves). */
  async findProviders (cid: string, opts: AbortOptions & { max?: number } = {}): Promise<Provider[]> {
    const found: Provider[] = []
    const signal = opts.signal ?? AbortSignal.timeout(10_000)
    try {
      for await (const p of this.host.contentRouting.findProviders(parseCid(cid), { signal })) {
        if (p.id.equals(this.host.peerId) || found.some(f => f.id.equals(p.id))) continue
        found.push({ id: p.id, addrs: p.multiaddrs.map(a => a.toString()) })
        if (found.length >= (opts.max ?? 8)) break
      }
    } catch (err) {
      if (found.length === 0 && !signal.aborted) throw err
    }
    return found
  }

  /**
   * Returns the verified bytes of `cid`: from the local store, else from the
   * given providers or those the DHT knows, storing them locally.
   */
  async get (cid: string, opts: AbortOptions & { providers?: Provider[] } = {}): Promise<Uint8Array> {
    const local = await this.store.get(cid)
    if (local !== undefined) return local
    const providers = opts.providers ?? await this.findProviders(cid, opts)
    if (providers.length === 0) throw new ShardNotFoundError(cid, 'no provider found in the DHT')
    const errors: string[] = []
    try {
      const bytes = await this.fetchChunked(providers, cid, opts)
      await this.store.put(bytes, cid)
      return bytes
    } catch (err) {
      // a provider may have sent bad bytes: fall back to whole copies, each verified on its own
      errors.push((err as Error).message)
      if (!(err instanceof HashMismatchError)) throw err
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

export function providerFromStrings (peer: string, addrs: string[]): Provider {
  return { id: peerIdFromString(peer), addrs }
}
