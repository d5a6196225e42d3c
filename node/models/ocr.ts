/**
 * PP-OCR text recognition helpers: image -> input tensor, logits -> text.
 *
 * Preprocessing follows PaddleOCR's `rec_image_shape = 3,48,320`: resize to
 * height 48 keeping the aspect ratio (width capped at 320), scale to [-1, 1],
 * pad the right with zeros. Decoding is greedy CTC over `ppocr_keys_v1.txt`
 * with index 0 the blank and the last index a space (`use_space_char`).
 */
import { readFileSync } from 'node:fs'
import { PNG } from 'pngjs'
import type { Tensor } from '../../protocols/tensor.ts'
import { rowMaxima } from './argmax.ts'

export const REC_HEIGHT = 48
export const REC_WIDTH = 320

export interface GrayImage { width: number, height: number, data: Float32Array /* 0..255 */ }

/** Reads a PNG file into grey levels (0..255). */
export function readPng (path: string): GrayImage {
  const png = PNG.sync.read(readFileSync(path))
  const data = new Float32Array(png.width * png.height)
  for (let i = 0; i < data.length; i++) {
    const r = png.data[i * 4]; const g = png.data[i * 4 + 1]; const b = png.data[i * 4 + 2]; const a = png.data[i * 4 + 3] / 255
    // composite on white, then luma
    data[i] = (0.299 * r + 0.587 * g + 0.114 * b) * a + 255 * (1 - a)
  }
  return { width: png.width, height: png.height, data }
}

/** Bilinear resize + normalisation into a float32 [1, 3, 48, 320] tensor named `inputName`. */
export function recInputFromImage (img: GrayImage, inputName = 'x'): Tensor {
  const outW = Math.min(REC_WIDTH, Math.max(1, Math.ceil(REC_HEIGHT * img.width / img.height)))
  const plane = REC_HEIGHT * REC_WIDTH
  const out = new Float32Array(3 * plane)
  const sx = img.width / outW; const sy = img.height / REC_HEIGHT
  for (let y = 0; y < REC_HEIGHT; y++) {
    const fy = Math.min(img.height - 1, Math.max(0, (y + 0.5) * sy - 0.5))
    const y0 = Math.floor(fy); const y1 = Math.min(img.height - 1, y0 + 1); const wy = fy - y0
    for (let x = 0; x < outW; x++) {
      const fx = Math.min(img.width - 1, Math.max(0, (x + 0.5) * sx - 0.5))
      const x0 = Math.floor(fx); const x1 = Math.min(img.width - 1, x0 + 1); const wx = fx - x0
      const d = img.data
      const v = (d[y0 * img.width + x0] * (1 - wx) + d[y0 * img.width + x1] * wx) * (1 - wy) +
        (d[y1 * img.width + x0] * (1 - wx) + d[y1 * img.width + x1] * wx) * wy
      const n = (v / 255 - 0.5) / 0.5
      const i = y * REC_WIDTH + x
      out[i] = n; out[plane + i] = n; out[2 * plane + i] = n
    }
  }
  return { name: inputName, dtype: 'float32', dims: [1, 3, REC_HEIGHT, REC_WIDTH], data: new Uint8Array(out.buffer) }
}

/** Loads the CTC dictionary: blank first, then one entry per line, then a space. */
export function loadDictionary (path: string): string[] {
  const keys = readFileSync(path, 'utf8').split('\n').map(l => l.replace(/\r$/, ''))
  if (keys.at(-1) === '') keys.pop()
  return ['', ...keys, ' ']
}

export interface CtcResult { text: string, confidence: number }

/** Greedy CTC decode of the first batch row of f32[N, T, C] probabilities. */
export function ctcDecode (probs: Tensor, dict: string[]): CtcResult { return ctcDecodeRow(probs, dict, 0) }

/** Greedy CTC decode of batch row `row` of f32[N, T, C] probabilities. */
export function ctcDecodeRow (probs: Tensor, dict: string[], row: number): CtcResult {
  if (probs.dtype !== 'float32' || probs.dims.length !== 3) {
    throw new TypeError(`expected float32 [N, T, C] probabilities, got ${probs.dtype} [${probs.dims.join(', ')}]`)
  }
  const [N, T, C] = probs.dims
  if (C !== dict.length) throw new TypeError(`model has ${C} classes but the dictionary has ${dict.length}`)
  if (row < 0 || row >= N) throw new RangeError(`row ${row} of ${N}`)
  const { index, value } = rowMaxima(probs.data.subarray(row * T * C * 4, (row + 1) * T * C * 4), T, C)
  let text = ''; let prev = -1; let conf = 0; let n = 0
  for (let t = 0; t < T; t++) {
    const best = index[t]
    if (best !== 0 && best !== prev) { text += dict[best]; conf += value[t]; n++ }
    prev = best
  }
  return { text: text.trim(), confidence: n > 0 ? conf / n : 0 }
}

export const DET_HEIGHT = 96
export const DET_WIDTH = 384
const DET_MEAN = [0.485, 0.456, 0.406]
const DET_STD = [0.229, 0.224, 0.225]

/**
 * PP-OCR detection input: the image scaled (down only) into a fixed
 * 96x384 canvas, top-left, ImageNet-normalised, float32 [1, 3, 96, 384].
 */
export function detInputFromImage (img: GrayImage, inputName = 'x'): Tensor {
  const scale = Math.min(1, DET_HEIGHT / img.height, DET_WIDTH / img.width)
  const w = Math.max(1, Math.round(img.width * scale)); const h = Math.max(1, Math.round(img.height * scale))
  const plane = DET_HEIGHT * DET_WIDTH
  const out = new Float32Array(3 * plane)
  for (let c = 0; c < 3; c++) out.fill((1 - DET_MEAN[c]) / DET_STD[c], c * plane, (c + 1) * plane) // white
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = img.data[Math.min(img.height - 1, Math.floor(y / scale)) * img.width + Math.min(img.width - 1, Math.floor(x / scale))] / 255
      for (let c = 0; c < 3; c++) out[c * plane + y * DET_WIDTH + x] = (v - DET_MEAN[c]) / DET_STD[c]
    }
  }
  return { name: inputName, dtype: 'float32', dims: [1, 3, DET_HEIGHT, DET_WIDTH], data: new Uint8Array(out.buffer) }
}
