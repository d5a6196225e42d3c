/**
 * DHT record validation and selection: capacity records and model name
 * records are signed by their subject; in a fleet with an authority they
 * must also carry a certificate chain showing the signer's role (vehicles
 * publish capacity, publishers name models).
 */
import type { Selectors, Validators } from '@libp2p/kad-dht'
import { openCapacityRecord, selectCapacityRecord } from '../../protocols/capacity.ts'
import { CAPACITY_RECORD_NAMESPACE, MODEL_RECORD_NAMESPACE } from '../../protocols/ids.ts'
import { openModelRecord, selectModelRecord } from '../../protocols/jobs.ts'
import { NotAMemberError, verifyChain } from '../../protocols/membership.ts'
import type { FleetTrust, Role } from '../../protocols/membership.ts'

export interface RecordTrust {
  trust: FleetTrust
  revoked?: (peer: string, serial: string) => boolean
}

async function requireRole (t: RecordTrust | undefined, chain: Uint8Array[] | undefined, subject: string, role: Role): Promise<void> {
  if (t === undefined) return // an open fleet
  const cert = await verifyChain(t.trust, chain ?? [], { now: Date.now(), subject, ...(t.revoked !== undefined ? { revoked: t.revoked } : {}) })
  if (!cert.roles.includes(role)) throw new NotAMemberError(`${subject} is not a ${role}`)
}

export function recordValidators (t?: RecordTrust): Validators {
  return {
    [CAPACITY_RECORD_NAMESPACE]: async (key, value) => {
      const r = await openCapacityRecord(value, { key })
      await requireRole(t, r.membership, r.peer, 'vehicle')
    },
    [MODEL_RECORD_NAMESPACE]: async (key, value) => {
      const r = await openModelRecord(value, key)
      await requireRole(t, r.membership, r.publisher, 'publisher')
    }
  }
}

export const recordSelectors: Selectors = {
  [CAPACITY_RECORD_NAMESPACE]: async (_key, values) => await selectCapacityRecord(values),
  [MODEL_RECORD_NAMESPACE]: async (_key, values) => await selectModelRecord(values)
}
