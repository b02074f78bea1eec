//! Serde types for the parts of Marathon's v2 API we read (`/v2/apps`, `/v2/tasks`). Lenient:
//! unknown fields are ignored and JSON `null` means absent (marathon-lb strips nulls on receipt).
//! No I/O, no label semantics: that is `model`'s job.
//!
//! Shapes from Marathon 1.4 to 1.10 are covered: host networking with `portDefinitions` (or the
//! legacy `ports`), Docker bridge/user networks in the 1.4 form (`container.docker.network` +
//! `container.docker.portMappings`) and the 1.5+ form (`networks` + `container.portMappings`),
//! and legacy IP-per-task (`ipAddress.discovery.ports`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Body of `GET /v2/apps`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppList {
    #[serde(default, deserialize_with = "present_elements")]
    pub apps: Vec<App>,
}

/// Body of `GET /v2/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskList {
    #[serde(default, deserialize_with = "present_elements")]
    pub tasks: Vec<Task>,
}

/// One app of `/v2/apps` (without embedded tasks: they come from `/v2/tasks`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Label values as text; `null` values are dropped, other non-string values keep their JSON
    /// text (Marathon only ever sends strings).
    #[serde(default, deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    /// Configured instance count; used by blue/green draining.
    #[serde(default)]
    pub instances: Option<i64>,
    #[serde(default, deserialize_with = "present_elements")]
    pub health_checks: Vec<HealthCheck>,
    /// `Some` whenever the field is present, even empty: then it wins over `ports`.
    #[serde(default, deserialize_with = "optional_present_elements")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Legacy (pre-1.0) service ports; `null` elements are kept as "undefined service port".
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<Option<i64>>,
    /// Legacy IP-per-task (Marathon ≤ 1.4).
    #[serde(default)]
    pub ip_address: Option<AppIpAddress>,
    #[serde(default)]
    pub container: Option<Container>,
    /// Marathon 1.5+ networking.
    #[serde(default, deserialize_with = "present_elements")]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub version_info: Option<VersionInfo>,
    /// When this definition was written (ISO-8601); names the version an app is held at.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(default)]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub docker: Option<Docker>,
    /// Marathon 1.5+ place of the port mappings.
    #[serde(default, deserialize_with = "present_elements")]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    #[serde(default)]
    pub image: Option<String>,
    /// Marathon ≤ 1.4: `HOST`, `BRIDGE` or `USER`.
    #[serde(default)]
    pub network: Option<String>,
    /// Marathon ≤ 1.4 place of the port mappings.
    #[serde(default, deserialize_with = "present_elements")]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `container`, `container/bridge` or `host`; absent means `container`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The legacy `ipAddress` object of an app. marathon-lb treats an app whose `ipAddress` has any
/// (non-null) field as IP-per-task, so the fields it does not read are kept in `other`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppIpAddress {
    #[serde(default)]
    pub discovery: Option<Discovery>,
    #[serde(default)]
    pub network_name: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl AppIpAddress {
    /// Whether the object has any field once nulls are stripped (Python truthiness of a dict).
    pub fn is_empty(&self) -> bool {
        self.discovery.is_none()
            && self.network_name.is_none()
            && self.other.values().all(serde_json::Value::is_null)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    #[serde(default, deserialize_with = "present_elements")]
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryPort {
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// ISO-8601 timestamp; compared during blue/green merges.
    #[serde(default)]
    pub last_scaling_at: Option<String>,
    #[serde(default)]
    pub last_config_change_at: Option<String>,
}

/// One task of `/v2/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub app_id: String,
    /// The agent; empty when Marathon has not placed the task (such tasks are ignored).
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
    /// Mesos state such as `TASK_RUNNING`; absent in old Marathons (treated as running).
    #[serde(default)]
    pub state: Option<String>,
    /// Host ports (or, for IP-per-task, whatever Marathon reports) in port-index order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<Option<i64>>,
    /// `None` when absent: the task has not been checked yet (unlike an empty list, which
    /// counts in blue/green merges).
    #[serde(default, deserialize_with = "optional_present_elements")]
    pub health_check_results: Option<Vec<HealthCheckResult>>,
    #[serde(default, deserialize_with = "present_elements")]
    pub ip_addresses: Vec<TaskIpAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// Absent is read as not alive.
    #[serde(default)]
    pub alive: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIpAddress {
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One of an app's `healthChecks`. The fields `render` formats into check options are kept
/// optional: Marathon always fills them, a hand-written snapshot may not.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`; empty when
    /// absent.
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// An explicit port; when non-zero the check applies to every service port of the app.
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub port_index: Option<i64>,
    /// HTTP path; marathon-lb defaults it to `/`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub interval_seconds: Option<i64>,
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub max_consecutive_failures: Option<i64>,
    #[serde(default)]
    pub delay_seconds: Option<i64>,
    #[serde(default)]
    pub ignore_http1xx: Option<bool>,
    /// `COMMAND` checks: `{"value": "..."}`.
    #[serde(default)]
    pub command: Option<serde_json::Value>,
}

/// `null` reads as the type's default (an empty string or list).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A list of objects: `null` reads as empty and `null` elements are dropped.
fn present_elements<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(optional_present_elements(deserializer)?.unwrap_or_default())
}

/// Like [`present_elements`], but keeps "absent" apart from "empty".
fn optional_present_elements<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let elements = Option::<Vec<Option<T>>>::deserialize(deserializer)?;
    Ok(elements.map(|elements| elements.into_iter().flatten().collect()))
}

/// Labels as strings: `null` values are absent, other scalars keep their JSON text.
fn labels<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(deserializer)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some((key, text)),
            other => Some((key, other.to_string())),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_read_as_absent() {
        let apps: AppList = serde_json::from_str(
            r#"{"apps": [{"id": "/a", "labels": {"X": null, "Y": "1", "Z": 2},
                "container": null, "ipAddress": null, "portDefinitions": null,
                "healthChecks": null, "networks": null, "ports": [null, 80]}, null]}"#,
        )
        .unwrap();
        assert_eq!(apps.apps.len(), 1);
        let app = &apps.apps[0];
        assert_eq!(app.labels.get("X"), None);
        assert_eq!(app.labels["Y"], "1");
        assert_eq!(app.labels["Z"], "2");
        assert!(app.container.is_none() && app.ip_address.is_none());
        assert!(app.port_definitions.is_none());
        assert_eq!(app.ports, vec![None, Some(80)]);
    }

    #[test]
    fn ip_address_truthiness_follows_stripped_dict() {
        let parse = |text: &str| {
            serde_json::from_str::<AppIpAddress>(text)
                .unwrap()
                .is_empty()
        };
        assert!(parse(r#"{}"#));
        assert!(parse(r#"{"networkName": null, "groups": null}"#));
        assert!(!parse(r#"{"groups": []}"#));
        assert!(!parse(r#"{"discovery": {}}"#));
    }

    #[test]
    fn task_results_absent_differs_from_empty() {
        let tasks: TaskList = serde_json::from_str(
            r#"{"tasks": [{"id": "a", "healthCheckResults": []}, {"id": "b"},
                {"id": "c", "healthCheckResults": null, "ipAddresses": null, "host": null}]}"#,
        )
        .unwrap();
        assert_eq!(
            tasks.tasks[0].health_check_results.as_ref().map(Vec::len),
            Some(0)
        );
        assert!(tasks.tasks[1].health_check_results.is_none());
        assert!(tasks.tasks[2].health_check_results.is_none());
        assert_eq!(tasks.tasks[2].host, "");
    }

    #[test]
    fn every_sample_and_corpus_document_parses() {
        let roots = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/compat/cases"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/marathon-samples"),
        ];
        for root in roots {
            // The corpus lives beside the crate; without it there is nothing to check.
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            let mut seen = 0;
            for entry in entries.flatten() {
                let path = entry.path();
                let files: Vec<std::path::PathBuf> = if path.is_dir() {
                    vec![path.join("apps.json"), path.join("tasks.json")]
                } else {
                    vec![path]
                };
                for file in files {
                    let Ok(text) = std::fs::read_to_string(&file) else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if value.get("apps").is_some() {
                        serde_json::from_value::<AppList>(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        seen += 1;
                    } else if value.get("tasks").is_some() {
                        serde_json::from_value::<TaskList>(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        seen += 1;
                    }
                }
            }
            assert!(seen > 0, "no Marathon document found under {root}");
        }
    }
}
