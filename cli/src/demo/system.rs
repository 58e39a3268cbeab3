//! The demo's own system: a generated configuration, the emulators in this process, and the
//! three bridge processes as children.
use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use bbb_sandbox::system::Sandbox;
use bbb_shared::config::Config;
use serde_json::json;
use tokio::process::{Child, Command};

use super::DemoArgs;

/// The builders the demo's tasks run on: the sandbox's, minus the restricted ones (a task
/// for those needs scopes the demo's tasks do not carry).
pub fn demo_builders(config: &Config) -> Vec<String> {
    let settings = bbb_sandbox::settings::SandboxSettings::from_section(config.sandbox.as_ref())
        .unwrap_or_default();
    settings
        .builders
        .into_iter()
        .filter(|b| !config.restricted_builders.iter().any(|r| r.matches(b)))
        .collect()
}

/// One bridge process.
struct Process {
    binary: &'static str,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

pub struct Local {
    pub dir: PathBuf,
    pub config: Config,
    sandbox: Sandbox,
    processes: Vec<Process>,
}

/// A port free right now on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Starts Redis and RabbitMQ through `scripts/services` when they are not listening.
async fn ensure_services() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("redis", 6379), ("rabbitmq", 5672)]
        .into_iter()
        .filter(|(_, port)| !port_open(*port))
        .map(|(name, _)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let script = Path::new("scripts/services");
    anyhow::ensure!(
        script.exists(),
        "{} not running on 127.0.0.1 and no scripts/services here to start them: start them, or run bbb demo from the repository",
        missing.join(" and ")
    );
    eprintln!("bbb demo: starting {}", missing.join(" and "));
    let status = Command::new(script).args(&missing).status().await?;
    anyhow::ensure!(status.success(), "scripts/services failed: {status}");
    Ok(())
}

/// The demo's configuration: everything on 127.0.0.1, SQLite databases in `dir`, names of
/// its own on Redis and RabbitMQ.
fn demo_config(dir: &Path, id: &str) -> anyhow::Result<serde_json::Value> {
    let (tc, selfserve) = (free_port()?, free_port()?);
    let db = |name: &str| format!("sqlite:///{}", dir.join(name).display());
    Ok(json!({
        "taskcluster_queue_config": {
            "rootUrl": format!("http://127.0.0.1:{tc}"),
            "credentials": {"clientId": "bbb-demo", "accessToken": format!("demo-{id}")}
        },
        "buildbot_scheduler_db": db("scheduler.db"),
        "bbb_db": db("bbb.db"),
        "selfserve_url": format!("http://127.0.0.1:{selfserve}/self-serve"),
        "allowed_builders_url": format!("http://127.0.0.1:{selfserve}/allthethings.json"),
        "pulse_url": "amqp://guest:guest@127.0.0.1:5672/%2f",
        "pulse_queue_basename": format!("queue/bbb-demo-{id}"),
        "redis_url": "redis://127.0.0.1:6379/0",
        "tc_worker_group": "bbb-demo",
        "tc_worker_id": format!("bbb-demo-{id}"),
        "restricted_builders": ["^release-.*$"],
        "ignored_builders": [],
        "artifact_storage": "object",
        "tclistener": {
            "pulse_exchange_basename": format!("exchange/bbb-demo-{id}/taskcluster-queue/v1"),
            "worker_type": "buildbot-bridge",
            "provisioner_id": "buildbot-bridge"
        },
        "bblistener": {"pulse_exchange": format!("exchange/bbb-demo-{id}/build/")},
        "reflector": {"interval": 10, "reclaim_margin": 600, "page_size": 500},
        "redis": {"prefix": format!("bbb-demo-{id}"), "idempotency_ttl": 3600},
        "worker": {
            "concurrency": 16, "max_attempts": 10, "retry_base_ms": 500, "retry_max_ms": 10000,
            "lock_ttl_ms": 30000, "lock_busy_delay_ms": 200, "heartbeat_ms": 2000,
            "orphan_after_ms": 30000, "migrate_on_start": true
        },
        "ingest": {"prefetch": 64, "declare_exchanges": true},
        "sandbox": {"masters": 2, "master_poll_ms": 100, "build_duration_ms": 300}
    }))
}

/// Where the bridge binaries are: next to this one.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bbb binary")?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("the bbb binary has no directory")?;
    anyhow::ensure!(
        path.exists(),
        "{} not found: build every binary first (cargo build --bins)",
        path.display()
    );
    Ok(path)
}

impl Local {
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Local> {
        ensure_services().await?;
        let id = ulid::Ulid::generate().to_string().to_lowercase();
        let id = id[id.len() - 10..].to_owned();
        let dir = match &args.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("bbb-demo-{id}")),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let config_path = dir.join("config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&demo_config(&dir, &id)?)?,
        )?;
        let config = Config::load(&config_path)?;
        let sandbox = Sandbox::start(&config)
            .await
            .context("starting the emulators")?;
        let mut local = Local {
            dir,
            config,
            sandbox,
            processes: Vec::new(),
        };
        for name in ["bbb-ingest", "bbb-worker", "bbb-scheduler"] {
            match local.spawn(name, &config_path).await {
                Ok(p) => local.processes.push(p),
                Err(e) => {
                    local.stop(false).await;
                    return Err(e);
                }
            }
        }
        for i in 0..local.processes.len() {
            if let Err(e) = local.wait_ready(i).await {
                local.stop(false).await;
                return Err(e);
            }
        }
        Ok(local)
    }

    async fn spawn(&self, name: &'static str, config: &Path) -> anyhow::Result<Process> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary(name)?);
        if name == "bbb-scheduler" {
            // A short demo still shows a few samples on the status page and in the gauges.
            command.args(["--sample-every", "1"]);
        }
        let child = command
            .arg("--config")
            .arg(config)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .env_remove("BBB_CONFIG")
            .env_remove("BBB_METRICS_ADDR")
            .env(
                "RUST_LOG",
                std::env::var("BBB_DEMO_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            binary: name,
            child,
            metrics,
            log,
        })
    }

    /// Waits until the process answers `/readyz` with 200.
    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let p = &mut self.processes[i];
        let url = format!("http://{}/readyz", p.metrics);
        loop {
            if let Some(status) = p.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) while starting:\n{}",
                    p.binary,
                    tail(&p.log)
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} not ready after 60 s ({url}):\n{}",
                    p.binary,
                    tail(&p.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Scrapes every process's `/metrics`, prints the main figures, and writes the scrapes
    /// to `out` when given.
    pub async fn scrape_metrics(&self, out: Option<&Path>) -> anyhow::Result<()> {
        if let Some(out) = out {
            std::fs::create_dir_all(out)?;
        }
        let http = reqwest::Client::new();
        println!("metrics (scraped from each process's /metrics):");
        for p in &self.processes {
            let url = format!("http://{}/metrics", p.metrics);
            let text = http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("scraping {url}"))?
                .text()
                .await?;
            let families: std::collections::BTreeSet<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            println!(
                "  {:<14} {:>3} families, e.g. {}",
                p.binary,
                families.len(),
                families
                    .iter()
                    .filter(|f| f.starts_with("bbb_"))
                    .take(4)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(out) = out {
                std::fs::write(out.join(format!("{}.prom", p.binary)), &text)?;
            }
        }
        Ok(())
    }

    /// Stops the processes (SIGTERM, then SIGKILL after 20 s) and the emulators; removes the
    /// demo's Redis keys and Pulse queues and exchanges unless `keep`.
    pub async fn stop(mut self, keep: bool) {
        for p in &self.processes {
            if let Some(pid) = p.child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
        }
        for p in &mut self.processes {
            if tokio::time::timeout(Duration::from_secs(20), p.child.wait())
                .await
                .is_err()
            {
                eprintln!("bbb demo: {} did not stop in 20 s; killing it", p.binary);
                let _ = p.child.kill().await;
            }
        }
        self.sandbox.shutdown().await;
        if keep {
            eprintln!(
                "bbb demo: kept; look with: bbb queue --config {}",
                self.dir.join("config.json").display()
            );
            return;
        }
        if let Err(e) = cleanup(&self.config).await {
            eprintln!("bbb demo: cleaning up Redis keys and Pulse queues: {e:#}");
        }
    }
}

/// Deletes the demo's Redis keys and its Pulse queues and exchanges.
async fn cleanup(config: &Config) -> anyhow::Result<()> {
    let mut conn = bbb_shared::queue::connect(&config.redis.url).await?;
    let pattern = format!("{}:*", config.redis.prefix);
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let amqp = lapin::Connection::connect(
        config.pulse.url.expose(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = amqp.create_channel().await?;
    let base = &config.pulse.queue_basename;
    for purpose in ["task-pending", "task-exception", "buildbot"] {
        let name = format!("{base}/{purpose}");
        channel
            .queue_delete(name.as_str().into(), Default::default())
            .await?;
    }
    let tc = &config.tclistener.pulse_exchange_basename;
    let mut exchanges: Vec<String> = bbb_sandbox::tc::EXCHANGES
        .iter()
        .map(|e| format!("{tc}/{e}"))
        .collect();
    exchanges.push(config.bblistener.pulse_exchange.clone());
    for ex in exchanges {
        channel
            .exchange_delete(ex.as_str().into(), Default::default())
            .await?;
    }
    let _ = amqp.close(200, "bbb demo done".into()).await;
    Ok(())
}

/// The last lines of a log file, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
