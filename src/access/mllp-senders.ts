/**
 * Which MLLP peers may send for a sending facility (MSH-4). MLLP_ALLOWED_SENDERS lists, per facility, the source
 * addresses (an IP address or a CIDR block, IPv4 or IPv6) and/or TLS client certificates (`cert:` + the SHA-256
 * fingerprint, hex, colons optional) it may come from:
 *
 *   MLLP_ALLOWED_SENDERS=ICU_A=10.1.20.0/24|cert:AB:CD:…,WARD_3=10.1.30.7,*=127.0.0.1
 *
 * A facility not listed falls back to the `*` entry; without one it is refused. With MLLP_ALLOWED_SENDERS unset every
 * sender is allowed (the HL7 listener's own TLS settings still apply). The HL7 module calls `mllpSenderAllowed` for
 * each message, after parsing MSH and before acknowledging.
 */
import { BlockList, isIP } from 'node:net';

interface Rule {
  blocks: BlockList;
  hasAddresses: boolean;
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

  constructor(entries: readonly string[]) {
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
    if (!this.configured) return { ok: true, reason: 'MLLP_ALLOWED_SENDERS is not set: any sender is allowed' };
    const name = this.rules.has(facility) ? facility : '*';
    const rule = this.rules.get(name);
    if (!rule) return { ok: false, reason: `sending facility '${facility}' is not in MLLP_ALLOWED_SENDERS` };
    const addr = plainAddress(remoteAddress);
    const family = isIP(addr);
    const addrOk = !rule.hasAddresses || (family !== 0 && rule.blocks.check(addr, family === 4 ? 'ipv4' : 'ipv6'));
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
