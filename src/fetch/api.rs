//! Serde types for the parts of Marathon's v2 API we read (`/v2/apps`, `/v2/tasks`). Lenient:
//! unknown fields are ignored and JSON `null` means absent. No I/O.

use serde::Deserialize;

/// Body of `GET /v2/apps`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AppList {
    #[serde(default)]
    pub apps: Vec<App>,
}

/// Body of `GET /v2/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskList {
    #[serde(default)]
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub app_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default)]
    pub protocol: String,
}
