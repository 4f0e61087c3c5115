/** The declarative (iomt-fhir / MedTech format) mapping engine: public entry points. See docs/adapters.md. */
export {
  createMappingAdapter,
  compileMapping,
  runMapping,
  runMappingBounded,
  boundedMapping,
  type BoundedMapping,
  type MappingAdapter,
  type MappingAdapterOptions,
  type CompiledMapping,
  DEVICE_MAPPING_FILE,
  FHIR_MAPPING_FILE,
} from './adapter.js';
export {
  validateMapping,
  checkSamples,
  checkSamplesBounded,
  DRY_RUN_CONTEXT,
  type ValidateMappingOptions,
  type SamplePayload,
  type SampleResult,
} from './validate-mapping.js';
export {
  loadMappingsDir,
  loadMappingDir,
  watchMappingsDir,
  isMappingDir,
  applyToRegistry,
  type RegistryLike,
  type LoadResult,
  type LoadError,
  type MappingsWatcher,
  type MappingDirResult,
} from './loader.js';
export { translateCommand, validateMappingCommand } from './cli.js';
export { mergeObservation } from './merge.js';
export { MappingError, formatIssue, type MappingIssue } from './issues.js';
export { CUSTOM_FUNCTIONS } from './expressions.js';
