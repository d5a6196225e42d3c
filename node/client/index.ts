/**
 * @packageDocumentation
 *
 * The fleetmesh TypeScript client: join a fleet as an ordinary peer, list the
 * models it serves, run jobs through the mesh (pipelined across vehicles) and
 * batches with progress. Node 22 runs this file from source (type stripping).
 *
 * @example
 * ```ts
 * import { createClient, imageInput, loadCredentials } from 'fleetmesh'
 *
 * const fleet = await createClient({ bootstrap: ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...'], credentials: await loadCredentials('client.json') })
 * await fleet.joined() // a bootstrap peer let it in (else a FleetJoinError says why)
 * console.log(await fleet.models())
 * const r = await fleet.infer('pp-ocrv4-rec', [imageInput('pp-ocrv4-rec', 'samples/text-lines/01.png')], { signal: AbortSignal.timeout(10_000) })
 * console.log(r.route, r.outputs[0].dims)
 * await fleet.close()
 * ```
 */
import { FleetClient } from './client.ts'
import type { ClientInit } from './client.ts'
import { BUILTIN_MODELS } from '../models/catalog.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export { FleetClient } from './client.ts'
export type { ClientInit, ModelInfo } from './client.ts'
export { InferenceError } from './pipeline.ts'
export type { InferOptions, InferResult } from './pipeline.ts'
export { ModelNotFoundError } from './resolver.ts'
export { FleetJoinError } from './join-check.ts'
export type { ResolvedModel } from './resolver.ts'
export { BatchRunner } from './batch.ts'
export type { BatchOptions, BatchProgress, BatchResult, ItemEvent } from './batch.ts'
export { Gateway } from '../gateway/server.ts'
export type { GatewayInit } from '../gateway/server.ts'
export { textOf } from './inputs.ts'
export { float32Tensor, asFloat32 } from '../../protocols/tensor.ts'
export type { Tensor, DType } from '../../protocols/tensor.ts'
export { tensorFromOip, tensorToOip } from '../../protocols/oip.ts'
export { loadCredentials } from '../membership/credentials.ts'
export type { Credentials } from '../membership/credentials.ts'

/** Joins the fleet through its bootstrap peers and returns a ready client. */
export async function createClient (init: ClientInit): Promise<FleetClient> {
  return await FleetClient.connect(init)
}

/** The input tensor a built-in image model (e.g. `pp-ocrv4-rec`) expects for a PNG file. */
export function imageInput (model: string, pngPath: string): Tensor {
  const m = BUILTIN_MODELS[model]
  if (m?.fromImage === undefined) throw new TypeError(`model ${model} is not a built-in image model (${Object.keys(BUILTIN_MODELS).join(', ')})`)
  return m.fromImage(pngPath)
}
