/**
 * Until a libp2p stream has room to write again: its 'drain' event, as the
 * mesh's frames wait for room (protocols/framing.ts, through byteStream);
 * rejects if the stream closes first. Not `stream.onDrain()`: @libp2p/utils
 * 7.4.1 keeps the promise of a stream's first drain, so after it a writer that
 * awaits it never waits again (eslint.config.js forbids it).
 */
export async function drained (stream: EventTarget): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const off = (): void => { stream.removeEventListener('drain', onDrain); stream.removeEventListener('close', onClose) }
    const onDrain = (): void => { off(); resolve() }
    const onClose = (): void => { off(); reject(new Error('the stream closed while waiting for room to write')) }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
  })
}
