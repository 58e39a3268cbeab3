//! `bbb queue`: the job queues, the bridge's Pulse queues and the live workers as text tables
//! (or JSON), then the plain-words diagnosis of [`inspect::diagnose`]. The numbers all come
//! from [`inspect::snapshot`]; this module only renders them.
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bbb_shared::{
    config::Config,
    inspect::{self, InspectSettings, Snapshot, format_duration},
};

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// Print the snapshot as one JSON object (with --watch, one per refresh) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Refresh every SECS seconds (2 when no value is given), clearing the screen, until
    /// Ctrl-C.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub watch: Option<u64>,
}

/// Prints one snapshot, or refreshes until Ctrl-C with `--watch`.
pub async fn run(config: &Config, args: &QueueArgs) -> anyhow::Result<()> {
    let conn = bbb_shared::queue::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
    let settings = InspectSettings::from_config(config);
    let Some(every) = args.watch else {
        let snapshot = inspect::snapshot(&conn, &settings).await?;
        println!("{}", output(&snapshot, args.json)?);
        return Ok(());
    };
    let every = Duration::from_secs(every);
    loop {
        let text = match inspect::snapshot(&conn, &settings).await {
            Ok(snapshot) => output(&snapshot, args.json)?,
            Err(e) => format!("reading the queues failed: {e:#}"),
        };
        let mut stdout = std::io::stdout().lock();
        if !args.json {
            // Clear the screen and go home.
            write!(stdout, "\x1b[2J\x1b[H")?;
        }
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
        drop(stdout);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn output(snapshot: &Snapshot, json: bool) -> anyhow::Result<String> {
    if json {
        Ok(serde_json::to_string_pretty(snapshot)?)
    } else {
        Ok(render(snapshot))
    }
}

/// The tables and the diagnosis, as `bbb queue` prints them.
pub fn render(s: &Snapshot) -> String {
    use Align::{Left as L, Right as R};
    let mut out = format!(
        "job queues (Redis prefix {:?}) at {}\n",
        s.prefix,
        s.taken_at.format("%Y-%m-%d %H:%M:%SZ")
    );
    let rows: Vec<Vec<String>> = s
        .queues
        .iter()
        .map(|q| {
            vec![
                q.kind.clone(),
                q.waiting.to_string(),
                q.delayed.to_string(),
                q.running.to_string(),
                q.oldest_waiting_secs
                    .map_or_else(|| "-".to_owned(), format_duration),
                q.done_last_hour.to_string(),
                q.failed_last_hour.to_string(),
                q.dead_lettered.to_string(),
                format!("{:.2}", q.jobs_per_sec),
                q.workers_alive.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("kind", L),
            ("waiting", R),
            ("delayed", R),
            ("running", R),
            ("oldest", R),
            ("done/1h", R),
            ("failed/1h", R),
            ("dead", R),
            ("jobs/s", R),
            ("workers", R),
        ],
        &rows,
    ));

    out.push_str("\npulse queues\n");
    if s.pulse.is_empty() {
        out.push_str("  (none read)\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .pulse
            .iter()
            .map(|p| {
                vec![
                    p.queue.clone(),
                    p.ready.to_string(),
                    p.unacked.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                    p.consumers.to_string(),
                    p.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("queue", L),
                ("ready", R),
                ("unacked", R),
                ("consumers", R),
                ("note", L),
            ],
            &rows,
        ));
    }
    if let Some(e) = &s.pulse_error {
        out.push_str(&format!("  pulse: {e}\n"));
    }

    out.push_str("\nlive workers\n");
    if s.workers.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .workers
            .iter()
            .map(|w| {
                vec![
                    w.name.clone(),
                    w.kind.clone(),
                    w.host.clone(),
                    w.pid.to_string(),
                    format!("{:.1}s ago", w.heartbeat_age_secs),
                    w.concurrency.to_string(),
                    w.in_flight.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("worker", L),
                ("kind", L),
                ("host", L),
                ("pid", R),
                ("heartbeat", R),
                ("concurrency", R),
                ("in flight", R),
            ],
            &rows,
        ));
    }

    out.push('\n');
    if s.diagnosis.is_empty() {
        out.push_str("all clear\n");
    } else {
        out.push_str("diagnosis:\n");
        for line in &s.diagnosis {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    out
}

/// How a table column lines up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A fixed-width text table, indented by two spaces, trailing blanks trimmed.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                text.push_str("  ");
            }
            match columns.get(i).map_or(Align::Left, |(_, a)| *a) {
                Align::Left => text.push_str(&format!("{cell:<w$}")),
                Align::Right => text.push_str(&format!("{cell:>w$}")),
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_shared::inspect::{PulseRow, QueueRow};

    #[test]
    fn tables_align_numbers_right_and_say_all_clear() {
        let s = Snapshot {
            taken_at: chrono::DateTime::from_timestamp(1_764_756_000, 0).unwrap_or_default(),
            prefix: "bbb".into(),
            queues: vec![QueueRow {
                kind: "build-finished".into(),
                waiting: 3,
                delayed: 12,
                running: 0,
                done_last_hour: 1200,
                failed_last_hour: 1,
                dead_lettered: 0,
                oldest_waiting_secs: Some(252),
                jobs_per_sec: 0.5,
                workers_alive: 2,
            }],
            pulse: vec![PulseRow {
                queue: "queue/bbb/task-pending".into(),
                ready: 0,
                unacked: None,
                consumers: 1,
                note: None,
            }],
            pulse_error: None,
            workers: vec![],
            dead_letters: 0,
            diagnosis: vec![],
        };
        let text = render(&s);
        assert!(text.starts_with("job queues (Redis prefix \"bbb\") at 2025-12-03 10:00:00Z\n"));
        assert!(text.contains(
            "  kind            waiting  delayed  running  oldest  done/1h  failed/1h  dead  jobs/s  workers\n  build-finished        3       12        0   4m12s     1200          1     0    0.50        2\n"
        ), "{text}");
        assert!(
            text.contains("  queue/bbb/task-pending      0        ?          1\n"),
            "{text}"
        );
        assert!(text.contains("live workers\n  (none)\n"), "{text}");
        assert!(text.ends_with("\nall clear\n"), "{text}");
    }
}
