/**
 * Serves and fetches shard bytes by CID over `/fleetmesh/shard/1.0.0`
 * (see protocols/shard.ts). Fetched content is hash-verified before it is
 * stored; a provider that sends bad bytes is skipped for the next one.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { AbortOptions, Logger, PeerId, Stream } from '@libp2p/interface'
import { parseCid, verifyCid } from './cid.ts'
import type { BlobStore } from './shard-store.ts'
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
      await lp.write(encodeJson({ ok: true, size: bytes.byteLength - offset }))
      for (let o = offset; o < bytes.byteLength; o += SHARD_CHUNK_BYTES) {
        await lp.write(bytes.subarray(o, Math.min(o + SHARD_CHUNK_BYTES, bytes.byteLength)))
      }
      await stream.close()
    } catch (err) {
      this.log.error('shard request failed: %e', err)
      stream.abort(err as Error)
    }
  }

  /** Fetches `cid` from one peer. */
  async fetchFrom (provider: Provider, cid: string, opts: AbortOptions = {}): Promise<Uint8Array> {
    if (provider.addrs.length > 0) await this.host.peerStore.merge(provider.id, { multiaddrs: provider.addrs.map(a => multiaddr(a)) })
    const signal = AbortSignal.any([AbortSignal.timeout(SHARD_READ_TIMEOUT_MS), ...(opts.signal !== undefined ? [opts.signal] : [])])
    const stream = await this.host.dialProtocol(provider.id, SHARD_PROTOCOL, { signal })
    const lp = lpStream(stream, { maxDataLength: SHARD_CHUNK_BYTES, maxBufferSize: SHARD_CHUNK_BYTES + MiB })
    try {
      await lp.write(encodeJson({ cid, offset: 0 }))
      const head = decodeShardResponseHeader((await lp.read({ signal })).subarray())
      if (!head.ok) throw new ShardNotFoundError(cid, `${provider.id.toString()} answered ${head.code}: ${head.message}`)
      if (head.size > MAX_SHARD_BYTES) throw new ShardNotFoundError(cid, `size ${head.size} over limit`)
      const out = new Uint8Array(head.size)
      let got = 0
      while (got < head.size) {
        const chunk = (await lp.read({ signal })).subarray()
        if (got + chunk.byteLength > head.size) throw new ShardNotFoundError(cid, 'provider sent more bytes than announced')
        out.set(chunk, got)
        got += chunk.byteLength
      }
      await stream.close()
      verifyCid(cid, out)
      return out
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

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
