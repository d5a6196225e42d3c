/**
 * Size limits and deadlines of the wire protocols. Every decoder enforces these.
 */
export const KiB = 1024
export const MiB = 1024 * KiB
export const second = 1000
export const minute = 60 * second

/** Largest infer frame payload (all tensors of one frame). */
export const MAX_INFER_FRAME_BYTES = 64 * MiB
/** Largest infer frame header (protobuf). */
export const MAX_HEADER_BYTES = 64 * KiB
/** Most tensors one frame may carry. */
export const MAX_TENSORS = 64
/** Highest tensor rank accepted. */
export const MAX_RANK = 8
/** Longest tensor name (UTF-8 bytes). */
export const MAX_NAME_BYTES = 256
/** Most hops a route may list. */
export const MAX_ROUTE_HOPS = 32
/** Longest peer id string (base58 or CIDv1 text of an identity multihash). */
export const MAX_PEER_ID_CHARS = 128

/** A signed hop receipt (envelope included). */
export const MAX_RECEIPT_BYTES = 1 * KiB

/** Shard transfer: request and response size, chunk size, largest shard served. */
export const MAX_SHARD_MESSAGE_BYTES = 1 * KiB
export const SHARD_CHUNK_BYTES = 1 * MiB
export const MAX_SHARD_BYTES = 512 * MiB

/** A member certificate, grant or revocation entry (envelope included). */
export const MAX_CREDENTIAL_BYTES = 4 * KiB

/** Capacity heartbeat: largest message accepted on the topic. */
export const MAX_HEARTBEAT_BYTES = 16 * KiB
/** Signed capacity record in the DHT (envelope included). */
export const MAX_CAPACITY_RECORD_BYTES = 16 * KiB
/** A capacity record lives at most this long after it was issued (refreshed at half of it, and on change). */
export const MAX_CAPACITY_RECORD_TTL_MS = 24 * 60 * minute
/** Clock skew tolerated when checking expiries. */
export const CLOCK_SKEW_MS = 5 * second

/** Jobs topic messages and model name records. */
export const MAX_ANNOUNCEMENT_BYTES = 16 * KiB
export const MAX_MODEL_RECORD_BYTES = 16 * KiB
/** Announcements further in the future than this are refused. */
export const MAX_JOB_LIFETIME_MS = 24 * 60 * minute

/** Offer protocol messages. */
export const MAX_OFFER_MESSAGE_BYTES = 16 * KiB

/** Hole punching: largest message, most addresses one side may name. */
export const MAX_PUNCH_MESSAGE_BYTES = 512
export const MAX_PUNCH_ADDRS = 4

/** Deadlines. */
export const INFER_HOP_TIMEOUT_MS = 30 * second
/** A kept infer stream (INFER_REUSE_PROTOCOL) waits this long for its next request, then closes; callers keep theirs 10 s. */
export const INFER_IDLE_MS = 30 * second
export const SHARD_READ_TIMEOUT_MS = 20 * second
export const OFFER_READ_TIMEOUT_MS = 10 * second
