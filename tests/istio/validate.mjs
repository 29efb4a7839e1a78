// Validates every Kubernetes/Istio resource under envoy/istio/ and extracts the
// tracebridge plugin configurations they carry.
//
//   node tests/istio/validate.mjs [--envoy ENVOY_BIN --wasm tracebridge.wasm]
//   (make istio-check runs it with both, then cargo test --test istio_plugin_configs)
//
// 1. Schemas: each YAML document is validated with the model class for its
//    apiVersion/kind from @kubernetes-models/istio (Istio's CRD schemas) or
//    kubernetes-models (apps/v1 Deployment); an unknown kind fails. Files named
//    *.patch.yaml are strategic merge patches: they are applied to a minimal
//    Deployment first, and the result is validated.
// 2. Unknown fields: the generated validators ignore fields the schema does not
//    know, as the API server's pruning would (a typo silently does nothing).
//    Every typed object is therefore watched while it is validated: a field the
//    validator never looked at is unknown and fails, like `kubectl apply
//    --validate=strict`. Objects the schema leaves open (pluginConfig, an
//    EnvoyFilter patch value) are not read by the validator and are skipped.
//    Fields the schema package does not have yet are listed in NEWER_FIELDS.
// 3. tracebridge's own rules (wasmPluginRules, envoyFilterRules,
//    deploymentRules): phase, the Telemetry that stops Envoy's injection, the
//    mounted module, the metrics, where secrets come from. Each plugin
//    configuration is written, as Envoy will hand it to the plugin, to
//    target/istio-plugin-configs/ with the environment its VM gets, for
//    tests/istio_plugin_configs.rs to parse with the filter's own parser.
// 4. Negative checks: deliberately broken copies of the documents must be
//    rejected by the same code, each with the expected error.
// 5. With --envoy and --wasm: each placement, built the way istiod would build
//    it, must be accepted by a real Envoy loading the module
//    (`envoy --mode validate` runs the plugin's on_configure; no port opens).
//    A WasmPlugin is checked with each Telemetry that can go with it (one per
//    Istio version range: telemetry.yaml, telemetry-before-1.30.yaml).
//
// Versions: a file's leading comment may say `# min-istio: 1.30` (the Istio
// that takes it) and `# min-envoy: 1.38` (the Envoy that loads what istiod
// makes of it; the same line as in envoy/*.yaml, see tests/e2e/harness.py). A
// placement needs the newest min-envoy of its files: on an older Envoy it must
// be rejected for a field that Envoy does not know (so the line is not stale),
// on that Envoy or a newer one accepted.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadAll, load, YAML11_SCHEMA } from "js-yaml";
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";
import { EnvoyFilter } from "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter";
import { Telemetry as TelemetryV1 } from "@kubernetes-models/istio/telemetry.istio.io/v1/Telemetry";
import { Telemetry as TelemetryV1alpha1 } from "@kubernetes-models/istio/telemetry.istio.io/v1alpha1/Telemetry";
import { IstioOperator } from "@kubernetes-models/istio/install.istio.io/v1alpha1/IstioOperator";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Volume } from "kubernetes-models/v1/Volume";
import { VolumeMount } from "kubernetes-models/v1/VolumeMount";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MANIFESTS = path.join(ROOT, "envoy/istio");
const OUT = path.join(ROOT, "target/istio-plugin-configs");
const ENVOY_OUT = path.join(ROOT, "target/istio-envoy");

// Model classes by apiVersion/kind. Anything else fails.
const MODELS = {
  "extensions.istio.io/v1alpha1/WasmPlugin": WasmPlugin,
  "networking.istio.io/v1alpha3/EnvoyFilter": EnvoyFilter,
  "telemetry.istio.io/v1/Telemetry": TelemetryV1,
  "telemetry.istio.io/v1alpha1/Telemetry": TelemetryV1alpha1,
  "install.istio.io/v1alpha1/IstioOperator": IstioOperator,
  "apps/v1/Deployment": Deployment,
};

// Fields the schema package does not list but Istio takes: allowed, with their
// type checked here.
const NEWER_FIELDS = [
  {
    // @kubernetes-models/istio 3.0.1 was generated from an Istio before 1.30.
    kind: "Telemetry",
    at: /^spec\.tracing\[\d+\]$/,
    field: "disableContextPropagation",
    type: "boolean",
    since: "Istio 1.30 (istio/istio#59047, Envoy HCM tracing.no_context_propagation)",
  },
  {
    // The IstioOperator CRD keeps `spec` open (x-kubernetes-preserve-unknown-fields);
    // statsMatcherErrors checks the part used here.
    kind: "IstioOperator",
    at: /^$/,
    field: "spec",
    type: "object",
    since: "the IstioOperator CRD, whose spec is open",
  },
];

const WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue";
const HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const UPSTREAM_CODEC = "envoy.filters.http.upstream_codec";
// Names Envoy gives the filter's counters; the stats matcher must keep them.
const SAMPLE_STATS = ["wasmcustom.tracebridge.trace_started", "wasmcustom.tracebridge.reason.probability"];
// What the Rust test puts into a HOST variable that comes from a Secret.
const PLACEHOLDER_SECRET = "istio-check-placeholder-secret-not-used-anywhere";

const cargoVersion = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(path.join(ROOT, "Cargo.toml"), "utf8"))[1];

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

function yamlFiles(dir) {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) return yamlFiles(full);
      return /\.ya?ml$/.test(name) ? [full] : [];
    });
}

// "1.38" -> [1, 38]; compared part by part, a missing part as 0.
function parseVersion(text) {
  if (!/^\d+\.\d+(\.\d+)?$/.test(text)) throw new Error(`not a version (MAJOR.MINOR[.PATCH]): ${text}`);
  return text.split(".").map(Number);
}
function compareVersions(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i += 1) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
const versionText = (v) => v.join(".");

// `# min-istio: X.Y` and `# min-envoy: X.Y` in the leading comment block.
function versionLines(text, rel) {
  const lines = { minIstio: null, minEnvoy: null };
  for (const line of text.split("\n")) {
    if (!line.startsWith("#")) break;
    const found = /^#\s*(min-istio|min-envoy|before-envoy)\b\s*:?\s*(.*?)\s*$/.exec(line);
    if (!found) continue;
    if (found[1] === "before-envoy") throw new Error(`${rel}: before-envoy rules are for envoy/*.yaml; an Istio resource is applied as it is`);
    const key = found[1] === "min-istio" ? "minIstio" : "minEnvoy";
    if (lines[key]) throw new Error(`${rel}: a second ${found[1]} line`);
    try {
      lines[key] = parseVersion(found[2]);
    } catch (error) {
      throw new Error(`${rel}: ${found[1]}: ${error.message}`);
    }
  }
  return lines;
}

function loadDocuments(loadErrors) {
  const docs = [];
  for (const file of yamlFiles(MANIFESTS)) {
    const rel = path.relative(ROOT, file);
    const text = readFileSync(file, "utf8");
    let parsed;
    let versions;
    try {
      versions = versionLines(text, rel);
      // YAML 1.1 booleans (on/yes), as kubectl reads them; duplicate keys throw.
      parsed = loadAll(text, { schema: YAML11_SCHEMA });
    } catch (error) {
      loadErrors.push(error instanceof Error && error.message.startsWith(rel) ? error.message : `${rel}: not valid YAML: ${error.message.split("\n")[0]}`);
      continue;
    }
    parsed.forEach((body, index) => {
      if (body == null) return; // an empty document (a trailing ---)
      docs.push({ file: rel, index, dir: path.dirname(rel), patch: /\.patch\.ya?ml$/.test(file), body, versions });
    });
  }
  return docs;
}

const clone = (value) => JSON.parse(JSON.stringify(value));
const label = (doc) => `${doc.file}#${doc.index} ${doc.body?.kind ?? "?"} ${doc.body?.metadata?.namespace ?? ""}/${doc.body?.metadata?.name ?? "?"}`;

// ---------------------------------------------------------------------------
// Strategic merge patches: applied to a minimal valid Deployment.
// ---------------------------------------------------------------------------

function skeletonFor(patch) {
  const name = patch.metadata?.name ?? "workload";
  return {
    apiVersion: patch.apiVersion,
    kind: patch.kind,
    metadata: { name, namespace: patch.metadata?.namespace },
    spec: {
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "app", image: "registry.example.com/app:1" }] },
      },
    },
  };
}

// Objects merge key by key; lists of objects with `name` merge by name (as
// containers, env, volumes do in a strategic merge patch); other lists replace.
function strategicMerge(base, patch) {
  if (Array.isArray(patch)) {
    if (!Array.isArray(base) || !patch.every((item) => item && typeof item === "object" && "name" in item)) {
      return clone(patch);
    }
    const out = clone(base);
    for (const item of patch) {
      const at = out.findIndex((existing) => existing?.name === item.name);
      if (at >= 0) out[at] = strategicMerge(out[at], item);
      else out.push(clone(item));
    }
    return out;
  }
  if (patch && typeof patch === "object") {
    const out = base && typeof base === "object" && !Array.isArray(base) ? clone(base) : {};
    for (const [key, value] of Object.entries(patch)) out[key] = strategicMerge(out[key], value);
    return out;
  }
  return patch;
}

// ---------------------------------------------------------------------------
// Schema validation with unknown-field detection
// ---------------------------------------------------------------------------

// A copy of `value` whose objects record which properties the validator reads.
function tracked(value, where, records) {
  if (Array.isArray(value)) return value.map((item, i) => tracked(item, `${where}[${i}]`, records));
  if (!value || typeof value !== "object") return value;
  const record = { where, object: value, read: new Set(), enumerated: false };
  records.push(record);
  const copy = {};
  for (const [key, child] of Object.entries(value)) copy[key] = tracked(child, where ? `${where}.${key}` : key, records);
  return new Proxy(copy, {
    get(target, key, receiver) {
      if (typeof key === "string") record.read.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === "string") record.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      record.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function schemaErrors(body) {
  const key = `${body?.apiVersion}/${body?.kind}`;
  const Model = MODELS[key];
  if (!Model) return [`unknown apiVersion/kind ${key}: no schema to validate it against`];
  const errors = [];
  try {
    new Model(body).validate();
  } catch (error) {
    errors.push(`schema: ${error.message}`);
  }
  // Unknown fields: run the same validator over a watched copy.
  const records = [];
  try {
    Model.prototype.validate.call(tracked(clone(body), "", records));
  } catch {
    // already reported above
  }
  for (const record of records) {
    if (record.enumerated || record.read.size === 0) continue; // a map, or left open by the schema
    for (const field of Object.keys(record.object)) {
      if (record.read.has(field)) continue;
      const newer = NEWER_FIELDS.find((n) => n.kind === body.kind && n.field === field && n.at.test(record.where));
      if (newer) {
        if (typeof record.object[field] !== newer.type) {
          errors.push(`${record.where}.${field}: must be a ${newer.type} (a field of ${newer.since})`);
        }
        continue;
      }
      errors.push(`unknown field ${record.where ? record.where + "." : ""}${field} (not in the ${key} schema)`);
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------
// tracebridge's rules for these resources
// ---------------------------------------------------------------------------

function podAnnotations(deployment) {
  return deployment?.spec?.template?.metadata?.annotations ?? {};
}

// The proxyStatsMatcher of a ProxyConfig must keep the filter's counters.
function statsMatcherErrors(proxyConfig, where) {
  const matcher = proxyConfig?.proxyStatsMatcher;
  if (!matcher) return [`${where}: no proxyStatsMatcher, so Istio's default stats inclusion decides whether tracebridge's counters exist`];
  const errors = [];
  const lists = { inclusionPrefixes: [], inclusionSuffixes: [], inclusionRegexps: [] };
  for (const [field, value] of Object.entries(matcher)) {
    if (!(field in lists)) {
      errors.push(`${where}.proxyStatsMatcher.${field}: unknown field`);
      continue;
    }
    if (!Array.isArray(value) || !value.every((s) => typeof s === "string")) {
      errors.push(`${where}.proxyStatsMatcher.${field}: must be a list of strings`);
      continue;
    }
    lists[field] = value;
  }
  // Envoy matches the full stat name: prefix/suffix, or a full RE2 match.
  const kept = (stat) =>
    lists.inclusionPrefixes.some((p) => stat.startsWith(p)) ||
    lists.inclusionSuffixes.some((s) => stat.endsWith(s)) ||
    lists.inclusionRegexps.some((r) => new RegExp(`^(?:${r})$`).test(stat));
  for (const stat of SAMPLE_STATS) {
    if (!kept(stat)) errors.push(`${where}.proxyStatsMatcher does not include ${stat} (Envoy names the counters wasmcustom.tracebridge.*)`);
  }
  return errors;
}

function proxyConfigAnnotationErrors(deployment, where) {
  const text = podAnnotations(deployment)["proxy.istio.io/config"];
  if (text === undefined) return [`${where}: no proxy.istio.io/config annotation exposing tracebridge's counters`];
  let parsed;
  try {
    parsed = load(String(text), { schema: YAML11_SCHEMA });
  } catch (error) {
    return [`${where}: proxy.istio.io/config is not YAML: ${error.message.split("\n")[0]}`];
  }
  if (!parsed || typeof parsed !== "object") return [`${where}: proxy.istio.io/config must be a ProxyConfig object`];
  return statsMatcherErrors(parsed, `${where} proxy.istio.io/config`);
}

// sidecar.istio.io/userVolume(Mount): JSON lists of Volumes and VolumeMounts.
function userVolumes(deployment, where, errors) {
  const annotations = podAnnotations(deployment);
  const parse = (name, Model) => {
    if (annotations[name] === undefined) return [];
    let list;
    try {
      list = JSON.parse(annotations[name]);
    } catch (error) {
      errors.push(`${where}: ${name} is not JSON: ${error.message}`);
      return [];
    }
    if (!Array.isArray(list)) list = Object.values(list ?? {}); // Istio also takes a map
    for (const item of list) {
      try {
        new Model(item).validate();
      } catch (error) {
        errors.push(`${where}: ${name}: ${error.message}`);
      }
    }
    return list;
  };
  return { volumes: parse("sidecar.istio.io/userVolume", Volume), mounts: parse("sidecar.istio.io/userVolumeMount", VolumeMount) };
}

function selectorOf(body) {
  return body.spec?.selector?.matchLabels ?? body.spec?.workloadSelector?.labels ?? {};
}

const sameLabels = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

// The environment the plugin's VM will see, resolved from the Deployments in
// the same directory: HOST variables must be set on their istio-proxy container.
function vmEnvironment(inline, host, deployments, where, errors) {
  const env = { ...inline };
  for (const name of host) {
    let found;
    for (const deployment of deployments) {
      for (const container of deployment.spec?.template?.spec?.containers ?? []) {
        if (container.name !== "istio-proxy") continue;
        const variable = (container.env ?? []).find((e) => e.name === name);
        if (variable) found = variable;
      }
    }
    if (!found) {
      errors.push(`${where}: the VM reads ${name} from the host, but no Deployment here sets it on the istio-proxy container`);
      continue;
    }
    if (found.value !== undefined) env[name] = String(found.value);
    else if (found.valueFrom?.secretKeyRef) env[name] = PLACEHOLDER_SECRET;
    else errors.push(`${where}: ${name} on istio-proxy has neither a value nor a secretKeyRef`);
  }
  return env;
}

// Listener directions: CLIENT_AND_SERVER (or UNDEFINED) is both.
const expandMode = (mode) => (mode === "CLIENT_AND_SERVER" || mode === "UNDEFINED" ? ["CLIENT", "SERVER"] : [mode]);

// The directions a WasmPlugin runs in: a gateway's listeners are all CLIENT.
function neededModes(body) {
  const modes = (body.spec?.match ?? []).map((m) => m.mode ?? "CLIENT_AND_SERVER");
  if ("istio" in selectorOf(body)) return new Set(["CLIENT"]);
  return new Set((modes.length ? modes : ["CLIENT_AND_SERVER"]).flatMap(expandMode));
}

// The directions in which Telemetry tracing entries set `field: true`.
function modesWith(tracing, field) {
  return new Set(tracing.filter((t) => t[field] === true).flatMap((t) => expandMode(t.match?.mode ?? "CLIENT_AND_SERVER")));
}

function wasmPluginRules(doc, context, errors, configs) {
  const { body } = doc;
  const spec = body.spec ?? {};
  const where = label(doc);
  const url = String(spec.url ?? "");
  const image = /^oci:\/\/[^/]+\/.+\/tracebridge(?::([^@]+))?(?:@sha256:([0-9a-f]{64}))?$/.exec(url);
  if (!image) errors.push(`${where}: url must be oci://<registry>/<path>/tracebridge:<version> (or @sha256:<digest>), got ${url}`);
  else if (image[1] !== undefined && image[1] !== cargoVersion) {
    errors.push(`${where}: url tag ${image[1]} is not the crate's version ${cargoVersion} (Cargo.toml)`);
  }
  if (spec.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(spec.sha256)) errors.push(`${where}: sha256 must be 64 lower-case hex digits`);
  if (spec.phase !== "AUTHN") errors.push(`${where}: phase must be AUTHN, so the filter runs before every filter that reads trace headers (got ${spec.phase})`);
  if ((spec.type ?? "HTTP") !== "HTTP") errors.push(`${where}: type must be HTTP`);
  const modes = (spec.match ?? []).map((m) => m.mode ?? "CLIENT_AND_SERVER");
  const selector = selectorOf(body);
  // Istio classes gateway listeners as CLIENT (pilot/pkg/model/extensions.go).
  if ("istio" in selector && modes.length > 0 && modes.every((m) => m === "SERVER")) {
    errors.push(`${where}: a gateway's listeners are CLIENT to Istio; match mode SERVER never applies to them`);
  }
  // The tracer must not overwrite what the filter wrote: a Telemetry for the
  // same workloads either stops its injection (disableContextPropagation,
  // Istio 1.30+) or removes it (disableSpanReporting: istiod then gives those
  // listeners no tracing at all, pilot/pkg/networking/core/tracing.go
  // configureTracingFromTelemetry). Several such Telemetries are alternatives
  // (telemetry.yaml, telemetry-before-1.30.yaml): each must do it.
  const needed = neededModes(body);
  const telemetries = context.docs.filter(
    (d) => d.body.kind === "Telemetry" && d.body.metadata?.namespace === body.metadata?.namespace && sameLabels(selectorOf(d.body), selector),
  );
  for (const telemetry of telemetries.length > 0 ? telemetries : [undefined]) {
    const tracing = telemetry?.body.spec?.tracing ?? [];
    const covered = new Set([...modesWith(tracing, "disableContextPropagation"), ...modesWith(tracing, "disableSpanReporting")]);
    const uncovered = [...needed].filter((mode) => !covered.has(mode));
    if (uncovered.length > 0) {
      const which = telemetry ? `${telemetry.file} does not set` : "no Telemetry with the same namespace and selector sets";
      errors.push(`${where}: ${which} tracing disableContextPropagation: true (Istio 1.30+) or disableSpanReporting: true for ${uncovered.join(" and ")} traffic; Envoy's tracer would overwrite the filter's headers`);
    }
  }
  // A plugin that reports the proxy's spans: Envoy's tracer must not report a second one,
  // whichever of the alternative Telemetries is applied.
  if (spec.pluginConfig?.spans !== undefined) {
    for (const telemetry of telemetries.length > 0 ? telemetries : [undefined]) {
      const silenced = modesWith(telemetry?.body.spec?.tracing ?? [], "disableSpanReporting");
      const reporting = [...needed].filter((mode) => !silenced.has(mode));
      if (reporting.length > 0) {
        const which = telemetry ? `${telemetry.file} does not set` : "no Telemetry with the same namespace and selector sets";
        errors.push(`${where}: pluginConfig.spans reports the proxy's spans, but ${which} tracing disableSpanReporting: true for ${reporting.join(" and ")} traffic; Envoy's tracer would report a second span per request`);
      }
    }
  }
  // Metrics for the selected workloads.
  if (!context.deployments.some((d) => proxyConfigAnnotationErrors(d, "").length === 0)) {
    errors.push(`${where}: no Deployment (patch) in ${doc.dir} exposes wasmcustom.tracebridge.* with proxy.istio.io/config`);
  }
  const inline = {};
  const host = [];
  for (const variable of spec.vmConfig?.env ?? []) {
    if ((variable.valueFrom ?? "INLINE") === "HOST") host.push(variable.name);
    else inline[variable.name] = variable.value ?? "";
  }
  const env = vmEnvironment(inline, host, context.deployments, where, errors);
  if (spec.pluginConfig !== undefined && (typeof spec.pluginConfig !== "object" || Array.isArray(spec.pluginConfig))) {
    errors.push(`${where}: pluginConfig must be an object`);
    return;
  }
  // Istio turns pluginConfig (a Struct: every number a double) into JSON in a
  // StringValue; an empty one sends no configuration (the filter's defaults).
  const json = spec.pluginConfig && Object.keys(spec.pluginConfig).length > 0 ? JSON.stringify(spec.pluginConfig) : "";
  configs.push({ doc, name: "pluginConfig", json, env, wasmPlugin: { spec, inline, host, telemetries } });
}

// Objects anywhere under `value` with "@type" `type`.
function findTyped(value, type, where = "", out = []) {
  if (Array.isArray(value)) value.forEach((item, i) => findTyped(item, type, `${where}[${i}]`, out));
  else if (value && typeof value === "object") {
    if (value["@type"] === type) out.push({ where, value });
    for (const [key, child] of Object.entries(value)) findTyped(child, type, where ? `${where}.${key}` : key, out);
  }
  return out;
}

function envoyFilterRules(doc, context, errors, configs) {
  const { body } = doc;
  const where = label(doc);
  let wasmFilters = 0;
  (body.spec?.configPatches ?? []).forEach((patch, p) => {
    const at = `${where} configPatches[${p}]`;
    if (patch.applyTo === "CLUSTER") {
      const options = patch.patch?.value?.typed_extension_protocol_options?.[HTTP_PROTOCOL_OPTIONS];
      if (!options) {
        errors.push(`${at}: a CLUSTER patch for tracebridge sets typed_extension_protocol_options.${HTTP_PROTOCOL_OPTIONS}`);
        return;
      }
      const protocol = ["explicit_http_config", "use_downstream_protocol_config", "auto_config"].filter((k) => k in options);
      if (protocol.length !== 1) errors.push(`${at}: HttpProtocolOptions needs exactly one of explicit_http_config, use_downstream_protocol_config, auto_config (got ${protocol.join(", ") || "none"})`);
      const filters = options.http_filters ?? [];
      if (filters.at(-1)?.name !== UPSTREAM_CODEC) errors.push(`${at}: the upstream http_filters must end with ${UPSTREAM_CODEC}`);
      if (patch.patch?.operation !== "MERGE") errors.push(`${at}: operation must be MERGE (ADD would create a new cluster)`);
    }
    for (const found of findTyped(patch.patch?.value, WASM_FILTER_TYPE)) {
      wasmFilters += 1;
      const filterAt = `${at} ${found.where}`;
      const config = found.value.config ?? {};
      const vm = config.vm_config ?? {};
      if (vm.runtime !== "envoy.wasm.runtime.v8") errors.push(`${filterAt}: vm_config.runtime must be envoy.wasm.runtime.v8`);
      const filename = vm.code?.local?.filename;
      if (filename) {
        // The file must be mounted into istio-proxy by a Deployment here.
        const mounted = context.deployments.some((d) => {
          const { volumes, mounts } = userVolumes(d, label({ ...doc, body: d }), []);
          return mounts.some((m) => filename.startsWith(m.mountPath.replace(/\/?$/, "/")) && volumes.some((v) => v.name === m.name));
        });
        if (!mounted) errors.push(`${filterAt}: ${filename} is not under a sidecar.istio.io/userVolumeMount of a Deployment in ${doc.dir}`);
      } else if (!vm.code?.remote?.sha256) {
        errors.push(`${filterAt}: remote code needs sha256`);
      }
      const configuration = config.configuration;
      if (configuration?.["@type"] !== STRING_VALUE_TYPE || typeof configuration.value !== "string") {
        errors.push(`${filterAt}: configuration must be a ${STRING_VALUE_TYPE} holding JSON (a Struct reaches the plugin as binary protobuf)`);
        continue;
      }
      const variables = vm.environment_variables ?? {};
      const env = vmEnvironment({ ...(variables.key_values ?? {}) }, variables.host_env_keys ?? [], context.deployments, filterAt, errors);
      configs.push({ doc, name: `configPatches${p}`, json: configuration.value, env, clusterPatch: patch.applyTo === "CLUSTER" ? patch.patch.value : undefined });
    }
  });
  if (wasmFilters === 0) errors.push(`${where}: no ${WASM_FILTER_TYPE} filter in the patches`);
  if (!context.deployments.some((d) => proxyConfigAnnotationErrors(d, "").length === 0)) {
    errors.push(`${where}: no Deployment (patch) in ${doc.dir} exposes wasmcustom.tracebridge.* with proxy.istio.io/config`);
  }
}

function deploymentRules(doc, errors) {
  const where = label(doc);
  errors.push(...proxyConfigAnnotationErrors(doc.body, where));
  userVolumes(doc.body, where, errors);
}

// Everything for one set of documents: returns errors per document and the
// plugin configurations found.
function validateAll(docs) {
  const results = [];
  const configs = [];
  // Patches are checked as the Deployment they produce.
  const effective = docs.map((doc) => {
    if (!doc.patch) return doc;
    return { ...doc, body: strategicMerge(skeletonFor(doc.body), doc.body) };
  });
  for (const doc of effective) {
    const errors = schemaErrors(doc.body);
    if (errors.length === 0) {
      const context = {
        docs: effective,
        deployments: effective.filter((d) => d.dir === doc.dir && d.body.kind === "Deployment").map((d) => d.body),
      };
      switch (doc.body.kind) {
        case "WasmPlugin":
          wasmPluginRules(doc, context, errors, configs);
          break;
        case "EnvoyFilter":
          envoyFilterRules(doc, context, errors, configs);
          break;
        case "Deployment":
          deploymentRules(doc, errors);
          break;
        case "IstioOperator":
          errors.push(...statsMatcherErrors(doc.body.spec?.meshConfig?.defaultConfig, `${label(doc)} spec.meshConfig.defaultConfig`));
          break;
        default:
          break;
      }
    }
    results.push({ doc, errors });
  }
  return { results, configs };
}

// ---------------------------------------------------------------------------
// Negative checks: each mutation of a copy must make validateAll fail.
// ---------------------------------------------------------------------------

const find = (docs, predicate) => {
  const doc = docs.find(predicate);
  if (!doc) throw new Error("negative check: no document to mutate");
  return doc.body;
};
const wasm = (dir) => (d) => d.body.kind === "WasmPlugin" && d.dir.endsWith(dir);
const kind = (k, dir = "") => (d) => d.body.kind === k && d.dir.endsWith(dir);
const inFile = (name) => (d) => d.file === `envoy/istio/${name}`;

const NEGATIVE = [
  // [what, expected error (regular expression), mutation]
  ["WasmPlugin phase BOGUS", /spec\/phase must be equal to one of the allowed values/, (docs) => { find(docs, wasm("owner")).spec.phase = "BOGUS"; }],
  ["WasmPlugin match mode NOPE", /spec\/match\/0\/mode must be equal to one of the allowed values/, (docs) => { find(docs, wasm("owner")).spec.match[0].mode = "NOPE"; }],
  ["WasmPlugin imagePullPolicy Sometimes", /spec\/imagePullPolicy must be equal to one of the allowed values/, (docs) => { find(docs, wasm("owner")).spec.imagePullPolicy = "Sometimes"; }],
  ["WasmPlugin failStrategy FAIL_SOFTLY", /spec\/failStrategy must be equal to one of the allowed values/, (docs) => { find(docs, wasm("owner")).spec.failStrategy = "FAIL_SOFTLY"; }],
  ["WasmPlugin priority as a string", /spec\/priority must be integer/, (docs) => { find(docs, wasm("owner")).spec.priority = "high"; }],
  ["WasmPlugin without url", /must have required property '?url'?/, (docs) => { delete find(docs, wasm("owner")).spec.url; }],
  ["WasmPlugin vmConfig.env valueFrom SECRET", /spec\/vmConfig\/env\/0\/valueFrom must be equal to one of the allowed values/, (docs) => { find(docs, wasm("gateway")).spec.vmConfig.env[0].valueFrom = "SECRET"; }],
  ["WasmPlugin misspelt field phse", /unknown field spec\.phse/, (docs) => { find(docs, wasm("owner")).spec.phse = "AUTHN"; }],
  ["WasmPlugin phase STATS", /phase must be AUTHN/, (docs) => { find(docs, wasm("owner")).spec.phase = "STATS"; }],
  ["WasmPlugin url tag other than Cargo.toml's version", /is not the crate's version/, (docs) => { find(docs, wasm("owner")).spec.url = "oci://registry.example.com/platform/tracebridge:0.0.0-old"; }],
  ["gateway WasmPlugin match mode SERVER", /match mode SERVER never applies/, (docs) => { find(docs, wasm("gateway")).spec.match = [{ mode: "SERVER" }]; }],
  ["gateway WasmPlugin HOST variable nobody sets", /no Deployment here sets it/, (docs) => { find(docs, wasm("gateway")).spec.vmConfig.env[0].name = "TRACEBRIDGE_FORCE_NOBODY"; }],
  ["spans WasmPlugin whose Telemetry still reports Envoy's spans", /would report a second span per request/, (docs) => { delete find(docs, inFile("spans/telemetry.yaml")).spec.tracing[0].disableSpanReporting; }],
  ["WasmPlugin without its Telemetry", /no Telemetry with the same namespace and selector/, (docs) => {
    for (const doc of docs.filter(kind("Telemetry", "gateway"))) doc.body.spec.selector.matchLabels = { istio: "egressgateway" };
  }],
  ["Telemetry that stops injection for SERVER traffic only", /owner\/telemetry\.yaml does not set tracing disableContextPropagation: true \(Istio 1\.30\+\) or disableSpanReporting: true for CLIENT traffic/, (docs) => {
    find(docs, inFile("owner/telemetry.yaml")).spec.tracing[0].match = { mode: "SERVER" };
  }],
  ["Telemetry before 1.30 that removes the tracer for SERVER traffic only", /telemetry-before-1\.30\.yaml does not set .* for CLIENT traffic/, (docs) => {
    find(docs, inFile("owner/telemetry-before-1.30.yaml")).spec.tracing[0].match = { mode: "SERVER" };
  }],
  ["Telemetry before 1.30 with disableSpanReporting false", /gateway\/telemetry-before-1\.30\.yaml does not set .* for CLIENT traffic/, (docs) => {
    find(docs, inFile("gateway/telemetry-before-1.30.yaml")).spec.tracing[0].disableSpanReporting = false;
  }],
  ["Telemetry tracing match mode BOTH", /spec\/tracing\/0\/match\/mode must be equal to one of the allowed values/, (docs) => { find(docs, inFile("owner/telemetry.yaml")).spec.tracing[0].match = { mode: "BOTH" }; }],
  ["Telemetry disableContextPropagation as a string", /disableContextPropagation: must be a boolean/, (docs) => { find(docs, inFile("owner/telemetry.yaml")).spec.tracing[0].disableContextPropagation = "yes"; }],
  ["Telemetry misspelt disableContextPropagaton", /unknown field spec\.tracing\[0\]\.disableContextPropagaton/, (docs) => {
    const tracing = find(docs, inFile("owner/telemetry.yaml")).spec.tracing[0];
    delete tracing.disableContextPropagation;
    tracing.disableContextPropagaton = true;
  }],
  ["EnvoyFilter applyTo CLUSTERS", /applyTo must be equal to one of the allowed values/, (docs) => { find(docs, kind("EnvoyFilter")).spec.configPatches[0].applyTo = "CLUSTERS"; }],
  ["EnvoyFilter match context OUTBOUND", /match\/context must be equal to one of the allowed values/, (docs) => { find(docs, kind("EnvoyFilter")).spec.configPatches[0].match.context = "OUTBOUND"; }],
  ["EnvoyFilter patch operation MERGED", /patch\/operation must be equal to one of the allowed values/, (docs) => { find(docs, kind("EnvoyFilter")).spec.configPatches[0].patch.operation = "MERGED"; }],
  ["EnvoyFilter misspelt workloadSelector", /unknown field spec\.workloadselector/, (docs) => {
    const spec = find(docs, kind("EnvoyFilter")).spec;
    spec.workloadselector = spec.workloadSelector;
    delete spec.workloadSelector;
  }],
  ["EnvoyFilter wasm configuration as a Struct", /configuration must be a type.googleapis.com\/google.protobuf.StringValue/, (docs) => {
    const filter = find(docs, kind("EnvoyFilter")).spec.configPatches[0].patch.value.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].http_filters[0];
    filter.typed_config.config.configuration = { "@type": "type.googleapis.com/google.protobuf.Struct", value: { sampling: {} } };
  }],
  ["EnvoyFilter upstream filters not ending with upstream_codec", /must end with envoy.filters.http.upstream_codec/, (docs) => {
    find(docs, kind("EnvoyFilter")).spec.configPatches[0].patch.value.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].http_filters.pop();
  }],
  ["EnvoyFilter HttpProtocolOptions with two protocol choices", /needs exactly one of explicit_http_config/, (docs) => {
    find(docs, kind("EnvoyFilter")).spec.configPatches[0].patch.value.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].explicit_http_config = { http_protocol_options: {} };
  }],
  ["EnvoyFilter module path not mounted", /is not under a sidecar.istio.io\/userVolumeMount/, (docs) => {
    const filter = find(docs, kind("EnvoyFilter")).spec.configPatches[0].patch.value.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].http_filters[0];
    filter.typed_config.config.vm_config.code.local.filename = "/etc/istio/tracebridge.wasm";
  }],
  ["Deployment annotation that is not a string", /annotations\/sidecar.istio.io~1inject must be string/, (docs) => { find(docs, kind("Deployment", "owner")).spec.template.metadata.annotations["sidecar.istio.io/inject"] = true; }],
  ["Deployment secretKeyRef.optional as a string", /secretKeyRef\/optional must be boolean/, (docs) => {
    find(docs, kind("Deployment", "gateway")).spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.optional = "no";
  }],
  ["Deployment misspelt secretKeyRef", /unknown field spec\.template\.spec\.containers\[1\]\.env\[0\]\.valueFrom\.secretRef/, (docs) => {
    const valueFrom = find(docs, kind("Deployment", "gateway")).spec.template.spec.containers[0].env[0].valueFrom;
    valueFrom.secretRef = valueFrom.secretKeyRef;
    delete valueFrom.secretKeyRef;
  }],
  ["proxyStatsMatcher prefix `tracebridge` (matches nothing)", /does not include wasmcustom.tracebridge/, (docs) => {
    find(docs, kind("Deployment", "owner")).spec.template.metadata.annotations["proxy.istio.io/config"] = "proxyStatsMatcher:\n  inclusionPrefixes: [tracebridge]\n";
  }],
  ["userVolume that is not a Volume", /userVolume: data\/configMap\/name must be string/, (docs) => {
    find(docs, kind("Deployment", "beside-tracer")).spec.template.metadata.annotations["sidecar.istio.io/userVolume"] = '[{"name": "tracebridge-wasm", "configMap": {"name": 7}}]';
  }],
  ["IstioOperator stats matcher without tracebridge", /does not include wasmcustom.tracebridge/, (docs) => {
    find(docs, kind("IstioOperator")).spec.meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes = ["cluster.outbound"];
  }],
  ["unknown kind ConfigMap", /unknown apiVersion\/kind v1\/ConfigMap/, (docs) => {
    docs.push({ file: "(in memory)", index: 0, dir: "envoy/istio/owner", patch: false, body: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } } });
  }],
];


// ---------------------------------------------------------------------------
// Envoy: each plugin, placed the way Istio would place it, must be accepted by
// a real Envoy (`--mode validate` builds the listeners and clusters, loads the
// module in V8 and runs its on_configure, without opening any port).
// ---------------------------------------------------------------------------

const FAILURE_POLICY = { FAIL_OPEN: "FAIL_OPEN", FAIL_CLOSE: "FAIL_CLOSED", FAIL_RELOAD: "FAIL_RELOAD" };

function zipkinTracing(noContextPropagation) {
  // Istio's default tracer; Telemetry disableContextPropagation is this flag.
  return {
    provider: {
      name: "envoy.tracers.zipkin",
      typed_config: {
        "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
        collector_cluster: "zipkin",
        collector_endpoint: "/api/v2/spans",
        collector_endpoint_version: "HTTP_JSON",
        trace_id_128bit: true,
        shared_span_context: false,
      },
    },
    ...(noContextPropagation ? { no_context_propagation: true } : {}),
  };
}

function staticCluster(name, port) {
  return {
    name,
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: port } } } }] }],
    },
  };
}

// What istiod generates for a WasmPlugin (pilot/pkg/model/extensions.go,
// buildWasmPluginConfigCommon/buildVMConfig), with the module as a local file
// as istio-agent hands it to Envoy after pulling the image.
function istioWasmFilter(doc, entry, wasmPath) {
  const { spec, inline, host } = entry.wasmPlugin;
  const config = {
    name: `${doc.body.metadata.namespace}.${doc.body.metadata.name}`,
    root_id: spec.pluginName ?? "",
    vm_config: {
      runtime: "envoy.wasm.runtime.v8",
      code: { local: { filename: wasmPath } },
      environment_variables: { key_values: { ...inline }, host_env_keys: host },
    },
  };
  if (entry.json !== "") config.configuration = { "@type": STRING_VALUE_TYPE, value: entry.json };
  if (FAILURE_POLICY[spec.failStrategy]) config.failure_policy = FAILURE_POLICY[spec.failStrategy];
  return { name: "envoy.filters.http.wasm", typed_config: { "@type": WASM_FILTER_TYPE, config } };
}

// The HCM tracing istiod generates for the plugin's listeners with this
// Telemetry (pilot/pkg/networking/core/tracing.go, configureTracingFromTelemetry):
// none where span reporting is disabled in every direction the plugin runs in,
// else Istio's default Zipkin tracer, told not to propagate when the Telemetry
// says disableContextPropagation (istiod does so for 1.30+ proxies).
function istioTracing(entry, telemetry) {
  const tracing = telemetry?.body.spec?.tracing ?? [];
  const needed = neededModes(entry.doc.body);
  const disabled = modesWith(tracing, "disableSpanReporting");
  if ([...needed].every((mode) => disabled.has(mode))) return undefined;
  return zipkinTracing(tracing.some((t) => t.disableContextPropagation === true));
}

function envoyBootstrap(entry, wasmPath, telemetry) {
  const { doc } = entry;
  const httpFilters = [];
  let tracing = zipkinTracing(false);
  const upstream = staticCluster("upstream", 8080);
  if (entry.wasmPlugin) {
    httpFilters.push(istioWasmFilter(doc, entry, wasmPath));
    tracing = istioTracing(entry, telemetry);
  } else if (entry.clusterPatch) {
    // Istio's MERGE replaces the typed_extension_protocol_options entry whole.
    const value = clone(entry.clusterPatch);
    for (const found of findTyped(value, WASM_FILTER_TYPE)) {
      const code = found.value.config?.vm_config?.code;
      if (code?.local) code.local.filename = wasmPath;
    }
    Object.assign(upstream, value);
  }
  httpFilters.push({ name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } });
  return {
    node: { id: "istio-check", cluster: "istio-check" },
    static_resources: {
      listeners: [
        {
          name: "istio_check",
          address: { socket_address: { address: "127.0.0.1", port_value: 10000 } },
          filter_chains: [
            {
              filters: [
                {
                  name: "envoy.filters.network.http_connection_manager",
                  typed_config: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    stat_prefix: "istio_check",
                    ...(tracing ? { tracing } : {}),
                    route_config: { virtual_hosts: [{ name: "all", domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: "upstream" } }] }] },
                    http_filters: httpFilters,
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [upstream, staticCluster("zipkin", 9411)],
    },
  };
}

function envoyValidate(envoy, file, env) {
  const run = spawnSync(envoy, ["--mode", "validate", "--disable-hot-restart", "--log-level", "error", "-c", file], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  const output = `${run.stdout ?? ""}${run.stderr ?? ""}`;
  const accepted = run.status === 0 && /configuration '.*' OK/.test(output);
  const reason = (output.match(/error initializing configuration[^\n]*/) ?? output.match(/[^\n]*(error|invalid)[^\n]*/i) ?? [output.trim().split("\n").at(-1) ?? `exit ${run.status}`])[0];
  const unknownField = /no\s+such\s+field:\s+'([^']+)'/.exec(output)?.[1];
  return { accepted, reason, unknownField };
}

// `envoy --version`: "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL".
function envoyVersion(envoy) {
  const run = spawnSync(envoy, ["--version"], { encoding: "utf8", timeout: 60_000 });
  const found = /version: [0-9a-f]+\/(\d+\.\d+\.\d+)\//.exec(`${run.stdout ?? ""}${run.stderr ?? ""}`);
  if (!found) throw new Error(`${envoy} --version did not report a version (exit ${run.status})`);
  return parseVersion(found[1]);
}

// ---------------------------------------------------------------------------

function main() {
  let passed = 0;
  let failed = 0;
  const ok = (what) => {
    passed += 1;
    console.log(`ok   ${what}`);
  };
  const bad = (what) => {
    failed += 1;
    console.log(`FAIL ${what}`);
  };

  const loadErrors = [];
  const docs = loadDocuments(loadErrors);
  loadErrors.forEach(bad);
  console.log(`==> istio: ${docs.length} documents under ${path.relative(ROOT, MANIFESTS)}/ (schemas: @kubernetes-models/istio, kubernetes-models; crate ${cargoVersion})`);
  if (docs.length === 0) bad(`no documents under ${MANIFESTS}`);

  const { results, configs } = validateAll(docs);
  for (const { doc, errors } of results) {
    if (errors.length === 0) ok(`valid: ${label(doc)}${doc.patch ? " (patch applied to a minimal Deployment)" : ""}`);
    else for (const error of errors) bad(`${label(doc)}: ${error}`);
  }

  console.log("==> istio: negative checks (broken copies must be rejected)");
  // Only errors the mutation caused count, and they must be the expected ones.
  const baseline = new Set(results.flatMap((r) => r.errors));
  for (const [what, expected, mutate] of NEGATIVE) {
    const copies = docs.map((doc) => ({ ...doc, body: clone(doc.body) }));
    try {
      mutate(copies);
    } catch (error) {
      bad(`${what}: ${error.message}`);
      continue;
    }
    const fresh = validateAll(copies).results.flatMap((r) => r.errors).filter((e) => !baseline.has(e));
    const hit = fresh.find((e) => expected.test(e));
    if (hit) ok(`rejects ${what}: ${hit.slice(0, 150)}`);
    else if (fresh.length > 0) bad(`${what}: rejected, but not with ${expected}: ${fresh[0]}`);
    else bad(`accepted a broken copy: ${what}`);
  }

  // Plugin configurations for tests/istio_plugin_configs.rs.
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  for (const entry of configs) {
    const { doc, name, json, env } = entry;
    const stem = `${doc.file.replace(/^envoy\/istio\//, "").replace(/\.ya?ml$/, "").replace(/[^A-Za-z0-9]+/g, "-")}-${doc.index}-${name}`;
    entry.stem = stem;
    writeFileSync(path.join(OUT, `${stem}.json`), json);
    writeFileSync(path.join(OUT, `${stem}.env.json`), JSON.stringify(env, null, 2) + "\n");
    console.log(`     plugin configuration: ${path.relative(ROOT, OUT)}/${stem}.json (${json.length} bytes; VM environment: ${Object.keys(env).join(", ") || "none"})`);
  }
  if (configs.length > 0) ok(`${configs.length} plugin configurations written to ${path.relative(ROOT, OUT)}/`);
  else bad("no plugin configurations found");

  // Envoy (--envoy BIN --wasm MODULE; make istio-check passes both).
  const arg = (name) => {
    const at = process.argv.indexOf(name);
    return at > 0 ? process.argv[at + 1] : undefined;
  };
  const envoy = arg("--envoy");
  const wasmPath = arg("--wasm") && path.resolve(arg("--wasm"));
  if (!envoy || !wasmPath) {
    console.log("==> istio: Envoy check not run (give --envoy BIN --wasm MODULE)");
  } else if (!existsSync(wasmPath)) {
    bad(`Envoy check: ${wasmPath} does not exist (make build)`);
  } else {
    const running = envoyVersion(envoy);
    console.log(`==> istio: each placement in a real Envoy ${versionText(running)} (${envoy} --mode validate; module ${path.relative(ROOT, wasmPath)})`);
    rmSync(ENVOY_OUT, { recursive: true, force: true });
    mkdirSync(ENVOY_OUT, { recursive: true });
    for (const entry of configs) {
      // A WasmPlugin with each Telemetry that can go with it; an EnvoyFilter alone.
      for (const telemetry of entry.wasmPlugin ? entry.wasmPlugin.telemetries : [undefined]) {
        const files = [entry.doc, telemetry].filter(Boolean);
        const stem = telemetry ? `${entry.stem}-with-${path.basename(telemetry.file).replace(/\.ya?ml$/, "").replace(/[^A-Za-z0-9]+/g, "-")}` : entry.stem;
        const file = path.join(ENVOY_OUT, `${stem}.json`);
        writeFileSync(file, JSON.stringify(envoyBootstrap(entry, wasmPath, telemetry), null, 1));
        const { accepted, reason, unknownField } = envoyValidate(envoy, file, entry.env);
        const how = entry.wasmPlugin ? `HCM filter as istiod generates it with ${telemetry.file}` : "cluster after Istio's MERGE";
        const what = `${label(entry.doc)} (${how})`;
        // The newest min-envoy line of the files this placement is made of.
        const needs = files.map((d) => ({ file: d.file, version: d.versions.minEnvoy })).filter((n) => n.version).sort((a, b) => compareVersions(b.version, a.version))[0];
        if (needs && compareVersions(running, needs.version) < 0) {
          const says = `min-envoy ${versionText(needs.version)} (${needs.file})`;
          if (!accepted && unknownField) ok(`Envoy ${versionText(running)} rejects ${what}, as ${says} says: no such field '${unknownField}'`);
          else bad(`Envoy ${versionText(running)} ${accepted ? "accepts" : "rejects, but not for a newer field,"} ${what}, although ${says} says it needs a newer one: ${reason} (bootstrap: ${path.relative(ROOT, file)})`);
        } else if (accepted) {
          ok(`Envoy ${versionText(running)} accepts ${what}`);
        } else {
          bad(`Envoy ${versionText(running)} rejects ${what}: ${reason} (bootstrap: ${path.relative(ROOT, file)})`);
        }
      }
    }
    // The check must be able to fail: a configuration the plugin refuses.
    const broken = configs.find((c) => c.wasmPlugin);
    if (broken) {
      const file = path.join(ENVOY_OUT, "negative-probability.json");
      // With a Telemetry that every Envoy takes (no tracer, or no newer field).
      const telemetry = broken.wasmPlugin.telemetries.find((t) => !t.versions.minEnvoy);
      writeFileSync(file, JSON.stringify(envoyBootstrap({ ...broken, json: '{"sampling": {"probability": 7}}' }, wasmPath, telemetry), null, 1));
      const { accepted, reason } = envoyValidate(envoy, file, broken.env);
      if (!accepted) ok(`Envoy rejects a pluginConfig with sampling.probability 7: ${reason.slice(0, 120)}`);
      else bad("Envoy accepted a pluginConfig with sampling.probability 7");
    }
  }

  console.log(`istio: ${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

main();
