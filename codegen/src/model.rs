//! The message model: Kafka's JSON definitions parsed into versions, types,
//! fields and structs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

/// A contiguous, inclusive version range; empty when `lo > hi`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Versions {
    pub lo: i16,
    pub hi: i16,
}

impl Versions {
    pub const NONE: Versions = Versions { lo: 1, hi: 0 };

    /// Parses Kafka's version syntax: `none`, `N`, `N+`, `N-M`.
    pub fn parse(s: &str) -> Result<Versions, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(Versions::NONE);
        }
        let num = |t: &str| {
            t.trim()
                .parse::<i16>()
                .map_err(|_| format!("bad version range {s:?}"))
        };
        if let Some(lo) = s.strip_suffix('+') {
            return Ok(Versions {
                lo: num(lo)?,
                hi: i16::MAX,
            });
        }
        if let Some((lo, hi)) = s.split_once('-') {
            return Ok(Versions {
                lo: num(lo)?,
                hi: num(hi)?,
            });
        }
        let v = num(s)?;
        Ok(Versions { lo: v, hi: v })
    }

    pub fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    pub fn intersect(self, o: Versions) -> Versions {
        let v = Versions {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        };
        if v.is_empty() {
            Versions::NONE
        } else {
            v
        }
    }

    /// `self` minus `o`, which must leave a contiguous range (as Kafka's
    /// generator also requires for mandatory versions of tagged fields).
    pub fn subtract(self, o: Versions) -> Result<Versions, String> {
        let o = self.intersect(o);
        if o.is_empty() {
            return Ok(self);
        }
        if o.lo <= self.lo && o.hi >= self.hi {
            return Ok(Versions::NONE);
        }
        if o.lo > self.lo && o.hi >= self.hi {
            return Ok(Versions {
                lo: self.lo,
                hi: o.lo - 1,
            });
        }
        if o.lo <= self.lo && o.hi < self.hi {
            return Ok(Versions {
                lo: o.hi + 1,
                hi: self.hi,
            });
        }
        Err(format!("cannot subtract {o} from {self}"))
    }

    /// A runtime condition "version is in `self`", simplified for a context
    /// where the version is known to lie in `within`.
    pub fn cond(self, within: Versions) -> Cond {
        let v = self.intersect(within);
        if v.is_empty() {
            return Cond::Never;
        }
        if v == within {
            return Cond::Always;
        }
        let lower = v.lo > within.lo;
        let upper = v.hi < within.hi;
        let expr = match (lower, upper) {
            (true, false) => format!("version >= {}", v.lo),
            (false, true) => format!("version <= {}", v.hi),
            _ if v.lo == v.hi => format!("version == {}", v.lo),
            _ => format!("({}..={}).contains(&version)", v.lo, v.hi),
        };
        let neg = match (lower, upper) {
            (true, false) => format!("version < {}", v.lo),
            (false, true) => format!("version > {}", v.hi),
            _ if v.lo == v.hi => format!("version != {}", v.lo),
            _ => format!("!({}..={}).contains(&version)", v.lo, v.hi),
        };
        Cond::Expr { expr, neg }
    }
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "none")
        } else if self.hi == i16::MAX {
            write!(f, "{}+", self.lo)
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A version condition evaluated in generated code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    Never,
    Expr { expr: String, neg: String },
}

impl Cond {
    /// The condition as a Rust boolean expression.
    pub fn expr(&self) -> String {
        match self {
            Cond::Always => "true".into(),
            Cond::Never => "false".into(),
            Cond::Expr { expr, .. } => expr.clone(),
        }
    }

    /// The negated condition as a Rust boolean expression.
    pub fn neg(&self) -> String {
        match self {
            Cond::Always => "false".into(),
            Cond::Never => "true".into(),
            Cond::Expr { neg, .. } => neg.clone(),
        }
    }
}

/// A field type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    Bool,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    F64,
    Uuid,
    Str,
    Bytes,
    Records,
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Result<Ty, String> {
        if let Some(elem) = s.strip_prefix("[]") {
            let e = Ty::parse(elem)?;
            if matches!(e, Ty::Array(_) | Ty::Records) {
                return Err(format!("unsupported array element type {elem}"));
            }
            return Ok(Ty::Array(Box::new(e)));
        }
        Ok(match s {
            "bool" => Ty::Bool,
            "int8" => Ty::I8,
            "int16" => Ty::I16,
            "uint16" => Ty::U16,
            "int32" => Ty::I32,
            "uint32" => Ty::U32,
            "int64" => Ty::I64,
            "float64" => Ty::F64,
            "uuid" => Ty::Uuid,
            "string" => Ty::Str,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            s if s.starts_with(|c: char| c.is_ascii_uppercase()) => Ty::Struct(s.to_string()),
            s => return Err(format!("unknown type {s}")),
        })
    }

    /// The JSON spelling, for documentation.
    pub fn json(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::I8 => "int8".into(),
            Ty::I16 => "int16".into(),
            Ty::U16 => "uint16".into(),
            Ty::I32 => "int32".into(),
            Ty::U32 => "uint32".into(),
            Ty::I64 => "int64".into(),
            Ty::F64 => "float64".into(),
            Ty::Uuid => "uuid".into(),
            Ty::Str => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Records => "records".into(),
            Ty::Struct(n) => n.clone(),
            Ty::Array(e) => format!("[]{}", e.json()),
        }
    }
}

/// One field of a struct.
#[derive(Clone, Debug)]
pub struct Field {
    /// The JSON name (`ThrottleTimeMs`).
    pub name: String,
    /// The Rust name (`throttle_time_ms`).
    pub rust: String,
    pub ty: Ty,
    pub versions: Versions,
    pub nullable: Versions,
    pub tagged: Versions,
    pub tag: Option<u32>,
    pub ignorable: bool,
    /// The JSON default, as written (`"-1"`, `"null"`, `"0x7fffffff"`).
    pub default: Option<String>,
    /// A field-level `flexibleVersions` override (RequestHeader.ClientId).
    pub flexible: Option<Versions>,
}

impl Field {
    /// Whether the Rust type is an `Option`: nullable in some version, or
    /// `records`, which is always optional raw bytes.
    pub fn is_option(&self) -> bool {
        !self.nullable.is_empty() || self.ty == Ty::Records
    }
}

/// A struct: the top-level message or a nested/common structure.
#[derive(Clone, Debug)]
pub struct StructDef {
    pub name: String,
    pub fields: Vec<Field>,
    /// The versions in which this struct can occur.
    pub within: Versions,
}

/// What kind of JSON file a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Header,
    Data,
}

/// One JSON message definition.
#[derive(Clone, Debug)]
pub struct Msg {
    pub name: String,
    pub module: String,
    pub kind: Kind,
    pub api_key: Option<i16>,
    pub valid: Versions,
    pub flexible: Versions,
    pub listeners: Vec<String>,
    pub unstable_latest: bool,
    /// The top-level struct first, then nested and common structs.
    pub structs: Vec<StructDef>,
}

/// Strips whole-line `//` comments, which Kafka's JSON dialect allows.
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads every message definition in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Msg>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: Value = serde_json::from_str(&strip_comments(&text))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let msg = parse_msg(&json).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push(msg);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn get_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string {key:?}"))
}

fn opt_versions(v: &Value, key: &str) -> Result<Versions, String> {
    match v.get(key) {
        None => Ok(Versions::NONE),
        Some(x) => Versions::parse(x.as_str().ok_or_else(|| format!("{key} is not a string"))?),
    }
}

/// Versions Kafka added after the snapshot of the definitions this
/// generator reads, each with the wire format of the version before it
/// (only the version number tells the broker something): `(message, the
/// snapshot's highest version, the highest version to generate)`.
///
/// - Produce v12 and TxnOffsetCommit v5 (Kafka 4.0, KIP-890): the client
///   lets the broker add partitions to its transaction (transaction
///   version 2).
const LATER_VERSIONS: &[(&str, i16, i16)] = &[
    ("ProduceRequest", 11, 12),
    ("ProduceResponse", 11, 12),
    ("TxnOffsetCommitRequest", 4, 5),
    ("TxnOffsetCommitResponse", 4, 5),
];

/// A later version has the snapshot's highest version's format only if no
/// field's version range ends there.
fn check_open_ended(json: &Value, hi: i16) -> Result<(), String> {
    match json {
        Value::Object(map) => {
            for (key, v) in map {
                if key.ends_with("ersions") && key != "validVersions" {
                    if let Some(text) = v.as_str() {
                        let r = Versions::parse(text)?;
                        if !r.is_empty() && r.hi == hi {
                            return Err(format!(
                                "{key} {text:?} ends at version {hi}: a later version's format differs"
                            ));
                        }
                    }
                }
                check_open_ended(v, hi)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_open_ended(v, hi)),
        _ => Ok(()),
    }
}

fn parse_msg(json: &Value) -> Result<Msg, String> {
    let name = get_str(json, "name")?.to_string();
    let kind = match get_str(json, "type")? {
        "request" => Kind::Request,
        "response" => Kind::Response,
        "header" => Kind::Header,
        "data" => Kind::Data,
        k => return Err(format!("unknown message type {k}")),
    };
    let api_key = match json.get("apiKey") {
        Some(v) => Some(
            v.as_i64()
                .and_then(|k| i16::try_from(k).ok())
                .ok_or("bad apiKey")?,
        ),
        None => None,
    };
    let mut valid = Versions::parse(get_str(json, "validVersions")?)?;
    if valid.is_empty() || valid.hi == i16::MAX {
        return Err(format!("validVersions {valid} must be a closed range"));
    }
    if let Some(&(_, from, to)) = LATER_VERSIONS.iter().find(|(n, _, _)| *n == name) {
        if valid.hi == from {
            check_open_ended(json, from)?;
            valid.hi = to;
        }
    }
    let flexible = opt_versions(json, "flexibleVersions")?;
    if !flexible.is_empty() && flexible.hi != i16::MAX {
        return Err("flexibleVersions must be open-ended".into());
    }
    let listeners = json
        .get("listeners")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let unstable_latest = json
        .get("latestVersionUnstable")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut structs: Vec<StructDef> = Vec::new();
    let mut common: BTreeMap<String, (Versions, Vec<Value>)> = BTreeMap::new();
    if let Some(cs) = json.get("commonStructs").and_then(Value::as_array) {
        for c in cs {
            let cname = get_str(c, "name")?.to_string();
            let cv = Versions::parse(get_str(c, "versions")?)?;
            let fields = c
                .get("fields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            common.insert(cname, (cv, fields));
        }
    }
    let top_fields = json
        .get("fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let top = parse_struct(&name, &top_fields, valid, &mut structs)?;
    structs.insert(0, top);
    for (cname, (cv, fields)) in &common {
        let s = parse_struct(cname, fields, cv.intersect(valid), &mut structs)?;
        structs.push(s);
    }
    // Every referenced struct type must be defined exactly once.
    let mut seen = std::collections::BTreeSet::new();
    for s in &structs {
        if !seen.insert(s.name.clone()) {
            return Err(format!("struct {} defined twice", s.name));
        }
    }
    for s in &structs {
        for f in &s.fields {
            let mut t = &f.ty;
            if let Ty::Array(e) = t {
                t = e;
            }
            if let Ty::Struct(n) = t {
                if !seen.contains(n) {
                    return Err(format!("field {} uses undefined struct {n}", f.name));
                }
            }
        }
    }
    Ok(Msg {
        module: snake(&name),
        name,
        kind,
        api_key,
        valid,
        flexible,
        listeners,
        unstable_latest,
        structs,
    })
}

/// Parses the fields of one struct, registering nested struct definitions
/// (depth-first, in field order) in `out`.
fn parse_struct(
    name: &str,
    fields: &[Value],
    within: Versions,
    out: &mut Vec<StructDef>,
) -> Result<StructDef, String> {
    let mut parsed = Vec::new();
    for f in fields {
        let fname = get_str(f, "name")?.to_string();
        let ty = Ty::parse(get_str(f, "type")?).map_err(|e| format!("{fname}: {e}"))?;
        let versions = Versions::parse(get_str(f, "versions")?)?;
        let nullable = opt_versions(f, "nullableVersions")?;
        let tagged = opt_versions(f, "taggedVersions")?;
        let tag = match f.get("tag") {
            None => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or("bad tag")?,
            ),
            Some(Value::String(s)) => Some(s.trim().parse::<u32>().map_err(|_| "bad tag")?),
            Some(_) => return Err("bad tag".into()),
        };
        if !tagged.is_empty() && tag.is_none() {
            return Err(format!("{fname}: taggedVersions without tag"));
        }
        let ignorable = f.get("ignorable").and_then(Value::as_bool).unwrap_or(false);
        let default = match f.get("default") {
            None => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(v) => return Err(format!("{fname}: unsupported default {v}")),
        };
        let flexible = match f.get("flexibleVersions") {
            None => None,
            Some(v) => Some(Versions::parse(v.as_str().ok_or("bad flexibleVersions")?)?),
        };
        let elem = match &ty {
            Ty::Array(e) => e.as_ref(),
            t => t,
        };
        if let (Ty::Struct(sname), Some(sub)) = (elem, f.get("fields").and_then(Value::as_array)) {
            let s = parse_struct(sname, sub, versions.intersect(within), out)?;
            out.push(s);
        }
        parsed.push(Field {
            rust: field_ident(&fname),
            name: fname,
            ty,
            versions,
            nullable,
            tagged,
            tag,
            ignorable,
            default,
            flexible,
        });
    }
    Ok(StructDef {
        name: name.to_string(),
        fields: parsed,
        within,
    })
}

/// `ThrottleTimeMs` → `throttle_time_ms`, `KRaftVersion` → `k_raft_version`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `ApiVersions` → `API_VERSIONS`.
pub fn screaming(name: &str) -> String {
    snake(name).to_ascii_uppercase()
}

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// The Rust field name: snake case, with a trailing underscore for keywords.
fn field_ident(name: &str) -> String {
    let s = snake(name);
    if KEYWORDS.contains(&s.as_str()) || s == "unknown_tagged_fields" {
        format!("{s}_")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases() {
        assert_eq!(snake("ThrottleTimeMs"), "throttle_time_ms");
        assert_eq!(snake("KRaftVersion"), "k_raft_version");
        assert_eq!(snake("isKRaftController"), "is_k_raft_controller");
        assert_eq!(snake("ApiVersionsRequest"), "api_versions_request");
        assert_eq!(snake("StopReplicaPartitionV0"), "stop_replica_partition_v0");
        assert_eq!(field_ident("Type"), "type_");
        assert_eq!(screaming("ApiVersions"), "API_VERSIONS");
    }

    #[test]
    fn later_versions_only_extend_open_ended_definitions() {
        let definition = |field_versions: &str| {
            serde_json::json!({
                "apiKey": 0, "type": "request", "name": "ProduceRequest",
                "validVersions": "3-11", "flexibleVersions": "9+",
                "fields": [{ "name": "Acks", "type": "int16", "versions": field_versions }]
            })
        };
        let msg = parse_msg(&definition("0+")).unwrap();
        assert_eq!(msg.valid, Versions { lo: 3, hi: 12 });
        let err = parse_msg(&definition("0-11")).map(|m| m.valid).unwrap_err();
        assert!(err.contains("ends at version 11"), "{err}");
    }

    #[test]
    fn version_conditions() {
        let within = Versions { lo: 0, hi: 12 };
        assert_eq!(Versions::parse("0+").unwrap().cond(within), Cond::Always);
        assert_eq!(Versions::parse("13+").unwrap().cond(within), Cond::Never);
        assert_eq!(
            Versions::parse("3+").unwrap().cond(within).expr(),
            "version >= 3"
        );
        assert_eq!(
            Versions::parse("0-3").unwrap().cond(within).neg(),
            "version > 3"
        );
        assert_eq!(
            Versions::parse("2-5").unwrap().cond(within).expr(),
            "(2..=5).contains(&version)"
        );
        assert_eq!(
            Versions::parse("0+")
                .unwrap()
                .subtract(Versions::parse("4+").unwrap())
                .unwrap(),
            Versions { lo: 0, hi: 3 }
        );
    }
}
