/** The mappings folder: a broken mapping disables only itself (reported with file and path), and reloads on change. */
import { strict as assert } from 'node:assert';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applyToRegistry, type LoadResult, loadMappingsDir, watchMappingsDir } from '../../src/adapters/mapping/index.js';
import { mappingsDir } from './helpers.js';

function tempMappings(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'mappings-test-'));
  cpSync(path.join(mappingsDir, 'thermometer'), path.join(dir, 'thermometer'), { recursive: true });
  return dir;
}

const write = (file: string, content: unknown) => {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 1));
};

describe('mappings folder loader', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempMappings();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the good mappings and reports each broken one with file, path and message, never throwing', () => {
    // Not JSON.
    cpSync(path.join(dir, 'thermometer'), path.join(dir, 'broken-json'), { recursive: true });
    write(path.join(dir, 'broken-json/devicecontent.json'), '{ "templateType": "CollectionContent", ');
    // A sample the mapping cannot translate.
    cpSync(path.join(dir, 'thermometer'), path.join(dir, 'bad-sample'), { recursive: true });
    write(path.join(dir, 'bad-sample/samples/export.json'), {
      deviceId: 'TH-1',
      enqueuedTime: '2026-11-23T06:55:12Z',
      telemetry: { bodyTemperature: 'hot' },
      enrichments: { patientId: 'MRN-1' },
    });
    // A template error.
    cpSync(path.join(dir, 'thermometer'), path.join(dir, 'no-values'), { recursive: true });
    write(path.join(dir, 'no-values/devicecontent.json'), {
      templateType: 'CollectionContent',
      template: [
        { templateType: 'IotCentralJsonPathContent', template: { typeName: 'bodytemperature', typeMatchExpression: '$..[?(@telemetry)]' } },
      ],
    });
    // A folder name that is not an adapter id, and a bad adapter.json.
    cpSync(path.join(dir, 'thermometer'), path.join(dir, 'Bad Name'), { recursive: true });
    cpSync(path.join(dir, 'thermometer'), path.join(dir, 'bad-meta'), { recursive: true });
    write(path.join(dir, 'bad-meta/adapter.json'), { description: 42 });
    // Missing files.
    mkdirSync(path.join(dir, 'empty'));
    // Skipped folders.
    mkdirSync(path.join(dir, '_drafts'));

    const r = loadMappingsDir(dir);
    assert.deepEqual(
      r.adapters.map((a) => a.id),
      ['thermometer'],
    );
    const lines = r.errors.map((e) => `${e.file} ${e.path}: ${e.message}`);
    const expectStart = [
      "Bad Name $: folder name 'Bad Name' is not a valid adapter id",
      'bad-meta/adapter.json $.description: must be a string',
      "bad-sample/samples/export.json $.telemetry.bodyTemperature: FHIR template $.template[0] (typeName 'bodytemperature'): value 'temp' must be a number for Quantity, found string \"hot\"",
      'broken-json/devicecontent.json $: not valid JSON',
      'empty/devicecontent.json $: cannot read: ENOENT',
      'empty/fhirmapping.json $: cannot read: ENOENT',
      'no-values/devicecontent.json $.template[0].template.values: at least one value is required',
    ];
    assert.equal(lines.length, expectStart.length, lines.join('\n'));
    expectStart.forEach((start, i) => assert.ok(lines[i].startsWith(start), `${lines[i]}\n  should start with\n${start}`));
  });

  it('reports a missing mappings folder instead of throwing', () => {
    const r = loadMappingsDir(path.join(dir, 'nope'));
    assert.deepEqual(r.adapters, []);
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0].message, /cannot read the mappings folder: ENOENT/);
  });

  it('watches the folder (sub-folders too) and reloads after a change, debounced, until closed', async () => {
    const results: LoadResult[] = [];
    const waiters: { test: (r: LoadResult) => boolean; resolve: () => void }[] = [];
    const when = (test: (r: LoadResult) => boolean) => new Promise<void>((resolve) => waiters.push({ test, resolve }));
    const watcher = watchMappingsDir(
      dir,
      (res) => {
        results.push(res);
        for (const w of waiters) if (w.test(res)) w.resolve();
      },
      { debounceMs: 50 },
    );
    try {
      const added = when((r) => r.adapters.some((a) => a.id === 'thermometer-2'));
      cpSync(path.join(dir, 'thermometer'), path.join(dir, 'thermometer-2'), { recursive: true });
      await added;
      const last = results[results.length - 1];
      assert.deepEqual(last.adapters.map((a) => a.id).sort(), ['thermometer', 'thermometer-2']);
      assert.deepEqual(last.errors, []);
      // An edit inside a mapping folder disables that mapping only.
      const broken = when((r) => r.errors.some((e) => e.file === 'thermometer-2/fhirmapping.json'));
      write(path.join(dir, 'thermometer-2/fhirmapping.json'), '[');
      await broken;
      assert.deepEqual(
        results[results.length - 1].adapters.map((a) => a.id),
        ['thermometer'],
      );
    } finally {
      watcher.close();
    }
  });
});

describe('applying a mappings load to the adapter registry', () => {
  it('registers loaded mappings, unregisters vanished or broken ones, and never replaces a built-in', async () => {
    const { AdapterRegistry } = await import('../../src/adapters/registry.js');
    const registry = new AdapterRegistry();
    const dir = tempMappings();
    try {
      cpSync(path.join(dir, 'thermometer'), path.join(dir, 'measurements'), { recursive: true });
      const first = applyToRegistry(registry, loadMappingsDir(dir), new Set(), new Set(registry.list().map((a) => a.id)));
      assert.deepEqual([...first.ids], ['thermometer']);
      assert.match(first.errors[0].message, /adapter id 'measurements' is taken/);
      assert.notEqual(registry.get('measurements')?.description, registry.get('thermometer')?.description);
      rmSync(path.join(dir, 'thermometer'), { recursive: true });
      const second = applyToRegistry(registry, loadMappingsDir(dir), first.ids, new Set(['measurements']));
      assert.deepEqual([...second.ids], []);
      assert.equal(registry.get('thermometer'), undefined);
      assert.ok(registry.get('measurements'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
