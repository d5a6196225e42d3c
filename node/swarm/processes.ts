/**
 * Child peer processes for local swarms: each is `fleetmesh <command>` in its
 * own Node process, reporting events over IPC, logging to a file. A child
 * whose parent dies sees the IPC channel close and leaves by itself.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

/** The `fleetmesh` command's entry file. */
// .ts from the sources, .js from the package's build
export const MAIN = fileURLToPath(new URL(`../cli/main${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url))

/** A vehicle of a swarm: a process of its own, or one of a group sharing a process (group.ts). */
export interface VehicleHandle {
  readonly label: string
  readonly args: string[]
  readonly pid: number | undefined
  readonly running: boolean
  /** Vehicles in its process (1 for a process of its own). */
  readonly share: number
  onEvent: (fn: (e: any) => void) => () => void
  waitFor: <T = any>(match: (e: any) => boolean, timeoutMs: number, what: string, hint?: string) => Promise<T>
  send: (message: unknown) => void
}

export class PeerProcess implements VehicleHandle {
  readonly share: number = 1
  readonly label: string
  readonly logFile: string
  readonly args: string[]
  readonly proc: ChildProcess
  readonly exited: Promise<number | null>
  private readonly listeners = new Set<(e: any) => void>()
  exitCode: number | null | undefined

  constructor (label: string, args: string[], logFile: string, entry = MAIN) {
    this.label = label
    this.logFile = logFile
    this.args = args
    const log = createWriteStream(logFile)
    this.proc = spawn(process.execPath, [entry, ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: process.env })
    this.proc.stdout?.pipe(log, { end: false })
    this.proc.stderr?.pipe(log, { end: false })
    this.proc.on('message', (m) => { for (const l of this.listeners) l(m) })
    this.exited = new Promise(resolve => {
      this.proc.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal !== null ? -1 : null)
        log.end()
        resolve(code)
      })
    })
  }

  get pid (): number | undefined { return this.proc.pid }
  get running (): boolean { return this.exitCode === undefined }

  /** Sends a message to the child over IPC (ignored once it has exited). */
  send (message: unknown): void {
    if (this.running && this.proc.connected) this.proc.send(message as object)
  }

  onEvent (fn: (e: any) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Resolves with the first event that matches; rejects if the process exits first or on timeout (the error then ends with `hint`, if any). */
  async waitFor<T = any> (match: (e: any) => boolean, timeoutMs: number, what: string, hint?: string): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { off(); reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${what}${hint !== undefined ? `; ${hint}` : ''}`)) }, timeoutMs)
      const off = this.onEvent(e => { if (match(e)) { clearTimeout(timer); off(); resolve(e) } })
      void this.exited.then(code => { clearTimeout(timer); off(); reject(new Error(`${this.label} exited (code ${String(code)}) before ${what}; log: ${this.logFile}`)) })
    })
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves when the process is gone. */
  async stop (graceMs = 5000): Promise<void> {
    if (!this.running) return
    this.proc.kill('SIGTERM')
    const timer = setTimeout(() => { if (this.running) this.proc.kill('SIGKILL') }, graceMs)
    await this.exited
    clearTimeout(timer)
  }

  async logTail (lines = 15): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '')
    return text.trimEnd().split('\n').slice(-lines).join('\n')
  }
}

/** One vehicle of a group process: its events are the group's events tagged with its label. */
export class GroupMember implements VehicleHandle {
  readonly label: string
  readonly args: string[] = []
  readonly share: number
  private readonly group: PeerProcess

  constructor (group: PeerProcess, label: string, share: number) {
    this.group = group
    this.label = label
    this.share = share
  }

  get pid (): number | undefined { return this.group.pid }
  get running (): boolean { return this.group.running }
  onEvent (fn: (e: any) => void): () => void { return this.group.onEvent(e => { if (e?.vehicle === this.label) fn(e) }) }
  async waitFor<T = any> (match: (e: any) => boolean, timeoutMs: number, what: string, hint?: string): Promise<T> {
    return await this.group.waitFor<T>(e => e?.vehicle === this.label && match(e), timeoutMs, `${this.label} ${what}`, hint)
  }

  send (message: unknown): void { this.group.send(message) }
}
