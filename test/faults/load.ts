/**
 * Load for the fault suite, over the real wire: HTTP POSTs of the measurements format (202 counted), HL7v2 PCD-01
 * over MLLP on real TCP (AA/CA counted), and MQTT QoS 1 publishes to a real broker (its PUBACK counted). Each reading
 * has a unique device + effective time, the key the counting sink journals. A sender behaves as a device should: it
 * resends the same message (same content, same control id) until it is acknowledged, and only then moves on.
 *
 * Plus the /healthz poller, in a worker thread so that the figures are not those of this (busy) test process.
 */
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import mqtt from 'mqtt';

export type Channel = 'http' | 'mllp' | 'mqtt';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Readings start a day ago, each device's one second apart: inside any plausibility window and never in the future,
 * for the 691,200 readings (8 devices × 86,400 s) a process could send before its clock catches up with them. (One
 * second apart across all devices ran into READING_TIME_MAX_AHEAD_MS after ~11,000 readings in one suite.)
 */
const T0 = Math.floor(Date.now() / 1000) * 1000 - 24 * 3600 * 1000;
let seq = 0;

export interface Reading {
  channel: Channel;
  seq: number;
  deviceId: string;
  /** What the sink's journal keys it by: the device identifier it is filed under and its effective time. */
  key: string;
  at: Date;
  value: number;
}

const DEVICES = 8;

function nextReading(channel: Channel): Reading {
  const n = seq++;
  const d = n % DEVICES;
  // MLLP devices are EUI-64s (OBX-18), the others plain ids.
  const eui = `00A0C914C82900${d.toString(16).toUpperCase().padStart(2, '0')}`;
  const deviceId = channel === 'mllp' ? eui : `FAULT-${channel.toUpperCase()}-${d}`;
  // The gateway files an EUI-64 in its canonical form (IEEE: dash-separated pairs).
  const filedAs = channel === 'mllp' ? eui.match(/../g)!.join('-') : deviceId;
  const at = new Date(T0 + Math.floor(n / DEVICES) * 1000);
  // A reading the gateway would refuse as from the future is the load's fault, not the gateway's: say so.
  if (at.getTime() > Date.now()) throw new Error(`the fault load ran out of past effective times after ${n} readings`);
  return { channel, seq: n, deviceId, key: `${filedAs}|${at.getTime()}`, at, value: 90 + (n % 10) };
}

export interface ChannelStats {
  sent: number;
  acked: number;
  /** Sends that failed or were answered "not now" (connection refused, 503, AE) and were sent again. */
  resends: number;
  /** Definitive refusals (4xx, AR): a valid reading refused is a finding. */
  refused: number;
  refusals: string[];
}

export class Ledger {
  readonly readings = new Map<string, Reading & { acked: boolean; delivered?: boolean }>();
  private readonly deliveredBy: Record<Channel, number> = { http: 0, mllp: 0, mqtt: 0 };
  readonly stats: Record<Channel, ChannelStats> = {
    http: { sent: 0, acked: 0, resends: 0, refused: 0, refusals: [] },
    mllp: { sent: 0, acked: 0, resends: 0, refused: 0, refusals: [] },
    mqtt: { sent: 0, acked: 0, resends: 0, refused: 0, refusals: [] },
  };

  next(channel: Channel): Reading {
    const r = nextReading(channel);
    this.readings.set(r.key, { ...r, acked: false });
    this.stats[channel].sent++;
    return r;
  }

  ack(r: Reading): void {
    const e = this.readings.get(r.key);
    if (e && !e.acked) {
      e.acked = true;
      this.stats[r.channel].acked++;
    }
  }

  /** The sink created this reading (acknowledged or not). */
  delivered(key: string): void {
    const e = this.readings.get(key);
    if (e && !e.delivered) {
      e.delivered = true;
      this.deliveredBy[e.channel]++;
    }
  }

  /** Readings of the channel acknowledged and not yet in the EHR (about: a reading delivered unacknowledged counts). */
  outstanding(channel: Channel): number {
    return this.stats[channel].acked - this.deliveredBy[channel];
  }

  refuse(r: Reading | Channel, why: string): void {
    const s = this.stats[typeof r === 'string' ? r : r.channel];
    s.refused++;
    if (s.refusals.length < 5) s.refusals.push(why.slice(0, 300));
  }

  acked(): (Reading & { acked: boolean })[] {
    return [...this.readings.values()].filter((r) => r.acked);
  }

  get ackedCount(): number {
    return this.stats.http.acked + this.stats.mllp.acked + this.stats.mqtt.acked;
  }
}

export interface LoadOptions {
  /** Readings per second over the whole channel (undefined: as fast as the concurrency allows). */
  rate?: number;
  /** Senders working at once. */
  concurrency: number;
  /** Awaited before each new reading: back-pressure, so that the backlog stays bounded on a slow machine. */
  gate?: () => Promise<void>;
  /** Extra request headers (HTTP). */
  headers?: Record<string, string>;
}

/** A running load: stop() ends it (readings not acknowledged by then stay unacknowledged) and waits for it. */
export interface Load {
  stop(): Promise<void>;
}

function paced(opts: LoadOptions) {
  const start = Date.now();
  let n = 0;
  return async () => {
    await opts.gate?.();
    if (!opts.rate) return;
    const due = start + (n++ * 1000) / opts.rate;
    if (due > Date.now()) await sleep(due - Date.now());
  };
}

const measurements = (r: Reading) => ({
  deviceId: r.deviceId,
  patientId: `MRN-FAULT-${r.seq % 5}`,
  timestamp: r.at.toISOString(),
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: r.value, unit: '%' }],
});

/** HTTP: POST /ingest/measurements; 202 is the acknowledgement; 5xx, 429 and network errors are resent. */
export function httpLoad(ledger: Ledger, url: () => string, opts: LoadOptions): Load {
  let stopped = false;
  const pace = paced(opts);
  const sender = async () => {
    while (!stopped) {
      await pace();
      if (stopped) break;
      const r = ledger.next('http');
      const body = JSON.stringify(measurements(r));
      for (let attempt = 0; !stopped; attempt++) {
        if (attempt) {
          ledger.stats.http.resends++;
          await sleep(100);
        }
        try {
          const res = await fetch(`${url()}/ingest/measurements`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...opts.headers },
            body,
            signal: AbortSignal.timeout(15000),
          });
          const text = await res.text();
          if (res.status === 202) {
            ledger.ack(r);
            break;
          }
          if (res.status >= 400 && res.status < 500 && res.status !== 429 && res.status !== 408) {
            ledger.refuse(r, `${res.status} ${text}`);
            break;
          }
        } catch {
          /* connection refused or reset: resend */
        }
      }
    }
  };
  const running = Promise.all(Array.from({ length: opts.concurrency }, sender));
  return {
    async stop() {
      stopped = true;
      await running;
    },
  };
}

const hl7Time = (d: Date) => `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}+0000`;

/** An IHE PCD-01 ORU^R01 with one SpO2 reading, original acknowledgement mode (AA expected). */
export function pcd01(r: Reading): string {
  const t = hl7Time(r.at);
  return [
    `MSH|^~\\&|FAULT-GW^${r.deviceId}^EUI-64|WARD-F|||${t}||ORU^R01^ORU_R01|FAULT-${r.seq}|P|2.6|||||||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO`,
    `PID|||MRN-FAULT-${r.seq % 5}^^^HOSP&1.2.276.0.99.1&ISO^MR||Test^Fault`,
    `OBR|1|||182777000^monitoring of patient^SCT|||${t}`,
    `OBX|1||528388^MDC_DEV_SPEC_PROFILE_PULS_OXIM^MDC|1|||||||X|||||||${r.deviceId}^EUI-64`,
    `OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1|${r.value}|262688^MDC_DIM_PERCENT^MDC|||||R|||${t}`,
  ].join('\r');
}

/** One MLLP round trip on a connection: the ACK's MSA-1, or undefined when the connection failed or timed out. */
class MllpClient {
  private socket?: net.Socket;
  private buf = '';
  private waiter?: (ack: string | undefined) => void;

  constructor(private readonly port: () => number) {}

  private connect(): Promise<net.Socket> {
    return new Promise((res, rej) => {
      const s = net.connect(this.port(), '127.0.0.1');
      s.setNoDelay(true);
      s.once('connect', () => {
        s.off('error', rej);
        s.on('error', () => undefined);
        s.on('data', (b) => {
          this.buf += b.toString('utf8');
          const end = this.buf.indexOf('\x1c\r');
          if (end >= 0) {
            const frame = this.buf.slice(this.buf.indexOf('\x0b') + 1, end);
            this.buf = this.buf.slice(end + 2);
            this.waiter?.(frame);
          }
        });
        s.once('close', () => {
          if (this.socket === s) this.socket = undefined;
          this.waiter?.(undefined);
        });
        res(s);
      });
      s.once('error', rej);
    });
  }

  async send(message: string, timeoutMs = 15000): Promise<string | undefined> {
    try {
      this.socket ??= await this.connect();
    } catch {
      return undefined;
    }
    const s = this.socket;
    this.buf = '';
    return new Promise((res) => {
      const t = setTimeout(() => {
        s.destroy();
        done(undefined);
      }, timeoutMs);
      const done = (ack: string | undefined) => {
        clearTimeout(t);
        this.waiter = undefined;
        res(ack);
      };
      this.waiter = done;
      s.write(`\x0b${message}\x1c\r`);
    });
  }

  close(): void {
    this.socket?.destroy();
  }
}

/** MLLP: one message in flight per connection; AA or CA is the acknowledgement; AE or no answer is resent. */
export function mllpLoad(ledger: Ledger, port: () => number, opts: LoadOptions): Load {
  let stopped = false;
  const pace = paced(opts);
  const clients: MllpClient[] = [];
  const sender = async () => {
    const client = new MllpClient(port);
    clients.push(client);
    while (!stopped) {
      await pace();
      if (stopped) break;
      const r = ledger.next('mllp');
      const msg = pcd01(r);
      for (let attempt = 0; !stopped; attempt++) {
        if (attempt) {
          ledger.stats.mllp.resends++;
          await sleep(100);
        }
        const ack = await client.send(msg);
        if (!ack) continue;
        const msa = /(?:^|\r)MSA\|([A-Z]{2})\|([^|\r]*)/.exec(ack);
        if (msa && (msa[1] === 'AA' || msa[1] === 'CA') && msa[2] === `FAULT-${r.seq}`) {
          ledger.ack(r);
          break;
        }
        if (msa?.[1] === 'AR' || msa?.[1] === 'CR') {
          ledger.refuse(r, ack.replace(/\r/g, '\n'));
          break;
        }
        // AE/CE: "resend later" (queue or Redis down): resend.
      }
    }
    client.close();
  };
  const running = Promise.all(Array.from({ length: opts.concurrency }, sender));
  return {
    async stop() {
      stopped = true;
      await running;
      for (const c of clients) c.close();
    },
  };
}

export const MQTT_TOPIC = (deviceId: string) => `faults/${deviceId}/measurements`;
/** Where the gateway reports refused MQTT messages (MQTT_ERROR_TOPIC's default). */
const MQTT_ERRORS = 'gateway/errors/#';

/**
 * MQTT: QoS 1 publishes to the broker; its PUBACK is the acknowledgement the device gets. The gateway's persistent
 * session must then take every one of them to the EHR, whether or not it was running when it was published.
 */
export async function mqttLoad(ledger: Ledger, brokerUrl: string, opts: LoadOptions): Promise<Load> {
  const client = await mqtt.connectAsync(brokerUrl, { clientId: `faults-pub-${process.pid}`, clean: true, reconnectPeriod: 200 });
  // The gateway reports what it refuses on its error topic (the device already had the broker's PUBACK).
  await client.subscribeAsync(MQTT_ERRORS, { qos: 1 });
  client.on('message', (topic, payload) => {
    if (!topic.startsWith('gateway/errors/')) return;
    const report = JSON.parse(payload.toString()) as { topic?: string; status?: number; outcome?: { issue?: { diagnostics?: string }[] } };
    ledger.refuse('mqtt', `${report.topic}: ${report.status} ${report.outcome?.issue?.map((i) => i.diagnostics).join('; ')}`);
  });
  let stopped = false;
  const pace = paced(opts);
  const sender = async () => {
    while (!stopped) {
      await pace();
      if (stopped) break;
      const r = ledger.next('mqtt');
      const body = JSON.stringify(measurements(r));
      for (let attempt = 0; !stopped; attempt++) {
        if (attempt) {
          ledger.stats.mqtt.resends++;
          await sleep(100);
        }
        try {
          await client.publishAsync(MQTT_TOPIC(r.deviceId), body, { qos: 1 });
          ledger.ack(r);
          break;
        } catch {
          /* the broker connection dropped: publish again */
        }
      }
    }
  };
  const running = Promise.all(Array.from({ length: opts.concurrency }, sender));
  return {
    async stop() {
      stopped = true;
      await running;
      await client.endAsync().catch(() => undefined);
    },
  };
}

export interface HealthFigures {
  url: string;
  polls: number;
  answered: number;
  /** Polls that got no answer (the process was down, or no answer within 2 s). */
  unanswered: number;
  /** The slowest answered poll, ms. */
  worstMs: number;
  /** Answered polls slower than 100 ms. */
  over100ms: number;
}

const POLLER = `
const { parentPort, workerData } = require('node:worker_threads');
const { performance } = require('node:perf_hooks');
const figures = new Map();
let stopped = false;
let targets = workerData.urls.slice();
const poll = async (url) => {
  const f = { url, polls: 0, answered: 0, unanswered: 0, worstMs: 0, over100ms: 0 };
  figures.set(url, f);
  while (!stopped) {
    const t0 = performance.now();
    f.polls++;
    try {
      const r = await fetch(url + '/healthz', { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      const ms = performance.now() - t0;
      if (r.ok) {
        f.answered++;
        f.worstMs = Math.max(f.worstMs, ms);
        if (ms > 100) f.over100ms++;
      } else f.unanswered++;
    } catch {
      f.unanswered++;
    }
    const wait = 50 - (performance.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
};
const running = targets.map(poll);
parentPort.on('message', async () => {
  stopped = true;
  await Promise.all(running);
  parentPort.postMessage([...figures.values()]);
});
`;

/** Polls each URL's /healthz every ~50 ms until stopped; returns the figures per URL. */
export function pollHealth(urls: string[]): { stop(): Promise<HealthFigures[]> } {
  const worker = new Worker(POLLER, { eval: true, workerData: { urls } });
  return {
    stop: () =>
      new Promise((res, rej) => {
        worker.once('message', (figures: HealthFigures[]) => {
          void worker.terminate();
          res(figures);
        });
        worker.once('error', rej);
        worker.postMessage('stop');
      }),
  };
}
