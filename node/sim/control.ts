/**
 * What the control plane costs one car, in bytes, for `fleetmesh sim`.
 * Message sizes come from the real encoders (a heartbeat as a vehicle sends
 * it, a signed capacity record); cadences from the real defaults (keep-alive,
 * record lifetime, connection pings); the rest are measured constants of
 * this implementation, named here (README, "A million cars"):
 *
 * - gossip: a heartbeat goes to the car's cell only; each car hears each
 *   message of its cell about COPIES times, and forwards about as much as it
 *   hears; it offers each message's id to a few peers (IHAVE_BYTES_PER_ID);
 * - connections: a car holds one to most peers it ever talked to (its cell,
 *   DHT contacts, a bootstrap peer, clients), up to its cap; each costs
 *   CONNECTION_UPKEEP_BYTES_PER_S each way (pings, stream set-up, framing);
 * - DHT: a walk queries walkQueries(N) peers (measured), each answer about
 *   20 peers of DHT_PEER_BYTES, and opens a connection (CONNECTION_SETUP_BYTES)
 *   to each peer it is not connected to; a put stores on 20 peers; a car
 *   looks itself up every SELF_QUERY_MS and refreshes its routing table by a
 *   walk per bucket every TABLE_REFRESH_MS; it answers as many queries as it
 *   asks.
 */
import { encodeHeartbeat, keepAliveOf, sealCapacityRecord } from '../../protocols/capacity.ts'
import type { Heartbeat } from '../../protocols/capacity.ts'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { DEFAULT_KEEPALIVE_MS } from '../capacity/directory.ts'
import { DEFAULT_RECORD_TTL_MS, FULL_EVERY, HEARTBEAT_LINKS } from '../capacity/advertiser.ts'
import { SELF_QUERY_MS, TABLE_REFRESH_MS, VEHICLE_MAX_CONNECTIONS } from '../network.ts'
import { FLEET_GOSSIP } from '../membership/scoring.ts'

/** gossipsub framing, signature, sender, sequence number, topic; yamux and Noise framing (measured: ~150 + 30 B). */
export const GOSSIP_OVERHEAD_BYTES = 180
/**
 * Copies of each cell message a car receives, at the fleet's gossip mesh
 * degree (FLEET_GOSSIP, D 3): 2.7 in a swarm of 20 processes, 2.1 in
 * one process of 20 (counted with a hook on gossipsub's sendRpc).
 */
export const COPIES = 2.7
/**
 * Bytes of gossip (IHAVE) per message id offered, framing included: 95 B/s
 * for 1.5 ids/s per car in an idle 20-car cell (counted by a hook on
 * gossipsub's sendRpc).
 */
export const IHAVE_BYTES_PER_ID = 63
/** One peer in a DHT answer: its id and a public and a relayed address (48 B with one loopback address, bench/dht-walk.ts). */
export const DHT_PEER_BYTES = 100
/** A DHT query's request, framing included. */
export const DHT_QUERY_BYTES = 120
/**
 * Bytes each end sends to open a connection: Noise, multistream, identify
 * (1,812 / 1,761 B in an open fleet, 20 dials counted by libp2p's
 * libp2p_data_transfer_bytes_total) and the membership proof (a certificate
 * chain each way, about 600 B).
 */
export const CONNECTION_SETUP_BYTES = 2400
/** Peers a DHT answer carries (K; all the others in a smaller fleet). */
export const DHT_ANSWER_PEERS = 20
/**
 * Peers one DHT walk queries (a put, a provide, a self-query and a table
 * refresh each start with one): at least K, and about one more per doubling
 * of the fleet. Counted by bench/dht-walk.ts (real fleetmesh hosts on
 * loopback, the fan-out node/network.ts sets, DHT_WALK): 20.1 at 25 hosts,
 * 21.6 at 50, 22.7 at 200; WALK_QUERIES_FIT is that line.
 */
export function walkQueries (n: number): number {
  return Math.min(Math.max(1, n - 1), Math.max(DHT_ANSWER_PEERS, WALK_QUERIES_FIT.base + WALK_QUERIES_FIT.perDoubling * Math.log2(Math.max(1, n / 100))))
}
/** walkQueries's fit: queries at 100 peers, and more per doubling of the fleet. */
export const WALK_QUERIES_FIT = { base: 22.2, perDoubling: 0.9 }
/**
 * What one idle connection costs each way beyond gossip and the DHT: the
 * connection monitor's ping every CONNECTION_PING_MS, yamux's keep-alive,
 * stream set-up and framing. Measured in an idle 20-car swarm
 * (`fleetmesh swarm --nodes 20 --idle-s 480`, libp2p's
 * libp2p_data_transfer_bytes_total read by each vehicle over 460 s): 516 /
 * 507 B/s in / out per car at the connection, of which gossip 392 / 382 and
 * the DHT none, over 25.2 connections: 4.9 / 4.9 B/s each. (With a ping a
 * minute and the link meter pinging every 20 s it was 16.)
 */
export const CONNECTION_UPKEEP_BYTES_PER_S = 5
/** Connections per peer a car talks to: two that dial each other at once keep both (25.1 for 21 peers in that swarm). */
export const CONNECTIONS_PER_PEER = 1.2

export interface ControlModel {
  /** A full heartbeat on the wire (a change, a join answer, every FULL_EVERY-th keep-alive). */
  heartbeatBytes: number
  /** A keep-alive on average: one full in FULL_EVERY, the rest short (Heartbeat.refreshes). */
  keepAliveBytes: number
  recordBytes: number
  keepAliveS: number
  recordRefreshS: number
  /** Connections a car holds (its cell, DHT contacts, a bootstrap peer, clients), up to its cap. */
  connections: number
}

/**
 * Sizes from the real encoders: a vehicle's heartbeat (one stage, one
 * relayed address, its vehicle state, its links to as many cell members as
 * a heartbeat carries, its certificate) and its signed record. `connections`:
 * the other cars of a fleet of `vehicles` (a car's DHT walks reach most of a
 * small fleet), a bootstrap peer and a client, at most the vehicle's cap.
 */
export async function realModel (cellSize: number, vehicles: number): Promise<ControlModel> {
  const connections = Math.min(VEHICLE_MAX_CONNECTIONS, Math.round((vehicles - 1 + 2) * CONNECTIONS_PER_PEER))
  const key = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(3))
  const cert = new Uint8Array(255).fill(1)
  const hb: Heartbeat = {
    ts: Date.now(),
    seq: 100,
    eligible: true,
    load: 0,
    slots: 4,
    expiresAt: Date.now() + DEFAULT_RECORD_TTL_MS,
    stages: [{ manifest: 'bafkreiagd36avlmaiyjfcmxsxpifeyr54seteqpmn5sv3r4zu4sjsosxfy', stage: 1, cid: 'bafkreieeytz3guc4wi2gt5v7wsrpbc435v46dr4v4pjeooa4m6g5ozo76y', msPerItem: 7.5 }],
    addrs: ['/ip4/45.0.0.1/tcp/4001/p2p/12D3KooWJ9zrzMJTDRcprbm1C6yGaJXJozAvCXfFcDNnmVDfnsG7/p2p-circuit'],
    vehicle: { source: 'teslamate', parked: true, pluggedIn: true, socPct: 81, chargerKw: 11, computeTempC: 41, nextDepartureAt: Date.now() + 8 * 3_600_000, ownerOptIn: true, network: 'wifi', reasons: [], powerBudgetW: 300, clock: Date.now() },
    links: await Promise.all(Array.from({ length: Math.min(HEARTBEAT_LINKS, cellSize - 1) }, async (_, i) => ({ peer: peerIdFromPrivateKey(await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(10 + i))).toString(), rttMs: 23.4 + i, bytesPerMs: 1250.5, relayed: false }))),
    membership: [cert]
  }
  const record = await sealCapacityRecord({ peer: '12D3KooWJ9zrzMJTDRcprbm1C6yGaJXJozAvCXfFcDNnmVDfnsG7', seq: 1, issuedAt: Date.now(), expiresAt: Date.now() + DEFAULT_RECORD_TTL_MS, eligible: true, stages: hb.stages, slots: 4, reasons: [], membership: [cert] }, key)
  const full = encodeHeartbeat(hb).byteLength + GOSSIP_OVERHEAD_BYTES
  const short = encodeHeartbeat(keepAliveOf(hb, hb.seq + 1)).byteLength + GOSSIP_OVERHEAD_BYTES
  return {
    heartbeatBytes: full,
    keepAliveBytes: (full + (FULL_EVERY - 1) * short) / FULL_EVERY,
    recordBytes: record.byteLength + 60,
    keepAliveS: DEFAULT_KEEPALIVE_MS / 1000,
    recordRefreshS: DEFAULT_RECORD_TTL_MS / 2000,
    connections
  }
}

/** Routing-table buckets a car refreshes in a fleet of `n`: one per bit of common prefix with its peers (kad-dht tracks at most 16). */
export function tableBuckets (n: number): number { return Math.min(16, Math.ceil(Math.log2(Math.max(2, n)))) }

export interface CarTraffic { in: number, out: number }

/** Heartbeats a cell's cars sent in some time, their own included: keep-alives, and full ones on a change. */
export interface CellBeats { keepAlives: number, changes: number }

/**
 * Bytes one car receives and sends over `seconds`, in a fleet of `fleet`
 * cars, in a cell of `cellSize` whose cars sent `beats` in that time;
 * `ownChanges`: the car's own eligibility changes (a record put each).
 */
export function carTraffic (m: ControlModel, seconds: number, fleet: number, cellSize: number, beats: CellBeats, ownChanges: number): CarTraffic {
  // keep-alives go to the mesh (COPIES each); a change is also flooded to every connected cell peer (one copy
  // more), and the keep-alive after it is full
  const cellBytes = beats.keepAlives * m.keepAliveBytes * COPIES + beats.changes * (m.heartbeatBytes * (COPIES + 1) + (m.heartbeatBytes - m.keepAliveBytes) * COPIES)
  const gossip = cellSize > 1 ? cellBytes * (cellSize - 1) / cellSize : 0
  const own = cellBytes / Math.max(1, cellSize)
  // each car offers each cell message's id to Dlazy peers outside its mesh (the cell's others and a bootstrap or client), for mcacheGossip seconds
  const offered = Math.min(FLEET_GOSSIP.Dlazy, Math.max(0, cellSize - FLEET_GOSSIP.D)) * FLEET_GOSSIP.mcacheGossip
  const ihave = (beats.keepAlives + beats.changes) * offered * IHAVE_BYTES_PER_ID
  const upkeep = m.connections * CONNECTION_UPKEEP_BYTES_PER_S * seconds
  // walks: record puts (at half the record's life and on a change), self-lookups, the routing table's refresh
  // (a walk per bucket); each stores the record on K peers, which answer with it
  const puts = seconds / m.recordRefreshS + ownChanges
  const walks = puts + seconds / (SELF_QUERY_MS / 1000) + seconds / (TABLE_REFRESH_MS / 1000) * tableBuckets(fleet)
  // every car asks as much as it is asked, so what its walks move is what it receives and what it sends;
  // a query to a peer it holds no connection to opens one (in a large fleet, nearly every query)
  const unconnected = Math.max(0, 1 - m.connections / fleet)
  const k = Math.min(DHT_ANSWER_PEERS, Math.max(1, fleet - 1))
  const dht = walks * walkQueries(fleet) * (DHT_QUERY_BYTES + k * DHT_PEER_BYTES + unconnected * 2 * CONNECTION_SETUP_BYTES) + puts * k * 2 * m.recordBytes
  return { in: upkeep + gossip + ihave + dht, out: upkeep + gossip + own + ihave + dht }
}
