//! Unit tests of the loader's precedence and syntaxes, and of small render rules. The corpus
//! (`tests/corpus.rs`) checks whole configurations against marathon-lb's.

use std::path::Path;

use super::*;
use crate::config::Config;
use crate::error::Failure;
use crate::model::Backend;

fn render_config(dir: Option<&Path>) -> RenderConfig {
    let mut config = Config::new(Vec::new(), "/etc/haproxy/haproxy.cfg".into()).render;
    config.templates_dir = dir.map(Path::to_path_buf);
    config
}

fn service() -> Service {
    Service {
        backends: vec![Backend {
            host: "10.0.0.1".into(),
            ip: "10.0.0.1".into(),
            port: 31000,
            draining: false,
        }],
        groups: vec!["external".to_string()],
        ..Service::new("/shop/web", 10000)
    }
}

fn backend_head_vars() -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("backend", Value::str("shop_web_10000")),
        ("balance", Value::str("roundrobin")),
        ("mode", Value::str("tcp")),
    ]
}

fn backend_head(templates: &Templates, service: &Service) -> String {
    templates
        .format(Name::BackendHead, Some(service), &backend_head_vars())
        .unwrap()
}

#[test]
fn label_beats_environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = render_config(Some(dir.path()));
    let mut service = service();

    let templates = Templates::load(&config).unwrap();
    assert_eq!(
        backend_head(&templates, &service),
        "\nbackend shop_web_10000\n  balance roundrobin\n  mode tcp\n"
    );

    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_HEAD"),
        "file {backend}\r\n",
    )
    .unwrap();
    let templates = Templates::load(&config).unwrap();
    assert_eq!(
        backend_head(&templates, &service),
        "file shop_web_10000\n",
        "CRLF read as LF, like Python"
    );

    config.template_env.insert(
        "HAPROXY_BACKEND_HEAD".to_string(),
        "env {backend}\\n".to_string(),
    );
    let templates = Templates::load(&config).unwrap();
    assert_eq!(
        backend_head(&templates, &service),
        "env shop_web_10000\n",
        "\\n escape becomes a newline"
    );

    service
        .extras_mut()
        .template_labels
        .insert("BACKEND_HEAD".to_string(), "label {backend}\n".to_string());
    assert_eq!(backend_head(&templates, &service), "label shop_web_10000\n");

    config.label_templates = false;
    let templates = Templates::load(&config).unwrap();
    assert_eq!(
        backend_head(&templates, &service),
        "env shop_web_10000\n",
        "--no-label-templates"
    );
}

#[test]
fn empty_environment_value_does_not_override() {
    let mut config = render_config(None);
    config
        .template_env
        .insert("HAPROXY_BACKEND_HEAD".to_string(), String::new());
    let templates = Templates::load(&config).unwrap();
    assert!(backend_head(&templates, &service()).starts_with("\nbackend "));
}

#[test]
fn map_sections_answer_to_the_plain_acl_label() {
    let templates = Templates::load(&render_config(None)).unwrap();
    let mut service = service();
    service.extras_mut().template_labels.insert(
        "HTTP_FRONTEND_ACL".to_string(),
        "  custom {haproxy_dir}\n".to_string(),
    );
    let out = templates
        .format(
            Name::MapHttpFrontendAcl,
            Some(&service),
            &[("haproxy_dir", Value::str("/etc/haproxy"))],
        )
        .unwrap();
    assert_eq!(out, "  custom /etc/haproxy\n");
}

#[test]
fn jinja_file_overrides_and_wins_over_a_bare_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("HAPROXY_BACKEND_HEAD"), "bare {backend}\n").unwrap();
    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_HEAD.j2"),
        "\nbackend {{ backend }}\n  balance {{ balance }}\n{% if mode == \"tcp\" %}  mode tcp\n{% endif %}\n",
    )
    .unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    assert_eq!(
        backend_head(&templates, &service()),
        "\nbackend shop_web_10000\n  balance roundrobin\n  mode tcp\n\n",
        "trailing newline kept exactly"
    );
}

#[test]
fn jinja_typo_is_an_error_naming_the_template() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_HEAD.j2"),
        "backend {{ backnd }}\n",
    )
    .unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    let err = templates
        .format(Name::BackendHead, Some(&service()), &backend_head_vars())
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("HAPROXY_BACKEND_HEAD"), "{message}");
    assert!(
        message.contains("backnd") || message.contains("undefined"),
        "{message}"
    );
    assert!(message.contains("/shop/web"), "{message}");
    assert_eq!(err.downcast_ref::<Failure>(), Some(&Failure::Template));
}

#[test]
fn jinja_syntax_error_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("HAPROXY_HEAD.j2"), "global\n{% if %}\n").unwrap();
    let err = Templates::load(&render_config(Some(dir.path()))).unwrap_err();
    assert!(format!("{err:#}").contains("HAPROXY_HEAD"), "{err:#}");
    assert_eq!(err.downcast_ref::<Failure>(), Some(&Failure::Template));
}

#[test]
fn unknown_jinja_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("HAPROXY_BACKEND_HAED.j2"), "x").unwrap();
    let err = Templates::load(&render_config(Some(dir.path()))).unwrap_err();
    assert!(
        format!("{err:#}").contains("HAPROXY_BACKEND_HAED"),
        "{err:#}"
    );
}

#[test]
fn jinja_includes_stay_inside_the_templates_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("backend-extra"),
        "  # extra for {{ backend }}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_HEAD.j2"),
        "backend {{ backend }}\n{% include \"backend-extra\" %}",
    )
    .unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    assert_eq!(
        backend_head(&templates, &service()),
        "backend shop_web_10000\n  # extra for shop_web_10000\n"
    );

    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_HEAD.j2"),
        "{% include \"../secret\" %}",
    )
    .unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    assert!(templates
        .format(Name::BackendHead, Some(&service()), &backend_head_vars())
        .is_err());
    assert!(
        !is_plain_file_name("../x")
            && !is_plain_file_name("a/b")
            && is_plain_file_name("HAPROXY_HEAD")
    );
}

#[test]
fn label_format_error_names_app_and_label() {
    let templates = Templates::load(&render_config(None)).unwrap();
    let mut service = service();
    service.extras_mut().template_labels.insert(
        "BACKEND_HEAD".to_string(),
        "backend {backendd}\n".to_string(),
    );
    let err = templates
        .format(Name::BackendHead, Some(&service), &backend_head_vars())
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("HAPROXY_{n}_BACKEND_HEAD"), "{message}");
    assert!(message.contains("/shop/web"), "{message}");
    assert!(message.contains("{backendd}"), "{message}");
}

#[test]
fn server_check_options_are_stripped_and_prefixed() {
    let dir = tempfile::tempdir().unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    let mut service = service();
    service.extras_mut().template_labels.insert(
        "BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS".to_string(),
        "\n   check inter {healthCheckIntervalSeconds}s  \n".to_string(),
    );
    let vars = [("healthCheckIntervalSeconds", Value::Int(5))];
    let out = templates
        .server_check_options(Name::BackendServerTcpHealthcheckOptions, &service, &vars)
        .unwrap();
    assert_eq!(out, " check inter 5s");
    service.extras_mut().template_labels.insert(
        "BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS".to_string(),
        "  \n".to_string(),
    );
    let out = templates
        .server_check_options(Name::BackendServerTcpHealthcheckOptions, &service, &vars)
        .unwrap();
    assert_eq!(out, "");
}

#[test]
fn global_default_options_are_sorted_and_unique() {
    assert_eq!(
        global_default_options(None),
        "  option            dontlognull\n  option            http-server-close\n  option            redispatch\n"
    );
    assert_eq!(
        global_default_options(Some("httplog, forwardfor,httplog")),
        "  option            forwardfor\n  option            httplog\n"
    );
}

#[test]
fn dirname_follows_python() {
    assert_eq!(python_dirname("/etc/haproxy/haproxy.cfg"), "/etc/haproxy");
    assert_eq!(python_dirname("haproxy.cfg"), "");
    assert_eq!(python_dirname("/haproxy.cfg"), "/");
    assert_eq!(python_dirname("a//b"), "a");
}

#[test]
fn table_names_are_unique_and_defaults_embedded() {
    let mut seen = std::collections::HashSet::new();
    for (index, def) in TEMPLATES.iter().enumerate() {
        assert_eq!(def.name as usize, index, "{} out of order", def.short_name);
        assert!(seen.insert(def.short_name), "{} twice", def.short_name);
        assert!(
            def.default_file.starts_with(&def.full_name()),
            "{}",
            def.short_name
        );
        assert!(!def.description.is_empty());
    }
    // Every file shipped in templates/ belongs to a row.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TEMPLATES.iter().any(|def| def.default_file == file),
            "templates/{file} is in no table row"
        );
    }
}

#[test]
fn default_head_carries_the_global_options_and_no_marathon_lb_files() {
    let mut config = render_config(None);
    config.global_default_options = Some("httplog".to_string());
    let templates = Templates::load(&config).unwrap();
    let head = render(&Model::default(), &templates, &config)
        .unwrap()
        .config;
    assert!(head.contains("  option            httplog\n"), "{head}");
    assert!(head.contains("expose-fd listeners"));
    assert!(head.contains("option            idle-close-on-response"));
    assert!(!head.contains("lua-load") && !head.split_whitespace().any(|word| word == "daemon"));
}

#[test]
fn services_outside_the_groups_or_disabled_or_empty_are_skipped() {
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let mut internal = service();
    internal.app_id = "/internal".to_string();
    internal.groups = vec!["internal".to_string()];
    let mut per_port = service();
    per_port.app_id = "/per-port".to_string();
    per_port.groups = vec!["internal".to_string()];
    per_port.haproxy_groups = vec!["external".to_string()];
    let mut disabled = service();
    disabled.app_id = "/disabled".to_string();
    disabled.enabled = false;
    let mut empty = service();
    empty.app_id = "/empty".to_string();
    empty.backends.clear();
    let model = Model {
        services: vec![internal, per_port, disabled, empty, service()],
    };
    let out = render(&model, &templates, &config).unwrap().config;
    assert!(out.contains("\nbackend per-port_10000\n"));
    assert!(out.contains("\nbackend shop_web_10000\n"));
    for skipped in ["internal_10000", "disabled_10000", "empty_10000"] {
        assert!(!out.contains(skipped), "{skipped} rendered");
    }
}

/// The table's placeholder lists cover every shipped default, so docs generated from the table
/// name every variable a default uses.
#[test]
fn every_default_renders_with_only_its_documented_placeholders() {
    let templates = Templates::load(&render_config(None)).unwrap();
    for def in TEMPLATES {
        let vars: Vec<(&'static str, Value<'_>)> = def
            .placeholders
            .iter()
            .map(|name| (*name, Value::str("x")))
            .collect();
        let rendered = match def.usage {
            Use::Formatted => templates.format(def.name, None, &vars),
            Use::Verbatim => templates.verbatim(def.name, None, &vars),
        };
        if let Err(err) = rendered {
            panic!("{}: {err:#}", def.full_name());
        }
    }
}

#[test]
fn jinja_server_section_renders_in_a_full_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_SERVER_OPTIONS.j2"),
        "  server {{ serverName }} {{ host_ipv4 }}:{{ port }} id {{ serverId }}{% if port > 30000 %} weight 10{% endif %}\n",
    )
    .unwrap();
    let config = render_config(Some(dir.path()));
    let templates = Templates::load(&config).unwrap();
    let model = Model {
        services: vec![service()],
    };
    let out = render(&model, &templates, &config).unwrap().config;
    let id = server_id(
        &server_name("10.0.0.1", "10.0.0.1", 31000),
        &mut Default::default(),
    )
    .unwrap();
    assert!(
        out.ends_with(&format!(
            "  server 10_0_0_1_31000 10.0.0.1:31000 id {id} weight 10\n"
        )),
        "{out}"
    );
}

#[test]
fn redirect_path_label_is_not_a_template_override() {
    // In marathon-lb `HAPROXY_{n}_HTTP_BACKEND_REDIR` is the redirect path, never the section.
    assert!(Name::HttpBackendRedir.def().label.is_none());
    assert_eq!(
        Name::MapHttpsFrontendAcl.def().label,
        Some("HTTPS_FRONTEND_ACL")
    );
}

#[test]
fn reference_lists_every_section() {
    let reference = reference_markdown();
    for def in TEMPLATES {
        assert!(reference.contains(&format!("### `{}`", def.full_name())));
    }
}

#[test]
fn unformattable_template_label_fails_with_the_app_named() {
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let mut broken = service();
    broken.app_id = "/broken".to_string();
    broken
        .extras_mut()
        .template_labels
        .insert("BACKEND_HEAD".to_string(), "backend {nope}\n".to_string());
    let mut also_broken = broken.clone();
    also_broken.app_id = "/also".to_string();
    also_broken.extras_mut().template_labels.clear();
    also_broken
        .extras_mut()
        .template_labels
        .insert("FRONTEND_HEAD".to_string(), "{servicePort:s}".to_string());
    let model = Model {
        services: vec![service(), broken, also_broken],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    assert_eq!(crate::error::classify(&err), Some(Failure::Template));
    let BadTemplateLabels(bad_labels) = err.downcast_ref::<BadTemplateLabels>().expect("typed");
    let apps: Vec<(&str, Option<&str>)> = bad_labels
        .iter()
        .map(|bad| (bad.app_id.as_str(), bad.label))
        .collect();
    assert_eq!(
        apps,
        [
            ("/also", Some("FRONTEND_HEAD")),
            ("/broken", Some("BACKEND_HEAD"))
        ],
        "all found in one pass, in rendering order"
    );
    let bad = &bad_labels[1];
    assert_eq!(
        bad.without_app(),
        "template label HAPROXY_{n}_BACKEND_HEAD (service port 10000): unknown placeholder \
         {nope}; this template knows {backend}, {balance}, {mode}"
    );
}

#[test]
fn map_section_failure_names_the_plain_label_it_answers_to() {
    let mut config = render_config(None);
    config.haproxy_map = true;
    let templates = Templates::load(&config).unwrap();
    let mut web = service();
    web.hostname = Some("shop.example.com".to_string());
    web.extras_mut().template_labels.insert(
        "HTTP_FRONTEND_ACL".to_string(),
        "  acl host_{cleanedUpHostname} hdr(host) -i {hostname}\n".to_string(),
    );
    let model = Model {
        services: vec![web],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    let text = err.downcast_ref::<BadTemplateLabels>().unwrap().to_string();
    assert!(
        text.contains("HAPROXY_{n}_HTTP_FRONTEND_ACL of app /shop/web")
            && text.contains("used as HAPROXY_MAP_HTTP_FRONTEND_ACL"),
        "{text}"
    );
}

#[test]
fn a_global_template_that_does_not_format_still_fails_the_render() {
    let mut config = render_config(None);
    config.template_env.insert(
        "HAPROXY_BACKEND_HEAD".to_string(),
        "backend {nope}\\n".to_string(),
    );
    let templates = Templates::load(&config).unwrap();
    let model = Model {
        services: vec![service()],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    assert_eq!(crate::error::classify(&err), Some(Failure::Template));
    assert!(
        format!("{err:#}").contains("environment variable"),
        "{err:#}"
    );
}

/// 32,767 tasks in one backend: marathon-lb's id space (1 to 32,766) is full, so the app is
/// left out (named) and the other app still renders; the search does not run forever.
#[test]
fn a_backend_with_more_servers_than_ids_leaves_its_app_out() {
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let mut crowded = service();
    crowded.app_id = "/crowded".to_string();
    crowded.backends = (0..32_767u32)
        .map(|index| Backend {
            host: format!("10.{}.{}.{}", index / 65536, index / 256 % 256, index % 256).into(),
            ip: format!("10.{}.{}.{}", index / 65536, index / 256 % 256, index % 256).into(),
            port: 31000,
            draining: false,
        })
        .collect();
    let model = Model {
        services: vec![service(), crowded],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    let BadTemplateLabels(bad) = err.downcast_ref::<BadTemplateLabels>().expect("typed");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].app_id, "/crowded");
    assert_eq!(bad[0].label, None);
    let text = bad[0].to_string();
    assert!(
        text.contains("/crowded") && text.contains("32767 servers") && text.contains("32766"),
        "{text}"
    );
}

/// What a label's placeholders expand to is checked too: a placeholder value at the start of a
/// line, or a head label opening another kind of section, leaves the app out, named.
#[test]
fn a_label_that_leaves_its_section_after_formatting_leaves_its_app_out() {
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let mut smuggler = service();
    smuggler.app_id = "/global".to_string();
    smuggler.extras_mut().template_labels.insert(
        "BACKEND_HEAD".to_string(),
        "\nbackend {backend}\n{backend:.6}\n  master-worker\n".to_string(),
    );
    let mut other_kind = service();
    other_kind.app_id = "/other".to_string();
    other_kind.extras_mut().template_labels.insert(
        "BACKEND_HEAD".to_string(),
        "\nfrontend {backend}\n  bind :22\n".to_string(),
    );
    let model = Model {
        services: vec![service(), smuggler, other_kind],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    let BadTemplateLabels(bad) = err.downcast_ref::<BadTemplateLabels>().expect("typed");
    let found: Vec<(&str, Option<&str>)> = bad
        .iter()
        .map(|bad| (bad.app_id.as_str(), bad.label))
        .collect();
    assert_eq!(
        found,
        [
            ("/global", Some("BACKEND_HEAD")),
            ("/other", Some("BACKEND_HEAD"))
        ]
    );
    assert!(
        bad[0].reason.contains("`global` starts a section"),
        "{}",
        bad[0].reason
    );
    assert!(
        bad[1].reason.contains("`frontend` starts a section"),
        "{}",
        bad[1].reason
    );
}

#[test]
fn a_missing_or_non_directory_templates_path_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let err = Templates::load(&render_config(Some(&missing))).unwrap_err();
    assert_eq!(crate::error::classify(&err), Some(Failure::Template));
    let text = format!("{err:#}");
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("does not exist"),
        "{text}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let text = format!(
        "{:#}",
        Templates::load(&render_config(Some(&file))).unwrap_err()
    );
    assert!(text.contains("is not a directory"), "{text}");
}

#[test]
fn a_file_named_like_no_template_is_named_with_the_closest_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("HAPROXY_BACKEND_HAED"), "x").unwrap();
    std::fs::write(dir.path().join("HAPROXY_NOTHING_LIKE_ANY_NAME_AT_ALL"), "x").unwrap();
    std::fs::write(dir.path().join("backend-extra"), "an include").unwrap();
    std::fs::write(dir.path().join(".HAPROXY_HEAD.swp"), "x").unwrap();
    std::fs::write(dir.path().join("HAPROXY_BACKEND_HEAD"), "x").unwrap();
    let templates = Templates::load(&render_config(Some(dir.path()))).unwrap();
    let warnings = templates.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("HAPROXY_BACKEND_HAED")
            && warnings[0].contains("did you mean HAPROXY_BACKEND_HEAD?"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("HAPROXY_NOTHING_LIKE_ANY_NAME_AT_ALL")
            && warnings[1].contains("see the template table"),
        "{warnings:?}"
    );
    assert_eq!(
        templates::edit_distance("HAPROXY_BACKEND_HAED", "HAPROXY_BACKEND_HEAD"),
        2
    );
}

#[test]
fn rendering_past_the_deadline_is_an_error() {
    let config = render_config(None);
    let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
    let templates = Templates::load(&config).unwrap().until(past);
    let model = Model {
        services: vec![service()],
    };
    let err = render(&model, &templates, &config).unwrap_err();
    assert_eq!(crate::error::classify(&err), Some(Failure::Template));
    assert!(format!("{err:#}").contains("--run-timeout"), "{err:#}");
}

#[test]
fn the_shared_listeners_are_read_from_the_rendered_sections_that_belong_to_no_app() {
    let listed = |config: &RenderConfig| -> Vec<String> {
        let templates = Templates::load(config).unwrap();
        shared_listeners(&templates, config)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let mut config = render_config(None);
    assert_eq!(
        listed(&config),
        [
            "listen stats (bind 0.0.0.0:9090)",
            "frontend marathon_http_appid_in (bind *:9091)",
            "frontend marathon_http_in (bind *:80)",
            "frontend marathon_https_in (bind *:443)",
        ]
    );
    config.bind_http_https = false;
    assert_eq!(
        listed(&config),
        [
            "listen stats (bind 0.0.0.0:9090)",
            "frontend marathon_http_appid_in (bind *:9091)",
        ]
    );
}

#[test]
fn a_bind_line_lists_each_address_and_port_range_and_no_socket() {
    let binds: Vec<String> = binds_in(
        "global\n  stats socket /run/haproxy.sock\n\nfrontend a\n  bind 10.0.0.1:80,:81 ssl\n  \
         bind [::]:8000-8010\n  bind ipv4@127.0.0.1:90\n  bind unix@/run/x.sock\n  \
         bind abns@x accept-proxy\n  bind fd@3\n  # bind *:99\nlisten b\n  bind *:7000\n",
    )
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        binds,
        [
            "frontend a (bind 10.0.0.1:80)",
            "frontend a (bind :81)",
            "frontend a (bind [::]:8000-8010)",
            "frontend a (bind 127.0.0.1:90)",
            "listen b (bind *:7000)",
        ]
    );
}

/// A section that does not format leaves the output it was appended to as it was.
#[test]
fn a_section_that_fails_appends_nothing() {
    let mut config = render_config(None);
    config.template_env.insert(
        "HAPROXY_BACKEND_HEAD".to_string(),
        "backend {backend}\\n  mode {nope}\\n".to_string(),
    );
    let templates = Templates::load(&config).unwrap();
    let mut out = String::from("kept\n");
    let err = templates
        .format_into(
            Name::BackendHead,
            Some(&service()),
            &backend_head_vars(),
            &mut out,
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown placeholder {nope}"),
        "{err:#}"
    );
    assert_eq!(out, "kept\n");
    let mut service = service();
    service
        .extras_mut()
        .template_labels
        .insert("BACKEND_HEAD".to_string(), "backend {nope}\n".to_string());
    let err = templates
        .format_into(
            Name::BackendHead,
            Some(&service),
            &backend_head_vars(),
            &mut out,
        )
        .unwrap_err();
    assert!(
        err.chain().any(|cause| cause.is::<BadTemplateLabel>()),
        "{err:#}"
    );
    assert_eq!(out, "kept\n");
}

/// A health check on the service's first port, with fixed timings.
fn check_on_port_index_0(protocol: &str, path: Option<&str>) -> ServiceCheck {
    ServiceCheck {
        protocol: protocol.to_string(),
        path: path.map(str::to_string),
        port_index: Some(0),
        port: None,
        timeout_seconds: 20,
        interval_seconds: 10,
        grace_period_seconds: 300,
        max_consecutive_failures: 3,
    }
}

/// A cluster large enough to render on two threads: several apps with two or three ports (so
/// the cut falls inside a run of one app's services and must move past it), http services with
/// vhosts, weights, stickiness, auth and path rules, and tcp services with health checks.
fn large_model() -> Model {
    let mut services = Vec::new();
    for app in 0..400u32 {
        let ports = 1 + app % 3;
        for port in 0..ports {
            let mut service = service();
            service.app_id = format!("/team{}/app{app:04}", app % 7);
            service.service_port = 10000 + app * 3 + port;
            service.backends = (0..1 + app % 4)
                .map(|task| Backend {
                    host: format!("agent{}", (app + task) % 9).into(),
                    ip: format!("10.0.{}.{}", task, app % 250).into(),
                    port: 31000 + app + task,
                    draining: task == 2,
                })
                .collect();
            // The app at the middle of the order has two ports, both http: a cut between
            // them would route its app id twice.
            if app % 2 == 0 || ports > 1 {
                service.hostname = Some(format!("app{}.example.com", app % 50));
                service.backend_weight = i64::from(app % 5);
                service.extras_mut().ssl_cert = (app % 8 == 0).then(|| format!("/certs/{app}.pem"));
                service.sticky = app % 4 == 0;
                service.use_hsts = app % 6 == 0;
                service.extras_mut().redirpath = (app % 10 == 0).then(|| "/old".to_string());
            }
            if app % 11 == 0 {
                service.extras_mut().auth = Some(crate::model::Auth {
                    realm: "realm".to_string(),
                    user: format!("user{app}"),
                    password: "hash".to_string(),
                });
            }
            if app % 3 == 1 {
                let protocol = if app % 2 == 0 { "HTTP" } else { "TCP" };
                service.health_check = Some(check_on_port_index_0(protocol, Some("/health")));
                service.extras_mut().healthcheck_port_index = (app % 9 == 1).then_some(-1);
            }
            services.push(service);
        }
    }
    // Out of order, as the model may hand them over: the render sorts them.
    services.reverse();
    Model { services }
}

#[test]
fn two_threads_render_what_one_does() {
    let model = large_model();
    assert!(model.services.len() >= PARALLEL_FROM);
    for grouped in [false, true] {
        let mut config = render_config(None);
        config.group_https_by_vhost = grouped;
        let templates = Templates::load(&config).unwrap();
        let one = render_on_one_thread(&model, &templates, &config).unwrap();
        let two = render(&model, &templates, &config).unwrap();
        assert!(one.config.len() > 100_000, "a large config");
        assert_eq!(one, two, "grouped by vhost: {grouped}");
    }
}

#[test]
fn two_threads_fail_as_one_does() {
    let mut model = large_model();
    let count = model.services.len();
    // Bad labels near both ends, so that each thread meets some.
    for at in [3, count / 2 - 5, count / 2 + 7, count - 2] {
        model.services[at]
            .extras_mut()
            .template_labels
            .insert("BACKEND_HEAD".to_string(), "backend {nope}\n".to_string());
    }
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let labels = |err: anyhow::Error| {
        let BadTemplateLabels(bad) = err.downcast_ref::<BadTemplateLabels>().expect("typed");
        bad.iter()
            .map(|bad| (bad.app_id.clone(), bad.service_port))
            .collect::<Vec<_>>()
    };
    let one = labels(render_on_one_thread(&model, &templates, &config).unwrap_err());
    let two = labels(render(&model, &templates, &config).unwrap_err());
    assert_eq!(one.len(), 4);
    assert_eq!(one, two, "every bad label, in output order");

    // A failure of the operator's template that only a service late in the order meets ends
    // the render with that failure, not with the bad labels met before it.
    let dir = tempfile::tempdir().unwrap();
    let late = model.services[1].app_id.clone();
    std::fs::write(
        dir.path().join("HAPROXY_BACKEND_STICKY_OPTIONS.j2"),
        format!("{{% if appId == \"{late}\" %}}{{{{ nope }}}}{{% endif %}}  cookie x\n"),
    )
    .unwrap();
    let config = render_config(Some(dir.path()));
    let templates = Templates::load(&config).unwrap();
    for sticky in model.services.iter_mut() {
        sticky.sticky = true;
    }
    let one = format!(
        "{:#}",
        render_on_one_thread(&model, &templates, &config).unwrap_err()
    );
    let two = format!("{:#}", render(&model, &templates, &config).unwrap_err());
    assert!(one.contains(&late), "{one}");
    assert_eq!(one, two);
}

/// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` names a sibling among the app's own services
/// with backends, by service port, whatever order the model lists them in and whatever other
/// apps lie between; each server checks the port of the sibling's backend at its position,
/// the sibling's backends sorted by host.
#[test]
fn a_health_check_port_index_reads_the_named_sibling_of_the_same_app() {
    let backend = |host: &str, port: u32| Backend {
        host: host.into(),
        ip: host.into(),
        port,
        draining: false,
    };
    let with = |app_id: &str, service_port: u32, backends: Vec<Backend>| {
        let mut service = service();
        service.app_id = app_id.to_string();
        service.service_port = service_port;
        service.backends = backends;
        service
    };
    let mut checked = with(
        "/a",
        10000,
        vec![backend("10.0.0.1", 31000), backend("10.0.0.2", 31001)],
    );
    checked.health_check = Some(check_on_port_index_0("TCP", None));
    let sibling = with(
        "/a",
        10001,
        vec![backend("10.0.0.9", 32001), backend("10.0.0.8", 32002)],
    );
    let model = |index: i64| {
        let mut checked = checked.clone();
        checked.extras_mut().healthcheck_port_index = Some(index);
        Model {
            services: vec![
                with("/a", 10002, vec![backend("10.0.0.7", 33000)]),
                with("/b", 10001, vec![backend("10.0.0.6", 34000)]),
                sibling.clone(),
                with("/a", 10003, Vec::new()),
                checked,
            ],
        }
    };
    let config = render_config(None);
    let templates = Templates::load(&config).unwrap();
    let check_ports = |index: i64| -> Vec<String> {
        let rendered = render(&model(index), &templates, &config).unwrap().config;
        let backend = rendered.split("\nbackend a_10000\n").nth(1).unwrap();
        let backend = backend.split("\nbackend ").next().unwrap();
        backend
            .lines()
            .filter(|line| line.trim_start().starts_with("server "))
            .map(|line| line.split(" port ").nth(1).unwrap_or("own").to_string())
            .collect()
    };
    // Index 1: the app's second service with backends by port (10001, not /b's 10001 nor the
    // empty 10003), its backends sorted by host.
    assert_eq!(check_ports(1), ["32002", "32001"]);
    // -1: the last of /a's services with backends, 10002, with one backend: the second server
    // has none at its position and checks its own port.
    assert_eq!(check_ports(-1), ["33000", "31001"]);
    // Past the end: every server checks its own port.
    assert_eq!(check_ports(3), ["31000", "31001"]);
}

/// The order the render writes services in is a stable sort by (app id, service port), also
/// when ids share their first 16 bytes, are shorter than that, hold a NUL byte, or one app's
/// services are not side by side in the model.
#[test]
fn services_are_ordered_as_a_stable_sort_by_app_id_and_port() {
    let ids = [
        "/a",
        "/a\0",
        "/a\0x",
        "/team12/svc12345",
        "/team12/svc12345/x",
        "/team12/svc123456",
        "/team12/svc1234",
        "/team1/svc9",
        "/é/ü",
        "",
    ];
    let mut services = Vec::new();
    for round in 0..3u32 {
        for (at, id) in ids.iter().enumerate() {
            for port in [10002, 10000, 10001] {
                let mut service = Service::new(*id, port);
                // Which copy of an equal key this is, to check stability.
                service.backend_weight = i64::from(round * 100) + at as i64;
                services.push(service);
                if (at + round as usize) % 4 == 0 {
                    break;
                }
            }
        }
    }
    let mut expected: Vec<&Service> = services.iter().collect();
    expected.sort_by(|a, b| (&a.app_id, a.service_port).cmp(&(&b.app_id, b.service_port)));
    let key = |service: &&Service| {
        (
            service.app_id.clone(),
            service.service_port,
            service.backend_weight,
        )
    };
    let sorted = in_output_order(&services);
    assert_eq!(
        sorted.iter().map(key).collect::<Vec<_>>(),
        expected.iter().map(key).collect::<Vec<_>>()
    );
}
