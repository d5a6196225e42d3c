/**
 * The gateway's model repository: the models publishers named, by name and
 * version, and whether each is ready (every stage has an eligible vehicle).
 */
import type { FleetClient } from '../client/client.ts'
import type { ResolvedModel } from '../client/resolver.ts'
import { latestVersion } from '../models/versions.ts'

/** A request the gateway answers with an HTTP status and `{ "error": message }`. */
export class HttpError extends Error {
  readonly status: number
  constructor (status: number, message: string) { super(message); this.status = status }
}

export class Repository {
  private readonly client: FleetClient

  constructor (client: FleetClient) { this.client = client }

  /** Models the fleet serves: name -> version -> resolved model. */
  async list (): Promise<Map<string, Map<string, ResolvedModel>>> {
    const out = new Map<string, Map<string, ResolvedModel>>()
    for (const n of this.client.names.list()) {
      try {
        const m = await this.client.resolve(n.manifest, { signal: AbortSignal.timeout(5000) })
        const versions = out.get(n.name) ?? new Map<string, ResolvedModel>()
        versions.set(n.version, m)
        out.set(n.name, versions)
      } catch { /* not fetchable right now */ }
    }
    return out
  }

  /** A model by name and version (the latest when no version is given); 404 when unknown. */
  async model (name: string, version?: string): Promise<ResolvedModel> {
    const versions = (await this.list()).get(name)
    if (versions === undefined) throw new HttpError(404, `unknown model "${name}"`)
    const m = versions.get(version ?? latestVersion(versions.keys())!)
    if (m === undefined) throw new HttpError(404, `model "${name}" has no version "${version}" (it has ${[...versions.keys()].join(', ')})`)
    return m
  }

  /** Every stage has an eligible vehicle. */
  ready (m: ResolvedModel): boolean {
    return m.manifest.stages.every(s => this.client.directory.holders(m.cid, s.index).length > 0)
  }
}
