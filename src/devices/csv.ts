/** A small RFC 4180 CSV reader (quoted fields, doubled quotes, CRLF or LF) for procurement batches. */
export function parseCsv(text: string): { rows: Record<string, string>[]; error?: string } {
  const records: string[][] = [];
  let field = '';
  let rec: string[] = [];
  let quoted = false;
  const s = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === '"' && s[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === '') quoted = true;
    else if (c === ',') {
      rec.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && s[i + 1] === '\n') i++;
      rec.push(field);
      if (rec.some((f) => f !== '')) records.push(rec);
      rec = [];
      field = '';
    } else field += c;
  }
  if (quoted) return { rows: [], error: 'the CSV ends inside a quoted field' };
  rec.push(field);
  if (rec.some((f) => f !== '')) records.push(rec);
  if (records.length < 1) return { rows: [], error: 'the CSV is empty' };
  const header = records[0].map((h) => h.trim());
  if (!header.includes('id')) return { rows: [], error: "the CSV header must have an 'id' column" };
  return { rows: records.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h, (r[i] ?? '').trim()]))) };
}
