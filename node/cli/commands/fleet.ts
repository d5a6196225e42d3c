import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { FleetClient } from '../../client/client.ts'
import { loadOrCreateKey } from '../../host.ts'
import { describeCredentials, issueWithKey, loadAuthority, loadCredentials, saveCredentials } from '../../membership/credentials.ts'
import type { Issuer } from '../../membership/credentials.ts'
import { checkFleetName } from '../../../protocols/ids.ts'
import { openRevocations, parseRole } from '../../../protocols/membership.ts'
import type { FleetTrust, Role } from '../../../protocols/membership.ts'
import { issueToken } from '../../gateway/tokens.ts'
import { BOOTSTRAP_OPTION, JOIN_TIMEOUT_MS, UsageError, intOption, requireOption } from '../command.ts'
import type { Command } from '../command.ts'
import { count } from '../../util/text.ts'

/** Where the authority keeps its newest revocation list (in its directory), so each revoke adds to it. */
export const REVOCATIONS_FILE = 'revocations.bin'

const USAGE = `<init | issue | grant | token | revoke | show> [options]

  fleet init --fleet <name> [--dir <dir>]
      a new fleet: its authority key (keep it offline) and fleet.json (name, authority peer id)
  fleet issue --authority <dir> --role <roles> (--key <file> | --peer <id> | --new-key) [--may-issue <roles>] [--days 30] --out <file>
      a member certificate; --key makes the peer's key file if it is missing (a bootstrap peer or vehicle
      then starts with --key / --data holding it); --new-key puts a new key in the credentials (clients)
  fleet grant --authority <dir> [--role vehicle] [--days 365] --out <file>
      an enrollment grant: a vehicle started with it gets its certificate from a bootstrap peer by itself
  fleet token --authority <dir> --name <name> [--days 30] [--concurrency 4] [--max-body-mb 16]
      a bearer token for an HTTP gateway of the fleet (Authorization: Bearer <token>), with its limits
  fleet revoke --authority <dir> (--peer <id> | --serial <s>)... [--list <file>] [--out <file>] [--bootstrap <ma>]
      a new revocation list: the newest one (the authority's own, or --list) plus these, kept in
      <authority>/revocations.bin (and --out); with --bootstrap it is published to the fleet
  fleet show <credentials file>`

async function authorityFrom (o: Record<string, unknown>): Promise<{ issuer: Issuer, trust: FleetTrust }> {
  const dir = requireOption(o.authority, 'authority')
  let doc: { fleet: string, authority: string }
  try { doc = JSON.parse(await readFile(join(dir, 'fleet.json'), 'utf8')) } catch (err) {
    throw new UsageError(`--authority ${dir}: no fleet.json there (made by fleetmesh fleet init): ${(err as Error).message}`)
  }
  const issuer = await loadAuthority(join(dir, 'authority.key'), doc.fleet)
  if (issuer.peer !== doc.authority) throw new UsageError(`${dir}/authority.key does not match fleet.json`)
  return { issuer, trust: { fleet: doc.fleet, authority: issuer.peer } }
}

function roles (v: unknown, name: string): Role[] {
  const list = String(v ?? '').split(',').map(s => s.trim()).filter(s => s !== '')
  if (list.length === 0) throw new UsageError(`--${name} needs at least one of vehicle, client, publisher, bootstrap, relay`)
  try { return list.map(parseRole) } catch (err) { throw new UsageError(`--${name}: ${(err as Error).message}`) }
}

export const fleetCommand: Command = {
  name: 'fleet',
  summary: 'Create a fleet and manage its members: authority key, certificates, enrollment grants, revocations.',
  usage: USAGE,
  options: {
    fleet: { type: 'string', arg: '<name>', description: 'with init: the fleet name' },
    dir: { type: 'string', arg: '<dir>', description: 'with init: where the authority key and fleet.json go', default: '.fleetmesh/fleet' },
    authority: { type: 'string', arg: '<dir>', description: 'the fleet directory holding authority.key and fleet.json' },
    role: { type: 'string', arg: '<roles>', description: 'comma-separated: vehicle, client, publisher, bootstrap, relay' },
    'may-issue': { type: 'string', arg: '<roles>', description: 'with issue: roles the holder may issue (a bootstrap peer that enrolls vehicles)' },
    peer: { type: 'string', multiple: true, arg: '<id>', description: 'the peer id to issue for (issue) or to revoke (revoke, repeatable)' },
    key: { type: 'string', arg: '<file>', description: 'with issue: the peer\'s key file, created if missing' },
    'new-key': { type: 'boolean', description: 'with issue: a new key, kept in the credentials file' },
    serial: { type: 'string', multiple: true, arg: '<s>', description: 'with revoke: a certificate serial to revoke (repeatable)' },
    list: { type: 'string', arg: '<file>', description: `with revoke: a revocation list to add to (default: the newest the authority keeps, <authority>/${REVOCATIONS_FILE})` },
    days: { type: 'string', arg: '<n>', description: 'validity in days (issue: 30, grant: 365)' },
    out: { type: 'string', arg: '<file>', description: 'where to write the credentials or grant (token: optional; revoke: a copy of the list)' },
    name: { type: 'string', arg: '<name>', description: 'with token: who the token is for (letters, digits, . @ _ -)' },
    concurrency: { type: 'string', arg: '<n>', description: 'with token: requests in flight at once', default: '4' },
    'max-body-mb': { type: 'string', arg: '<mb>', description: 'with token: largest request body, in MiB', default: '16' },
    bootstrap: BOOTSTRAP_OPTION,
    json: { type: 'boolean', description: 'print one JSON object' }
  },
  async run (o, pos) {
    const [sub, ...rest] = pos
    const print = (human: string, data: unknown): void => { console.log(o.json === true ? JSON.stringify(data) : human) }
    switch (sub) {
      case 'init': {
        const fleet = checkFleetName(requireOption(o.fleet, 'fleet'))
        const dir = String(o.dir)
        if (existsSync(join(dir, 'authority.key'))) throw new UsageError(`${dir}/authority.key exists: a fleet is already there`)
        const key = await generateKeyPair('Ed25519')
        await mkdir(dir, { recursive: true })
        await writeFile(join(dir, 'authority.key'), privateKeyToProtobuf(key), { mode: 0o600 })
        const authority = peerIdFromPrivateKey(key).toString()
        await writeFile(join(dir, 'fleet.json'), JSON.stringify({ fleet, authority }, null, 2) + '\n')
        print(`fleet ${fleet}, authority ${authority}\n  ${dir}/authority.key  keep it offline: it signs every membership\n  ${dir}/fleet.json     what every peer trusts`, { fleet, authority, dir })
        return 0
      }
      case 'issue': {
        const { issuer, trust } = await authorityFrom(o)
        const out = requireOption(o.out, 'out')
        const how = [o.key !== undefined, (o.peer as string[] | undefined) !== undefined, o['new-key'] === true].filter(Boolean).length
        if (how !== 1) throw new UsageError('give one of --key <file>, --peer <id> or --new-key')
        const opts = { roles: roles(o.role, 'role'), days: intOption(o.days ?? '30', 'days', 1, 3650), ...(o['may-issue'] !== undefined ? { mayIssue: roles(o['may-issue'], 'may-issue') } : {}) }
        const creds = o['new-key'] === true
          ? await issueWithKey(issuer, trust, opts)
          : { trust, chain: await issuer.issue(typeof o.key === 'string' ? peerIdFromPrivateKey(await loadOrCreateKey(o.key)).toString() : (o.peer as string[])[0], opts) }
        await saveCredentials(out, creds)
        print(`issued ${opts.roles.join(', ')} for ${opts.days} days to ${out}`, await describeCredentials(creds))
        return 0
      }
      case 'grant': {
        const { issuer, trust } = await authorityFrom(o)
        const out = requireOption(o.out, 'out')
        const role = roles(o.role ?? 'vehicle', 'role')
        if (role.length !== 1) throw new UsageError('--role: a grant is for one role')
        const creds = { trust, grant: await issuer.grant(role[0], intOption(o.days ?? '365', 'days', 1, 3650)) }
        await saveCredentials(out, creds)
        print(`enrollment grant (${role[0]}) written to ${out}: provision vehicles with it (fleetmesh node --credentials ${out})`, await describeCredentials(creds))
        return 0
      }
      case 'token': {
        const { issuer } = await authorityFrom(o)
        const name = requireOption(o.name, 'name')
        const days = intOption(o.days ?? '30', 'days', 1, 3650)
        let token: string
        try {
          token = await issueToken(issuer, name, { days, maxConcurrency: intOption(o.concurrency, 'concurrency', 1, 100_000), maxBodyBytes: intOption(o['max-body-mb'], 'max-body-mb', 1, 4095) * 1024 * 1024 })
        } catch (err) { throw new UsageError((err as Error).message) }
        if (typeof o.out === 'string') await writeFile(o.out, token + '\n', { mode: 0o600 })
        print(typeof o.out === 'string' ? `gateway token for ${name} (${days} days) written to ${o.out}` : token, { name, days, token })
        return 0
      }
      case 'revoke': return await revoke(o)
      case 'show': {
        const file = rest[0] ?? requireOption(o.out, 'out')
        const d = await describeCredentials(await loadCredentials(file))
        console.log(JSON.stringify(d, null, o.json === true ? 0 : 2))
        return 0
      }
      default: throw new UsageError(`fleet needs a subcommand: ${USAGE}`)
    }
  }
}

async function revoke (o: Record<string, unknown>): Promise<number> {
  const { issuer, trust } = await authorityFrom(o)
  const kept = join(requireOption(o.authority, 'authority'), REVOCATIONS_FILE)
  const peers = (o.peer as string[] | undefined) ?? []
  const serials = (o.serial as string[] | undefined) ?? []
  if (peers.length + serials.length === 0) throw new UsageError('give --peer <id> or --serial <s> to revoke')
  // the newest of the list given and the one the authority keeps: members take only a list newer than theirs,
  // so one that started over would be ignored
  let previous = { seq: 0, peers: [] as string[], serials: [] as string[] }
  for (const [file, given] of [[o.list, true], [kept, false]] as const) {
    if (typeof file !== 'string' || (!given && !existsSync(file))) continue
    let list
    try { list = await openRevocations(new Uint8Array(await readFile(file)), trust) } catch (err) { throw new UsageError(`${given ? '--list ' : ''}${file}: ${(err as Error).message}`) }
    if (list.seq > previous.seq) previous = list
  }
  const next = { seq: previous.seq + 1, issuedAt: Date.now(), peers: [...new Set([...previous.peers, ...peers])], serials: [...new Set([...previous.serials, ...serials])] }
  const sealed = await issuer.revocations(next)
  await writeFile(kept, sealed)
  if (typeof o.out === 'string') await writeFile(o.out, sealed)
  const bootstrap = (o.bootstrap as string[] | undefined) ?? []
  if (bootstrap.length > 0) {
    // the authority joins as a short-lived client of its own making and publishes the list
    const client = await FleetClient.connect({ bootstrap, fleet: trust.fleet, credentials: await issueWithKey(issuer, trust, { roles: ['client'], days: 1 }) })
    try {
      await client.joined({ signal: AbortSignal.timeout(JOIN_TIMEOUT_MS) })
      await client.node.membership?.adoptRevocations(sealed)
      // time to join the revocations topic's mesh
      await new Promise(resolve => setTimeout(resolve, 1500))
      await client.node.membership?.publishRevocations()
    } finally { await client.close() }
  }
  const where = [kept, ...(typeof o.out === 'string' ? [o.out] : [])].join(' and ')
  console.log(`revocation list ${next.seq} (${count(next.peers.length, 'peer')}, ${count(next.serials.length, 'certificate')}) written to ${where}${bootstrap.length > 0 ? ' and published' : ''}`)
  return 0
}
