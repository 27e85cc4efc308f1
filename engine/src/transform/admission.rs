//! Admission (design/plugins.md §3, §5 step 1): which digests may run, with which limits and whether they
//! may read sources. The controller builds an [`Admission`] from policies and namespace labels, the CLI
//! from its flags; the engine only checks it, before reading or compiling anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::spec::{Quantity, Transform, TransformLimits};

use super::report::Reason;

/// What the admin allows for one generator (already filtered to the generator's namespace).
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// `--plugins=disabled`: every transform fails with `PluginsDisabled`.
    pub disabled: bool,
    /// `--allow-any-plugin` (CLI dev mode): no allow-list, limits up to the hard ceilings, read sources
    /// allowed, and a digest mismatch is a warning that prints the actual digest.
    pub allow_any: bool,
    /// Allowed digests. Entries naming the same digest combine as a union (highest ceiling per limit,
    /// read sources if any entry allows them).
    pub allowed: Vec<Allowed>,
}

/// One allow-list entry: a policy's `plugins[]` item (one per digest) or a `--plugin-allow-digest` flag.
#[derive(Clone, Debug)]
pub struct Allowed {
    /// `sha256:<hex>` of the `.wasm` bytes.
    pub digest: String,
    /// The policy's `maxLimits`. An unset limit means the hard ceiling (what `--plugin-allow-digest`
    /// gives). A ceiling above the hard ceiling is clamped to it (the policy itself reports Ready=False).
    pub ceilings: TransformLimits,
    pub allow_read_sources: bool,
}

impl Allowed {
    /// A `--plugin-allow-digest` entry: up to the hard ceilings, read sources allowed.
    pub fn digest(digest: impl Into<String>) -> Self {
        Allowed {
            digest: digest.into(),
            ceilings: TransformLimits::default(),
            allow_read_sources: true,
        }
    }
}

/// The limits a transform runs with, every value resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub fuel: u64,
    pub timeout: Duration,
    /// Sum of all linear memories, bytes.
    pub memory: u64,
    pub output_bytes: u64,
    pub output_files: u64,
}

/// Defaults for unset limits (design/plugins.md §7).
pub const DEFAULT_LIMITS: Limits = Limits {
    fuel: 20_000_000_000,
    timeout: Duration::from_secs(30),
    memory: 256 << 20,
    output_bytes: 256 << 20,
    output_files: 20_000,
};

/// Nothing may exceed these, whatever a policy says.
pub const HARD_CEILINGS: Limits = Limits {
    fuel: 200_000_000_000,
    timeout: Duration::from_secs(300),
    memory: 1 << 30,
    output_bytes: 1 << 30,
    output_files: 100_000,
};

/// What admission grants one transform.
#[derive(Clone, Debug)]
pub(crate) struct Admitted {
    pub limits: Limits,
    /// `(alias, host directory)` of each granted read-only mount, in `readSources` order.
    pub mounts: Vec<(String, PathBuf)>,
}

/// A refusal: the reason (`PluginsDisabled` or `PluginNotAllowed`) and the detail for the message.
pub(crate) type Refusal = (Reason, String);

/// Checks one transform against the admission. Cheap: nothing is read.
pub(crate) fn admit(
    t: &Transform,
    admission: &Admission,
    sources: &BTreeMap<String, PathBuf>,
) -> Result<Admitted, Refusal> {
    if admission.disabled {
        return Err((
            Reason::PluginsDisabled,
            "plugins are disabled on this controller (--plugins=disabled)".into(),
        ));
    }
    let not_allowed = |msg: String| (Reason::PluginNotAllowed, msg);
    let (ceilings, read_ok) = if admission.allow_any {
        (HARD_CEILINGS, true)
    } else {
        let entries: Vec<&Allowed> = admission
            .allowed
            .iter()
            .filter(|a| a.digest == t.plugin.digest)
            .collect();
        if entries.is_empty() {
            return Err(not_allowed(format!(
                "plugin digest {} is not allowed (no TransformPluginPolicy for this namespace or \
                 --plugin-allow-digest lists it)",
                t.plugin.digest
            )));
        }
        let mut ceil = Limits {
            fuel: 0,
            timeout: Duration::ZERO,
            memory: 0,
            output_bytes: 0,
            output_files: 0,
        };
        for e in &entries {
            let c = resolve(&e.ceilings, &HARD_CEILINGS)
                .map_err(|m| not_allowed(format!("policy ceiling {m}")))?;
            ceil.fuel = ceil.fuel.max(c.fuel);
            ceil.timeout = ceil.timeout.max(c.timeout);
            ceil.memory = ceil.memory.max(c.memory);
            ceil.output_bytes = ceil.output_bytes.max(c.output_bytes);
            ceil.output_files = ceil.output_files.max(c.output_files);
        }
        (
            min_limits(&ceil, &HARD_CEILINGS),
            entries.iter().any(|e| e.allow_read_sources),
        )
    };
    let limits = admit_limits(t.limits.as_ref(), &ceilings).map_err(not_allowed)?;
    if !t.read_sources.is_empty() && !read_ok {
        return Err(not_allowed(format!(
            "readSources {:?} is not allowed for plugin {} (the policy does not set allowReadSources)",
            t.read_sources, t.plugin.digest
        )));
    }
    let mut mounts = Vec::with_capacity(t.read_sources.len());
    for alias in &t.read_sources {
        match sources.get(alias) {
            Some(dir) => mounts.push((alias.clone(), dir.clone())),
            None => {
                return Err(not_allowed(format!(
                    "readSources alias '{alias}' is not an available source"
                )));
            }
        }
    }
    Ok(Admitted { limits, mounts })
}

/// Admission alone, nothing read: lets a controller refuse a generator before it fetches anything, so a
/// revoked digest stalls it even when no source changed. `aliases` are the spec's source aliases.
pub fn check(t: &Transform, admission: &Admission, aliases: &[&str]) -> Result<(), (Reason, String)> {
    let sources = aliases
        .iter()
        .map(|a| ((*a).to_owned(), PathBuf::new()))
        .collect();
    admit(t, admission, &sources).map(|_| ())
}

fn min_limits(a: &Limits, b: &Limits) -> Limits {
    Limits {
        fuel: a.fuel.min(b.fuel),
        timeout: a.timeout.min(b.timeout),
        memory: a.memory.min(b.memory),
        output_bytes: a.output_bytes.min(b.output_bytes),
        output_files: a.output_files.min(b.output_files),
    }
}

/// Resolves the requested limits: a set value above the ceiling is refused (never clamped); an unset one
/// is `min(default, ceiling)`.
fn admit_limits(req: Option<&TransformLimits>, ceil: &Limits) -> Result<Limits, String> {
    let defaults = min_limits(&DEFAULT_LIMITS, ceil);
    let empty = TransformLimits::default();
    let req = req.unwrap_or(&empty);
    let got = resolve(req, &defaults).map_err(|m| format!("limits.{m}"))?;
    let over =
        |name: &str, v: String, c: String| Err(format!("limits.{name} {v} exceeds the allowed ceiling {c}"));
    if got.fuel > ceil.fuel {
        return over("fuel", format_count(got.fuel), format_count(ceil.fuel));
    }
    if got.timeout > ceil.timeout {
        return over(
            "timeout",
            format_duration(got.timeout),
            format_duration(ceil.timeout),
        );
    }
    if got.memory > ceil.memory {
        return over("memory", format_bytes(got.memory), format_bytes(ceil.memory));
    }
    if got.output_bytes > ceil.output_bytes {
        return over(
            "outputBytes",
            format_bytes(got.output_bytes),
            format_bytes(ceil.output_bytes),
        );
    }
    if got.output_files > ceil.output_files {
        return over(
            "outputFiles",
            got.output_files.to_string(),
            ceil.output_files.to_string(),
        );
    }
    if got.fuel == 0 || got.timeout.is_zero() || got.memory == 0 {
        return Err("limits.fuel, limits.timeout and limits.memory must be greater than zero".into());
    }
    Ok(got)
}

/// Parses the set fields of `l`, taking unset ones from `fallback`. Errors name the field.
fn resolve(l: &TransformLimits, fallback: &Limits) -> Result<Limits, String> {
    let q = |name: &str, v: &Option<Quantity>, d: u64| -> Result<u64, String> {
        match v {
            None => Ok(d),
            Some(Quantity::Int(n)) => Ok(*n),
            Some(Quantity::Str(s)) => parse_quantity(s).map_err(|e| format!("{name}: {e}")),
        }
    };
    Ok(Limits {
        fuel: q("fuel", &l.fuel, fallback.fuel)?,
        timeout: match &l.timeout {
            None => fallback.timeout,
            Some(s) => parse_duration(s).map_err(|e| format!("timeout: {e}"))?,
        },
        memory: q("memory", &l.memory, fallback.memory)?,
        output_bytes: q("outputBytes", &l.output_bytes, fallback.output_bytes)?,
        output_files: l.output_files.unwrap_or(fallback.output_files),
    })
}

/// Parses a Kubernetes quantity without fractions (`20G`, `256Mi`, `1024`) into a plain number.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid quantity '{s}'"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(format!("invalid quantity '{s}': unknown suffix '{suffix}'")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("quantity '{s}' is too large"))
}

/// Parses a Go-style duration (`500ms`, `30s`, `2m`, `1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration '{s}'");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if split == 0 {
            return Err(err());
        }
        let n: u64 = rest[..split].parse().map_err(|_| err())?;
        let tail = &rest[split..];
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let d = match &tail[..unit_len] {
            "ns" => Duration::from_nanos(n),
            "us" | "µs" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(d).ok_or_else(err)?;
        rest = &tail[unit_len..];
    }
    Ok(total)
}

/// `20000000000` → `20G` (decimal suffixes, exact only).
pub fn format_count(n: u64) -> String {
    for (m, s) in [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{s}", n / m);
        }
    }
    n.to_string()
}

/// `268435456` → `256Mi` (binary suffixes, exact only).
pub fn format_bytes(n: u64) -> String {
    for (shift, s) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        let m = 1u64 << shift;
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{s}", n / m);
        }
    }
    n.to_string()
}

/// `30s`, `2m`, `1m30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PluginRef, PluginSource};

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn t(limits: Option<TransformLimits>, read: &[&str]) -> Transform {
        Transform {
            name: "t".into(),
            plugin: PluginRef {
                source: PluginSource {
                    alias: "p".into(),
                    path: "x.wasm".into(),
                },
                digest: D.into(),
            },
            config: None,
            read_sources: read.iter().map(|s| s.to_string()).collect(),
            limits,
            failure_policy: None,
        }
    }

    fn srcs() -> BTreeMap<String, PathBuf> {
        [("app".to_string(), PathBuf::from("/nonexistent"))].into()
    }

    #[test]
    fn quantities_and_durations() {
        assert_eq!(parse_quantity("20G"), Ok(20_000_000_000));
        assert_eq!(parse_quantity("256Mi"), Ok(256 << 20));
        assert_eq!(parse_quantity("17"), Ok(17));
        assert!(parse_quantity("1.5G").is_err());
        assert!(parse_quantity("99999999999T").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_count(20_000_000_000), "20G");
        assert_eq!(format_count(1234), "1234");
        assert_eq!(format_bytes(256 << 20), "256Mi");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn deny_by_default_and_disabled() {
        let a = Admission::default();
        assert_eq!(
            admit(&t(None, &[]), &a, &srcs()).unwrap_err().0,
            Reason::PluginNotAllowed
        );
        let a = Admission {
            disabled: true,
            allow_any: true,
            ..Default::default()
        };
        assert_eq!(
            admit(&t(None, &[]), &a, &srcs()).unwrap_err().0,
            Reason::PluginsDisabled
        );
    }

    #[test]
    fn defaults_are_clamped_to_the_ceiling_and_requests_are_refused_above_it() {
        let entry = |fuel: &str, read| Allowed {
            digest: D.into(),
            ceilings: TransformLimits {
                fuel: Some(Quantity::Str(fuel.into())),
                ..Default::default()
            },
            allow_read_sources: read,
        };
        let a = Admission {
            allowed: vec![entry("10G", false)],
            ..Default::default()
        };
        let got = admit(&t(None, &[]), &a, &srcs()).unwrap();
        assert_eq!(got.limits.fuel, 10_000_000_000);
        assert_eq!(got.limits.memory, DEFAULT_LIMITS.memory);
        let req = TransformLimits {
            fuel: Some(Quantity::Str("11G".into())),
            ..Default::default()
        };
        let (r, m) = admit(&t(Some(req.clone()), &[]), &a, &srcs()).unwrap_err();
        assert_eq!(r, Reason::PluginNotAllowed);
        assert!(
            m.contains("limits.fuel 11G exceeds the allowed ceiling 10G"),
            "{m}"
        );
        // Union: a second entry raises the ceiling and grants read sources.
        let a = Admission {
            allowed: vec![entry("10G", false), entry("50G", true)],
            ..Default::default()
        };
        let got = admit(&t(Some(req), &["app"]), &a, &srcs()).unwrap();
        assert_eq!(got.limits.fuel, 11_000_000_000);
        assert_eq!(got.mounts.len(), 1);
        // Hard ceilings always apply.
        let a = Admission {
            allowed: vec![entry("900G", false)],
            ..Default::default()
        };
        let req = TransformLimits {
            fuel: Some(Quantity::Str("201G".into())),
            ..Default::default()
        };
        assert!(admit(&t(Some(req), &[]), &a, &srcs()).is_err());
    }

    #[test]
    fn read_sources_need_permission() {
        let a = Admission {
            allowed: vec![Allowed {
                digest: D.into(),
                ceilings: TransformLimits::default(),
                allow_read_sources: false,
            }],
            ..Default::default()
        };
        let (r, m) = admit(&t(None, &["app"]), &a, &srcs()).unwrap_err();
        assert_eq!(r, Reason::PluginNotAllowed);
        assert!(m.contains("allowReadSources"), "{m}");
        let a = Admission {
            allow_any: true,
            ..Default::default()
        };
        let (_, m) = admit(&t(None, &["nope"]), &a, &srcs()).unwrap_err();
        assert!(m.contains("'nope'"), "{m}");
    }
}
