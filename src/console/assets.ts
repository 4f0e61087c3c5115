/**
 * The console's one stylesheet, served at /console/static/console.css (kept in a module so the build carries it).
 * Colours meet WCAG AA contrast; focus is always visible; nothing depends on colour alone.
 */
export const CONSOLE_CSS = `
:root { --fg:#1b1f24; --muted:#4a5360; --bg:#fff; --line:#c9d1d9; --accent:#0b57d0; --bad:#a4161a; --ok:#1e6b2f; --warn:#7a4d00; --panel:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); }
:focus-visible { outline:3px solid #ff9f1c; outline-offset:2px; }
.skip { position:absolute; left:-999px; top:0; background:#fff; padding:.5em; }
.skip:focus { left:.5em; }
header.top { display:flex; flex-wrap:wrap; gap:1em; align-items:center; padding:.5em 1em; background:#13294b; color:#fff; }
header.top a { color:#fff; text-decoration:none; padding:.3em .5em; border-radius:4px; }
header.top a[aria-current="page"] { background:#fff; color:#13294b; font-weight:600; }
header.top nav ul { display:flex; flex-wrap:wrap; gap:.3em; list-style:none; margin:0; padding:0; }
.brand { font-weight:700; }
.signout { margin-left:auto; display:flex; gap:.5em; align-items:center; }
main { padding:1em 1.5em 3em; max-width:1400px; }
main.narrow { max-width:32em; margin:3em auto; }
h1 { font-size:1.5em; margin:.2em 0 .6em; } h2 { font-size:1.2em; margin:1.4em 0 .5em; } h3 { font-size:1.05em; }
table { border-collapse:collapse; width:100%; margin:.5em 0 1em; }
th, td { border-bottom:1px solid var(--line); padding:.35em .5em; text-align:left; vertical-align:top; }
th { background:var(--panel); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
caption { text-align:left; font-weight:600; padding:.3em 0; }
.muted { color:var(--muted); }
ul.plain { list-style:none; margin:.2em 0 0; padding:0; }
.error { color:var(--bad); font-weight:600; }
.ok { color:var(--ok); font-weight:600; }
.warn { color:var(--warn); font-weight:600; }
.cards { display:flex; flex-wrap:wrap; gap:1em; }
.card { border:1px solid var(--line); border-radius:6px; padding:.6em .9em; background:var(--panel); min-width:12em; }
.card strong { display:block; font-size:1.4em; }
.charts { display:flex; flex-wrap:wrap; gap:1.2em; }
figure.chart { margin:0; } figure.chart svg { background:var(--panel); border:1px solid var(--line); }
figure.chart path { stroke-width:1.6; } .s0 { stroke:#0b57d0; } .s1 { stroke:#a4161a; } .axis { stroke:var(--line); }
figcaption { font-size:.9em; }
form.filters { display:flex; flex-wrap:wrap; gap:.6em 1em; align-items:end; margin:.5em 0 1em; }
form.filters label, form.stack label { display:block; font-size:.9em; color:var(--muted); }
form.stack { display:grid; gap:.4em; max-width:40em; }
input, select, textarea, button { font:inherit; }
input, select, textarea { border:1px solid #6b7480; border-radius:4px; padding:.3em .4em; background:#fff; color:var(--fg); }
textarea { width:100%; font-family:ui-monospace, Menlo, Consolas, monospace; font-size:13px; }
button { background:var(--accent); color:#fff; border:0; border-radius:4px; padding:.4em .9em; cursor:pointer; }
button.secondary { background:#fff; color:var(--accent); border:1px solid var(--accent); }
button.danger { background:var(--bad); }
.inline { display:inline; }
.actions { display:flex; flex-wrap:wrap; gap:.5em; margin:.5em 0; }
pre { background:var(--panel); border:1px solid var(--line); padding:.6em; overflow:auto; max-height:28em; font-size:13px; white-space:pre-wrap; word-break:break-word; }
.side { display:grid; grid-template-columns:repeat(auto-fit, minmax(22em, 1fr)); gap:1em; }
.editor { display:grid; grid-template-columns:repeat(auto-fit, minmax(26em, 1fr)); gap:1em; }
.key { font-family:ui-monospace, monospace; background:#fff8e1; border:1px solid #b58100; padding:.5em; word-break:break-all; }
.notice { border-left:4px solid var(--accent); background:var(--panel); padding:.5em .8em; }
ins { background:#d8f5dd; text-decoration:none; } del { background:#fbd9d9; }
progress { width:20em; height:1.2em; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:.2em 1em; } dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; }
`;
