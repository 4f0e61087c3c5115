/** A line diff (longest common subsequence) of two texts as HTML: removed lines in <del>, added ones in <ins>. */
import { type Html, html } from '../html.js';

export function lineDiff(before: string, after: string): Html {
  const a = before.split('\n');
  const b = after.split('\n');
  // Texts of templates are small (a few hundred lines); beyond 2000 lines a diff is not worth the memory here.
  if (a.length * b.length > 4_000_000) return html`(too large to compare here)`;
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--)
    for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: Html[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push(html`  ${a[i]}\n`);
      i++;
      j++;
    } else if (j < b.length && (i === a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(html`<ins>+ ${b[j++]}</ins>\n`);
    else out.push(html`<del>- ${a[i++]}</del>\n`);
  }
  return html`${out}`;
}
