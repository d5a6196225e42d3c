/**
 * Content addresses: CIDv1, raw codec, sha256 multihash (the same bytes give
 * the same CID on every peer, so a CID names shard bytes and manifests).
 */
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import * as raw from 'multiformats/codecs/raw'
import { HashMismatchError } from '../../protocols/errors.ts'

const SHA256 = 0x12

export function cidOf (bytes: Uint8Array): string {
  const hash = createHash('sha256').update(bytes).digest()
  return CID.createV1(raw.code, Digest.create(SHA256, new Uint8Array(hash))).toString()
}

/** Throws HashMismatchError unless `bytes` hash to `cid`. */
export function verifyCid (cid: string, bytes: Uint8Array): void {
  const actual = cidOf(bytes)
  if (actual !== cid) throw new HashMismatchError(cid, actual)
}

/** Parses a CID string, throwing a TypeError that names it when invalid. */
export function parseCid (cid: string): CID {
  try { return CID.parse(cid) } catch (err) {
    throw new TypeError(`invalid CID "${cid}": ${(err as Error).message}`)
  }
}

export function isCid (s: string): boolean { return cidProblem(s) === undefined }

/** Why `s` does not parse as a CID, or undefined when it does. */
export function cidProblem (s: string): string | undefined {
  try { CID.parse(s); return undefined } catch (err) { return (err as Error).message }
}
