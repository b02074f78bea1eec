//! Benchmark of one run's CPU work on synthetic clusters shaped like real Marathon answers
//! (about 3.9 KB of JSON per app with its 3 tasks): parse + model + render + diff, with wall
//! time and peak heap (allocated during the run, on top of the input JSON text, which the
//! `input` column reports). `cargo bench --bench pipeline`; the README quotes its figures.
//! Target: 10,000 apps × 3 tasks in under 300 ms and 200 MB on one core.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use haproxy_marathon_sync::config::{Config, MarathonSource};
use haproxy_marathon_sync::marathon::{AppList, TaskList};
use haproxy_marathon_sync::{model, render};

#[path = "support/cluster.rs"]
mod cluster;
use cluster::synthetic_cluster;

/// Counts live heap bytes and remembers the peak, so the benchmark can report memory.
struct PeakAlloc;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

struct Measured {
    parse: Duration,
    model: Duration,
    render: Duration,
    diff: Duration,
    peak_bytes: usize,
    config_bytes: usize,
    services: usize,
}

fn measure(apps_json: &str, tasks_json: &str, previous: &str, config: &Config) -> Measured {
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);

    let started = Instant::now();
    let apps: AppList = serde_json::from_str(apps_json).expect("synthetic apps parse");
    let tasks: TaskList = serde_json::from_str(tasks_json).expect("synthetic tasks parse");
    let parsed = Instant::now();
    let (model, _warnings) =
        model::build(&apps.apps, &tasks.tasks, &config.model, &|_host: &str| None);
    let modelled = Instant::now();
    let templates = render::Templates::load(&config.render).expect("default templates load");
    let rendered = render::render(&model, &templates, &config.render).expect("render");
    let rendered_at = Instant::now();
    let diff = similar::TextDiff::from_lines(previous, rendered.config.as_str())
        .unified_diff()
        .header("live", "candidate")
        .to_string();
    let diffed = Instant::now();

    let peak_bytes = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    std::hint::black_box(&diff);
    Measured {
        parse: parsed - started,
        model: modelled - parsed,
        render: rendered_at - modelled,
        diff: diffed - rendered_at,
        peak_bytes,
        config_bytes: rendered.config.len(),
        services: model.services.len(),
    }
}

fn main() {
    let config = Config::new(
        vec![MarathonSource::Snapshot("unused".into())],
        "/etc/haproxy/haproxy.cfg".into(),
    );
    let rounds = 5;
    println!(
        "pipeline benchmark: parse + model + render + diff, best of {rounds} rounds, one thread"
    );
    // Other work on the machine skews the figures: say how busy it was.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average at start: {}", load.join(" "));
    }
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}",
        "apps",
        "parse",
        "model",
        "render",
        "diff",
        "total",
        "input",
        "peak heap",
        "config",
        "services"
    );
    for apps in [1_000usize, 10_000] {
        let (apps_json, tasks_json) = synthetic_cluster(apps);
        // The diff compares against a previous state where one app in ten has moved tasks.
        let (old_apps, old_tasks) = synthetic_cluster(apps);
        let old_tasks = old_tasks.replacen("\"ports\":[31", "\"ports\":[32", apps / 10);
        let previous = {
            let old: AppList = serde_json::from_str(&old_apps).unwrap();
            let tasks: TaskList = serde_json::from_str(&old_tasks).unwrap();
            let (model, _) = model::build(&old.apps, &tasks.tasks, &config.model, &|_h: &str| None);
            let templates = render::Templates::load(&config.render).unwrap();
            render::render(&model, &templates, &config.render)
                .unwrap()
                .config
        };
        let best = (0..rounds)
            .map(|_| measure(&apps_json, &tasks_json, &previous, &config))
            .min_by_key(|m| m.parse + m.model + m.render + m.diff)
            .unwrap();
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
        println!(
            "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8.1}MB {:>8.1}MB {:>8.1}MB {:>9}",
            apps,
            ms(best.parse),
            ms(best.model),
            ms(best.render),
            ms(best.diff),
            ms(best.parse + best.model + best.render + best.diff),
            (apps_json.len() + tasks_json.len()) as f64 / 1e6,
            best.peak_bytes as f64 / 1e6,
            best.config_bytes as f64 / 1e6,
            best.services,
        );
    }
}
