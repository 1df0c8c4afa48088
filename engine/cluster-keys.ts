// What the hosts of a cluster keep in Redis and say on its channels: one
// place for the key and channel names, the shapes of the messages, and the
// scripts that touch this host's keys only while they are still its own.
import type { SocketInfo } from '../bridge/protocol.js';

const PREFIX = 'islet:';
/** Every host's name (a set; a dead one is removed by whoever finds it dead). */
export const HOSTS = `${PREFIX}hosts`;
/** Where every host announces the changes of its sessions. */
export const PRESENCE = `${PREFIX}presence`;
/** A host's heartbeat key: this process's token, expiring by itself. */
export const aliveKey = (host: string): string => `${PREFIX}alive:${host}`;
/** A host's sessions (a hash: id → Entry as JSON; field `seq`: its last change). */
export const sessionsKey = (host: string): string => `${PREFIX}sessions:${host}`;
/** An id slot's owner. */
export const slotKey = (slot: number): string => `${PREFIX}slot:${slot}`;
/** A host's own channel: orders for its sessions. */
export const inboxOf = (host: string): string => `${PREFIX}to:${host}`;
/** A tenant's topics: every host with a session of the tenant follows it (JSON keeps any name apart). */
export const topicsOf = (tenant: string): string => `${PREFIX}topics:${JSON.stringify(tenant)}`;

/** Id slots: a host's socket ids are its slot times 2^32 plus ids of its own (workers.ts). */
export const SLOTS = 65535;

/** A session in its host's hash: tenant, endpoint, handler, user. */
export type Entry = [tenant: string, endpoint: string, handler: string, user: string];

/** One change of a host's sessions, or its (re)join (`reset`) or leaving (`gone`). */
export interface PresenceMessage {
  host: string;
  seq: number;
  add?: [number, ...Entry][];
  remove?: number[];
  reset?: true;
  gone?: true;
}

/** What goes to another host's channel: a header line (JSON: what, the tenant, the session, and what it takes), then the payload's bytes. */
export type Order =
  | ['send', string, number]
  | ['close', string, number, number | null, string | null]
  | ['subscribe' | 'unsubscribe', string, number, string];

export function entryOf(info: SocketInfo): Entry {
  return [info.tenant, info.endpoint, info.handler, info.user];
}

export function isEntry(entry: unknown): entry is Entry {
  return Array.isArray(entry) && entry.length === 4 && entry.every((field) => typeof field === 'string');
}

export function parseEntry(value: string): Entry | null {
  try {
    const entry = JSON.parse(value) as unknown;
    return isEntry(entry) ? entry : null;
  } catch {
    return null;
  }
}

/** A session of another host, as the workers keep it. */
export function peerInfo(host: string, id: number, [tenant, endpoint, handler, user]: Entry): SocketInfo {
  return { id, kind: 'session', tenant, handler, uri: '', engine: 'javascript', state: 'open', endpoint, user, host };
}

/**
 * The heartbeat: keeps this host's keys alive while its heartbeat key holds
 * this process's token. 1: done; 0: the entry expired (written again);
 * -1: another process holds the name now (this one leaves).
 * KEYS: alive, sessions, slot, hosts. ARGV: token, ms, name.
 */
export const HEARTBEAT = `
local alive = redis.call('GET', KEYS[1])
if alive == false then return 0 end
if alive ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 0 then return 0 end
return 1`;

/** Leaving: this host's keys are deleted and its going announced, only if they are still this process's. KEYS: alive, sessions, slot, hosts. ARGV: token, name, presence message. */
export const LEAVE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('PUBLISH', '${PRESENCE}', ARGV[3])
return 1`;
