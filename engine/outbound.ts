// Where tenants' outbound clients may connect (server-side request forgery).
// The policy is checked against the address a name resolves to, and the
// socket connects to exactly that address (a `lookup` handed to ws), so a
// name that resolves to a public address for the check and to a private one
// for the connection (DNS rebinding) cannot slip through.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { IsletError } from '../bridge/errors.js';
import WebSocket from 'ws';

export interface OutboundOptions {
  /** Hosts (`example.com`, `*.example.com`), addresses or CIDR ranges always allowed, unless denied. */
  allow?: string[];
  /** Hosts, addresses or CIDR ranges never allowed; checked first. */
  deny?: string[];
  /**
   * Whether loopback, private, link-local (cloud metadata), and other
   * special-purpose addresses may be reached. Default: false for the engine
   * and `islet serve`; `islet run` sets it true.
   */
  allowPrivate?: boolean;
}

/** Special-purpose ranges (RFC 6890 and friends) refused unless allowPrivate. */
const SPECIAL: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['0.0.0.0', 8, 'ipv4', 'a "this network" address'],
  ['10.0.0.0', 8, 'ipv4', 'a private address'],
  ['100.64.0.0', 10, 'ipv4', 'a shared (carrier-grade NAT) address'],
  ['127.0.0.0', 8, 'ipv4', 'a loopback address'],
  ['169.254.0.0', 16, 'ipv4', 'a link-local address (cloud metadata lives here)'],
  ['172.16.0.0', 12, 'ipv4', 'a private address'],
  ['192.0.0.0', 24, 'ipv4', 'an IETF protocol address'],
  ['192.168.0.0', 16, 'ipv4', 'a private address'],
  ['198.18.0.0', 15, 'ipv4', 'a benchmarking address'],
  ['224.0.0.0', 4, 'ipv4', 'a multicast address'],
  ['240.0.0.0', 4, 'ipv4', 'a reserved address'],
  ['::', 128, 'ipv6', 'the unspecified address'],
  ['::1', 128, 'ipv6', 'a loopback address'],
  // Forms that carry an IPv4 address inside, which a gateway or the stack
  // turns back into it (::7f00:1 and 64:ff9b::7f00:1 reach 127.0.0.1).
  ['::', 96, 'ipv6', 'an IPv4-compatible address (it embeds an IPv4 address)'],
  ['64:ff9b::', 96, 'ipv6', 'a NAT64 address (it embeds an IPv4 address)'],
  ['64:ff9b:1::', 48, 'ipv6', 'a local-use NAT64 address (it embeds an IPv4 address)'],
  ['2002::', 16, 'ipv6', 'a 6to4 address (it embeds an IPv4 address)'],
  ['2001::', 32, 'ipv6', 'a Teredo address (it embeds an IPv4 address)'],
  ['::ffff:0:0:0', 96, 'ipv6', 'an IPv4-translated address (it embeds an IPv4 address)'],
  ['100::', 64, 'ipv6', 'a discard-only address'],
  ['fec0::', 10, 'ipv6', 'a site-local (private) address'],
  ['fc00::', 7, 'ipv6', 'a unique local (private) address'],
  ['fe80::', 10, 'ipv6', 'a link-local address'],
  ['ff00::', 8, 'ipv6', 'a multicast address'],
];

interface Rules {
  names: string[];
  suffixes: string[];
  ranges: BlockList;
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

/** An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is checked as the IPv4 address it is. */
function unmap(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

function parseRules(name: string, entries: unknown): Rules {
  if (entries !== undefined && (!Array.isArray(entries) || !entries.every((e) => typeof e === 'string' && e.length > 0))) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `${name} must be an array of hosts, addresses or CIDR ranges`);
  }
  const rules: Rules = { names: [], suffixes: [], ranges: new BlockList() };
  for (const entry of (entries ?? []) as string[]) {
    const [address, bits] = entry.split('/');
    if (isIP(address!) !== 0) {
      const prefix = bits === undefined ? (isIP(address!) === 6 ? 128 : 32) : Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (isIP(address!) === 6 ? 128 : 32)) {
        throw new IsletError('ISLET_ERR_BAD_OPTION', `${name}: "${entry}" has a bad prefix length`);
      }
      rules.ranges.addSubnet(address!, prefix, family(address!));
    } else if (entry.startsWith('*.')) {
      rules.suffixes.push(entry.slice(1).toLowerCase());
    } else if (/^[a-z0-9.-]+$/i.test(entry)) {
      rules.names.push(entry.toLowerCase());
    } else {
      throw new IsletError('ISLET_ERR_BAD_OPTION', `${name}: "${entry}" is not a host, an address or a CIDR range`);
    }
  }
  return rules;
}

function matches(rules: Rules, host: string, address: string | null): boolean {
  const name = host.toLowerCase();
  if (rules.names.includes(name) || rules.suffixes.some((suffix) => name.endsWith(suffix))) return true;
  return address !== null && rules.ranges.check(address, family(address));
}

export class OutboundPolicy {
  private readonly allow: Rules;
  private readonly deny: Rules;
  private readonly special = new Map<string, BlockList>();

  constructor(options: OutboundOptions, allowPrivateByDefault: boolean) {
    this.allow = parseRules('outbound.allow', options.allow);
    this.deny = parseRules('outbound.deny', options.deny);
    this.allowPrivate = options.allowPrivate ?? allowPrivateByDefault;
    if (typeof this.allowPrivate !== 'boolean') throw new IsletError('ISLET_ERR_BAD_OPTION', 'outbound.allowPrivate must be a boolean');
    for (const [address, prefix, type, why] of SPECIAL) {
      let list = this.special.get(why);
      if (list === undefined) this.special.set(why, (list = new BlockList()));
      list.addSubnet(address, prefix, type);
    }
  }

  readonly allowPrivate: boolean;

  /** Why connecting to `address` (for `host`) is refused, or null if it is allowed. */
  refusal(host: string, address: string): string | null {
    const ip = unmap(address);
    if (matches(this.deny, host, ip)) return `${host === ip ? ip : `${host} (${ip})`} is on the deny list`;
    if (matches(this.allow, host, ip) || this.allowPrivate) return null;
    for (const [why, list] of this.special) {
      if (list.check(ip, family(ip))) return `${host === ip ? ip : `${host} resolves to ${ip}, which`} is ${why}`;
    }
    return null;
  }

  /** A `lookup` for the socket: resolves, drops refused addresses, connects to an allowed one. */
  lookup(uri: string): LookupFunction {
    return (hostname, options, callback) => {
      dnsLookup(hostname, { all: true, family: options.family as number | undefined }, (error, addresses: LookupAddress[]) => {
        if (error) return callback(error, '', 0);
        const allowed = addresses.filter((a) => this.refusal(hostname, a.address) === null);
        if (allowed.length === 0) {
          const why = addresses.length > 0 ? this.refusal(hostname, addresses[0]!.address)! : `${hostname} has no address`;
          return callback(refused(uri, why), '', 0);
        }
        if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
        callback(null, allowed[0]!.address, allowed[0]!.family);
      });
    };
  }

  /**
   * A client's connection to `uri`, if the policy allows it: an address
   * literal is judged here, a name by the socket's `lookup` once resolved
   * (the socket connects to the address that was judged). Throws an IsletError.
   */
  dial(uri: string, options: { maxPayload: number; handshakeTimeout: number }): WebSocket {
    let host: string;
    try {
      host = new URL(uri).hostname.replace(/^\[(.*)\]$/, '$1');
    } catch {
      throw new IsletError('ISLET_ERR_BAD_URI', `uri "${uri.slice(0, 200)}" is not a valid URL`);
    }
    const why = isIP(host) === 0 ? null : this.refusal(host, host);
    if (why !== null) throw refused(uri, why);
    try {
      return new WebSocket(uri, { ...options, perMessageDeflate: false, followRedirects: false, lookup: this.lookup(uri) });
    } catch (error) {
      throw new IsletError('ISLET_ERR_BAD_URI', (error as Error).message);
    }
  }
}

export function refused(uri: string, why: string): IsletError {
  return new IsletError(
    'ISLET_ERR_OUTBOUND_DENIED',
    `connection to ${uri} refused by the outbound policy: ${why} (see the outbound option, or --allow-private / --allow-host)`,
  );
}
