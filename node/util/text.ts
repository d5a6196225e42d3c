/** Short forms for people: the last 6 characters of a peer id; bytes as MB. */
export function shortPeer (peer: string): string { return peer.slice(-6) }

export function mb (bytes: number): string { return `${(bytes / 1e6).toFixed(bytes < 1e5 ? 3 : 1)} MB` }

/** `n` and the noun, singular for one: "1 stage", "3 stages". */
export function count (n: number, noun: string): string { return `${n} ${noun}${n === 1 ? '' : 's'}` }
