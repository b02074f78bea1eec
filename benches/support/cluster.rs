//! The synthetic cluster both benchmarks read: deterministic Marathon answers shaped like real
//! ones, so `pipeline` and `generation` measure the same payload.

/// A cluster of `apps` apps × 3 tasks shaped like a real `/v2/apps` and `/v2/tasks` answer
/// (the fields Marathon 1.5+ sends: resources, env, constraints, upgrade strategy, fetch URIs,
/// version info, labels beyond HAProxy's, port names and labels, full health-check results),
/// about 3.9 KB per app with its tasks. Deterministic: everything derives from the app's index.
/// A third HTTP vhost apps with HTTP health checks on host networking, a third two-port TCP
/// apps with TCP checks, a third bridge (1.5) apps with a vhost and a path.
pub fn synthetic_cluster(apps: usize) -> (String, String) {
    let mut app_json = Vec::with_capacity(apps);
    let mut task_json = Vec::with_capacity(apps * 3);
    for i in 0..apps {
        let team = i % 50;
        let id = format!("/team{team}/svc{i}");
        let port = 10000 + (i as u32 % 50000);
        let health = |protocol: &str| {
            format!(
                r#"{{"protocol":"{protocol}","path":"/health","portIndex":0,"gracePeriodSeconds":30,"intervalSeconds":10,"timeoutSeconds":5,"maxConsecutiveFailures":3,"ignoreHttp1xx":false,"delaySeconds":15}}"#
            )
        };
        let port_definition = |port: u32, name: &str| {
            format!(
                r#"{{"port":{port},"protocol":"tcp","name":"{name}","labels":{{"metrics":"/metrics"}}}}"#
            )
        };
        let common_labels = format!(
            r#""HAPROXY_GROUP":"external","owner":"team{team}","cost-center":"cc-{:04}","tier":"backend","DCOS_SERVICE_SCHEME":"http""#,
            team * 17
        );
        let (body, ports_per_task, has_checks) = match i % 3 {
            0 => (
                format!(
                    r#""labels":{{{common_labels},"HAPROXY_0_VHOST":"svc{i}.example.com"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{}],"requirePorts":false,"healthChecks":[{}],"container":null"#,
                    port_definition(port, "http"),
                    health("HTTP")
                ),
                1,
                true,
            ),
            1 => (
                format!(
                    r#""labels":{{{common_labels}}},"networks":[{{"mode":"host"}}],"portDefinitions":[{},{}],"requirePorts":false,"healthChecks":[{}],"container":null"#,
                    port_definition(port, "data"),
                    port_definition(port + 50000, "admin"),
                    health("TCP")
                ),
                2,
                true,
            ),
            _ => (
                format!(
                    r#""labels":{{{common_labels},"HAPROXY_0_VHOST":"shared{}.example.com","HAPROXY_0_PATH":"/svc{i}"}},"networks":[{{"mode":"container/bridge"}}],"portDefinitions":[],"container":{{"type":"DOCKER","volumes":[],"docker":{{"image":"registry.example.com/team{team}/svc{i}:1.{}.0","forcePullImage":false,"privileged":false,"parameters":[{{"key":"log-driver","value":"journald"}}]}},"portMappings":[{{"containerPort":8080,"hostPort":0,"servicePort":{port},"protocol":"tcp","name":"http","labels":{{}}}}]}},"healthChecks":[]"#,
                    i % 20,
                    i % 9
                ),
                1,
                false,
            ),
        };
        app_json.push(format!(
            r#"{{"id":"{id}","cmd":"exec /opt/svc{i}/bin/server --port $PORT0 --config /etc/svc{i}/config.yaml","args":null,"user":null,"instances":3,"cpus":0.5,"mem":512,"disk":0,"gpus":0,"executor":"","constraints":[["hostname","UNIQUE"],["rack","GROUP_BY","3"]],"uris":[],"fetch":[{{"uri":"https://artifacts.example.com/team{team}/svc{i}/config-{i}.tar.gz","extract":true,"executable":false,"cache":false}}],"storeUrls":[],"backoffSeconds":1,"backoffFactor":1.15,"maxLaunchDelaySeconds":3600,"env":{{"JAVA_OPTS":"-Xmx384m -XX:+UseG1GC","LOG_LEVEL":"info","SERVICE_NAME":"svc{i}","TEAM":"team{team}","CONFIG_URL":"https://config.example.com/team{team}/svc{i}","DATABASE_URL":"postgres://db-team{team}.example.com:5432/svc{i}","FEATURE_FLAGS":"checkout,search,recommendations"}},{body},"readinessChecks":[],"dependencies":[],"upgradeStrategy":{{"minimumHealthCapacity":1,"maximumOverCapacity":1}},"acceptedResourceRoles":["*"],"ipAddress":null,"version":"2026-11-20T10:00:00.000Z","residency":null,"secrets":{{}},"taskKillGracePeriodSeconds":null,"unreachableStrategy":{{"inactiveAfterSeconds":300,"expungeAfterSeconds":600}},"killSelection":"YOUNGEST_FIRST","versionInfo":{{"lastScalingAt":"2026-11-20T10:00:00.000Z","lastConfigChangeAt":"2026-11-19T16:30:00.000Z"}},"tasksStaged":0,"tasksRunning":3,"tasksHealthy":3,"tasksUnhealthy":0,"deployments":[]}}"#
        ));
        for t in 0..3 {
            let host = format!(
                "10.{}.{}.{}",
                (i / 60000) % 250,
                (i / 250) % 250,
                1 + t * 80 + (i % 60)
            );
            let ports: Vec<String> = (0..ports_per_task)
                .map(|p| (31000 + (i * 7 + t * 3 + p) % 1000).to_string())
                .collect();
            let task_id = format!(
                "{}.{:08x}-cc1d-11ee-9a41-{:012x}",
                id.trim_start_matches('/').replace('/', "_"),
                i * 3 + t,
                0x0242_ac11_0000_u64 + t as u64
            );
            let results = if has_checks {
                format!(
                    r#"[{{"alive":true,"consecutiveFailures":0,"firstSuccess":"2026-11-20T10:00:40.000Z","lastFailure":null,"lastSuccess":"2026-11-25T10:15:50.000Z","lastFailureCause":null,"instanceId":"{task_id}","taskId":"{task_id}"}}]"#
                )
            } else {
                "[]".to_string()
            };
            task_json.push(format!(
                r#"{{"id":"{task_id}","appId":"{id}","slaveId":"9d1a8c34-1b3e-4f6a-8e2f-{:012x}-S{t}","host":"{host}","state":"TASK_RUNNING","ports":[{}],"servicePorts":[{port}],"ipAddresses":[{{"ipAddress":"{host}","protocol":"IPv4"}}],"localVolumes":[],"region":"eu-west-1","zone":"eu-west-1{}","role":"slave_public","stagedAt":"2026-11-20T10:00:05.000Z","startedAt":"2026-11-20T10:00:12.000Z","version":"2026-11-20T10:00:00.000Z","healthCheckResults":{results}}}"#,
                i % 4096,
                ports.join(","),
                ["a", "b", "c"][t]
            ));
        }
    }
    (
        format!(r#"{{"apps":[{}]}}"#, app_json.join(",")),
        format!(r#"{{"tasks":[{}]}}"#, task_json.join(",")),
    )
}
