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

/** How long a request for a model name not heard waits for the DHT. */
const DHT_LOOKUP_MS = 5000

export class Repository {
  private readonly client: FleetClient
  /** Models unloaded on this gateway (Triton's model_repository unload): known, but not served here. */
  private readonly unloaded = new Set<string>()

  constructor (client: FleetClient) { this.client = client }

  /** Serves `name` here again (Triton's load); 404 when no publisher of the fleet named it. */
  async load (name: string): Promise<void> {
    if (await this.versionsOf(name) === undefined) throw new HttpError(404, `no model "${name}" is published in this fleet (publish it with \`fleetmesh publish\`)`)
    this.unloaded.delete(name)
  }

  /** Stops serving `name` here (Triton's unload); the fleet keeps it. 404 when unknown. */
  async unload (name: string): Promise<void> {
    if (await this.versionsOf(name) === undefined) throw new HttpError(404, `unknown model "${name}"`)
    this.unloaded.add(name)
  }

  isUnloaded (name: string): boolean { return this.unloaded.has(name) }

  /** A model this gateway serves (not unloaded), by name and version; 404 when unknown, 400 when unloaded (as Triton). */
  async served (name: string, version?: string): Promise<ResolvedModel> {
    if (this.unloaded.has(name)) throw new HttpError(400, `model "${name}" is unloaded on this gateway (POST /v2/repository/models/${name}/load serves it again)`)
    return await this.model(name, version)
  }

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

  /**
   * A model by name and version (the latest when no version is given); 404
   * when unknown. A name not heard from its publisher (gone since) is looked
   * up in the DHT, where the publisher's signed record keeps it.
   */
  async model (name: string, version?: string): Promise<ResolvedModel> {
    const versions = await this.versionsOf(name, version)
    if (versions === undefined) throw new HttpError(404, `unknown model "${name}"`)
    const m = versions.get(version ?? latestVersion(versions.keys())!)
    if (m === undefined) throw new HttpError(404, `model "${name}" has no version "${version}" (it has ${[...versions.keys()].join(', ')})`)
    return m
  }

  /** The versions of `name` known here, or else named by a record in the DHT (then known here too). */
  private async versionsOf (name: string, version?: string): Promise<Map<string, ResolvedModel> | undefined> {
    const versions = (await this.list()).get(name)
    if (versions !== undefined && (version === undefined || versions.has(version))) return versions
    if (await this.client.resolver.namedInDht(name, { signal: AbortSignal.timeout(DHT_LOOKUP_MS) }) === undefined) return versions
    return (await this.list()).get(name)
  }

  /** Every stage has an eligible vehicle. */
  ready (m: ResolvedModel): boolean {
    return m.manifest.stages.every(s => this.client.directory.holders(m.cid, s.index).length > 0)
  }
}
