//! Messages say one true thing each: a stats socket given as `--haproxy-master-socket` is named
//! as such (without pasting HAProxy's help), and a master socket that does not answer says that
//! nothing was changed without claiming a restore. Against a real HAProxy on 127.0.0.1.

mod support;

use haproxy_marathon_sync::error::Failure;

use support::fixture::{candidate, failure_of, Fixture};
use support::haproxy::{free_port, http_config, Haproxy};

#[test]
fn a_stats_socket_given_as_the_master_socket_is_named_as_such() {
    let mut fixture = Fixture::new();
    let port = free_port();
    let run_dir = fixture.path("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let stats = run_dir.join("stats.sock");
    let config = http_config(port, "app", &[("a", "127.0.0.1:9".to_string())]).replacen(
        "global\n",
        &format!("global\n  stats socket {} level admin\n", stats.display()),
        1,
    );
    let config_path = fixture.path("running.cfg");
    std::fs::write(&config_path, &config).unwrap();
    let _haproxy = Haproxy::start(&config_path, &run_dir, port);

    fixture.config.haproxy_master_socket = Some(stats.clone());
    fixture.write_live("global\n");
    let (failure, message) = failure_of(fixture.apply(&candidate("global\n  maxconn 10\n")));
    assert_eq!(failure, Some(Failure::ReloadFailed), "{message}");
    assert_eq!(
        message,
        format!(
            "reloading haproxy failed: the candidate for {} is not applied: HAProxy's master \
             socket {} does not answer `show proc`, so HAProxy could not be reloaded; nothing was \
             changed: this is a stats socket (`stats socket` in the global section, one worker's \
             runtime API), not the master CLI: give --haproxy-master-socket the socket of \
             `haproxy -W -S PATH` (Debian's unit uses /run/haproxy-master.sock)",
            fixture.config.haproxy_config.display(),
            stats.display()
        )
    );
    assert!(!message.contains("restored"), "{message}");
    assert_eq!(fixture.read_live(), "global\n");
}
