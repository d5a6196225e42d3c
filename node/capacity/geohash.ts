/**
 * Geohash cells and their neighbours, for nearest-cell discovery: a car
 * parked in cell `u33db` has eight neighbours of the same size around it
 * (`u33d8`, `u33dc`, ...), and a client that routes near `u33db` listens to
 * all nine (README, "A million cars"). Cell names that are not geohashes (a
 * depot, a region) have no neighbours.
 */
const BASE32 = '0123456789bcdefghjkmnpqrstuvwxyz'
const GEOHASH_RE = /^[0123456789bcdefghjkmnpqrstuvwxyz]{1,12}$/

/** Whether a cell name is a geohash (1 to 12 of its 32 letters: no a, i, l or o). */
export function isGeohash (cell: string): boolean { return GEOHASH_RE.test(cell) }

interface Box { lat: [number, number], lon: [number, number] }

function decode (hash: string): Box {
  const box: Box = { lat: [-90, 90], lon: [-180, 180] }
  let even = true
  for (const ch of hash) {
    const bits = BASE32.indexOf(ch)
    for (let b = 4; b >= 0; b--) {
      const range = even ? box.lon : box.lat
      const mid = (range[0] + range[1]) / 2
      if (((bits >> b) & 1) === 1) range[0] = mid; else range[1] = mid
      even = !even
    }
  }
  return box
}

/** The geohash of a point, `precision` letters long. */
export function encodeGeohash (lat: number, lon: number, precision: number): string {
  const lat_: [number, number] = [-90, 90]
  const lon_: [number, number] = [-180, 180]
  let out = ''
  let even = true
  let bits = 0
  let n = 0
  while (out.length < precision) {
    const range = even ? lon_ : lat_
    const v = even ? lon : lat
    const mid = (range[0] + range[1]) / 2
    bits <<= 1
    if (v >= mid) { bits |= 1; range[0] = mid } else range[1] = mid
    even = !even
    if (++n === 5) { out += BASE32[bits]; bits = 0; n = 0 }
  }
  return out
}

/**
 * The cell itself, then its neighbours of the same size, nearest first (the
 * four sharing an edge, then the four sharing a corner); across the
 * antimeridian, not past a pole. A name that is not a geohash: just itself.
 */
export function nearbyCells (cell: string): string[] {
  if (!isGeohash(cell)) return [cell]
  const box = decode(cell)
  const h = box.lat[1] - box.lat[0]
  const w = box.lon[1] - box.lon[0]
  const lat = (box.lat[0] + box.lat[1]) / 2
  const lon = (box.lon[0] + box.lon[1]) / 2
  const out = [cell]
  for (const [dy, dx] of [[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, 1], [-1, -1], [1, -1]]) {
    const y = lat + dy * h
    if (y > 90 || y < -90) continue
    const x = ((lon + dx * w + 540) % 360) - 180
    const n = encodeGeohash(y, x, cell.length)
    if (!out.includes(n)) out.push(n)
  }
  return out
}

/** The cells a client near geohash cell `near` listens to, nearest first; a TypeError naming the problem if it is not a geohash. */
export function cellsNear (near: string): string[] {
  if (!isGeohash(near)) throw new TypeError(`"${near}" is not a geohash (1-12 of 0-9 and b-z without a, i, l, o), e.g. u33db`)
  return nearbyCells(near)
}
