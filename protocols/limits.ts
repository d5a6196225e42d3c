/**
 * Size limits and deadlines of the wire protocols. Every decoder enforces these.
 */
export const KiB = 1024
export const MiB = 1024 * KiB
export const second = 1000

/** Largest infer frame (header + all tensors). */
export const MAX_INFER_FRAME_BYTES = 64 * MiB
/** Largest JSON header inside a frame. */
export const MAX_HEADER_BYTES = 64 * KiB
/** Most tensors one frame may carry. */
export const MAX_TENSORS = 64
/** Highest tensor rank accepted. */
export const MAX_RANK = 8
/** Longest tensor name (UTF-8 bytes). */
export const MAX_NAME_BYTES = 256
/** Most hops a route may list. */
export const MAX_ROUTE_HOPS = 32

/** Shard transfer: request size, chunk size, largest shard served. */
export const MAX_SHARD_REQUEST_BYTES = 1 * KiB
export const SHARD_CHUNK_BYTES = 1 * MiB
export const MAX_SHARD_BYTES = 512 * MiB

/** Capacity heartbeat: largest message accepted on the topic. */
export const MAX_HEARTBEAT_BYTES = 16 * KiB

/** Deadlines. */
export const INFER_HOP_TIMEOUT_MS = 30 * second
export const SHARD_READ_TIMEOUT_MS = 20 * second
