/**
 * Typed errors for everything that crosses the wire. Each sets `name` and a
 * stable `code` so callers can branch, and names the offending field.
 */

/** A frame or message could not be decoded; `field` names what was wrong. */
export class MalformedFrameError extends Error {
  static readonly code = 'ERR_MALFORMED_FRAME'
  readonly name = 'MalformedFrameError'
  readonly code = MalformedFrameError.code
  readonly field: string
  constructor (field: string, problem: string) {
    super(`malformed frame: ${field}: ${problem}`)
    this.field = field
  }
}

/** A frame, or a part of it, is larger than the protocol allows. */
export class FrameTooLargeError extends Error {
  static readonly code = 'ERR_FRAME_TOO_LARGE'
  readonly name = 'FrameTooLargeError'
  readonly code = FrameTooLargeError.code
  readonly field: string
  readonly size: number
  readonly limit: number
  constructor (field: string, size: number, limit: number) {
    super(`frame too large: ${field} is ${size} bytes, limit ${limit}`)
    this.field = field
    this.size = size
    this.limit = limit
  }
}

/** A frame would take more memory than the sender may hold on this node now. */
export class OverBudgetError extends Error {
  static readonly code = 'ERR_OVER_BUDGET'
  readonly name = 'OverBudgetError'
  readonly code = OverBudgetError.code
  readonly size: number
  constructor (size: number) {
    super(`a frame of ${size} bytes is over the sender's memory budget here`)
    this.size = size
  }
}

/** Content did not hash to the CID it was asked for. */
export class HashMismatchError extends Error {
  static readonly code = 'ERR_HASH_MISMATCH'
  readonly name = 'HashMismatchError'
  readonly code = HashMismatchError.code
  readonly expected: string
  readonly actual: string
  constructor (expected: string, actual: string) {
    super(`content hash mismatch: expected ${expected}, got ${actual}`)
    this.expected = expected
    this.actual = actual
  }
}

/** The peer answered with an error message (remote side's code and text). */
export class RemoteError extends Error {
  readonly name = 'RemoteError'
  readonly code: string
  readonly peer?: string
  constructor (code: string, message: string, peer?: string) {
    super(message)
    this.code = code
    this.peer = peer
  }
}
