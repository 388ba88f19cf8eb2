//! Validators for the hypervisors' official API specs: which operations exist and whether a
//! request or response body fits the operation's schema.
//!
//! Two spec dialects are read, both from YAML into `serde_json::Value`:
//! - Firecracker's Swagger 2.0 (`/work/shared/specs/firecracker.yaml`): bodies are `in: body`
//!   parameters, shared schemas live under `#/definitions/`, responses carry `schema` directly.
//! - Cloud Hypervisor's OpenAPI 3.0 (`cloud-hypervisor.yaml`): bodies are
//!   `requestBody.content.application/json.schema`, shared schemas live under
//!   `#/components/schemas/`, and every path sits under the server URL's path (`/api/v1`).
//!
//! Every body schema becomes one Draft 4 [`jsonschema::Validator`] whose root document also
//! carries the spec's shared schemas, so `$ref`s resolve inside the same document. Before
//! compiling, schemas are rewritten in these ways (all documented rules, no guessing):
//! - **Closed objects.** An object schema without `additionalProperties` gets
//!   `additionalProperties: false`, for both specs. Firecracker's structs use
//!   `deny_unknown_fields` (its own test validator closes objects the same way); Cloud
//!   Hypervisor would silently drop an unknown field, which for a contract test is just as much
//!   a bug in our wire structs. A schema that states `additionalProperties` keeps it.
//! - **Nulls.** A `null` member of an object is dropped before validation (an `Option` that
//!   serializes as `null` means "absent" to both VMMs' serde, as Firecracker's validator also
//!   assumes). `x-nullable: true` (Swagger) and `nullable: true` (OpenAPI 3) add `"null"` to the
//!   schema's `type` (and `enum`), so a nullable value may also be `null` inside arrays.
//! - **Integer formats.** OpenAPI's `int8`…`uint64` formats become `minimum`/`maximum` bounds
//!   (unless the schema gives its own); other `format`s are annotations and are not checked.
//! - **PATCH (Swagger only).** The top-level `required` of a PATCH body is emptied, as
//!   Firecracker's own validator does: `PATCH /machine-config` reuses the PUT schema for a
//!   partial update. Nested `required` lists stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use jsonschema::Validator;
use serde_json::{Map, Value};

/// Environment variable naming the directory that holds the spec YAML files.
pub const SPECS_DIR_ENV: &str = "NESTBOX_SPECS_DIR";
/// The specs directory relative to this crate's manifest directory.
pub const SPECS_DIR_FROM_MANIFEST: &str = "../../../shared/specs";
/// File name of Firecracker's spec.
pub const FIRECRACKER_SPEC: &str = "firecracker.yaml";
/// File name of Cloud Hypervisor's spec.
pub const CLOUD_HYPERVISOR_SPEC: &str = "cloud-hypervisor.yaml";

/// HTTP methods an operation may have in either spec.
const METHODS: &[&str] = &["get", "put", "post", "patch", "delete", "head", "options"];

/// Why a spec could not be loaded or compiled.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML file could not be read.
    #[error("cannot read spec {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("spec {name} is not valid YAML")]
    Yaml {
        /// The spec's name.
        name: String,
        /// The cause.
        #[source]
        source: serde_norway::Error,
    },
    /// The document has neither `swagger: "2.0"` nor `openapi: 3.x`.
    #[error("spec {name} is neither Swagger 2.0 nor OpenAPI 3 (found {found})")]
    Dialect {
        /// The spec's name.
        name: String,
        /// The version field found, or "nothing".
        found: String,
    },
    /// The document has no `paths` mapping.
    #[error("spec {name} has no paths")]
    NoPaths {
        /// The spec's name.
        name: String,
    },
    /// A body or response schema did not compile.
    #[error("spec {name}: schema of {operation} does not compile: {message}")]
    Schema {
        /// The spec's name.
        name: String,
        /// `METHOD path` plus what the schema describes.
        operation: String,
        /// The compiler's message.
        message: String,
    },
}

/// The two spec dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Swagger2,
    OpenApi3,
}

impl Dialect {
    /// The key under which the shared schemas sit, as a path from the root.
    fn definitions_pointer(self) -> &'static [&'static str] {
        match self {
            Dialect::Swagger2 => &["definitions"],
            Dialect::OpenApi3 => &["components", "schemas"],
        }
    }

    /// The `$ref` prefix of a shared schema.
    fn ref_prefix(self) -> &'static str {
        match self {
            Dialect::Swagger2 => "#/definitions/",
            Dialect::OpenApi3 => "#/components/schemas/",
        }
    }
}

/// A request body an operation takes.
#[derive(Debug)]
struct BodySpec {
    required: bool,
    validator: Validator,
}

/// One operation: a method on a path template.
#[derive(Debug)]
struct Operation {
    method: String,
    /// The template as checked, including the server base (`/api/v1/vm.create`).
    template: String,
    segments: Vec<String>,
    body: Option<BodySpec>,
    /// Status code (or "default") → validator of that response's body, `None` when it has none.
    responses: BTreeMap<String, Option<Validator>>,
}

impl Operation {
    fn matches(&self, method: &str, segments: &[&str]) -> bool {
        self.method.eq_ignore_ascii_case(method) && self.matches_path(segments)
    }

    fn matches_path(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(t, s)| (is_param(t) && !s.is_empty()) || t == s)
    }
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

#[derive(Debug)]
struct Spec {
    name: String,
    operations: Vec<Operation>,
}

/// Checks requests and responses against one hypervisor's API spec.
///
/// Cheap to clone; [`SpecValidator::firecracker`] and [`SpecValidator::cloud_hypervisor`]
/// compile once per process.
#[derive(Debug, Clone)]
pub struct SpecValidator {
    spec: Arc<Spec>,
}

impl SpecValidator {
    /// Firecracker's spec, from [`specs_dir`]. Panics when it cannot be loaded (test support).
    pub fn firecracker() -> Self {
        static CACHE: OnceLock<SpecValidator> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                Self::load(&specs_dir().join(FIRECRACKER_SPEC)).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
            })
            .clone()
    }

    /// Cloud Hypervisor's spec, from [`specs_dir`]. Panics when it cannot be loaded.
    pub fn cloud_hypervisor() -> Self {
        static CACHE: OnceLock<SpecValidator> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                Self::load(&specs_dir().join(CLOUD_HYPERVISOR_SPEC)).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
            })
            .clone()
    }

    /// Loads and compiles a spec file (either dialect).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_owned(), source })?;
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        Self::from_yaml(&name, &text)
    }

    /// Compiles a spec from its YAML text; `name` only labels errors.
    pub fn from_yaml(name: &str, yaml: &str) -> Result<Self, SpecError> {
        let doc: Value =
            serde_norway::from_str(yaml).map_err(|source| SpecError::Yaml { name: name.to_owned(), source })?;
        Self::from_document(name, &doc)
    }

    /// Compiles a spec already parsed into JSON.
    pub fn from_document(name: &str, doc: &Value) -> Result<Self, SpecError> {
        let dialect = dialect_of(name, doc)?;
        let base = match dialect {
            Dialect::Swagger2 => doc.get("basePath").and_then(Value::as_str).unwrap_or("/"),
            Dialect::OpenApi3 => doc.pointer("/servers/0/url").and_then(Value::as_str).map(url_path).unwrap_or("/"),
        };
        let base = base.trim_end_matches('/');
        let mut definitions = Value::Object(Map::new());
        let mut node = doc;
        let mut found = true;
        for key in dialect.definitions_pointer() {
            match node.get(key) {
                Some(next) => node = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            definitions = node.clone();
        }
        let definitions = rewrite_definitions(&definitions);
        let paths =
            doc.get("paths").and_then(Value::as_object).ok_or_else(|| SpecError::NoPaths { name: name.to_owned() })?;
        let compiler = Compiler { name, dialect, definitions: &definitions };
        let mut operations = Vec::new();
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            let full = format!("{base}{template}");
            for (method, op) in item {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let method = method.to_ascii_uppercase();
                let label = format!("{method} {full}");
                let body = compiler.body(&label, &method, op)?;
                let responses = compiler.responses(&label, op)?;
                operations.push(Operation {
                    segments: split_path(&full).into_iter().map(str::to_owned).collect(),
                    method,
                    template: full.clone(),
                    body,
                    responses,
                });
            }
        }
        Ok(Self { spec: Arc::new(Spec { name: name.to_owned(), operations }) })
    }

    /// The spec's name (its file name).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Every operation as (METHOD, path template); templates include the server base, so
    /// Cloud Hypervisor's read `/api/v1/vm.create`. Each is accepted by [`Self::template_of`].
    pub fn operations(&self) -> Vec<(String, String)> {
        self.spec.operations.iter().map(|op| (op.method.clone(), op.template.clone())).collect()
    }

    /// The template of the operation a concrete request hits (`/drives/rootfs` →
    /// `/drives/{drive_id}`), or `None` when the spec lacks it. A query string is ignored.
    pub fn template_of(&self, method: &str, path: &str) -> Option<&str> {
        self.find(method, path).map(|op| op.template.as_str())
    }

    fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let segments = split_path(strip_query(path));
        // A literal segment beats a parameter when both match (`/balloon/statistics`).
        self.spec
            .operations
            .iter()
            .filter(|op| op.matches(method, &segments))
            .min_by_key(|op| op.segments.iter().filter(|s| is_param(s)).count())
    }

    fn missing(&self, method: &str, path: &str) -> String {
        let segments = split_path(strip_query(path));
        let methods: Vec<&str> =
            self.spec.operations.iter().filter(|op| op.matches_path(&segments)).map(|op| op.method.as_str()).collect();
        if methods.is_empty() {
            format!("{method} {path}: path not in {}", self.spec.name)
        } else {
            format!("{method} {path}: method not in {} (it has {})", self.spec.name, methods.join(", "))
        }
    }

    /// Checks a request: the operation must exist, a body must validate against the
    /// operation's body schema, a required body must be present and no body may be sent to an
    /// operation that takes none.
    pub fn check_request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(), String> {
        let op = self.find(method, path).ok_or_else(|| self.missing(method, path))?;
        let label = format!("{} {path}", op.method);
        match (&op.body, body) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(format!("{label}: takes no body, one was sent")),
            (Some(spec), None) if spec.required => Err(format!("{label}: body required")),
            (Some(_), None) => Ok(()),
            (Some(spec), Some(body)) => {
                validate(&spec.validator, body).map_err(|errors| format!("{label}: body invalid: {errors}"))
            }
        }
    }

    /// Checks a response body against the schema the spec gives for `status` (or its
    /// `default`). A 2xx status the operation does not list fails; so does a 2xx body where
    /// the spec has none, or a missing body where it has one. Non-2xx answers are only checked
    /// when the spec has a schema for them.
    pub fn check_response(&self, method: &str, path: &str, status: u16, body: Option<&Value>) -> Result<(), String> {
        let op = self.find(method, path).ok_or_else(|| self.missing(method, path))?;
        let label = format!("{} {path} -> {status}", op.method);
        let success = (200..300).contains(&status);
        let entry = op.responses.get(&status.to_string()).or_else(|| op.responses.get("default").filter(|_| !success));
        let Some(entry) = entry else {
            return if success { Err(format!("{label}: status not in {}", self.spec.name)) } else { Ok(()) };
        };
        match (entry, body) {
            (None, None) => Ok(()),
            (None, Some(_)) if success => Err(format!("{label}: spec has no body, one was sent")),
            (None, Some(_)) => Ok(()),
            (Some(_), None) if success => Err(format!("{label}: body missing")),
            (Some(_), None) => Ok(()),
            (Some(v), Some(body)) => validate(v, body).map_err(|errors| format!("{label}: body invalid: {errors}")),
        }
    }
}

/// The directory holding the spec YAML: `$NESTBOX_SPECS_DIR`, else
/// `<testkit manifest dir>/../../../shared/specs`.
pub fn specs_dir() -> PathBuf {
    match std::env::var_os(SPECS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join(SPECS_DIR_FROM_MANIFEST);
            if shared.is_dir() { shared } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(VENDORED_SPECS_DIR) }
        }
    }
}

/// The repository's own copy of the specs (`spec/hypervisors/`), used where the shared
/// directory beside the checkout is absent; a test keeps it identical to the shared one.
pub const VENDORED_SPECS_DIR: &str = "../../spec/hypervisors";

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn dialect_of(name: &str, doc: &Value) -> Result<Dialect, SpecError> {
    let version = |key: &str| match doc.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(v) = version("swagger") {
        if v.starts_with('2') {
            return Ok(Dialect::Swagger2);
        }
        return Err(SpecError::Dialect { name: name.to_owned(), found: format!("swagger {v}") });
    }
    if let Some(v) = version("openapi") {
        if v.starts_with('3') {
            return Ok(Dialect::OpenApi3);
        }
        return Err(SpecError::Dialect { name: name.to_owned(), found: format!("openapi {v}") });
    }
    Err(SpecError::Dialect { name: name.to_owned(), found: "nothing".to_owned() })
}

/// The path part of a server URL (`http://localhost/api/v1` → `/api/v1`).
fn url_path(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => url,
    }
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

fn split_path(path: &str) -> Vec<&str> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() }
}

struct Compiler<'a> {
    name: &'a str,
    dialect: Dialect,
    /// The rewritten shared schemas.
    definitions: &'a Value,
}

impl Compiler<'_> {
    fn body(&self, label: &str, method: &str, op: &Value) -> Result<Option<BodySpec>, SpecError> {
        let (schema, required) = match self.dialect {
            Dialect::Swagger2 => {
                let param = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .and_then(|ps| ps.iter().find(|p| p.get("in").and_then(Value::as_str) == Some("body")));
                match param {
                    None => return Ok(None),
                    Some(p) => (
                        p.get("schema").cloned().unwrap_or(Value::Bool(true)),
                        p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    ),
                }
            }
            Dialect::OpenApi3 => {
                let Some(rb) = op.get("requestBody") else {
                    return Ok(None);
                };
                (
                    rb.pointer("/content/application~1json/schema").cloned().unwrap_or(Value::Bool(true)),
                    rb.get("required").and_then(Value::as_bool).unwrap_or(false),
                )
            }
        };
        let relax = self.dialect == Dialect::Swagger2 && method == "PATCH";
        let validator = self.compile(&format!("{label} body"), &schema, relax)?;
        Ok(Some(BodySpec { required, validator }))
    }

    fn responses(&self, label: &str, op: &Value) -> Result<BTreeMap<String, Option<Validator>>, SpecError> {
        let mut out = BTreeMap::new();
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (status, response) in responses {
            let schema = match self.dialect {
                Dialect::Swagger2 => response.get("schema"),
                Dialect::OpenApi3 => response.pointer("/content/application~1json/schema"),
            };
            let validator = match schema {
                Some(s) => Some(self.compile(&format!("{label} response {status}"), s, false)?),
                None => None,
            };
            out.insert(status.clone(), validator);
        }
        Ok(out)
    }

    /// Compiles `schema` with the shared schemas in the same root document.
    fn compile(&self, what: &str, schema: &Value, relax_required: bool) -> Result<Validator, SpecError> {
        // Inline a top-level `$ref` so the root can carry siblings (Draft 4 ignores them next
        // to `$ref`) and so PATCH can relax the referenced schema's `required`.
        let mut top =
            match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(self.dialect.ref_prefix())) {
                Some(def) => self.definitions.get(def).cloned().ok_or_else(|| SpecError::Schema {
                    name: self.name.to_owned(),
                    operation: what.to_owned(),
                    message: format!("unresolved $ref {def}"),
                })?,
                None => rewrite_schema(schema),
            };
        if relax_required && let Some(obj) = top.as_object_mut() {
            obj.remove("required");
        }
        let root = match top {
            Value::Object(mut obj) => {
                let defs = self.definitions.clone();
                match self.dialect {
                    Dialect::Swagger2 => {
                        obj.insert("definitions".to_owned(), defs);
                    }
                    Dialect::OpenApi3 => {
                        let mut schemas = Map::new();
                        schemas.insert("schemas".to_owned(), defs);
                        obj.insert("components".to_owned(), Value::Object(schemas));
                    }
                }
                Value::Object(obj)
            }
            other => other,
        };
        jsonschema::draft4::options().should_validate_formats(false).build(&root).map_err(|e| SpecError::Schema {
            name: self.name.to_owned(),
            operation: what.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Validates `body` (with `null` members dropped); on failure, every error joined by "; ",
/// each prefixed by the JSON pointer of the offending value.
fn validate(validator: &Validator, body: &Value) -> Result<(), String> {
    let cleaned = drop_nulls(body);
    let errors: Vec<String> = validator
        .iter_errors(&cleaned)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("at {at}: {e}")
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

/// Drops `null` members of objects, recursively (array items stay).
fn drop_nulls(value: &Value) -> Value {
    match value {
        Value::Object(obj) => {
            Value::Object(obj.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), drop_nulls(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

fn rewrite_definitions(definitions: &Value) -> Value {
    match definitions {
        Value::Object(defs) => Value::Object(defs.iter().map(|(k, v)| (k.clone(), rewrite_schema(v))).collect()),
        _ => Value::Object(Map::new()),
    }
}

/// Bounds of the OpenAPI integer formats.
fn format_bounds(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "int64" => (i64::MIN.into(), i64::MAX.into()),
        "uint64" => (0, u64::MAX.into()),
        _ => return None,
    })
}

fn bound_value(n: i128) -> Value {
    if let Ok(v) = i64::try_from(n) {
        Value::from(v)
    } else if let Ok(v) = u64::try_from(n) {
        Value::from(v)
    } else {
        Value::Null
    }
}

/// Applies the module's rewriting rules to one schema, recursively.
fn rewrite_schema(schema: &Value) -> Value {
    let Value::Object(src) = schema else {
        return schema.clone();
    };
    let nullable = src.get("x-nullable").and_then(Value::as_bool) == Some(true)
        || src.get("nullable").and_then(Value::as_bool) == Some(true);
    if let Some(r) = src.get("$ref") {
        let mut only_ref = Map::new();
        only_ref.insert("$ref".to_owned(), r.clone());
        if nullable {
            return serde_json::json!({ "anyOf": [Value::Object(only_ref), { "type": "null" }] });
        }
        return Value::Object(only_ref);
    }
    let mut out = Map::new();
    for (key, value) in src {
        let rewritten = match key.as_str() {
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(props) => {
                    Value::Object(props.iter().map(|(k, v)| (k.clone(), rewrite_schema(v))).collect())
                }
                other => other.clone(),
            },
            "items" => match value {
                Value::Array(items) => Value::Array(items.iter().map(rewrite_schema).collect()),
                other => rewrite_schema(other),
            },
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(items) => Value::Array(items.iter().map(rewrite_schema).collect()),
                other => other.clone(),
            },
            "additionalProperties" | "not" => rewrite_schema(value),
            "format" | "x-nullable" | "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), rewritten);
    }
    if let Some((min, max)) = src.get("format").and_then(Value::as_str).and_then(format_bounds) {
        out.entry("minimum").or_insert_with(|| bound_value(min));
        out.entry("maximum").or_insert_with(|| bound_value(max));
    }
    let is_object = src.get("type").and_then(Value::as_str) == Some("object") || src.contains_key("properties");
    if is_object && !src.contains_key("additionalProperties") {
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    if nullable {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                out.insert("type".to_owned(), serde_json::json!([t, "null"]));
            }
            Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
                types.push(Value::from("null"));
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = out.get_mut("enum")
            && !values.iter().any(Value::is_null)
        {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod vendored_tests {
    use std::path::Path;

    /// The vendored copy must be byte-identical to the shared specs whenever both are present.
    #[test]
    fn test_vendored_specs_match_shared() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = manifest.join(super::SPECS_DIR_FROM_MANIFEST);
        if !shared.is_dir() {
            eprintln!("skipped: no shared specs beside the checkout");
            return;
        }
        for name in ["firecracker.yaml", "cloud-hypervisor.yaml"] {
            let a = std::fs::read(shared.join(name)).unwrap();
            let b = std::fs::read(manifest.join(super::VENDORED_SPECS_DIR).join(name)).unwrap();
            assert!(a == b, "spec/hypervisors/{name} differs from the shared spec: copy it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fc() -> SpecValidator {
        SpecValidator::firecracker()
    }

    fn ch() -> SpecValidator {
        SpecValidator::cloud_hypervisor()
    }

    #[test]
    fn firecracker_good_bodies_pass() {
        let v = fc();
        let ok = [
            ("PUT", "/machine-config", json!({"vcpu_count": 2, "mem_size_mib": 256})),
            (
                "PUT",
                "/boot-source",
                json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"}),
            ),
            (
                "PUT",
                "/drives/rootfs",
                json!({"drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true,
                       "is_read_only": false,
                       "rate_limiter": {"bandwidth": {"size": 100, "refill_time": 10}}}),
            ),
            (
                "PUT",
                "/network-interfaces/eth0",
                json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}),
            ),
            ("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": "/tmp/v.sock"})),
            ("PUT", "/actions", json!({"action_type": "InstanceStart"})),
            ("PATCH", "/vm", json!({"state": "Paused"})),
            (
                "PUT",
                "/snapshot/load",
                json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u.sock"}}),
            ),
            ("PATCH", "/balloon", json!({"amount_mib": 64})),
            ("PUT", "/entropy", json!({})),
        ];
        for (method, path, body) in ok {
            v.check_request(method, path, Some(&body)).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        }
        v.check_request("GET", "/", None).unwrap();
        v.check_request("GET", "/vm/config", None).unwrap();
    }

    #[test]
    fn firecracker_bad_bodies_name_the_field() {
        let v = fc();
        let e = v
            .check_request("PUT", "/drives/rootfs", Some(&json!({"drive_id": "rootfs", "is_root_device": "yes"})))
            .unwrap_err();
        assert!(e.contains("/is_root_device"), "{e}");
        let e = v.check_request("PATCH", "/vm", Some(&json!({"state": "Sleeping"}))).unwrap_err();
        assert!(e.contains("/state") && e.contains("Sleeping"), "{e}");
        let e = v.check_request("PUT", "/boot-source", Some(&json!({"boot_args": "x"}))).unwrap_err();
        assert!(e.contains("kernel_image_path"), "{e}");
        let e = v.check_request("PUT", "/vsock", Some(&json!({"guest_cid": 2, "uds_path": "/v"}))).unwrap_err();
        assert!(e.contains("/guest_cid"), "{e}");
    }

    #[test]
    fn firecracker_objects_are_closed() {
        let e = fc()
            .check_request("PUT", "/machine-config", Some(&json!({"vcpu_count": 1, "mem_size_mib": 128, "vcpus": 2})))
            .unwrap_err();
        assert!(e.contains("vcpus"), "{e}");
        // nested objects too
        let e = fc()
            .check_request(
                "PUT",
                "/entropy",
                Some(&json!({"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "burst": 2}}})),
            )
            .unwrap_err();
        assert!(e.contains("burst"), "{e}");
        // an explicitly open schema stays open
        fc().check_request("PUT", "/mmds", Some(&json!({"anything": {"x": 1}}))).unwrap();
    }

    #[test]
    fn firecracker_patch_relaxes_top_level_required_only() {
        let v = fc();
        v.check_request("PATCH", "/machine-config", Some(&json!({"vcpu_count": 2}))).unwrap();
        assert!(v.check_request("PUT", "/machine-config", Some(&json!({"vcpu_count": 2}))).is_err());
        let e = v
            .check_request("PATCH", "/drives/d", Some(&json!({"drive_id": "d", "rate_limiter": {"ops": {"size": 1}}})))
            .unwrap_err();
        assert!(e.contains("refill_time"), "{e}");
    }

    #[test]
    fn nulls_mean_absent() {
        fc().check_request("PUT", "/boot-source", Some(&json!({"kernel_image_path": "/k", "initrd_path": null})))
            .unwrap();
        let e = fc().check_request("PUT", "/boot-source", Some(&json!({"kernel_image_path": null}))).unwrap_err();
        assert!(e.contains("kernel_image_path"), "{e}");
    }

    #[test]
    fn nullable_keywords_admit_null() {
        let yaml = r##"
swagger: "2.0"
paths:
  /x:
    put:
      parameters:
        - name: body
          in: body
          required: true
          schema:
            $ref: "#/definitions/X"
definitions:
  X:
    type: object
    properties:
      list:
        type: array
        items:
          type: string
          x-nullable: true
      mode:
        type: string
        enum: [A, B]
        x-nullable: true
"##;
        let v = SpecValidator::from_yaml("t", yaml).unwrap();
        v.check_request("PUT", "/x", Some(&json!({"list": ["a", null]}))).unwrap();
        assert!(v.check_request("PUT", "/x", Some(&json!({"list": [1]}))).is_err());
        assert!(v.check_request("PUT", "/x", Some(&json!({"mode": "C"}))).is_err());
        let yaml3 = r##"
openapi: 3.0.1
paths:
  /y:
    put:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              $ref: "#/components/schemas/Y"
components:
  schemas:
    Y:
      type: object
      properties:
        values:
          type: array
          items:
            type: integer
            nullable: true
"##;
        let v = SpecValidator::from_yaml("t3", yaml3).unwrap();
        v.check_request("PUT", "/y", Some(&json!({"values": [1, null]}))).unwrap();
        assert!(v.check_request("PUT", "/y", Some(&json!({"values": ["1"]}))).is_err());
    }

    #[test]
    fn unknown_path_or_method_fails() {
        let v = fc();
        let e = v.check_request("GET", "/nope", None).unwrap_err();
        assert!(e.contains("path not in"), "{e}");
        let e = v.check_request("DELETE", "/drives/x", None).unwrap_err();
        assert!(e.contains("method not in") && e.contains("PUT"), "{e}");
        // a parameter segment needs a value
        assert!(v.check_request("PUT", "/drives/", Some(&json!({}))).is_err());
        assert!(v.check_request("GET", "/vm/config/extra", None).is_err());
    }

    #[test]
    fn body_presence_is_checked() {
        let v = fc();
        let e = v.check_request("GET", "/", Some(&json!({}))).unwrap_err();
        assert!(e.contains("takes no body"), "{e}");
        let e = v.check_request("PUT", "/actions", None).unwrap_err();
        assert!(e.contains("body required"), "{e}");
        // the machine-config body parameter is not marked required
        v.check_request("PUT", "/machine-config", None).unwrap();
    }

    #[test]
    fn templates_and_operations() {
        let v = fc();
        assert_eq!(v.template_of("PUT", "/drives/rootfs"), Some("/drives/{drive_id}"));
        assert_eq!(v.template_of("get", "/balloon/statistics"), Some("/balloon/statistics"));
        assert_eq!(v.template_of("GET", "/vm/config?x=1"), Some("/vm/config"));
        let ops = v.operations();
        for expected in [
            ("GET", "/"),
            ("PUT", "/actions"),
            ("PUT", "/drives/{drive_id}"),
            ("PATCH", "/drives/{drive_id}"),
            ("PATCH", "/vm"),
            ("PUT", "/snapshot/create"),
            ("PUT", "/snapshot/load"),
            ("GET", "/vm/config"),
        ] {
            assert!(ops.iter().any(|(m, p)| m == expected.0 && p == expected.1), "{expected:?} missing");
        }
        assert!(!ops.iter().any(|(m, p)| m == "DELETE" && p == "/vm"));
        for (m, p) in &ops {
            assert_eq!(v.template_of(m, p), Some(p.as_str()));
        }
    }

    #[test]
    fn firecracker_responses() {
        let v = fc();
        v.check_response(
            "GET",
            "/",
            200,
            Some(&json!({"id": "a", "state": "Running", "vmm_version": "1.16.1", "app_name": "Firecracker"})),
        )
        .unwrap();
        let e = v
            .check_response(
                "GET",
                "/",
                200,
                Some(&json!({"id": "a", "state": "Booting", "vmm_version": "1", "app_name": "F"})),
            )
            .unwrap_err();
        assert!(e.contains("/state"), "{e}");
        v.check_response("PUT", "/actions", 204, None).unwrap();
        assert!(v.check_response("PUT", "/actions", 200, None).is_err());
        assert!(v.check_response("PUT", "/actions", 204, Some(&json!({}))).is_err());
        v.check_response("PUT", "/actions", 400, Some(&json!({"fault_message": "x"}))).unwrap();
        assert!(v.check_response("PUT", "/actions", 400, Some(&json!({"fault": "x"}))).is_err());
    }

    #[test]
    fn cloud_hypervisor_paths_sit_under_the_base() {
        let v = ch();
        v.check_request("GET", "/api/v1/vmm.ping", None).unwrap();
        assert!(v.check_request("GET", "/vmm.ping", None).is_err());
        v.check_request("PUT", "/api/v1/vm.boot", None).unwrap();
        let ops = v.operations();
        assert!(ops.iter().any(|(m, p)| m == "PUT" && p == "/api/v1/vm.create"));
        assert!(ops.iter().all(|(_, p)| p.starts_with("/api/v1/")));
    }

    #[test]
    fn cloud_hypervisor_bodies() {
        let v = ch();
        let good = json!({
            "payload": {"kernel": "/k", "cmdline": "console=hvc0"},
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
            "memory": {"size": 268435456u64, "shared": false, "thp": false},
            "disks": [{"path": "/r.img", "readonly": true}],
            "vsock": {"cid": 3, "socket": "/v.sock"}
        });
        v.check_request("PUT", "/api/v1/vm.create", Some(&good)).unwrap();
        let mut bad = good.clone();
        bad["cpus"]["boot_vcpus"] = json!("two");
        let e = v.check_request("PUT", "/api/v1/vm.create", Some(&bad)).unwrap_err();
        assert!(e.contains("/cpus/boot_vcpus"), "{e}");
        let mut bad = good.clone();
        bad["memory"]["sharred"] = json!(true);
        let e = v.check_request("PUT", "/api/v1/vm.create", Some(&bad)).unwrap_err();
        assert!(e.contains("sharred"), "{e}");
        let e = v.check_request("PUT", "/api/v1/vm.create", Some(&json!({"cpus": {}}))).unwrap_err();
        assert!(e.contains("payload"), "{e}");
        let e = v.check_request("PUT", "/api/v1/vm.boot", Some(&json!({}))).unwrap_err();
        assert!(e.contains("takes no body"), "{e}");
        assert!(v.check_request("PUT", "/api/v1/vm.create", None).is_err());
    }

    #[test]
    fn integer_formats_bound_values() {
        let yaml = r#"
openapi: 3.0.1
paths:
  /z:
    put:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                small: {type: integer, format: uint8}
"#;
        let v = SpecValidator::from_yaml("z", yaml).unwrap();
        v.check_request("PUT", "/z", Some(&json!({"small": 255}))).unwrap();
        let e = v.check_request("PUT", "/z", Some(&json!({"small": 256}))).unwrap_err();
        assert!(e.contains("/small"), "{e}");
        assert!(v.check_request("PUT", "/z", Some(&json!({"small": -1}))).is_err());
    }

    #[test]
    fn loading_errors_are_typed() {
        assert!(matches!(SpecValidator::from_yaml("x", "a: [").unwrap_err(), SpecError::Yaml { .. }));
        assert!(matches!(SpecValidator::from_yaml("x", "info: {}").unwrap_err(), SpecError::Dialect { .. }));
        assert!(matches!(SpecValidator::from_yaml("x", "swagger: '2.0'").unwrap_err(), SpecError::NoPaths { .. }));
        assert!(matches!(
            SpecValidator::load(Path::new("/nonexistent/spec.yaml")).unwrap_err(),
            SpecError::Read { .. }
        ));
    }
}
