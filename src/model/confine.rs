//! Keeps a raw template label (`HAPROXY_{n}_BACKEND_HEAD`, ...) inside its own section. A
//! template label is configuration text by design, so it may write any directive of the
//! section it stands in for (http-request rules, ACLs, server options, timeouts); it may not
//! start another section, use a directive that changes the HAProxy process, runs code or reads
//! files as root, or reach HAProxy's environment. Pure text work, no I/O; the model calls it
//! for every template label, the render again on a label's output with its placeholders
//! filled in and its own section known.
//!
//! The check reads the text as HAProxy 2.6 reads a configuration: line by line (a `\r` ends a
//! line as well, and a line continued with a trailing `\` is read joined too), words split on
//! unquoted whitespace, `'` and `"` quoting, `\` escapes and `#` comments. It looks at the
//! first word of every line and at a few words anywhere in a line.

/// Section keywords: a line starting with one opens a new section. HAProxy 2.6's own, the
/// ones later versions add, and SPOE's (read from its own files, refused all the same).
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
    "acme",
    "spoe-agent",
    "spoe-message",
    "spoe-group",
];

/// The sections a per-service label may open, and only as its first line: marathon-lb's
/// `FRONTEND_HEAD`, `BACKEND_HEAD` and `USERLIST_HEAD` start their service's own section.
const HEAD_SECTIONS: &[&str] = &["frontend", "backend", "userlist"];

/// Directives refused as the first word of a line, each with why. Most are global-only (so
/// HAProxy would refuse them in a proxy section anyway); they are named here so that the
/// warning says what was attempted, and in case a section start slips past.
const PROCESS_KEYWORDS: &[(&str, &str)] = &[
    (
        "master-worker",
        "turns on the master process, which starts `program` sections",
    ),
    ("user", "changes the user HAProxy runs as"),
    ("group", "changes the group HAProxy runs as"),
    ("uid", "changes the user HAProxy runs as"),
    ("gid", "changes the group HAProxy runs as"),
    ("chroot", "changes the process's root directory"),
    ("daemon", "detaches the process"),
    ("nbthread", "changes the process's threads"),
    ("nbproc", "changes the process count"),
    ("thread-groups", "changes the process's threads"),
    ("cpu-map", "changes the process's CPU binding"),
    ("ulimit-n", "changes the process's limits"),
    (
        "setenv",
        "changes the environment that programs and `$VAR` see",
    ),
    (
        "presetenv",
        "changes the environment that programs and `$VAR` see",
    ),
    (
        "resetenv",
        "changes the environment that programs and `$VAR` see",
    ),
    (
        "unsetenv",
        "changes the environment that programs and `$VAR` see",
    ),
    ("insecure-fork-wanted", "lets HAProxy fork programs"),
    ("insecure-setuid-wanted", "lets HAProxy run setuid programs"),
    ("external-check", "runs a command as a health check"),
    ("command", "is a program's command line"),
    ("pidfile", "writes a file as root"),
    (
        "set-dumpable",
        "lets the process dump its memory, secrets included",
    ),
    (
        "expose-experimental-directives",
        "unlocks experimental directives",
    ),
    (
        "ssl-engine",
        "loads an OpenSSL engine (code) into the process",
    ),
    (
        "ssl-provider",
        "loads an OpenSSL provider (code) into the process",
    ),
    (
        "ssl-provider-path",
        "loads OpenSSL providers (code) from a directory",
    ),
    ("h1-case-adjust-file", "reads a file as root"),
    ("server-state-base", "reads server-state files as root"),
    ("server-state-file", "reads a server-state file as root"),
    (
        "server-state-file-name",
        "reads a server-state file as root",
    ),
    (
        "load-server-state-from-file",
        "reads a server-state file as root",
    ),
    ("errorfile", "reads a file as root and serves it to clients"),
    (
        "stats",
        "the stats page and socket show and, with `admin`, change every backend",
    ),
];

/// First-word prefixes refused: Lua (code) and the device-detection modules (libraries and
/// data files loaded as root).
const PROCESS_PREFIXES: &[(&str, &str)] = &[
    ("lua", "runs Lua code"),
    ("51degrees-", "loads a device-detection data file as root"),
    ("wurfl-", "loads a device-detection data file as root"),
    ("deviceatlas-", "loads a device-detection data file as root"),
];

/// Words refused anywhere in a line (compared in lower case), with why.
const WORDS: &[(&str, &str)] = &[
    ("external-check", "runs a command as a health check"),
    ("file", "reads a file as root and serves it to clients"),
    ("lf-file", "reads a file as root and serves it to clients"),
    ("errorfile", "reads a file as root and serves it to clients"),
    (
        "spoe",
        "reads a SPOE configuration file and talks to an outside agent",
    ),
];

/// Prefixes of words refused anywhere in a line (actions and converters taking a file).
const WORD_PREFIXES: &[(&str, &str)] = &[
    ("lua.", "runs Lua code"),
    (
        "set-map(",
        "changes a map shared by every app (domain2backend.map among them)",
    ),
    (
        "del-map(",
        "changes a map shared by every app (domain2backend.map among them)",
    ),
    ("add-acl(", "changes an ACL file shared by every app"),
    ("del-acl(", "changes an ACL file shared by every app"),
];

/// Address prefixes that are not the network: a UNIX socket (a path, or `unix@`, `abns@`), an
/// inherited file descriptor or socket pair. Bound, they create or replace a file as root;
/// as a server, they reach a local socket (the Docker API, say) with HAProxy's rights.
const LOCAL_ADDRESSES: &[&str] = &["/", "unix@", "abns@", "fd@", "sockpair@", "uxst@", "uxdg@"];

/// Which section start a label's text may begin with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heading {
    /// The section is not known (the model): any one of [`HEAD_SECTIONS`], first line only.
    AnyHead,
    /// This section keyword only, first line only (the label of a `*_HEAD` section).
    Only(&'static str),
    /// No section start at all: the label is a fragment of a section.
    None,
}

/// The section a template label stands in for opens, if any: `BACKEND_HEAD` → `backend`.
pub fn heading_of(section: &str) -> Heading {
    match section {
        "FRONTEND_HEAD" => Heading::Only("frontend"),
        "BACKEND_HEAD" => Heading::Only("backend"),
        "USERLIST_HEAD" => Heading::Only("userlist"),
        _ => Heading::None,
    }
}

/// Checks a template label's text; `Err` names the line, the keyword and why it is refused.
pub fn check(text: &str, heading: Heading) -> Result<(), String> {
    let physical: Vec<&str> = text.split(['\n', '\r']).collect();
    let mut reader = LineReader::new(heading);
    for (at, line) in physical.iter().enumerate() {
        reader.check_line(at + 1, line)?;
    }
    // A line continued with `\` is also read joined, as a parser that continues lines would.
    let mut reader = LineReader::new(heading);
    let mut joined = String::new();
    let mut start = 1;
    for (at, line) in physical.iter().enumerate() {
        if joined.is_empty() {
            start = at + 1;
        }
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            joined += &line[..line.len() - 1];
            continue;
        }
        if joined.is_empty() {
            reader.check_line(at + 1, line)?;
            continue;
        }
        joined += line;
        reader.check_line(start, &joined)?;
        joined.clear();
    }
    if !joined.is_empty() {
        reader.check_line(start, &joined)?;
    }
    Ok(())
}

/// The state carried from line to line: whether a directive was seen yet (a head section may
/// only be opened by the first), and whether that opened a userlist (where `user` and `group`
/// are the section's own directives).
struct LineReader {
    heading: Heading,
    seen_directive: bool,
    userlist: bool,
}

impl LineReader {
    fn new(heading: Heading) -> LineReader {
        LineReader {
            heading,
            seen_directive: false,
            userlist: false,
        }
    }

    fn check_line(&mut self, number: usize, line: &str) -> Result<(), String> {
        let at_line = |why: String| format!("line {number}: {why}");
        let words = words(line).map_err(at_line)?;
        let Some(first) = words.first() else {
            return Ok(());
        };
        let first = first.to_ascii_lowercase();
        let is_first_directive = !std::mem::replace(&mut self.seen_directive, true);
        check_first_word(&first, is_first_directive, self.heading, self.userlist)
            .map_err(at_line)?;
        if is_first_directive && first == "userlist" {
            self.userlist = true;
        }
        check_words(&first, &words).map_err(at_line)
    }
}

fn check_first_word(
    first: &str,
    is_first_directive: bool,
    heading: Heading,
    userlist: bool,
) -> Result<(), String> {
    if first.starts_with('.') {
        return Err(format!(
            "`{first}` is a conditional or diagnostic directive, read before any section; a \
             template label may not use one"
        ));
    }
    if SECTIONS.contains(&first) {
        let allowed = is_first_directive
            && match heading {
                Heading::AnyHead => HEAD_SECTIONS.contains(&first),
                Heading::Only(own) => own == first,
                Heading::None => false,
            };
        if !allowed {
            return Err(format!(
                "`{first}` starts a section; a template label may only write directives of \
                 its own section"
            ));
        }
        return Ok(());
    }
    if userlist && (first == "user" || first == "group") {
        return Ok(());
    }
    if let Some((_, why)) = PROCESS_KEYWORDS.iter().find(|(word, _)| *word == first) {
        return Err(format!("`{first}` {why}"));
    }
    if let Some((_, why)) = PROCESS_PREFIXES
        .iter()
        .find(|(prefix, _)| first.starts_with(prefix))
    {
        return Err(format!("`{first}` {why}"));
    }
    Ok(())
}

fn check_words(first: &str, words: &[String]) -> Result<(), String> {
    for word in words {
        let lower = word.to_ascii_lowercase();
        if let Some((_, why)) = WORDS.iter().find(|(refused, _)| *refused == lower) {
            return Err(format!("`{lower}` {why}"));
        }
        if let Some((prefix, why)) = WORD_PREFIXES
            .iter()
            .find(|(prefix, _)| lower.starts_with(prefix))
        {
            return Err(format!("`{}` {why}", prefix.trim_end_matches('(')));
        }
        if sample_call(&lower, "env").is_some() {
            return Err(
                "`env(...)` reads HAProxy's environment (our credentials among it)".to_string(),
            );
        }
        if sample_call(&lower, "map").is_some() || lower.contains(",map_") {
            return Err("`map` reads a file as root and returns its values to clients".to_string());
        }
    }
    let address = match first {
        "bind" => words.get(1),
        "server" | "default-server" => words.get(2),
        "server-template" => words.get(3),
        "dispatch" => words.get(1),
        _ => None,
    };
    if let Some(address) = address {
        let lower = address.to_ascii_lowercase();
        let local = lower.split(',').find(|part| {
            LOCAL_ADDRESSES
                .iter()
                .any(|prefix| part.trim().starts_with(prefix))
        });
        if let Some(local) = local {
            return Err(format!(
                "`{first} {local}` is a local socket or file descriptor, not a network \
                 address: bound, it creates a file as root; as a server it reaches a local \
                 service with HAProxy's rights"
            ));
        }
    }
    Ok(())
}

/// Where `name(` starts as a sample fetch or converter in `word`: at the start or after a
/// character that cannot be part of a longer name (`%[env(`, `,map(`, `{ env(`).
fn sample_call(word: &str, name: &str) -> Option<usize> {
    let call = format!("{name}(");
    word.match_indices(&call).map(|(at, _)| at).find(|&at| {
        at == 0
            || !word[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    })
}

/// HAProxy's word splitting of one line (quotes removed, escapes applied, comment dropped),
/// refusing environment references: `$NAME` / `${NAME}` inside double quotes (the only place
/// HAProxy 2.6 expands them: `.notice u:$HOME` prints `u:$HOME`, `.notice "q:$HOME"` the
/// home directory), and `${` anywhere outside single quotes, which is never needed. A bare
/// `$NAME` outside quotes is left alone: HAProxy does not expand it, and crypt(3) password
/// hashes (`$6$salt$...`) are written that way. An escaped `\$` or `\x24` is not expanded.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut single = false;
    let mut double = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\'' if !double => {
                single = !single;
                in_word = true;
            }
            '"' if !single => {
                double = !double;
                in_word = true;
            }
            '\\' if !single => {
                // HAProxy decodes `\xHH`, `\t`, `\n`, `\r` and passes other escaped
                // characters through: `\x67lobal` is the word `global` to it.
                match chars.next() {
                    Some('x') => {
                        let hex: String = chars.clone().take(2).collect();
                        match u8::from_str_radix(&hex, 16) {
                            Ok(byte) if hex.len() == 2 => {
                                chars.next();
                                chars.next();
                                word.push(char::from(byte));
                            }
                            _ => word.push('x'),
                        }
                    }
                    Some('t') => word.push('\t'),
                    Some('n') => word.push('\n'),
                    Some('r') => word.push('\r'),
                    Some(next) => word.push(next),
                    None => {}
                }
                in_word = true;
            }
            '$' if !single => {
                let next = chars.peek().copied();
                let braced = next == Some('{');
                let named = next.is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.');
                if braced || (double && named) {
                    return Err(
                        "an environment reference (`$NAME`, `${NAME}`) reads HAProxy's \
                         environment (our credentials among it)"
                            .to_string(),
                    );
                }
                word.push(ch);
                in_word = true;
            }
            '#' if !single && !double => break,
            c if c.is_whitespace() && !single && !double => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template labels of the marathon-lb corpus, and marathon-lb's documented examples.
    #[test]
    fn labels_marathon_lb_users_write_are_accepted() {
        let accepted = [
            "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  timeout server 1h\n",
            "\r\nfrontend {backend}\r\n  bind {bindAddr}:{servicePort}{sslCert}{bindOptions}\r\n",
            "\nuserlist user_{backend}\n  user {user} password {passwd}\n  group admins users x\n",
            "  option  httpchk GET {healthCheckPath} HTTP/1.1\\r\\nHost:\\ tpl.example.com\n  \
             timeout check {healthCheckTimeoutSeconds}s\n  # port {healthCheckPort} file\n",
            "  option forwardfor except 127.0.0.0/8\n  http-request set-header X-Forwarded-Port \
             %[dst_port]\n",
            "  server {serverName} {host_ipv4}:{port}{cookieOptions}{healthCheckOptions}\n",
            "  use_backend {backend} if {{ ssl_fc_sni -m end {hostname} }}\n",
            "  http-request set-path %[path,regsub(^{proxypath}/?,/)]\n",
            "  acl hdr_location res.hdr(Location) -m found\n  http-response replace-header \
             Location ^https?://{hostname}(:[0-9]+)?(/.*) {rootpath}\\2 if hdr_location\n",
            "  http-request auth realm \"{realm}\" if !auth_x\n",
            "  acl network_allowed src -f /etc/haproxy/allowed.lst\n",
            "\nuserlist user_{backend}\n  user backup password $6$rounds=5000$salt$Dq0Pz1kq\n",
            "  http-request deny if { req.hdr(x-env) -m found }\n",
            "  bind 10.0.0.1:443 ssl crt /etc/ssl/a.pem verify required ca-file /etc/ssl/ca.pem\n",
            "  server x 10.0.0.1:80 check\n  tcp-check connect\n",
        ];
        for text in accepted {
            assert_eq!(check(text, Heading::AnyHead), Ok(()), "{text:?}");
        }
        assert_eq!(
            check("\nbackend {backend}\n", heading_of("BACKEND_HEAD")),
            Ok(())
        );
    }

    #[test]
    fn section_starts_are_refused_except_a_head_s_own() {
        let refused = [
            (
                "\nbackend b\n  mode http\nglobal\n  master-worker\n",
                "global",
            ),
            (
                "  mode http\nprogram evil\n  command touch /tmp/x\n",
                "program",
            ),
            ("\nbackend a\nbackend b\n", "backend"),
            ("  acl x src 1.2.3.4\n\r  listen evil", "listen"),
            ("  acl x src 1.2.3.4\n  .if defined(X)\n", ".if"),
            ("  .diag \"hello\"\n", ".diag"),
            ("  timeout server 1s\\\nglobal\n", "global"),
            ("  GLOBAL\n", "global"),
            ("\tresolvers dns\n", "resolvers"),
        ];
        for (text, keyword) in refused {
            let err = check(text, Heading::AnyHead).unwrap_err();
            assert!(err.contains(&format!("`{keyword}`")), "{text:?}: {err}");
        }
        assert!(check("\nfrontend evil\n", heading_of("BACKEND_HEAD")).is_err());
        assert!(check("backend evil\n", heading_of("HTTP_FRONTEND_ACL")).is_err());
        assert!(check("  user x\n", heading_of("BACKEND_HEAD")).is_err());
    }

    #[test]
    fn process_code_and_file_keywords_are_refused() {
        let refused = [
            ("  stats socket ipv4@0.0.0.0:9999 level admin\n", "stats"),
            ("  stats admin if TRUE\n", "stats"),
            ("  lua-load /tmp/x.lua\n", "lua-load"),
            ("  http-request lua.evil\n", "lua."),
            ("  option external-check\n", "external-check"),
            ("  external-check command /bin/sh\n", "external-check"),
            ("  setenv X 1\n", "setenv"),
            ("  user root\n", "user"),
            ("  chroot /\n", "chroot"),
            ("  daemon\n", "daemon"),
            ("  nbthread 64\n", "nbthread"),
            (
                "  http-request return status 200 file /etc/shadow\n",
                "file",
            ),
            ("  http-error status 503 lf-file /etc/shadow\n", "lf-file"),
            ("  errorfile 503 /etc/shadow\n", "errorfile"),
            (
                "  http-request set-map(/etc/haproxy/domain2backend.map) a b\n",
                "set-map",
            ),
            ("  http-request set-header X %[env(SECRET)]\n", "env(...)"),
            ("  http-request set-var(txn.x) env(SECRET)\n", "env(...)"),
            (
                "  http-request set-header X %[src,map(/etc/ppp/chap-secrets)]\n",
                "map",
            ),
            (
                "  http-request set-header X \"${SECRET}\"\n",
                "environment reference",
            ),
            (
                "  http-request set-header X \"$SECRET\"\n",
                "environment reference",
            ),
            (
                "  http-request set-header X ${SECRET}\n",
                "environment reference",
            ),
            ("  bind /etc/passwd\n", "local socket"),
            ("  bind 0.0.0.0:80,unix@/tmp/x\n", "local socket"),
            ("  server docker /var/run/docker.sock\n", "local socket"),
            (
                "  server docker unix@/var/run/docker.sock\n",
                "local socket",
            ),
            ("  filter spoe engine x config /etc/shadow\n", "spoe"),
        ];
        for (text, keyword) in refused {
            let err = check(text, Heading::AnyHead).unwrap_err();
            assert!(err.contains(keyword), "{text:?}: {err}");
            assert!(err.starts_with("line "), "{err}");
        }
    }

    #[test]
    fn quoting_escapes_and_comments_are_read_as_haproxy_reads_them() {
        assert!(check("  # global\n", Heading::None).is_ok());
        assert!(check("  acl x hdr(a) -m str 'global ${X}'\n", Heading::None).is_ok());
        assert!(check("  http-request set-header X \"a \\$HOME\"\n", Heading::None).is_ok());
        assert!(check(
            "  http-request set-header X-Env ok # env(X)\n",
            Heading::None
        )
        .is_ok());
        assert!(check("  http-request set-header X a\\ file\n", Heading::None).is_ok());
        assert!(check(
            "  http-request set-header X \"\\x24{HOME}\"\n",
            Heading::None
        )
        .is_ok());
        // Escapes HAProxy decodes are decoded before the words are compared.
        for hidden in [
            "  \\x67lobal\n",
            "  \"global\"\n",
            "  http-request set-header X %[\\x65nv(SECRET)]\n",
            "  'program' x\n",
        ] {
            assert!(check(hidden, Heading::None).is_err(), "{hidden:?}");
        }
    }
}
