/**
 * Which MLLP peers may send for a sending facility (MSH-4). MLLP_ALLOWED_SENDERS lists, per facility, the source
 * addresses (an IP address or a CIDR block, IPv4 or IPv6) and/or TLS client certificates (`cert:` + the SHA-256
 * fingerprint, hex, colons optional) it may come from:
 *
 *   MLLP_ALLOWED_SENDERS=ICU_A=10.1.20.0/24|cert:AB:CD:…,WARD_3=10.1.30.7,*=127.0.0.1
 *
 * A facility not listed falls back to the `*` entry; without one it is refused. The HL7 module calls `check` for each
 * message, after reading MSH and before acknowledging.
 *
 * With MLLP_ALLOWED_SENDERS unset, `mllpSenderPolicy` decides: with the sandbox EHR every sender is allowed; with a
 * real EHR (FHIR_BASE_URL set) MLLP is closed (every message answered AR, saying what to set) unless mutual TLS
 * (MLLP_TLS_REQUIRE_CLIENT_CERT) authenticates the senders or MLLP_ALLOW_ANY_SENDER opts out, loudly, for a trusted
 * network.
 */
import { BlockList, isIP } from 'node:net';

interface Rule {
  blocks: BlockList;
  hasAddresses: boolean;
  /**
   * The verdict of `blocks` per address already asked (a sender's address repeats on every message, and BlockList
   * builds a SocketAddress for each check). The rules never change after start-up; bounded, emptied when full.
   */
  seen?: Map<string, boolean>;
  certs: Set<string>;
}

export interface SenderCheck {
  ok: boolean;
  reason: string;
}

const normFingerprint = (s: string) => s.replace(/[^0-9a-f]/gi, '').toUpperCase();
const plainAddress = (a: string) => a.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');

export class MllpAllowList {
  private readonly rules = new Map<string, Rule>();
  /** Every address and block of every facility: the known senders, for the MLLP connection reservation. */
  private readonly known = new BlockList();
  private hasKnown = false;
  readonly errors: string[] = [];

  /** `closed`: with no entries, refuse every sender with this reason instead of allowing everyone. */
  constructor(
    entries: readonly string[],
    private readonly closed?: string,
  ) {
    for (const e of entries) {
      const i = e.indexOf('=');
      const facility = i > 0 ? e.slice(0, i).trim() : '';
      if (!facility) {
        this.errors.push(`MLLP_ALLOWED_SENDERS: '${e}' is not FACILITY=sender|sender`);
        continue;
      }
      const rule: Rule = this.rules.get(facility) ?? { blocks: new BlockList(), hasAddresses: false, certs: new Set() };
      for (const raw of e
        .slice(i + 1)
        .split('|')
        .map((s) => s.trim())
        .filter(Boolean)) {
        if (/^cert:/i.test(raw)) {
          const fp = normFingerprint(raw.slice(5));
          if (fp.length !== 64) this.errors.push(`MLLP_ALLOWED_SENDERS: '${raw}' is not a SHA-256 fingerprint (64 hex digits)`);
          else rule.certs.add(fp);
          continue;
        }
        const [addr, bits] = raw.split('/');
        const family = isIP(addr);
        if (!family || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128)))) {
          this.errors.push(`MLLP_ALLOWED_SENDERS: '${raw}' is not an IP address, CIDR block or cert:<fingerprint>`);
          continue;
        }
        const type = family === 4 ? 'ipv4' : 'ipv6';
        for (const list of [rule.blocks, this.known]) {
          if (bits === undefined) list.addAddress(addr, type);
          else list.addSubnet(addr, Number(bits), type);
        }
        rule.hasAddresses = true;
        this.hasKnown = true;
      }
      this.rules.set(facility, rule);
    }
  }

  get configured(): boolean {
    return this.rules.size > 0;
  }

  /**
   * Is this source address listed for any facility? Such peers may use the MLLP connections reserved for known
   * senders (MLLP_RESERVED_CONNECTIONS). Senders listed only by certificate are known after the TLS handshake, too late
   * for the reservation: list their address as well to give them a reserved place.
   */
  knowsAddress(remoteAddress: string): boolean {
    if (!this.hasKnown) return false;
    const addr = plainAddress(remoteAddress);
    const family = isIP(addr);
    return family !== 0 && this.known.check(addr, family === 4 ? 'ipv4' : 'ipv6');
  }

  check(facility: string, remoteAddress: string, certFingerprint?: string): SenderCheck {
    if (!this.configured)
      return this.closed
        ? { ok: false, reason: this.closed }
        : { ok: true, reason: 'MLLP_ALLOWED_SENDERS is not set: any sender is allowed' };
    const name = this.rules.has(facility) ? facility : '*';
    const rule = this.rules.get(name);
    if (!rule) return { ok: false, reason: `sending facility '${facility}' is not in MLLP_ALLOWED_SENDERS` };
    const addr = plainAddress(remoteAddress);
    const family = isIP(addr);
    const addrOk = !rule.hasAddresses || (family !== 0 && listed(rule, addr, family));
    const certOk = rule.certs.size === 0 || (certFingerprint !== undefined && rule.certs.has(normFingerprint(certFingerprint)));
    if (!addrOk) return { ok: false, reason: `address ${addr || '(none)'} may not send for facility '${facility}'` };
    if (!certOk)
      return {
        ok: false,
        reason: certFingerprint
          ? `the client certificate may not send for facility '${facility}'`
          : `facility '${facility}' must present an allowed TLS client certificate`,
      };
    return { ok: true, reason: `allowed by the ${name === '*' ? 'default (*)' : `'${facility}'`} entry` };
  }
}

const SEEN_MAX = 1024;

function listed(rule: Rule, addr: string, family: number): boolean {
  rule.seen ??= new Map();
  let ok = rule.seen.get(addr);
  if (ok === undefined) {
    ok = rule.blocks.check(addr, family === 4 ? 'ipv4' : 'ipv6');
    if (rule.seen.size >= SEEN_MAX) rule.seen.clear();
    rule.seen.set(addr, ok);
  }
  return ok;
}

export interface MllpSenderPolicyInput {
  /** MLLP_ALLOWED_SENDERS. */
  entries: readonly string[];
  /** A real EHR is configured (FHIR_BASE_URL set), not the sandbox. */
  production: boolean;
  /** MLLP_TLS_REQUIRE_CLIENT_CERT with TLS on: every peer holds a certificate of the configured CA. */
  mutualTls: boolean;
  /** MLLP_ALLOW_ANY_SENDER: the explicit opt-out for a trusted network. */
  allowAny: boolean;
}

export interface MllpSenderPolicy {
  senders: MllpAllowList;
  /** What start-up says about who may send, and how loudly. */
  level: 'info' | 'warn' | 'error';
  message: string;
}

/** Who may send over MLLP, and the one line start-up logs about it (see the file comment). */
export function mllpSenderPolicy(p: MllpSenderPolicyInput): MllpSenderPolicy {
  if (p.entries.length)
    return { senders: new MllpAllowList(p.entries), level: 'info', message: 'mllp: senders limited by MLLP_ALLOWED_SENDERS' };
  if (!p.production)
    return {
      senders: new MllpAllowList([]),
      level: 'info',
      message: 'mllp: any sender is accepted (sandbox EHR; with FHIR_BASE_URL set, MLLP needs MLLP_ALLOWED_SENDERS or mutual TLS)',
    };
  if (p.mutualTls)
    return {
      senders: new MllpAllowList([]),
      level: 'info',
      message:
        'mllp: senders authenticated by mutual TLS (any certificate of MLLP_TLS_CA_FILE; MLLP_ALLOWED_SENDERS can narrow it per facility)',
    };
  if (p.allowAny)
    return {
      senders: new MllpAllowList([]),
      level: 'warn',
      message:
        'mllp: MLLP_ALLOW_ANY_SENDER=true: ANY host that reaches the MLLP port can file data into the EHR; use it only on a trusted network, and prefer MLLP_ALLOWED_SENDERS or mutual TLS',
    };
  const reason =
    'MLLP is closed: a real EHR is configured and neither MLLP_ALLOWED_SENDERS nor mutual TLS (MLLP_TLS_REQUIRE_CLIENT_CERT) says who may send';
  return {
    senders: new MllpAllowList([], reason),
    level: 'error',
    message: `${reason}; every message is answered AR. Set MLLP_ALLOWED_SENDERS, or mutual TLS, or MLLP_ALLOW_ANY_SENDER=true on a trusted network`,
  };
}
