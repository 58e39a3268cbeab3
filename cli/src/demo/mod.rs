//! `bbb demo`: the whole system working, in one command.
//!
//! Locally (the default) it starts the emulators in this process and `bbb-ingest`,
//! `bbb-worker` and `bbb-scheduler` as child processes on a generated configuration (SQLite
//! for both databases, its own Redis prefix, Pulse queues and exchanges), sends the tasks,
//! follows them to their end through the queue emulator, prints the summary, scrapes every
//! process's `/metrics`, stops everything and removes its Redis keys and Pulse queues. With
//! `--external` it only sends and follows the tasks, against the system `--config` describes
//! (the compose `sandbox` profile).
mod plan;
mod report;
mod system;

use std::{
    collections::{BTreeMap, HashMap},
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use bbb_shared::{config::Config, tc::TcQueue};
use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use plan::{Outcome, TaskShape};
use report::Ended;
use serde_json::Value;

/// Flags of `bbb demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many tasks to send.
    #[arg(long, default_value_t = 200)]
    pub tasks: usize,

    /// Send the tasks to an already running system (emulators and bridge) described by
    /// --config, instead of starting one.
    #[arg(long)]
    pub external: bool,

    /// Give up on tasks not at their final state after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,

    /// Seconds a deadline task has before its deadline.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub deadline_secs: i64,

    /// Where the generated configuration, the databases and the processes' logs go (default:
    /// a new directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Write each process's last `/metrics` scrape to DIR/<binary>.prom.
    #[arg(long, value_name = "DIR")]
    pub metrics_out: Option<PathBuf>,

    /// Leave the Redis keys and Pulse queues in place at the end (to look at them with
    /// `bbb queue --config <dir>/config.json`).
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo; an error when any task ended wrong.
pub async fn run(args: &DemoArgs, config_path: Option<&Path>) -> anyhow::Result<()> {
    if args.external {
        let path = config_path.context("--external needs --config (or BBB_CONFIG)")?;
        let config = Config::load(path)?;
        return workload(&config, args).await.map(drop);
    }
    let local = system::Local::start(args).await?;
    eprintln!(
        "bbb demo: emulators and bbb-ingest, bbb-worker, bbb-scheduler running; config and logs in {}",
        local.dir.display()
    );
    let outcome = workload(&local.config, args).await;
    let scraped = local.scrape_metrics(args.metrics_out.as_deref()).await;
    local.stop(args.keep).await;
    let right = outcome?;
    scraped?;
    anyhow::ensure!(right, "some tasks ended wrong (see the summary above)");
    Ok(())
}

/// A task the demo sent.
struct Sent {
    task_id: String,
    outcome: Outcome,
    cancelled: bool,
}

/// Sends the tasks, follows them to their end, prints the summary. `Ok(true)` when every
/// task ended right.
async fn workload(config: &Config, args: &DemoArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let root = config.taskcluster.root_url.trim_end_matches('/').to_owned();
    let tc = TcQueue::from_config(config)?;
    let shape = TaskShape {
        provisioner_id: config.tclistener.provisioner_id.clone(),
        worker_type: config.tclistener.worker_type.clone(),
        builders: system::demo_builders(config),
        deadline_after: chrono::Duration::seconds(args.deadline_secs.max(1)),
    };
    let started = Instant::now();
    let mut sent: Vec<Sent> = (0..args.tasks)
        .map(|i| Sent {
            task_id: bbb_sandbox::tc::slugid(),
            outcome: Outcome::for_index(i),
            cancelled: false,
        })
        .collect();
    let now = Utc::now();
    let created: Vec<anyhow::Result<()>> = stream::iter(sent.iter().enumerate())
        .map(|(i, s)| {
            let body = plan::definition(&shape, i, s.outcome, now);
            let url = format!("{root}/_sandbox/tasks/{}", s.task_id);
            let http = http.clone();
            async move {
                let resp = http
                    .put(&url)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("creating a task at {url}"))?;
                let status = resp.status();
                anyhow::ensure!(
                    status.is_success(),
                    "creating a task at {url}: {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
                Ok(())
            }
        })
        .buffered(16)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "bbb demo: {} tasks created in {:.1}s",
        args.tasks,
        started.elapsed().as_secs_f64()
    );

    let tty = std::io::stderr().is_terminal();
    let limit = Duration::from_secs(args.timeout);
    let mut ended: HashMap<String, Ended> = HashMap::new();
    let mut last_print = Instant::now();
    loop {
        let open: Vec<usize> = (0..sent.len())
            .filter(|&i| !ended.contains_key(&sent[i].task_id))
            .collect();
        if open.is_empty() || started.elapsed() > limit {
            break;
        }
        let statuses: Vec<(usize, Option<Value>)> = stream::iter(open)
            .map(|i| {
                let url = format!("{root}/_sandbox/tasks/{}/status", sent[i].task_id);
                let http = http.clone();
                async move {
                    let status = async {
                        let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                        v.get("status").cloned()
                    }
                    .await;
                    (i, status)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (i, status) in statuses {
            let Some(status) = status else { continue };
            let s = &mut sent[i];
            let state = status["state"].as_str().unwrap_or("");
            let runs = status["runs"].as_array().map_or(0, Vec::len);
            if s.outcome == Outcome::Cancel && state == "running" && !s.cancelled {
                match tc.cancel(&s.task_id).await {
                    Ok(_) => s.cancelled = true,
                    Err(e) => eprintln!("\nbbb demo: cancelling task {}: {e}", s.task_id),
                }
            }
            if s.outcome.is_final(state, runs) {
                ended.insert(
                    s.task_id.clone(),
                    Ended {
                        outcome: s.outcome,
                        observed: plan::observed(&status),
                        latency: latency(&status),
                    },
                );
            }
        }
        if tty || last_print.elapsed() > Duration::from_secs(5) {
            report::progress(ended.len(), sent.len(), started.elapsed(), tty);
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = started.elapsed();
    report::progress(ended.len(), sent.len(), wall, tty);
    if tty {
        eprintln!();
    }
    let mut unresolved: BTreeMap<Outcome, usize> = BTreeMap::new();
    for s in sent.iter().filter(|s| !ended.contains_key(&s.task_id)) {
        *unresolved.entry(s.outcome).or_default() += 1;
    }
    let ended: Vec<Ended> = sent
        .iter()
        .filter_map(|s| ended.get(&s.task_id).cloned())
        .collect();
    println!("\n{}", report::summary(&ended, &unresolved, wall));
    let right = unresolved.is_empty() && ended.iter().all(Ended::is_right);
    println!(
        "{}",
        if right {
            "every task ended as expected"
        } else {
            "SOME TASKS ENDED WRONG"
        }
    );
    Ok(right)
}

/// First run scheduled -> last run resolved, from the queue's own timestamps.
fn latency(status: &Value) -> Option<Duration> {
    let runs = status["runs"].as_array()?;
    let time = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let scheduled = time(&runs.first()?["scheduled"])?;
    let resolved = time(&runs.last()?["resolved"])?;
    (resolved - scheduled).to_std().ok()
}
