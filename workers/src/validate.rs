//! Is a task for us, and may it run? The checks of a task-pending, in the order BRIDGE.md
//! gives: the payload schema, the restricted builders' scopes, the allowed builders.
//!
//! The payload schema is `shared/schemas/payload.json` (the original bridge's, draft-04) and is
//! checked with a JSON-schema validator, not by hand.
use std::sync::LazyLock;

use bbb_shared::config::{BuilderPattern, matches_any};
use serde_json::Value;

static PAYLOAD_SCHEMA: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(include_str!("../../shared/schemas/payload.json"))
        .map_err(|e| format!("payload schema is not JSON: {e}"))?;
    jsonschema::draft4::new(&schema).map_err(|e| format!("payload schema is invalid: {e}"))
});

/// Why a task is malformed (reported as `malformed-payload`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks the payload against the schema; every violation is listed.
pub fn check_payload(payload: &Value) -> Result<(), Invalid> {
    let validator = PAYLOAD_SCHEMA.as_ref().map_err(|e| Invalid(e.clone()))?;
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| {
            let path = e.instance_path.to_string();
            if path.is_empty() {
                format!("payload: {e}")
            } else {
                format!("payload{path}: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(errors.join("; ")))
    }
}

/// Taskcluster scope satisfaction: equal, or the owned scope ends in `*` and the required one
/// starts with the rest.
pub fn scope_satisfies(owned: &str, required: &str) -> bool {
    owned == required
        || owned
            .strip_suffix('*')
            .is_some_and(|prefix| required.starts_with(prefix))
}

/// A restricted builder needs one of the two bridge scopes for it among the task's scopes.
pub fn check_restricted(
    restricted: &[BuilderPattern],
    buildername: &str,
    task_scopes: &[String],
) -> Result<(), Invalid> {
    if !matches_any(restricted, buildername) {
        return Ok(());
    }
    let wanted = [
        format!("buildbot-bridge:builder-name:{buildername}"),
        format!("project:releng:buildbot-bridge:builder-name:{buildername}"),
    ];
    let ok = task_scopes
        .iter()
        .any(|owned| wanted.iter().any(|w| scope_satisfies(owned, w)));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "builder {buildername:?} is restricted: the task needs scope {} or {}",
            wanted[0], wanted[1]
        )))
    }
}

/// The task's `scopes`, as strings.
pub fn task_scopes(task: &Value) -> Vec<String> {
    task.get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_good_payload_passes_and_each_violation_is_named() {
        let good = json!({"buildername": "b", "sourcestamp": {"branch": "integration/mozilla-inbound"},
                          "properties": {"product": "firefox", "anything": 1}});
        assert_eq!(check_payload(&good), Ok(()));
        let cases = [
            (json!({"buildername": "b", "properties": {}}), "product"),
            (
                json!({"buildername": "b", "properties": {"product": "f"}, "extra": 1}),
                "extra",
            ),
            (
                json!({"buildername": "", "properties": {"product": "f"}}),
                "buildername",
            ),
            (json!({"properties": {"product": "f"}}), "buildername"),
            (
                json!({"buildername": "b", "properties": {"product": "f"}, "sourcestamp": {"branch": "x"}}),
                "sourcestamp",
            ),
        ];
        for (payload, word) in cases {
            let err = check_payload(&payload).unwrap_err();
            assert!(err.0.contains(word), "{payload}: {err}");
        }
    }

    #[test]
    fn scopes_match_exactly_or_by_a_trailing_star() {
        assert!(scope_satisfies("a:b", "a:b"));
        assert!(scope_satisfies("a:*", "a:b:c"));
        assert!(scope_satisfies("*", "anything"));
        assert!(!scope_satisfies("a:b", "a:bc"));
        assert!(!scope_satisfies("a:b*c", "a:bxc"));
    }

    #[test]
    fn a_restricted_builder_needs_one_of_the_bridge_scopes() {
        let restricted = vec![BuilderPattern::new("release-.*").unwrap()];
        let name = "release-firefox-signing";
        assert!(check_restricted(&restricted, name, &[]).is_err());
        assert!(check_restricted(&restricted, name, &["queue:foo".into()]).is_err());
        for scope in [
            "buildbot-bridge:builder-name:release-firefox-signing",
            "buildbot-bridge:builder-name:release-*",
            "project:releng:buildbot-bridge:builder-name:release-firefox-signing",
            "project:releng:buildbot-bridge:*",
        ] {
            assert_eq!(
                check_restricted(&restricted, name, &[scope.to_owned()]),
                Ok(()),
                "{scope}"
            );
        }
        assert_eq!(check_restricted(&restricted, "linux-build", &[]), Ok(()));
    }
}
