//! The Merge strategy's YAML engine (spec §3.9).
//!
//! Works on parser events rather than a generic YAML value type, because a value type loses what the spec
//! needs: whether a scalar was quoted (`yes` vs `"yes"`), explicit tags, and exact integers over the full
//! i64 and u64 range. Scalars are resolved here with the YAML 1.2 core schema; the merged tree is written
//! back as one block-style document whose strings are quoted wherever a YAML 1.1 or 1.2 reader could take
//! them for anything else. Comments, anchors and formatting are not preserved (aliases are expanded).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span, Tag};

/// Cap on nodes produced by alias expansion, so a "billion laughs" file fails instead of eating memory.
const MAX_ALIAS_NODES: usize = 1_000_000;
/// Cap on scalar bytes produced by alias expansion: one huge string aliased many times is a bomb too.
const MAX_ALIAS_BYTES: usize = 64 << 20;
/// Cap on nesting, so that merging, writing and dropping the tree (all recursive) cannot overflow a stack.
const MAX_DEPTH: usize = 1000;
/// Implicit keys are limited to 1024 characters (YAML 1.2 §7.4); longer keys use the explicit `? ` form.
const MAX_IMPLICIT_KEY: usize = 1000;

/// Deep-merges `overlay` into `base` (both YAML 1.2 streams) and returns one YAML document.
///
/// The documents of each stream are first merged in order into one map; then the overlay's map is merged
/// into the base's: maps merge recursively, anything else in the overlay replaces the base value. Base keys
/// keep their order, new keys are appended in overlay order. The output is a deterministic function of the
/// inputs. `base_name` and `overlay_name` only appear in error messages.
pub fn merge(
    base: &[u8],
    base_name: &str,
    overlay: &[u8],
    overlay_name: &str,
) -> Result<Vec<u8>, MergeError> {
    let mut merged = load(base, base_name)?;
    let overlay = load(overlay, overlay_name)?;
    merge_maps(&mut merged, overlay);
    Ok(emit(&merged).into_bytes())
}

/// Why a merge failed; every message starts with the name of the offending file.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{file}: not valid UTF-8")]
    NotUtf8 { file: String },
    #[error("{file}: syntax error at line {line} column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: document {document} is not a YAML mapping")]
    NotAMapping { file: String, document: usize },
    #[error("{file}: duplicate key '{key}' at line {line} column {column}")]
    DuplicateKey {
        file: String,
        key: String,
        line: usize,
        column: usize,
    },
    #[error("{file}: integer {literal} is out of range at line {line} column {column}")]
    IntegerOutOfRange {
        file: String,
        literal: String,
        line: usize,
        column: usize,
    },
    /// Unsupported or invalid constructs: unknown tags, tag/value mismatches, complex keys, limits.
    #[error("{file}: {message} at line {line} column {column}")]
    Invalid {
        file: String,
        message: String,
        line: usize,
        column: usize,
    },
}

// ---------------------------------------------------------------------------------------------------------
// Data model
// ---------------------------------------------------------------------------------------------------------

/// A resolved YAML node. Integers are `i128` so that one variant covers both i64 and u64 exactly.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    Map(Map),
}

/// Floats compare by bit pattern so that `NaN` and `-0.0` round trips can be checked exactly.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Seq(a), Value::Seq(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

/// A mapping key: only scalars (collections as keys are rejected, no consumer of values files reads them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Null,
    Bool(bool),
    Int(i128),
    Float(FloatKey),
    Str(String),
}

/// A float usable as a hash key: equal when the values are equal (`0.0 == -0.0`), and `NaN` equals itself.
#[derive(Debug, Clone, Copy)]
struct FloatKey(f64);

impl FloatKey {
    fn canonical_bits(self) -> u64 {
        if self.0.is_nan() {
            f64::NAN.to_bits()
        } else if self.0 == 0.0 {
            0
        } else {
            self.0.to_bits()
        }
    }
}

impl PartialEq for FloatKey {
    fn eq(&self, other: &Self) -> bool {
        self.canonical_bits() == other.canonical_bits()
    }
}

impl Eq for FloatKey {}

impl Hash for FloatKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical_bits().hash(state);
    }
}

/// An insertion-ordered map: the order of `entries` is the output order, `index` makes lookups O(1).
#[derive(Debug, Clone, Default)]
struct Map {
    entries: Vec<(Key, Value)>,
    index: HashMap<Key, usize>,
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Map {
    fn contains(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    /// Appends a key that is not in the map yet.
    fn push(&mut self, key: Key, value: Value) {
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
    }

    #[cfg(test)]
    fn get(&self, key: &Key) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }
}

/// Deep merge (spec §3.9): both maps → recursive; otherwise the overlay value replaces the base value.
fn merge_maps(base: &mut Map, overlay: Map) {
    for (key, value) in overlay.entries {
        match base.index.get(&key) {
            Some(&i) => match (&mut base.entries[i].1, value) {
                (Value::Map(b), Value::Map(o)) => merge_maps(b, o),
                (slot, value) => *slot = value,
            },
            None => base.push(key, value),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Loading: events → tree
// ---------------------------------------------------------------------------------------------------------

/// A finished node plus the bookkeeping needed for alias and depth limits.
struct Node {
    value: Value,
    start: Marker,
    /// Number of nodes in the subtree (aliases counted expanded).
    nodes: usize,
    /// Scalar bytes in the subtree (aliases counted expanded).
    bytes: usize,
    /// Height of the subtree: 0 for a scalar.
    height: usize,
    /// A plain, untagged, empty scalar: what an empty or comment-only document consists of.
    empty: bool,
}

/// A collection being built.
struct Frame {
    kind: FrameKind,
    anchor: usize,
    start: Marker,
    nodes: usize,
    bytes: usize,
    height: usize,
}

enum FrameKind {
    Seq(Vec<Value>),
    Map { map: Map, key: Option<Key> },
}

/// Builds one map from a YAML stream.
struct Loader<'a> {
    file: &'a str,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    alias_bytes: usize,
    stack: Vec<Frame>,
    document: usize,
    /// A document root that is not a mapping; reported at the document's end, so that a syntax error
    /// later in the same document (`--- b: 2`) wins over "not a mapping".
    not_a_mapping: bool,
    result: Map,
}

/// Parses a stream and merges its documents in order into one map.
fn load(bytes: &[u8], file: &str) -> Result<Map, MergeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| MergeError::NotUtf8 {
        file: file.to_owned(),
    })?;
    let mut loader = Loader {
        file,
        anchors: HashMap::new(),
        alias_nodes: 0,
        alias_bytes: 0,
        stack: Vec::new(),
        document: 0,
        not_a_mapping: false,
        result: Map::default(),
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| MergeError::Syntax {
            file: file.to_owned(),
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        loader.event(event, span)?;
    }
    Ok(loader.result)
}

impl Loader<'_> {
    fn invalid(&self, at: Marker, message: impl Into<String>) -> MergeError {
        MergeError::Invalid {
            file: self.file.to_owned(),
            message: message.into(),
            line: at.line(),
            column: at.col() + 1,
        }
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), MergeError> {
        let node = match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => return Ok(()),
            Event::DocumentEnd if self.not_a_mapping => {
                return Err(MergeError::NotAMapping {
                    file: self.file.to_owned(),
                    document: self.document,
                });
            }
            Event::DocumentEnd => return Ok(()),
            Event::DocumentStart(_) => {
                self.document += 1;
                // Anchors are scoped to their document (the parser enforces this too).
                self.anchors.clear();
                return Ok(());
            }
            Event::Alias(id) => self.alias(id, span.start)?,
            Event::Scalar(text, style, anchor, tag) => {
                let node = self.scalar(&text, style, tag.as_deref(), span.start)?;
                self.register(anchor, node)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "seq", span.start)?;
                return self.open(FrameKind::Seq(Vec::new()), anchor, span.start);
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "map", span.start)?;
                return self.open(
                    FrameKind::Map {
                        map: Map::default(),
                        key: None,
                    },
                    anchor,
                    span.start,
                );
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(self.invalid(span.start, "unbalanced collection end"));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { map, .. } => Value::Map(map),
                };
                let node = Node {
                    value,
                    start: frame.start,
                    nodes: frame.nodes,
                    bytes: frame.bytes,
                    height: frame.height,
                    empty: false,
                };
                self.register(frame.anchor, node)
            }
        };
        self.attach(node)
    }

    fn open(&mut self, kind: FrameKind, anchor: usize, start: Marker) -> Result<(), MergeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.invalid(start, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push(Frame {
            kind,
            anchor,
            start,
            nodes: 1,
            bytes: 0,
            height: 1,
        });
        Ok(())
    }

    /// Remembers an anchored node for later aliases; returns the node unchanged.
    fn register(&mut self, anchor: usize, node: Node) -> Node {
        if anchor != 0 {
            let copy = Node {
                value: node.value.clone(),
                empty: false,
                ..node
            };
            self.anchors.insert(anchor, copy);
        }
        node
    }

    fn alias(&mut self, id: usize, start: Marker) -> Result<Node, MergeError> {
        let Some(target) = self.anchors.get(&id) else {
            // The parser knew the anchor, but it is still open (the alias is inside its own anchor) or it
            // belongs to an earlier document (anchors are scoped to their document).
            return Err(if self.stack.iter().any(|f| f.anchor == id) {
                self.invalid(start, "alias refers to a node that contains it")
            } else {
                self.invalid(start, "alias refers to an anchor of another document")
            });
        };
        let (nodes, bytes, height) = (target.nodes, target.bytes, target.height);
        self.alias_nodes = self.alias_nodes.saturating_add(nodes);
        self.alias_bytes = self.alias_bytes.saturating_add(bytes);
        if self.alias_nodes > MAX_ALIAS_NODES || self.alias_bytes > MAX_ALIAS_BYTES {
            return Err(self.invalid(
                start,
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes or {MAX_ALIAS_BYTES} bytes"),
            ));
        }
        if self.stack.len() + height > MAX_DEPTH {
            return Err(self.invalid(start, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(Node {
            value: target.value.clone(),
            start,
            nodes,
            bytes,
            height,
            empty: false,
        })
    }

    fn check_collection_tag(&self, tag: Option<&Tag>, kind: &str, start: Marker) -> Result<(), MergeError> {
        match tag.map(tag_name) {
            None => Ok(()),
            Some(name) if name == "!" || name.strip_prefix(CORE_PREFIX) == Some(kind) => Ok(()),
            Some(name) => Err(self.invalid(start, format!("unsupported tag '{}'", display_tag(&name)))),
        }
    }

    fn scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        start: Marker,
    ) -> Result<Node, MergeError> {
        let plain = matches!(style, ScalarStyle::Plain);
        let value = resolve(text, plain, tag.map(tag_name).as_deref()).map_err(|e| match e {
            ResolveError::OutOfRange => MergeError::IntegerOutOfRange {
                file: self.file.to_owned(),
                literal: text.to_owned(),
                line: start.line(),
                column: start.col() + 1,
            },
            ResolveError::Invalid(message) => self.invalid(start, message),
        })?;
        Ok(Node {
            value,
            start,
            nodes: 1,
            bytes: text.len(),
            height: 0,
            empty: plain && text.is_empty() && tag.is_none(),
        })
    }

    /// Puts a finished node into its parent collection, or merges it into the result if it is a document.
    fn attach(&mut self, node: Node) -> Result<(), MergeError> {
        let Some(frame) = self.stack.last_mut() else {
            return match node.value {
                Value::Map(map) => {
                    merge_maps(&mut self.result, map);
                    Ok(())
                }
                _ if node.empty => Ok(()),
                _ => {
                    self.not_a_mapping = true;
                    Ok(())
                }
            };
        };
        frame.nodes = frame.nodes.saturating_add(node.nodes);
        frame.bytes = frame.bytes.saturating_add(node.bytes);
        frame.height = frame.height.max(node.height + 1);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node.value),
            FrameKind::Map { map, key } => match key.take() {
                Some(k) => map.push(k, node.value),
                None => {
                    let k = match node.value {
                        Value::Null => Key::Null,
                        Value::Bool(b) => Key::Bool(b),
                        Value::Int(i) => Key::Int(i),
                        Value::Float(f) => Key::Float(FloatKey(f)),
                        Value::Str(s) => Key::Str(s),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(
                                self.invalid(node.start, "a sequence or mapping as a key is not supported")
                            );
                        }
                    };
                    if map.contains(&k) {
                        return Err(MergeError::DuplicateKey {
                            file: self.file.to_owned(),
                            key: key_for_message(&k),
                            line: node.start.line(),
                            column: node.start.col() + 1,
                        });
                    }
                    *key = Some(k);
                }
            },
        }
        Ok(())
    }
}

/// Names a key in an error message: readable, one line, bounded length.
fn key_for_message(key: &Key) -> String {
    let text = match key {
        Key::Str(s) => s.escape_debug().to_string(),
        other => {
            let mut out = String::new();
            write_key_scalar(&mut out, other);
            out
        }
    };
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scalar resolution (YAML 1.2 core schema)
// ---------------------------------------------------------------------------------------------------------

const CORE_PREFIX: &str = "tag:yaml.org,2002:";

enum ResolveError {
    OutOfRange,
    Invalid(String),
}

/// The full name of a tag: `!!str` → `tag:yaml.org,2002:str`, `!foo` → `!foo`, `!` → `!`.
fn tag_name(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// The short form of a tag name for messages.
fn display_tag(name: &str) -> String {
    match name.strip_prefix(CORE_PREFIX) {
        Some(short) => format!("!!{short}"),
        None if name.starts_with('!') => name.to_owned(),
        None => format!("!<{name}>"),
    }
}

/// Resolves a scalar: plain untagged scalars by the core schema's patterns, quoted and block scalars (and
/// the non-specific tag `!`) as strings, explicit core tags by their type.
fn resolve(text: &str, plain: bool, tag: Option<&str>) -> Result<Value, ResolveError> {
    let Some(tag) = tag else {
        return if plain {
            resolve_plain(text)
        } else {
            Ok(Value::Str(text.to_owned()))
        };
    };
    let mismatch = || {
        ResolveError::Invalid(format!(
            "invalid {} value '{}'",
            display_tag(tag),
            text.escape_debug()
        ))
    };
    match tag.strip_prefix(CORE_PREFIX) {
        _ if tag == "!" => Ok(Value::Str(text.to_owned())),
        Some("str") => Ok(Value::Str(text.to_owned())),
        Some("null") => parse_null(text).ok_or_else(mismatch),
        Some("bool") => parse_bool(text).map(Value::Bool).ok_or_else(mismatch),
        Some("int") => parse_int(text)?.map(Value::Int).ok_or_else(mismatch),
        Some("float") => {
            // `!!float 1` is a float too: the tag decides the type, the text only has to be a number.
            let is_decimal_int = {
                let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            };
            match parse_float(text) {
                Some(f) => Ok(Value::Float(f)),
                None if is_decimal_int => text.parse::<f64>().map(Value::Float).map_err(|_| mismatch()),
                None => Err(mismatch()),
            }
        }
        _ => Err(ResolveError::Invalid(format!(
            "unsupported tag '{}'",
            display_tag(tag)
        ))),
    }
}

fn resolve_plain(text: &str) -> Result<Value, ResolveError> {
    if let Some(null) = parse_null(text) {
        return Ok(null);
    }
    if let Some(b) = parse_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = parse_int(text)? {
        return Ok(Value::Int(i));
    }
    if let Some(f) = parse_float(text) {
        return Ok(Value::Float(f));
    }
    Ok(Value::Str(text.to_owned()))
}

fn parse_null(text: &str) -> Option<Value> {
    matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Core-schema integers: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`. `Ok(None)` = not an integer;
/// an integer outside both i64 and u64 is an error, never rounded.
fn parse_int(text: &str) -> Result<Option<i128>, ResolveError> {
    let (negative, digits, radix) = if let Some(hex) = text.strip_prefix("0x") {
        (false, hex, 16)
    } else if let Some(oct) = text.strip_prefix("0o") {
        (false, oct, 8)
    } else if let Some(rest) = text.strip_prefix('-') {
        (true, rest, 10)
    } else {
        (false, text.strip_prefix('+').unwrap_or(text), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Ok(None);
    }
    let mut magnitude: u128 = 0;
    for c in digits.chars() {
        let digit = u128::from(c.to_digit(radix).unwrap_or(0));
        magnitude = magnitude
            .checked_mul(u128::from(radix))
            .and_then(|m| m.checked_add(digit))
            .ok_or(ResolveError::OutOfRange)?;
        if magnitude > u128::from(u64::MAX) {
            return Err(ResolveError::OutOfRange);
        }
    }
    let value = i128::try_from(magnitude).map_err(|_| ResolveError::OutOfRange)?;
    let value = if negative { -value } else { value };
    if value < i128::from(i64::MIN) {
        return Err(ResolveError::OutOfRange);
    }
    Ok(Some(value))
}

/// Core-schema floats: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?\.(inf|Inf|INF)`,
/// `\.nan|\.NaN|\.NAN`. Callers try integers first, so digit-only text never gets here as a float.
fn parse_float(text: &str) -> Option<f64> {
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let b = body.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let int_end = digits_from(0);
    let mut i = int_end;
    if i < b.len() && b[i] == b'.' {
        let frac_end = digits_from(i + 1);
        if int_end == 0 && frac_end == i + 1 {
            return None; // "." alone, or ".e5"
        }
        i = frac_end;
    } else if int_end == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        let exp_end = digits_from(j);
        if exp_end == j {
            return None;
        }
        i = exp_end;
    }
    if i != b.len() {
        return None;
    }
    // The text matches the core pattern, which Rust's parser accepts (including "1.", ".5", "+1e3").
    text.parse::<f64>().ok()
}

// ---------------------------------------------------------------------------------------------------------
// Emitting
// ---------------------------------------------------------------------------------------------------------

/// Writes the merged map as one block-style document.
fn emit(map: &Map) -> String {
    let mut out = String::new();
    if map.entries.is_empty() {
        out.push_str("{}\n");
    } else {
        emit_map(&mut out, map, 0, false);
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Block mapping at column `col`; with `inline_first` the first key continues the current line (`- k: v`).
fn emit_map(out: &mut String, map: &Map, col: usize, inline_first: bool) {
    for (i, (key, value)) in map.entries.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, col);
        }
        let mut key_text = String::new();
        write_key_scalar(&mut key_text, key);
        if key_text.chars().count() <= MAX_IMPLICIT_KEY {
            out.push_str(&key_text);
            out.push(':');
            emit_value(out, value, col, col);
        } else {
            out.push_str("? ");
            out.push_str(&key_text);
            out.push('\n');
            indent(out, col);
            out.push(':');
            emit_value(out, value, col, col + 2);
        }
    }
}

/// The value after `key:`; a block sequence goes at column `seq_col` (the key's column, Kubernetes style).
fn emit_value(out: &mut String, value: &Value, col: usize, seq_col: usize) {
    match value {
        Value::Map(m) if !m.entries.is_empty() => {
            out.push('\n');
            emit_map(out, m, col + 2, false);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push('\n');
            emit_seq(out, items, seq_col, false);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, col);
            out.push('\n');
        }
    }
}

/// Block sequence with its `-` at column `col`.
fn emit_seq(out: &mut String, items: &[Value], col: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, col);
        }
        out.push_str("- ");
        match item {
            Value::Map(m) if !m.entries.is_empty() => emit_map(out, m, col + 2, true),
            Value::Seq(inner) if !inner.is_empty() => emit_seq(out, inner, col + 2, true),
            scalar => {
                write_scalar(out, scalar, col);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) value; a literal block's content goes at column `col + 2`.
fn write_scalar(out: &mut String, value: &Value, col: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_float(out, *f),
        Value::Str(s) => write_string(out, s, col, true),
        Value::Seq(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
    }
}

fn write_key_scalar(out: &mut String, key: &Key) {
    match key {
        Key::Null => out.push_str("null"),
        Key::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Key::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Key::Float(f) => write_float(out, f.0),
        Key::Str(s) => write_string(out, s, 0, false),
    }
}

/// Shortest text that parses back to the same f64, always with a `.` and a signed exponent so that YAML
/// 1.1 readers (whose float pattern needs both) agree it is a float: `1.0`, `1.0e+21`, `5.0e-324`.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str(".nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { ".inf" } else { "-.inf" });
    } else {
        let text = format!("{f:?}");
        let (mantissa, exponent) = match text.split_once('e') {
            Some((m, e)) => (m, Some(e)),
            None => (text.as_str(), None),
        };
        out.push_str(mantissa);
        if !mantissa.contains('.') {
            out.push_str(".0");
        }
        if let Some(e) = exponent {
            out.push('e');
            if !e.starts_with('-') {
                out.push('+');
            }
            out.push_str(e);
        }
    }
}

/// Words YAML 1.1 resolves to booleans or null; as plain scalars they would change type there.
const YAML11_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False",
    "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// Plain only when no YAML 1.1 or 1.2 reader can take the text for anything but this string: starts with a
/// letter, `_` or `/` (so never a number, date, `~`, `.inf`, `<<`, `=` or an indicator), contains only
/// characters that are inert in block context, no `: ` or trailing `:`, and is not a 1.1 bool/null word.
fn is_plain_safe(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else { return false };
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'/') {
        return false;
    }
    let inert = |c: u8| c.is_ascii_alphanumeric() || b"_./-:@+=()~, ".contains(&c);
    if !b.iter().all(|&c| inert(c)) || b[b.len() - 1] == b' ' || b[b.len() - 1] == b':' {
        return false;
    }
    if b.windows(2).any(|w| w == b": ") {
        return false;
    }
    !YAML11_WORDS.contains(&s)
}

/// Multi-line text as a literal block (`|`) when that is unambiguous, using libyaml's own conditions: no
/// leading space or break (so no indentation indicator is needed), no space before a line break or at the
/// end, and only printable characters other than tab (tabs and special line breaks get double quotes).
fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with(' ')
        && !s.contains(" \n")
        && s.chars().all(|c| c == '\n' || (!needs_escape(c) && c != '\t'))
}

/// Characters a double-quoted scalar writes as escapes: controls, DEL, C1 controls (including NEL, a line
/// break in YAML 1.1), the Unicode line/paragraph separators, BOM and non-characters.
fn needs_escape(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
        || matches!(c, '\u{fffe}' | '\u{ffff}')
}

fn write_string(out: &mut String, s: &str, col: usize, block_allowed: bool) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if block_allowed && is_literal_safe(s) {
        write_literal(out, s, col + 2);
    } else {
        write_double_quoted(out, s);
    }
}

/// `|`, `|-` or `|+` by the number of trailing line breaks, then the lines at column `content_col`.
fn write_literal(out: &mut String, s: &str, content_col: usize) {
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    out.push('|');
    out.push_str(chomp);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, content_col);
            out.push_str(line);
        }
    }
    // Trailing breaks beyond the first are kept as empty lines (keep chomping); the caller ends the line.
    for _ in 1..(s.len() - body.len()) {
        out.push('\n');
    }
}

fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02X}")
                } else {
                    write!(out, "\\u{code:04X}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Map, MergeError> {
        load(s.as_bytes(), "t.yaml")
    }

    /// Merges two texts and returns the output as a string.
    fn mm(base: &str, overlay: &str) -> String {
        let out = merge(base.as_bytes(), "base.yaml", overlay.as_bytes(), "overlay.yaml").unwrap();
        String::from_utf8(out).unwrap()
    }

    fn err(base: &str, overlay: &str) -> String {
        merge(base.as_bytes(), "base.yaml", overlay.as_bytes(), "overlay.yaml")
            .unwrap_err()
            .to_string()
    }

    fn s(text: &str) -> Key {
        Key::Str(text.to_owned())
    }

    /// Parses `text` as one map value (a single key `v`) for scalar checks.
    fn val(text: &str) -> Value {
        let map = load_str(&format!("v: {text}\n")).unwrap();
        map.get(&s("v")).unwrap().clone()
    }

    /// The merged output must re-parse to exactly the merged tree (values, types and order).
    fn assert_round_trip(base: &str, overlay: &str) -> String {
        let mut expected = load_str(base).unwrap();
        merge_maps(&mut expected, load_str(overlay).unwrap());
        let out = mm(base, overlay);
        let reparsed = load_str(&out).unwrap_or_else(|e| panic!("output does not parse: {e}\n{out}"));
        assert_eq!(reparsed, expected, "round trip changed the value:\n{out}");
        out
    }

    #[test]
    fn upstream_merge_overlay_into_base_file() {
        let base =
            "\nname: app\nports: [80, 443]\nlabels:\n  env: dev\n  keep: me\nversion: 1.0.0\nreplicas: 3\n";
        let over = "\nreplicas: 5 # This should overwrite the replicas\n\
                    ports: [8080] # This should overwrite the ports array\n\
                    labels:\n  env: prod # This should overwrite the env label\n\
                    env: production # This should add a new top-level field\n";
        let out = assert_round_trip(base, over);
        assert_eq!(
            out,
            "name: app\nports:\n- 8080\nlabels:\n  env: prod\n  keep: me\nversion: \"1.0.0\"\nreplicas: 5\n\
             env: production\n"
        );
    }

    #[test]
    fn top_level_glob_cases() {
        assert_eq!(
            mm("\nenv: dev\nregion: us-west-1\n", "env: prod"),
            "env: prod\nregion: us-west-1\n"
        );
        assert_eq!(
            mm("\nversion: 1.0.0\nimage: my-app:latest\n", "replicas: 5"),
            "version: \"1.0.0\"\nimage: my-app:latest\nreplicas: 5\n"
        );
    }

    #[test]
    fn destination_not_a_map_fails() {
        assert_eq!(err("A=B", "a: b"), "base.yaml: document 1 is not a YAML mapping");
        assert_eq!(
            err("a: 1\n", "- a\n- b\n"),
            "overlay.yaml: document 1 is not a YAML mapping"
        );
        assert_eq!(
            err("a: 1\n---\n[1]\n", "b: 1"),
            "base.yaml: document 2 is not a YAML mapping"
        );
        assert_eq!(
            err("a: 1\n", "--- \"\"\n"),
            "overlay.yaml: document 1 is not a YAML mapping"
        );
        assert_eq!(
            err("a: 1\n", "--- null\n"),
            "overlay.yaml: document 1 is not a YAML mapping"
        );
        assert_eq!(
            err("a: 1\n", "--- 5\n"),
            "overlay.yaml: document 1 is not a YAML mapping"
        );
    }

    #[test]
    fn helm_values_composition() {
        let out = assert_round_trip(
            "replicaCount: 1\nimage:\n  tag: 6.7.0\n  pullPolicy: IfNotPresent\n",
            "replicaCount: 3\nimage:\n  tag: 6.7.1\n",
        );
        assert_eq!(
            out,
            "replicaCount: 3\nimage:\n  tag: \"6.7.1\"\n  pullPolicy: IfNotPresent\n"
        );
    }

    #[test]
    fn multi_doc_files_collapse_into_one_map() {
        let out = assert_round_trip(
            "a: 1\nb: {x: 1}\n---\nb: {z: 2}\nc: 3\n",
            "---\na: 10\n---\n# only a comment\n---\nd: 4\n",
        );
        assert_eq!(out, "a: 10\nb:\n  x: 1\n  z: 2\nc: 3\nd: 4\n");
    }

    #[test]
    fn overlay_documents_collapse_before_merging_into_base() {
        // Overlay doc 1 sets a scalar, doc 2 a map: the overlay's own result is the map {y: 2}, which then
        // merges into the base map (merging the documents one by one into the base would lose x).
        assert_eq!(
            mm("k: {x: 1}\n", "k: 5\n---\nk: {y: 2}\n"),
            "k:\n  x: 1\n  \"y\": 2\n"
        );
    }

    #[test]
    fn nested_merge_cases() {
        assert_eq!(mm("a: 1\nb: 1\n", "b: 2\n"), "a: 1\nb: 2\n");
        assert_eq!(
            mm("replicas: 1\nimage:\n  tag: v1\n", "image:\n  tag: v2\n"),
            "replicas: 1\nimage:\n  tag: v2\n"
        );
        assert_eq!(mm("a: 1\n", "b: 2\n"), "a: 1\nb: 2\n");
    }

    #[test]
    fn keeps_yaml12_values() {
        let base = "# header comment\nzeta: 1\nversion: 1.0\nhex: 0x1F\nbig: 12345678901234567890\n\
                    flag: yes\nswitch: on\nname: y\nquoted: \"yes\"\ndate: 2024-01-01\n1: one\ny: key\n";
        let out = assert_round_trip(base, "zeta: 2\n");
        assert_eq!(
            out,
            "zeta: 2\nversion: 1.0\nhex: 31\nbig: 12345678901234567890\nflag: \"yes\"\nswitch: \"on\"\n\
             name: \"y\"\nquoted: \"yes\"\ndate: \"2024-01-01\"\n1: one\n\"y\": key\n"
        );
        let map = load_str(&out).unwrap();
        assert_eq!(map.get(&Key::Int(1)), Some(&Value::Str("one".into())));
        assert_eq!(map.get(&s("y")), Some(&Value::Str("key".into())));
        assert_eq!(map.get(&s("version")), Some(&Value::Float(1.0)));
        assert_eq!(map.get(&s("big")), Some(&Value::Int(12345678901234567890)));
    }

    #[test]
    fn null_in_overlay_sets_null() {
        let out = assert_round_trip("a:\n  b: 1\n  c: 2\n", "a:\n  b: null\n");
        assert_eq!(out, "a:\n  b: null\n  c: 2\n");
        assert_eq!(mm("a: {b: 1}\n", "a: ~\n"), "a: null\n");
        assert_eq!(mm("a: {b: 1}\n", "a:\n"), "a: null\n");
        // A null base value is replaced by an overlay map.
        assert_eq!(mm("a:\n", "a: {b: 1}\n"), "a:\n  b: 1\n");
    }

    #[test]
    fn lists_are_replaced_wholesale() {
        let out = assert_round_trip(
            "env:\n- name: A\n  value: \"1\"\n- name: B\n  value: \"2\"\n",
            "env:\n- name: C\n  value: \"3\"\n",
        );
        assert_eq!(out, "env:\n- name: C\n  value: \"3\"\n");
        assert_eq!(mm("a: [1, 2]\n", "a: []\n"), "a: []\n");
        assert_eq!(mm("a: {x: 1}\n", "a: [1]\n"), "a:\n- 1\n");
        assert_eq!(mm("a: [1]\n", "a: {x: 1}\n"), "a:\n  x: 1\n");
        assert_eq!(mm("a: {x: 1}\n", "a: {}\n"), "a:\n  x: 1\n");
    }

    #[test]
    fn json_base_with_yaml_overlay() {
        let out = assert_round_trip(
            "{\"a\": {\"b\": 1, \"c\": [1, 2]}, \"s\": \"yes\"}",
            "a:\n  c: [3]\n",
        );
        assert_eq!(out, "a:\n  b: 1\n  c:\n  - 3\ns: \"yes\"\n");
        let out = assert_round_trip(
            "{\"n\": null, \"t\": true, \"f\": -1.5e-3, \"e\": {}, \"l\": []}",
            "{}",
        );
        assert_eq!(out, "\"n\": null\nt: true\nf: -0.0015\ne: {}\nl: []\n");
    }

    #[test]
    fn duplicate_key_fails() {
        assert_eq!(
            err("a: 1\n", "b: 1\nb: 2\n"),
            "overlay.yaml: duplicate key 'b' at line 2 column 1"
        );
        assert!(err("x:\n  a: 1\n  a: 2\n", "").starts_with("base.yaml: duplicate key 'a' at line 3"));
        assert!(err("{a: 1, a: 2}", "").contains("duplicate key 'a'"));
        // Same value written differently is the same key; different types are different keys.
        assert!(err("1: a\n0x1: b\n", "").contains("duplicate key '1'"));
        assert!(err("\"a\": 1\na: 2\n", "").contains("duplicate key 'a'"));
        assert_eq!(mm("1: a\n\"1\": b\n", ""), "1: a\n\"1\": b\n");
        // The same key in two documents is a merge, not a duplicate.
        assert_eq!(mm("a: 1\n---\na: 2\n", ""), "a: 2\n");
    }

    #[test]
    fn syntax_errors_name_file_and_position() {
        assert_eq!(
            err("a: 1\n", "--- b: 2\n"),
            "overlay.yaml: syntax error at line 1 column 6: mapping values are not allowed in this context"
        );
        assert!(err("a: [1, 2\n", "").starts_with("base.yaml: syntax error at line"));
        assert!(err("a: 1\n b: 2\n", "").starts_with("base.yaml: syntax error at line"));
        assert!(err("a: *nope\n", "").starts_with("base.yaml: syntax error at line 1"));
        assert_eq!(
            err("a: &x 1\n---\nb: *x\n", ""),
            "base.yaml: alias refers to an anchor of another document at line 3 column 4"
        );
    }

    #[test]
    fn comment_only_and_empty_documents_are_empty_maps() {
        assert_eq!(
            mm("# only a comment\n---\n", "---\n# nothing\n---\nk: v\n"),
            "k: v\n"
        );
        assert_eq!(mm("", ""), "{}\n");
        assert_eq!(mm("# c\n", "---\n...\n---\n"), "{}\n");
        assert_eq!(mm("a: 1\n", ""), "a: 1\n");
        assert_eq!(mm("", "a: 1\n"), "a: 1\n");
    }

    #[test]
    fn not_utf8_fails() {
        let e = merge(b"a: \xff\n", "values.yaml", b"", "o.yaml").unwrap_err();
        assert_eq!(e.to_string(), "values.yaml: not valid UTF-8");
        // A UTF-8 byte order mark is fine.
        assert_eq!(mm("\u{feff}a: 1\n", ""), "a: 1\n");
    }

    #[test]
    fn key_order_base_first_then_overlay_order_recursively() {
        let out = assert_round_trip(
            "z: 1\na:\n  y: 1\n  b: 1\nm: 1\n",
            "q: 1\na:\n  c: 1\n  b: 2\n  a: 1\nb: 1\nz: 2\n",
        );
        assert_eq!(
            out,
            "z: 2\na:\n  \"y\": 1\n  b: 2\n  c: 1\n  a: 1\nm: 1\nq: 1\nb: 1\n"
        );
    }

    #[test]
    fn integer_extremes_are_exact() {
        assert_eq!(val("18446744073709551615"), Value::Int(i128::from(u64::MAX)));
        assert_eq!(val("-9223372036854775808"), Value::Int(i128::from(i64::MIN)));
        assert_eq!(val("9223372036854775807"), Value::Int(i128::from(i64::MAX)));
        assert_eq!(val("0xFFFFFFFFFFFFFFFF"), Value::Int(i128::from(u64::MAX)));
        assert_eq!(val("0o1777777777777777777777"), Value::Int(i128::from(u64::MAX)));
        assert_eq!(val("+42"), Value::Int(42));
        assert_eq!(val("-0"), Value::Int(0));
        assert_eq!(val("010"), Value::Int(10));
        assert_eq!(val("0o17"), Value::Int(15));
        assert_eq!(val("0x1f"), Value::Int(31));
        let out = assert_round_trip(
            "u: 18446744073709551615\ni: -9223372036854775808\nh: 0xFFFFFFFFFFFFFFFF\n",
            "x: 9223372036854775807\n",
        );
        assert_eq!(
            out,
            "u: 18446744073709551615\ni: -9223372036854775808\nh: 18446744073709551615\n\
             x: 9223372036854775807\n"
        );
    }

    #[test]
    fn integer_out_of_range_fails() {
        let e = err("a: 1\n", "big: 123456789012345678901234\n");
        assert_eq!(
            e,
            "overlay.yaml: integer 123456789012345678901234 is out of range at line 1 column 6"
        );
        assert!(
            err("a: 18446744073709551616\n", "").contains("integer 18446744073709551616 is out of range")
        );
        assert!(err("a: -9223372036854775809\n", "").contains("is out of range"));
        assert!(err("a: 0x10000000000000000\n", "").contains("is out of range"));
        assert!(err(&format!("a: {}\n", "9".repeat(200)), "").contains("is out of range"));
        assert!(err("a: !!int 99999999999999999999\n", "").contains("is out of range"));
        // Quoted, it is just a string.
        assert_eq!(
            val("\"123456789012345678901234\""),
            Value::Str("123456789012345678901234".into())
        );
        // As a key, too.
        assert!(err("123456789012345678901234: a\n", "").contains("is out of range"));
    }

    #[test]
    fn not_integers_in_yaml12() {
        for text in [
            "0b101", "1_000", "0x", "0o", "-0x1", "+0o7", "0o8", "12:30", "1,000",
        ] {
            assert_eq!(val(text), Value::Str(text.into()), "{text}");
        }
    }

    #[test]
    fn core_schema_scalars() {
        for text in ["null", "Null", "NULL", "~", ""] {
            assert_eq!(val(text), Value::Null, "{text:?}");
        }
        for text in ["true", "True", "TRUE"] {
            assert_eq!(val(text), Value::Bool(true));
        }
        for text in ["false", "False", "FALSE"] {
            assert_eq!(val(text), Value::Bool(false));
        }
        for text in [
            "yes", "no", "on", "off", "y", "n", "Y", "tRUE", "nULL", "NuLL", "none",
        ] {
            assert_eq!(val(text), Value::Str(text.into()), "{text}");
        }
        for (text, f) in [
            ("1.0", 1.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("-.5", -0.5),
            ("+1.5", 1.5),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("2.5e+2", 250.0),
            ("-0.0", -0.0),
            (".inf", f64::INFINITY),
            ("-.Inf", f64::NEG_INFINITY),
            ("+.INF", f64::INFINITY),
        ] {
            assert_eq!(val(text), Value::Float(f), "{text}");
        }
        for text in [".nan", ".NaN", ".NAN"] {
            assert!(matches!(val(text), Value::Float(f) if f.is_nan()));
        }
        for text in [
            "1.0.0",
            "1e",
            "e5",
            ".",
            ".e5",
            "-.nan",
            "1_000.5",
            "inf",
            "nan",
            ".Nan",
            "1.5x",
            "2024-01-01",
            "1:20",
        ] {
            assert_eq!(val(text), Value::Str(text.into()), "{text}");
        }
        for text in ["'true'", "\"1\"", "'~'", "\"\"", "|\n  1\n"] {
            assert!(matches!(val(text), Value::Str(_)), "{text}");
        }
    }

    #[test]
    fn explicit_core_tags() {
        assert_eq!(val("!!str 1"), Value::Str("1".into()));
        assert_eq!(val("!!str"), Value::Str(String::new()));
        assert_eq!(val("!!str yes"), Value::Str("yes".into()));
        assert_eq!(val("!!int \"42\""), Value::Int(42));
        assert_eq!(val("!!int 0x10"), Value::Int(16));
        assert_eq!(val("!!float 1"), Value::Float(1.0));
        assert_eq!(val("!!float '2.5'"), Value::Float(2.5));
        assert_eq!(val("!!bool \"true\""), Value::Bool(true));
        assert_eq!(val("!!null ''"), Value::Null);
        assert_eq!(val("!!null ~"), Value::Null);
        assert_eq!(val("! 12"), Value::Str("12".into()));
        assert_eq!(val("!<tag:yaml.org,2002:str> 5"), Value::Str("5".into()));
        assert_eq!(val("!!map {a: 1}"), Value::Map(load_str("a: 1").unwrap()));
        assert_eq!(val("!!seq [1]"), Value::Seq(vec![Value::Int(1)]));
        assert_eq!(mm("--- !!map\na: 1\n", ""), "a: 1\n");
        assert_eq!(mm("a: !!str 1.0\n", ""), "a: \"1.0\"\n");
        assert!(err("a: !!int abc\n", "").contains("invalid !!int value 'abc' at line 1 column 4"));
        assert!(err("a: !!bool yes\n", "").contains("invalid !!bool value 'yes'"));
        assert!(err("a: !!float x\n", "").contains("invalid !!float value"));
        assert!(err("a: !!null 0\n", "").contains("invalid !!null value"));
        assert!(err("a: !!seq {b: 1}\n", "").contains("unsupported tag '!!seq'"));
        assert!(err("a: !!map x\n", "").contains("unsupported tag '!!map'"));
        assert!(err("a: !!binary aGk=\n", "").contains("unsupported tag '!!binary'"));
        assert!(err("a: !foo x\n", "").starts_with("base.yaml: unsupported tag '!foo' at line 1 column 4"));
        assert!(err("a: !foo {b: 1}\n", "").contains("unsupported tag '!foo'"));
        assert!(
            err("a: !<tag:example.com,2000:x> 1\n", "")
                .contains("unsupported tag '!<tag:example.com,2000:x>'")
        );
    }

    #[test]
    fn ambiguous_strings_are_quoted_and_stay_strings() {
        let strings = [
            "yes",
            "Yes",
            "YES",
            "no",
            "No",
            "NO",
            "on",
            "On",
            "ON",
            "off",
            "Off",
            "OFF",
            "y",
            "Y",
            "n",
            "N",
            "true",
            "False",
            "null",
            "NULL",
            "~",
            "",
            " ",
            "1.0",
            "010",
            "0x1F",
            "0o7",
            "1e3",
            ".inf",
            ".nan",
            "-.inf",
            "2024-01-01",
            "2001-12-14t21:59:43.10-05:00",
            "1_000",
            "12:30",
            "190:20:30",
            "+1",
            "-1",
            "0b1010",
            "<<",
            "=",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "a:",
            "- x",
            "-",
            "?",
            "? x",
            ":x",
            ",",
            "[a]",
            "]",
            "{a}",
            "}",
            "#c",
            "&a",
            "*a",
            "!t",
            "|",
            ">",
            "'q'",
            "\"q\"",
            "%p",
            "@a",
            "`b",
            "a\"b",
            "a'b",
            "back\\slash",
            "tab\there",
            "nl\nx",
            "\n",
            "\r\n",
            "cr\r",
            "nul\0",
            "bell\x07",
            "del\x7f",
            "nel\u{85}",
            "ls\u{2028}",
            "ps\u{2029}",
            "bom\u{feff}",
            "caf\u{e9}",
            "\u{65e5}\u{672c}",
            "emoji \u{1f600}",
            "---",
            "...",
            "a  b",
            "0",
            "-0",
            ".5",
            "1.",
            "TRUE",
            "NaN",
            "Infinity",
            "0.",
            "+.5",
        ];
        let mut base = String::new();
        for (i, text) in strings.iter().enumerate() {
            let mut quoted = String::new();
            write_double_quoted(&mut quoted, text);
            let _ = writeln!(base, "k{i}: {quoted}\n{quoted}: {i}");
        }
        let out = assert_round_trip(&base, "");
        let map = load_str(&out).unwrap();
        for (i, text) in strings.iter().enumerate() {
            assert_eq!(
                map.get(&s(&format!("k{i}"))),
                Some(&Value::Str((*text).into())),
                "value {text:?}"
            );
            assert_eq!(map.get(&s(text)), Some(&Value::Int(i as i128)), "key {text:?}");
        }
        for text in [
            "yes",
            "on",
            "y",
            "n",
            "1.0",
            "010",
            "2024-01-01",
            "~",
            "1_000",
            "12:30",
            "",
            " x",
            "x ",
        ] {
            assert!(!is_plain_safe(text), "{text:?} must be quoted");
        }
        assert_eq!(
            mm("a: 'yes'\nb: \"~\"\nc: ''\n", ""),
            "a: \"yes\"\nb: \"~\"\nc: \"\"\n"
        );
        assert_eq!(mm("a: \"x\\ty\\u0001\\x85\"\n", ""), "a: \"x\\ty\\x01\\x85\"\n");
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        let out = mm(
            "image: nginx:1.25\npath: /etc/app\nname: my-app_v2.prod\nmsg: hello world\n\
             url: http://x.io/a?b\n\
             app.kubernetes.io/name: web\nemail: a@b.c\nexpr: a+b=(c),d~e\n",
            "",
        );
        assert_eq!(
            out,
            "image: nginx:1.25\npath: /etc/app\nname: my-app_v2.prod\nmsg: hello world\n\
             url: \"http://x.io/a?b\"\n\
             app.kubernetes.io/name: web\nemail: a@b.c\nexpr: a+b=(c),d~e\n"
        );
    }

    #[test]
    fn multi_line_strings() {
        let base = "script: |\n  #!/bin/sh\n  echo hi\nstrip: |-\n  a\n  b\nkeep: |+\n  a\n\n\n\
                    folded: >\n  a\n  b\ninner: \"a\\n\\nb\"\nlead: \"  a\\nb\"\nnl_first: \"\\na\"\n\
                    trail_sp: \"a \\nb\"\ntab: \"a\\n\\tb\"\nlist:\n- |\n  x\n  y\n- - |-\n    p\n    q\n\
                    nested:\n  deeper:\n    text: |\n      one\n        two\n";
        let out = assert_round_trip(base, "");
        assert_eq!(
            out,
            "script: |\n  #!/bin/sh\n  echo hi\nstrip: |-\n  a\n  b\nkeep: |+\n  a\n\n\n\
             folded: |\n  a b\ninner: |-\n  a\n\n  b\nlead: \"  a\\nb\"\nnl_first: \"\\na\"\n\
             trail_sp: \"a \\nb\"\ntab: \"a\\n\\tb\"\nlist:\n- |\n  x\n  y\n- - |-\n    p\n    q\n\
             nested:\n  deeper:\n    text: |\n      one\n        two\n"
        );
        // A keep-chomped block at the very end of the document.
        assert_round_trip("z: |+\n  a\n\n", "");
    }

    #[test]
    fn floats_round_trip_exactly() {
        let floats = [
            1.0,
            -1.0,
            0.1,
            -0.0,
            0.0,
            1e21,
            1e-7,
            1e16,
            123456789.123,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            f64::EPSILON,
            2.5e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut base = String::new();
        for (i, f) in floats.iter().enumerate() {
            let text = if f.is_infinite() {
                format!("{}.inf", if *f < 0.0 { "-" } else { "" })
            } else {
                format!("{f:e}")
            };
            let _ = writeln!(base, "f{i}: {text}");
        }
        let out = assert_round_trip(&base, "");
        let map = load_str(&out).unwrap();
        for (i, f) in floats.iter().enumerate() {
            assert_eq!(map.get(&s(&format!("f{i}"))), Some(&Value::Float(*f)), "{f}");
        }
        let mut text = String::new();
        write_float(&mut text, 1e21);
        assert_eq!(text, "1.0e+21");
        assert_eq!(
            mm("a: 1.0\nb: 1e3\nc: 5e-324\nd: .NaN\n", ""),
            "a: 1.0\nb: 1000.0\nc: 5.0e-324\nd: .nan\n"
        );
        let nan = load_str(&mm("n: .nan\n", "")).unwrap();
        assert!(matches!(nan.get(&s("n")), Some(Value::Float(f)) if f.is_nan()));
    }

    #[test]
    fn non_string_keys_stay_non_string() {
        let base = "1: one\ny: key\ntrue: t\nnull: n\n1.5: f\n-2: neg\n0x10: hex\n\"2\": s\n";
        let out = assert_round_trip(base, "1: uno\n");
        assert_eq!(
            out,
            "1: uno\n\"y\": key\ntrue: t\nnull: \"n\"\n1.5: f\n-2: neg\n16: hex\n\"2\": s\n"
        );
        let map = load_str(&out).unwrap();
        assert_eq!(map.get(&Key::Bool(true)), Some(&Value::Str("t".into())));
        assert_eq!(map.get(&Key::Null), Some(&Value::Str("n".into())));
        assert_eq!(map.get(&Key::Float(FloatKey(1.5))), Some(&Value::Str("f".into())));
        assert_eq!(map.get(&Key::Int(16)), Some(&Value::Str("hex".into())));
        assert_eq!(map.get(&s("2")), Some(&Value::Str("s".into())));
        // Keys of different types never match each other when merging.
        assert_eq!(mm("1: a\n", "\"1\": b\n1.0: c\n"), "1: a\n\"1\": b\n1.0: c\n");
        assert!(
            err("? [a]\n: b\n", "")
                .contains("a sequence or mapping as a key is not supported at line 1 column 3")
        );
    }

    #[test]
    fn long_keys_use_explicit_form() {
        let long = "k".repeat(1500);
        let base =
            format!("? {long}\n: 1\n? {long}x\n: {{a: [1]}}\n? {long}y\n: [1, 2]\n? \"{long} \"\n: 2\n");
        let out = assert_round_trip(&base, "");
        assert!(out.starts_with("? kkk"), "{out}");
        assert!(out.contains("\n? \"kkk"), "{out}");
    }

    #[test]
    fn aliases_are_expanded() {
        let base = "defaults: &d\n  a: 1\n  b: [x, y]\nuse: *d\nscalar: &s hello\ncopy: *s\n*s : key\n";
        let out = assert_round_trip(base, "use:\n  b: [z]\n");
        assert_eq!(
            out,
            "defaults:\n  a: 1\n  b:\n  - x\n  - \"y\"\nuse:\n  a: 1\n  b:\n  - z\n\
             scalar: hello\ncopy: hello\nhello: key\n"
        );
        // `<<` is an ordinary key in YAML 1.2 (no merge-key semantics), and is quoted for YAML 1.1 readers.
        assert_eq!(
            mm("a: &a {x: 1}\nb:\n  <<: *a\n", ""),
            "a:\n  x: 1\nb:\n  \"<<\":\n    x: 1\n"
        );
        assert!(err("a: &a [*a]\n", "").contains("alias refers to a node that contains it"));
        // An anchor may be redefined; aliases refer to the latest definition.
        assert_eq!(mm("a: &x 1\nb: &x 2\nc: *x\n", ""), "a: 1\nb: 2\nc: 2\n");
    }

    #[test]
    fn alias_bombs_are_capped() {
        let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            let _ = writeln!(
                bomb,
                "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]"
            );
        }
        assert!(
            err(&bomb, "").contains("aliases expand to more than"),
            "{}",
            err(&bomb, "")
        );
        // Many aliases of one big string are capped by bytes.
        let mut big = format!("s: &s {}\nl:\n", "x".repeat(1 << 20));
        for _ in 0..100 {
            big.push_str("- *s\n");
        }
        assert!(err(&big, "").contains("aliases expand to more than"));
        // A modest amount of reuse is fine.
        let small: String = bomb.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert!(merge(small.as_bytes(), "b", b"", "o").is_ok());
    }

    #[test]
    fn deep_nesting_is_capped() {
        // (The parser itself limits flow nesting to 255 levels; block nesting is unlimited there.)
        let deep = format!("a:\n{}x\n", "- ".repeat(5000));
        assert!(err(&deep, "").contains("nesting deeper than 1000 levels"));
        let ok = format!("a:\n{}x\n", "- ".repeat(900));
        assert_round_trip(&ok, "");
        // Aliases cannot be used to build deeper trees than the cap either.
        // Maps nested to the cap merge and write without exhausting a test thread's stack (debug build).
        let nested = |leaf: &str| {
            let mut text = String::new();
            for level in 0..MAX_DEPTH - 1 {
                let _ = writeln!(text, "{}k:", " ".repeat(level));
            }
            let _ = writeln!(text, "{}{leaf}", " ".repeat(MAX_DEPTH - 1));
            text
        };
        let out = assert_round_trip(&nested("a: 1"), &nested("b: 2"));
        assert!(out.ends_with(&format!("{}a: 1\n{}b: 2\n", " ".repeat(1998), " ".repeat(1998))));
        assert!(err(&nested("a: [1]"), "").contains("nesting deeper than 1000 levels"));
        let deeper = format!("a: &a\n{}1\nb:\n{}*a\n", "- ".repeat(600), "- ".repeat(600));
        assert!(err(&deeper, "").contains("nesting deeper than 1000 levels"));
    }

    #[test]
    fn sequences_of_maps_and_nested_sequences_in_block_form() {
        let base = "items:\n- name: a\n  ports: [1, 2]\n  meta: {x: 1}\n- [1, [2, 3], []]\n\
                    - {}\n- []\n- null\n\
                    - - - deep\nempty_map: {}\nempty_seq: []\n";
        let out = assert_round_trip(base, "");
        assert_eq!(
            out,
            "items:\n- name: a\n  ports:\n  - 1\n  - 2\n  meta:\n    x: 1\n- - 1\n  - - 2\n    - 3\n  - []\n\
             - {}\n\
             - []\n- null\n- - - deep\nempty_map: {}\nempty_seq: []\n"
        );
    }

    #[test]
    fn output_is_deterministic() {
        let base = "b: 1\na: {z: 1, y: 2}\nc: [3, 2, 1]\n";
        let over = "d: x\na: {x: 0}\n";
        let first = mm(base, over);
        for _ in 0..20 {
            assert_eq!(mm(base, over), first);
        }
    }

    #[test]
    fn merged_output_is_merge_input() {
        // Merging the output again with an empty overlay is a fixed point.
        let base = "a: 1\nb: {c: [1, {d: \"yes\"}], e: 1.5}\n";
        let once = mm(base, "b: {f: ~}\n");
        assert_eq!(mm(&once, ""), once);
        assert_eq!(mm("", &once), once);
        assert_eq!(mm(&once, &once), once);
    }
}
