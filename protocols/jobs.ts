/**
 * The jobs topic `/fleetmesh/<fleet>/jobs/2` (gossipsub, StrictSign; schema:
 * protocols/jobs.proto): batch job announcements and model announcements.
 * Receivers validate size, schema and expiry and ignore a job they have seen.
 * Also the model name records kept in the DHT under `/fmmodel/<name>`,
 * sealed in a RecordEnvelope by their publisher.
 */
import type { PrivateKey } from '@libp2p/interface'
import { chainIn, decodeMessage, encodeMessage, list, num, text, time } from './codec.ts'
import { openRecord, sealRecord } from './envelope.ts'
import { MalformedFrameError } from './errors.ts'
import { JobsMessageSchema, ModelRecordSchema } from './gen/jobs_pb.ts'
import { MODEL_RECORD, MODEL_RECORD_NAMESPACE } from './ids.ts'
import { MAX_ANNOUNCEMENT_BYTES, MAX_JOB_LIFETIME_MS, MAX_MODEL_RECORD_BYTES, MAX_PEER_ID_CHARS } from './limits.ts'

export interface JobAnnouncement {
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

export interface ModelAnnouncement {
  name: string
  version: string
  manifest: string
  stages: number
  publishedAt: number
  /** The publisher's addresses (it seeds the shards). */
  addrs: string[]
}

/** A message on the jobs topic; `unknown` is a kind this version does not know (skip it). `membership`: the sender's certificate chain. */
export type JobsMessage = (
  | { kind: 'job', job: JobAnnouncement }
  | { kind: 'model', model: ModelAnnouncement }
  | { kind: 'unknown' }
) & { membership?: Uint8Array[] }

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
export function checkModelName (name: string, field = 'name'): string {
  if (!NAME_RE.test(name)) throw new MalformedFrameError(field, `"${name}" must be 1-64 of letters, digits, . _ - (starting with a letter or digit)`)
  return name
}
const MAX_CID_CHARS = 128

function addrs (v: string[], field: string): string[] {
  return list(v, field, 16).map((a, i) => text(a, `${field}[${i}]`, 512))
}

export function encodeJobsMessage (m: Exclude<JobsMessage, { kind: 'unknown' }>): Uint8Array {
  const kind = m.kind === 'job'
    ? { case: 'job' as const, value: { job: m.job.job, manifest: m.job.manifest, items: m.job.items, deadlineMs: m.job.deadline, issuedAtMs: m.job.issuedAt, addrs: m.job.addrs, minSlots: m.job.requirements.minSlots ?? 0 } }
    : { case: 'model' as const, value: { name: m.model.name, version: m.model.version, manifest: m.model.manifest, stages: m.model.stages, publishedAtMs: m.model.publishedAt, addrs: m.model.addrs } }
  return encodeMessage(JobsMessageSchema, { kind, membership: m.membership ?? [] })
}

/** Decodes and checks a jobs topic message at `now`: expired or malformed ones throw, naming the field. */
export function decodeJobsMessage (bytes: Uint8Array, now = Date.now()): JobsMessage {
  const m = decodeMessage(JobsMessageSchema, bytes, 'announcement', MAX_ANNOUNCEMENT_BYTES)
  const chain = chainIn(m.membership, 'announcement.membership')
  const membership = chain !== undefined ? { membership: chain } : {}
  if (m.kind.case === 'job') {
    const a = m.kind.value
    const deadline = time(a.deadlineMs, 'announcement.deadline')
    if (deadline <= now) throw new MalformedFrameError('announcement.deadline', 'expired')
    if (deadline > now + MAX_JOB_LIFETIME_MS) throw new MalformedFrameError('announcement.deadline', 'too far in the future')
    return {
      kind: 'job',
      job: {
        job: text(a.job, 'announcement.job', 128),
        manifest: text(a.manifest, 'announcement.manifest', MAX_CID_CHARS),
        items: num(a.items, 'announcement.items', 1, 10_000_000),
        deadline,
        issuedAt: time(a.issuedAtMs, 'announcement.issuedAt'),
        addrs: addrs(a.addrs, 'announcement.addrs'),
        requirements: a.minSlots > 0 ? { minSlots: a.minSlots } : {}
      },
      ...membership
    }
  }
  if (m.kind.case === 'model') {
    const a = m.kind.value
    const publishedAt = time(a.publishedAtMs, 'model announcement.publishedAt')
    if (publishedAt > now + 60_000) throw new MalformedFrameError('model announcement.publishedAt', 'is in the future')
    return {
      kind: 'model',
      model: {
        name: checkModelName(a.name, 'model announcement.name'),
        version: checkModelName(a.version, 'model announcement.version'),
        manifest: text(a.manifest, 'model announcement.manifest', MAX_CID_CHARS),
        stages: num(a.stages, 'model announcement.stages', 1, 1024),
        publishedAt,
        addrs: addrs(a.addrs, 'model announcement.addrs')
      },
      ...membership
    }
  }
  return { kind: 'unknown', ...membership }
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

/** Versions of a model name -> manifest CID, signed by its publisher. */
export interface ModelRecord {
  name: string
  versions: Record<string, string>
  publisher: string
  publishedAt: number
  /** The publisher's member certificate chain (absent in an open fleet). */
  membership?: Uint8Array[]
}

export function modelRecordKey (name: string): Uint8Array {
  return new TextEncoder().encode(`/${MODEL_RECORD_NAMESPACE}/${checkModelName(name)}`)
}

export async function sealModelRecord (r: ModelRecord, key: PrivateKey): Promise<Uint8Array> {
  return await sealRecord(MODEL_RECORD, encodeMessage(ModelRecordSchema, { name: r.name, versions: r.versions, publisher: r.publisher, publishedAtMs: r.publishedAt, membership: r.membership ?? [] }), key)
}

/** Opens and checks a name record: signed by its publisher, name matching the DHT key when given. */
export async function openModelRecord (value: Uint8Array, key?: Uint8Array): Promise<ModelRecord> {
  const { signer, payload } = await openRecord(MODEL_RECORD, value, 'model record', MAX_MODEL_RECORD_BYTES)
  const r = decodeMessage(ModelRecordSchema, payload, 'model record', MAX_MODEL_RECORD_BYTES)
  const name = checkModelName(r.name, 'model record.name')
  if (key !== undefined && new TextDecoder().decode(key) !== `/${MODEL_RECORD_NAMESPACE}/${name}`) throw new MalformedFrameError('model record.name', 'does not match the record key')
  const publisher = text(r.publisher, 'model record.publisher', MAX_PEER_ID_CHARS)
  if (publisher !== signer) throw new MalformedFrameError('model record.publisher', 'is not the signer')
  const versions = list(Object.entries(r.versions), 'model record.versions', 256)
  for (const [v, cid] of versions) { checkModelName(v, 'model record.versions'); text(cid, `model record.versions.${v}`, MAX_CID_CHARS) }
  const membership = chainIn(r.membership, 'model record.membership')
  return { name, versions: r.versions, publisher, publishedAt: time(r.publishedAtMs, 'model record.publishedAt'), ...(membership !== undefined ? { membership } : {}) }
}

/** Of several name records for one key, the index of the newest valid one. */
export async function selectModelRecord (values: Uint8Array[]): Promise<number> {
  let best = 0; let newest = -1
  for (const [i, v] of values.entries()) {
    try {
      const r = await openModelRecord(v)
      if (r.publishedAt > newest) { newest = r.publishedAt; best = i }
    } catch {}
  }
  return best
}
