/**
 * Job announcements on `/fleetmesh/<fleet>/jobs/1` (gossipsub, StrictSign).
 *
 * A client with a batch announces it; eligible vehicles that serve stages of
 * the model answer with offers over `/fleetmesh/offer/1.0.0`. Receivers
 * validate size, schema and expiry, and ignore an announcement they have seen.
 */
import { FrameTooLargeError, MalformedFrameError } from './errors.ts'
import { decodeJsonObject, encodeJson } from './json.ts'
import { KiB } from './limits.ts'

export const MAX_ANNOUNCEMENT_BYTES = 16 * KiB
/** Announcements further in the future than this are refused. */
export const MAX_JOB_LIFETIME_MS = 24 * 3600_000

export interface JobAnnouncement {
  v: 1
  /** Unique per batch. */
  job: string
  /** Manifest CID of the model. */
  manifest: string
  items: number
  /** Epoch ms after which the job is over. */
  deadline: number
  issuedAt: number
  /** Multiaddrs of the client, so vehicles can open offer streams to it. */
  addrs: string[]
  requirements: { minSlots?: number }
}

export class AnnouncementError extends MalformedFrameError {}

export function encodeAnnouncement (a: JobAnnouncement): Uint8Array {
  const bytes = encodeJson(a)
  if (bytes.byteLength > MAX_ANNOUNCEMENT_BYTES) throw new FrameTooLargeError('announcement', bytes.byteLength, MAX_ANNOUNCEMENT_BYTES)
  return bytes
}

/** Validates an announcement at `now`; expired or malformed ones throw, naming the field. */
export function decodeAnnouncement (bytes: Uint8Array, now = Date.now()): JobAnnouncement {
  const v = decodeJsonObject(bytes, 'announcement', MAX_ANNOUNCEMENT_BYTES)
  if (v.v !== 1) throw new AnnouncementError('announcement.v', `unsupported version ${String(v.v)}`)
  if (typeof v.job !== 'string' || v.job.length === 0 || v.job.length > 128) throw new AnnouncementError('announcement.job', 'must be a string of 1..128 chars')
  if (typeof v.manifest !== 'string' || v.manifest.length === 0 || v.manifest.length > 128) throw new AnnouncementError('announcement.manifest', 'must be a CID string')
  if (!Number.isInteger(v.items) || v.items < 1 || v.items > 10_000_000) throw new AnnouncementError('announcement.items', 'must be an integer in 1..10000000')
  if (!Number.isInteger(v.deadline)) throw new AnnouncementError('announcement.deadline', 'must be epoch ms')
  if (v.deadline <= now) throw new AnnouncementError('announcement.deadline', 'expired')
  if (v.deadline > now + MAX_JOB_LIFETIME_MS) throw new AnnouncementError('announcement.deadline', 'too far in the future')
  if (!Number.isInteger(v.issuedAt)) throw new AnnouncementError('announcement.issuedAt', 'must be epoch ms')
  if (!Array.isArray(v.addrs) || v.addrs.length > 16 || v.addrs.some((a: unknown) => typeof a !== 'string')) throw new AnnouncementError('announcement.addrs', 'must be at most 16 multiaddr strings')
  const req = v.requirements ?? {}
  if (req === null || typeof req !== 'object') throw new AnnouncementError('announcement.requirements', 'must be an object')
  return { v: 1, job: v.job, manifest: v.manifest, items: v.items, deadline: v.deadline, issuedAt: v.issuedAt, addrs: v.addrs, requirements: { ...(Number.isInteger(req.minSlots) ? { minSlots: req.minSlots } : {}) } }
}

/** Remembers announcements until their deadline so replays are ignored. */
export class SeenJobs {
  private readonly seen = new Map<string, number>()
  /** True the first time a job id is seen (and not expired). */
  firstTime (a: JobAnnouncement, now = Date.now()): boolean {
    if (this.has(a, now)) return false
    this.remember(a)
    return true
  }

  has (a: JobAnnouncement, now = Date.now()): boolean {
    for (const [k, until] of this.seen) if (until <= now) this.seen.delete(k)
    return this.seen.has(a.job)
  }

  remember (a: JobAnnouncement): void { this.seen.set(a.job, a.deadline) }
}

/**
 * Model announcements share the jobs topic: a publisher tells the fleet a
 * model (name, version, manifest CID) is available; vehicles with room fetch
 * the stages the swarm serves worst.
 */
export interface ModelAnnouncement {
  v: 1
  kind: 'model'
  name: string
  version: string
  manifest: string
  stages: number
  publishedAt: number
  /** The publisher's addresses (it seeds the shards). */
  addrs: string[]
}

export function encodeModelAnnouncement (a: ModelAnnouncement): Uint8Array {
  const bytes = encodeJson(a)
  if (bytes.byteLength > MAX_ANNOUNCEMENT_BYTES) throw new FrameTooLargeError('model announcement', bytes.byteLength, MAX_ANNOUNCEMENT_BYTES)
  return bytes
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
export function checkModelName (name: string, field = 'name'): string {
  if (!NAME_RE.test(name)) throw new AnnouncementError(field, `"${name}" must be 1-64 of letters, digits, . _ - (starting with a letter or digit)`)
  return name
}

/** A message on the jobs topic: a job announcement, or (with `kind: "model"`) a model announcement. */
export function decodeJobsMessage (bytes: Uint8Array, now = Date.now()): JobAnnouncement | ModelAnnouncement {
  const v = decodeJsonObject(bytes, 'announcement', MAX_ANNOUNCEMENT_BYTES)
  if (v.kind !== 'model') return decodeAnnouncement(bytes, now)
  if (v.v !== 1) throw new AnnouncementError('model announcement.v', `unsupported version ${String(v.v)}`)
  checkModelName(v.name, 'model announcement.name')
  if (typeof v.version !== 'string' || !NAME_RE.test(v.version)) throw new AnnouncementError('model announcement.version', 'must be 1-64 of letters, digits, . _ -')
  if (typeof v.manifest !== 'string' || v.manifest.length === 0 || v.manifest.length > 128) throw new AnnouncementError('model announcement.manifest', 'must be a CID string')
  if (!Number.isInteger(v.stages) || v.stages < 1 || v.stages > 1024) throw new AnnouncementError('model announcement.stages', 'must be an integer in 1..1024')
  if (!Number.isInteger(v.publishedAt) || v.publishedAt > now + 60_000) throw new AnnouncementError('model announcement.publishedAt', 'must be epoch ms, not in the future')
  if (!Array.isArray(v.addrs) || v.addrs.length > 16 || v.addrs.some((a: unknown) => typeof a !== 'string')) throw new AnnouncementError('model announcement.addrs', 'must be at most 16 multiaddr strings')
  return { v: 1, kind: 'model', name: v.name, version: v.version, manifest: v.manifest, stages: v.stages, publishedAt: v.publishedAt, addrs: v.addrs }
}

/** DHT name record `/fmmodel/<name>`: versions -> manifest CID, signed by its publisher. */
export const MODEL_RECORD_NAMESPACE = 'fmmodel'

export interface ModelRecord { name: string, versions: Record<string, string>, publisher: string, publishedAt: number }

export function modelRecordKey (name: string): Uint8Array {
  return new TextEncoder().encode(`/${MODEL_RECORD_NAMESPACE}/${checkModelName(name)}`)
}

export async function encodeModelRecord (r: ModelRecord, key: { sign: (d: Uint8Array) => Uint8Array | Promise<Uint8Array> }): Promise<Uint8Array> {
  const body = JSON.stringify(r)
  return encodeJson({ body, sig: Buffer.from(await key.sign(new TextEncoder().encode(body))).toString('base64') })
}

export async function decodeModelRecord (value: Uint8Array, publicKeyOf: (peer: string) => { verify: (d: Uint8Array, s: Uint8Array) => boolean | Promise<boolean> }, key?: Uint8Array): Promise<ModelRecord> {
  const env = decodeJsonObject(value, 'model record', MAX_ANNOUNCEMENT_BYTES)
  if (typeof env.body !== 'string' || typeof env.sig !== 'string') throw new MalformedFrameError('model record', 'needs body and sig')
  const r = decodeJsonObject(new TextEncoder().encode(env.body), 'model record.body', MAX_ANNOUNCEMENT_BYTES)
  checkModelName(r.name, 'model record.name')
  if (key !== undefined && new TextDecoder().decode(key) !== `/${MODEL_RECORD_NAMESPACE}/${r.name}`) throw new MalformedFrameError('model record.name', 'does not match the record key')
  if (r.versions === null || typeof r.versions !== 'object' || Object.values(r.versions).some(c => typeof c !== 'string')) throw new MalformedFrameError('model record.versions', 'must map versions to manifest CIDs')
  if (typeof r.publisher !== 'string' || !Number.isInteger(r.publishedAt)) throw new MalformedFrameError('model record', 'needs publisher and publishedAt')
  if (!(await publicKeyOf(r.publisher).verify(new TextEncoder().encode(env.body), Buffer.from(env.sig, 'base64')))) throw new MalformedFrameError('model record.sig', 'signature does not verify')
  return { name: r.name, versions: r.versions, publisher: r.publisher, publishedAt: r.publishedAt }
}
