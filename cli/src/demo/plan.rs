//! What the demo asks of the system: the outcome mix, the task definition of each outcome, and
//! what Taskcluster must say at the end for the task to count as right.
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// One kind of task the demo sends, and how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    Failure,
    RetryThenSuccess,
    Cancel,
    Deadline,
    Malformed,
}

/// The mix, in twentieths: 8 success, 3 failure, 3 retry-then-success, 2 cancel, 2 deadline,
/// 2 malformed payload.
const MIX: [Outcome; 20] = {
    use Outcome::*;
    [
        Success,
        Success,
        Success,
        Success,
        Success,
        Success,
        Success,
        Success,
        Failure,
        Failure,
        Failure,
        RetryThenSuccess,
        RetryThenSuccess,
        RetryThenSuccess,
        Cancel,
        Cancel,
        Deadline,
        Deadline,
        Malformed,
        Malformed,
    ]
};

/// How long a Build of a cancel or deadline task runs if nothing stops it: longer than any
/// demo, so only the cancellation or the deadline ends it.
const LONG_BUILD_MS: u64 = 600_000;

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::RetryThenSuccess,
        Outcome::Cancel,
        Outcome::Deadline,
        Outcome::Malformed,
    ];

    /// The outcome of the `i`-th task: the mix, interleaved (7 is prime to 20, so every
    /// twenty consecutive tasks hold the whole mix).
    pub fn for_index(i: usize) -> Outcome {
        MIX[(i * 7) % MIX.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::RetryThenSuccess => "retry-then-success",
            Outcome::Cancel => "cancel",
            Outcome::Deadline => "deadline",
            Outcome::Malformed => "malformed-payload",
        }
    }

    /// The Taskcluster resolution the bridge must produce, as `state[/reason]` per run.
    pub fn expected(self) -> &'static str {
        match self {
            Outcome::Success => "completed",
            Outcome::Failure => "failed",
            // RETRY: the run is reported malformed-payload and a new run added (BRIDGE.md).
            Outcome::RetryThenSuccess => "exception/malformed-payload, completed",
            Outcome::Cancel => "exception/canceled",
            Outcome::Deadline => "exception/deadline-exceeded",
            Outcome::Malformed => "exception/malformed-payload",
        }
    }

    /// Whether a status with these runs is this outcome's final state (a retried task passes
    /// through `exception` before its rerun is added).
    pub fn is_final(self, state: &str, runs: usize) -> bool {
        let resolved = matches!(state, "completed" | "failed" | "exception");
        match self {
            Outcome::RetryThenSuccess => resolved && runs >= 2,
            _ => resolved,
        }
    }
}

/// A task's resolution as `state[/reason]` per run, joined: comparable with
/// [`Outcome::expected`].
pub fn observed(status: &Value) -> String {
    let runs = status["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        return status["state"].as_str().unwrap_or("?").to_owned();
    }
    runs.iter()
        .map(|r| {
            let state = r["state"].as_str().unwrap_or("?");
            match r["reasonResolved"].as_str() {
                Some(reason) if state == "exception" => format!("{state}/{reason}"),
                _ => state.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the demo needs to write task definitions.
#[derive(Debug, Clone)]
pub struct TaskShape {
    pub provisioner_id: String,
    pub worker_type: String,
    pub builders: Vec<String>,
    /// How long a deadline task has before its deadline.
    pub deadline_after: Duration,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The definition of the `i`-th task of a run.
pub fn definition(shape: &TaskShape, i: usize, outcome: Outcome, now: DateTime<Utc>) -> Value {
    let builder = shape
        .builders
        .get(i % shape.builders.len().max(1))
        .cloned()
        .unwrap_or_else(|| "Linux x86-64 mozilla-inbound build".into());
    let short = 200 + (i as u64 * 37) % 600;
    let (results, duration_ms) = match outcome {
        Outcome::Success | Outcome::Malformed => ("SUCCESS", short),
        Outcome::Failure => ("FAILURE", short),
        Outcome::RetryThenSuccess => ("RETRY,SUCCESS", short),
        Outcome::Cancel | Outcome::Deadline => ("SUCCESS", LONG_BUILD_MS),
    };
    let revision = format!(
        "{:012x}",
        0xbd3d_049a_39ad_u64.wrapping_add(i as u64 * 7919)
    );
    let mut payload = json!({
        "buildername": builder,
        "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": revision},
        "properties": {
            "product": "firefox",
            "sandbox_results": results,
            "sandbox_duration_ms": duration_ms.to_string(),
        },
    });
    if outcome == Outcome::Malformed {
        // No builder to run it on: the payload schema requires `buildername`.
        if let Some(p) = payload.as_object_mut() {
            p.remove("buildername");
        }
    }
    let deadline = match outcome {
        Outcome::Deadline => now + shape.deadline_after,
        _ => now + Duration::hours(2),
    };
    json!({
        "provisionerId": shape.provisioner_id,
        "workerType": shape.worker_type,
        "schedulerId": "bbb-demo",
        "created": ts(now),
        "deadline": ts(deadline),
        "expires": ts(now + Duration::days(7)),
        "retries": 5,
        "payload": payload,
        "tags": {"demo-outcome": outcome.name()},
        "metadata": {
            "name": format!("bbb demo task {i} ({})", outcome.name()),
            "description": "a task sent by bbb demo",
            "owner": "release@example.com",
            "source": "https://example.com/bbb-demo",
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_twenty_tasks_hold_the_whole_mix() {
        let mut counts = std::collections::BTreeMap::new();
        for i in 20..40 {
            *counts.entry(Outcome::for_index(i)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Outcome::Success], 8);
        assert_eq!(counts[&Outcome::Failure], 3);
        assert_eq!(counts[&Outcome::RetryThenSuccess], 3);
        assert_eq!(counts[&Outcome::Cancel], 2);
        assert_eq!(counts[&Outcome::Deadline], 2);
        assert_eq!(counts[&Outcome::Malformed], 2);
    }

    #[test]
    fn observed_lists_each_run_with_its_exception_reason() {
        let status = json!({"state": "completed", "runs": [
            {"state": "exception", "reasonResolved": "malformed-payload"},
            {"state": "completed", "reasonResolved": "completed"},
        ]});
        assert_eq!(observed(&status), Outcome::RetryThenSuccess.expected());
        assert!(Outcome::RetryThenSuccess.is_final("completed", 2));
        assert!(!Outcome::RetryThenSuccess.is_final("exception", 1));
        assert!(Outcome::Cancel.is_final("exception", 1));
    }

    #[test]
    fn a_malformed_task_has_no_builder_and_a_deadline_task_a_near_deadline() {
        let shape = TaskShape {
            provisioner_id: "p".into(),
            worker_type: "w".into(),
            builders: vec!["b".into()],
            deadline_after: Duration::seconds(10),
        };
        let now = Utc::now();
        let m = definition(&shape, 0, Outcome::Malformed, now);
        assert!(m["payload"].get("buildername").is_none());
        let d = definition(&shape, 1, Outcome::Deadline, now);
        assert_eq!(d["deadline"], ts(now + Duration::seconds(10)));
        assert_eq!(d["payload"]["buildername"], "b");
    }
}
