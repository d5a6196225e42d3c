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
