//! The one room for leaving apps out: every reason an app is not rendered from its current
//! definition, and what is done instead, decided here and returned as one typed list.
//!
//! The reasons ([`Cause`]): the model refused the app's own definition (a label, a field,
//! something marathon-lb dies on: a `model::Warning` with its `model::Reason`); one of its
//! template labels does not format or leaves its section (`render::BadTemplateLabels`);
//! its listener takes the port of a shared listener, which would hand it a share of every other
//! app's connections there (`model::conflicts::SharedPortTaken`, against the listeners
//! `render::shared_listeners` reads from the sections that belong to no app); `haproxy -c`
//! rejects its sections (the bisection of `isolate`); a listener it adds cannot be bound on this
//! host (`apply::ListenersUnavailable`). Callers branch on these types, never on
//! message text.
//!
//! What is done: an app that rendered cleanly before (its definition is in the last-good
//! store, `<config>.last-good`) is *held*: built from that definition with Marathon's current
//! tasks, so it keeps serving. An app without one (new) is *left out*, as if Marathon did not
//! have it. A held app whose last good definition fails too is left out.
//!
//! "Rendered cleanly" means: this run built and rendered the app's current definition without a
//! fault, and the candidate holding it was applied (or already live). An app that was not itself
//! blamed counts even when another app's fault needed a bisection. The store is rewritten only
//! after such a run, never by a dry run, and only when it changed; an app deleted from Marathon
//! loses its entry.
//!
//! It also says what the candidate lacks that an app still claims ([`Prepared::unrendered`]):
//! the backends of apps Marathon has but no task of which can be served, which the blast-radius
//! guard protects, and the names of deleted apps' backends, for the change summary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{self, BusyListener, ListenersUnavailable};
use crate::config::{ApplyConfig, Config};
use crate::marathon::{App, Task};
use crate::{isolate, model, render};

/// Why an app is not rendered from its current definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The model refused its own definition (its `reason` says how: label, field, definition).
    Definition(model::Warning),
    /// One of its template labels does not format or leaves its section (render's words).
    TemplateLabel(String),
    /// `haproxy -c` rejects its sections; HAProxy's alerts for it alone.
    Rejected { alerts: String },
    /// Its listener takes the port of a shared listener (a section that belongs to no app).
    SharedListener(model::conflicts::SharedPortTaken),
    /// A listener of its service port that this host cannot bind.
    ListenerUnavailable {
        service_port: u32,
        listener: BusyListener,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Definition(warning) => {
                let problem = warning
                    .message
                    .strip_suffix(model::LEFT_OUT)
                    .unwrap_or(&warning.message);
                match (&warning.label, &warning.reason) {
                    (Some(label), _) => write!(f, "label {label}: {problem}"),
                    (None, model::Reason::Field { field, .. }) => write!(f, "{field}: {problem}"),
                    (None, _) => f.write_str(problem),
                }
            }
            Cause::TemplateLabel(problem) => f.write_str(problem),
            Cause::Rejected { alerts } => write!(f, "HAProxy rejects its sections: {alerts}"),
            Cause::SharedListener(taken) => write!(f, "{taken}"),
            Cause::ListenerUnavailable {
                service_port,
                listener,
            } => write!(f, "service port {service_port}: {listener}"),
        }
    }
}

/// What was done about an app that could not be rendered from its current definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub app_id: String,
    pub cause: Cause,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Served from its last good definition, which has this version.
    Held { version: String },
    /// Not in the configuration.
    LeftOut,
    /// Not in the configuration: its last good definition (this version) fails too.
    HeldFailedToo { version: String, cause: Cause },
}

impl Exclusion {
    /// Whether this alone makes the run end with exit 10: an app that was live is held back or
    /// taken out, or HAProxy or the host refused it. A new app whose definition does not parse
    /// is left out with a warning only, as before.
    pub fn fails_the_run(&self) -> bool {
        !matches!(
            (&self.action, &self.cause),
            (
                Action::LeftOut,
                Cause::Definition(_) | Cause::TemplateLabel(_)
            )
        )
    }

    /// Whether the app is served from its last good definition (rather than left out).
    pub fn is_held(&self) -> bool {
        matches!(self.action, Action::Held { .. })
    }

    /// The label at fault, when one is.
    pub fn label(&self) -> Option<&str> {
        match &self.cause {
            Cause::Definition(warning) => warning.label.as_deref(),
            _ => None,
        }
    }
}

impl Exclusion {
    /// What this exclusion is, for telling runs apart: the warning without HAProxy's alerts,
    /// whose line numbers and file names move with every other app's change. Two runs with the
    /// same fingerprints held or left out the same apps for the same reasons.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        let _ = self.write(&mut text, false);
        text
    }

    fn write(&self, f: &mut dyn fmt::Write, alerts: bool) -> fmt::Result {
        let app = model::fields::escaped(&self.app_id);
        let cause = |cause: &Cause| match cause {
            Cause::Rejected { .. } if !alerts => "HAProxy rejects its sections".to_string(),
            cause => cause.to_string(),
        };
        match &self.action {
            Action::Held { version } => write!(
                f,
                "app {app}: {}; held at its last good definition (version {version})",
                cause(&self.cause)
            ),
            Action::LeftOut => write!(f, "app {app}: {}; app left out", cause(&self.cause)),
            Action::HeldFailedToo {
                version,
                cause: then,
            } => write!(
                f,
                "app {app}: {}; its last good definition (version {version}) fails too ({}); \
                 app left out",
                cause(&self.cause),
                cause(then)
            ),
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

/// Marks a run's exclusions error when the run changed nothing and held or left out the same
/// apps for the same reasons as the run before, which said so: the exit status still tells,
/// the log does not say it again (cron mails every line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaidBefore;

impl fmt::Display for SaidBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("as the last run said")
    }
}

impl std::error::Error for SaidBefore {}

/// The level a run's error is logged at: debug when it only repeats exclusions the last run
/// said ([`SaidBefore`]), else error. For `main` and the long-running loops alike.
pub fn error_level(error: &anyhow::Error) -> crate::log::Level {
    match error.downcast_ref::<SaidBefore>() {
        Some(_) => crate::log::Level::Debug,
        None => crate::log::Level::Error,
    }
}

// The last-good store, `<config>.last-good`.

/// Where the last good definitions are kept: `<config>.last-good`.
pub fn last_good_path(haproxy_config: &Path) -> PathBuf {
    let mut name = haproxy_config.as_os_str().to_owned();
    name.push(".last-good");
    PathBuf::from(name)
}

/// One app's last good definition as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    version: String,
    definition: App,
}

/// The same, borrowed for writing (no copy of the cluster's definitions).
#[derive(Serialize)]
struct KeptRef<'a> {
    version: String,
    definition: &'a App,
}

impl KeptRef<'_> {
    /// An app of this run as its entry would be written.
    fn current(app: &App) -> KeptRef<'_> {
        KeptRef {
            version: version_of(app),
            definition: app,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct StoreFile {
    #[serde(default)]
    apps: BTreeMap<String, Kept>,
}

/// The store with each entry's text as it is in the file, not yet parsed.
#[derive(Deserialize)]
struct RawStoreFile<'a> {
    #[serde(default, borrow)]
    apps: BTreeMap<String, &'a serde_json::value::RawValue>,
}

/// How the store file is encoded, for the tests of [`Room::encode_store`], which writes the
/// same bytes without encoding again the entries that did not change.
#[cfg(test)]
#[derive(Serialize)]
struct StoreFileRef<'a> {
    apps: BTreeMap<&'a str, KeptRef<'a>>,
}

/// One entry of the store as read.
#[derive(Debug)]
enum Entry {
    /// These bytes of the file are, byte for byte, this run's own encoding of Marathon's app
    /// of the same id: they parse (an app's encoding parses back) and are written again as
    /// they are, so they are parsed only if the app is held or its version asked for.
    Current(std::ops::Range<usize>),
    /// Any other entry (an app changed or gone since), parsed when read as every entry once
    /// was, so a damaged one drops the store as before.
    Parsed(Box<Kept>),
}

/// The last good definition of every app that rendered cleanly, as read at the start of a run.
#[derive(Debug, Default)]
pub struct LastGood {
    apps: BTreeMap<String, Entry>,
    /// The file's bytes as read, so an unchanged store is not rewritten.
    read: Option<Vec<u8>>,
    path: PathBuf,
    /// The Marathon apps (address and length) the [`Entry::Current`] entries were compared
    /// with: only a `Room` over the same apps may write those entries back unencoded.
    compared_with: (usize, usize),
}

impl LastGood {
    /// Reads `<config>.last-good` (never through a link), comparing each entry with this run's
    /// Marathon `apps`: the cron case, where most apps did not change, then parses only the
    /// entries that did. A store that does not parse is dropped with a warning: it only matters
    /// once an app breaks, and then that app is left out as a new one would be.
    pub fn load(
        haproxy_config: &Path,
        apps: &[App],
        warnings: &mut Vec<String>,
    ) -> Result<LastGood> {
        let path = last_good_path(haproxy_config);
        let read = apply::read_kept_file(&path)?;
        Ok(LastGood::from_read(path, read, apps, warnings))
    }

    /// [`LastGood::load`] once the file is read (`None`: there is none).
    fn from_read(
        path: PathBuf,
        read: Option<Vec<u8>>,
        apps: &[App],
        warnings: &mut Vec<String>,
    ) -> LastGood {
        let entries = match read.as_deref().map(|bytes| entries(bytes, apps)) {
            None => BTreeMap::new(),
            Some(Ok(entries)) => entries,
            Some(Err(error)) => {
                warnings.push(format!(
                    "{} does not parse ({error}); it is rewritten after this run, and until then \
                     no app can be held at its last good definition",
                    path.display()
                ));
                BTreeMap::new()
            }
        };
        LastGood {
            apps: entries,
            read,
            path,
            compared_with: (apps.as_ptr() as usize, apps.len()),
        }
    }

    /// A store holding `apps` as they are (for tests of what is done with it).
    #[cfg(test)]
    fn holding(apps: &[App]) -> LastGood {
        LastGood {
            apps: apps
                .iter()
                .map(|app| {
                    let kept = Kept {
                        version: version_of(app),
                        definition: app.clone(),
                    };
                    (app.id.clone(), Entry::Parsed(Box::new(kept)))
                })
                .collect(),
            ..LastGood::default()
        }
    }

    /// The kept definition of `app_id` and its version.
    fn get(&self, app_id: &str) -> Option<std::borrow::Cow<'_, Kept>> {
        match self.apps.get(app_id)? {
            Entry::Parsed(kept) => Some(std::borrow::Cow::Borrowed(kept)),
            // Parses: these bytes are an app's own encoding.
            Entry::Current(_) => self.parse_current(app_id).map(std::borrow::Cow::Owned),
        }
    }

    /// The entry's bytes in the file when they are this run's encoding of `app_id` in `apps`.
    fn current_bytes(&self, app_id: &str, apps: &[App]) -> Option<&[u8]> {
        let compared = self.compared_with == (apps.as_ptr() as usize, apps.len());
        self.unparsed_bytes(app_id).filter(|_| compared)
    }

    /// The bytes of an [`Entry::Current`] entry in the file.
    fn unparsed_bytes(&self, app_id: &str) -> Option<&[u8]> {
        match (self.apps.get(app_id)?, &self.read) {
            (Entry::Current(range), Some(read)) => read.get(range.clone()),
            _ => None,
        }
    }

    fn parse_current(&self, app_id: &str) -> Option<Kept> {
        serde_json::from_slice(self.unparsed_bytes(app_id)?).ok()
    }

    /// The apps that have a last good definition.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(String::as_str)
    }
}

/// The store's entries, each compared with this run's encoding of Marathon's app of its id and
/// parsed only when it differs; when the whole file is this run's encoding (the cron case:
/// nothing changed since the last run wrote it), nothing is parsed. Whatever fails (the file,
/// an entry) is parsed again as a whole, so the error and what is kept are exactly those of
/// parsing the whole file at once.
fn entries(bytes: &[u8], apps: &[App]) -> serde_json::Result<BTreeMap<String, Entry>> {
    let compared = || -> Option<BTreeMap<String, Entry>> {
        let (this_run, places) = encode_current(apps).ok()?;
        if this_run == bytes {
            let places = places.into_iter();
            return Some(
                places
                    .map(|(id, place)| (id.to_string(), Entry::Current(place)))
                    .collect(),
            );
        }
        let raw: RawStoreFile<'_> = serde_json::from_slice(bytes).ok()?;
        let mut entries = BTreeMap::new();
        for (app_id, text) in raw.apps {
            let text = text.get().as_bytes();
            let place = places.get(app_id.as_str());
            let entry = match place.is_some_and(|place| this_run.get(place.clone()) == Some(text)) {
                true => {
                    // The entry's place in the file: `text` is a slice of `bytes`.
                    let start = text.as_ptr() as usize - bytes.as_ptr() as usize;
                    Entry::Current(start..start + text.len())
                }
                false => Entry::Parsed(serde_json::from_slice(text).ok()?),
            };
            entries.insert(app_id, entry);
        }
        Some(entries)
    };
    match compared() {
        Some(entries) => Ok(entries),
        None => serde_json::from_slice::<StoreFile>(bytes).map(|store| {
            let parsed = store.apps.into_iter();
            parsed
                .map(|(id, kept)| (id, Entry::Parsed(Box::new(kept))))
                .collect()
        }),
    }
}

/// The store as this run would write it if every app rendered cleanly (the last app of an id,
/// as [`Room::encode_store`] does), and where each app's entry lies in it.
type Encoded<'a> = (Vec<u8>, BTreeMap<&'a str, std::ops::Range<usize>>);

fn encode_current(apps: &[App]) -> serde_json::Result<Encoded<'_>> {
    let by_id: BTreeMap<&str, &App> = apps.iter().map(|app| (app.id.as_str(), app)).collect();
    let mut out = b"{\"apps\":{".to_vec();
    let mut places = BTreeMap::new();
    for (index, (app_id, app)) in by_id.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, app_id)?;
        out.push(b':');
        let start = out.len();
        serde_json::to_writer(&mut out, &KeptRef::current(app))?;
        places.insert(app_id, start..out.len());
    }
    out.extend_from_slice(b"}}");
    Ok((out, places))
}

/// The version that names a definition: Marathon's `versionInfo.lastConfigChangeAt` (which a
/// scale or restart does not change), else its `version`, else `unknown`.
fn version_of(app: &App) -> String {
    app.version_info
        .as_ref()
        .and_then(|info| info.last_config_change_at.clone())
        .or_else(|| app.version.clone())
        .unwrap_or_else(|| "unknown".to_string())
}

// Deciding, run by run.

/// A rendering with every fault of the apps' own definitions dealt with. Its model is not
/// kept: it is freed before the apply reads the live config and counts both (about a tenth of
/// a 10,000-app run's peak memory), and the rare failed pass that needs it to find the app at
/// fault builds it again ([`Room::blame`]), the same model from the same decisions.
#[derive(Default)]
pub struct Prepared {
    pub rendered: render::Rendered,
    /// The model's warnings that left nothing out (a task skipped, a shared listener's port
    /// taken, ...).
    pub warnings: Vec<model::Warning>,
    /// Two apps on one service port or vhost, found beside the render.
    pub conflicts: Vec<model::Warning>,
    /// The backends this rendering lacks whose app is known: the apps Marathon has that no
    /// task can serve now, and the apps deleted since their last good definition.
    pub unrendered: apply::BackendApps,
}

impl Prepared {
    /// `rendered` (the candidate's backends and their apps) with what is known of the
    /// backends the candidate lacks, for the guard and the change summary.
    pub fn backend_apps(&self, rendered: apply::BackendApps) -> apply::BackendApps {
        // The rendered names are most of them: kept as built, the few unrendered ones added
        // where the candidate has no such backend (the candidate's app wins, as before).
        let mut known = rendered;
        for (name, app_id) in &self.unrendered.names {
            known
                .names
                .entry(name.clone())
                .or_insert_with(|| app_id.clone());
        }
        known.unserved.clone_from(&self.unrendered.unserved);
        known
    }
}

/// One run's decisions: which apps are held, which left out, and why.
pub struct Room<'a> {
    apps: &'a [App],
    tasks: &'a [Task],
    last_good: &'a LastGood,
    held: BTreeMap<String, Cause>,
    left_out: BTreeMap<String, (Cause, Option<Cause>)>,
}

impl<'a> Room<'a> {
    pub fn new(apps: &'a [App], tasks: &'a [Task], last_good: &'a LastGood) -> Room<'a> {
        Room {
            apps,
            tasks,
            last_good,
            held: BTreeMap::new(),
            left_out: BTreeMap::new(),
        }
    }

    /// Builds and renders the cluster, holding or leaving out each app whose definition the
    /// model refuses or whose template labels do not format, until everything left renders.
    pub fn prepare(
        &mut self,
        config: &Config,
        templates: &render::Templates,
        resolve: model::Resolver<'_>,
    ) -> Result<Prepared> {
        let shared = render::shared_listeners(templates, &config.render);
        // Each round holds or leaves out at least one more app (an app is held at most once,
        // then left out), so this ends within twice the app count.
        for _ in 0..=2 * self.apps.len() + 1 {
            let (model, warnings) = self.build(config, resolve);
            let mut others = Vec::new();
            let mut changed = false;
            for warning in warnings {
                if warning.app_left_out && is_own_definition(&warning.reason) {
                    let app_id = warning.app_id.clone();
                    changed |= self.fault(&app_id, Cause::Definition(warning));
                } else {
                    others.push(warning);
                }
            }
            if changed {
                continue;
            }
            let groups = &config.render.groups;
            for taken in model::conflicts::shared_ports_taken(&model, groups, &shared) {
                if config.model.protect_shared_listeners {
                    let app_id = taken.app_id.clone();
                    changed |= self.fault(&app_id, Cause::SharedListener(taken));
                } else {
                    // As marathon-lb renders it (the corpus holds such a case): said, not
                    // refused, like two apps on one service port.
                    others.push(taken.into_warning());
                }
            }
            if changed {
                continue;
            }
            let (rendered, conflicts) = beside_conflicts(&model, &config.render, || {
                render::render(&model, templates, &config.render)
            });
            let error = match rendered {
                Ok(rendered) => {
                    let unrendered = self.unrendered(&model, config, resolve);
                    // Freed now, not left to the exit of a one-shot run: the apply's inventories
                    // reuse its memory (2–3 ms to free at 10,000 apps, ~6 MB off the peak).
                    drop(model);
                    return Ok(Prepared {
                        rendered,
                        warnings: others,
                        conflicts,
                        unrendered,
                    });
                }
                Err(error) => error,
            };
            let Some(bad_labels) = error.downcast_ref::<render::BadTemplateLabels>() else {
                return Err(error);
            };
            for bad in &bad_labels.0 {
                changed |= self.fault(&bad.app_id, Cause::TemplateLabel(bad.without_app()));
            }
            if !changed {
                return Err(error);
            }
        }
        bail!("leaving out the apps that cannot be rendered did not settle")
    }

    /// The model of the apps as this room has decided them so far: each held app from its
    /// last good definition, none of those left out.
    fn build(
        &self,
        config: &Config,
        resolve: model::Resolver<'_>,
    ) -> (model::Model, Vec<model::Warning>) {
        let substituted = self.substituted_apps();
        let apps = substituted.as_deref().unwrap_or(self.apps);
        let left_out: HashSet<String> = self.left_out.keys().cloned().collect();
        model::build_without(apps, self.tasks, &config.model, resolve, &left_out)
    }

    /// The backends `model` does not render whose app is known. A selected service without a
    /// server is an app Marathon has and no task of which can be served (none running, none
    /// healthy): unless Marathon was asked to run none of it (`instances: 0`), the guard
    /// protects its live servers. A deleted app's backends are named from its last good
    /// definition, so the summary says whose backend went.
    fn unrendered(
        &self,
        model: &model::Model,
        config: &Config,
        resolve: model::Resolver<'_>,
    ) -> apply::BackendApps {
        let mut known = apply::BackendApps::default();
        let groups = &config.render.groups;
        // Marathon's apps and the instances each is meant to run.
        let current: HashMap<&str, Option<i64>> = self
            .apps
            .iter()
            .map(|app| (app.id.as_str(), app.instances))
            .collect();
        for service in &model.services {
            if !service.backends.is_empty() || !service.is_selected(groups) {
                continue;
            }
            let name = render::backend_name(&service.app_id, service.service_port);
            if current.get(service.app_id.as_str()).copied().flatten() != Some(0) {
                known.unserved.insert(name.clone());
            }
            known.names.insert(name, service.app_id.clone());
        }
        let gone: Vec<App> = self
            .last_good
            .apps()
            .filter(|app_id| !current.contains_key(app_id))
            .filter_map(|app_id| self.last_good.get(app_id))
            .map(|kept| kept.into_owned().definition)
            .collect();
        if !gone.is_empty() {
            let (gone, _) = model::build(&gone, &[], &config.model, resolve);
            for service in gone.services.iter().filter(|s| s.is_selected(groups)) {
                let name = render::backend_name(&service.app_id, service.service_port);
                known
                    .names
                    .entry(name)
                    .or_insert_with(|| service.app_id.clone());
            }
        }
        known
    }

    /// An apply failed: when an app is at fault (HAProxy rejects its sections, a listener it
    /// adds cannot be bound), hold or leave it out and return `Ok` so the caller prepares and
    /// applies again; otherwise the error, with what is known about its cause.
    ///
    /// The refused candidate's model is built again here, from the decisions it was prepared
    /// with (nothing has changed them since), rather than kept through every apply that
    /// succeeds.
    pub fn blame(
        &mut self,
        error: anyhow::Error,
        templates: &render::Templates,
        config: &Config,
        apply_config: &ApplyConfig,
        resolve: model::Resolver<'_>,
    ) -> Result<()> {
        if !apply_config.skip_validation && apply::rejected_by_haproxy(&error) {
            let (model, _) = self.build(config, resolve);
            return self.blame_rejection(error, &model, templates, config, apply_config);
        }
        if let Some(unavailable) = error.downcast_ref::<ListenersUnavailable>() {
            let (model, _) = self.build(config, resolve);
            let blamed = listener_owners(&model, &config.render.groups, unavailable);
            let mut changed = false;
            for (app_id, cause) in blamed {
                changed |= self.fault(&app_id, cause);
            }
            if changed {
                return Ok(());
            }
            return Err(error.context(
                "the listener belongs to no app's service port (a template's or the shared \
                 frontends'); free it or change the template",
            ));
        }
        Err(error)
    }

    fn blame_rejection(
        &mut self,
        error: anyhow::Error,
        model: &model::Model,
        templates: &render::Templates,
        config: &Config,
        apply_config: &ApplyConfig,
    ) -> Result<()> {
        let operator_fault = |model: &model::Model| {
            isolate::find_rejected_templates(model, templates, config, apply_config)
        };
        if let Some(sections) = operator_fault(model)? {
            return Err(template_fault(error, &sections, templates));
        }
        let rejected = match isolate::find_rejected_apps(model, templates, config, apply_config) {
            Ok(rejected) => rejected,
            Err(search) => {
                return Err(error.context(format!(
                    "looking for the apps HAProxy rejects failed too: {search:#}"
                )))
            }
        };
        // An app is only blamed for its own labels: when its sections pass with the built-in
        // defaults in place of the operator's templates, the operator's are at fault.
        for app in rejected.keys() {
            let others = rejected.keys().filter(|other| *other != app);
            let alone = isolate::without_apps(model, others);
            if let Some(sections) = operator_fault(&alone)? {
                return Err(template_fault(error, &sections, templates));
            }
        }
        let mut changed = false;
        for (app_id, alerts) in rejected {
            changed |= self.fault(&app_id, Cause::Rejected { alerts });
        }
        if changed {
            Ok(())
        } else {
            Err(error)
        }
    }

    /// Records a fault of `app_id`'s definition; false when nothing changes (already out).
    fn fault(&mut self, app_id: &str, cause: Cause) -> bool {
        if self.left_out.contains_key(app_id) {
            return false;
        }
        if let Some(first) = self.held.remove(app_id) {
            self.left_out
                .insert(app_id.to_string(), (first, Some(cause)));
            return true;
        }
        let live = self.apps.iter().any(|app| app.id == app_id);
        if live && self.last_good.get(app_id).is_some() {
            self.held.insert(app_id.to_string(), cause);
        } else {
            self.left_out.insert(app_id.to_string(), (cause, None));
        }
        true
    }

    /// Marathon's apps with each held one replaced by its last good definition; `None` when
    /// none is held (the common case, which copies nothing).
    fn substituted_apps(&self) -> Option<Vec<App>> {
        if self.held.is_empty() {
            return None;
        }
        Some(
            self.apps
                .iter()
                .map(|app| match self.held.get(&app.id) {
                    Some(_) => {
                        let kept = self.last_good.get(&app.id).expect("held apps are kept");
                        let mut definition = kept.definition.clone();
                        definition.id = app.id.clone();
                        definition
                    }
                    None => app.clone(),
                })
                .collect(),
        )
    }

    /// Every app held or left out, held first, each in app-id order.
    pub fn exclusions(&self) -> Vec<Exclusion> {
        let version = |app_id: &str| {
            self.last_good
                .get(app_id)
                .map_or_else(|| "unknown".to_string(), |kept| kept.version.clone())
        };
        let held = self.held.iter().map(|(app_id, cause)| Exclusion {
            app_id: app_id.clone(),
            cause: cause.clone(),
            action: Action::Held {
                version: version(app_id),
            },
        });
        let left_out = self
            .left_out
            .iter()
            .map(|(app_id, (cause, held_cause))| Exclusion {
                app_id: app_id.clone(),
                cause: cause.clone(),
                action: match held_cause {
                    Some(then) => Action::HeldFailedToo {
                        version: version(app_id),
                        cause: then.clone(),
                    },
                    None => Action::LeftOut,
                },
            });
        held.chain(left_out).collect()
    }

    /// After an apply that put the candidate in place (or found it live): every app rendered
    /// from its current definition becomes its last good one; held and left-out apps keep
    /// theirs; apps Marathon no longer has lose theirs. Written only when it changed. Returns
    /// why the lock was not held for the write, for a warning.
    pub fn keep_last_good(&self, apply_config: &ApplyConfig) -> Result<Option<String>> {
        let bytes = self.encode_store().context("encoding the store")?;
        if self.last_good.read.as_deref() == Some(bytes.as_slice()) {
            return Ok(None);
        }
        let path = &self.last_good.path;
        // Under the lock: a run that wrote the store since this one read it applied after this
        // one did, so its store is the newer and stays.
        let read = &self.last_good.read;
        let wait = apply_config.lock_timeout;
        apply::update_kept_file(apply_config, path, wait, |now| match now {
            Some(newer) if Some(&newer) != read.as_ref() => newer,
            _ => bytes,
        })
        .with_context(|| format!("keeping the last good definitions in {}", path.display()))
    }

    /// The store this run leaves, as serde encodes it (`{"apps":{"<id>":<entry>,...}}`, ids in
    /// order), but with the entries the file already holds as this run would encode them
    /// copied from it rather than encoded again: in the cron case, nearly all of them.
    fn encode_store(&self) -> serde_json::Result<Vec<u8>> {
        // Each app's entry: its current definition, or (faulted) the kept one if any.
        let mut entries: BTreeMap<&str, Option<&App>> = BTreeMap::new();
        for app in self.apps {
            let faulted = self.held.contains_key(&app.id) || self.left_out.contains_key(&app.id);
            if !faulted {
                entries.insert(&app.id, Some(app));
            } else if self.last_good.apps.contains_key(&app.id) {
                entries.insert(&app.id, None);
            } else {
                entries.remove(app.id.as_str());
            }
        }
        let size = self.last_good.read.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"apps\":{");
        for (index, (app_id, current)) in entries.into_iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, app_id)?;
            out.push(b':');
            match current {
                Some(app) => match self.last_good.current_bytes(app_id, self.apps) {
                    Some(unchanged) => out.extend_from_slice(unchanged),
                    None => serde_json::to_writer(&mut out, &KeptRef::current(app))?,
                },
                None => match self.last_good.get(app_id) {
                    Some(kept) => serde_json::to_writer(
                        &mut out,
                        &KeptRef {
                            version: kept.version.clone(),
                            definition: &kept.definition,
                        },
                    )?,
                    // Never: `Current` entries parse. Kept as it was rather than lost.
                    None => out.extend_from_slice(
                        self.last_good.unparsed_bytes(app_id).unwrap_or(b"null"),
                    ),
                },
            }
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

/// The faults of an app's own definition, which holding it at its last good one can answer.
fn is_own_definition(reason: &model::Reason) -> bool {
    matches!(
        reason,
        model::Reason::Label
            | model::Reason::Field { .. }
            | model::Reason::Definition
            | model::Reason::TemplateLabel
    )
}

/// From this many services, [`beside_conflicts`] finds the conflicts on a thread of their own:
/// fewer take less time than starting one.
const CONFLICTS_THREAD_FROM: usize = 512;

/// Runs `render` while the conflicts of `model` are found on another thread: they read only
/// the model, and the render leaves the second core idle once its halves are joined (~5 ms of
/// conflicts at 10,000 apps, ~17 ms at 30,000). On this thread, after `render`, for a small
/// model or when no thread is to be had.
fn beside_conflicts<T>(
    model: &model::Model,
    render_config: &crate::config::RenderConfig,
    render: impl FnOnce() -> T,
) -> (T, Vec<model::Warning>) {
    let find = || model::conflicts::find(model, render_config);
    if model.services.len() < CONFLICTS_THREAD_FROM {
        return (render(), find());
    }
    crate::threads::beside("conflicts", find, render)
}

/// The rendered services whose service port is one of the listeners the host refused.
fn listener_owners(
    model: &model::Model,
    groups: &[String],
    unavailable: &ListenersUnavailable,
) -> Vec<(String, Cause)> {
    let mut owners = Vec::new();
    for listener in &unavailable.0 {
        let port = u32::from(listener.address.port());
        for service in &model.services {
            if service.service_port == port && service.is_rendered(groups) {
                owners.push((
                    service.app_id.clone(),
                    Cause::ListenerUnavailable {
                        service_port: port,
                        listener: listener.clone(),
                    },
                ));
            }
        }
    }
    owners
}

/// The run's error when the operator's templates make HAProxy reject the candidate.
fn template_fault(
    error: anyhow::Error,
    sections: &[String],
    templates: &render::Templates,
) -> anyhow::Error {
    let named: Vec<String> = sections
        .iter()
        .map(|name| {
            templates
                .operator_source(name)
                .unwrap_or_else(|| name.clone())
        })
        .collect();
    error.context(format!(
        "HAProxy rejects the operator's template {}: the candidate passes with the built-in \
         default in its place. No app was left out and nothing was changed; fix the template",
        named.join(", ")
    ))
}

/// The rendered text as a candidate, its map files beside the config, and the app each
/// backend serves.
pub fn candidate(
    rendered: render::Rendered,
    config: &Config,
) -> (apply::Candidate, apply::BackendApps) {
    let config_dir = config
        .apply
        .haproxy_config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let candidate = apply::Candidate {
        config: rendered.config,
        companions: rendered
            .maps
            .into_iter()
            .map(|map| (config_dir.join(map.file_name), map.content))
            .collect(),
    };
    let apps = apply::BackendApps {
        names: rendered.backend_apps,
        ..apply::BackendApps::default()
    };
    (candidate, apps)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::marathon::{AppList, TaskList};
    use std::net::IpAddr;

    /// Two IP-per-task apps without service ports and room for one auto-assigned port: the first
    /// takes it, so leaving the first out must rebuild as if Marathon did not have it, and the
    /// second gets the port.
    #[test]
    fn app_with_a_bad_template_label_is_left_out_as_if_absent() {
        let app = |id: &str, labels: &str| {
            format!(
                r#"{{"id": "{id}", "labels": {labels}, "ipAddress": {{"discovery": {{"ports": [{{"number": 80}}]}}}}}}"#
            )
        };
        let apps: AppList = serde_json::from_str(&format!(
            r#"{{"apps": [{}, {}]}}"#,
            app("/a", r#"{"HAPROXY_0_BACKEND_HEAD": "backend {nope}\n"}"#),
            app("/b", "{}")
        ))
        .unwrap();
        let task = |app: &str, ip: &str| {
            format!(
                r#"{{"id": "{app}.1", "appId": "/{app}", "host": "10.0.0.1", "ipAddresses": [{{"ipAddress": "{ip}"}}]}}"#
            )
        };
        let tasks: TaskList = serde_json::from_str(&format!(
            r#"{{"tasks": [{}, {}]}}"#,
            task("a", "9.0.0.1"),
            task("b", "9.0.0.2")
        ))
        .unwrap();
        let mut config = Config::new(Vec::new(), "/etc/haproxy/haproxy.cfg".into());
        config.render.groups = vec!["*".to_string()];
        config.model.min_serv_port_ip_per_task = 10050;
        config.model.max_serv_port_ip_per_task = 10050;
        let templates = render::Templates::load(&config.render).unwrap();
        let no_resolution = |host: &str| -> Option<IpAddr> { panic!("{host} needs no resolving") };

        let last_good = LastGood::default();
        let mut room = Room::new(&apps.apps, &tasks.tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &no_resolution).unwrap();
        let rendered = prepared.rendered;
        let exclusions = room.exclusions();

        let alone = &apps.apps[1..];
        let (model_alone, _) = model::build(alone, &tasks.tasks, &config.model, &no_resolution);
        let expected = render::render(&model_alone, &templates, &config.render).unwrap();
        assert_eq!(rendered.config, expected.config);
        assert!(!rendered.config.contains("backend a_"));
        assert!(
            rendered.config.contains("\nbackend b_10050\n"),
            "{}",
            rendered.config
        );
        assert!(prepared.warnings.is_empty(), "{:?}", prepared.warnings);
        assert_eq!(exclusions.len(), 1, "{exclusions:?}");
        assert!(
            !exclusions[0].fails_the_run(),
            "a new app is left out with a warning only"
        );
        assert_eq!(
            exclusions[0].to_string(),
            "app /a: template label HAPROXY_{n}_BACKEND_HEAD (service port 10050): unknown \
             placeholder {nope}; this template knows {backend}, {balance}, {mode}; app left out"
        );
    }

    fn host_app(id: &str, port: u16, labels: &str, version: &str) -> String {
        format!(
            r#"{{"id": "{id}", "version": "{version}", "labels": {labels}, "portDefinitions": [{{"port": {port}}}]}}"#
        )
    }

    fn parse(apps: &[String], tasks: &[(&str, u16)]) -> (Vec<App>, Vec<Task>) {
        let apps: AppList =
            serde_json::from_str(&format!(r#"{{"apps": [{}]}}"#, apps.join(","))).unwrap();
        let tasks: Vec<String> = tasks
            .iter()
            .map(|(app, port)| {
                format!(
                    r#"{{"id": "{app}.{port}", "appId": "{app}", "host": "10.0.0.1", "ports": [{port}]}}"#
                )
            })
            .collect();
        let tasks: TaskList =
            serde_json::from_str(&format!(r#"{{"tasks": [{}]}}"#, tasks.join(","))).unwrap();
        (apps.apps, tasks.tasks)
    }

    fn config() -> Config {
        let mut config = Config::new(Vec::new(), "/etc/haproxy/haproxy.cfg".into());
        config.render.groups = vec!["*".to_string()];
        config
    }

    fn resolve(_: &str) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, 1]))
    }

    #[test]
    fn a_live_app_with_a_bad_label_is_held_at_its_last_good_definition_with_current_tasks() {
        let (before, _) = parse(
            &[host_app(
                "/a",
                10001,
                r#"{"HAPROXY_0_BALANCE": "leastconn"}"#,
                "v1",
            )],
            &[],
        );
        let (apps, tasks) = parse(
            &[
                host_app("/a", 10001, r#"{"HAPROXY_0_BALANCE": "leastconns"}"#, "v2"),
                host_app(
                    "/new",
                    10002,
                    r#"{"HAPROXY_0_BALANCE": "leastconns"}"#,
                    "v1",
                ),
                host_app("/fine", 10003, "{}", "v1"),
            ],
            &[("/a", 31005), ("/new", 31006), ("/fine", 31007)],
        );
        let last_good = LastGood::holding(&before);
        let config = config();
        let templates = render::Templates::load(&config.render).unwrap();
        let mut room = Room::new(&apps, &tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &resolve).unwrap();
        let text = &prepared.rendered.config;
        assert!(
            text.contains("backend a_10001\n  balance leastconn\n"),
            "{text}"
        );
        assert!(
            text.contains("server 10_0_0_1_31005 10.0.0.1:31005"),
            "{text}"
        );
        assert!(!text.contains("new_10002"), "{text}");
        assert!(text.contains("backend fine_10003"), "{text}");
        let exclusions = room.exclusions();
        assert_eq!(exclusions.len(), 2, "{exclusions:?}");
        assert_eq!(exclusions[0].app_id, "/a");
        assert_eq!(
            exclusions[0].action,
            Action::Held {
                version: "v1".to_string()
            }
        );
        assert!(exclusions[0].fails_the_run());
        let message = exclusions[0].to_string();
        assert!(
            message.starts_with("app /a: label HAPROXY_0_BALANCE: ")
                && message.contains("leastconns")
                && message.ends_with("; held at its last good definition (version v1)"),
            "{message}"
        );
        assert_eq!(exclusions[1].app_id, "/new");
        assert_eq!(exclusions[1].action, Action::LeftOut);
        assert!(!exclusions[1].fails_the_run());
    }

    #[test]
    fn an_app_moved_onto_a_shared_listeners_port_is_held_and_a_new_one_left_out() {
        let (before, _) = parse(&[host_app("/a", 10001, "{}", "v1")], &[]);
        let (apps, tasks) = parse(
            &[
                host_app("/a", 80, "{}", "v2"),
                host_app("/stats", 9090, "{}", "v1"),
                host_app("/fine", 10003, "{}", "v1"),
            ],
            &[("/a", 31005), ("/stats", 31006), ("/fine", 31007)],
        );
        let last_good = LastGood::holding(&before);
        let mut config = config();
        let templates = render::Templates::load(&config.render).unwrap();
        // By default, rendered as marathon-lb renders them, each named in a warning.
        let mut room = Room::new(&apps, &tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &resolve).unwrap();
        assert!(prepared.rendered.config.contains("frontend stats_9090"));
        assert!(room.exclusions().is_empty());
        let warned: Vec<&str> = prepared
            .warnings
            .iter()
            .map(|w| w.app_id.as_str())
            .collect();
        assert_eq!(warned, ["/a", "/stats"]);
        config.model.protect_shared_listeners = true;
        let mut room = Room::new(&apps, &tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &resolve).unwrap();
        let text = &prepared.rendered.config;
        assert!(
            text.contains(
                "frontend a_10001
"
            ),
            "{text}"
        );
        assert!(
            !text.contains("a_80") && !text.contains("stats_9090"),
            "{text}"
        );
        assert!(text.contains("backend fine_10003"), "{text}");
        let exclusions = room.exclusions();
        let messages: Vec<String> = exclusions.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "app /a: service port 80 (bind *:80) is a port of the shared listener frontend \
                 marathon_http_in (bind *:80), whose new connections HAProxy would split with \
                 this app; held at its last good definition (version v1)",
                "app /stats: service port 9090 (bind *:9090) is a port of the shared listener \
                 listen stats (bind 0.0.0.0:9090), whose new connections HAProxy would split \
                 with this app; app left out",
            ]
        );
        assert!(exclusions.iter().all(Exclusion::fails_the_run));
    }

    #[test]
    fn a_held_app_whose_last_good_definition_fails_too_is_left_out() {
        let (before, _) = parse(
            &[host_app(
                "/a",
                10001,
                r#"{"HAPROXY_0_BACKEND_HEAD": "backend {nope}\n"}"#,
                "v1",
            )],
            &[],
        );
        let (apps, tasks) = parse(
            &[host_app(
                "/a",
                10001,
                r#"{"HAPROXY_0_BALANCE": "no such"}"#,
                "v2",
            )],
            &[("/a", 31005)],
        );
        let last_good = LastGood::holding(&before);
        let config = config();
        let templates = render::Templates::load(&config.render).unwrap();
        let mut room = Room::new(&apps, &tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &resolve).unwrap();
        assert!(!prepared.rendered.config.contains("backend a_"));
        let exclusions = room.exclusions();
        assert_eq!(exclusions.len(), 1, "{exclusions:?}");
        assert!(matches!(exclusions[0].action, Action::HeldFailedToo { .. }));
        assert!(exclusions[0].fails_the_run());
        assert!(exclusions[0]
            .to_string()
            .contains("its last good definition (version v1) fails too"));
    }

    #[test]
    fn a_kept_definition_renders_as_the_original_did() {
        let (apps, tasks) = parse(
            &[host_app(
                "/a",
                10001,
                r#"{"HAPROXY_0_VHOST": "a.example", "HAPROXY_0_STICKY": "true", "HAPROXY_0_PATH": "/x"}"#,
                "v1",
            )],
            &[("/a", 31005)],
        );
        let json = serde_json::to_vec(&apps[0]).unwrap();
        let again: App = serde_json::from_slice(&json).unwrap();
        let config = config();
        let templates = render::Templates::load(&config.render).unwrap();
        let render_with = |apps: &[App]| {
            let (model, _) = model::build(apps, &tasks, &config.model, &resolve);
            render::render(&model, &templates, &config.render)
                .unwrap()
                .config
        };
        assert_eq!(render_with(&apps), render_with(&[again]));
    }

    /// The store as serde encodes it, as every run wrote it before unchanged entries were
    /// copied from the file.
    fn encoded_by_serde(room: &Room<'_>) -> Vec<u8> {
        let mut apps = BTreeMap::new();
        let kept: Vec<(String, Kept)> = room
            .apps
            .iter()
            .filter_map(|app| Some((app.id.clone(), room.last_good.get(&app.id)?.into_owned())))
            .collect();
        for app in room.apps {
            let faulted = room.held.contains_key(&app.id) || room.left_out.contains_key(&app.id);
            if !faulted {
                apps.insert(app.id.as_str(), KeptRef::current(app));
            } else if let Some((_, kept)) = kept.iter().find(|(id, _)| *id == app.id) {
                let version = kept.version.clone();
                let definition = &kept.definition;
                apps.insert(
                    app.id.as_str(),
                    KeptRef {
                        version,
                        definition,
                    },
                );
            }
        }
        serde_json::to_vec(&StoreFileRef { apps }).unwrap()
    }

    #[test]
    fn the_store_is_written_as_serde_encodes_it_with_unchanged_entries_copied() {
        let (before, _) = parse(
            &[
                host_app("/same", 10001, r#"{"HAPROXY_0_VHOST": "a.example"}"#, "v1"),
                host_app("/changed", 10002, "{}", "v1"),
                host_app(
                    "/held",
                    10003,
                    r#"{"HAPROXY_0_BALANCE": "leastconn"}"#,
                    "v1",
                ),
                host_app("/gone", 10004, "{}", "v1"),
            ],
            &[],
        );
        let (apps, tasks) = parse(
            &[
                host_app("/same", 10001, r#"{"HAPROXY_0_VHOST": "a.example"}"#, "v1"),
                host_app("/changed", 10012, "{}", "v2"),
                host_app(
                    "/held",
                    10003,
                    r#"{"HAPROXY_0_BALANCE": "leastconns"}"#,
                    "v2",
                ),
                host_app("/new", 10005, "{}", "v1"),
                host_app(
                    "/new-bad",
                    10006,
                    r#"{"HAPROXY_0_BALANCE": "no such"}"#,
                    "v1",
                ),
            ],
            &[("/same", 31001), ("/held", 31003), ("/new", 31005)],
        );
        let file = encoded_by_serde(&Room::new(&before, &[], &LastGood::holding(&before)));
        let mut warnings = Vec::new();
        // Nothing changed since: nothing parsed, every entry written back as read.
        let steady =
            LastGood::from_read(PathBuf::new(), Some(file.clone()), &before, &mut warnings);
        assert!(steady
            .apps
            .values()
            .all(|entry| matches!(entry, Entry::Current(_))));
        assert_eq!(steady.apps.len(), 4);
        assert_eq!(steady.get("/held").unwrap().definition.id, "/held");
        assert_eq!(
            Room::new(&before, &[], &steady).encode_store().unwrap(),
            file
        );
        let last_good = LastGood::from_read(PathBuf::new(), Some(file), &apps, &mut warnings);
        assert!(warnings.is_empty(), "{warnings:?}");
        let kinds: Vec<(&str, bool)> = last_good
            .apps
            .iter()
            .map(|(id, entry)| (id.as_str(), matches!(entry, Entry::Current(_))))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/changed", false),
                ("/gone", false),
                ("/held", false),
                ("/same", true)
            ]
        );
        let config = config();
        let templates = render::Templates::load(&config.render).unwrap();
        let mut room = Room::new(&apps, &tasks, &last_good);
        let prepared = room.prepare(&config, &templates, &resolve).unwrap();
        assert!(prepared
            .rendered
            .config
            .contains("backend held_10003\n  balance leastconn\n"));
        assert_eq!(room.exclusions().len(), 2, "{:?}", room.exclusions());
        let written = room.encode_store().unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(encoded_by_serde(&room)).unwrap()
        );

        // The next run: every entry is this run's, copied as read, and held at its kept one.
        let file = room.encode_store().unwrap();
        let again = LastGood::from_read(PathBuf::new(), Some(file.clone()), &apps, &mut warnings);
        assert!(matches!(again.apps["/held"], Entry::Parsed(_)));
        assert!(matches!(again.apps["/new"], Entry::Current(_)));
        let mut room = Room::new(&apps, &tasks, &again);
        room.prepare(&config, &templates, &resolve).unwrap();
        assert_eq!(room.encode_store().unwrap(), file);
        assert_eq!(
            room.exclusions()[0].action,
            Action::Held {
                version: "v1".into()
            }
        );
    }

    #[test]
    fn a_damaged_entry_drops_the_store_with_the_error_of_parsing_the_whole_file() {
        let (apps, _) = parse(&[host_app("/a", 10001, "{}", "v1")], &[]);
        let good = encoded_by_serde(&Room::new(&apps, &[], &LastGood::holding(&apps)));
        let good = String::from_utf8(good).unwrap();
        let damaged = good.replace(r#"{"apps":{"#, r#"{"apps":{"/b":{"version":"v1"},"#);
        for file in [
            damaged,
            good.replace("10001", "\"10001\""),
            "{\"apps\":".to_string(),
        ] {
            let whole = serde_json::from_str::<StoreFile>(&file).unwrap_err();
            let mut warnings = Vec::new();
            let last_good =
                LastGood::from_read(PathBuf::from("s"), Some(file.into()), &apps, &mut warnings);
            assert!(last_good.apps.is_empty());
            assert_eq!(
                warnings,
                [format!(
                    "s does not parse ({whole}); it is rewritten after this run, and until then \
                     no app can be held at its last good definition"
                )]
            );
        }
    }

    #[test]
    fn a_refused_listener_is_blamed_on_the_rendered_services_of_its_port_only() {
        let (apps, tasks) = parse(
            &[
                host_app("/a", 10001, "{}", "v1"),
                host_app("/b", 10002, "{}", "v1"),
                host_app("/idle", 10001, "{}", "v1"),
            ],
            &[("/a", 31001), ("/b", 31002)],
        );
        let config = config();
        let (model, _) = model::build(&apps, &tasks, &config.model, &resolve);
        let refused = ListenersUnavailable(vec![BusyListener {
            address: "127.0.0.1:10001".parse().unwrap(),
        }]);
        let owners = listener_owners(&model, &config.render.groups, &refused);
        // /idle has no task, so no listener of its own: only /a is blamed.
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].0, "/a");
        assert_eq!(
            format!("{}", owners[0].1),
            "service port 10001: cannot listen on 127.0.0.1:10001: the address is in use on \
             this host (another process listens there)"
        );
    }
}
