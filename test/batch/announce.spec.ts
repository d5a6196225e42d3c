import assert from 'node:assert/strict'
import { LeaseBook } from '../../node/capacity/leases.ts'
import { chooseStageToHost } from '../../node/scheduler/selection.ts'
import { FrameTooLargeError, MalformedFrameError } from '../../protocols/errors.ts'
import { MAX_ANNOUNCEMENT_BYTES } from '../../protocols/limits.ts'
import { SeenJobs, decodeJobsMessage, encodeJobsMessage } from '../../protocols/jobs.ts'
import type { JobAnnouncement } from '../../protocols/jobs.ts'
import { decodeOfferMessage, encodeOfferMessage } from '../../protocols/offer.ts'

const now = 1_800_000_000_000
const good: JobAnnouncement = { job: 'j1', manifest: 'bafkrei', items: 500, deadline: now + 60_000, issuedAt: now, addrs: ['/ip4/127.0.0.1/tcp/1'], requirements: {} }
const encode = (a: JobAnnouncement): Uint8Array => encodeJobsMessage({ kind: 'job', job: a })
const decode = (b: Uint8Array, at = now): JobAnnouncement => {
  const m = decodeJobsMessage(b, at)
  assert.equal(m.kind, 'job')
  return (m as { job: JobAnnouncement }).job
}

describe('job announcements', () => {
  it('round-trip', () => {
    assert.deepEqual(decode(encode(good)), good)
  })

  it('reject bad ones, naming the field', () => {
    const cases: Array<[JobAnnouncement, string]> = [
      [{ ...good, job: '' }, 'announcement.job'],
      [{ ...good, manifest: '' }, 'announcement.manifest'],
      [{ ...good, items: 0 }, 'announcement.items'],
      [{ ...good, addrs: Array.from({ length: 17 }, () => '/ip4/1.2.3.4/tcp/1') }, 'announcement.addrs'],
      [{ ...good, deadline: 1.5 }, 'announcement.deadline']
    ]
    for (const [v, field] of cases) {
      assert.throws(() => decode(encode(v)), (e: unknown) => e instanceof MalformedFrameError && e.field === field, field)
    }
    assert.throws(() => decodeJobsMessage(new Uint8Array([0xff, 0xff]), now), (e: unknown) => e instanceof MalformedFrameError && e.field === 'announcement')
  })

  it('reject one that is too big', () => {
    assert.throws(() => decodeJobsMessage(new Uint8Array(MAX_ANNOUNCEMENT_BYTES + 1), now), FrameTooLargeError)
  })

  it('reject expired ones and ones too far ahead', () => {
    assert.throws(() => decode(encode(good), good.deadline), /expired/)
    assert.throws(() => decode(encode({ ...good, deadline: now + 2 * 24 * 3600_000 })), /too far/)
  })

  it('ignore a replayed announcement until it expires', () => {
    const seen = new SeenJobs()
    assert.equal(seen.firstTime(good, now), true)
    assert.equal(seen.firstTime(good, now + 1000), false)
    assert.equal(seen.firstTime({ ...good, job: 'j2' }, now + 1000), true)
    assert.equal(seen.firstTime(good, good.deadline + 1), true, 'forgotten after its deadline')
  })
})

describe('offers and leases', () => {
  it('offer messages round-trip and bad ones name the field', () => {
    const offer = { type: 'offer' as const, job: 'j', stages: [{ stage: 1, msPerItem: 3.5 }], maxInFlight: 4 }
    assert.deepEqual(decodeOfferMessage(encodeOfferMessage(offer)), offer)
    assert.throws(() => decodeOfferMessage(encodeOfferMessage({ type: 'lease', job: 'j', lease: 'l', stages: [0], inFlight: 0, ttlMs: 1000 })), (e: unknown) => e instanceof MalformedFrameError && e.field === 'offer message.inFlight')
    assert.throws(() => decodeOfferMessage(encodeOfferMessage({ type: 'offer', job: 'j', stages: [], maxInFlight: 1 })), (e: unknown) => e instanceof MalformedFrameError && e.field === 'offer message.stages')
  })

  it('a lease expires unless renewed', () => {
    const book = new LeaseBook()
    book.grant({ lease: 'a', job: 'j', client: 'c', stages: [0], inFlight: 3, expiresAt: 1000 })
    book.grant({ lease: 'b', job: 'j', client: 'c', stages: [1], inFlight: 2, expiresAt: 1000 })
    assert.equal(book.reserved(500), 5)
    assert.equal(book.renew('a', 1000, 900), 1900)
    assert.equal(book.isValid('a', 1500), true)
    assert.equal(book.isValid('b', 1500), false, 'b was not renewed')
    assert.deepEqual(book.sweep(1500).map(e => e.lease), ['b'])
    assert.equal(book.renew('b', 1000, 1500), undefined, 'an expired lease cannot be renewed')
    assert.equal(book.reserved(1500), 3)
    book.release('a')
    assert.equal(book.isValid('a', 1500), false)
  })
})

describe('choosing a stage to host', () => {
  it('takes the stage with the fewest providers, then the slowest, never one already held', () => {
    const supply = [{ stage: 0, providers: 2, meanMsPerItem: 5 }, { stage: 1, providers: 1, meanMsPerItem: 4 }, { stage: 2, providers: 1, meanMsPerItem: 9 }]
    assert.equal(chooseStageToHost(supply, new Set()), 2)
    assert.equal(chooseStageToHost(supply, new Set([2])), 1)
    assert.equal(chooseStageToHost(supply, new Set([0, 1, 2])), undefined)
  })
})
