/**
 * SharedArrayBuffers for tensors a stage's worker thread reads in place
 * (tensorsFromPayload's `shared`), kept for reuse once a run is done with
 * them. A new SharedArrayBuffer is memory fresh from the kernel: a 0.9 MB
 * hand-off copied into one took 0.82-0.87 ms here, into one used before
 * 0.26 (page faults, the kernel zeroing it, unmapping it when collected).
 *
 * Only whoever took a buffer gives it back, and only once nothing reads it
 * any more; a buffer taken again is overwritten whole before it is read.
 * What is kept is bounded (MAX_KEPT buffers, MAX_KEPT_BYTES), whatever sizes
 * peers send: the oldest goes first.
 */
export const MAX_KEPT = 8
export const MAX_KEPT_BYTES = 32 * 1024 * 1024

/** Buffers given back, the latest last. */
const kept: SharedArrayBuffer[] = []
let keptBytes = 0

/** A SharedArrayBuffer of `bytes`: one given back before when there is one of that size, else a new one. */
export function takeShared (bytes: number): SharedArrayBuffer {
  for (let i = kept.length - 1; i >= 0; i--) {
    if (kept[i].byteLength !== bytes) continue
    const [b] = kept.splice(i, 1)
    keptBytes -= bytes
    return b
  }
  return new SharedArrayBuffer(bytes)
}

/** Gives back a buffer taken with takeShared that nothing reads any more. */
export function giveBackShared (b: SharedArrayBuffer): void {
  if (b.byteLength === 0 || b.byteLength > MAX_KEPT_BYTES || kept.includes(b)) return
  kept.push(b)
  keptBytes += b.byteLength
  while (kept.length > MAX_KEPT || keptBytes > MAX_KEPT_BYTES) keptBytes -= kept.shift()!.byteLength
}

/**
 * After a run: gives back the shared buffers its inputs own whole, except
 * those an output passes on (a stage may hand an input on as it is).
 */
export function giveBackInputs (inputs: Array<{ data: Uint8Array }>, outputs: Array<{ data: Uint8Array }>): void {
  const passed = new Set<ArrayBufferLike>(outputs.map(t => t.data.buffer))
  for (const { data } of inputs) {
    const b = data.buffer
    if (b instanceof SharedArrayBuffer && !passed.has(b) && data.byteOffset === 0 && data.byteLength === b.byteLength) giveBackShared(b)
  }
}

/** Forgets every kept buffer (their memory goes back once collected). */
export function dropKept (): void {
  kept.length = 0
  keptBytes = 0
}

/** What is kept for reuse: buffers and bytes. */
export function sharedKept (): { buffers: number, bytes: number } { return { buffers: kept.length, bytes: keptBytes } }
