/**
 * Content-addressed shard store on disk: `<dir>/<cid>`. Bytes are verified
 * against their CID when written and again on every load, so a corrupted
 * file is never served or run.
 */
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cidOf, parseCid, verifyCid } from './cid.ts'
import { HashMismatchError } from '../../protocols/errors.ts'

export interface ShardStoreInit {
  /** Keep at most this many bytes; least recently used shards that are not pinned go first. @default unbounded */
  maxBytes?: number
  /** Shards that must stay (e.g. those being served). */
  pinned?: (cid: string) => boolean
}

export class ShardStore implements BlobStore {
  readonly dir: string
  private readonly opts: ShardStoreInit
  private readonly lastUsed = new Map<string, number>()
  private clock = 0

  constructor (dir: string, init: ShardStoreInit = {}) {
    this.dir = dir
    this.opts = init
  }

  /** Marks a shard as just used (for eviction order). */
  touch (cid: string): void { this.lastUsed.set(cid, ++this.clock) }

  /**
   * Deletes least recently used, unpinned shards until the store fits
   * `maxBytes`. Returns the CIDs it removed.
   */
  async evict (): Promise<string[]> {
    const max = this.opts.maxBytes
    if (max === undefined) return []
    const entries = await Promise.all((await this.list()).map(async cid => ({ cid, size: (await stat(join(this.dir, cid))).size })))
    let total = entries.reduce((sum, e) => sum + e.size, 0)
    const removed: string[] = []
    const candidates = entries.filter(e => this.opts.pinned?.(e.cid) !== true).sort((a, b) => (this.lastUsed.get(a.cid) ?? 0) - (this.lastUsed.get(b.cid) ?? 0))
    for (const e of candidates) {
      if (total <= max) break
      await rm(join(this.dir, e.cid), { force: true })
      this.lastUsed.delete(e.cid)
      total -= e.size
      removed.push(e.cid)
    }
    return removed
  }

  async init (): Promise<this> {
    await mkdir(this.dir, { recursive: true })
    return this
  }

  private path (cid: string): string {
    parseCid(cid) // rejects anything that is not a CID, so no path tricks
    return join(this.dir, cid)
  }

  /** Stores bytes under their CID (atomically) and returns the CID. */
  async put (bytes: Uint8Array, expected?: string): Promise<string> {
    const cid = cidOf(bytes)
    if (expected !== undefined && cid !== expected) throw new HashMismatchError(expected, cid)
    const tmp = join(this.dir, `.${cid}.${process.pid}.tmp`)
    await writeFile(tmp, bytes)
    await rename(tmp, this.path(cid))
    this.touch(cid)
    await this.evict()
    return cid
  }

  /** The verified bytes of `cid`, or undefined when absent. A corrupt file is deleted and reported. */
  async get (cid: string): Promise<Uint8Array | undefined> {
    let bytes: Uint8Array
    try { bytes = await readFile(this.path(cid)) } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    try { verifyCid(cid, bytes) } catch (err) {
      await rm(this.path(cid), { force: true })
      throw err
    }
    this.touch(cid)
    return bytes
  }

  async has (cid: string): Promise<boolean> {
    return (await this.list()).includes(cid)
  }

  async list (): Promise<string[]> {
    return (await readdir(this.dir)).filter(f => !f.startsWith('.'))
  }

  /** Where a partly fetched shard is kept between attempts: bytes so far and the ranges done. */
  partialPaths (cid: string): { data: string, ranges: string } {
    parseCid(cid)
    return { data: join(this.dir, `.${cid}.partial`), ranges: join(this.dir, `.${cid}.ranges.json`) }
  }
}

/** What the shard exchange needs of a store. */
export interface BlobStore {
  put: (bytes: Uint8Array, expected?: string) => Promise<string>
  get: (cid: string) => Promise<Uint8Array | undefined>
}

/** In-memory store for peers that keep nothing on disk (clients). */
export class MemoryStore implements BlobStore {
  private readonly blobs = new Map<string, Uint8Array>()
  async put (bytes: Uint8Array, expected?: string): Promise<string> {
    const cid = cidOf(bytes)
    if (expected !== undefined && cid !== expected) throw new HashMismatchError(expected, cid)
    this.blobs.set(cid, bytes)
    return cid
  }

  async get (cid: string): Promise<Uint8Array | undefined> { return this.blobs.get(cid) }
}
