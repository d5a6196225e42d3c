/**
 * Turning files into a model's input tensors and outputs into something to
 * show: images for built-in image models, OIP JSON tensor files for any
 * model; CTC text for models whose manifest says so.
 */
import { constants } from 'node:fs'
import { access, readFile, stat } from 'node:fs/promises'
import { BUILTIN_MODELS } from '../models/catalog.ts'
import type { Manifest } from '../models/manifest.ts'
import { ctcDecode } from '../models/ocr.ts'
import { dictionaryOf, textsOf, textsOfTopK } from '../models/output-modes.ts'
import { tensorFromOip } from '../../protocols/oip.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export class InputError extends Error {
  readonly name = 'InputError'
  readonly code = 'ERR_BAD_INPUT'
}

/** An InputError naming the file when it cannot be read (missing, a directory, no permission). */
async function readable (path: string): Promise<void> {
  try { await access(path, constants.R_OK) } catch (err) { throw new InputError(`${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`) }
  if ((await stat(path)).isDirectory()) throw new InputError(`${path}: is a directory (--batch takes a directory)`)
}

export async function inputsFromFile (manifest: Manifest, path: string): Promise<Tensor[]> {
  if (/\.png$/i.test(path)) {
    const fromImage = BUILTIN_MODELS[manifest.name]?.fromImage
    if (fromImage === undefined) throw new InputError(`model ${manifest.name} takes no images; pass a tensor file (.json, Open Inference Protocol tensors)`)
    await readable(path)
    let t: Tensor
    try { t = fromImage(path) } catch (err) { throw new InputError(`${path}: not a PNG image it can read (${(err as Error).message})`) }
    return [{ ...t, name: manifest.inputs[0].name }]
  }
  if (/\.json$/i.test(path)) {
    await readable(path)
    let doc: any
    try { doc = JSON.parse(await readFile(path, 'utf8')) } catch (err) {
      throw new InputError(`${path}: not JSON (${(err as Error).message})`)
    }
    const list = Array.isArray(doc?.inputs) ? doc.inputs : [doc]
    try {
      return list.map((t: unknown, i: number) => tensorFromOip(t, `inputs[${i}]`))
    } catch (err) {
      throw new InputError(`${path}: ${(err as Error).message.replace(/^malformed frame: /, 'invalid tensor: ')}`)
    }
  }
  throw new InputError(`${path}: use a .png image or a .json tensor file`)
}

/** Decoded text when the model's task is CTC text (raw probabilities, or text reduced by output mode text), else undefined. */
export function textOf (manifest: Manifest, outputs: Tensor[]): { text: string, confidence: number } | undefined {
  if (manifest.task?.kind !== 'ctc-text') return undefined
  const reduced = textsOf(outputs) ?? textsOfTopK(outputs, dictionaryOf(manifest))
  if (reduced !== undefined) return reduced[0]
  const raw = outputs.find(t => t.name === manifest.outputs[0]?.name)
  return raw !== undefined ? ctcDecode(raw, dictionaryOf(manifest)) : undefined
}
