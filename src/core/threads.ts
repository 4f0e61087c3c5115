/**
 * Starting a worker thread on a module of the gateway, from the built JavaScript or from the TypeScript sources.
 */

/**
 * What `new Worker` takes for the module at `url`. From the TypeScript sources (tests, `npm run dev`), a worker does
 * not inherit the tsx loader (Node 20 applies `--import` hooks to the main thread only): it registers tsx itself, then
 * loads the module.
 */
export function threadEntry(url: URL): { entry: string | URL; eval: boolean } {
  if (!url.pathname.endsWith('.ts')) return { entry: url, eval: false };
  return {
    entry: `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url.href)}); });`,
    eval: true,
  };
}

/** The sibling module `name` (without extension) of the module at `here`, in the same form (.ts or .js) as `here`. */
export function siblingModule(here: string, name: string): URL {
  return new URL(`./${name}${here.endsWith('.ts') ? '.ts' : '.js'}`, here);
}
