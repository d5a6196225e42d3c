/**
 * Leases a vehicle granted (pure bookkeeping, clock passed in). A lease holds
 * `inFlight` slots for one job until `expiresAt`; renewals push the expiry out;
 * an expired lease is gone.
 */
export interface LeaseEntry { lease: string, job: string, client: string, stages: number[], inFlight: number, expiresAt: number }

export class LeaseBook {
  private readonly leases = new Map<string, LeaseEntry>()

  grant (e: LeaseEntry): void { this.leases.set(e.lease, e) }

  /** Extends a live lease; returns the new expiry, or undefined if it already expired or is unknown. */
  renew (lease: string, ttlMs: number, now = Date.now()): number | undefined {
    const e = this.leases.get(lease)
    if (e === undefined || e.expiresAt <= now) { this.leases.delete(lease); return undefined }
    e.expiresAt = now + ttlMs
    return e.expiresAt
  }

  isValid (lease: string, now = Date.now()): boolean {
    const e = this.leases.get(lease)
    return e !== undefined && e.expiresAt > now
  }

  release (lease: string): void { this.leases.delete(lease) }

  /** Drops expired leases; returns them. */
  sweep (now = Date.now()): LeaseEntry[] {
    const gone: LeaseEntry[] = []
    for (const [k, e] of this.leases) if (e.expiresAt <= now) { gone.push(e); this.leases.delete(k) }
    return gone
  }

  /** Slots held by live leases. */
  reserved (now = Date.now()): number {
    let n = 0
    for (const e of this.leases.values()) if (e.expiresAt > now) n += e.inFlight
    return n
  }

  active (now = Date.now()): LeaseEntry[] { return [...this.leases.values()].filter(e => e.expiresAt > now) }
}
