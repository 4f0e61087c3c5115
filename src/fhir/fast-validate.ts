/**
 * A fast proof that medplum's `validateResource` would find no error in a resource.
 *
 * medplum's validator crawls every element of a type's schema, present or not, resolving each choice element by
 * string manipulation; for the small resources the gateway produces, that costs far more than the data itself. This
 * module compiles the very schemas medplum validates against (its parsed `InternalTypeSchema`s, lazily, one lookup
 * table per type keyed by JSON property name) and walks only the properties that are present, applying the rules of
 * medplum's `ResourceValidator` with the same outcome:
 *   - no unknown property; every required element present; array vs single value and cardinality as in the schema;
 *   - primitives with medplum's own `fhirTypeToJsType` and `validationRegexes`, and its blank-string, 1 MB, finite and
 *     integer rules; complex values, backbone elements and contained resources recursively by their type's schema;
 *   - the `_name` form of a primitive (its id and extensions) as medplum does: as an `Element`;
 *   - the error-severity invariants medplum evaluates (it skips ele-1, dom-3, org-1, sdf-19): those of the resource
 *     itself and those of each present element, with medplum's FHIRPath engine, context and variables, except a few
 *     universal ones decided natively (see NATIVE); and ele-1 natively, although medplum skips it.
 *
 * It only ever proves validity: `false` means "not proven", never "invalid", and the caller must then ask medplum,
 * whose issues are the authoritative ones. That lets it refuse, instead of modelling, everything that is invalid or
 * rare, including what medplum tolerates: `null`; empty strings, objects and arrays (medplum reports some and reads
 * others as absent); a number where an object belongs; two values of one choice element; `resourceType` outside a
 * resource; the `_name` form of repeating primitives; elements with fixed or pattern values or slices (none in the R4
 * base definitions); an invariant whose evaluation throws.
 */
import {
  capitalize,
  evalFhirPathTyped,
  type FhirPathAtom,
  fhirTypeToJsType,
  type InternalSchemaElement,
  type InternalTypeSchema,
  isResourceTypeSchema,
  parseFhirPath,
  toTypedValue,
  type TypedValue,
  tryGetDataType,
  UCUM,
  validationRegexes,
} from '@medplum/core';

/** The invariants medplum's validator never evaluates (its `skippedConstraintKeys`). */
const SKIPPED_CONSTRAINTS = new Set(['ele-1', 'dom-3', 'org-1', 'sdf-19']);
/** medplum's limit on the length of a FHIR string. */
const MAX_STRING = 1024 * 1024;
const UCUM_VALUE = toTypedValue(UCUM);

/** Whether the object holds a value for the FHIRPath property name ('code', or 'value' for value[x]). */
type Has = (name: string) => boolean;

/**
 * Invariants decided without FHIRPath, keyed by their exact expression text (a changed definition is simply evaluated
 * by FHIRPath). `has` is sound here because an answer only counts when every present value has passed the checks of
 * this module, so is non-empty. `undefined`: evaluate with FHIRPath. ext-1 guards every extension, dom-2/4/5 and
 * obs-6/7 every Observation, obs-3 every reference range: evaluating them with FHIRPath would cost more than all the
 * rest.
 */
const NATIVE: Record<string, (has: Has) => boolean | undefined> = {
  'extension.exists() != value.exists()': (has) => has('extension') !== has('value'),
  'contained.contained.empty()': (has) => (has('contained') ? undefined : true),
  'contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()': (has) => (has('contained') ? undefined : true),
  'contained.meta.security.empty()': (has) => (has('contained') ? undefined : true),
  'dataAbsentReason.empty() or value.empty()': (has) => !(has('dataAbsentReason') && has('value')),
  // `x.empty() or …` is true when x is absent; `component.code.where(…).empty()` is true without components.
  'value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()': (has) =>
    has('value') && has('component') ? undefined : true,
  'low.exists() or high.exists() or text.exists()': (has) => has('low') || has('high') || has('text'),
};

interface Invariant {
  /** Used on complex values only: a primitive has no properties. */
  native?: (has: Has) => boolean | undefined;
  /** Undefined when the expression does not parse: medplum then reports an error. */
  atom?: FhirPathAtom;
}

interface Primitive {
  js: 'string' | 'number' | 'boolean';
  regex?: RegExp;
  integer?: 'any' | 'positive' | 'unsigned';
}

/** One JSON property name of a type: an element, one type of a choice element, or the `_name` form of a primitive. */
interface Field {
  /** The schema key of the element ('value[x]' for valueQuantity). */
  element: string;
  /** The FHIR type of the value (for `_name`: of the primitive beside it), as medplum types it. */
  type: string;
  choice: boolean;
  /** The `_name` form: the primitive's id and extensions, an Element. */
  primitiveExtension: boolean;
  array: boolean;
  min: number;
  max: number;
  /** This element's bit in the type's mask of required elements, 0 when optional. */
  requiredBit: number;
  primitive?: Primitive;
  invariants: Invariant[];
  /** False for what this module does not model: the property is never proven valid. */
  supported: boolean;
}

interface CompiledType {
  schema: InternalTypeSchema;
  resource: boolean;
  fields: Map<string, Field>;
  /** All required elements' bits. */
  required: number;
  /** The resource's own invariants (medplum checks them on the validated resource only, not on contained ones). */
  invariants: Invariant[];
}

/** What FHIRPath's %resource and %rootResource are while validating a value. */
interface Scope {
  root: TypedValue;
  resource: TypedValue;
}

type Json = Record<string, unknown>;

const compiled = new Map<string, CompiledType>();

/** The compiled type, recompiled if medplum's schema for the name was replaced (definitions indexed later). */
function compiledType(name: string): CompiledType | undefined {
  const schema = tryGetDataType(name);
  if (!schema) return undefined;
  let c = compiled.get(name);
  if (c?.schema !== schema) {
    c = compile(schema);
    compiled.set(name, c);
  }
  return c;
}

function compileInvariants(constraints: InternalSchemaElement['constraints']): Invariant[] {
  const out: Invariant[] = [];
  for (const c of constraints ?? []) {
    if (c.severity !== 'error' || SKIPPED_CONSTRAINTS.has(c.key)) continue;
    let atom: FhirPathAtom | undefined;
    try {
      atom = parseFhirPath(c.expression);
    } catch {
      atom = undefined;
    }
    out.push({ native: NATIVE[c.expression], atom });
  }
  return out;
}

function primitiveRule(type: string): Primitive | undefined {
  if (!Object.hasOwn(fhirTypeToJsType, type)) return undefined;
  const integer = type === 'integer' ? 'any' : type === 'positiveInt' ? 'positive' : type === 'unsignedInt' ? 'unsigned' : undefined;
  return { js: fhirTypeToJsType[type as keyof typeof fhirTypeToJsType], regex: validationRegexes[type], integer };
}

function compile(schema: InternalTypeSchema): CompiledType {
  const fields = new Map<string, Field>();
  let required = 0;
  let requiredCount = 0;
  for (const [key, el] of Object.entries(schema.elements)) {
    const choice = key.endsWith('[x]');
    const requiredBit = el.min > 0 ? 1 << requiredCount++ : 0;
    required |= requiredBit;
    const supported = !el.fixed && !el.pattern && !el.slicing && (choice || el.type.length === 1);
    const invariants = compileInvariants(el.constraints);
    for (const { code } of el.type) {
      // medplum's choice resolution: the element name with [x] replaced by the capitalised type code.
      const name = choice ? key.slice(0, -3) + capitalize(code) : key;
      const primitive = primitiveRule(code);
      const field = { element: key, type: code, choice, array: !!el.isArray, min: el.min, max: el.max, requiredBit, invariants, supported };
      fields.set(name, { ...field, primitiveExtension: false, primitive });
      // medplum validates the invariants of a primitive on the primitive merged with its `_name` object: not modelled.
      if (primitive)
        fields.set('_' + name, {
          ...field,
          primitiveExtension: true,
          invariants: [],
          supported: supported && !el.isArray && !invariants.length,
        });
    }
  }
  const resource = isResourceTypeSchema(schema);
  // The mask holds 30 required elements (R4 types have at most 9); a type with more is never proven valid.
  return {
    schema,
    resource,
    fields,
    required: requiredCount <= 30 ? required : -1,
    invariants: resource ? compileInvariants(schema.constraints) : [],
  };
}

/** A plain JSON object: medplum also reads inherited properties, which Object.keys would not show here. */
function isObject(v: unknown): v is Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * True only when medplum's `validateResource` would report no error for the resource (it would not throw). False means
 * "not proven": the caller must ask medplum. Uses whatever definitions medplum has indexed, as medplum does.
 */
export function fastStructurallyValid(resource: unknown): boolean {
  if (!isObject(resource) || typeof resource.resourceType !== 'string') return false;
  const type = compiledType(resource.resourceType);
  if (!type?.resource) return false;
  const self: TypedValue = { type: resource.resourceType, value: resource };
  const scope = { root: self, resource: self };
  return validObject(resource, type, scope) && invariantsHold(type.invariants, self, resource, type, scope);
}

/*
 * On a valid resource the walk allocates almost nothing of its own: own keys by `for…in` with `Object.hasOwn` (the keys
 * Object.keys gave, without an array per object), one `has` for every native invariant (hasCurrent), and a FHIRPath
 * value only for an element that has invariants. Key arrays, closures and value wrappers were a quarter of the bytes
 * the gateway allocated per reading, and so of its garbage collection.
 */
function validObject(obj: Json, type: CompiledType, scope: Scope): boolean {
  let seenRequired = 0;
  let children = 0;
  let choices: Record<string, string> | undefined;
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    if (key === 'resourceType' && type.resource) continue;
    const field = type.fields.get(key);
    if (!field?.supported) return false;
    const value = obj[key];
    if (value === undefined) {
      // medplum ignores an undefined property unless it names a choice type; then it depends on its siblings.
      if (field.choice) return false;
      continue;
    }
    if (field.choice) {
      choices ??= {};
      if ((choices[field.element] ??= field.type) !== field.type) return false;
    }
    seenRequired |= field.requiredBit;
    // ele-1 (which medplum skips): an element has a value or children other than its id.
    if (key !== 'id' || type.resource) children++;
    if (!validProperty(value, field, scope)) return false;
  }
  return children > 0 && seenRequired === type.required;
}

function validProperty(value: unknown, field: Field, scope: Scope): boolean {
  if (!field.array) return !Array.isArray(value) && field.max >= 1 && validValue(value, field, scope);
  if (!Array.isArray(value) || value.length === 0 || value.length < field.min || value.length > field.max) return false;
  for (const item of value) if (!validValue(item, field, scope)) return false;
  return true;
}

function validValue(value: unknown, field: Field, scope: Scope): boolean {
  if (field.primitive && !field.primitiveExtension) {
    return (
      validPrimitive(value, field.primitive) &&
      (field.invariants.length === 0 || invariantsHold(field.invariants, { type: field.type, value }, undefined, undefined, scope))
    );
  }
  if (!isObject(value)) return false;
  if (field.type !== 'Resource') {
    const type = compiledType(field.primitiveExtension ? 'Element' : field.type);
    if (field.primitiveExtension) return !!type && validObject(value, type, scope);
    return (
      !!type &&
      validObject(value, type, scope) &&
      (field.invariants.length === 0 || invariantsHold(field.invariants, { type: field.type, value }, value, type, scope))
    );
  }
  // A contained resource: typed, and FHIRPath's %resource inside it, by its own resourceType.
  const type = typeof value.resourceType === 'string' ? compiledType(value.resourceType) : undefined;
  if (!type?.resource) return false;
  const self: TypedValue = { type: value.resourceType as string, value };
  return validObject(value, type, { root: scope.root, resource: self }) && invariantsHold(field.invariants, self, value, type, scope);
}

function validPrimitive(value: unknown, rule: Primitive): boolean {
  if (typeof value !== rule.js) return false;
  if (typeof value === 'string') return value.trim() !== '' && value.length <= MAX_STRING && (!rule.regex || rule.regex.test(value));
  if (typeof value !== 'number') return true;
  if (!Number.isFinite(value)) return false;
  if (!rule.integer) return true;
  return Number.isInteger(value) && (rule.integer === 'positive' ? value > 0 : rule.integer === 'unsigned' ? value >= 0 : true);
}

/** Evaluates invariants as medplum's `constraintsCheck` does: each must yield exactly `true`, and must not throw. */
function invariantsHold(
  invariants: Invariant[],
  self: TypedValue,
  obj: Json | undefined,
  type: CompiledType | undefined,
  scope: Scope,
): boolean {
  for (const inv of invariants) {
    let native: boolean | undefined;
    if (obj && type && inv.native) {
      hasObj = obj;
      hasType = type;
      native = inv.native(hasCurrent);
    }
    if (native === true) continue;
    if (native === false || !inv.atom) return false;
    const variables = { '%context': self, '%ucum': UCUM_VALUE, '%resource': scope.resource, '%rootResource': scope.root };
    try {
      const result = evalFhirPathTyped(inv.atom, [self], variables);
      if (result.length !== 1 || result[0].value !== true) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** The object and type `hasCurrent` answers for: set just before a native invariant runs (synchronously, not re-entered). */
let hasObj: Json = {};
let hasType: CompiledType | undefined;
const hasCurrent: Has = (name) => !!hasType && has(hasObj, hasType, name);

/**
 * Whether the object has a value for a FHIRPath property name, which medplum resolves to the element of that name or,
 * failing that, the choice element `name[x]` (whose value may be under any of its JSON names: valueQuantity, _valueString).
 */
function has(obj: Json, type: CompiledType, name: string): boolean {
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    const element = obj[key] === undefined ? undefined : type.fields.get(key)?.element;
    if (element === name || element === `${name}[x]`) return true;
  }
  return false;
}
