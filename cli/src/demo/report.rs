//! The demo's progress line and its closing summary.
use std::{collections::BTreeMap, io::Write, time::Duration};

use super::plan::Outcome;

/// How one task ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub outcome: Outcome,
    pub observed: String,
    /// First run scheduled -> last run resolved, per the queue's own timestamps.
    pub latency: Option<Duration>,
}

impl Ended {
    pub fn is_right(&self) -> bool {
        self.observed == self.outcome.expected()
    }
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2}s", d.as_secs_f64()))
}

/// One progress line: a bar when stderr is a terminal, a plain line otherwise.
pub fn progress(done: usize, total: usize, elapsed: Duration, tty: bool) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
    let line = format!(
        "[{bar}] {done}/{total} tasks resolved, {:.0}s, {rate:.1} tasks/s",
        elapsed.as_secs_f64()
    );
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(err, "\r{line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

/// The closing table. `unresolved` are tasks that never reached their final state.
pub fn summary(ended: &[Ended], unresolved: &BTreeMap<Outcome, usize>, wall: Duration) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<20} {:>6}  {:<40} {:>8} {:>6} {:>8} {:>8}\n",
        "outcome", "tasks", "expected Taskcluster resolution", "right", "wrong", "p50", "p95"
    );
    out.push_str(&header);
    out.push_str(&"-".repeat(header.len() - 1));
    out.push('\n');
    for outcome in Outcome::ALL {
        let mine: Vec<&Ended> = ended.iter().filter(|e| e.outcome == outcome).collect();
        let missing = unresolved.get(&outcome).copied().unwrap_or(0);
        if mine.is_empty() && missing == 0 {
            continue;
        }
        let right = mine.iter().filter(|e| e.is_right()).count();
        let wrong = mine.len() - right + missing;
        let mut lat: Vec<Duration> = mine.iter().filter_map(|e| e.latency).collect();
        lat.sort();
        out.push_str(&format!(
            "{:<20} {:>6}  {:<40} {:>8} {:>6} {:>8} {:>8}\n",
            outcome.name(),
            mine.len() + missing,
            outcome.expected(),
            right,
            wrong,
            secs(percentile(&lat, 50.0)),
            secs(percentile(&lat, 95.0)),
        ));
    }
    for e in ended.iter().filter(|e| !e.is_right()) {
        out.push_str(&format!(
            "  wrong: a {} task ended {:?}, expected {:?}\n",
            e.outcome.name(),
            e.observed,
            e.outcome.expected()
        ));
    }
    for (outcome, n) in unresolved {
        out.push_str(&format!(
            "  wrong: {n} {} task(s) never reached their final state\n",
            outcome.name()
        ));
    }
    let total = ended.len() + unresolved.values().sum::<usize>();
    let mut lat: Vec<Duration> = ended.iter().filter_map(|e| e.latency).collect();
    lat.sort();
    out.push_str(&format!(
        "\n{total} tasks in {:.1}s: {:.1} tasks/s; pending -> resolved latency p50 {} p95 {} p99 {}\n",
        wall.as_secs_f64(),
        ended.len() as f64 / wall.as_secs_f64().max(0.001),
        secs(percentile(&lat, 50.0)),
        secs(percentile(&lat, 95.0)),
        secs(percentile(&lat, 99.0)),
    ));
    // Without the cancel and deadline tasks, whose latency is the demo's own waiting.
    let mut flow: Vec<Duration> = ended
        .iter()
        .filter(|e| !matches!(e.outcome, Outcome::Cancel | Outcome::Deadline))
        .filter_map(|e| e.latency)
        .collect();
    flow.sort();
    out.push_str(&format!(
        "without cancel/deadline tasks: p50 {} p95 {} p99 {}\n",
        secs(percentile(&flow, 50.0)),
        secs(percentile(&flow, 95.0)),
        secs(percentile(&flow, 99.0)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 95.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_wrong_or_missing_task_is_named_in_the_summary() {
        let ended = vec![
            Ended {
                outcome: Outcome::Success,
                observed: "completed".into(),
                latency: Some(Duration::from_millis(800)),
            },
            Ended {
                outcome: Outcome::Failure,
                observed: "completed".into(),
                latency: None,
            },
        ];
        let mut unresolved = BTreeMap::new();
        unresolved.insert(Outcome::Cancel, 2);
        let s = summary(&ended, &unresolved, Duration::from_secs(2));
        assert!(s.contains("a failure task ended \"completed\", expected \"failed\""));
        assert!(s.contains("2 cancel task(s) never reached"));
        assert!(s.contains("4 tasks in 2.0s"));
    }
}
