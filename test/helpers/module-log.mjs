/**
 * A preload (`node --import ./test/helpers/module-log.mjs …`) that appends the URL of every module the process loads
 * through the ES module loader to the file named by MODULE_LOG, one a line: what a test of "this role does not load
 * that package" reads. The hooks run on the loader's thread (module-log-hooks.mjs).
 */
import { register } from 'node:module';

if (process.env.MODULE_LOG) register('./module-log-hooks.mjs', import.meta.url, { data: { file: process.env.MODULE_LOG } });
