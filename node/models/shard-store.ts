/**
 * Content-addressed shard store on disk: `<dir>/<cid>`. Bytes are verified
 * against their CID when written and again on every load, so a corrupted
 * file is never served or run.
 */
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cidOf, parseCid, verifyCid } from './cid.ts'
import { HashMismatchError } from '../../protocols/errors.ts'

export class ShardStore implements BlobStore {
  readonly dir: string
  constructor (dir: string) { this.dir = dir }

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
    return bytes
  }

  async has (cid: string): Promise<boolean> {
    return (await this.list()).includes(cid)
  }

  async list (): Promise<string[]> {
    return (await readdir(this.dir)).filter(f => !f.startsWith('.'))
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
