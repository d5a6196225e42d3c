/** Resolves with `p`, or rejects with the signal's reason as soon as `signal` aborts (`p` may go on unheard). */
export async function step<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort = (): void => {}
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      onAbort = () => { reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** `signal` and a timeout of `ms`, whichever comes first. */
export function within (ms: number, signal?: AbortSignal): AbortSignal {
  return AbortSignal.any([AbortSignal.timeout(ms), ...(signal !== undefined ? [signal] : [])])
}

/**
 * Like `within`, for a step that ends long before its timeout: `clear()`
 * once the step is over drops the timer and the listener on `signal`. An
 * AbortSignal.timeout left to fire costs its thread tens of microseconds
 * then (an abort event, a DOMException), and a hop takes several a job.
 * The signal aborts as AbortSignal.timeout's does, with a TimeoutError.
 */
export function deadline (ms: number, signal?: AbortSignal): { signal: AbortSignal, clear: () => void } {
  const ac = new AbortController()
  const onAbort = (): void => { ac.abort(signal?.reason) }
  const timer = setTimeout(() => { ac.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')) }, ms)
  timer.unref()
  if (signal?.aborted === true) onAbort()
  else signal?.addEventListener('abort', onAbort, { once: true })
  return { signal: ac.signal, clear: () => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort) } }
}
