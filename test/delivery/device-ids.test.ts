/**
 * Device ids learnt from the EHR's answers (delivery/device-ids.ts): a device's next readings refer to its Device by id
 * instead of carrying its conditional create; a transaction the EHR refuses for referring to a Device that is gone is
 * written again with the conditional create; DELIVERY_DEVICE_CACHE_S=0 turns it off. End to end: real Redis, the
 * sandbox EHR over HTTP with faults in front of it, the gateway's delivery.
 */
import { strict as assert } from 'node:assert';
import type { Bundle, Device, Observation } from 'fhir/r4';
import { DeviceIds } from '../../src/delivery/device-ids.js';
import { eventually, postJson, type Stack, type TestEhr, useStack } from '../helpers/harness.js';
import { useTwoEhrs } from '../destinations/helpers.js';

const reading = (deviceId: string, minute: number) => ({
  deviceId,
  patientId: 'MRN-DEVIDS',
  timestamp: `2026-12-05T08:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (minute % 10), unit: '%' }],
});

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');

/** The transactions the EHR received, in order. */
const transactions = (stack: Stack) => stack.ehr.requests.filter(isTransaction).map((r) => r.body as Bundle);
const deviceEntries = (b: Bundle) => (b.entry ?? []).filter((e) => e.resource?.resourceType === 'Device');
const observationsOf = (b: Bundle) =>
  (b.entry ?? []).map((e) => e.resource).filter((r): r is Observation => r?.resourceType === 'Observation');

/** Sends a reading and waits until the EHR has its Observation (one at a time: each goes in a transaction of its own). */
async function deliver(stack: Stack, deviceId: string, minute: number): Promise<Observation> {
  assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading(deviceId, minute))).status, 202);
  return eventually(
    async () =>
      (await stack.ehr.search<Observation>('Observation', { _count: '100' })).find((o) =>
        o.effectiveDateTime?.includes(`08:${String(minute).padStart(2, '0')}`),
      ),
    20_000,
    `the reading of minute ${minute} at the EHR`,
  );
}

describe('delivery: Device ids learnt from the EHR, DELIVERY_DEVICE_CACHE_S=60 (end to end)', function () {
  this.timeout(60_000);
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', DELIVERY_DEVICE_CACHE_S: '60' });

  it("writes a device's Device once; its next readings refer to it by id, and the EHR has one Device", async () => {
    const first = await deliver(stack, 'DEVIDS-1', 1);
    const second = await deliver(stack, 'DEVIDS-1', 2);
    const third = await deliver(stack, 'DEVIDS-1', 3);
    const [t1, t2, t3] = transactions(stack);
    assert.equal(deviceEntries(t1).length, 1, 'the first transaction writes the Device (conditional create)');
    assert.match(deviceEntries(t1)[0].request?.ifNoneExist ?? '', /^identifier=.*DEVIDS-1$/);
    const devices = await stack.ehr.search<Device>('Device', {});
    assert.equal(devices.length, 1);
    const ref = `Device/${devices[0].id}`;
    assert.equal(first.device?.reference, ref);
    for (const t of [t2, t3]) {
      assert.deepEqual(deviceEntries(t), [], 'later transactions carry no Device');
      assert.deepEqual(
        observationsOf(t).map((o) => o.device?.reference),
        [ref],
        'their Observation refers to the Device by id',
      );
    }
    assert.equal(second.device?.reference, ref);
    assert.equal(third.device?.reference, ref);
  });

  it('a transaction refused for a Device that is gone is written again with its conditional create; nothing is lost', async () => {
    await deliver(stack, 'DEVIDS-2', 10);
    const [device] = await stack.ehr.search<Device>('Device', { identifier: 'DEVIDS-2' });
    const gone = `Device/${device.id}`;
    // The Device is deleted on the EHR, which then refuses a reference to it, as a server that checks references does.
    assert.equal((await fetch(`${stack.ehr.url}/${gone}`, { method: 'DELETE' })).status < 300, true);
    stack.ehr.faults.push({
      status: 400,
      match: (req) => isTransaction(req) && JSON.stringify(req.body ?? '').includes(`"${gone}"`),
      body: {
        resourceType: 'OperationOutcome',
        issue: [
          { severity: 'error', code: 'processing', diagnostics: `Resource ${gone} not found, specified in path: Observation.device` },
        ],
      },
    });
    const obs = await deliver(stack, 'DEVIDS-2', 11);
    assert.equal(stack.ehr.faults.length, 0, 'the EHR refused the transaction that referred to the deleted Device');
    const [refused, again] = transactions(stack).slice(-2);
    assert.deepEqual(deviceEntries(refused), []);
    assert.equal(deviceEntries(again).length, 1, 'written again with the Device');
    const now = await stack.ehr.search<Device>('Device', { identifier: 'DEVIDS-2' });
    assert.equal(now.length, 1, 'the Device was created again');
    assert.equal(obs.device?.reference, `Device/${now[0].id}`);
    assert.notEqual(obs.device?.reference, gone);
    const dead = await (await fetch(`${stack.gw.url}/api/dead-letters`)).json();
    assert.equal(dead.total, 0, 'no dead letter');
    // And the new id is the one used next.
    await deliver(stack, 'DEVIDS-2', 12);
    const last = transactions(stack).at(-1) as Bundle;
    assert.deepEqual(deviceEntries(last), []);
    assert.deepEqual(
      observationsOf(last).map((o) => o.device?.reference),
      [`Device/${now[0].id}`],
    );
  });

  it("a refusal the Device's conditional create does not cure: the reading is a dead letter, as before", async () => {
    await deliver(stack, 'DEVIDS-3', 20);
    const refusal = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'refused' }] };
    // Refused with the Device by id, and refused again with the Device's conditional create: the second answer stands.
    stack.ehr.faults.push({ status: 422, body: refusal, match: isTransaction }, { status: 422, body: refusal, match: isTransaction });
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('DEVIDS-3', 21))).status, 202);
    await eventually(async () => (await (await fetch(`${stack.gw.url}/api/dead-letters`)).json()).total === 1, 20_000, 'the dead letter');
    const [byId, withDevice] = transactions(stack).slice(-2);
    assert.deepEqual(deviceEntries(byId), []);
    assert.equal(deviceEntries(withDevice).length, 1);
    assert.equal(stack.ehr.faults.length, 0);
  });
});

describe('delivery: Device ids off by default (DELIVERY_DEVICE_CACHE_S=0, end to end)', function () {
  this.timeout(60_000);
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create' });

  it('every transaction carries its Device', async () => {
    await deliver(stack, 'DEVIDS-OFF', 30);
    await deliver(stack, 'DEVIDS-OFF', 31);
    assert.deepEqual(
      transactions(stack).map((t) => deviceEntries(t).length),
      [1, 1],
    );
    assert.equal((await stack.ehr.search<Device>('Device', { identifier: 'DEVIDS-OFF' })).length, 1);
  });
});

describe('delivery: Device ids per destination (deviceCacheS in the destinations file, end to end)', function () {
  this.timeout(60_000);
  // 'ehr' checks references and caches Device ids; 'research' does not.
  const s = useTwoEhrs((checks, lax) => [
    { name: 'ehr', baseUrl: checks.url, deviceCacheS: 60 },
    { name: 'research', baseUrl: lax.url },
  ]);

  it('the destination that sets it refers to the Device by id; the other writes it every time', async () => {
    const devicesPerTransaction = (ehr: TestEhr) => ehr.requests.filter(isTransaction).map((r) => deviceEntries(r.body as Bundle).length);
    for (const minute of [40, 41]) {
      assert.equal((await postJson(`${s.gw.url}/ingest/measurements`, reading('DEVIDS-DEST', minute))).status, 202);
      await eventually(
        () => devicesPerTransaction(s.a).length === minute - 39 && devicesPerTransaction(s.b).length === minute - 39,
        20_000,
        `reading ${minute} at both destinations`,
      );
    }
    assert.deepEqual(devicesPerTransaction(s.a), [1, 0]);
    assert.deepEqual(devicesPerTransaction(s.b), [1, 1]);
  });
});

describe('delivery: DeviceIds', () => {
  const bundle = (method: 'POST' | 'PUT', value = 'D1'): Bundle => ({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:1',
        resource: { resourceType: 'Device', identifier: [{ system: 'urn:dev', value }] } as Device,
        request:
          method === 'POST'
            ? { method, url: 'Device', ifNoneExist: `identifier=urn:dev|${value}` }
            : { method, url: 'Device?identifier=x' },
      },
      { fullUrl: 'urn:uuid:2', resource: { resourceType: 'Observation' } as never, request: { method: 'POST', url: 'Observation' } },
    ],
  });
  const answered = new Map([
    ['urn:uuid:1', 'Device/42'],
    ['urn:uuid:2', 'Observation/7'],
  ]);

  it('learns conditional creates, not updates; answers for its time; forgets', () => {
    let now = 1000;
    const ids = new DeviceIds(60_000, () => now);
    ids.learn(bundle('PUT'), answered);
    const used = new Set<string>();
    assert.equal(ids.lookup(used)?.('urn:dev|D1'), undefined, 'a Device written by update is not learnt');
    ids.learn(bundle('POST'), answered);
    assert.equal(ids.lookup(used)?.('urn:dev|D1'), 'Device/42');
    assert.deepEqual([...used], ['urn:dev|D1'], 'the lookup records what it answered');
    now += 59_999;
    assert.equal(ids.lookup(new Set())?.('urn:dev|D1'), 'Device/42');
    now += 1;
    assert.equal(ids.lookup(new Set())?.('urn:dev|D1'), undefined, 'after its time the Device is written again');
    assert.equal(ids.size, 0);
    ids.learn(bundle('POST'), answered);
    ids.forget(['urn:dev|D1']);
    assert.equal(ids.lookup(new Set())?.('urn:dev|D1'), undefined);
  });

  it('off at 0: no lookup, nothing learnt', () => {
    const ids = new DeviceIds(0);
    ids.learn(bundle('POST'), answered);
    assert.equal(ids.lookup(new Set()), undefined);
    assert.equal(ids.size, 0);
  });

  it('bounded: emptied when it passes 10,000 devices', () => {
    const ids = new DeviceIds(60_000);
    for (let i = 0; i < 10_001; i++) ids.learn(bundle('POST', `D${i}`), answered);
    assert.ok(ids.size <= 10_000, `${ids.size} devices`);
  });
});
