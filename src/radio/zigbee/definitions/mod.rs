//! Zigbee device definitions: which device a Basic cluster manufacturer name and model id
//! are, and how its frames become readings where the generic cluster mapping is not enough
//! (Xiaomi's struct attributes, Tuya's datapoints on 0xEF00, a plug's analog input that is
//! its power, an IAS zone that is a smoke or water alarm, a scaling the device gets wrong).
//!
//! Definitions are data, in TOML (`docs/zigbee.md#device-definitions` is the format in prose):
//! the built-in ones are the files under `definitions/zigbee/` compiled in; a site adds or
//! overrides devices with `*.toml` files in a directory (`definitions_dir`, default
//! `/etc/fieldgate/devices.d`) read when the radio starts, no rebuild. `fieldgate config
//! check` checks those files like the config: file, line, key, exit 2.
//!
//! Owns the format, its validation and matching; applying a definition to a frame is
//! `apply`. Pure apart from reading the site directory: no async, no state.

mod apply;

pub use apply::device_readings;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{line_col, ConfigError};
use crate::model::vocabulary::{self, Kind};

/// Where a site's own definitions are read from unless `definitions_dir` says otherwise.
pub const DEFAULT_SITE_DIR: &str = "/etc/fieldgate/devices.d";

/// The built-in definition files: (name, text).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "aqara.toml",
        include_str!("../../../../definitions/zigbee/aqara.toml"),
    ),
    (
        "ikea.toml",
        include_str!("../../../../definitions/zigbee/ikea.toml"),
    ),
    (
        "philips.toml",
        include_str!("../../../../definitions/zigbee/philips.toml"),
    ),
    (
        "sonoff.toml",
        include_str!("../../../../definitions/zigbee/sonoff.toml"),
    ),
    (
        "tuya.toml",
        include_str!("../../../../definitions/zigbee/tuya.toml"),
    ),
    (
        "heiman.toml",
        include_str!("../../../../definitions/zigbee/heiman.toml"),
    ),
];

/// One device: how it is recognised and what its frames mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The vendor's model (e.g. `WSDCGQ11LM`), as sites and zigbee2mqtt name it.
    pub model: String,
    pub vendor: String,
    pub description: String,
    /// Basic cluster ModelIdentifier values (exact).
    pub zigbee_model: Vec<String>,
    /// Basic cluster ManufacturerName values (exact); empty matches any.
    pub manufacturer: Vec<String>,
    /// Server clusters the device serves (documentation, and what the differential test
    /// sends it).
    pub clusters: Vec<u16>,
    /// What an IAS zone's alarm1 bit means: `contact` (inverted: alarm = open), `water_leak`,
    /// `smoke`, `occupancy`, ...; absent: the generic `contact`.
    pub ias_zone: Option<String>,
    pub readings: Vec<Rule>,
    /// `built-in aqara.toml` or the site file's path.
    pub origin: String,
}

/// Where a rule's raw value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A ZCL attribute (replaces the generic mapping of that attribute).
    Attribute { cluster: u16, attribute: u16 },
    /// A record of the Xiaomi struct (Basic 0xFF01 or Lumi 0xFCC0/0x00F7), by index.
    Xiaomi(u8),
    /// A Tuya datapoint on cluster 0xEF00.
    Tuya(u8),
}

/// One reading a device's frames carry, and how to scale it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub source: Source,
    /// Reading name: a vocabulary name where one fits (`temperature`, `battery`, ...).
    pub name: String,
    pub unit: Option<String>,
    pub divide: f64,
    pub multiply: f64,
    /// A boolean: true when the raw value is one of these.
    pub true_when: Option<Vec<i64>>,
    /// Values outside `[min, max]` (after scaling) are dropped as implausible.
    pub range: Option<(f64, f64)>,
    /// The value (after scaling) is a battery voltage: also report `battery` in %, linear
    /// from `min` (0 %) to `max` (100 %), clamped and rounded.
    pub battery_range: Option<(f64, f64)>,
    /// Drop the attribute: neither this rule nor the generic mapping reports it.
    pub ignore: bool,
}

/// Every definition known: a site's first (they override built-ins), then built-ins.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    devices: Vec<Arc<Definition>>,
}

impl Catalog {
    /// The built-in definitions only.
    pub fn built_in() -> Catalog {
        let mut devices = Vec::new();
        for (name, text) in BUILT_IN {
            // Built-in files are checked by a unit test; a broken one cannot ship.
            if let Ok(defs) = parse_file(Path::new(name), text, &format!("built-in {name}")) {
                devices.extend(defs.into_iter().map(Arc::new));
            }
        }
        Catalog { devices }
    }

    /// Built-ins plus a site's `*.toml` files in `dir` (a missing directory is no error).
    /// Returns what loaded and every error found; a file with an error adds nothing.
    pub fn load(dir: &Path) -> (Catalog, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut site = Vec::new();
        for path in site_files(dir, &mut errors) {
            match std::fs::read_to_string(&path) {
                Ok(text) => match parse_file(&path, &text, &path.display().to_string()) {
                    Ok(defs) => site.extend(defs.into_iter().map(Arc::new)),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(nowhere(&path, format!("cannot read: {e}"))),
            }
        }
        // The same device defined twice by the site is ambiguous.
        for (i, a) in site.iter().enumerate() {
            if let Some(b) = site[..i].iter().find(|b| overlaps(a, b)) {
                errors.push(nowhere(
                    Path::new(&a.origin),
                    format!(
                        "device `{}` matches the same model id and manufacturer as `{}` in {}",
                        a.model, b.model, b.origin
                    ),
                ));
            }
        }
        let mut catalog = Catalog { devices: site };
        catalog.devices.extend(Catalog::built_in().devices);
        (catalog, errors)
    }

    pub fn devices(&self) -> &[Arc<Definition>] {
        &self.devices
    }

    /// The definition for a device's Basic cluster manufacturer name and model id: the
    /// first whose model ids hold `model` and whose manufacturers hold `manufacturer` (or
    /// that names none), those naming the manufacturer first.
    pub fn find(&self, manufacturer: Option<&str>, model: Option<&str>) -> Option<Arc<Definition>> {
        let model = model?.trim_end_matches('\0');
        let manufacturer = manufacturer.map(|m| m.trim_end_matches('\0'));
        let by_model = || {
            self.devices
                .iter()
                .filter(|d| d.zigbee_model.iter().any(|m| m == model))
        };
        by_model()
            .find(|d| manufacturer.is_some_and(|m| d.manufacturer.iter().any(|x| x == m)))
            .or_else(|| by_model().find(|d| d.manufacturer.is_empty()))
            .cloned()
    }
}

fn overlaps(a: &Definition, b: &Definition) -> bool {
    a.zigbee_model.iter().any(|m| b.zigbee_model.contains(m))
        && (a.manufacturer.is_empty() && b.manufacturer.is_empty()
            || a.manufacturer.iter().any(|m| b.manufacturer.contains(m)))
}

fn site_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(nowhere(
                dir,
                format!("cannot read the definitions directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
}

fn nowhere(path: &Path, message: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: None,
        message,
    }
}

// ---------------------------------------------------------------------------------------
// The file format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    device: Vec<DeviceDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceDoc {
    model: Spanned<String>,
    vendor: String,
    #[serde(default)]
    description: String,
    zigbee_model: Spanned<Vec<String>>,
    #[serde(default)]
    manufacturer: Vec<String>,
    #[serde(default)]
    clusters: Vec<Spanned<i64>>,
    #[serde(default)]
    ias_zone: Option<Spanned<String>>,
    #[serde(default)]
    reading: Vec<RuleDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    #[serde(default)]
    cluster: Option<Spanned<i64>>,
    #[serde(default)]
    attribute: Option<Spanned<i64>>,
    #[serde(default)]
    xiaomi: Option<Spanned<i64>>,
    #[serde(default)]
    dp: Option<Spanned<i64>>,
    name: Spanned<String>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
    #[serde(default)]
    divide: Option<Spanned<f64>>,
    #[serde(default)]
    multiply: Option<Spanned<f64>>,
    #[serde(default)]
    true_when: Option<Vec<i64>>,
    #[serde(default)]
    range: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    battery_range: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    ignore: bool,
}

/// Locates errors in one file.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at<T>(&self, span: &Spanned<T>, key: String, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.span().start);
        ConfigError {
            file: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            key: Some(key),
            message: message.into(),
        }
    }
}

/// Parses and checks one definitions file; `origin` names it in the definitions.
pub fn parse_file(path: &Path, text: &str, origin: &str) -> Result<Vec<Definition>, ConfigError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_col(text, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            key: None,
            message: e.message().trim().to_string(),
        }
    })?;
    let loc = Locator { path, text };
    doc.device
        .into_iter()
        .enumerate()
        .map(|(i, d)| device(&loc, i, d, origin))
        .collect()
}

fn u16_of(loc: &Locator<'_>, v: &Spanned<i64>, key: String) -> Result<u16, ConfigError> {
    u16::try_from(*v.get_ref()).map_err(|_| loc.at(v, key, "must be 0x0000-0xFFFF"))
}

fn u8_of(loc: &Locator<'_>, v: &Spanned<i64>, key: String) -> Result<u8, ConfigError> {
    u8::try_from(*v.get_ref()).map_err(|_| loc.at(v, key, "must be 0-255"))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn device(
    loc: &Locator<'_>,
    i: usize,
    d: DeviceDoc,
    origin: &str,
) -> Result<Definition, ConfigError> {
    let key = |k: &str| format!("device[{i}].{k}");
    if d.model.get_ref().trim().is_empty() {
        return Err(loc.at(&d.model, key("model"), "must not be empty"));
    }
    if d.zigbee_model.get_ref().iter().all(|m| m.is_empty()) {
        return Err(loc.at(
            &d.zigbee_model,
            key("zigbee_model"),
            "must list at least one Basic cluster model id (attribute 0x0005)",
        ));
    }
    let clusters = d
        .clusters
        .iter()
        .map(|c| u16_of(loc, c, key("clusters")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(z) = &d.ias_zone {
        if !is_name(z.get_ref()) {
            return Err(loc.at(
                z,
                key("ias_zone"),
                "must be a reading name such as `contact`, `water_leak`, `smoke` or `occupancy`",
            ));
        }
    }
    let mut readings = Vec::new();
    for (j, r) in d.reading.into_iter().enumerate() {
        readings.push(rule(loc, &format!("device[{i}].reading[{j}]"), r)?);
    }
    for (j, r) in readings.iter().enumerate() {
        if readings[..j]
            .iter()
            .any(|o| o.source == r.source && o.name == r.name)
        {
            return Err(ConfigError {
                key: Some(format!("device[{i}].reading[{j}]")),
                ..loc.at(
                    &d.model,
                    String::new(),
                    format!("reading `{}` is defined twice for the same source", r.name),
                )
            });
        }
    }
    Ok(Definition {
        model: d.model.into_inner(),
        vendor: d.vendor,
        description: d.description,
        zigbee_model: d.zigbee_model.into_inner(),
        manufacturer: d.manufacturer,
        clusters,
        ias_zone: d.ias_zone.map(Spanned::into_inner),
        readings,
        origin: origin.to_string(),
    })
}

fn rule(loc: &Locator<'_>, at: &str, r: RuleDoc) -> Result<Rule, ConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let source = match (&r.cluster, &r.attribute, &r.xiaomi, &r.dp) {
        (Some(c), Some(a), None, None) => Source::Attribute {
            cluster: u16_of(loc, c, key("cluster"))?,
            attribute: u16_of(loc, a, key("attribute"))?,
        },
        (None, None, Some(x), None) => Source::Xiaomi(u8_of(loc, x, key("xiaomi"))?),
        (None, None, None, Some(dp)) => Source::Tuya(u8_of(loc, dp, key("dp"))?),
        _ => {
            return Err(loc.at(
                &r.name,
                at.to_string(),
                "give exactly one source: `cluster` and `attribute`, `xiaomi` (struct index) or `dp` (Tuya datapoint)",
            ))
        }
    };
    let name = r.name.get_ref();
    if !is_name(name) {
        return Err(loc.at(
            &r.name,
            key("name"),
            "must be 1-64 characters of a-z, 0-9 and '_'",
        ));
    }
    let positive = |v: &Option<Spanned<f64>>, k: &str| -> Result<f64, ConfigError> {
        match v {
            None => Ok(1.0),
            Some(s) if s.get_ref().is_finite() && *s.get_ref() != 0.0 => Ok(*s.get_ref()),
            Some(s) => Err(loc.at(s, key(k), "must be a finite number other than 0")),
        }
    };
    let divide = positive(&r.divide, "divide")?;
    let multiply = positive(&r.multiply, "multiply")?;
    let pair =
        |v: &Option<Spanned<Vec<f64>>>, k: &str| -> Result<Option<(f64, f64)>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => match s.get_ref().as_slice() {
                    [lo, hi] if lo < hi => Ok(Some((*lo, *hi))),
                    _ => Err(loc.at(s, key(k), "must be [min, max] with min < max")),
                },
            }
        };
    let range = pair(&r.range, "range")?;
    let battery_range = pair(&r.battery_range, "battery_range")?;
    let unit = r.unit.as_ref().map(|u| u.get_ref().clone());
    if let Some(q) = vocabulary::quantity(name) {
        if let (Some(u), Some(given)) = (q.unit, &r.unit) {
            if given.get_ref() != u {
                return Err(loc.at(given, key("unit"), format!("`{name}` is reported in {u} everywhere (docs/mqtt-api.md#vocabulary); scale the value with `divide`/`multiply` instead")));
            }
        }
        if q.kind == Kind::Number && r.true_when.is_some() {
            return Err(loc.at(
                &r.name,
                key("true_when"),
                format!("`{name}` is a number in the vocabulary, not a true/false value"),
            ));
        }
    }
    Ok(Rule {
        source,
        unit: unit.or_else(|| {
            vocabulary::quantity(name)
                .and_then(|q| q.unit)
                .map(str::to_string)
        }),
        name: r.name.into_inner(),
        divide,
        multiply,
        true_when: r.true_when,
        range,
        battery_range,
        ignore: r.ignore,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_definitions_parse_and_do_not_overlap() {
        let mut all = Vec::new();
        for (name, text) in BUILT_IN {
            let defs = parse_file(Path::new(name), text, name).unwrap_or_else(|e| panic!("{e}"));
            all.extend(defs);
        }
        assert!(all.len() >= 30, "{} built-in devices", all.len());
        for (i, a) in all.iter().enumerate() {
            if let Some(b) = all[..i].iter().find(|b| overlaps(a, b)) {
                panic!("{} and {} match the same devices", a.model, b.model);
            }
        }
        assert_eq!(Catalog::built_in().devices().len(), all.len());
    }

    #[test]
    fn devices_are_found_by_model_id_and_manufacturer() {
        let c = Catalog::built_in();
        let found =
            |manu: &str, model: &str| c.find(Some(manu), Some(model)).map(|d| d.model.clone());
        assert_eq!(found("LUMI", "lumi.weather").as_deref(), Some("WSDCGQ11LM"));
        // Some Xiaomi firmware pads strings with NULs.
        assert_eq!(
            found("LUMI", "lumi.weather\0\0").as_deref(),
            Some("WSDCGQ11LM")
        );
        assert_eq!(
            found("_TZE200_s1xgth2u", "TS0601").as_deref(),
            Some("TS0601_temperature_humidity_sensor_3")
        );
        assert_eq!(found("_TZE200_nobody", "TS0601"), None);
        assert_eq!(c.find(None, None), None);
    }

    #[test]
    fn mistakes_are_located_by_file_line_and_key() {
        let err = |text: &str| parse_file(Path::new("site.toml"), text, "site").unwrap_err();
        let e = err("[[device]]\nmodel = \"X\"\nvendor = \"V\"\nzigbee_model = [\"x\"]\n[[device.reading]]\ndp = 1\nname = \"temperature\"\nunit = \"°F\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(8), Some("device[0].reading[0].unit"))
        );
        let e = err("[[device]]\nmodel = \"X\"\nvendor = \"V\"\nzigbee_model = [\"x\"]\n[[device.reading]]\ndp = 300\nname = \"t\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(6), Some("device[0].reading[0].dp"))
        );
        let e = err("[[device]]\nmodel = \"X\"\nvendor = \"V\"\nzigbee_model = [\"x\"]\n[[device.reading]]\ndp = 1\nxiaomi = 1\nname = \"t\"\n");
        assert_eq!(e.line, Some(8));
        let e = err("[[device]]\nmodel = \"X\"\nvendr = \"V\"\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("vendr"), "{e}");
        let e = err("[[device]]\nmodel = \"X\"\nvendor = \"V\"\nzigbee_model = [\"x\"]\n[[device.reading]]\ndp = 1\nname = \"t\"\ndivide = 0\n");
        assert_eq!(e.key.as_deref(), Some("device[0].reading[0].divide"));
    }

    #[test]
    fn site_files_override_built_ins_and_report_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-weather.toml"),
            "[[device]]\nmodel = \"MY-WEATHER\"\nvendor = \"Site\"\nzigbee_model = [\"lumi.weather\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("20-bad.toml"), "[[device]]\nmodel = 1\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
        let (c, errors) = Catalog::load(dir.path());
        assert_eq!(
            c.find(Some("LUMI"), Some("lumi.weather")).unwrap().model,
            "MY-WEATHER"
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].file.ends_with("20-bad.toml") && errors[0].line == Some(2),
            "{}",
            errors[0]
        );
        let (c, errors) = Catalog::load(&dir.path().join("absent"));
        assert!(errors.is_empty());
        assert_eq!(c.devices().len(), Catalog::built_in().devices().len());
    }
}
