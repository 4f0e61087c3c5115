/**
 * Correct codes are a safety property. The gateway's code tables are checked against the R4 profiles in profiles/,
 * against the MDC code arithmetic, and — when the verified terminology reference of the project is present beside
 * the repository — row by row against it.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LOINC_VITALS, MDC_METRICS, MDC_UNIT_TABLE, toUcum, convertExact, findMdcMetric } from '../../src/fhir/terminology.js';
import { loadProfiles } from '../../src/fhir/profiles.js';
import { REPO_ROOT } from '../helpers/harness.js';

const REFERENCE = resolve(REPO_ROOT, '../shared/reference/terminology.md');

describe('terminology tables', () => {
  it('every MDC metric code is partition × 65536 + term, in the metrics partition (2)', () => {
    for (const m of MDC_METRICS.values()) {
      assert.equal(m.code, m.partition * 65536 + m.term, m.refId);
      assert.equal(m.partition, 2, m.refId);
    }
    for (const u of new Set(MDC_UNIT_TABLE.values())) assert.equal(Math.floor(u.code / 65536), 4, `${u.refId} is in the units partition`);
  });

  it('every LOINC code the R4 vital-signs profiles fix is known, with a unit the profile allows', () => {
    const { all } = loadProfiles();
    for (const p of all.filter((r) => r.loinc && r.id !== 'vitalspanel')) {
      const v = LOINC_VITALS.get(p.loinc as string);
      assert.ok(v, `profile ${p.id} (${p.loinc}) is in LOINC_VITALS`);
      if (p.units) assert.ok(v.ucum && p.units.includes(v.ucum), `${p.id}: default unit ${v.ucum} is one of ${p.units.join(', ')}`);
      for (const c of p.components)
        assert.ok(LOINC_VITALS.get(c.loinc)?.ucum && c.units.includes(LOINC_VITALS.get(c.loinc)!.ucum!), `${p.id} component ${c.loinc}`);
    }
  });

  it("every MDC metric with a LOINC vital-sign code uses that code's profile unit by default", () => {
    const { byLoinc } = loadProfiles();
    for (const m of MDC_METRICS.values()) {
      const p = m.loinc ? byLoinc.get(m.loinc.code) : undefined;
      if (p?.units && m.ucum) assert.ok(p.units.includes(m.ucum), `${m.refId}: ${m.ucum} allowed by ${p.id}`);
    }
  });

  it('the known pitfalls: the two end-tidal CO2 terms are not swapped; diastolic is 8462-4, never 8867-4', () => {
    assert.equal(findMdcMetric('MDC_CONC_AWAY_CO2_ET')?.code, 151708);
    assert.equal(findMdcMetric('MDC_AWAY_CO2_ET')?.code, 151728);
    assert.equal(findMdcMetric('MDC_AWAY_CO2_ET')?.loinc, undefined, '151728 has no verified LOINC pairing');
    for (const m of MDC_METRICS.values()) if (m.bp?.role === 'diastolic') assert.equal(m.loinc?.code, '8462-4', m.refId);
    assert.equal(findMdcMetric(150456)?.refId, 'MDC_PULS_OXIM_SAT_O2');
    assert.equal(findMdcMetric('150456')?.loinc?.code, '2708-6');
  });

  it('normalises device unit spellings to UCUM, and converts only exactly', () => {
    const cases: [string, string | undefined][] = [
      ['bpm', '/min'],
      ['{beats}/min', '/min'],
      ['mmHg', 'mm[Hg]'],
      ['degC', 'Cel'],
      ['°F', '[degF]'],
      ['lb', '[lb_av]'],
      ['mg/dl', 'mg/dL'],
      ['MDC_DIM_MMHG', 'mm[Hg]'],
      ['266016', 'mm[Hg]'],
      ['264864', '/min'],
      ['262688', '%'],
      ['furlongs', undefined],
    ];
    for (const [input, expected] of cases) assert.equal(toUcum(input), expected, input);
    assert.equal(convertExact(1.82, 'm', 'cm'), 182);
    assert.equal(convertExact(100, 'kPa', 'mm[Hg]'), undefined, 'no approximate conversions');
  });
});

describe('terminology tables against the verified reference', function () {
  before(function () {
    if (!existsSync(REFERENCE)) this.skip();
  });

  /** Table rows of a markdown section: cells split on | (escaped \| kept). */
  function tableRows(md: string, heading: RegExp): string[][] {
    const start = md.search(heading);
    assert.ok(start >= 0, `section ${heading}`);
    const rest = md.slice(start).split('\n').slice(1);
    const rows: string[][] = [];
    let inTable = false;
    for (const line of rest) {
      if (line.startsWith('|')) {
        inTable = true;
        rows.push(
          line
            .split(/(?<!\\)\|/)
            .slice(1, -1)
            .map((c) => c.trim()),
        );
      } else if (inTable) break;
    }
    return rows.slice(2);
  }

  it('every MDC metric matches the reference row: reference id, code, and LOINC only where verified', () => {
    const md = readFileSync(REFERENCE, 'utf8');
    const rows = tableRows(md, /^## Table 1/m);
    const byRef = new Map<string, { code: number; loincCell: string; status: string }>();
    for (const r of rows) {
      const [, , refCell, codeCell, loincCell, , status] = r;
      const codes = [...codeCell.matchAll(/\*\*([\d /]+)\*\*/g)].flatMap((m) => m[1].split('/').map((s) => Number(s.trim())));
      const refs = refCell.split('/').map((s) => s.trim());
      // "MDC_PRESS_BLD_ART / _SYS / _DIA / _MEAN": suffixes extend the first id.
      const ids = refs.map((s, i) => (i > 0 && s.startsWith('_') ? refs[0] + s : s));
      ids.forEach((id, i) => byRef.set(id, { code: codes[i], loincCell, status }));
    }
    for (const m of MDC_METRICS.values()) {
      let ref = byRef.get(m.refId);
      assert.ok(ref, `${m.refId} is in the reference`);
      // Row 17 (ART label) says "as rows 16–16c" (the ABP label): read the LOINC cell there.
      if (/^as rows 16/.test(ref.loincCell))
        ref = { ...ref, loincCell: byRef.get(m.refId.replace('MDC_PRESS_BLD_ART', 'MDC_PRESS_BLD_ART_ABP'))?.loincCell ?? '' };
      assert.equal(m.code, ref.code, `${m.refId} code`);
      if (m.loinc) {
        assert.match(
          ref.loincCell,
          new RegExp(`(^|\\*\\*|\\s)${m.loinc.code.replace('-', '\\-')}(\\*\\*|\\s|$)`),
          `${m.refId}: LOINC ${m.loinc.code} per the reference`,
        );
        assert.doesNotMatch(ref.status, /LOINC UNVERIFIED/, `${m.refId}: the reference does not verify a LOINC pairing`);
      } else {
        assert.match(ref.status, /LOINC UNVERIFIED/, `${m.refId}: no LOINC in the gateway, and none verified in the reference`);
      }
    }
  });

  it('every MDC unit code maps to the UCUM the reference gives', () => {
    const md = readFileSync(REFERENCE, 'utf8');
    const rows = tableRows(md, /^## Table 2/m);
    const ref = new Map<string, { cf: number; ucum: string }>();
    for (const r of rows) {
      const id = r[0].split(' ')[0];
      const cf = Number(/\*\*(\d+)\*\*/.exec(r[2])?.[1]);
      const ucum = /`([^`]+)`/.exec(r[3])?.[1] ?? '';
      ref.set(id, { cf, ucum });
    }
    for (const u of new Set(MDC_UNIT_TABLE.values())) {
      if (u.refId === 'MDC_DIM_X_SEC') continue; // used by the reference text, not a row of its table
      const row = ref.get(u.refId);
      assert.ok(row, `${u.refId} in the reference`);
      assert.equal(u.code, row.cf, `${u.refId} CF code`);
      assert.equal(u.ucum, row.ucum, `${u.refId} UCUM`);
    }
  });
});
