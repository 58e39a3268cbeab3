//! The Pulse messages of Mozilla's masters (FORMATS.md section 3): the mozillapulse envelope
//! ([`Envelope`]), `BuildStatus.asDict()` ([`BuildDict`]), the payloads and the routing keys.
//! Pure functions of a [`BuildView`], so the shapes are tested without a broker.
use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike as _, FixedOffset, NaiveDate, Offset as _, TimeZone as _, Utc, Weekday,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{builder_dir, results};

/// Buildbot's time format in build dicts (`transform_times` of Mozilla's publisher).
const BUILD_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%z";
/// mozillapulse's `_meta.sent` format: RFC 3339 to the second, with the offset.
const SENT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";

/// The mozillapulse envelope of every master message: `{payload, _meta}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    pub payload: P,
    #[serde(rename = "_meta")]
    pub meta: Meta,
}

/// `_meta` of the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub exchange: String,
    pub routing_key: String,
    pub serializer: String,
    /// US/Pacific (`2015-11-03T11:14:00-08:00`); `None` (null) until the outbox stamps it.
    #[serde(with = "sent_time")]
    pub sent: Option<DateTime<FixedOffset>>,
    pub master_name: String,
    pub master_incarnation: String,
    /// The statusdb id (a number) in log_uploaded; a unique string in the others.
    pub message_id: Value,
}

/// The payload of `started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedPayload {
    pub build: BuildDict,
    pub request_ids: Vec<i64>,
}

/// The payload of `finished`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedPayload {
    pub build: BuildDict,
    pub results: Option<i64>,
    pub request_ids: Vec<i64>,
}

/// The payload of `log_uploaded` (postrun.py): the build only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogUploadedPayload {
    pub build: BuildDict,
}

/// `BuildStatus.asDict()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDict {
    /// The full builder name; the directory name in log_uploaded.
    pub builder_name: String,
    pub number: i64,
    pub source_stamp: SourceStampDict,
    pub reason: String,
    pub blame: Vec<String>,
    /// `[name, value, source]`, sorted by name.
    pub properties: Vec<(String, Value, String)>,
    /// Start and finish, epoch seconds, written as `%Y-%m-%dT%H:%M:%S%z` strings (or null).
    #[serde(with = "build_times")]
    pub times: [Option<i64>; 2],
    pub text: Vec<String>,
    pub results: Option<i64>,
    pub slave: String,
    pub eta: Option<serde_json::Number>,
    pub steps: Vec<Value>,
    pub current_step: Option<Value>,
}

/// `SourceStamp.asDict()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStampDict {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub has_patch: bool,
    pub changes: Vec<Value>,
}

/// Serde for `times`: epoch seconds as [`BUILD_TIME_FORMAT`] strings, in UTC (`+0000`).
mod build_times {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(times: &[Option<i64>; 2], s: S) -> Result<S::Ok, S::Error> {
        let text = |t: &Option<i64>| {
            t.and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
                .map(|t| t.format(super::BUILD_TIME_FORMAT).to_string())
        };
        [text(&times[0]), text(&times[1])].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[Option<i64>; 2], D::Error> {
        let [start, finish] = <[Option<String>; 2]>::deserialize(d)?;
        let secs = |t: Option<String>| {
            t.map(|t| {
                DateTime::parse_from_str(&t, super::BUILD_TIME_FORMAT)
                    .map(|t| t.timestamp())
                    .map_err(|e| D::Error::custom(format!("bad build time {t:?}: {e}")))
            })
            .transpose()
        };
        Ok([secs(start)?, secs(finish)?])
    }
}

/// Serde for `_meta.sent`: [`SENT_FORMAT`], offset kept; read as any RFC 3339 time.
mod sent_time {
    use chrono::{DateTime, FixedOffset};
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<FixedOffset>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.format(super::SENT_FORMAT).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| D::Error::custom(format!("bad sent time {t:?}: {e}")))
            })
            .transpose()
    }
}

/// Build properties by name: `(value, source)`. A `BTreeMap`, so they come out sorted, as
/// `Properties.asList()` gives them.
pub type Properties = BTreeMap<String, (Value, String)>;

/// The three build events the bridge listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Started,
    Finished,
    LogUploaded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Finished => "finished",
            EventKind::LogUploaded => "log_uploaded",
        }
    }
}

/// A Build's sourcestamp, as `SourceStamp.asDict()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStamp {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
}

/// Everything a build event says about a Build.
#[derive(Debug, Clone)]
pub struct BuildView {
    /// The full builder name.
    pub builder: String,
    pub number: i64,
    pub sourcestamp: SourceStamp,
    pub reason: String,
    pub properties: Properties,
    pub start: i64,
    pub finish: Option<i64>,
    pub results: Option<i64>,
    pub slave: String,
    pub request_ids: Vec<i64>,
}

/// `build.<bdir>.<n>.<event>`.
pub fn routing_key(builder: &str, number: i64, kind: EventKind) -> String {
    format!("build.{}.{number}.{}", builder_dir(builder), kind.as_str())
}

/// `BuildStatus.getText()` once finished.
fn text(results: Option<i64>) -> Vec<String> {
    let words: &[&str] = match results {
        None => &[],
        Some(results::SUCCESS) => &["build", "successful"],
        Some(results::WARNINGS) => &["build", "warnings"],
        Some(results::FAILURE) => &["failed"],
        Some(results::SKIPPED) => &["skipped"],
        Some(results::EXCEPTION) => &["exception"],
        Some(results::RETRY) => &["retry"],
        Some(results::CANCELLED) => &["cancelled"],
        Some(_) => &["unknown"],
    };
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `BuildStatus.asDict()`; `builder_name` is the full name in started/finished and the
/// directory name in log_uploaded (postrun reports the directory).
pub fn build_status(build: &BuildView, builder_name: &str, properties: &Properties) -> BuildDict {
    BuildDict {
        builder_name: builder_name.to_owned(),
        number: build.number,
        source_stamp: SourceStampDict {
            branch: build.sourcestamp.branch.clone(),
            revision: build.sourcestamp.revision.clone(),
            repository: build.sourcestamp.repository.clone(),
            project: build.sourcestamp.project.clone(),
            has_patch: false,
            changes: Vec::new(),
        },
        reason: build.reason.clone(),
        blame: Vec::new(),
        properties: properties
            .iter()
            .map(|(name, (value, source))| (name.clone(), value.clone(), source.clone()))
            .collect(),
        times: [Some(build.start), build.finish],
        text: text(build.results),
        results: build.results,
        slave: build.slave.clone(),
        eta: None,
        steps: Vec::new(),
        current_step: None,
    }
}

/// These types always serialize (string keys only).
fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The payload of `started`: `{build, request_ids}`.
pub fn started_payload(build: &BuildView) -> Value {
    to_json(&StartedPayload {
        build: build_status(build, &build.builder, &build.properties),
        request_ids: build.request_ids.clone(),
    })
}

/// The payload of `finished`: `{build, results, request_ids}`.
pub fn finished_payload(build: &BuildView) -> Value {
    to_json(&FinishedPayload {
        build: build_status(build, &build.builder, &build.properties),
        results: build.results,
        request_ids: build.request_ids.clone(),
    })
}

/// The payload of `log_uploaded` (postrun.py): `{build}` only, builderName the directory
/// name, with postrun's properties added: `log_url`, `request_ids`, `request_times`
/// (`{brid: submitted_at}`) and `statusdb_id`.
pub fn log_uploaded_payload(
    build: &BuildView,
    log_url: &str,
    request_times: &BTreeMap<i64, i64>,
    statusdb_id: i64,
) -> Value {
    let mut properties = build.properties.clone();
    let postrun = |value: Value| (value, "postrun.py".to_owned());
    properties.insert("log_url".into(), postrun(Value::from(log_url)));
    properties.insert("request_ids".into(), postrun(json!(build.request_ids)));
    let times: serde_json::Map<String, Value> = request_times
        .iter()
        .map(|(brid, at)| (brid.to_string(), Value::from(*at)))
        .collect();
    properties.insert("request_times".into(), postrun(Value::Object(times)));
    properties.insert("statusdb_id".into(), postrun(Value::from(statusdb_id)));
    to_json(&LogUploadedPayload {
        build: build_status(build, &builder_dir(&build.builder), &properties),
    })
}

/// The mozillapulse envelope. `_meta.sent` is filled in when the message is queued.
pub fn envelope(
    exchange: &str,
    routing_key: &str,
    master_name: &str,
    master_incarnation: &str,
    message_id: Value,
    payload: Value,
) -> Value {
    to_json(&Envelope {
        payload,
        meta: Meta {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            serializer: "json".to_owned(),
            sent: None,
            master_name: master_name.to_owned(),
            master_incarnation: master_incarnation.to_owned(),
            message_id,
        },
    })
}

/// `sent` as mozillapulse writes it: RFC 3339 in US/Pacific (`2015-11-03T11:14:00-08:00`).
pub fn pacific_time(t: DateTime<Utc>) -> String {
    let offset = pacific_offset(t);
    t.with_timezone(&offset).format(SENT_FORMAT).to_string()
}

/// US/Pacific since 2007: daylight time (UTC-7) from the second Sunday of March, 02:00 PST,
/// to the first Sunday of November, 02:00 PDT; standard time (UTC-8) otherwise.
fn pacific_offset(t: DateTime<Utc>) -> FixedOffset {
    let year = t.year();
    let sunday =
        |month: u32, nth: u8| NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, nth);
    let dst = match (sunday(3, 2), sunday(11, 1)) {
        (Some(start), Some(end)) => {
            // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
            let start = start
                .and_hms_opt(10, 0, 0)
                .map(|d| Utc.from_utc_datetime(&d));
            let end = end.and_hms_opt(9, 0, 0).map(|d| Utc.from_utc_datetime(&d));
            matches!((start, end), (Some(s), Some(e)) if s <= t && t < e)
        }
        _ => false,
    };
    let hours = if dst { 7 } else { 8 };
    FixedOffset::west_opt(hours * 3600).unwrap_or_else(|| Utc.fix())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view() -> BuildView {
        let mut properties = Properties::new();
        properties.insert(
            "taskId".into(),
            (json!("fNdN0Jx9TmKf0yv7uJ3Q1w"), "bbb".into()),
        );
        properties.insert("buildnumber".into(), (json!(7), "Build".into()));
        BuildView {
            builder: "Linux x86-64 mozilla-inbound build".into(),
            number: 7,
            sourcestamp: SourceStamp {
                branch: Some("integration/mozilla-inbound".into()),
                revision: Some("abc".into()),
                repository: String::new(),
                project: String::new(),
            },
            reason: "Created by BBB for task fNdN0Jx9TmKf0yv7uJ3Q1w".into(),
            properties,
            start: 1_446_575_024,
            finish: Some(1_446_577_991),
            results: Some(0),
            slave: "bld-linux64-spot-132".into(),
            request_ids: vec![86_737_608],
        }
    }

    #[test]
    fn routing_keys_use_the_builder_directory() {
        assert_eq!(
            routing_key(
                "Linux x86-64 mozilla-inbound build",
                12,
                EventKind::LogUploaded
            ),
            "build.linux_x86-64_mozilla-inbound_build.12.log_uploaded"
        );
    }

    #[test]
    fn properties_are_sorted_triples_and_times_are_buildbot_strings() {
        let dict = to_json(&build_status(&view(), "x", &view().properties));
        assert_eq!(
            dict["properties"],
            json!([
                ["buildnumber", 7, "Build"],
                ["taskId", "fNdN0Jx9TmKf0yv7uJ3Q1w", "bbb"]
            ])
        );
        assert_eq!(
            dict["times"],
            json!(["2015-11-03T18:23:44+0000", "2015-11-03T19:13:11+0000"])
        );
        assert_eq!(dict["text"], json!(["build", "successful"]));
    }

    #[test]
    fn log_uploaded_names_the_directory_and_adds_postrun_properties() {
        let times = BTreeMap::from([(86_737_608, 1_446_575_010)]);
        let payload = log_uploaded_payload(&view(), "http://log", &times, 79_368_986);
        let build = &payload["build"];
        assert_eq!(build["builderName"], "linux_x86-64_mozilla-inbound_build");
        let props = build["properties"].as_array().unwrap();
        assert!(
            props.contains(&json!(["request_times", {"86737608": 1_446_575_010}, "postrun.py"]))
        );
        assert!(props.contains(&json!(["request_ids", [86_737_608], "postrun.py"])));
        assert!(props.contains(&json!(["statusdb_id", 79_368_986, "postrun.py"])));
        assert!(props.contains(&json!(["log_url", "http://log", "postrun.py"])));
        assert!(payload.get("request_ids").is_none());
    }

    #[test]
    fn sent_times_are_pacific_with_daylight_saving() {
        let winter = Utc.with_ymd_and_hms(2015, 11, 3, 19, 14, 0).unwrap();
        assert_eq!(pacific_time(winter), "2015-11-03T11:14:00-08:00");
        let summer = Utc.with_ymd_and_hms(2015, 7, 1, 12, 0, 0).unwrap();
        assert_eq!(pacific_time(summer), "2015-07-01T05:00:00-07:00");
        // 2015: DST from 8 March 10:00 UTC to 1 November 09:00 UTC.
        let before = Utc.with_ymd_and_hms(2015, 3, 8, 9, 59, 59).unwrap();
        assert!(pacific_time(before).ends_with("-08:00"));
        let after = Utc.with_ymd_and_hms(2015, 11, 1, 8, 59, 59).unwrap();
        assert!(pacific_time(after).ends_with("-07:00"));
    }
}
