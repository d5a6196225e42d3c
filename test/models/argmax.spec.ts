/**
 * rowMaxima (node/models/argmax.ts), the SIMD scan greedy CTC decoding runs
 * on: the same index and value as a plain loop with `>` on random rows of
 * any length, with NaN, ties, -Infinity and -0, across calls, misaligned,
 * and for rows too long for the module's memory.
 */
import assert from 'node:assert/strict'
import { rowMaxima } from '../../node/models/argmax.ts'

/** The plain loop ctcDecodeRow ran before. */
function plain (x: Float32Array, rows: number, columns: number): { index: number[], value: number[] } {
  const index: number[] = []; const value: number[] = []
  for (let r = 0; r < rows; r++) {
    let best = 0; let bv = -Infinity
    for (let c = 0; c < columns; c++) { const v = x[r * columns + c]; if (v > bv) { bv = v; best = c } }
    index.push(best); value.push(bv)
  }
  return { index, value }
}

function check (x: Float32Array, rows: number, columns: number, what: string, offset = 0): void {
  const bytes = new Uint8Array(x.byteLength + offset).subarray(offset)
  bytes.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))
  const got = rowMaxima(bytes, rows, columns)
  const want = plain(x, rows, columns)
  for (let r = 0; r < rows; r++) {
    assert.equal(got.index[r], want.index[r], `${what}: row ${r} index`)
    assert.ok(Object.is(got.value[r], Math.fround(want.value[r])), `${what}: row ${r} value ${got.value[r]} against ${want.value[r]}`)
  }
}

describe('row maxima for CTC decoding (WebAssembly SIMD)', () => {
  it('agrees with a plain loop on random rows of any length, misaligned too', () => {
    for (const columns of [1, 3, 4, 5, 7, 8, 6625]) {
      const rows = 13
      const x = new Float32Array(rows * columns).map(() => Math.random() * 20 - 10)
      check(x, rows, columns, `${columns} columns`)
      check(x, rows, columns, `${columns} columns, misaligned`, 1)
    }
  })

  it('takes the first of equal maxima, never NaN, index 0 when nothing beats -Infinity; -0 and 0 are equal', () => {
    const columns = 9
    const rows = [
      [1, 5, 2, 5, 0, 5, 1, 1, 5], // ties: the first
      [NaN, 1, NaN, 3, NaN, 2, NaN, 3, NaN], // NaN skipped
      [NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN], // nothing: 0
      [-Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity],
      [-1, -2, -0, -3, 0, -4, -5, -6, -0], // -0 first
      [1, 1, 1, 1, 1, 1, 1, 1, 9] // in the tail past the last group of four
    ]
    check(new Float32Array(rows.flat()), rows.length, columns, 'edge rows')
  })

  it('rows over several calls, and rows too long for the module\'s memory', () => {
    // 100 rows of 6,625: 2.6 MB, two calls of 1.5 MiB at most
    const many = new Float32Array(100 * 6625).map(() => Math.random())
    check(many, 100, 6625, '100 rows')
    // 400,000 columns: 1.6 MB a row, scanned in JavaScript
    const long = new Float32Array(2 * 400_000).map(() => Math.random())
    long[123_456] = 2
    check(long, 2, 400_000, 'rows of 400,000')
  })
})
