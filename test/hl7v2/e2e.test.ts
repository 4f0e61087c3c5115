/**
 * End to end through the real gateway: HL7v2 over a real TCP socket → ACK → resources in the sandbox EHR, queried
 * over HTTP. Plus the conformance run over the public samples in ../shared/samples/hl7v2 (skipped when absent).
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Device, Observation, Patient } from 'fhir/r4';
import type { Gateway } from '../../src/app/gateway.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { EUI64_SYSTEM } from '../../src/hl7v2/config.js';
import { decodeBytes, readHeader, splitMessages } from '../../src/hl7v2/parse.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { eventually, REPO_ROOT, startEhr, startGateway, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { pcdMessage, TestClient } from './helpers.js';

const MDC = 'urn:iso:std:iso:11073:10101';
const LOINC = 'http://loinc.org';
const SAMPLES = resolve(REPO_ROOT, '../shared/samples/hl7v2');
const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

interface Running {
  gateway: Gateway;
  mllpPort: number;
  logs: string[];
}

async function startHl7Gateway(redisUrl: string, ehrUrl: string): Promise<Running> {
  const mllpPort = await freePort();
  const gw = await startGateway({
    REDIS_URL: redisUrl,
    FHIR_BASE_URL: ehrUrl,
    UNKNOWN_PATIENT_POLICY: 'create',
    PATIENT_IDENTIFIER_SYSTEM: 'urn:test:mrn',
    DEVICE_IDENTIFIER_SYSTEM: 'urn:test:device',
    MLLP_PORT: String(mllpPort),
    MLLP_HOST: '127.0.0.1',
    // A real EHR is configured: MLLP needs to know its senders.
    MLLP_ALLOWED_SENDERS: '*=127.0.0.1',
    // Every line the gateway writes about a message, an accepted one's included, is checked for the control id.
    LOG_LEVEL: 'debug',
  });
  return { gateway: gw.gateway, mllpPort, logs: gw.logs };
}

const codesOf = (o: Observation) =>
  (o.code.coding ?? []).map((c) => `${c.system === LOINC ? 'LN' : c.system === MDC ? 'MDC' : c.system}:${c.code}`).join(' ');

describe('hl7v2 end to end (real gateway, sandbox EHR over HTTP)', function () {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: Running;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startHl7Gateway(redis.url, ehr.url);
  });
  after(async () => {
    if (process.env.HL7_TEST_LOGS) console.log(gw?.logs.filter((l) => /"level":(40|50|60)/.test(l)).join('\n'));
    await gw?.gateway.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('PCD-01 over MLLP: AA, then the Device and correctly coded Observations in the EHR', async () => {
    const c = await TestClient.connect(gw.mllpPort);
    c.send(fixture('pcd01-monitor.hl7'));
    const ack = readAck(await c.next());
    assert.deepEqual([ack.code, ack.controlId], ['AA', 'PCD-0001']);
    c.close();
    const obs = await eventually(
      async () => {
        const all = await ehr.search<Observation>('Observation', { _count: '1000' });
        const mine = all.filter((o) => o.device?.identifier?.value === '00-A0-C9-14-C8-29-00-01' || o.device?.reference);
        return mine.length >= 8 ? all : undefined;
      },
      20000,
      'observations of PCD-0001 in the EHR',
    );
    const byLoinc = (code: string) =>
      obs.find(
        (o) => o.code.coding?.some((k) => k.system === LOINC && k.code === code) && o.effectiveDateTime?.startsWith('2026-11-23T10:1'),
      );
    assert.equal(codesOf(byLoinc('2708-6') as Observation), 'LN:2708-6 MDC:150456');
    assert.equal(byLoinc('2708-6')?.valueQuantity?.code, '%');
    assert.equal(codesOf(byLoinc('8867-4') as Observation), 'LN:8867-4 MDC:149530');
    const bp = byLoinc('85354-9') as Observation;
    assert.deepEqual(
      bp.component?.map((k) => [k.code.coding?.[0]?.code, k.valueQuantity?.value]),
      [
        ['8480-6', 128],
        ['8462-4', 84],
        ['8478-0', 99],
      ],
    );
    const devices = await ehr.search<Device>('Device', { _count: '100' });
    assert.ok(devices.some((d) => d.identifier?.some((i) => i.system === EUI64_SYSTEM && i.value === '00-A0-C9-14-C8-29-00-01')));
  });

  it('ADT^A01 over MLLP: AA, then the Patient in the EHR; ADT^A40 acknowledged and logged', async () => {
    const c = await TestClient.connect(gw.mllpPort);
    c.send(fixture('adt-a01.hl7'));
    assert.equal(readAck(await c.next()).code, 'AA');
    c.send(fixture('adt-a40.hl7'));
    assert.equal(readAck(await c.next()).code, 'AA');
    c.close();
    const p = await eventually(
      async () =>
        (await ehr.search<Patient>('Patient', { _count: '1000' })).find(
          (x) => x.identifier?.some((i) => i.value === 'MRN-4711' && i.system === 'urn:oid:1.2.276.0.99.1') && x.birthDate,
        ),
      20000,
      'patient',
    );
    assert.equal(p.gender, 'female');
    assert.equal(p.name?.[0]?.family, 'Muster');
    assert.ok(gw.logs.some((l) => /ADT\^A40/.test(l)));
  });

  it('POST /hl7v2 answers with the ACK in the body', async () => {
    const r = await fetch(`${gw.gateway.url}/hl7v2`, {
      method: 'POST',
      headers: { 'content-type': 'x-application/hl7-v2+er7' },
      body: pcdMessage('E2E-HTTP-1', { value: 93 }),
    });
    assert.equal(r.status, 200);
    assert.equal(readAck(await r.text()).code, 'AA');
    const metrics = await (await fetch(`${gw.gateway.url}/metrics`)).text();
    assert.match(metrics, /hl7_acks_total\{channel="http",code="AA"\} [1-9]/);
    assert.match(metrics, /hl7_acks_total\{channel="mllp",code="AA"\} [1-9]/);
  });

  it('logs a control id only as a keyed hash: a sender that puts an MRN in MSH-10 leaks nothing into the log', async () => {
    const mrn = 'MRN-55501234';
    const other = 'MRN-55509999';
    const c = await TestClient.connect(gw.mllpPort);
    try {
      c.send(pcdMessage(mrn, { value: 94 }));
      assert.equal(readAck(await c.next()).code, 'AA');
      c.send(pcdMessage(mrn, { value: 94 })); // a resend: answered from the ACK cache, logged as such
      assert.equal(readAck(await c.next()).code, 'AA');
      c.send(pcdMessage(other, { pid: false })); // refused (AE) and kept
      assert.equal(readAck(await c.next()).code, 'AE');
    } finally {
      c.close();
    }
    const mine = await eventually(
      () => {
        const l = gw.logs.filter((x) => /hl7: (message accepted|resend of an accepted|message refused)/.test(x));
        return l.length >= 3 ? l : undefined;
      },
      5000,
      'the log lines of the three messages',
    );
    for (const line of gw.logs) {
      assert.ok(!line.includes('55501234') && !line.includes('55509999'), `a log line carries the control id: ${line}`);
    }
    const hashes = mine.map((l) => (JSON.parse(l) as { controlIdHash?: string }).controlIdHash).filter(Boolean);
    assert.ok(hashes.length >= 3 && hashes.every((h) => /^[0-9a-f]{16}$/.test(h as string)), JSON.stringify(hashes));
    assert.equal(new Set(hashes.slice(-3)).size, 2, 'the two lines about one message share its hash');
    // The refusal store (operator role) keeps the id itself, for whoever must find the message.
    const kept = await fetch(`${gw.gateway.url}/api/refusals?controlId=${other}`).then((r) => r.json() as Promise<{ total: number }>);
    assert.equal(kept.total, 1);
  });

  describe('conformance over the public samples (../shared/samples/hl7v2)', function () {
    before(function () {
      if (!existsSync(SAMPLES)) this.skip();
    });

    /** What each sample must get. Positive = AA (original mode) or CA/AA as its MSH-15/16 ask. */
    const expected: Record<string, 'positive' | 'AE' | 'refused'> = {
      'ihepcdtf_pcd01-dec-acme-gateway-nibp-ucum.hl7': 'positive',
      'ihepcdtf_pcd01-philips-physio-monitor-8859-1.hl7': 'positive',
      'ipf_continua-wan-pulse-oximeter-waveform.hl7': 'positive',
      'ipf_pcd01-bp-maximal-8859-1-multi-obr.hl7': 'positive',
      'ipf_pcd01-bp-minimal.hl7': 'positive',
      'ipf_adt-a01-utf8-umlauts-no-msh18.hl7': 'positive',
      'mirth_adt-a01-accmgr-v2.3.1.hl7': 'positive',
      'msfhirconv_adt-a04-utf8-bom.hl7': 'positive',
      'msfhirconv_oru-r01-nist-lri-cbc.hl7': 'positive',
      'simplehl7_oru-r01-lipid-panel-null-quotes.hl7': 'positive',
      'ipf_adt-a01-missing-pid.hl7': 'AE',
      'hl7dotnetcore_orm-o01-pid5-all-five-escapes-F-S-R-E-T.hl7': 'refused',
      'mirth_batch-fhs-bhs-no-trailers-orm.hl7': 'refused',
      'mirth_subcomponents-empty-leading.hl7': 'refused',
    };

    it('answers every sample with exactly one ACK per message, the right MSA-2 and code, and never crashes', async () => {
      const files = readdirSync(SAMPLES)
        .filter((f) => f.endsWith('.hl7'))
        .sort();
      assert.ok(files.length > 0);
      const c = await TestClient.connect(gw.mllpPort);
      let sentinel = 0;
      for (const f of files) {
        const bytes = readFileSync(resolve(SAMPLES, f));
        const { text } = decodeBytes(bytes);
        const ids = splitMessages(text).messages.map((m) => readHeader(m).controlId);
        c.send(bytes); // the file as published: CR, LF or CRLF, BOM, charset as they are
        // A sentinel after each file: everything before its ACK belongs to the file (answers are in order).
        const sid = `SENTINEL-${++sentinel}`;
        c.send(pcdMessage(sid, { value: 90 + (sentinel % 10) }));
        const msas: { code: string; id: string; errors: number }[] = [];
        for (;;) {
          const frame = await c.next(15000);
          const msgs = splitMessages(frame).messages;
          const acks = msgs.map((m) => readAck(m));
          if (acks.some((a) => a.controlId === sid)) break;
          for (const a of acks) msas.push({ code: a.code, id: a.controlId, errors: a.errors.length });
        }
        assert.deepEqual(
          msas.map((m) => m.id),
          ids,
          `${f}: one ACK per message, MSA-2 = MSH-10`,
        );
        const want = expected[f];
        for (const m of msas) {
          if (want === 'positive') assert.ok(m.code === 'AA' || m.code === 'CA', `${f}: ${m.code}`);
          else if (want === 'AE') assert.ok(m.code === 'AE' && m.errors > 0, `${f}: ${m.code}`);
          else if (want === 'refused') assert.ok((m.code === 'AR' || m.code === 'CR') && m.errors > 0, `${f}: ${m.code}`);
        }
      }
      c.close();
    });

    it('delivers the resources the PCD-01 and ADT samples imply, with the codes of the verified reference', async () => {
      const find = async (what: string, pred: (o: Observation) => boolean) =>
        eventually(async () => (await ehr.search<Observation>('Observation', { _count: '2000' })).find(pred), 20000, what);
      const mdc = (o: Observation, code: string) => !!o.code.coding?.some((k) => k.system === MDC && k.code === code);
      const comps = (o: Observation) =>
        (o.component ?? []).map((k) => `${k.code.coding?.[0]?.code}=${k.valueQuantity?.value} ${k.valueQuantity?.code}`);

      // IHE PCD TF DEC gateway sample: NIBP 111/60 (80) + pulse rate from NIBP 63 /min.
      const dec = await find('DEC NIBP', (o) => mdc(o, '150020') && o.effectiveDateTime === '2011-06-02T04:58:42+00:00');
      assert.equal(codesOf(dec), 'LN:85354-9 MDC:150020');
      assert.deepEqual(comps(dec), ['8480-6=111 mm[Hg]', '8462-4=60 mm[Hg]', '8478-0=80 mm[Hg]']);
      const decPulse = await find('DEC pulse', (o) => mdc(o, '149546'));
      assert.equal(codesOf(decPulse), 'LN:8867-4 MDC:149546');
      assert.deepEqual([decPulse.valueQuantity?.value, decPulse.valueQuantity?.code], [63, '/min']);

      // Philips monitor: ECG HR 147842 → 8867-4; RR 151562 → 9279-1; SpO2 150456 → 2708-6; NIBP 117/82 (90);
      // QT/QTc and relative perfusion have no verified LOINC pairing: MDC only.
      const philips = (code: string) =>
        find(`Philips ${code}`, (o) => mdc(o, code) && (o.effectiveDateTime ?? '').startsWith('2015-01-22'));
      assert.equal(codesOf(await philips('147842')), 'LN:8867-4 MDC:147842');
      assert.equal(codesOf(await philips('151562')), 'LN:9279-1 MDC:151562');
      const spo2 = await philips('150456');
      assert.equal(codesOf(spo2), 'LN:2708-6 MDC:150456');
      assert.equal(spo2.valueQuantity?.code, '%');
      assert.deepEqual(comps(await philips('150020')), ['8480-6=117 mm[Hg]', '8462-4=82 mm[Hg]', '8478-0=90 mm[Hg]']);
      for (const code of ['147232', '147236', '150448']) assert.equal(codesOf(await philips(code)), `MDC:${code}`);
      assert.equal((await philips('150456')).status, 'cancelled', 'OBX-11 X → cancelled (table 0085)');

      // Continua pulse oximeter: SpO2 80.5 % and the pleth waveform as SampledData.
      const cont = await find('Continua SpO2', (o) => mdc(o, '150456') && o.valueQuantity?.value === 80.5);
      assert.equal(codesOf(cont), 'LN:2708-6 MDC:150456');
      const pleth = await find('Continua pleth', (o) => mdc(o, '150452'));
      assert.equal(pleth.valueSampledData?.data, '12 123 24 12 234 55 66 77 88 99');

      // IPF minimal and maximal BP.
      const minimal = await find('minimal BP', (o) => mdc(o, '150020') && comps(o).includes('8480-6=120 mm[Hg]'));
      assert.deepEqual(comps(minimal), ['8480-6=120 mm[Hg]', '8462-4=80 mm[Hg]', '8478-0=100 mm[Hg]']);
      const maximal = await find('maximal BP', (o) => mdc(o, '150020') && comps(o).includes('8480-6=140 mm[Hg]'));
      assert.deepEqual(comps(maximal), ['8480-6=140 mm[Hg]', '8462-4=70 mm[Hg]', '8478-0=100 mm[Hg]']);

      // ADT samples: the patients, with the umlauts decoded.
      const patients = await eventually(
        async () => {
          const all = await ehr.search<Patient>('Patient', { _count: '1000' });
          const want = ['79471', '999945612', 'MRN12345'];
          return want.every((v) => all.some((p) => p.identifier?.some((i) => i.value === v) && p.name?.length)) ? all : undefined;
        },
        20000,
        'ADT patients',
      ).catch(async (e) => {
        console.log(JSON.stringify(await ehr.search<Patient>('Patient', { _count: '1000' }), null, 0));
        console.log(gw.logs.filter((l) => /dead|error|warn/i.test(l)).join('\n'));
        throw e;
      });
      const umlaut = patients.find((p) => p.identifier?.some((i) => i.value === '79471'));
      assert.deepEqual(umlaut?.name?.[0], { family: 'Nächname', given: ['Vörname'] });
    });
  });
});
