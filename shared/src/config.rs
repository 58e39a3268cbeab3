//! The bridge's configuration: the original bridge's `config.json` shape (legacy placements
//! included), the keys this project adds, and environment overrides for containers.
//!
//! # Layers
//! 1. The file, JSON or TOML (chosen by the `.toml` extension; anything else is JSON, as the
//!    original's `config.json`). It is first read into `RawConfig`, a serde struct in which
//!    every key is optional and every value is kept even when it has the wrong type, so that
//!    the resolution step can name the key of any mistake.
//! 2. Environment variables ([`ENV_VARS`]): `TASKCLUSTER_*` as every Taskcluster client reads
//!    them, and `BBB_*`. An override wins over the file; an empty variable counts as unset.
//! 3. Defaults, for everything the original did not require.
//!
//! # Legacy placements
//! Configs in the wild put `selfserve_url` inside `tclistener` or `reflector`, the worker
//! group and id inside `bblistener` (or another service section), `allowed_builders` at the
//! top level or inside `tclistener`, and `logfile` keys in every service section. They load;
//! when a key is at the top level too, the top level wins. Unknown keys are ignored, as the
//! original ignored them.
//!
//! # Invariants
//! - No secret (access token, certificate, a password of Pulse, Redis or a database) ever
//!   appears in `Debug` output, in [`Config::summary`] or in a [`ConfigError`]: secrets are
//!   held in [`Secret`] / [`SecretUrl`] / [`DbUrl`], and errors about a secret key describe the
//!   value's type, never the value; URLs in errors are masked.
//! - Every missing required key has its own error naming the file and the key (dotted path),
//!   and every malformed value names its key (or its environment variable) and says what was
//!   expected.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use url::Url;

use crate::dburl::{DbUrl, Engine};
use crate::secret::{Secret, SecretUrl, mask_url};

/// The Taskcluster deployment used when the file names none.
pub const DEFAULT_ROOT_URL: &str = "https://firefox-ci-tc.services.mozilla.com";
/// The Pulse broker the original always connected to.
pub const DEFAULT_PULSE_HOST: &str = "pulse.mozilla.org";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_TC_EXCHANGE_BASENAME: &str = "exchange/taskcluster-queue/v1";

/// Every environment variable [`Config::load`] reads, in the order they are documented.
pub const ENV_VARS: &[&str] = &[
    "TASKCLUSTER_ROOT_URL",
    "TASKCLUSTER_CLIENT_ID",
    "TASKCLUSTER_ACCESS_TOKEN",
    "TASKCLUSTER_CERTIFICATE",
    "BBB_REDIS_URL",
    "BBB_REDIS_PREFIX",
    "BBB_PULSE_URL",
    "BBB_PULSE_MANAGEMENT_URL",
    "BBB_BBB_DB",
    "BBB_SCHEDULER_DB",
    "BBB_SELFSERVE_URL",
    "BBB_ALLOWED_BUILDERS_URL",
    "BBB_WORKER_GROUP",
    "BBB_WORKER_ID",
    "BBB_CONCURRENCY",
];

// ---------------------------------------------------------------------------------------------
// The resolved configuration
// ---------------------------------------------------------------------------------------------

/// The whole configuration of every bbb process, resolved and validated. `Debug` shows no
/// secret (the URLs that are plain [`Url`]s are printed with their password masked).
#[derive(Clone)]
pub struct Config {
    pub taskcluster: TaskclusterConfig,
    pub buildbot_scheduler_db: DbUrl,
    pub bbb_db: DbUrl,
    /// BuildAPI's self-serve base URL (`DELETE {selfserve_url}/{branch}/request/{brid}`).
    pub selfserve_url: Url,
    pub pulse: PulseConfig,
    pub redis: RedisConfig,
    pub tc_worker_group: String,
    pub tc_worker_id: String,
    /// Builders whose tasks need a `buildbot-bridge:builder-name:<name>` scope.
    pub restricted_builders: Vec<BuilderPattern>,
    /// Builders whose tasks the bridge leaves alone entirely.
    pub ignored_builders: Vec<BuilderPattern>,
    /// Where the allowed builders list (`allthethings.json`) is fetched from.
    pub allowed_builders_url: Option<Url>,
    /// Allowed builders as patterns (legacy key of older configs); empty when absent.
    pub allowed_builders: Vec<BuilderPattern>,
    pub artifact_storage: ArtifactStorage,
    pub tclistener: TcListenerConfig,
    pub bblistener: BbListenerConfig,
    pub reflector: ReflectorConfig,
    pub worker: WorkerConfig,
    pub ingest: IngestConfig,
    /// The optional `sandbox` section, kept as written for the peer emulator.
    pub sandbox: Option<Value>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `url::Url`'s own Debug prints its password: show these two masked.
        f.debug_struct("Config")
            .field("taskcluster", &self.taskcluster)
            .field("buildbot_scheduler_db", &self.buildbot_scheduler_db)
            .field("bbb_db", &self.bbb_db)
            .field("selfserve_url", &mask_url(self.selfserve_url.as_str()))
            .field("pulse", &self.pulse)
            .field("redis", &self.redis)
            .field("tc_worker_group", &self.tc_worker_group)
            .field("tc_worker_id", &self.tc_worker_id)
            .field("restricted_builders", &self.restricted_builders)
            .field("ignored_builders", &self.ignored_builders)
            .field(
                "allowed_builders_url",
                &self
                    .allowed_builders_url
                    .as_ref()
                    .map(|u| mask_url(u.as_str())),
            )
            .field("allowed_builders", &self.allowed_builders)
            .field("artifact_storage", &self.artifact_storage)
            .field("tclistener", &self.tclistener)
            .field("bblistener", &self.bblistener)
            .field("reflector", &self.reflector)
            .field("worker", &self.worker)
            .field("ingest", &self.ingest)
            .field("sandbox", &self.sandbox.as_ref().map(|_| "..."))
            .finish()
    }
}

/// `taskcluster_queue_config`.
#[derive(Debug, Clone)]
pub struct TaskclusterConfig {
    /// The deployment's root URL, without a trailing slash.
    pub root_url: String,
    pub client_id: String,
    pub access_token: Secret,
    /// The certificate of temporary credentials, as a JSON string.
    pub certificate: Option<Secret>,
}

/// The purposes of the bridge's Pulse queues, one queue each: Taskcluster's task-pending and
/// task-exception events, and the Buildbot masters' build events.
pub const PULSE_PURPOSES: [&str; 3] = ["task-pending", "task-exception", "buildbot"];

#[derive(Debug, Clone)]
pub struct PulseConfig {
    /// `amqp://` or `amqps://` URL, password included (masked when printed).
    pub url: SecretUrl,
    /// Queues are named `<queue_basename>/<purpose>`.
    pub queue_basename: String,
    /// The broker's management HTTP API (`pulse.management_url`), read by `bbb queue` for
    /// queue depths; `None`: `http://<AMQP host>:15672` with the AMQP credentials.
    pub management_url: Option<SecretUrl>,
}

impl PulseConfig {
    /// The bridge's queue for one of [`PULSE_PURPOSES`].
    pub fn queue_name(&self, purpose: &str) -> String {
        format!("{}/{purpose}", self.queue_basename)
    }
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretUrl,
    /// Prefix of every Redis key the bridge writes.
    pub prefix: String,
    /// How long an idempotency key outlives its job, in seconds.
    pub idempotency_ttl_secs: u64,
}

#[derive(Debug, Clone)]
pub struct TcListenerConfig {
    /// Taskcluster queue exchanges are `<basename>/task-pending` and so on.
    pub pulse_exchange_basename: String,
    pub worker_type: String,
    pub provisioner_id: String,
}

#[derive(Debug, Clone)]
pub struct BbListenerConfig {
    /// The topic exchange Buildbot masters publish build events on.
    pub pulse_exchange: String,
}

#[derive(Debug, Clone)]
pub struct ReflectorConfig {
    /// Seconds between two periodic scans.
    pub interval: u64,
    /// Reclaim a running task only when its claim expires within this many seconds.
    pub reclaim_margin: u64,
    /// Tracked rows read per database query of a scan.
    pub page_size: u32,
}

/// The new `worker` section: how job workers run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process.
    pub concurrency: usize,
    /// Attempts before a failing job goes to the dead letters.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Expiry of the per-task lock; renewed while the job runs.
    pub lock_ttl_ms: u64,
    /// Delay before a job that found its task locked runs again.
    pub lock_busy_delay_ms: u64,
    /// Worker heartbeat period.
    pub heartbeat_ms: u64,
    /// A worker silent this long is dead and its in-flight jobs are re-queued.
    pub orphan_after_ms: u64,
    /// Apply the bridge database's migrations at start-up.
    pub migrate_on_start: bool,
}

/// The new `ingest` section: how Pulse messages are consumed.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// AMQP prefetch (unacknowledged messages in flight per consumer).
    pub prefetch: u16,
    /// Larger messages are dead-lettered unparsed.
    pub max_message_bytes: usize,
    /// Bytes of a bad message's body kept in its dead letter.
    pub dead_letter_body_limit: usize,
    /// Declare the exchanges (development brokers) instead of checking them passively.
    pub declare_exchanges: bool,
}

/// Where artifacts go: the object service of current Taskcluster, or S3 for deployments that
/// still have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArtifactStorage {
    #[default]
    Object,
    S3,
}

impl ArtifactStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactStorage::Object => "object",
            ArtifactStorage::S3 => "s3",
        }
    }
}

impl fmt::Display for ArtifactStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A builder-name pattern with Python's `re.match` semantics: anchored at the start of the
/// name, not at its end. Look-around is supported (the original's deployments used
/// `^((?!(alder|birch)).)*$`), hence `fancy_regex`.
#[derive(Clone)]
pub struct BuilderPattern {
    pattern: String,
    regex: fancy_regex::Regex,
}

impl BuilderPattern {
    pub fn new(pattern: &str) -> Result<Self, fancy_regex::Error> {
        let regex = fancy_regex::Regex::new(&format!(r"\A(?:{pattern})"))?;
        Ok(Self {
            pattern: pattern.to_owned(),
            regex,
        })
    }

    /// Whether `name` matches from its start. A match that exceeds the regex engine's
    /// backtracking limit (only possible with look-around patterns) counts as a match and is
    /// logged: for `restricted_builders` that fails closed.
    pub fn matches(&self, name: &str) -> bool {
        match self.regex.is_match(name) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(
                    pattern = %self.pattern,
                    builder = name,
                    %error,
                    "builder pattern {} could not be evaluated on {name}; counting it as a match",
                    self.pattern
                );
                true
            }
        }
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Whether any of `patterns` matches `name`.
pub fn matches_any(patterns: &[BuilderPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

impl PartialEq for BuilderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for BuilderPattern {}

impl fmt::Debug for BuilderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.pattern)
    }
}

impl fmt::Display for BuilderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What is wrong with a configuration. Messages name the file and the key (a dotted path) or
/// the environment variable, and never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid {format}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        format: &'static str,
        message: String,
    },
    /// A required key is absent. `hint` lists the other places it may be given, if any.
    #[error("{}: missing required key `{key}`{hint}", file.display())]
    Missing {
        file: PathBuf,
        key: &'static str,
        hint: &'static str,
    },
    #[error("{}: `{key}`: expected {expected}, got {got}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        expected: String,
        got: String,
    },
    #[error("environment variable {var}: expected {expected}, got {got}")]
    InvalidEnv {
        var: &'static str,
        expected: String,
        got: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Reads `path` (TOML if it ends in `.toml`, JSON otherwise), then applies the process
    /// environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::from_str(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as the content of `origin` (which picks the format and names the file
    /// in errors) with the environment read through `env`.
    pub fn from_str(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let value = parse_document(text, origin)?;
        let raw: RawConfig = serde_json::from_value(value).map_err(|e| ConfigError::Syntax {
            file: origin.to_owned(),
            format: "configuration",
            message: e.to_string(),
        })?;
        let ctx = Ctx { file: origin, env };
        resolve(raw, &ctx)
    }

    /// A human-readable, secret-free description of the configuration, one setting a line.
    pub fn summary(&self) -> String {
        let patterns = |list: &[BuilderPattern]| {
            if list.is_empty() {
                "(none)".to_owned()
            } else {
                list.iter()
                    .map(|p| format!("{:?}", p.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let tc = &self.taskcluster;
        let w = &self.worker;
        let i = &self.ingest;
        let r = &self.reflector;
        let lines = [
            format!("taskcluster root URL:   {}", tc.root_url),
            format!("taskcluster client id:  {}", tc.client_id),
            format!(
                "taskcluster credentials: access token {}, {}",
                if tc.access_token.is_empty() {
                    "empty"
                } else {
                    "set"
                },
                if tc.certificate.is_some() {
                    "temporary (certificate set)"
                } else {
                    "permanent (no certificate)"
                }
            ),
            format!(
                "worker identity:        provisioner {} / worker type {} / group {} / id {}",
                self.tclistener.provisioner_id,
                self.tclistener.worker_type,
                self.tc_worker_group,
                self.tc_worker_id
            ),
            format!(
                "buildbot scheduler db:  {} ({})",
                self.buildbot_scheduler_db,
                self.buildbot_scheduler_db.engine()
            ),
            format!(
                "bridge db:              {} ({})",
                self.bbb_db,
                self.bbb_db.engine()
            ),
            format!(
                "self-serve URL:         {}",
                mask_url(self.selfserve_url.as_str())
            ),
            format!("pulse URL:              {}", self.pulse.url),
            format!("pulse queue basename:   {}", self.pulse.queue_basename),
            format!(
                "pulse management API:   {}",
                self.pulse.management_url.as_ref().map_or_else(
                    || "(derived from the pulse URL, port 15672)".to_owned(),
                    SecretUrl::masked
                )
            ),
            format!(
                "taskcluster exchanges:  {}/*",
                self.tclistener.pulse_exchange_basename
            ),
            format!("buildbot exchange:      {}", self.bblistener.pulse_exchange),
            format!(
                "redis:                  {} (prefix {:?}, idempotency keys kept {} s)",
                self.redis.url, self.redis.prefix, self.redis.idempotency_ttl_secs
            ),
            format!(
                "restricted builders:    {}",
                patterns(&self.restricted_builders)
            ),
            format!(
                "ignored builders:       {}",
                patterns(&self.ignored_builders)
            ),
            format!(
                "allowed builders:       {}",
                patterns(&self.allowed_builders)
            ),
            format!(
                "allowed builders URL:   {}",
                self.allowed_builders_url
                    .as_ref()
                    .map_or_else(|| "(none)".to_owned(), |u| mask_url(u.as_str()))
            ),
            format!("artifact storage:       {}", self.artifact_storage),
            format!(
                "reflector:              every {} s, reclaim margin {} s, page size {}",
                r.interval, r.reclaim_margin, r.page_size
            ),
            format!(
                "worker:                 concurrency {}, max attempts {}, retry {}..{} ms, lock ttl {} ms (busy delay {} ms), heartbeat {} ms, orphaned after {} ms, migrate on start {}",
                w.concurrency,
                w.max_attempts,
                w.retry_base_ms,
                w.retry_max_ms,
                w.lock_ttl_ms,
                w.lock_busy_delay_ms,
                w.heartbeat_ms,
                w.orphan_after_ms,
                w.migrate_on_start
            ),
            format!(
                "ingest:                 prefetch {}, max message {} bytes, dead-letter body limit {} bytes, {} exchanges",
                i.prefetch,
                i.max_message_bytes,
                i.dead_letter_body_limit,
                if i.declare_exchanges {
                    "declares"
                } else {
                    "checks (passive)"
                }
            ),
            format!(
                "sandbox:                {}",
                if self.sandbox.is_some() {
                    "configured"
                } else {
                    "(none)"
                }
            ),
        ];
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

/// The file's text as a JSON value, whatever its format.
fn parse_document(text: &str, origin: &Path) -> Result<Value, ConfigError> {
    let is_toml = origin
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let syntax = |format, message| ConfigError::Syntax {
        file: origin.to_owned(),
        format,
        message,
    };
    let value = if is_toml {
        // Only the message and the position: toml's own Display quotes the offending line,
        // which may hold a secret.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(text, span.start);
                    format!(" at line {line} column {column}")
                })
                .unwrap_or_default();
            syntax("TOML", format!("{}{at}", e.message().trim_end()))
        })?;
        serde_json::to_value(table).map_err(|e| syntax("TOML", e.to_string()))?
    } else {
        // serde_json's syntax errors carry a position, never the input.
        serde_json::from_str::<Value>(text).map_err(|e| syntax("JSON", e.to_string()))?
    };
    if !value.is_object() {
        return Err(syntax(
            if is_toml { "TOML" } else { "JSON" },
            format!(
                "expected an object of settings at the top level, got {}",
                kind(&value)
            ),
        ));
    }
    Ok(value)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// The raw file
// ---------------------------------------------------------------------------------------------

/// A value as the file wrote it: of the expected type, or whatever was there instead (kept so
/// that the resolution step can report it under its key).
enum Raw<T> {
    Ok(T),
    Bad(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Raw<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&value) {
            Ok(v) => Raw::Ok(v),
            Err(_) => Raw::Bad(value),
        })
    }
}

type Opt<T> = Option<Raw<T>>;

/// A section of the file: like [`Raw`], but only an object counts (serde would also build a
/// struct from a list of its fields' values).
struct Section<T>(Raw<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if !value.is_object() {
            return Ok(Section(Raw::Bad(value)));
        }
        Ok(Section(match T::deserialize(&value) {
            Ok(v) => Raw::Ok(v),
            Err(_) => Raw::Bad(value),
        }))
    }
}

/// The file as written: every key optional, unknown keys ignored. No `Debug`: it holds
/// secrets in the clear.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    taskcluster_queue_config: Option<Section<RawTaskcluster>>,
    buildbot_scheduler_db: Opt<String>,
    bbb_db: Opt<String>,
    selfserve_url: Opt<String>,
    pulse_url: Opt<String>,
    pulse_host: Opt<String>,
    pulse_port: Opt<u16>,
    pulse_ssl: Opt<bool>,
    pulse_vhost: Opt<String>,
    pulse_user: Opt<String>,
    pulse_password: Opt<String>,
    pulse_queue_basename: Opt<String>,
    pulse_management_url: Opt<String>,
    pulse: Option<Section<RawPulse>>,
    redis_url: Opt<String>,
    redis: Option<Section<RawRedis>>,
    tc_worker_group: Opt<String>,
    tc_worker_id: Opt<String>,
    restricted_builders: Opt<Vec<String>>,
    ignored_builders: Opt<Vec<String>>,
    allowed_builders: Opt<Vec<String>>,
    allowed_builders_url: Opt<String>,
    artifact_storage: Opt<String>,
    tclistener: Option<Section<RawTcListener>>,
    bblistener: Option<Section<RawService>>,
    reflector: Option<Section<RawReflector>>,
    worker: Option<Section<RawWorker>>,
    ingest: Option<Section<RawIngest>>,
    sandbox: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTaskcluster {
    #[serde(rename = "rootUrl")]
    root_url: Opt<String>,
    /// The Python client's key; a root URL here too.
    #[serde(rename = "baseUrl")]
    base_url: Opt<String>,
    credentials: Option<Section<RawCredentials>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCredentials {
    #[serde(rename = "clientId")]
    client_id: Opt<String>,
    #[serde(rename = "accessToken")]
    access_token: Opt<String>,
    /// A JSON string, or the certificate object itself.
    certificate: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPulse {
    management_url: Opt<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRedis {
    url: Opt<String>,
    prefix: Opt<String>,
    idempotency_ttl: Opt<u64>,
}

/// The keys every service section may carry in legacy configs.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawService {
    pulse_exchange: Opt<String>,
    selfserve_url: Opt<String>,
    tc_worker_group: Opt<String>,
    tc_worker_id: Opt<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTcListener {
    pulse_exchange_basename: Opt<String>,
    worker_type: Opt<String>,
    provisioner_id: Opt<String>,
    allowed_builders: Opt<Vec<String>>,
    selfserve_url: Opt<String>,
    tc_worker_group: Opt<String>,
    tc_worker_id: Opt<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawReflector {
    interval: Opt<u64>,
    reclaim_margin: Opt<u64>,
    page_size: Opt<u32>,
    selfserve_url: Opt<String>,
    tc_worker_group: Opt<String>,
    tc_worker_id: Opt<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawWorker {
    concurrency: Opt<usize>,
    max_attempts: Opt<u32>,
    retry_base_ms: Opt<u64>,
    retry_max_ms: Opt<u64>,
    lock_ttl_ms: Opt<u64>,
    lock_busy_delay_ms: Opt<u64>,
    heartbeat_ms: Opt<u64>,
    orphan_after_ms: Opt<u64>,
    migrate_on_start: Opt<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawIngest {
    prefetch: Opt<u16>,
    max_message_bytes: Opt<usize>,
    dead_letter_body_limit: Opt<usize>,
    declare_exchanges: Opt<bool>,
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// Where a value came from, for error messages.
#[derive(Clone)]
enum Origin {
    Key(String),
    Env(&'static str),
}

/// How a string value may be shown in an error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// As written.
    Plain,
    /// With its password masked.
    Url,
    /// Never: only its type or emptiness.
    Secret,
}

struct Ctx<'a> {
    file: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

const TC_IDENTIFIER: &str = "a Taskcluster identifier (1 to 38 letters, digits, `-` or `_`)";

impl Ctx<'_> {
    /// An override from the environment; empty counts as unset.
    fn env(&self, var: &'static str) -> Option<String> {
        (self.env)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn missing(&self, key: &'static str, hint: &'static str) -> ConfigError {
        ConfigError::Missing {
            file: self.file.to_owned(),
            key,
            hint,
        }
    }

    fn invalid(&self, origin: &Origin, expected: impl Into<String>, got: String) -> ConfigError {
        match origin {
            Origin::Key(key) => ConfigError::Invalid {
                file: self.file.to_owned(),
                key: key.clone(),
                expected: expected.into(),
                got,
            },
            Origin::Env(var) => ConfigError::InvalidEnv {
                var,
                expected: expected.into(),
                got,
            },
        }
    }

    /// A value of the file, or an error naming `key` if it has the wrong type.
    fn value<T>(
        &self,
        raw: Opt<T>,
        key: &str,
        expected: &str,
        shown: Shown,
    ) -> Result<Option<T>, ConfigError> {
        match raw {
            None => Ok(None),
            Some(Raw::Ok(v)) => Ok(Some(v)),
            Some(Raw::Bad(v)) => Err(self.invalid(
                &Origin::Key(key.to_owned()),
                expected,
                show_value(&v, shown),
            )),
        }
    }

    /// A section (object) of the file; absent means all defaults. A wrong one is described by
    /// its type only: what stands in place of `credentials` may well be a token.
    fn section<T: Default>(&self, raw: Option<Section<T>>, key: &str) -> Result<T, ConfigError> {
        Ok(self
            .value(
                raw.map(|s| s.0),
                key,
                "a section (an object of settings)",
                Shown::Secret,
            )?
            .unwrap_or_default())
    }

    /// A non-empty string from the environment variable `var` if set, else from the first of
    /// `keys` present in the file (legacy placements after the main one).
    fn string(
        &self,
        var: Option<&'static str>,
        keys: Vec<(Opt<String>, &str)>,
        shown: Shown,
    ) -> Result<Option<(String, Origin)>, ConfigError> {
        if let Some(var) = var
            && let Some(v) = self.env(var)
        {
            return Ok(Some((v, Origin::Env(var))));
        }
        let mut found: Option<(String, Origin)> = None;
        for (raw, key) in keys {
            let Some(v) = self.value(raw, key, "a string", shown)? else {
                continue;
            };
            let origin = Origin::Key(key.to_owned());
            if v.trim().is_empty() {
                return Err(self.invalid(&origin, "a non-empty string", "\"\"".to_owned()));
            }
            match &found {
                None => found = Some((v.trim().to_owned(), origin)),
                Some((first, Origin::Key(first_key))) if first != v.trim() => {
                    tracing::warn!(
                        file = %self.file.display(),
                        "{}: `{key}` differs from `{first_key}`; using `{first_key}`",
                        self.file.display()
                    );
                }
                Some(_) => {}
            }
        }
        Ok(found)
    }

    /// A number from `var` if set, else from the file; at least `min`.
    fn number<T>(
        &self,
        var: Option<&'static str>,
        raw: Opt<T>,
        key: &str,
        expected: &str,
        min: T,
    ) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let env = var.and_then(|var| self.env(var).map(|v| (v, var)));
        let (value, origin) = match env {
            Some((text, var)) => {
                let origin = Origin::Env(var);
                let value = text
                    .parse::<T>()
                    .map_err(|_| self.invalid(&origin, expected, format!("{text:?}")))?;
                (value, origin)
            }
            None => match self.value(raw, key, expected, Shown::Plain)? {
                Some(v) => (v, Origin::Key(key.to_owned())),
                None => return Ok(None),
            },
        };
        if value < min {
            return Err(self.invalid(
                &origin,
                format!("{expected} of at least {min}"),
                value.to_string(),
            ));
        }
        Ok(Some(value))
    }

    fn flag(&self, raw: Opt<bool>, key: &str) -> Result<Option<bool>, ConfigError> {
        self.value(raw, key, "true or false", Shown::Plain)
    }

    fn url(
        &self,
        (text, origin): &(String, Origin),
        schemes: &[&str],
        expected: &str,
    ) -> Result<Url, ConfigError> {
        let bad = || self.invalid(origin, expected, format!("{:?}", masked_text(text)));
        let url = Url::parse(text).map_err(|_| bad())?;
        let hostless = matches!(url.scheme(), "file" | "unix" | "redis+unix");
        if !schemes.contains(&url.scheme()) || (!hostless && !url.has_host()) {
            return Err(bad());
        }
        Ok(url)
    }

    fn db(&self, (text, origin): &(String, Origin)) -> Result<DbUrl, ConfigError> {
        let expected = "a database URL (mysql://, postgres:// or sqlite://)";
        let bad = |reason: &str| {
            self.invalid(
                origin,
                expected,
                format!("{:?} ({reason})", masked_text(text)),
            )
        };
        let db = DbUrl::parse(text).map_err(|e| bad(e.reason))?;
        // A server URL must parse whole: a password with an unescaped `/` or `@` would
        // otherwise be taken for the host, and shown unmasked.
        if db.engine() != Engine::Sqlite && Url::parse(db.expose()).map_or(true, |u| !u.has_host())
        {
            return Err(bad(
                "not a valid URL; percent-encode special characters of the password",
            ));
        }
        Ok(db)
    }

    fn identifier(&self, (text, origin): (String, Origin)) -> Result<String, ConfigError> {
        let ok = (1..=38).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(text)
        } else {
            Err(self.invalid(&origin, TC_IDENTIFIER, format!("{text:?}")))
        }
    }

    fn patterns(
        &self,
        raw: Opt<Vec<String>>,
        key: &str,
    ) -> Result<Vec<BuilderPattern>, ConfigError> {
        let list = self
            .value(raw, key, "a list of regular expressions", Shown::Plain)?
            .unwrap_or_default();
        list.iter()
            .enumerate()
            .map(|(i, p)| {
                BuilderPattern::new(p).map_err(|e| {
                    self.invalid(
                        &Origin::Key(format!("{key}[{i}]")),
                        "a regular expression",
                        format!("{p:?} ({e})"),
                    )
                })
            })
            .collect()
    }
}

/// How a wrong value is shown in an error.
fn show_value(value: &Value, shown: Shown) -> String {
    match (value, shown) {
        (_, Shown::Secret) => kind(value).to_owned(),
        (Value::String(s), Shown::Url) => format!("{:?}", masked_text(s)),
        // A list or object holding a URL may hold its password.
        (Value::Array(_) | Value::Object(_), Shown::Url) => kind(value).to_owned(),
        _ => {
            let text = value.to_string();
            if text.chars().count() > 80 {
                format!("{}...", text.chars().take(77).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// A would-be URL for an error message: its password masked even when it is malformed (all
/// of what precedes the last `@` is hidden when [`mask_url`] cannot tell the password apart).
fn masked_text(text: &str) -> String {
    let masked = mask_url(text);
    if masked != text {
        return masked;
    }
    match text.rfind('@') {
        Some(at) => {
            let scheme = text
                .find("://")
                .filter(|&i| i < at)
                .map_or("", |i| &text[..i + 3]);
            format!("{scheme}***{}", &text[at..])
        }
        None => masked,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so `/` becomes `%2f`, as
/// AMQP URIs write the default vhost).
fn pct_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

const HINT_SELFSERVE: &str = " (also accepted as `tclistener.selfserve_url` or \
                              `reflector.selfserve_url`, or environment variable BBB_SELFSERVE_URL)";
const HINT_GROUP: &str = " (also accepted as `bblistener.tc_worker_group`, or environment \
                          variable BBB_WORKER_GROUP)";
const HINT_ID: &str =
    " (also accepted as `bblistener.tc_worker_id`, or environment variable BBB_WORKER_ID)";

fn resolve(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let tclistener = ctx.section(raw.tclistener, "tclistener")?;
    let bblistener = ctx.section(raw.bblistener, "bblistener")?;
    let reflector = ctx.section(raw.reflector, "reflector")?;

    let taskcluster = resolve_taskcluster(
        ctx,
        ctx.section(raw.taskcluster_queue_config, "taskcluster_queue_config")?,
    )?;

    let db = |var, raw, key, hint| -> Result<DbUrl, ConfigError> {
        let found = ctx
            .string(Some(var), vec![(raw, key)], Shown::Url)?
            .ok_or_else(|| ctx.missing(key, hint))?;
        ctx.db(&found)
    };
    let buildbot_scheduler_db = db(
        "BBB_SCHEDULER_DB",
        raw.buildbot_scheduler_db,
        "buildbot_scheduler_db",
        " (or environment variable BBB_SCHEDULER_DB)",
    )?;
    let bbb_db = db(
        "BBB_BBB_DB",
        raw.bbb_db,
        "bbb_db",
        " (or environment variable BBB_BBB_DB)",
    )?;

    let selfserve = ctx
        .string(
            Some("BBB_SELFSERVE_URL"),
            vec![
                (raw.selfserve_url, "selfserve_url"),
                (tclistener.selfserve_url, "tclistener.selfserve_url"),
                (reflector.selfserve_url, "reflector.selfserve_url"),
            ],
            Shown::Url,
        )?
        .ok_or_else(|| ctx.missing("selfserve_url", HINT_SELFSERVE))?;
    let selfserve_url = ctx.url(&selfserve, &["http", "https"], "an http(s) URL")?;

    let pulse = resolve_pulse(
        ctx,
        PulseKeys {
            url: raw.pulse_url,
            host: raw.pulse_host,
            port: raw.pulse_port,
            ssl: raw.pulse_ssl,
            vhost: raw.pulse_vhost,
            user: raw.pulse_user,
            password: raw.pulse_password,
            queue_basename: raw.pulse_queue_basename,
            management_url: raw.pulse_management_url,
            pulse_section: ctx.section(raw.pulse, "pulse")?,
        },
    )?;

    let redis = resolve_redis(ctx, raw.redis_url, ctx.section(raw.redis, "redis")?)?;

    let tc_worker_group = ctx
        .string(
            Some("BBB_WORKER_GROUP"),
            vec![
                (raw.tc_worker_group, "tc_worker_group"),
                (bblistener.tc_worker_group, "bblistener.tc_worker_group"),
                (reflector.tc_worker_group, "reflector.tc_worker_group"),
                (tclistener.tc_worker_group, "tclistener.tc_worker_group"),
            ],
            Shown::Plain,
        )?
        .ok_or_else(|| ctx.missing("tc_worker_group", HINT_GROUP))?;
    let tc_worker_group = ctx.identifier(tc_worker_group)?;
    let tc_worker_id = ctx
        .string(
            Some("BBB_WORKER_ID"),
            vec![
                (raw.tc_worker_id, "tc_worker_id"),
                (bblistener.tc_worker_id, "bblistener.tc_worker_id"),
                (reflector.tc_worker_id, "reflector.tc_worker_id"),
                (tclistener.tc_worker_id, "tclistener.tc_worker_id"),
            ],
            Shown::Plain,
        )?
        .ok_or_else(|| ctx.missing("tc_worker_id", HINT_ID))?;
    let tc_worker_id = ctx.identifier(tc_worker_id)?;

    let restricted_builders = ctx.patterns(raw.restricted_builders, "restricted_builders")?;
    let ignored_builders = ctx.patterns(raw.ignored_builders, "ignored_builders")?;
    let allowed_builders = if raw.allowed_builders.is_some() {
        ctx.patterns(raw.allowed_builders, "allowed_builders")?
    } else {
        ctx.patterns(tclistener.allowed_builders, "tclistener.allowed_builders")?
    };
    let allowed_builders_url = ctx
        .string(
            Some("BBB_ALLOWED_BUILDERS_URL"),
            vec![(raw.allowed_builders_url, "allowed_builders_url")],
            Shown::Url,
        )?
        .map(|found| ctx.url(&found, &["http", "https", "file"], "an http(s) or file URL"))
        .transpose()?;

    let artifact_storage = match ctx.string(
        None,
        vec![(raw.artifact_storage, "artifact_storage")],
        Shown::Plain,
    )? {
        None => ArtifactStorage::default(),
        Some((text, origin)) => match text.to_ascii_lowercase().as_str() {
            "object" => ArtifactStorage::Object,
            "s3" => ArtifactStorage::S3,
            _ => return Err(ctx.invalid(&origin, "`object` or `s3`", format!("{text:?}"))),
        },
    };

    let tclistener_config = TcListenerConfig {
        pulse_exchange_basename: ctx
            .string(
                None,
                vec![(
                    tclistener.pulse_exchange_basename,
                    "tclistener.pulse_exchange_basename",
                )],
                Shown::Plain,
            )?
            .map_or_else(|| DEFAULT_TC_EXCHANGE_BASENAME.to_owned(), |(s, _)| s),
        worker_type: ctx.identifier(
            ctx.string(
                None,
                vec![(tclistener.worker_type, "tclistener.worker_type")],
                Shown::Plain,
            )?
            .ok_or_else(|| ctx.missing("tclistener.worker_type", ""))?,
        )?,
        provisioner_id: ctx.identifier(
            ctx.string(
                None,
                vec![(tclistener.provisioner_id, "tclistener.provisioner_id")],
                Shown::Plain,
            )?
            .ok_or_else(|| ctx.missing("tclistener.provisioner_id", ""))?,
        )?,
    };
    let bblistener_config = BbListenerConfig {
        pulse_exchange: ctx
            .string(
                None,
                vec![(bblistener.pulse_exchange, "bblistener.pulse_exchange")],
                Shown::Plain,
            )?
            .ok_or_else(|| ctx.missing("bblistener.pulse_exchange", ""))?
            .0,
    };
    let reflector_config = ReflectorConfig {
        interval: ctx
            .number(
                None,
                reflector.interval,
                "reflector.interval",
                "a number of seconds",
                1,
            )?
            .unwrap_or(60),
        reclaim_margin: ctx
            .number(
                None,
                reflector.reclaim_margin,
                "reflector.reclaim_margin",
                "a number of seconds",
                0,
            )?
            .unwrap_or(600),
        page_size: ctx
            .number(
                None,
                reflector.page_size,
                "reflector.page_size",
                "a positive integer",
                1,
            )?
            .unwrap_or(500),
    };

    let worker = resolve_worker(ctx, ctx.section(raw.worker, "worker")?)?;
    let ingest = resolve_ingest(ctx, ctx.section(raw.ingest, "ingest")?)?;

    Ok(Config {
        taskcluster,
        buildbot_scheduler_db,
        bbb_db,
        selfserve_url,
        pulse,
        redis,
        tc_worker_group,
        tc_worker_id,
        restricted_builders,
        ignored_builders,
        allowed_builders_url,
        allowed_builders,
        artifact_storage,
        tclistener: tclistener_config,
        bblistener: bblistener_config,
        reflector: reflector_config,
        worker,
        ingest,
        sandbox: raw.sandbox.filter(|v| !v.is_null()),
    })
}

fn resolve_taskcluster(
    ctx: &Ctx<'_>,
    raw: RawTaskcluster,
) -> Result<TaskclusterConfig, ConfigError> {
    let root = ctx.string(
        Some("TASKCLUSTER_ROOT_URL"),
        vec![
            (raw.root_url, "taskcluster_queue_config.rootUrl"),
            (raw.base_url, "taskcluster_queue_config.baseUrl"),
        ],
        Shown::Url,
    )?;
    let root_url = match root {
        None => DEFAULT_ROOT_URL.to_owned(),
        Some(found) => {
            ctx.url(&found, &["http", "https"], "an http(s) URL")?;
            found.0.trim_end_matches('/').to_owned()
        }
    };

    let creds = ctx.section(raw.credentials, "taskcluster_queue_config.credentials")?;
    let client_id = ctx
        .string(
            Some("TASKCLUSTER_CLIENT_ID"),
            vec![(
                creds.client_id,
                "taskcluster_queue_config.credentials.clientId",
            )],
            Shown::Plain,
        )?
        .ok_or_else(|| {
            ctx.missing(
                "taskcluster_queue_config.credentials.clientId",
                " (or environment variable TASKCLUSTER_CLIENT_ID)",
            )
        })?
        .0;
    let access_token = ctx
        .string(
            Some("TASKCLUSTER_ACCESS_TOKEN"),
            vec![(
                creds.access_token,
                "taskcluster_queue_config.credentials.accessToken",
            )],
            Shown::Secret,
        )?
        .ok_or_else(|| {
            ctx.missing(
                "taskcluster_queue_config.credentials.accessToken",
                " (or environment variable TASKCLUSTER_ACCESS_TOKEN)",
            )
        })?
        .0;
    let certificate = match ctx.env("TASKCLUSTER_CERTIFICATE") {
        Some(cert) => Some(cert),
        None => match creds.certificate {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s),
            Some(v @ Value::Object(_)) => Some(v.to_string()),
            Some(v) => {
                return Err(ctx.invalid(
                    &Origin::Key("taskcluster_queue_config.credentials.certificate".to_owned()),
                    "a string or an object (the temporary credentials' certificate)",
                    kind(&v).to_owned(),
                ));
            }
        },
    };
    Ok(TaskclusterConfig {
        root_url,
        client_id,
        access_token: Secret::new(access_token),
        certificate: certificate.map(Secret::new),
    })
}

struct PulseKeys {
    url: Opt<String>,
    host: Opt<String>,
    port: Opt<u16>,
    ssl: Opt<bool>,
    vhost: Opt<String>,
    user: Opt<String>,
    password: Opt<String>,
    queue_basename: Opt<String>,
    /// `pulse_management_url`; `pulse.management_url` is in the section.
    management_url: Opt<String>,
    pulse_section: RawPulse,
}

fn resolve_pulse(ctx: &Ctx<'_>, keys: PulseKeys) -> Result<PulseConfig, ConfigError> {
    let PulseKeys {
        url,
        host,
        port,
        ssl,
        vhost,
        user,
        password,
        queue_basename,
        management_url,
        pulse_section,
    } = keys;
    let management_url = ctx
        .string(
            Some("BBB_PULSE_MANAGEMENT_URL"),
            vec![
                (pulse_section.management_url, "pulse.management_url"),
                (management_url, "pulse_management_url"),
            ],
            Shown::Url,
        )?
        .map(|found| {
            ctx.url(&found, &["http", "https"], "an http(s) URL")
                .map(|_| SecretUrl::new(found.0))
        })
        .transpose()?;
    let queue_basename = ctx
        .string(
            None,
            vec![(queue_basename, "pulse_queue_basename")],
            Shown::Plain,
        )?
        .ok_or_else(|| ctx.missing("pulse_queue_basename", ""))?
        .0;
    let amqp = ["amqp", "amqps"];
    let expected = "an amqp:// or amqps:// URL";
    if let Some(found) = ctx.string(Some("BBB_PULSE_URL"), vec![(url, "pulse_url")], Shown::Url)? {
        ctx.url(&found, &amqp, expected)?;
        return Ok(PulseConfig {
            url: SecretUrl::new(found.0),
            queue_basename,
            management_url,
        });
    }

    let hint = " (or `pulse_url`, or environment variable BBB_PULSE_URL)";
    let user = ctx
        .string(None, vec![(user, "pulse_user")], Shown::Plain)?
        .ok_or_else(|| ctx.missing("pulse_user", hint))?
        .0;
    let password = ctx
        .string(None, vec![(password, "pulse_password")], Shown::Secret)?
        .ok_or_else(|| ctx.missing("pulse_password", hint))?
        .0;
    let host = ctx
        .string(None, vec![(host, "pulse_host")], Shown::Plain)?
        .map_or_else(|| DEFAULT_PULSE_HOST.to_owned(), |(h, _)| h);
    let tls = ctx.flag(ssl, "pulse_ssl")?.unwrap_or(true);
    let port = ctx
        .number(None, port, "pulse_port", "a port number (1 to 65535)", 1)?
        .unwrap_or(if tls { 5671 } else { 5672 });
    let vhost = ctx
        .string(None, vec![(vhost, "pulse_vhost")], Shown::Plain)?
        .map_or_else(|| "/".to_owned(), |(v, _)| v);
    let url = format!(
        "{}://{}:{}@{}:{port}/{}",
        if tls { "amqps" } else { "amqp" },
        pct_encode(&user),
        pct_encode(&password),
        host,
        pct_encode(&vhost),
    );
    // Validates the host (the credentials are already encoded).
    if Url::parse(&url).map_or(true, |u| !u.has_host()) {
        return Err(ctx.invalid(
            &Origin::Key("pulse_host".to_owned()),
            "a host name",
            format!("{host:?}"),
        ));
    }
    Ok(PulseConfig {
        url: SecretUrl::new(url),
        queue_basename,
        management_url,
    })
}

fn resolve_redis(
    ctx: &Ctx<'_>,
    top_level_url: Opt<String>,
    section: RawRedis,
) -> Result<RedisConfig, ConfigError> {
    let url = ctx.string(
        Some("BBB_REDIS_URL"),
        vec![(top_level_url, "redis_url"), (section.url, "redis.url")],
        Shown::Url,
    )?;
    let url = match url {
        None => DEFAULT_REDIS_URL.to_owned(),
        Some(found) => {
            ctx.url(
                &found,
                &["redis", "rediss", "redis+unix", "unix", "valkey", "valkeys"],
                "a redis:// or rediss:// URL",
            )?;
            found.0
        }
    };
    let prefix = ctx
        .string(
            Some("BBB_REDIS_PREFIX"),
            vec![(section.prefix, "redis.prefix")],
            Shown::Plain,
        )?
        .map_or_else(|| "bbb".to_owned(), |(p, _)| p);
    let idempotency_ttl_secs = ctx
        .number(
            None,
            section.idempotency_ttl,
            "redis.idempotency_ttl",
            "a positive number of seconds",
            1,
        )?
        .unwrap_or(86_400);
    Ok(RedisConfig {
        url: SecretUrl::new(url),
        prefix,
        idempotency_ttl_secs,
    })
}

fn resolve_worker(ctx: &Ctx<'_>, raw: RawWorker) -> Result<WorkerConfig, ConfigError> {
    let ms = "a number of milliseconds";
    let positive_ms = "a positive number of milliseconds";
    let worker = WorkerConfig {
        concurrency: ctx
            .number(
                Some("BBB_CONCURRENCY"),
                raw.concurrency,
                "worker.concurrency",
                "a positive integer",
                1,
            )?
            .unwrap_or(16),
        max_attempts: ctx
            .number(
                None,
                raw.max_attempts,
                "worker.max_attempts",
                "a positive integer",
                1,
            )?
            .unwrap_or(10),
        retry_base_ms: ctx
            .number(None, raw.retry_base_ms, "worker.retry_base_ms", ms, 0)?
            .unwrap_or(1_000),
        retry_max_ms: ctx
            .number(None, raw.retry_max_ms, "worker.retry_max_ms", ms, 0)?
            .unwrap_or(300_000),
        lock_ttl_ms: ctx
            .number(None, raw.lock_ttl_ms, "worker.lock_ttl_ms", positive_ms, 1)?
            .unwrap_or(30_000),
        lock_busy_delay_ms: ctx
            .number(
                None,
                raw.lock_busy_delay_ms,
                "worker.lock_busy_delay_ms",
                ms,
                0,
            )?
            .unwrap_or(1_000),
        heartbeat_ms: ctx
            .number(
                None,
                raw.heartbeat_ms,
                "worker.heartbeat_ms",
                positive_ms,
                1,
            )?
            .unwrap_or(2_000),
        orphan_after_ms: ctx
            .number(
                None,
                raw.orphan_after_ms,
                "worker.orphan_after_ms",
                positive_ms,
                1,
            )?
            .unwrap_or(60_000),
        migrate_on_start: ctx
            .flag(raw.migrate_on_start, "worker.migrate_on_start")?
            .unwrap_or(true),
    };
    if worker.retry_max_ms < worker.retry_base_ms {
        return Err(ctx.invalid(
            &Origin::Key("worker.retry_max_ms".to_owned()),
            format!(
                "at least `worker.retry_base_ms` ({} ms)",
                worker.retry_base_ms
            ),
            worker.retry_max_ms.to_string(),
        ));
    }
    if worker.orphan_after_ms <= worker.heartbeat_ms {
        return Err(ctx.invalid(
            &Origin::Key("worker.orphan_after_ms".to_owned()),
            format!(
                "more than `worker.heartbeat_ms` ({} ms)",
                worker.heartbeat_ms
            ),
            worker.orphan_after_ms.to_string(),
        ));
    }
    Ok(worker)
}

fn resolve_ingest(ctx: &Ctx<'_>, raw: RawIngest) -> Result<IngestConfig, ConfigError> {
    Ok(IngestConfig {
        prefetch: ctx
            .number(
                None,
                raw.prefetch,
                "ingest.prefetch",
                "an integer from 1 to 65535",
                1,
            )?
            .unwrap_or(64),
        max_message_bytes: ctx
            .number(
                None,
                raw.max_message_bytes,
                "ingest.max_message_bytes",
                "a positive number of bytes",
                1,
            )?
            .unwrap_or(1_048_576),
        dead_letter_body_limit: ctx
            .number(
                None,
                raw.dead_letter_body_limit,
                "ingest.dead_letter_body_limit",
                "a number of bytes",
                0,
            )?
            .unwrap_or(65_536),
        declare_exchanges: ctx
            .flag(raw.declare_exchanges, "ingest.declare_exchanges")?
            .unwrap_or(false),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use serde_json::json;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn dev_example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dev.json")
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn load_with_env(path: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let text = std::fs::read_to_string(path).unwrap();
        Config::from_str(&text, path, &|name| env.get(name).cloned())
    }

    fn from_value(value: &Value, origin: &str) -> Result<Config, ConfigError> {
        Config::from_str(&value.to_string(), Path::new(origin), &no_env)
    }

    /// Removes the value at a dotted path; panics if it was not there.
    fn remove(value: &mut Value, path: &str) {
        let (parent, last) = match path.rsplit_once('.') {
            Some((parent, last)) => (parent.split('.').collect::<Vec<_>>(), last),
            None => (Vec::new(), path),
        };
        let mut node = value;
        for part in parent {
            node = node.get_mut(part).unwrap();
        }
        assert!(
            node.as_object_mut().unwrap().remove(last).is_some(),
            "{path} was not in the config"
        );
    }

    /// Sets the value at a dotted path, creating sections on the way.
    fn set(value: &mut Value, path: &str, new: Value) {
        let mut node = value;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            node = node
                .as_object_mut()
                .unwrap()
                .entry(*part)
                .or_insert_with(|| json!({}));
        }
        node.as_object_mut()
            .unwrap()
            .insert(parts[parts.len() - 1].to_owned(), new);
    }

    #[test]
    fn original_sample_shape_loads_with_defaults_for_the_new_keys() {
        let c = load_with_env(&fixture("original-sample.json"), &[]).unwrap();
        assert_eq!(c.taskcluster.root_url, DEFAULT_ROOT_URL);
        assert_eq!(c.taskcluster.client_id, "foo");
        assert_eq!(c.taskcluster.access_token.expose(), "foo");
        assert!(c.taskcluster.certificate.is_none());
        assert_eq!(c.buildbot_scheduler_db.engine(), Engine::MySql);
        assert_eq!(
            c.buildbot_scheduler_db.expose(),
            "mysql://foo:bar@blah/crap"
        );
        assert_eq!(c.bbb_db.expose(), "sqlite://bbb.db?mode=rwc");
        assert_eq!(
            c.selfserve_url.as_str(),
            "http://buildapi.pvt.build.mozilla.org/buildapi/self-serve"
        );
        assert_eq!(
            c.pulse.url.expose(),
            "amqps://foo:foo@pulse.mozilla.org:5671/%2f"
        );
        assert_eq!(c.pulse.queue_basename, "queue/foo");
        assert_eq!(c.redis.url.expose(), DEFAULT_REDIS_URL);
        assert_eq!(c.redis.prefix, "bbb");
        assert_eq!(c.redis.idempotency_ttl_secs, 86_400);
        assert_eq!(
            (c.tc_worker_group.as_str(), c.tc_worker_id.as_str()),
            ("buildbot-bridge", "buildbot-bridge")
        );
        assert_eq!(
            c.restricted_builders,
            vec![BuilderPattern::new("^release-.*$").unwrap()]
        );
        assert!(c.ignored_builders.is_empty());
        assert!(c.allowed_builders.is_empty());
        assert!(c.allowed_builders_url.is_none());
        assert_eq!(c.artifact_storage, ArtifactStorage::Object);
        assert_eq!(
            c.tclistener.pulse_exchange_basename,
            "exchange/taskcluster-queue/v1"
        );
        assert_eq!(c.tclistener.worker_type, "buildbot-bridge");
        assert_eq!(c.tclistener.provisioner_id, "buildbot-bridge");
        assert_eq!(c.bblistener.pulse_exchange, "exchange/build");
        assert_eq!(
            (
                c.reflector.interval,
                c.reflector.reclaim_margin,
                c.reflector.page_size
            ),
            (60, 600, 500)
        );
        let w = &c.worker;
        assert_eq!(
            (
                w.concurrency,
                w.max_attempts,
                w.retry_base_ms,
                w.retry_max_ms
            ),
            (16, 10, 1_000, 300_000)
        );
        assert_eq!(
            (
                w.lock_ttl_ms,
                w.lock_busy_delay_ms,
                w.heartbeat_ms,
                w.orphan_after_ms
            ),
            (30_000, 1_000, 2_000, 60_000)
        );
        assert!(w.migrate_on_start);
        let i = &c.ingest;
        assert_eq!(
            (
                i.prefetch,
                i.max_message_bytes,
                i.dead_letter_body_limit,
                i.declare_exchanges
            ),
            (64, 1_048_576, 65_536, false)
        );
        assert!(c.sandbox.is_none());
    }

    #[test]
    fn seed_001_config_with_legacy_placements_loads_with_the_right_values() {
        let c = load_with_env(&fixture("seed-001.json"), &[]).unwrap();
        assert_eq!(c.selfserve_url.as_str(), "http://foo.com/junk");
        assert_eq!(c.tc_worker_group, "buildbot-bridge-bhearsum");
        assert_eq!(c.tc_worker_id, "buildbot-bridge-bhearsum");
        assert_eq!(c.allowed_builders, vec![BuilderPattern::new(".*").unwrap()]);
        assert!(c.allowed_builders[0].matches("any-builder"));
        assert_eq!(c.buildbot_scheduler_db.engine(), Engine::Sqlite);
        assert_eq!(
            c.buildbot_scheduler_db.expose(),
            "sqlite:///builds/buildbot/bhearsum/build1/master/state.sqlite?mode=rwc"
        );
        assert_eq!(c.pulse.queue_basename, "queue/bhearsum-publisher");
        assert_eq!(
            c.pulse.url.masked(),
            "amqps://bhearsum-publisher:***@pulse.mozilla.org:5671/%2f"
        );
        assert_eq!(c.tclistener.worker_type, "buildbot-bridge-bhearsum");
        assert_eq!(c.tclistener.provisioner_id, "buildbot-bridge-bhearsum");
        assert_eq!(
            c.bblistener.pulse_exchange,
            "exchange/bhearsum-publisher/buildbot"
        );
        assert_eq!(c.reflector.interval, 60);
        assert!(c.restricted_builders.is_empty());
    }

    #[test]
    fn dev_example_points_at_local_services() {
        let c = load_with_env(&dev_example(), &[]).unwrap();
        assert_eq!(c.taskcluster.root_url, "http://127.0.0.1:8801");
        assert_eq!(c.taskcluster.client_id, "bbb-dev");
        assert_eq!(c.taskcluster.access_token.expose(), "dev-token");
        assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379/0");
        assert_eq!(
            c.pulse.url.expose(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        // The file's paths are the dev set-up's business: only the engine and name matter here.
        assert_eq!(c.bbb_db.engine(), Engine::Sqlite);
        assert!(
            c.bbb_db.expose().ends_with("bbb.db?mode=rwc"),
            "{}",
            c.bbb_db
        );
        assert_eq!(c.buildbot_scheduler_db.engine(), Engine::Sqlite);
        assert!(
            c.buildbot_scheduler_db
                .expose()
                .ends_with("scheduler.db?mode=rwc"),
            "{}",
            c.buildbot_scheduler_db
        );
        assert_eq!(c.selfserve_url.as_str(), "http://127.0.0.1:8802/self-serve");
        assert_eq!(
            c.allowed_builders_url.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:8803/allthethings.json")
        );
        assert_eq!(c.tclistener.provisioner_id, "buildbot-bridge");
        assert_eq!(c.tclistener.worker_type, "buildbot-bridge");
        assert_eq!(
            (c.tc_worker_group.as_str(), c.tc_worker_id.as_str()),
            ("bbb-dev", "bbb-dev")
        );
        assert!(c.ingest.declare_exchanges);
    }

    const REQUIRED_KEYS: &[&str] = &[
        "taskcluster_queue_config.credentials.clientId",
        "taskcluster_queue_config.credentials.accessToken",
        "buildbot_scheduler_db",
        "bbb_db",
        "selfserve_url",
        "pulse_user",
        "pulse_password",
        "pulse_queue_basename",
        "tc_worker_group",
        "tc_worker_id",
        "tclistener.worker_type",
        "tclistener.provisioner_id",
        "bblistener.pulse_exchange",
    ];

    #[test]
    fn each_missing_required_key_gives_its_own_error_naming_the_key_and_the_file() {
        let full = read_json(&fixture("original-sample.json"));
        let mut messages = BTreeSet::new();
        for key in REQUIRED_KEYS {
            let mut config = full.clone();
            remove(&mut config, key);
            let err = from_value(&config, "examples/x.json").unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(&err, ConfigError::Missing { key: k, .. } if k == key),
                "{key}: {message}"
            );
            assert!(
                message.starts_with(&format!("examples/x.json: missing required key `{key}`")),
                "{message}"
            );
            messages.insert(message);
        }
        assert_eq!(messages.len(), REQUIRED_KEYS.len());
        let mut config = full.clone();
        remove(&mut config, "bblistener.pulse_exchange");
        assert_eq!(
            from_value(&config, "examples/x.json")
                .unwrap_err()
                .to_string(),
            "examples/x.json: missing required key `bblistener.pulse_exchange`"
        );
    }

    #[test]
    fn credentials_from_the_environment_and_pulse_url_replace_the_file_keys() {
        let mut config = read_json(&fixture("original-sample.json"));
        remove(&mut config, "taskcluster_queue_config.credentials.clientId");
        remove(
            &mut config,
            "taskcluster_queue_config.credentials.accessToken",
        );
        remove(&mut config, "pulse_user");
        remove(&mut config, "pulse_password");
        set(
            &mut config,
            "pulse_url",
            json!("amqps://u:p@broker.example.com:5671/bbb"),
        );
        let env = |name: &str| match name {
            "TASKCLUSTER_CLIENT_ID" => Some("from-env".to_owned()),
            "TASKCLUSTER_ACCESS_TOKEN" => Some("env-token".to_owned()),
            _ => None,
        };
        let c = Config::from_str(&config.to_string(), Path::new("x.json"), &env).unwrap();
        assert_eq!(c.taskcluster.client_id, "from-env");
        assert_eq!(c.taskcluster.access_token.expose(), "env-token");
        assert_eq!(
            c.pulse.url.expose(),
            "amqps://u:p@broker.example.com:5671/bbb"
        );
    }

    #[test]
    fn malformed_values_name_their_key_and_what_was_expected() {
        let full = read_json(&fixture("original-sample.json"));
        let cases: &[(&str, Value, &str, &str)] = &[
            (
                "reflector.interval",
                json!("abc"),
                "reflector.interval",
                "expected a number of seconds, got \"abc\"",
            ),
            (
                "reflector.interval",
                json!(0),
                "reflector.interval",
                "expected a number of seconds of at least 1, got 0",
            ),
            (
                "reflector.reclaim_margin",
                json!(-5),
                "reflector.reclaim_margin",
                "expected a number of seconds, got -5",
            ),
            (
                "reflector.page_size",
                json!(1.5),
                "reflector.page_size",
                "expected a positive integer",
            ),
            ("reflector", json!(60), "reflector", "expected a section"),
            (
                "tclistener",
                json!("tclistener.log"),
                "tclistener",
                "expected a section",
            ),
            (
                "taskcluster_queue_config.credentials",
                json!("x"),
                "taskcluster_queue_config.credentials",
                "expected a section",
            ),
            (
                "taskcluster_queue_config.rootUrl",
                json!("not a url"),
                "taskcluster_queue_config.rootUrl",
                "expected an http(s) URL",
            ),
            (
                "taskcluster_queue_config.credentials.clientId",
                json!(7),
                "taskcluster_queue_config.credentials.clientId",
                "expected a string, got 7",
            ),
            (
                "selfserve_url",
                json!("not a url"),
                "selfserve_url",
                "expected an http(s) URL, got \"not a url\"",
            ),
            (
                "selfserve_url",
                json!(42),
                "selfserve_url",
                "expected a string, got 42",
            ),
            (
                "selfserve_url",
                json!(""),
                "selfserve_url",
                "expected a non-empty string",
            ),
            (
                "bbb_db",
                json!("oracle://h/d"),
                "bbb_db",
                "expected a database URL",
            ),
            (
                "buildbot_scheduler_db",
                json!(["mysql://h/d"]),
                "buildbot_scheduler_db",
                "expected a string",
            ),
            (
                "restricted_builders",
                json!(["ok", "(unclosed"]),
                "restricted_builders[1]",
                "expected a regular expression, got \"(unclosed\"",
            ),
            (
                "restricted_builders",
                json!("^release-.*$"),
                "restricted_builders",
                "expected a list of regular expressions",
            ),
            (
                "ignored_builders",
                json!([3]),
                "ignored_builders",
                "expected a list of regular expressions",
            ),
            (
                "tc_worker_group",
                json!("has spaces"),
                "tc_worker_group",
                "expected a Taskcluster identifier",
            ),
            (
                "tc_worker_id",
                json!(5),
                "tc_worker_id",
                "expected a string, got 5",
            ),
            (
                "tclistener.worker_type",
                json!("x".repeat(39)),
                "tclistener.worker_type",
                "expected a Taskcluster identifier",
            ),
            (
                "pulse_port",
                json!(70000),
                "pulse_port",
                "expected a port number",
            ),
            (
                "pulse_ssl",
                json!("yes"),
                "pulse_ssl",
                "expected true or false, got \"yes\"",
            ),
            (
                "pulse_url",
                json!("http://broker/"),
                "pulse_url",
                "expected an amqp:// or amqps:// URL",
            ),
            (
                "pulse_host",
                json!("bad host"),
                "pulse_host",
                "expected a host name",
            ),
            (
                "redis_url",
                json!("http://127.0.0.1:6379"),
                "redis_url",
                "expected a redis:// or rediss:// URL",
            ),
            (
                "redis.idempotency_ttl",
                json!(0),
                "redis.idempotency_ttl",
                "at least 1",
            ),
            (
                "allowed_builders_url",
                json!("ftp://h/x.json"),
                "allowed_builders_url",
                "expected an http(s) or file URL",
            ),
            (
                "artifact_storage",
                json!("ftp"),
                "artifact_storage",
                "expected `object` or `s3`, got \"ftp\"",
            ),
            (
                "worker.concurrency",
                json!(0),
                "worker.concurrency",
                "at least 1, got 0",
            ),
            (
                "worker.migrate_on_start",
                json!("yes"),
                "worker.migrate_on_start",
                "expected true or false",
            ),
            (
                "worker.retry_max_ms",
                json!(10),
                "worker.retry_max_ms",
                "expected at least `worker.retry_base_ms` (1000 ms), got 10",
            ),
            (
                "worker.orphan_after_ms",
                json!(2000),
                "worker.orphan_after_ms",
                "more than `worker.heartbeat_ms`",
            ),
            (
                "ingest.prefetch",
                json!(70000),
                "ingest.prefetch",
                "expected an integer from 1 to 65535",
            ),
            (
                "ingest.declare_exchanges",
                json!(1),
                "ingest.declare_exchanges",
                "expected true or false, got 1",
            ),
        ];
        for (path, value, key, expected) in cases {
            let mut config = full.clone();
            set(&mut config, path, value.clone());
            let err = from_value(&config, "conf/bbb.json").unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{path}: {message}"
            );
            assert!(
                message.starts_with(&format!("conf/bbb.json: `{key}`: ")),
                "{path}: {message}"
            );
            assert!(message.contains(expected), "{path}: {message}");
        }
    }

    #[test]
    fn a_bad_legacy_placement_is_named_by_its_own_key() {
        let mut config = read_json(&fixture("seed-001.json"));
        set(&mut config, "tclistener.selfserve_url", json!("junk"));
        let message = from_value(&config, "seed.json").unwrap_err().to_string();
        assert_eq!(
            message,
            "seed.json: `tclistener.selfserve_url`: expected an http(s) URL, got \"junk\""
        );
    }

    #[test]
    fn top_level_keys_win_over_legacy_placements() {
        let mut config = read_json(&fixture("seed-001.json"));
        set(
            &mut config,
            "selfserve_url",
            json!("https://buildapi.example.com/self-serve"),
        );
        set(&mut config, "tc_worker_group", json!("top-group"));
        set(&mut config, "reflector.tc_worker_id", json!("reflector-id"));
        set(
            &mut config,
            "tclistener.allowed_builders",
            json!(["ignored-because-top-level"]),
        );
        let c = from_value(&config, "seed.json").unwrap();
        assert_eq!(
            c.selfserve_url.as_str(),
            "https://buildapi.example.com/self-serve"
        );
        assert_eq!(c.tc_worker_group, "top-group");
        assert_eq!(c.tc_worker_id, "buildbot-bridge-bhearsum");
        assert_eq!(c.allowed_builders, vec![BuilderPattern::new(".*").unwrap()]);
    }

    #[test]
    fn allowed_builders_inside_tclistener_are_accepted() {
        let mut config = read_json(&fixture("seed-001.json"));
        remove(&mut config, "allowed_builders");
        set(
            &mut config,
            "tclistener.allowed_builders",
            json!([".*alder.*"]),
        );
        let c = from_value(&config, "seed.json").unwrap();
        assert!(matches_any(&c.allowed_builders, "b2g_alder_emulator"));
        assert!(!matches_any(&c.allowed_builders, "b2g_birch_emulator"));
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let c = load_with_env(
            &dev_example(),
            &[
                ("TASKCLUSTER_ROOT_URL", "https://tc.example.com/"),
                ("TASKCLUSTER_CLIENT_ID", "project/bbb"),
                ("TASKCLUSTER_ACCESS_TOKEN", "env-token"),
                ("TASKCLUSTER_CERTIFICATE", "{\"version\":1}"),
                ("BBB_REDIS_URL", "redis://redis.example.com:6380/2"),
                ("BBB_REDIS_PREFIX", "bbb-staging"),
                ("BBB_PULSE_URL", "amqps://bbb:pw@pulse.example.com:5671/%2f"),
                ("BBB_BBB_DB", "postgres://bbb:pw@db.example.com/bbb"),
                (
                    "BBB_SCHEDULER_DB",
                    "mysql+pymysql://bb:pw@db.example.com/scheduler",
                ),
                (
                    "BBB_SELFSERVE_URL",
                    "https://buildapi.example.com/self-serve",
                ),
                (
                    "BBB_ALLOWED_BUILDERS_URL",
                    "https://builders.example.com/allthethings.json",
                ),
                ("BBB_WORKER_GROUP", "env-group"),
                ("BBB_WORKER_ID", "env-id"),
                ("BBB_CONCURRENCY", "4"),
                // Empty counts as unset.
                ("BBB_UNUSED", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.taskcluster.root_url, "https://tc.example.com");
        assert_eq!(c.taskcluster.client_id, "project/bbb");
        assert_eq!(c.taskcluster.access_token.expose(), "env-token");
        assert_eq!(
            c.taskcluster
                .certificate
                .as_ref()
                .map(|s| s.expose().as_str()),
            Some("{\"version\":1}")
        );
        assert_eq!(c.redis.url.expose(), "redis://redis.example.com:6380/2");
        assert_eq!(c.redis.prefix, "bbb-staging");
        assert_eq!(
            c.pulse.url.expose(),
            "amqps://bbb:pw@pulse.example.com:5671/%2f"
        );
        assert_eq!(c.bbb_db.engine(), Engine::Postgres);
        assert_eq!(
            c.buildbot_scheduler_db.expose(),
            "mysql://bb:pw@db.example.com/scheduler"
        );
        assert_eq!(
            c.selfserve_url.as_str(),
            "https://buildapi.example.com/self-serve"
        );
        assert_eq!(
            c.allowed_builders_url.as_ref().map(Url::as_str),
            Some("https://builders.example.com/allthethings.json")
        );
        assert_eq!(
            (c.tc_worker_group.as_str(), c.tc_worker_id.as_str()),
            ("env-group", "env-id")
        );
        assert_eq!(c.worker.concurrency, 4);

        let c = load_with_env(
            &dev_example(),
            &[("BBB_CONCURRENCY", "  "), ("BBB_WORKER_ID", "")],
        )
        .unwrap();
        assert_eq!(
            (c.worker.concurrency, c.tc_worker_id.as_str()),
            (16, "bbb-dev")
        );
    }

    #[test]
    fn a_malformed_environment_variable_is_named_in_the_error() {
        let cases = [
            (
                "BBB_CONCURRENCY",
                "abc",
                "environment variable BBB_CONCURRENCY: expected a positive integer, got \"abc\"",
            ),
            (
                "BBB_CONCURRENCY",
                "0",
                "environment variable BBB_CONCURRENCY: expected a positive integer of at least 1, got 0",
            ),
            (
                "BBB_SELFSERVE_URL",
                "nope",
                "environment variable BBB_SELFSERVE_URL: expected an http(s) URL, got \"nope\"",
            ),
            (
                "BBB_REDIS_URL",
                "http://h",
                "environment variable BBB_REDIS_URL: expected a redis://",
            ),
            (
                "BBB_PULSE_URL",
                "redis://h",
                "environment variable BBB_PULSE_URL: expected an amqp://",
            ),
            (
                "BBB_BBB_DB",
                "oracle://h/d",
                "environment variable BBB_BBB_DB: expected a database URL",
            ),
            (
                "BBB_SCHEDULER_DB",
                "nodb",
                "environment variable BBB_SCHEDULER_DB: expected a database URL",
            ),
            (
                "BBB_WORKER_GROUP",
                "a b",
                "environment variable BBB_WORKER_GROUP: expected a Taskcluster identifier",
            ),
            (
                "BBB_ALLOWED_BUILDERS_URL",
                "x",
                "environment variable BBB_ALLOWED_BUILDERS_URL: expected",
            ),
            (
                "TASKCLUSTER_ROOT_URL",
                "tc",
                "environment variable TASKCLUSTER_ROOT_URL: expected an http(s) URL",
            ),
        ];
        for (var, value, expected) in cases {
            let err = load_with_env(&dev_example(), &[(var, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidEnv { var: v, .. } if *v == var),
                "{var}: {err}"
            );
            assert!(err.to_string().starts_with(expected), "{var}: {err}");
        }
    }

    const DEV_TOML: &str = r#"
buildbot_scheduler_db = "sqlite:///scheduler.db"
bbb_db = "sqlite:///bbb.db"
selfserve_url = "http://127.0.0.1:8802/self-serve"
allowed_builders_url = "http://127.0.0.1:8803/allthethings.json"
pulse_url = "amqp://guest:guest@127.0.0.1:5672/%2f"
pulse_queue_basename = "queue/bbb-dev"
redis_url = "redis://127.0.0.1:6379/0"
tc_worker_group = "bbb-dev"
tc_worker_id = "bbb-dev"
restricted_builders = ["^release-.*$"]
ignored_builders = []
artifact_storage = "object"

[taskcluster_queue_config]
rootUrl = "http://127.0.0.1:8801"

[taskcluster_queue_config.credentials]
clientId = "bbb-dev"
accessToken = "dev-token"

[tclistener]
pulse_exchange_basename = "exchange/taskcluster-queue/v1"
worker_type = "buildbot-bridge"
provisioner_id = "buildbot-bridge"

[bblistener]
pulse_exchange = "exchange/build/"

[reflector]
interval = 60

[ingest]
declare_exchanges = true

[sandbox]
queue_port = 8801
"#;

    #[test]
    fn toml_loads_too() {
        let c = Config::from_str(DEV_TOML, Path::new("dev.toml"), &no_env).unwrap();
        assert_eq!(c.taskcluster.root_url, "http://127.0.0.1:8801");
        assert_eq!(c.taskcluster.client_id, "bbb-dev");
        assert_eq!(c.taskcluster.access_token.expose(), "dev-token");
        assert_eq!(
            c.buildbot_scheduler_db.expose(),
            "sqlite://scheduler.db?mode=rwc"
        );
        assert_eq!(c.bbb_db.expose(), "sqlite://bbb.db?mode=rwc");
        assert_eq!(
            c.pulse.url.expose(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379/0");
        assert_eq!(
            c.restricted_builders,
            vec![BuilderPattern::new("^release-.*$").unwrap()]
        );
        assert_eq!(c.tclistener.provisioner_id, "buildbot-bridge");
        assert_eq!(c.bblistener.pulse_exchange, "exchange/build/");
        assert_eq!(c.reflector.interval, 60);
        assert!(c.ingest.declare_exchanges);
        assert_eq!(c.sandbox, Some(json!({"queue_port": 8801})));

        let bad = DEV_TOML.replace("interval = 60", "interval = \"abc\"");
        assert_eq!(
            Config::from_str(&bad, Path::new("dev.toml"), &no_env)
                .unwrap_err()
                .to_string(),
            "dev.toml: `reflector.interval`: expected a number of seconds, got \"abc\""
        );
    }

    #[test]
    fn syntax_errors_name_the_file_and_never_quote_the_input() {
        let err = Config::from_str(
            "[taskcluster_queue_config.credentials]\naccessToken = \"tok-S3CRET\nclientId = \"x\"\n",
            Path::new("bbb.toml"),
            &no_env,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("bbb.toml: not valid TOML: "),
            "{message}"
        );
        assert!(message.contains("line 2"), "{message}");
        assert!(
            !message.contains("S3CRET") && !format!("{err:?}").contains("S3CRET"),
            "{message}"
        );

        let err = Config::from_str(
            "{\"pulse_password\": \"pw-S3CRET\" \"x\": 1}",
            Path::new("bbb.json"),
            &no_env,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("bbb.json: not valid JSON: "),
            "{message}"
        );
        assert!(!message.contains("S3CRET"), "{message}");

        let err = Config::from_str("[1, 2]", Path::new("bbb.json"), &no_env).unwrap_err();
        assert!(
            err.to_string().contains("expected an object of settings"),
            "{err}"
        );
    }

    /// A full config whose every secret contains `S3CRET`.
    fn config_with_secrets() -> Value {
        json!({
            "taskcluster_queue_config": {
                "rootUrl": "https://tc.example.com",
                "credentials": {
                    "clientId": "project/bbb",
                    "accessToken": "tok-S3CRET",
                    "certificate": {"version": 1, "seed": "cert-S3CRET"}
                }
            },
            "buildbot_scheduler_db": "mysql://bb:sched-S3CRET@db.example.com/scheduler",
            "bbb_db": "postgresql://bbb:bbb-S3CRET@db.example.com/bbb",
            "selfserve_url": "https://bbb:ss-S3CRET@buildapi.example.com/self-serve",
            "allowed_builders_url": "https://bbb:ab-S3CRET@builders.example.com/allthethings.json",
            "pulse_user": "bbb",
            "pulse_password": "pulse-S3CRET",
            "pulse_queue_basename": "queue/bbb",
            "redis_url": "redis://:redis-S3CRET@redis.example.com:6379/0",
            "tc_worker_group": "bbb",
            "tc_worker_id": "bbb",
            "tclistener": {"worker_type": "buildbot-bridge", "provisioner_id": "buildbot-bridge"},
            "bblistener": {"pulse_exchange": "exchange/build/"},
            "sandbox": {"token": "sandbox-S3CRET"}
        })
    }

    #[test]
    fn debug_summary_and_errors_never_contain_a_secret() {
        let full = config_with_secrets();
        let c = from_value(&full, "bbb.json").unwrap();
        assert_eq!(c.taskcluster.access_token.expose(), "tok-S3CRET");
        assert!(
            c.taskcluster
                .certificate
                .as_ref()
                .unwrap()
                .expose()
                .contains("cert-S3CRET")
        );
        let shown = format!("{c:?}\n{c:#?}\n{}", c.summary());
        assert!(!shown.contains("S3CRET"), "{shown}");
        assert!(
            shown.contains("amqps://bbb:***@pulse.mozilla.org:5671/%2f"),
            "{shown}"
        );
        assert!(
            shown.contains("https://bbb:***@buildapi.example.com/self-serve"),
            "{shown}"
        );

        let broken: &[(&str, Value)] = &[
            (
                "taskcluster_queue_config.credentials.accessToken",
                json!(["tok-S3CRET"]),
            ),
            (
                "taskcluster_queue_config.credentials.accessToken",
                json!({"t": "tok-S3CRET"}),
            ),
            (
                "taskcluster_queue_config.credentials.certificate",
                json!(["cert-S3CRET"]),
            ),
            ("pulse_password", json!(["pulse-S3CRET"])),
            (
                "pulse_url",
                json!("http://bbb:url-S3CRET@pulse.example.com/"),
            ),
            ("pulse_url", json!("amqps://bbb:url-S3CRET@")),
            (
                "buildbot_scheduler_db",
                json!("oracle://bb:sched-S3CRET@db/x"),
            ),
            ("bbb_db", json!("mysql//bbb:bbb-S3CRET@db/bbb")),
            ("bbb_db", json!("mysql://bbb:bbb/S3CRET@db/bbb")),
            (
                "pulse_url",
                json!("amqps//bbb:url-S3CRET@pulse.example.com"),
            ),
            ("redis_url", json!("http://:redis-S3CRET@redis.example.com")),
            ("redis.url", json!(["redis://:redis-S3CRET@h"])),
            (
                "selfserve_url",
                json!("ftp://bbb:ss-S3CRET@buildapi.example.com/"),
            ),
            ("allowed_builders_url", json!("ftp://bbb:ab-S3CRET@h/")),
            (
                "taskcluster_queue_config.rootUrl",
                json!("ftp://u:root-S3CRET@h/"),
            ),
            (
                "taskcluster_queue_config.credentials",
                json!(["project/bbb", "tok-S3CRET"]),
            ),
        ];
        for (path, value) in broken {
            let mut config = full.clone();
            if *path == "redis.url" {
                remove(&mut config, "redis_url");
            }
            set(&mut config, path, value.clone());
            let err = from_value(&config, "bbb.json").unwrap_err();
            let shown = format!("{err}\n{err:?}");
            assert!(shown.contains(path), "{path}: {shown}");
            assert!(!shown.contains("S3CRET"), "{path}: {shown}");
        }

        let err = Config::from_str(&full.to_string(), Path::new("bbb.json"), &|name| {
            (name == "BBB_PULSE_URL").then(|| "http://u:env-S3CRET@h/".to_owned())
        })
        .unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(
            shown.contains("BBB_PULSE_URL") && !shown.contains("S3CRET"),
            "{shown}"
        );
    }

    #[test]
    fn builder_patterns_match_at_the_start_like_python_re_match() {
        let p = BuilderPattern::new("release-.*").unwrap();
        assert!(p.matches("release-mozilla-beta-firefox_tag_source"));
        assert!(!p.matches("pre-release-foo"));
        // Anchored at the start only, as re.match: a prefix match is a match.
        assert!(
            BuilderPattern::new("release")
                .unwrap()
                .matches("release-foo")
        );
        // An alternation is anchored as a whole.
        let alt = BuilderPattern::new("a|b").unwrap();
        assert!(alt.matches("bee") && !alt.matches("cab"));
        // The original deployments' negative look-ahead works.
        let not_project = BuilderPattern::new("^((?!(alder|birch|-date|jamun|maple)).)*$").unwrap();
        assert!(not_project.matches("release-mozilla-beta-linux"));
        assert!(!not_project.matches("b2g_alder_emulator"));
        assert!(!not_project.matches("mozilla-date-linux"));
        assert_eq!(format!("{p} {p:?}"), "release-.* \"release-.*\"");
        assert_eq!(p.as_str(), "release-.*");
        assert!(BuilderPattern::new("(unclosed").is_err());
    }

    #[test]
    fn pulse_url_is_built_from_its_parts_with_encoded_credentials() {
        let mut config = read_json(&fixture("original-sample.json"));
        set(&mut config, "pulse_user", json!("bbb user"));
        set(&mut config, "pulse_password", json!("p@ss:w/rd"));
        set(&mut config, "pulse_host", json!("rabbit.example.com"));
        set(&mut config, "pulse_ssl", json!(false));
        set(&mut config, "pulse_vhost", json!("bbb/dev"));
        let c = from_value(&config, "x.json").unwrap();
        assert_eq!(
            c.pulse.url.expose(),
            "amqp://bbb%20user:p%40ss%3aw%2frd@rabbit.example.com:5672/bbb%2fdev"
        );
        assert_eq!(
            c.pulse.url.masked(),
            "amqp://bbb%20user:***@rabbit.example.com:5672/bbb%2fdev"
        );
        let parsed = Url::parse(c.pulse.url.expose()).unwrap();
        assert_eq!(parsed.host_str(), Some("rabbit.example.com"));

        set(&mut config, "pulse_port", json!(15672));
        set(&mut config, "pulse_ssl", json!(true));
        let c = from_value(&config, "x.json").unwrap();
        assert!(
            c.pulse.url.expose().starts_with("amqps://"),
            "{}",
            c.pulse.url
        );
        assert!(
            c.pulse.url.expose().contains("rabbit.example.com:15672/"),
            "{}",
            c.pulse.url
        );
    }

    #[test]
    fn legacy_base_url_and_certificate_object_are_accepted() {
        let mut config = read_json(&fixture("original-sample.json"));
        set(
            &mut config,
            "taskcluster_queue_config.baseUrl",
            json!("https://tc.example.com/"),
        );
        set(
            &mut config,
            "taskcluster_queue_config.credentials.certificate",
            json!({"version": 1, "expiry": 1}),
        );
        set(&mut config, "artifact_storage", json!("s3"));
        let c = from_value(&config, "x.json").unwrap();
        assert_eq!(c.taskcluster.root_url, "https://tc.example.com");
        let cert: Value =
            serde_json::from_str(c.taskcluster.certificate.as_ref().unwrap().expose()).unwrap();
        assert_eq!(cert, json!({"version": 1, "expiry": 1}));
        assert_eq!(c.artifact_storage, ArtifactStorage::S3);
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let c = Config::load(&fixture("original-sample.json")).unwrap();
        assert_eq!(c.pulse.queue_basename, "queue/foo");
        let missing = fixture("no-such-config.json");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read", missing.display()))
        );
    }

    #[test]
    fn summary_names_every_section_without_secrets() {
        let c = load_with_env(&dev_example(), &[]).unwrap();
        let s = c.summary();
        for needle in [
            "http://127.0.0.1:8801",
            "bbb-dev",
            "amqp://guest:***@127.0.0.1:5672/%2f",
            "redis://127.0.0.1:6379/0",
            "scheduler.db?mode=rwc (sqlite)",
            "\"^release-.*$\"",
            "every 60 s, reclaim margin 600 s, page size 500",
            "concurrency 16",
            "prefetch 64",
        ] {
            assert!(s.contains(needle), "{needle} not in\n{s}");
        }
        assert!(!s.contains("dev-token"));
    }

    #[test]
    fn pulse_management_url_is_optional_overridable_and_masked() {
        let mut config = read_json(&dev_example());
        let c = from_value(&config, "x.json").unwrap();
        assert_eq!(c.pulse.management_url, None);
        assert_eq!(
            c.pulse.queue_name(PULSE_PURPOSES[0]),
            "queue/bbb-dev/task-pending"
        );

        set(
            &mut config,
            "pulse.management_url",
            json!("http://admin:mgmt-S3CRET@rabbit.example.com:15672/"),
        );
        let c = from_value(&config, "x.json").unwrap();
        assert_eq!(
            c.pulse.management_url.as_ref().map(SecretUrl::expose),
            Some("http://admin:mgmt-S3CRET@rabbit.example.com:15672/")
        );
        let shown = format!("{c:?}\n{}", c.summary());
        assert!(
            shown.contains("pulse management API:   http://admin:***@rabbit.example.com:15672/"),
            "{shown}"
        );
        assert!(!shown.contains("S3CRET"), "{shown}");

        let text = config.to_string();
        let c = Config::from_str(&text, Path::new("x.json"), &|name| {
            (name == "BBB_PULSE_MANAGEMENT_URL").then(|| "https://mq.example.com/rabbit".to_owned())
        })
        .unwrap();
        assert_eq!(
            c.pulse.management_url.as_ref().map(SecretUrl::expose),
            Some("https://mq.example.com/rabbit")
        );

        let mut flat = read_json(&dev_example());
        set(
            &mut flat,
            "pulse_management_url",
            json!("http://127.0.0.1:15673"),
        );
        let c = from_value(&flat, "x.json").unwrap();
        assert_eq!(
            c.pulse.management_url.as_ref().map(SecretUrl::expose),
            Some("http://127.0.0.1:15673")
        );

        set(
            &mut config,
            "pulse.management_url",
            json!("amqp://admin:mgmt-S3CRET@rabbit.example.com"),
        );
        let err = from_value(&config, "x.json").unwrap_err().to_string();
        assert!(
            err.starts_with("x.json: `pulse.management_url`: expected an http(s) URL"),
            "{err}"
        );
        assert!(!err.contains("S3CRET"), "{err}");
    }
}
