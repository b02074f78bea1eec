//! Marathon's documents: serde types for the parts of its v2 API we read (`/v2/apps`,
//! `/v2/tasks`), shared by `fetch` (which parses answers into them), `model` (which reads them)
//! and `exclusion` (which keeps an app's last good definition, hence `Serialize`). Lenient:
//! unknown fields are ignored and JSON `null` means absent (marathon-lb strips nulls on receipt).
//! No I/O, no label semantics: that is `model`'s job.
//!
//! Shapes from Marathon 1.4 to 1.10 are covered: host networking with `portDefinitions` (or the
//! legacy `ports`), Docker bridge/user networks in the 1.4 form (`container.docker.network` +
//! `container.docker.portMappings`) and the 1.5+ form (`networks` + `container.portMappings`),
//! and legacy IP-per-task (`ipAddress.discovery.ports`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
    pub labels: Labels,
    /// Configured instance count; used by blue/green draining.
    #[serde(default)]
    pub instances: Option<i64>,
    #[serde(default, deserialize_with = "present_elements")]
    pub health_checks: Vec<HealthCheck>,
    /// `Some` whenever the field is present, even empty: then it wins over `ports`.
    #[serde(default, deserialize_with = "optional_present_elements")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Legacy (pre-1.0) service ports; `null` elements are kept as "undefined service port".
    #[serde(default, deserialize_with = "ports")]
    pub ports: Vec<Option<i64>>,
    /// Legacy IP-per-task (Marathon ≤ 1.4). Boxed, like `container` and `version_info`: most
    /// apps lack them, and inline they made every app, even `{}`, hundreds of bytes (issue 9).
    #[serde(default)]
    pub ip_address: Option<Box<AppIpAddress>>,
    #[serde(default)]
    pub container: Option<Box<Container>>,
    /// Marathon 1.5+ networking.
    #[serde(default, deserialize_with = "present_elements")]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub version_info: Option<Box<VersionInfo>>,
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
    /// Shared with the task before when it is of the same app (see `shared_app_id`).
    #[serde(default, deserialize_with = "shared_app_id")]
    pub app_id: Arc<str>,
    /// The agent; empty when Marathon has not placed the task (such tasks are ignored).
    /// Shared with the task before when on the same agent, as `app_id` is.
    #[serde(default, deserialize_with = "shared_host")]
    pub host: Arc<str>,
    /// Mesos state such as `TASK_RUNNING`; absent in old Marathons (treated as running).
    /// Mesos's own states are shared, not copied: every task has one.
    #[serde(default, deserialize_with = "task_state")]
    pub state: Option<Cow<'static, str>>,
    /// Host ports (or, for IP-per-task, whatever Marathon reports) in port-index order.
    #[serde(default)]
    pub ports: TaskPorts,
    /// `None` when absent: the task has not been checked yet (unlike an empty list, which
    /// counts in blue/green merges). Read as what `model` asks of it, not kept as a list.
    #[serde(default, deserialize_with = "health_check_results")]
    pub health_check_results: Option<HealthCheckResults>,
    /// The `ipAddress` of the first of `ipAddresses` (`null` entries skipped): the only one
    /// anything reads. Shared with `host` when equal, as it often is.
    #[serde(default, rename = "ipAddresses", deserialize_with = "first_ip_address")]
    pub ip_address: Option<Arc<str>>,
}

/// A task's ports, read as [`ports`] reads a list (`null` as empty, `null` ports kept): a
/// single port, as nearly every task has, is kept in place instead of in a list of its own.
#[derive(Debug, Clone, Default)]
pub struct TaskPorts(PortStorage);

#[derive(Debug, Clone)]
enum PortStorage {
    One(Option<i64>),
    /// None or several (an empty `Vec` takes no allocation).
    List(Vec<Option<i64>>),
}

impl Default for PortStorage {
    fn default() -> PortStorage {
        PortStorage::List(Vec::new())
    }
}

impl std::ops::Deref for TaskPorts {
    type Target = [Option<i64>];

    fn deref(&self) -> &[Option<i64>] {
        match &self.0 {
            PortStorage::One(port) => std::slice::from_ref(port),
            PortStorage::List(ports) => ports,
        }
    }
}

impl<'de> Deserialize<'de> for TaskPorts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TaskPorts, D::Error> {
        struct TaskPortsVisitor;

        impl<'de> Visitor<'de> for TaskPortsVisitor {
            type Value = TaskPorts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }

            fn visit_none<E: de::Error>(self) -> Result<TaskPorts, E> {
                Ok(TaskPorts::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<TaskPorts, E> {
                Ok(TaskPorts::default())
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<TaskPorts, D::Error> {
                deserializer.deserialize_seq(self)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TaskPorts, A::Error> {
                let Some(first) = seq.next_element::<Option<i64>>()? else {
                    return Ok(TaskPorts::default());
                };
                charge(std::mem::size_of::<Option<i64>>())?;
                let Some(second) = seq.next_element::<Option<i64>>()? else {
                    return Ok(TaskPorts(PortStorage::One(first)));
                };
                charge(std::mem::size_of::<Option<i64>>())?;
                let mut ports = vec![first, second];
                while let Some(port) = seq.next_element::<Option<i64>>()? {
                    charge(std::mem::size_of::<Option<i64>>())?;
                    ports.push(port);
                }
                ports.shrink_to_fit();
                Ok(TaskPorts(PortStorage::List(ports)))
            }
        }

        deserializer.deserialize_option(TaskPortsVisitor)
    }
}

/// A task's `healthCheckResults` as far as anything reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCheckResults {
    /// Whether one of the results says `"alive": true` (false for an empty list).
    pub any_alive: bool,
}

/// One of a task's `healthCheckResults`, as read (then folded into [`HealthCheckResults`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// Absent is read as not alive.
    #[serde(default)]
    pub alive: Option<bool>,
}

/// One of a task's `ipAddresses`, as read; its `protocol` is never read, so not kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIpAddress {
    #[serde(default, deserialize_with = "ip_address_shared_with_host")]
    pub ip_address: Option<Arc<str>>,
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

/// Reads the body of `GET /v2/apps` as fetched: an object holding an `apps` array of at most
/// `max_apps` apps. Unlike `AppList`'s lenient `Deserialize` (kept for hand-written test data),
/// `{}` or `{"apps": null}` is not an empty cluster but not Marathon's answer at all (issue 10):
/// read as empty, it would take every backend away. Reading stops at the first app over the
/// limit, so an oversized answer never reaches memory as apps (issue 9).
pub fn parse_app_list(bytes: &[u8], max_apps: usize) -> serde_json::Result<AppList> {
    let mut apps = Vec::new();
    let seed = Document::new("apps", max_apps, "--max-apps", &mut apps);
    within_budget(bytes, seed, answer_budget(bytes))?;
    // Grown by doubling; the lists live for the whole run.
    apps.shrink_to_fit();
    Ok(AppList { apps })
}

/// [`parse_app_list`] for `GET /v2/tasks`: a `tasks` array of at most `max_tasks` tasks.
pub fn parse_task_list(bytes: &[u8], max_tasks: usize) -> serde_json::Result<TaskList> {
    let mut tasks = Vec::new();
    let seed = Document::new("tasks", max_tasks, "--max-tasks", &mut tasks);
    within_budget(bytes, seed, answer_budget(bytes))?;
    tasks.shrink_to_fit();
    Ok(TaskList { tasks })
}

/// [`parse_task_list`] for an answer parsed as it is read from `reader`, so that its text is never
/// held whole: the same tasks, or the same error, at the same line and column. The budget is that
/// of `size` bytes (a file's size, a `Content-Length`) and grows with every byte read past it, so
/// an answer of unknown size (`0`) is held to what has arrived.
///
/// The answer is parsed in windows of about [`WINDOW_BYTES`], each cut after a task and parsed
/// as a document of its own: `{"tasks":[null` standing for what came before (the `null` read as
/// no task and not counted), then the window, then `]}`. A cut is taken only when that document
/// parses with the list as its last key, which proves it fell between two tasks of the list.
/// When one does not, the window grows and is cut later; after [`MAX_FAILED_CUTS`] cuts in a row
/// fail (a broken answer), or at the end of the answer, the rest is read whole and parsed from
/// the last good cut. An error there is parsed once more behind a prefix of as many lines and
/// columns as the text it stands for, so that serde_json places it where it would have in the
/// whole answer.
pub fn read_task_list(
    reader: impl std::io::Read,
    max_tasks: usize,
    size: u64,
) -> serde_json::Result<TaskList> {
    let (tasks, _) = read_in_windows(&TASKS, reader, max_tasks, size, WINDOW_BYTES);
    tasks.map(|tasks| TaskList { tasks })
}

/// [`parse_app_list`] for an answer parsed as it is read from `reader`, in windows as
/// [`read_task_list`] reads tasks: the same apps, or the same error at the same place.
pub fn read_app_list(
    reader: impl std::io::Read,
    max_apps: usize,
    size: u64,
) -> serde_json::Result<AppList> {
    let (apps, _) = read_in_windows(&APPS, reader, max_apps, size, WINDOW_BYTES);
    apps.map(|apps| AppList { apps })
}

/// Which list document a [`Windows`] reads.
struct ListKind {
    key: &'static str,
    flag: &'static str,
    /// What stands for the elements before a window: a `null`, which the list skips.
    before: &'static [u8],
    /// How an element's `id` begins (an app's is a path; a deployment's, listed in its app,
    /// is not).
    id_begins: &'static [u8],
}

const APPS: ListKind = ListKind {
    key: "apps",
    flag: "--max-apps",
    before: br#"{"apps":[null"#,
    id_begins: b"\"/",
};

const TASKS: ListKind = ListKind {
    key: "tasks",
    flag: "--max-tasks",
    before: br#"{"tasks":[null"#,
    id_begins: b"\"",
};

/// [`read_task_list`] or [`read_app_list`] with windows of about `window_bytes`, and how many
/// cuts held.
fn read_in_windows<T: for<'de> Deserialize<'de>>(
    kind: &'static ListKind,
    mut reader: impl std::io::Read,
    max: usize,
    size: u64,
    window_bytes: usize,
) -> (serde_json::Result<Vec<T>>, usize) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let budget = size.saturating_mul(MEMORY_PER_ANSWER_BYTE) + BUDGET_SLACK;
    let mut cuts = 0;
    let read = with_parse_state(budget, || {
        let mut windows = Windows {
            kind,
            max,
            unpaid: size,
            window: Vec::new(),
            start: 0,
            lines: 0,
            column: 0,
            elements: Vec::new(),
            failed_cuts: 0,
            cuts: 0,
        };
        let mut cutting = true;
        while windows.fill(&mut reader, window_bytes)? {
            if cutting {
                cutting = windows.cut();
            }
        }
        cuts = windows.cuts;
        windows.finish()
    });
    (read, cuts)
}

/// How much of a streamed answer is parsed at once.
const WINDOW_BYTES: usize = 256 << 10;

/// How many cuts in a row may fail before the rest of an answer is read whole: a cut that falls
/// inside an element (an app's list of deployments) fails once and the next window is cut
/// elsewhere, while an answer broken before its cut fails every time, and is parsed anew for
/// each.
const MAX_FAILED_CUTS: usize = 2;

/// The state of [`read_in_windows`] between windows.
struct Windows<T> {
    kind: &'static ListKind,
    max: usize,
    /// Bytes still to read before the budget grows with each byte.
    unpaid: usize,
    /// The kind's `before` (from the second window on) and the answer's text since the last cut.
    window: Vec<u8>,
    /// Where the answer's text starts in `window`.
    start: usize,
    /// The lines before the last cut, and the bytes between the last of them and the cut.
    lines: usize,
    column: usize,
    elements: Vec<T>,
    /// Cuts that failed since the last that held.
    failed_cuts: usize,
    /// Cuts that held.
    cuts: usize,
}

/// The per-answer state a window's parse changes, to put back when the window is parsed again.
/// (Label texts it shared stay shared: sharing changes no value and no charge.)
struct Saved {
    budget: Option<usize>,
    recent: Option<RecentTexts>,
}

impl Saved {
    fn now() -> Saved {
        Saved {
            budget: BUDGET.with(|cell| cell.get()),
            recent: RECENT.with(|recent| recent.borrow().clone()),
        }
    }

    fn restore(self) {
        BUDGET.with(|cell| cell.set(self.budget));
        RECENT.with(|recent| *recent.borrow_mut() = self.recent);
    }
}

impl<T: for<'de> Deserialize<'de>> Windows<T> {
    /// Reads up to `bytes` more (fewer only at the end); whether anything was read.
    fn fill(&mut self, reader: &mut impl std::io::Read, bytes: usize) -> serde_json::Result<bool> {
        // Into the window's spare room as it is, not zeroed first (a 256 KiB memset per window).
        self.window.reserve(bytes);
        let read = (reader.by_ref().take(bytes as u64))
            .read_to_end(&mut self.window)
            .map_err(serde_json::Error::io)?;
        let paid = read.min(self.unpaid);
        self.unpaid -= paid;
        let credit = (read - paid).saturating_mul(MEMORY_PER_ANSWER_BYTE);
        if credit > 0 {
            BUDGET.with(|cell| cell.set(cell.get().map(|left| left.saturating_add(credit))));
        }
        Ok(read > 0)
    }

    /// Parses the window up to its last cut and keeps the rest for the next; whether to go on
    /// cutting (not once [`MAX_FAILED_CUTS`] failed in a row: the rest is then parsed whole).
    fn cut(&mut self) -> bool {
        let before = self.kind.before;
        let text = &self.window[self.start..];
        let Some(cut) = last_cut(text, self.kind.id_begins) else {
            return true;
        };
        let newlines = newlines(&text[..cut]);
        let column = match newlines {
            0 => self.column + cut,
            _ => cut - memchr::memrchr(b'\n', &text[..cut]).unwrap_or(0) - 1,
        };
        let lines = self.lines + newlines;
        if lines == 0 && column < before.len() {
            return true; // No room yet for a prefix of the same width.
        }
        let cut = self.start + cut;
        let rest = self.window.split_off(cut);
        self.window.extend_from_slice(b"]}");
        let saved = Saved::now();
        match self.parse(None, true) {
            Ok(()) => {
                self.lines = lines;
                self.column = column;
                self.window.clear();
                self.window.extend_from_slice(before);
                self.window.extend_from_slice(&rest);
                self.start = before.len();
                self.failed_cuts = 0;
                self.cuts += 1;
                true
            }
            Err(_) => {
                saved.restore();
                self.window.truncate(cut);
                self.window.extend_from_slice(&rest);
                self.failed_cuts += 1;
                self.failed_cuts < MAX_FAILED_CUTS
            }
        }
    }

    /// Parses the rest of the answer, read whole, from the last cut.
    fn finish(mut self) -> serde_json::Result<Vec<T>> {
        let before = self.kind.before;
        let saved = Saved::now();
        let error = match self.parse(None, false) {
            Ok(()) => {
                // Grown by doubling; the lists live for the whole run.
                self.elements.shrink_to_fit();
                return Ok(self.elements);
            }
            Err(error) if self.start == 0 => return Err(error),
            Err(error) => error,
        };
        if error.is_io() {
            return Err(error);
        }
        // The same failure again, placed as in the whole answer.
        saved.restore();
        let mut placed = Vec::with_capacity(self.column + self.lines + self.window.len());
        if self.lines > 0 {
            placed.extend_from_slice(before);
            placed.resize(placed.len() + self.lines, b'\n');
            placed.resize(placed.len() + self.column, b' ');
        } else {
            placed.extend_from_slice(&before[..before.len() - 4]);
            placed.resize(self.column - 4, b' ');
            placed.extend_from_slice(b"null");
        }
        placed.extend_from_slice(&self.window[self.start..]);
        match self.parse(Some(&placed), false) {
            Err(placed) => Err(placed),
            Ok(()) => Err(error),
        }
    }

    /// The window (or `other`, standing for it) as a document of its own, its elements pushed
    /// onto those before, or none of them when it fails: with `cut`, it must end with the list
    /// as its last key.
    fn parse(&mut self, other: Option<&[u8]>, cut: bool) -> serde_json::Result<()> {
        let bytes = other.unwrap_or(&self.window);
        let kept = self.elements.len();
        let mut seed = Document::new(self.kind.key, self.max, self.kind.flag, &mut self.elements);
        seed.after_cut = self.start > 0;
        seed.list_last = cut;
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => run_seed(seed, &mut serde_json::Deserializer::from_str(text)),
            Err(_) => run_seed(seed, &mut serde_json::Deserializer::from_slice(bytes)),
        };
        if parsed.is_err() {
            self.elements.truncate(kept);
        }
        parsed
    }
}

/// How many `\n` `text` holds (memchr's vectorised count: a plain filter and count was a tenth
/// of the dry run's instructions).
fn newlines(text: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', text).count()
}

/// Where to cut `text`, a list's elements: after the last `}` that a `,` and `{"id":` follow,
/// the id beginning with `id_begins` (whitespace between), else after the last `}` a `,`
/// follows. Marathon writes every app and task with its `id` first, so the first is nearly
/// always between two elements, where the second often falls inside one (after an app's
/// labels); and those bytes are never inside a string, where every `"` is escaped. Either is
/// checked by the parse of the window.
fn last_cut(text: &[u8], id_begins: &[u8]) -> Option<usize> {
    const ID: &[u8] = br#"{"id":"#;
    let mut end = text.len();
    while let Some(object) = memchr::memmem::rfind(&text[..end], ID) {
        let id = &text[object + ID.len()..];
        let id = &id[id
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(id.len())..];
        if id.starts_with(id_begins) {
            if let Some(cut) = closed_before_comma(&text[..object]) {
                return Some(cut);
            }
        }
        end = object;
    }
    let mut end = text.len();
    loop {
        let comma = memchr::memrchr(b',', &text[..end])?;
        if let Some(cut) = closed_before_comma(&text[..=comma]) {
            return Some(cut);
        }
        end = comma;
    }
}

/// Where the `}` ends that `text` ends with, but for a `,` and whitespace.
fn closed_before_comma(text: &[u8]) -> Option<usize> {
    let comma = text.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if text[comma] != b',' {
        return None;
    }
    let closed = text[..comma]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    (text[closed] == b'}').then_some(closed + 1)
}

/// How many bytes of parsed structure (charged as read: each list element's size, each
/// label's strings) one byte of answer may become. Marathon's real answers need under half of
/// it (`every_sample_and_corpus_document_parses` checks the corpus at half); a crafted one can
/// make each 3-byte `{},` a 200-byte struct, which is how 3 MB once took 789 MB (issue 9).
/// Over the budget the answer is refused as it is read, never materialised.
pub const MEMORY_PER_ANSWER_BYTE: usize = 4;

/// Headroom for tiny answers, whose fixed costs outweigh their bytes.
const BUDGET_SLACK: usize = 1 << 20;

thread_local! {
    /// Bytes of parsed structure the document being read may still take; `None` outside
    /// [`with_parse_state`] (hand-written test data is not limited).
    static BUDGET: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `seed` over `bytes` (the whole input, no trailing data) with a memory budget of
/// `budget` bytes of parsed structure.
fn within_budget<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
    budget: usize,
) -> serde_json::Result<S::Value> {
    // One pass over the whole answer checks its UTF-8 far faster than serde_json checking each
    // string it reads (a sixth of the parse at 10,000 apps). An answer that is not UTF-8 (only
    // in strings we skip, or we refuse it anyway) is read as bytes, exactly as before.
    with_parse_state(budget, || match std::str::from_utf8(bytes) {
        Ok(text) => run_seed(seed, &mut serde_json::Deserializer::from_str(text)),
        Err(_) => run_seed(seed, &mut serde_json::Deserializer::from_slice(bytes)),
    })
}

/// Runs `parse` with this thread's budget set to `budget` and fresh shared texts, all reset
/// after it, however it ends.
fn with_parse_state<T>(budget: usize, parse: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BUDGET.with(|budget| budget.set(None));
            INTERNED.with(|interned| interned.borrow_mut().take());
            RECENT.with(|recent| recent.borrow_mut().take());
        }
    }
    let _reset = Reset;
    BUDGET.with(|cell| cell.set(Some(budget)));
    INTERNED.with(|interned| *interned.borrow_mut() = Some(HashSet::new()));
    RECENT.with(|recent| *recent.borrow_mut() = Some(RecentTexts::default()));
    parse()
}

/// Runs `seed` over the whole input of `deserializer`, refusing trailing data.
fn run_seed<'de, S: DeserializeSeed<'de>, R: serde_json::de::Read<'de>>(
    seed: S,
    deserializer: &mut serde_json::Deserializer<R>,
) -> serde_json::Result<S::Value> {
    let value = seed.deserialize(&mut *deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The memory budget of an answer of this size.
fn answer_budget(bytes: &[u8]) -> usize {
    bytes.len().saturating_mul(MEMORY_PER_ANSWER_BYTE) + BUDGET_SLACK
}

/// Takes `bytes` from the budget, or fails the document.
fn charge<E: de::Error>(bytes: usize) -> Result<(), E> {
    BUDGET.with(|cell| match cell.get() {
        None => Ok(()),
        Some(left) if left >= bytes => {
            cell.set(Some(left - bytes));
            Ok(())
        }
        Some(_) => Err(E::custom(format!(
            "the answer would take more than {MEMORY_PER_ANSWER_BYTE} bytes of memory per byte \
             once read (a real Marathon answer takes under half that): refused as crafted"
        ))),
    })
}

/// Pushes `element` onto `list` unless it is `None`. Most lists hold one element: room for
/// exactly one, not the four a first push makes, saves the shrink (a realloc per list) after.
fn push_kept<T>(list: &mut Vec<T>, element: Option<T>) {
    if let Some(element) = element {
        if list.capacity() == 0 {
            list.reserve_exact(1);
        }
        list.push(element);
    }
}

/// A list read with [`ChargedFold`] by `push`, then shrunk to its length (it lives for the run).
fn charged_list<'de, D, Read, Kept>(
    deserializer: D,
    push: fn(&mut Vec<Kept>, Read),
) -> Result<Option<Vec<Kept>>, D::Error>
where
    D: Deserializer<'de>,
    Read: Deserialize<'de>,
{
    let list = deserializer.deserialize_option(ChargedFold { fold: push })?;
    Ok(list.map(|mut list| {
        list.shrink_to_fit();
        list
    }))
}

/// Port lists: `null` reads as empty, `null` elements are kept.
fn ports<'de, D>(deserializer: D) -> Result<Vec<Option<i64>>, D::Error>
where
    D: Deserializer<'de>,
{
    let push = |list: &mut Vec<Option<i64>>, port| push_kept(list, Some(port));
    Ok(charged_list(deserializer, push)?.unwrap_or_default())
}

/// A task's `appId`, shared with the task read before when equal: `/v2/tasks` lists an app's
/// tasks together. A comparison with the last one, not `intern`: hashing every task's strings
/// cost more instructions than the allocations it saved.
fn shared_app_id<'de, D>(deserializer: D) -> Result<Arc<str>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = Option::<Text<'de>>::deserialize(deserializer)?;
    Ok(text.map_or_else(Arc::default, |text| {
        share_recent(&text.0, |recent| &mut recent.app_id, true)
    }))
}

/// A task's `host`, shared with the task read before when equal, as [`shared_app_id`] is.
fn shared_host<'de, D>(deserializer: D) -> Result<Arc<str>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = Option::<Text<'de>>::deserialize(deserializer)?;
    Ok(text.map_or_else(Arc::default, |text| {
        share_recent(&text.0, |recent| &mut recent.host, true)
    }))
}

/// An `ipAddress` of a task's `ipAddresses`, or `None` for `null`: shared with the last
/// `host` read when equal (for tasks on the agent's network, the task's own host).
fn ip_address_shared_with_host<'de, D>(deserializer: D) -> Result<Option<Arc<str>>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = Option::<Text<'de>>::deserialize(deserializer)?;
    Ok(text.map(|text| share_recent(&text.0, |recent| &mut recent.host, false)))
}

/// The last texts read into the fields of [`RecentTexts`] from the answer being parsed.
#[derive(Clone, Default)]
struct RecentTexts {
    app_id: Option<Arc<str>>,
    host: Option<Arc<str>>,
}

thread_local! {
    /// `None` outside [`with_parse_state`], like `INTERNED`.
    static RECENT: RefCell<Option<RecentTexts>> = const { RefCell::new(None) };
}

/// `text` as the string in `slot` of the recent texts when equal, else as a new one, which
/// takes the slot when `remember`.
fn share_recent(
    text: &str,
    slot: fn(&mut RecentTexts) -> &mut Option<Arc<str>>,
    remember: bool,
) -> Arc<str> {
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        let Some(recent) = recent.as_mut() else {
            return Arc::from(text);
        };
        let slot = slot(recent);
        match slot {
            Some(last) if **last == *text => Arc::clone(last),
            _ => {
                let shared: Arc<str> = Arc::from(text);
                if remember {
                    *slot = Some(Arc::clone(&shared));
                }
                shared
            }
        }
    })
}

/// A list folded element by element into one value, each element charged to the budget (its
/// size as read) as it is read; `None` for `null`.
struct ChargedFold<Read, Folded> {
    fold: fn(&mut Folded, Read),
}

impl<'de, Read: Deserialize<'de>, Folded: Default> Visitor<'de> for ChargedFold<Read, Folded> {
    type Value = Option<Folded>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut folded = Folded::default();
        while let Some(element) = seq.next_element::<Read>()? {
            charge(std::mem::size_of::<Read>())?;
            (self.fold)(&mut folded, element);
        }
        Ok(Some(folded))
    }
}

/// `healthCheckResults`: `None` when absent or `null`; `null` results are skipped.
fn health_check_results<'de, D>(deserializer: D) -> Result<Option<HealthCheckResults>, D::Error>
where
    D: Deserializer<'de>,
{
    let fold = ChargedFold::<Option<HealthCheckResult>, HealthCheckResults> {
        fold: |results, result| {
            results.any_alive |= result.is_some_and(|result| result.alive == Some(true));
        },
    };
    deserializer.deserialize_option(fold)
}

/// `ipAddresses`: the `ipAddress` of its first non-`null` entry.
fn first_ip_address<'de, D>(deserializer: D) -> Result<Option<Arc<str>>, D::Error>
where
    D: Deserializer<'de>,
{
    /// The first entry (`None` until one is read) and its address.
    type First = Option<Option<Arc<str>>>;
    let fold = ChargedFold::<Option<TaskIpAddress>, First> {
        fold: |first, entry| {
            if let (true, Some(entry)) = (first.is_none(), entry) {
                *first = Some(entry.ip_address);
            }
        },
    };
    Ok(deserializer.deserialize_option(fold)?.flatten().flatten())
}

/// A Marathon list document: an object whose `key` is an array of at most `max` elements
/// (`null` elements dropped), pushed onto `elements`; every other key is skipped unread.
struct Document<'v, T> {
    key: &'static str,
    max: usize,
    flag: &'static str,
    /// The list starts with a `null` standing for the elements before: skipped, not counted.
    after_cut: bool,
    /// No key may follow the list (a window is cut inside it).
    list_last: bool,
    /// Where the elements go, after those of the windows before (counted towards `max`): one
    /// list for the whole answer, not one per window copied into it.
    elements: &'v mut Vec<T>,
}

impl<'v, T> Document<'v, T> {
    fn new(
        key: &'static str,
        max: usize,
        flag: &'static str,
        elements: &'v mut Vec<T>,
    ) -> Document<'v, T> {
        Document {
            key,
            max,
            flag,
            after_cut: false,
            list_last: false,
            elements,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Document<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Document<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object with an \"{}\" array", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Whether the list was found, and was a list rather than `null`.
        let mut found: Option<bool> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.list_last && found.is_some() {
                return Err(de::Error::custom("a key after the list of a window"));
            }
            if key != self.key {
                map.next_value::<IgnoredAny>()?;
            } else if found.is_some() {
                return Err(de::Error::custom(format!(
                    "\"{}\" is given twice",
                    self.key
                )));
            } else {
                found = Some(map.next_value_seed(Elements::<T> {
                    what: self.key,
                    max: self.max,
                    flag: self.flag,
                    after_cut: self.after_cut,
                    elements: &mut *self.elements,
                })?);
            }
        }
        match found {
            Some(true) => Ok(()),
            Some(false) => Err(de::Error::custom(format!(
                "\"{}\" is null, not a list: not Marathon's answer",
                self.key
            ))),
            None => Err(de::Error::custom(format!(
                "the object has no \"{}\" list: not Marathon's answer",
                self.key
            ))),
        }
    }
}

/// The array of a [`Document`]: `false` for `null`, an error past `max` elements.
struct Elements<'v, T> {
    what: &'static str,
    max: usize,
    flag: &'static str,
    after_cut: bool,
    elements: &'v mut Vec<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Elements<'_, T> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<'_, T> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of {}", self.what)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        if self.after_cut {
            seq.next_element::<IgnoredAny>()?;
        }
        while let Some(element) = seq.next_element::<Option<T>>()? {
            if self.elements.len() == self.max {
                return Err(de::Error::custom(format!(
                    "more than {} {} (the limit set by {})",
                    self.max, self.what, self.flag
                )));
            }
            charge(std::mem::size_of::<T>())?;
            self.elements.extend(element);
        }
        Ok(true)
    }
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
    charged_list(deserializer, push_kept::<T>)
}

/// The task states Mesos defines (mesos.proto `TaskState`).
const MESOS_TASK_STATES: [&str; 14] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_ERROR",
    "TASK_LOST",
    "TASK_DROPPED",
    "TASK_UNREACHABLE",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNKNOWN",
];

/// A task's state: `null` is absent, one of Mesos's states is shared, any other text is kept.
fn task_state<'de, D>(deserializer: D) -> Result<Option<Cow<'static, str>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct State(Cow<'static, str>);

    impl<'de> Deserialize<'de> for State {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
            deserializer.deserialize_str(StateVisitor)
        }
    }

    struct StateVisitor;

    impl Visitor<'_> for StateVisitor {
        type Value = State;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<State, E> {
            Ok(State(
                match MESOS_TASK_STATES.iter().find(|known| **known == text) {
                    Some(known) => Cow::Borrowed(known),
                    None => Cow::Owned(text.to_string()),
                },
            ))
        }
    }

    Ok(Option::<State>::deserialize(deserializer)?.map(|state| state.0))
}

/// An app's labels: sorted by name, each name once (a later duplicate replaces the earlier
/// one, as reading the object into a map does). One exact-sized list instead of a tree: a
/// `BTreeMap` leaf holds room for eleven labels, and an app has a handful (issue 14). Names
/// and values read from one answer are shared between apps when equal (see `intern`): most
/// apps of a cluster carry the same few names, and many the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl Labels {
    /// The value of the label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let found = self.0.binary_search_by(|(key, _)| (**key).cmp(name));
        found.ok().map(|index| &*self.0[index].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The labels named from `first` (included) up to `end` (excluded), in name order.
    pub fn range(&self, first: &str, end: &str) -> impl Iterator<Item = (&str, &str)> {
        let start = self.0.partition_point(|(key, _)| **key < *first);
        let stop = self.0.partition_point(|(key, _)| **key < *end);
        self.0[start..stop.max(start)]
            .iter()
            .map(|(key, value)| (&**key, &**value))
    }

    /// Every label in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (&**key, &**value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Labels in any order; of one name given twice, the later is kept.
    fn from_pairs(mut labels: Vec<(Arc<str>, Arc<str>)>) -> Labels {
        // Stable, so duplicates stay in the order given; `dedup_by` keeps the first of a run,
        // so each later one is swapped into its place first.
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        labels.shrink_to_fit();
        Labels(labels)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    /// Labels in any order; of one name given twice, the later is kept.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(labels: I) -> Labels {
        let labels = labels.into_iter();
        let pairs = labels.map(|(key, value)| (Arc::from(key.as_ref()), Arc::from(value.as_ref())));
        Labels::from_pairs(pairs.collect())
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no label named {name:?}"))
    }
}

impl Serialize for Labels {
    /// As a JSON object in name order, as the `BTreeMap` it replaced was.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

thread_local! {
    /// The label names and values read so far from the answer being parsed; `None` outside
    /// [`with_parse_state`] (the last-good store and test data are read without sharing).
    static INTERNED: RefCell<Option<HashSet<Arc<str>>>> = const { RefCell::new(None) };
}

/// `text` as a shared string: the one already read from this answer when there is one.
/// Sharing saves an allocation (and its 16 bytes of overhead) per repeated name or value;
/// nothing else tells the two apart.
fn intern(text: &str) -> Arc<str> {
    INTERNED.with(|interned| match interned.borrow_mut().as_mut() {
        None => Arc::from(text),
        Some(set) => match set.get(text) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(text);
                set.insert(Arc::clone(&shared));
                shared
            }
        },
    })
}

/// Labels as strings: `null` values are absent, other scalars keep their JSON text.
fn labels<'de, D>(deserializer: D) -> Result<Labels, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_option(LabelsVisitor)
}

/// Reads labels one by one, charging each to the budget (its strings and a share for the
/// container, the figure the budget was set with).
struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of labels")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Labels::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Labels::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const PER_LABEL: usize = 2 * std::mem::size_of::<String>() + 64;
        const TYPICAL_LABELS: usize = 8;
        let mut labels = Vec::new();
        while let Some((key, value)) = map.next_entry::<Text<'de>, LabelValue<'de>>()? {
            let text = match value {
                LabelValue::Null => continue,
                LabelValue::Text(text) => text,
            };
            charge(PER_LABEL + key.0.len() + text.len())?;
            // Room for a typical app's labels at once: growing 4, 8, 16 cost a realloc each.
            if labels.capacity() == 0 {
                labels.reserve_exact(TYPICAL_LABELS);
            }
            labels.push((intern(&key.0), intern(&text)));
        }
        Ok(Labels::from_pairs(labels))
    }
}

/// A string read without a copy when the input holds it as is (no escapes).
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text<'de>, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_string())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

/// A label's value: `null`, or its text (a string as is, any other JSON value as its JSON text,
/// as `serde_json::Value` prints it).
enum LabelValue<'de> {
    Null,
    Text(Cow<'de, str>),
}

impl<'de> Deserialize<'de> for LabelValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LabelValue<'de>, D::Error> {
        deserializer.deserialize_any(LabelValueVisitor)
    }
}

struct LabelValueVisitor;

impl LabelValueVisitor {
    fn json<'de, E>(value: serde_json::Value) -> Result<LabelValue<'de>, E> {
        Ok(match value {
            serde_json::Value::Null => LabelValue::Null,
            serde_json::Value::String(text) => LabelValue::Text(Cow::Owned(text)),
            other => LabelValue::Text(Cow::Owned(other.to_string())),
        })
    }
}

impl<'de> Visitor<'de> for LabelValueVisitor {
    type Value = LabelValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(LabelValue::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(LabelValue::Text(Cow::Owned(text.to_string())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(LabelValue::Text(Cow::Owned(text)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LabelValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LabelValue::Null)
    }

    // Every other value is read as `serde_json::Value` reads it, to print it the same way.
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Self::json(serde_json::Value::from(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Self::json(serde_json::Value::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Self::json(serde_json::Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        let number = serde_json::Number::from_f64(value);
        Self::json(number.map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let deserializer = de::value::SeqAccessDeserializer::new(seq);
        Self::json(serde_json::Value::deserialize(deserializer)?)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let deserializer = de::value::MapAccessDeserializer::new(map);
        Self::json(serde_json::Value::deserialize(deserializer)?)
    }
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
        assert_eq!(&app.labels["Y"], "1");
        assert_eq!(&app.labels["Z"], "2");
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
    fn answers_not_in_utf8_read_as_before() {
        // Bad UTF-8 in a field we skip is not our business; in one we read it is refused.
        let skipped = b"{\"apps\": [{\"id\": \"/a\", \"cmd\": \"\xff\"}]}";
        let apps = parse_app_list(skipped, 10).unwrap().apps;
        assert_eq!(apps[0].id, "/a");
        let read = b"{\"tasks\": [{\"id\": \"t\", \"host\": \"\xff\"}]}";
        let error = parse_task_list(read, 10).unwrap_err();
        assert!(error.to_string().contains("invalid unicode"), "{error}");
    }

    /// `/v2/tasks` answers, good, broken and hostile, each with the `--max-tasks` to read it.
    fn task_answers() -> Vec<(Vec<u8>, usize)> {
        let crafted = format!(
            r#"{{"tasks": [{{"id": "t", "ipAddresses": [{}]}}]}}"#,
            vec!["{}"; 200_000].join(",")
        );
        let task = |i: usize| {
            format!(
                r#"{{"id": "t{i}", "appId": "/a{}", "host": "h{}", "ports": [{i}, 2],
                "state": "TASK_RUNNING", "healthCheckResults": [{{"alive": true}}],
                "ipAddresses": [null, {{"ipAddress": "h{}"}}], "note": "}},{{\"x\": [1,2]}}"}}"#,
                i / 3,
                i % 4,
                i % 4
            )
        };
        let tasks: Vec<String> = (0..60).map(task).collect();
        let list =
            |tasks: &[String], between: &str| format!("{{\"tasks\": [{}]}}", tasks.join(between));
        let mut broken = tasks.clone();
        broken[41] = broken[41].replace("\"ports\": [41, 2]", "\"ports\": [41, \"x\"]");
        let mut cases: Vec<(String, usize)> = [
            "",
            "  \n ",
            "<html>",
            "[]",
            "{}",
            r#"{"tasks": null}"#,
            r#"{"tasks": [], "tasks": []}"#,
            r#"{"tasks": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}"#,
            r#"{"tasks": [{"id": "a"} {"id": "b"}]}"#,
            r#"{"tasks": [{"id": "a"},]}"#,
            r#"{"tasks": [{"id": 7}]}"#,
            "{\n\"tasks\": [\n{\"id\": \"a\",\n \"ports\": [1, \"x\"]}]}",
            r#"{"tasks": [{"id": "a", "host": "h\q"}]}"#,
            r#"{"tasks": [{"id": "a"}]} x"#,
            r#"{"tasks": [{"id": "a"}"#,
            r#"{"other": tru, "tasks": []}"#,
            r#"{"x": [{}, {}], "tasks": [{}, null, {}], "y": [{}, {}]}"#,
            &crafted,
        ]
        .iter()
        .map(|case| (case.to_string(), 2))
        .collect();
        for between in [",", ",\n  ", " , "] {
            cases.push((list(&tasks, between), 100));
            cases.push((list(&tasks, between), 60));
            cases.push((list(&tasks, between), 59));
            cases.push((list(&tasks, between), 7));
            cases.push((list(&broken, between), 100));
            let twice = list(&tasks, between).replacen("]}", "], \"tasks\": []}", 1);
            cases.push((twice, 100));
            let after = list(&tasks, between).replacen("]}", "], \"x\": [{}, {}]}", 1);
            cases.push((after, 100));
            let cut_short = list(&tasks, between);
            cases.push((cut_short[..cut_short.len() - 300].to_string(), 100));
        }
        let mut cases: Vec<(Vec<u8>, usize)> = cases
            .into_iter()
            .map(|(case, max)| (case.into_bytes(), max))
            .collect();
        cases.push((
            b"{\"tasks\": [{\"id\": \"t\", \"host\": \"\xff\"}]}".to_vec(),
            2,
        ));
        cases
    }

    #[test]
    fn a_task_answer_read_in_windows_reads_as_the_whole_answer_does() {
        let whole = |case: &[u8], max| format!("{:?}", parse_task_list(case, max).map(|l| l.tasks));
        read_in_windows_as_whole::<Task>(&TASKS, task_answers(), whole, |_, _| {});
        // Of unknown size, the budget is that of what has been read.
        let (crafted, _) = &task_answers()[17];
        let error = read_task_list(&crafted[..], 2, 0).unwrap_err();
        assert!(
            error.to_string().contains("bytes of memory per byte"),
            "{error}"
        );
    }

    /// `/v2/apps` answers, good, broken and hostile, each with the `--max-apps` to read it. The
    /// apps nest objects in lists (ports, deployments with ids of their own, as `{"id":`
    /// starts every app) and after their labels, where a cut must not fall.
    fn app_answers() -> Vec<(Vec<u8>, usize)> {
        let app = |i: usize| {
            format!(
                r#"{{"id": "/a{i}", "labels": {{"HAPROXY_GROUP": "external", "V": "v{}"}},
                "portDefinitions": [{{"port": {i}, "name": "http"}}, {{"port": 2, "labels": {{}}}}],
                "deployments": [{{"id": "d{i}"}}, {{"id": "e{i}"}}],
                "healthChecks": [{{"protocol": "HTTP", "portIndex": 0}}], "instances": {},
                "cmd": "x }},{{\"id\": \"/fake\"}}"}}"#,
                i % 3,
                i % 4
            )
        };
        let apps: Vec<String> = (0..60).map(app).collect();
        let list =
            |apps: &[String], between: &str| format!("{{\"apps\": [{}]}}", apps.join(between));
        let mut broken = apps.clone();
        broken[41] = broken[41].replace("\"instances\": 1", "\"instances\": \"x\"");
        let crafted = format!(r#"{{"apps": [{}]}}"#, vec!["{}"; 200_000].join(","));
        let mut cases: Vec<(String, usize)> = [
            "",
            "<html>",
            "{}",
            r#"{"apps": null}"#,
            r#"{"apps": [{"id": "/a"}, {"id": "/b"}, {"id": "/c"}]}"#,
            r#"{"apps": [{"id": "/a"},{"id": 7}]}"#,
            r#"{"apps": [{"id": "/a"},]}"#,
            r#"{"apps": [{"id": "/a"}]} x"#,
            &crafted,
        ]
        .iter()
        .map(|case| (case.to_string(), 2))
        .collect();
        for between in [",", ",\n  ", " , "] {
            cases.push((list(&apps, between), 100));
            cases.push((list(&apps, between), 59));
            cases.push((list(&broken, between), 100));
            let after = list(&apps, between).replacen("]}", "], \"x\": [{}, {}]}", 1);
            cases.push((after, 100));
            let cut_short = list(&apps, between);
            cases.push((cut_short[..cut_short.len() - 300].to_string(), 100));
        }
        cases
            .into_iter()
            .map(|(case, max)| (case.into_bytes(), max))
            .collect()
    }

    #[test]
    fn an_app_answer_read_in_windows_reads_as_the_whole_answer_does() {
        let whole = |case: &[u8], max| format!("{:?}", parse_app_list(case, max).map(|l| l.apps));
        read_in_windows_as_whole::<App>(&APPS, app_answers(), whole, |case, cuts| {
            // Apps of ~400 bytes in windows of 1,000: about one cut per two or three apps,
            // none lost to a cut inside an app.
            if case.len() > 20_000 {
                assert!(cuts * 1000 > case.len() * 3 / 4, "{cuts} cuts");
            }
        });
    }

    /// Reads each of `answers` (with its limit) in windows of many sizes, as a `kind` list, and
    /// checks that it reads as `whole` reads it whole; `cut_at_1000` sees each answer that read
    /// well in windows of 1,000 bytes, with the cuts that held.
    fn read_in_windows_as_whole<T: for<'de> Deserialize<'de> + fmt::Debug>(
        kind: &'static ListKind,
        answers: Vec<(Vec<u8>, usize)>,
        whole: impl Fn(&[u8], usize) -> String,
        mut cut_at_1000: impl FnMut(&[u8], usize),
    ) {
        for (case, max) in answers {
            let expected = whole(&case, max);
            let shown = String::from_utf8_lossy(&case[..case.len().min(80)]).into_owned();
            let size = case.len() as u64;
            for window in (1..24).chain([97, 256, 1000, 4096, WINDOW_BYTES]) {
                let (streamed, cuts) = read_in_windows::<T>(kind, &case[..], max, size, window);
                let good = streamed.is_ok();
                assert_eq!(
                    format!("{streamed:?}"),
                    expected,
                    "{shown} (max {max}) in windows of {window}"
                );
                if good && window == 1000 {
                    cut_at_1000(&case, cuts);
                }
            }
        }
    }

    #[test]
    fn a_window_is_cut_before_the_next_element_not_inside_one() {
        let text = br#"{"id": "/a", "labels": {"x": "y"}, "p": [{"id": "d"}]}, {"id":"/b", "l": {}, "q": 1"#;
        let cut = last_cut(text, APPS.id_begins).unwrap();
        assert_eq!(&text[cut - 3..cut], b"}]}");
        // A deployment's id is not an app's.
        let text = br#"{"id": "/a", "d": [{"id": "x"}, {"id": "y"}]"#;
        assert_eq!(last_cut(text, APPS.id_begins), Some(30));
        assert_eq!(last_cut(text, TASKS.id_begins), Some(30));
        // Without an `id` first, at the last `}` a `,` follows.
        let text = br#"{"a": {}, "b": 1}, {"c": {}, "d""#;
        assert_eq!(last_cut(text, TASKS.id_begins), Some(27));
        assert_eq!(last_cut(br#"{"a": 1"#, TASKS.id_begins), None);
    }

    #[test]
    fn labels_read_as_a_map_would() {
        let app: App = serde_json::from_str(
            r#"{"labels": {"b": "1", "a": "x", "HAPROXY_1_X": "p", "a": "y", "c": null,
                "HAPROXY_0_Y": "q", "a": "z", "HAPROXY_:": "no"}}"#,
        )
        .unwrap();
        let labels = &app.labels;
        assert_eq!(labels.len(), 5);
        assert_eq!(&labels["a"], "z", "the last of a name given twice wins");
        assert!(labels.contains_key("b") && !labels.contains_key("c"));
        let port_labels: Vec<&str> = labels
            .range("HAPROXY_0", "HAPROXY_:")
            .map(|(key, _)| key)
            .collect();
        assert_eq!(port_labels, ["HAPROXY_0_Y", "HAPROXY_1_X"]);
        assert_eq!(labels.range("z", "a").count(), 0);
        let json = serde_json::to_string(&app.labels).unwrap();
        assert_eq!(
            json,
            r#"{"HAPROXY_0_Y":"q","HAPROXY_1_X":"p","HAPROXY_:":"no","a":"z","b":"1"}"#
        );
    }

    #[test]
    fn label_values_keep_the_json_text_value_prints() {
        let values = r#"["plain", "esc\"aped\u00e9", true, 0, -7, 18446744073709551615,
            2.50, 1e-7, 1e300, [1, "a", null], {"k": {"n": [false]}}, ""]"#;
        let values: Vec<serde_json::Value> = serde_json::from_str(values).unwrap();
        for value in values {
            let expected = match &value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let answer = format!(r#"{{"apps": [{{"labels": {{"L": {value}}}}}]}}"#);
            let apps = parse_app_list(answer.as_bytes(), 10).unwrap().apps;
            assert_eq!(&apps[0].labels["L"], expected, "{value}");
        }
    }

    #[test]
    fn labels_of_one_answer_share_equal_texts() {
        let answer = br#"{"apps": [{"labels": {"G": "external", "V": "a.example"}},
            {"labels": {"G": "external", "V": "b.example"}}]}"#;
        let apps = parse_app_list(answer, 10).unwrap().apps;
        let [first, second] = [&apps[0].labels.0, &apps[1].labels.0];
        assert!(Arc::ptr_eq(&first[0].0, &second[0].0), "names shared");
        assert!(
            Arc::ptr_eq(&first[0].1, &second[0].1),
            "equal values shared"
        );
        assert_eq!((&*first[1].1, &*second[1].1), ("a.example", "b.example"));
        // Nothing is kept from one answer to the next.
        assert!(INTERNED.with(|interned| interned.borrow().is_none()));
    }

    #[test]
    fn task_states_are_read_as_written() {
        let tasks: TaskList = serde_json::from_str(
            r#"{"tasks": [{"state": "TASK_RUNNING"}, {"state": "TASK_\u0052UNNING"},
                {"state": "SOMETHING_NEW"}, {"state": null}, {}]}"#,
        )
        .unwrap();
        let states: Vec<Option<&str>> = tasks.tasks.iter().map(|t| t.state.as_deref()).collect();
        assert_eq!(
            states,
            [
                Some("TASK_RUNNING"),
                Some("TASK_RUNNING"),
                Some("SOMETHING_NEW"),
                None,
                None
            ]
        );
        assert!(matches!(tasks.tasks[0].state, Some(Cow::Borrowed(_))));
        let error = serde_json::from_str::<Task>(r#"{"state": 1}"#).unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    #[test]
    fn task_results_absent_differs_from_empty() {
        let tasks: TaskList = serde_json::from_str(
            r#"{"tasks": [{"id": "a", "healthCheckResults": []}, {"id": "b"},
                {"id": "c", "healthCheckResults": null, "ipAddresses": null, "host": null}]}"#,
        )
        .unwrap();
        let not_alive = HealthCheckResults { any_alive: false };
        assert_eq!(tasks.tasks[0].health_check_results, Some(not_alive));
        assert!(tasks.tasks[1].health_check_results.is_none());
        assert!(tasks.tasks[2].health_check_results.is_none());
        assert_eq!(&*tasks.tasks[2].host, "");
        assert_eq!(tasks.tasks[2].ip_address, None);
    }

    #[test]
    fn task_ports_read_as_a_list_would() {
        let read = br#"{"tasks": [{"ports": null}, {}, {"ports": []}, {"ports": [null]},
            {"ports": [31000]}, {"ports": [1, null]}, {"ports": [1, 2, 3]}]}"#;
        let tasks = parse_task_list(read, 10).unwrap().tasks;
        let ports: Vec<&[Option<i64>]> = tasks.iter().map(|t| &t.ports[..]).collect();
        let expected: [&[Option<i64>]; 7] = [
            &[],
            &[],
            &[],
            &[None],
            &[Some(31000)],
            &[Some(1), None],
            &[Some(1), Some(2), Some(3)],
        ];
        assert_eq!(ports, expected);
        assert!(serde_json::from_str::<Task>(r#"{"ports": ["1"]}"#).is_err());
        assert!(serde_json::from_str::<Task>(r#"{"ports": 1}"#).is_err());
    }

    #[test]
    fn task_lists_read_as_their_summaries() {
        let read = br#"{"tasks": [
            {"appId": "/a", "host": "h1", "healthCheckResults": [null, {"alive": false},
                {"alive": true}], "ipAddresses": [null, {"ipAddress": "h1"}, {"ipAddress": "x"}]},
            {"appId": "/a", "host": "h1", "healthCheckResults": [{}, {"alive": false}],
                "ipAddresses": [{"protocol": "IPv4"}, {"ipAddress": "x"}]},
            {"appId": "/b", "host": "h2", "ipAddresses": []}]}"#;
        let tasks = parse_task_list(read, 10).unwrap().tasks;
        let alive: Vec<_> = tasks.iter().map(|t| t.health_check_results).collect();
        let results = |any_alive| Some(HealthCheckResults { any_alive });
        assert_eq!(alive, [results(true), results(false), None]);
        let ips: Vec<_> = tasks.iter().map(|t| t.ip_address.as_deref()).collect();
        assert_eq!(ips, [Some("h1"), None, None]);
        // One answer's equal texts are one string, whichever field they come from.
        assert!(Arc::ptr_eq(&tasks[0].app_id, &tasks[1].app_id));
        assert!(Arc::ptr_eq(&tasks[0].host, &tasks[1].host));
        assert!(Arc::ptr_eq(
            &tasks[0].host,
            tasks[0].ip_address.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(&tasks[0].app_id, &tasks[2].app_id));
        let error = serde_json::from_str::<Task>(r#"{"ipAddresses": [1]}"#);
        assert!(error.is_err());
        let error = serde_json::from_str::<Task>(r#"{"healthCheckResults": [{"alive": 1}]}"#);
        assert!(error.is_err());
    }

    #[test]
    fn every_sample_and_corpus_document_parses() {
        let roots = [
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/cases"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/marathon-samples"),
        ];
        for root in roots {
            let entries = std::fs::read_dir(root).unwrap_or_else(|e| panic!("{root}: {e}"));
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
                    // Real answers fit a third of the budget: the margin the limit keeps.
                    let bytes = text.as_bytes();
                    let real = bytes.len() * MEMORY_PER_ANSWER_BYTE / 2 + 4096;
                    if value.get("apps").is_some() {
                        serde_json::from_value::<AppList>(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        let mut apps = Vec::<App>::new();
                        let seed = Document::new("apps", usize::MAX, "--max-apps", &mut apps);
                        within_budget(bytes, seed, real)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        seen += 1;
                    } else if value.get("tasks").is_some() {
                        serde_json::from_value::<TaskList>(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        let mut tasks = Vec::<Task>::new();
                        let seed = Document::new("tasks", usize::MAX, "--max-tasks", &mut tasks);
                        within_budget(bytes, seed, real)
                            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        seen += 1;
                    }
                }
            }
            assert!(seen > 0, "no Marathon document found under {root}");
        }
    }
}
