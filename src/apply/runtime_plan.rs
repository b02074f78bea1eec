//! Decides, from the live and the candidate config text alone, whether a change can go through
//! HAProxy's runtime API instead of a reload, and if so which server edits it takes. Knows no
//! model types and sends nothing: [`super::runtime`] executes the plan.
//!
//! Runtime-only means the two texts differ only in `server` lines of backends present in both,
//! by servers added or removed (by name) or by `weight`/`disabled` alone, and every backend
//! touched is one HAProxy 2.6 can change live. The rules, each tried on Debian's HAProxy 2.6.12,
//! are in docs/RUNTIME.md; anything this file does not recognise needs a reload, so a mistake
//! here costs a reload, never a difference between HAProxy and the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use super::summary::SECTION_KEYWORDS;

/// `add server` options HAProxy 2.6 was seen to accept, with how many arguments each takes.
/// Anything else on an added server's line needs a reload.
const ADDABLE_OPTIONS: &[(&str, usize)] = &[
    ("id", 1),
    ("weight", 1),
    ("disabled", 0),
    ("enabled", 0),
    ("check", 0),
    ("inter", 1),
    ("fastinter", 1),
    ("downinter", 1),
    ("fall", 1),
    ("rise", 1),
    ("port", 1),
    ("addr", 1),
    ("maxconn", 1),
    ("minconn", 1),
    ("maxqueue", 1),
    ("on-marked-down", 1),
    ("on-marked-up", 1),
    ("on-error", 1),
    ("error-limit", 1),
    ("observe", 1),
    ("send-proxy", 0),
    ("send-proxy-v2", 0),
    ("check-send-proxy", 0),
    ("backup", 0),
    ("slowstart", 1),
    ("agent-check", 0),
    ("agent-port", 1),
    ("agent-inter", 1),
    ("pool-max-conn", 1),
    ("tfo", 0),
    ("proto", 1),
    ("ws", 1),
];

/// Options HAProxy 2.6 refuses on `add server` (`'<option>' option is not accepted for dynamic
/// server`, or a refusal of its own for `track`), named so the reason can say so.
const REFUSED_OPTIONS: &[&str] = &[
    "cookie",
    "redir",
    "resolvers",
    "init-addr",
    "resolve-prefer",
    "namespace",
    "non-stick",
    "no-check",
    "track",
];

/// Balance algorithms whose server set HAProxy can change live whatever the `hash-type`.
const DYNAMIC_BALANCES: &[&str] = &["roundrobin", "leastconn", "first", "random"];

/// Hash-based algorithms: changeable live only with `hash-type consistent`.
const HASH_BALANCES: &[&str] = &["source", "uri", "url_param", "hdr", "rdp-cookie", "hash"];

/// What a change from the live config to the candidate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The texts are identical.
    NoOp,
    /// Server edits through the runtime API, then the file put in place without a reload.
    RuntimeOnly(Plan),
    /// A full reload, and why (the first reason found).
    ReloadRequired(Reason),
}

/// Why a change needs a reload, for the operator: `backend x_1000 added`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(pub String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server edits of a runtime-only change, backend by backend in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub backends: Vec<BackendPlan>,
}

impl Plan {
    /// Edits over all backends.
    pub fn edit_count(&self) -> usize {
        self.backends.iter().map(|b| b.edits.len()).sum()
    }
}

/// One backend's edits, and every server the candidate gives it (what the executor reconciles
/// the running servers to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPlan {
    pub backend: String,
    pub servers: Vec<Server>,
    pub edits: Vec<Edit>,
}

/// One difference between the live and the candidate servers of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Add(Server),
    Remove(String),
    SetWeight { server: String, weight: u32 },
    SetDisabled { server: String, disabled: bool },
}

/// A `server` line, parsed as far as the runtime path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// The address as written (`10.0.0.1:31000`), sent as is to `add server`.
    pub address: String,
    pub ip: IpAddr,
    pub port: u16,
    pub id: Option<u32>,
    /// `weight`, 1 when the line has none (HAProxy's default).
    pub weight: u32,
    pub disabled: bool,
    pub check: bool,
    /// Every word after the address, as written (what `add server` is given).
    pub options: Vec<String>,
}

impl Server {
    /// The options other than `weight` and `disabled`/`enabled`: two lines with equal name,
    /// address and rest may differ only in what `set server` changes live.
    fn rest(&self) -> Vec<&str> {
        let mut rest = Vec::new();
        let mut words = self.options.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "weight" => {
                    words.next();
                }
                "disabled" | "enabled" => {}
                other => rest.push(other),
            }
        }
        rest
    }

    /// Whether HAProxy cuts this server's connections when it goes to maintenance (tried on
    /// 2.6.12: a request in flight got a 502 on `set server ... state maint`).
    fn shuts_sessions_down(&self) -> bool {
        self.options
            .windows(2)
            .any(|pair| pair[0] == "on-marked-down" && pair[1] == "shutdown-sessions")
    }

    /// Everything but weight and disabled, for comparing two versions of one server.
    fn identity(&self) -> (&str, &str, Option<u32>, Vec<&str>) {
        (&self.name, &self.address, self.id, self.rest())
    }
}

/// Classifies the change from `live` to `candidate`.
pub fn classify(live: &str, candidate: &str) -> Change {
    if live == candidate {
        return Change::NoOp;
    }
    match plan(live, candidate) {
        Ok(plan) if plan.edit_count() > 0 => Change::RuntimeOnly(plan),
        Ok(_) => Change::ReloadRequired(Reason(
            "the configuration changed only in layout (order or spacing of server lines)"
                .to_string(),
        )),
        Err(reason) => Change::ReloadRequired(Reason(reason)),
    }
}

/// The servers of every backend of `text`, by backend and server name; lines that do not parse
/// are left out. Only the tests compare whole server sets.
#[cfg(test)]
pub fn servers_by_backend(text: &str) -> BTreeMap<String, BTreeMap<String, Server>> {
    let (_, sections) = sections(text);
    sections
        .iter()
        .filter(|s| s.kind == "backend")
        .map(|s| {
            let servers = s
                .server_lines()
                .filter_map(|line| parse_server(line).ok())
                .map(|server| (server.name.clone(), server))
                .collect();
            (s.name.to_string(), servers)
        })
        .collect()
}

/// A section: its header line and the text of the lines up to the next header, borrowed whole
/// so an unchanged section (nearly all of them in a run) is one comparison of two slices.
struct Section<'a> {
    kind: &'a str,
    name: &'a str,
    header: &'a str,
    /// The lines after the header, each with its line ending, up to the next header line.
    body: &'a str,
}

impl<'a> Section<'a> {
    /// `backend x`, or `global` for sections without a name.
    fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} section", self.kind)
        } else {
            format!("{} {}", self.kind, self.name)
        }
    }

    fn lines(&self) -> std::str::Lines<'a> {
        self.body.lines()
    }

    fn server_lines(&self) -> impl Iterator<Item = &'a str> {
        self.lines().filter(|line| first_word(line) == "server")
    }

    fn other_lines(&self) -> Vec<&'a str> {
        self.lines()
            .filter(|line| first_word(line) != "server")
            .collect()
    }

    /// The argument of the last line starting with `keyword`.
    fn setting(&self, keyword: &str) -> Option<&'a str> {
        self.lines()
            .rev()
            .find(|line| first_word(line) == keyword)
            .map(|line| line.trim().strip_prefix(keyword).unwrap_or("").trim())
    }

    fn has(&self, keyword: &str) -> bool {
        self.lines().any(|line| first_word(line) == keyword)
    }

    fn same_body(&self, other: &Section) -> bool {
        same_lines(self.body, other.body)
    }
}

/// Whether two texts hold the same lines: equal text does, and text differing only in line
/// endings (`\r\n` against `\n`, a last newline or not) may.
fn same_lines(a: &str, b: &str) -> bool {
    a == b || a.lines().eq(b.lines())
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// Whether `line` opens a section, as `SECTION_KEYWORDS.contains(&first_word(line))` says,
/// without decoding the line into chars when it starts (after ASCII blanks) with an ASCII word:
/// most lines start with a letter no keyword starts with (`server`, `acl`), and a line of
/// printable ASCII ends its first word at the first ASCII whitespace.
fn is_header(line: &str) -> bool {
    let bytes = line.as_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    if let Some(b) = bytes.get(start) {
        if b.is_ascii_graphic() && !SECTION_INITIALS[usize::from(*b)] {
            return false;
        }
    }
    let end = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_graphic())
        .map_or(bytes.len(), |n| start + n);
    match bytes.get(end) {
        None => SECTION_KEYWORDS.contains(&&line[start..end]),
        Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') if start < end => {
            SECTION_KEYWORDS.contains(&&line[start..end])
        }
        // Other whitespace first, or a word going on past ASCII: let `char` decide.
        Some(_) => SECTION_KEYWORDS.contains(&first_word(line)),
    }
}

/// Which bytes start a section keyword, for [`is_header`].
const SECTION_INITIALS: [bool; 256] = {
    let mut initials = [false; 256];
    let mut i = 0;
    while i < SECTION_KEYWORDS.len() {
        initials[SECTION_KEYWORDS[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    initials
};

/// Offsets of the header lines of `lines` (whole lines of a text, starting at `base` in it).
fn header_offsets(lines: &str, base: usize, headers: &mut Vec<usize>) {
    let mut line_start = 0;
    // The line ending is whitespace to `is_header`, so it need not be cut off.
    for_each_newline(lines.as_bytes(), |newline| {
        if is_header(&lines[line_start..=newline]) {
            headers.push(base + line_start);
        }
        line_start = newline + 1;
    });
    if line_start < lines.len() && is_header(&lines[line_start..]) {
        headers.push(base + line_start);
    }
}

/// Calls `found` with the index of every `\n` of `bytes`, in order, looking at eight bytes at a
/// time: lines are short, so a search per line (`split_inclusive`) spends more starting than
/// searching, and this is most of the time of classifying two large configs.
fn for_each_newline(bytes: &[u8], mut found: impl FnMut(usize)) {
    const LOW_SEVEN_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ NEWLINES;
        // The top bit of each byte that is zero (was `\n`) and only those: adding to the low
        // seven bits alone never carries from one byte into the next.
        let mut zeros = !(((word & LOW_SEVEN_BITS) + LOW_SEVEN_BITS) | word | LOW_SEVEN_BITS);
        while zeros != 0 {
            found(base + zeros.trailing_zeros() as usize / 8);
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (i, byte) in chunks.remainder().iter().enumerate() {
        if *byte == b'\n' {
            found(base + i);
        }
    }
}

/// How many leading bytes `a` and `b` share: compared a block at a time, since two configs of
/// a run usually differ in a few lines of megabytes.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let shorter = a.len().min(b.len());
    let mut at = 0;
    while at + BLOCK <= shorter && a[at..at + BLOCK] == b[at..at + BLOCK] {
        at += BLOCK;
    }
    at + a[at..shorter]
        .iter()
        .zip(&b[at..shorter])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many trailing bytes `a` and `b` share, as [`common_prefix`] counts leading ones.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let shorter = a.len().min(b.len());
    let (a, b) = (&a[a.len() - shorter..], &b[b.len() - shorter..]);
    let mut at = shorter;
    while at >= BLOCK && a[at - BLOCK..at] == b[at - BLOCK..at] {
        at -= BLOCK;
    }
    shorter - at
        + a[..at]
            .iter()
            .rev()
            .zip(b[..at].iter().rev())
            .take_while(|(x, y)| x == y)
            .count()
}

/// The lines before the first section, and the sections in file order, of `text` whose header
/// lines start at `headers`.
fn split_at_headers<'a>(text: &'a str, headers: &[usize]) -> (&'a str, Vec<Section<'a>>) {
    let preamble = &text[..headers.first().copied().unwrap_or(text.len())];
    let sections = headers
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = headers.get(i + 1).copied().unwrap_or(text.len());
            // Cut as `lines()` cuts, as it cuts the body's lines: `\r` goes only before `\n`.
            let (header, body) = match text[start..end].split_once('\n') {
                Some((header, body)) => (header.strip_suffix('\r').unwrap_or(header), body),
                None => (&text[start..end], ""),
            };
            let mut words = header.split_whitespace();
            Section {
                kind: words.next().unwrap_or(""),
                name: words.next().unwrap_or(""),
                header,
                body,
            }
        })
        .collect();
    (preamble, sections)
}

/// The preamble and sections of `text`.
#[cfg(test)]
fn sections(text: &str) -> (&str, Vec<Section<'_>>) {
    let mut headers = Vec::new();
    header_offsets(text, 0, &mut headers);
    split_at_headers(text, &headers)
}

/// The preambles and sections of both texts. The lines of their common beginning and of their
/// common end are scanned once, as they hold the same headers at the same offsets (from the
/// start, and from the end): a change of a few servers scans the rest of the text once.
type Split<'a> = (&'a str, Vec<Section<'a>>);
fn sections_of_both<'a>(live: &'a str, candidate: &'a str) -> (Split<'a>, Split<'a>) {
    // Bytes, not `str`: the two texts may part in the middle of a character.
    let (live_bytes, candidate_bytes) = (live.as_bytes(), candidate.as_bytes());
    let shared = common_prefix(live_bytes, candidate_bytes);
    let head = live_bytes[..shared]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |newline| newline + 1);
    // The common end counted after the common beginning, so that the two never overlap, and
    // from its first whole line: the byte before that line is a `\n` in both texts.
    let tail = common_suffix(&live_bytes[shared..], &candidate_bytes[shared..]);
    let tail_lines = live_bytes[live.len() - tail..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(0, |newline| tail - newline - 1);
    let (live_tail, candidate_tail) = (live.len() - tail_lines, candidate.len() - tail_lines);
    let mut live_headers = Vec::new();
    header_offsets(&live[..head], 0, &mut live_headers);
    let mut candidate_headers = live_headers.clone();
    header_offsets(&live[head..live_tail], head, &mut live_headers);
    header_offsets(
        &candidate[head..candidate_tail],
        head,
        &mut candidate_headers,
    );
    let mut tail_headers = Vec::new();
    header_offsets(&live[live_tail..], 0, &mut tail_headers);
    live_headers.extend(tail_headers.iter().map(|at| live_tail + at));
    candidate_headers.extend(tail_headers.iter().map(|at| candidate_tail + at));
    (
        split_at_headers(live, &live_headers),
        split_at_headers(candidate, &candidate_headers),
    )
}

/// Sections keyed by (kind, name, how many earlier sections had that kind and name).
fn keyed<'s, 'a>(sections: &'s [Section<'a>]) -> Vec<((&'a str, &'a str, usize), &'s Section<'a>)> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    sections
        .iter()
        .map(|s| {
            let n = seen.entry((s.kind, s.name)).or_default();
            *n += 1;
            ((s.kind, s.name, *n - 1), s)
        })
        .collect()
}

/// When the two texts do not have the same sections in the same order: the section added or
/// removed, or else the first index where the order differs.
fn section_change(live: &[Section], candidate: &[Section]) -> Result<Option<usize>, String> {
    let same_order = live.len() == candidate.len()
        && live
            .iter()
            .zip(candidate)
            .all(|(a, b)| a.kind == b.kind && a.name == b.name);
    if same_order {
        return Ok(None);
    }
    let (live_keyed, candidate_keyed) = (keyed(live), keyed(candidate));
    let live_keys: HashSet<_> = live_keyed.iter().map(|(k, _)| *k).collect();
    let candidate_keys: HashSet<_> = candidate_keyed.iter().map(|(k, _)| *k).collect();
    if let Some((_, s)) = candidate_keyed.iter().find(|(k, _)| !live_keys.contains(k)) {
        return Err(format!("{} added", s.label()));
    }
    if let Some((_, s)) = live_keyed.iter().find(|(k, _)| !candidate_keys.contains(k)) {
        return Err(format!("{} removed", s.label()));
    }
    // Same keys both sides, so same length: a difference in order is one at some index.
    Ok(live_keyed
        .iter()
        .zip(&candidate_keyed)
        .position(|((a, _), (b, _))| a != b))
}

fn plan(live: &str, candidate: &str) -> Result<Plan, String> {
    let ((live_preamble, live_sections), (candidate_preamble, candidate_sections)) =
        sections_of_both(live, candidate);
    if !same_lines(live_preamble, candidate_preamble) {
        return Err("lines before the first section changed".to_string());
    }
    let order_break = section_change(&live_sections, &candidate_sections)?;
    let mut plan = Plan::default();
    let mut defaults: Option<&Section> = None;
    for (index, (before, after)) in live_sections.iter().zip(&candidate_sections).enumerate() {
        if order_break == Some(index) {
            return Err("the order of sections changed".to_string());
        }
        if after.kind != "backend" {
            if before.header != after.header || !before.same_body(after) {
                return Err(format!("{} changed", after.label()));
            }
            if after.kind == "defaults" {
                defaults = Some(after);
            }
            continue;
        }
        if let Some(backend) = plan_backend(before, after, defaults)? {
            plan.backends.push(backend);
        }
    }
    Ok(plan)
}

/// The edits of one backend present in both, or why it needs a reload.
fn plan_backend(
    before: &Section,
    after: &Section,
    defaults: Option<&Section>,
) -> Result<Option<BackendPlan>, String> {
    if before.header != after.header {
        return Err(format!("{} changed its header line", after.label()));
    }
    // An unchanged backend is no obstacle, whatever its servers are (`abns@` addresses,
    // hostnames, options `add server` refuses).
    if before.same_body(after) {
        return Ok(None);
    }
    let label = after.label();
    // The name goes into CLI commands; HAProxy's own rule for proxy names keeps it one word.
    if !after
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(format!(
            "{label} has a name this tool never sends to HAProxy's CLI"
        ));
    }
    let (old_lines, new_lines) = (before.other_lines(), after.other_lines());
    if old_lines != new_lines {
        return Err(format!(
            "{label} changed: {}",
            first_difference(&old_lines, &new_lines)
        ));
    }
    let old_servers = parse_servers(before)?;
    let new_servers = parse_servers(after)?;
    let mut edits = Vec::new();
    for (name, new) in &new_servers {
        match old_servers.get(name) {
            None => edits.push(Edit::Add(new.clone())),
            Some(old) => edits.extend(set_edits(after.name, old, new)?),
        }
    }
    for name in old_servers.keys().filter(|n| !new_servers.contains_key(*n)) {
        edits.push(Edit::Remove(name.clone()));
    }
    if edits.is_empty() {
        return Ok(None);
    }
    for edit in &edits {
        let leaving = match edit {
            Edit::Remove(name) => name,
            Edit::SetDisabled {
                server,
                disabled: true,
            } => server,
            _ => continue,
        };
        if old_servers[leaving].shuts_sessions_down() {
            return Err(format!(
                "server {}/{leaving} has `on-marked-down shutdown-sessions`: maintenance \
                 would cut its requests in flight",
                after.name
            ));
        }
    }
    changeable_live(after, defaults)?;
    for edit in &edits {
        if let Edit::Add(server) = edit {
            addable(after.name, server)?;
        }
    }
    // File order, so the plan reads like the candidate.
    let servers = after
        .server_lines()
        .filter_map(|line| parse_server(line).ok())
        .collect();
    Ok(Some(BackendPlan {
        backend: after.name.to_string(),
        servers,
        edits,
    }))
}

/// `set server` edits turning `old` into `new`, or why the two differ in more.
fn set_edits(backend: &str, old: &Server, new: &Server) -> Result<Vec<Edit>, String> {
    let what = format!("server {backend}/{}", new.name);
    if old.id != new.id {
        return Err(format!("{what} changed id"));
    }
    if old.address != new.address {
        return Err(format!("{what} changed address"));
    }
    if old.identity() != new.identity() {
        return Err(format!("{what} changed options"));
    }
    let mut edits = Vec::new();
    if old.weight != new.weight {
        edits.push(Edit::SetWeight {
            server: new.name.clone(),
            weight: new.weight,
        });
    }
    if old.disabled != new.disabled {
        edits.push(Edit::SetDisabled {
            server: new.name.clone(),
            disabled: new.disabled,
        });
    }
    Ok(edits)
}

/// Whether HAProxy 2.6 can add servers to this backend live and have them behave as the file
/// says; `defaults` is the section it inherits from.
fn changeable_live(backend: &Section, defaults: Option<&Section>) -> Result<(), String> {
    let label = backend.label();
    if backend.header.split_whitespace().count() > 2 {
        return Err(format!(
            "{label} names its defaults section, which this tool does not follow"
        ));
    }
    if backend.has("cookie") || defaults.is_some_and(|d| d.has("cookie")) {
        return Err(format!(
            "{label} uses cookie (sticky sessions): `add server` refuses `cookie`"
        ));
    }
    if backend.has("default-server") || defaults.is_some_and(|d| d.has("default-server")) {
        return Err(format!(
            "{label} uses default-server, which servers added at runtime do not inherit"
        ));
    }
    if backend.has("server-template") {
        return Err(format!("{label} uses server-template"));
    }
    let setting = |keyword| {
        backend
            .setting(keyword)
            .or_else(|| defaults.and_then(|d| d.setting(keyword)))
    };
    let balance = setting("balance").unwrap_or("roundrobin");
    let algorithm = balance.split(['(', ' ']).next().unwrap_or("");
    if DYNAMIC_BALANCES.contains(&algorithm) {
        return Ok(());
    }
    let consistent = setting("hash-type").is_some_and(|h| first_word(h) == "consistent");
    if HASH_BALANCES.contains(&algorithm) && consistent {
        return Ok(());
    }
    Err(format!(
        "{label} uses `balance {balance}`, whose servers HAProxy cannot change at runtime"
    ))
}

/// Whether `add server` takes this server's line as it is.
fn addable(backend: &str, server: &Server) -> Result<(), String> {
    let what = format!("server {backend}/{}", server.name);
    let mut words = server.options.iter();
    while let Some(word) = words.next() {
        if let Some((_, arguments)) = ADDABLE_OPTIONS.iter().find(|(o, _)| o == word) {
            for _ in 0..*arguments {
                words.next();
            }
        } else if REFUSED_OPTIONS.contains(&word.as_str()) {
            return Err(format!("{what} uses `{word}`, which `add server` refuses"));
        } else {
            return Err(format!(
                "{what} uses `{word}`, which this tool does not add at runtime"
            ));
        }
    }
    Ok(())
}

fn parse_servers(section: &Section) -> Result<BTreeMap<String, Server>, String> {
    let mut servers = BTreeMap::new();
    for line in section.server_lines() {
        let server = parse_server(line)
            .map_err(|why| format!("{}: a server line {why}", section.label()))?;
        let name = server.name.clone();
        if servers.insert(name.clone(), server).is_some() {
            return Err(format!("{} has two servers named {name}", section.label()));
        }
    }
    Ok(servers)
}

/// Parses `server <name> <ip>:<port> [options]`, refusing what could not be sent safely to the
/// CLI: `;` would start a second command, quotes and `#` change how HAProxy splits the line.
fn parse_server(line: &str) -> Result<Server, String> {
    if let Some(bad) = line.trim().chars().find(|c| !safe_char(*c)) {
        return Err(format!(
            "holds {bad:?}, which this tool never sends to HAProxy's CLI"
        ));
    }
    let mut words = line.split_whitespace().skip(1);
    let name = words.next().ok_or("has no name")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    {
        return Err(format!("names server {name:?}"));
    }
    let address = words.next().ok_or("has no address")?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("has address {address} without a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("has address {address}, not an IP and port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("has address {address}, not an IP and port"))?;
    let options: Vec<String> = words.map(str::to_string).collect();
    let mut server = Server {
        name: name.to_string(),
        address: address.to_string(),
        ip,
        port,
        id: None,
        weight: 1,
        disabled: false,
        check: false,
        options,
    };
    let mut iter = server.options.iter();
    while let Some(word) = iter.next() {
        match word.as_str() {
            "id" => {
                let id = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|id| *id > 0);
                server.id = Some(id.ok_or("has an `id` that is not a positive number")?);
            }
            "weight" => {
                let weight = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|w| *w <= 256);
                server.weight = weight.ok_or("has a `weight` outside 0..=256")?;
            }
            "disabled" => server.disabled = true,
            "enabled" => server.disabled = false,
            "check" => server.check = true,
            _ => {}
        }
    }
    Ok(server)
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ' ' || c == '\t' || "._-:/,=+%[]()@".contains(c)
}

/// The first line one side has and the other lacks, for a reason.
fn first_difference(old: &[&str], new: &[&str]) -> String {
    let shown = |line: &str| {
        let line = line.trim();
        if line.chars().count() > 80 {
            format!("{}...", line.chars().take(80).collect::<String>())
        } else {
            line.to_string()
        }
    };
    let at = old
        .iter()
        .zip(new)
        .position(|(a, b)| a != b)
        .unwrap_or(old.len().min(new.len()));
    match (old.get(at), new.get(at)) {
        (Some(a), Some(b)) => format!("`{}` became `{}`", shown(a), shown(b)),
        (Some(a), None) => format!("`{}` removed", shown(a)),
        (None, Some(b)) => format!("`{}` added", shown(b)),
        (None, None) => "lines changed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "global\n  maxconn 100\n\ndefaults\n  mode http\n  timeout client 5s\n\n\
        frontend marathon_http_in\n  bind *:80\n  use_backend app_10000 if { path_beg /a }\n";

    /// A config with `backends`: (name, extra lines, server lines).
    fn config(backends: &[(&str, &str, &[&str])]) -> String {
        let mut text = HEAD.to_string();
        for (name, extra, servers) in backends {
            text.push_str(&format!(
                "\nbackend {name}\n  balance roundrobin\n  mode http\n"
            ));
            text.push_str(extra);
            for server in *servers {
                text.push_str(&format!("  server {server}\n"));
            }
        }
        text
    }

    const A: &str = "10_0_0_1_31000 10.0.0.1:31000 id 11 check inter 3s fall 3";
    const B: &str = "10_0_0_2_31000 10.0.0.2:31000 id 12 check inter 3s fall 3";
    const C: &str = "10_0_0_3_31000 10.0.0.3:31000 id 13 check inter 3s fall 3";

    fn plan_of(live: &str, candidate: &str) -> Plan {
        match classify(live, candidate) {
            Change::RuntimeOnly(plan) => plan,
            other => panic!("expected a runtime plan, got {other:?}"),
        }
    }

    fn reason_of(live: &str, candidate: &str) -> String {
        match classify(live, candidate) {
            Change::ReloadRequired(reason) => reason.0,
            other => panic!("expected a reload, got {other:?}"),
        }
    }

    fn edits(live: &str, candidate: &str) -> Vec<Edit> {
        plan_of(live, candidate)
            .backends
            .into_iter()
            .flat_map(|b| b.edits)
            .collect()
    }

    #[test]
    fn identical_texts_are_a_no_op() {
        let text = config(&[("app_10000", "", &[A])]);
        assert_eq!(classify(&text, &text), Change::NoOp);
    }

    #[test]
    fn scale_up_and_down_are_adds_and_removes() {
        let one = config(&[("app_10000", "", &[A])]);
        let three = config(&[("app_10000", "", &[A, B, C])]);
        let plan = plan_of(&one, &three);
        assert_eq!(plan.backends.len(), 1);
        assert_eq!(plan.backends[0].backend, "app_10000");
        assert_eq!(plan.backends[0].servers.len(), 3);
        let added: Vec<_> = plan.backends[0]
            .edits
            .iter()
            .map(|e| match e {
                Edit::Add(s) => (s.name.as_str(), s.address.as_str(), s.id, s.check),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            added,
            [
                ("10_0_0_2_31000", "10.0.0.2:31000", Some(12), true),
                ("10_0_0_3_31000", "10.0.0.3:31000", Some(13), true)
            ]
        );
        assert_eq!(
            edits(&three, &one),
            [
                Edit::Remove("10_0_0_2_31000".into()),
                Edit::Remove("10_0_0_3_31000".into())
            ]
        );
    }

    #[test]
    fn a_task_move_is_one_add_and_one_remove() {
        let before = config(&[("app_10000", "", &[A, B])]);
        let after = config(&[("app_10000", "", &[A, C])]);
        let found = edits(&before, &after);
        assert_eq!(found.len(), 2);
        assert!(matches!(&found[0], Edit::Add(s) if s.name == "10_0_0_3_31000"));
        assert_eq!(found[1], Edit::Remove("10_0_0_2_31000".into()));
    }

    #[test]
    fn an_emptied_backend_and_a_filled_one_are_runtime_edits() {
        let empty = config(&[("app_10000", "", &[])]);
        let full = config(&[("app_10000", "", &[A])]);
        assert_eq!(
            edits(&full, &empty),
            [Edit::Remove("10_0_0_1_31000".into())]
        );
        assert!(matches!(&edits(&empty, &full)[0], Edit::Add(_)));
    }

    #[test]
    fn weight_and_disabled_alone_are_set_server_edits() {
        let live = config(&[("app_10000", "", &[A, B])]);
        let weighted = config(&[(
            "app_10000",
            "",
            &[&format!("{A} weight 5"), &format!("{B} disabled")],
        )]);
        assert_eq!(
            edits(&live, &weighted),
            [
                Edit::SetWeight {
                    server: "10_0_0_1_31000".into(),
                    weight: 5
                },
                Edit::SetDisabled {
                    server: "10_0_0_2_31000".into(),
                    disabled: true
                }
            ]
        );
        assert_eq!(
            edits(&weighted, &live)[1],
            Edit::SetDisabled {
                server: "10_0_0_2_31000".into(),
                disabled: false
            }
        );
    }

    #[test]
    fn only_changed_backends_are_planned() {
        let live = config(&[("a_1", "", &[A]), ("b_2", "", &[B])]);
        let candidate = config(&[("a_1", "", &[A]), ("b_2", "", &[B, C])]);
        let plan = plan_of(&live, &candidate);
        assert_eq!(plan.backends.len(), 1);
        assert_eq!(plan.backends[0].backend, "b_2");
    }

    #[test]
    fn sections_other_than_backends_reload_when_changed() {
        let live = config(&[("app_10000", "", &[A])]);
        let frontend = live.replace("bind *:80", "bind *:8080");
        assert_eq!(
            reason_of(&live, &frontend),
            "frontend marathon_http_in changed"
        );
        let global = live.replace("maxconn 100", "maxconn 200");
        assert_eq!(reason_of(&live, &global), "global section changed");
        let defaults = live.replace("timeout client 5s", "timeout client 6s");
        assert_eq!(reason_of(&live, &defaults), "defaults section changed");
        let preamble = format!("# generated\n{live}");
        assert_eq!(
            reason_of(&live, &preamble),
            "lines before the first section changed"
        );
    }

    #[test]
    fn backends_added_removed_or_reordered_reload() {
        let one = config(&[("x_1000", "", &[A])]);
        let two = config(&[("x_1000", "", &[A]), ("y_2000", "", &[B])]);
        assert_eq!(reason_of(&one, &two), "backend y_2000 added");
        assert_eq!(reason_of(&two, &one), "backend y_2000 removed");
        let swapped = config(&[("y_2000", "", &[B]), ("x_1000", "", &[A])]);
        assert_eq!(reason_of(&two, &swapped), "the order of sections changed");
        let listen = format!("{one}\nlisten stats\n  bind :9000\n");
        assert_eq!(reason_of(&one, &listen), "listen stats added");
    }

    #[test]
    fn a_backend_option_change_reloads_and_says_which_line() {
        let live = config(&[("x_1000", "", &[A])]);
        let candidate = live.replace("balance roundrobin", "balance leastconn");
        assert_eq!(
            reason_of(&live, &candidate),
            "backend x_1000 changed: `balance roundrobin` became `balance leastconn`"
        );
        let added = config(&[("x_1000", "  option forwardfor\n", &[A])]);
        assert_eq!(
            reason_of(&live, &added),
            "backend x_1000 changed: `option forwardfor` added"
        );
    }

    #[test]
    fn a_server_changing_more_than_weight_or_disabled_reloads() {
        let live = config(&[("x_1000", "", &[A])]);
        let id = config(&[("x_1000", "", &[&A.replace("id 11", "id 99")])]);
        assert_eq!(
            reason_of(&live, &id),
            "server x_1000/10_0_0_1_31000 changed id"
        );
        let address = config(&[("x_1000", "", &[&A.replace("10.0.0.1:", "10.0.0.9:")])]);
        assert_eq!(
            reason_of(&live, &address),
            "server x_1000/10_0_0_1_31000 changed address"
        );
        let check = config(&[("x_1000", "", &[&A.replace("inter 3s", "inter 5s")])]);
        assert_eq!(
            reason_of(&live, &check),
            "server x_1000/10_0_0_1_31000 changed options"
        );
    }

    #[test]
    fn sticky_backends_reload() {
        let sticky = "  cookie mesosphere_server_id insert indirect nocache\n";
        let live = config(&[("x_1000", sticky, &[A])]);
        let candidate = config(&[("x_1000", sticky, &[A, B])]);
        assert_eq!(
            reason_of(&live, &candidate),
            "backend x_1000 uses cookie (sticky sessions): `add server` refuses `cookie`"
        );
        // A removal too: the whole backend is left to reloads.
        assert!(reason_of(&candidate, &live).contains("uses cookie"));
        let in_defaults = |servers: &[&str]| {
            config(&[("x_1000", "", servers)]).replace(
                "mode http\n  timeout",
                "mode http\n  cookie s insert\n  timeout",
            )
        };
        assert!(reason_of(&in_defaults(&[A]), &in_defaults(&[A, B])).contains("uses cookie"));
    }

    #[test]
    fn static_balances_reload_and_dynamic_ones_do_not() {
        let with = |balance: &str, servers: &[&str]| {
            config(&[("x_1000", "", servers)])
                .replace("balance roundrobin", &format!("balance {balance}"))
        };
        for balance in ["static-rr", "source", "uri", "hdr(host)", "url_param id"] {
            let reason = reason_of(&with(balance, &[A]), &with(balance, &[A, B]));
            assert_eq!(
                reason,
                format!(
                    "backend x_1000 uses `balance {balance}`, whose servers HAProxy cannot \
                     change at runtime"
                )
            );
        }
        for balance in ["roundrobin", "leastconn", "first", "random"] {
            plan_of(&with(balance, &[A]), &with(balance, &[A, B]));
        }
        let consistent = |servers: &[&str]| {
            with("source", servers).replace(
                "mode http\n  server",
                "mode http\n  hash-type consistent\n  server",
            )
        };
        plan_of(&consistent(&[A]), &consistent(&[A, B]));
    }

    #[test]
    fn balance_and_hash_type_are_inherited_from_defaults() {
        let with_defaults = |line: &str, servers: &[&str]| {
            let text = config(&[("x_1000", "", servers)])
                .replace("  balance roundrobin\n", "")
                .replace(
                    "mode http\n  timeout",
                    &format!("mode http\n  {line}\n  timeout"),
                );
            text
        };
        let reason = reason_of(
            &with_defaults("balance static-rr", &[A]),
            &with_defaults("balance static-rr", &[A, B]),
        );
        assert!(reason.contains("`balance static-rr`"), "{reason}");
        plan_of(
            &with_defaults("balance leastconn", &[A]),
            &with_defaults("balance leastconn", &[A, B]),
        );
        // No balance anywhere: HAProxy's default, roundrobin.
        plan_of(
            &with_defaults("option httplog", &[A]),
            &with_defaults("option httplog", &[A, B]),
        );
    }

    #[test]
    fn default_server_reloads_because_added_servers_ignore_it() {
        let live = config(&[("x_1000", "  default-server weight 9\n", &[A])]);
        let candidate = config(&[("x_1000", "  default-server weight 9\n", &[A, B])]);
        assert_eq!(
            reason_of(&live, &candidate),
            "backend x_1000 uses default-server, which servers added at runtime do not inherit"
        );
    }

    #[test]
    fn options_add_server_refuses_reload() {
        let live = config(&[("x_1000", "", &[A])]);
        for option in [
            "resolvers dns",
            "init-addr none",
            "redir http://a",
            "cookie abc",
            "track x/y",
        ] {
            let word = option.split(' ').next().unwrap();
            let candidate = config(&[("x_1000", "", &[A, &format!("{B} {option}")])]);
            assert_eq!(
                reason_of(&live, &candidate),
                format!("server x_1000/10_0_0_2_31000 uses `{word}`, which `add server` refuses")
            );
        }
        let unknown = config(&[("x_1000", "", &[A, &format!("{B} ssl verify none")])]);
        assert_eq!(
            reason_of(&live, &unknown),
            "server x_1000/10_0_0_2_31000 uses `ssl`, which this tool does not add at runtime"
        );
        // What marathon-lb's templates emit is addable.
        let usual = config(&[(
            "x_1000",
            "",
            &[
                A,
                &format!("{B} port 9100 weight 3 on-marked-down shutdown-sessions disabled"),
            ],
        )]);
        plan_of(&live, &usual);
        // A refused option on a server that stays is no obstacle to removing another.
        let kept = format!("{A} resolvers dns");
        plan_of(
            &config(&[("x_1000", "", &[&kept, B])]),
            &config(&[("x_1000", "", &[&kept])]),
        );
    }

    #[test]
    fn servers_that_shut_sessions_down_leave_only_by_reload() {
        let cutting = format!("{B} on-marked-down shutdown-sessions");
        let live = config(&[("x_1000", "", &[A, &cutting])]);
        let removed = config(&[("x_1000", "", &[A])]);
        let reason = "server x_1000/10_0_0_2_31000 has `on-marked-down shutdown-sessions`: \
                      maintenance would cut its requests in flight";
        assert_eq!(reason_of(&live, &removed), reason);
        let disabled = config(&[("x_1000", "", &[A, &format!("{cutting} disabled")])]);
        assert_eq!(reason_of(&live, &disabled), reason);
        // Added, weighted or enabled again, it cuts nothing.
        plan_of(&removed, &live);
        plan_of(&disabled, &live);
        let weighted = config(&[("x_1000", "", &[A, &format!("{cutting} weight 3")])]);
        plan_of(&live, &weighted);
    }

    #[test]
    fn lines_the_cli_could_misread_reload() {
        let live = config(&[("x_1000", "", &[A])]);
        let injected = config(&[(
            "x_1000",
            "",
            &[A, &format!("{B};shutdown sessions x_1000/a")],
        )]);
        assert!(reason_of(&live, &injected).contains("holds ';'"));
        let quoted = config(&[("x_1000", "", &[A, &format!("{B} sni \"x\"")])]);
        assert!(reason_of(&live, &quoted).contains("holds '\"'"));
        let comment = config(&[("x_1000", "", &[A, &format!("{B} # note")])]);
        assert!(reason_of(&live, &comment).contains("holds '#'"));
    }

    #[test]
    fn unchanged_backends_never_stand_in_the_way() {
        let tls = "loopback-for-tls abns@wiki_example_com send-proxy-v2";
        let named = "db_1 db.example.com:5432 resolvers dns init-addr none";
        let live = config(&[
            ("tls_1", "", &[tls]),
            ("db_2", "", &[named]),
            ("x_3", "", &[A]),
        ]);
        let candidate = config(&[
            ("tls_1", "", &[tls]),
            ("db_2", "", &[named]),
            ("x_3", "", &[A, B]),
        ]);
        let plan = plan_of(&live, &candidate);
        assert_eq!(plan.backends.len(), 1);
        assert_eq!(plan.backends[0].backend, "x_3");
    }

    #[test]
    fn backend_names_outside_haproxys_rule_reload() {
        let live = config(&[("x;y", "", &[A])]);
        let candidate = config(&[("x;y", "", &[A, B])]);
        assert_eq!(
            reason_of(&live, &candidate),
            "backend x;y has a name this tool never sends to HAProxy's CLI"
        );
    }

    #[test]
    fn addresses_must_be_ip_and_port() {
        let live = config(&[("x_1000", "", &[A])]);
        for address in ["example.com:80", "10.0.0.2", "abns@x", "10.0.0.2:99999"] {
            let candidate = config(&[("x_1000", "", &[A, &format!("b_2 {address} id 12")])]);
            let reason = reason_of(&live, &candidate);
            assert!(
                reason.starts_with("backend x_1000: a server line has address"),
                "{reason}"
            );
        }
        let six = config(&[("x_1000", "", &[A, "b_2 [::1]:80 id 12"])]);
        assert!(matches!(&edits(&live, &six)[0], Edit::Add(s) if s.ip.is_ipv6() && s.port == 80));
    }

    #[test]
    fn duplicate_names_and_layout_only_changes_reload() {
        let live = config(&[("x_1000", "", &[A, B])]);
        let twice = config(&[("x_1000", "", &[A, B, &A.replace("id 11", "id 14")])]);
        assert_eq!(
            reason_of(&live, &twice),
            "backend x_1000 has two servers named 10_0_0_1_31000"
        );
        let swapped = config(&[("x_1000", "", &[B, A])]);
        assert!(reason_of(&live, &swapped).contains("only in layout"));
    }

    /// Sections are compared as text first and scanned once where the two texts agree, so the
    /// edges of that: texts parting inside a character, in line endings only, and headers
    /// behind whitespace that is not ASCII.
    #[test]
    fn text_shortcuts_keep_line_by_line_results() {
        let live = config(&[("x_1000", "  description caf\u{e9}\n", &[A, B])]);
        // U+00E9 and U+00E8 share their first byte: the common beginning ends inside it.
        let accent = live.replace('\u{e9}', "\u{e8}");
        assert_eq!(
            reason_of(&live, &accent),
            "backend x_1000 changed: `description caf\u{e9}` became `description caf\u{e8}`"
        );
        let crlf = live.replace('\n', "\r\n");
        assert!(reason_of(&live, &crlf).contains("only in layout"));
        let moved = config(&[("x_1000", "  description caf\u{e9}\n", &[A, C])]);
        assert_eq!(
            classify(&live, &moved),
            classify(&crlf, &moved.replace('\n', "\r\n"))
        );
        let ideographic = format!("{live}\u{3000}backend y_1000\n");
        assert_eq!(reason_of(&live, &ideographic), "backend y_1000 added");
    }

    #[test]
    fn bad_ids_and_weights_reload() {
        let live = config(&[("x_1000", "", &[A])]);
        for (line, why) in [
            ("b_2 10.0.0.2:1 id 0", "`id`"),
            ("b_2 10.0.0.2:1 id x", "`id`"),
            ("b_2 10.0.0.2:1 weight 300", "`weight`"),
        ] {
            let reason = reason_of(&live, &config(&[("x_1000", "", &[A, line])]));
            assert!(reason.contains(why), "{reason}");
        }
    }

    /// A small seeded generator (xorshift64*), so the property tests need no crate and replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// One generated server: (index in a pool of 40, weight, disabled, check).
    type Gen = (u64, Option<u32>, bool, bool);

    fn line(server: &Gen) -> String {
        let (n, weight, disabled, check) = server;
        let mut text = format!(
            "s_{n} 10.0.{}.{}:{} id {}",
            n / 10,
            n % 10 + 1,
            31000 + n,
            n + 1
        );
        if *check {
            text.push_str(" check inter 3s fall 3");
        }
        if let Some(w) = weight {
            text.push_str(&format!(" weight {w}"));
        }
        if *disabled {
            text.push_str(" disabled");
        }
        text
    }

    fn render(backends: &[Vec<Gen>]) -> String {
        let lines: Vec<Vec<String>> = backends
            .iter()
            .map(|b| b.iter().map(line).collect())
            .collect();
        let refs: Vec<Vec<&str>> = lines
            .iter()
            .map(|b| b.iter().map(String::as_str).collect())
            .collect();
        let named: Vec<String> = (0..backends.len()).map(|i| format!("app_{i}")).collect();
        let specs: Vec<(&str, &str, &[&str])> = named
            .iter()
            .zip(&refs)
            .map(|(name, servers)| (name.as_str(), "", servers.as_slice()))
            .collect();
        config(&specs)
    }

    fn random_backends(rng: &mut Rng) -> Vec<Vec<Gen>> {
        (0..1 + rng.below(4))
            .map(|_| {
                let mut picked: Vec<u64> = (0..40).filter(|_| rng.chance(15)).collect();
                picked.truncate(8);
                picked
                    .into_iter()
                    .map(|n| {
                        (
                            n,
                            rng.chance(30).then(|| rng.below(257) as u32),
                            rng.chance(20),
                            n % 3 != 0,
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// Server edits a scheduler could make: adds, removes, weight and disabled changes.
    fn mutate_servers(rng: &mut Rng, backends: &[Vec<Gen>]) -> Vec<Vec<Gen>> {
        backends
            .iter()
            .map(|servers| {
                let mut out: Vec<Gen> = Vec::new();
                for &(n, w, d, c) in servers {
                    if rng.chance(25) {
                        continue;
                    }
                    let w = if rng.chance(20) {
                        Some(rng.below(257) as u32)
                    } else {
                        w
                    };
                    let d = if rng.chance(15) { !d } else { d };
                    out.push((n, w, d, c));
                }
                for n in 0..40 {
                    // A name the backend had comes back only as it was: the same name with other
                    // options is a changed server, which reloads.
                    if rng.chance(5) && !servers.iter().any(|s| s.0 == n) {
                        let at = rng.below(out.len() as u64 + 1) as usize;
                        out.insert(at, (n, None, rng.chance(10), rng.chance(50)));
                    }
                }
                out
            })
            .collect()
    }

    /// The live servers with the plan's edits applied, by backend.
    fn applied(live: &str, plan: &Plan) -> BTreeMap<String, BTreeMap<String, Server>> {
        let mut backends = servers_by_backend(live);
        for backend in &plan.backends {
            let servers = backends
                .get_mut(&backend.backend)
                .expect("planned backend is live");
            for edit in &backend.edits {
                match edit {
                    Edit::Add(server) => {
                        assert!(servers
                            .insert(server.name.clone(), server.clone())
                            .is_none());
                    }
                    Edit::Remove(name) => {
                        assert!(servers.remove(name).is_some());
                    }
                    Edit::SetWeight { server, weight } => {
                        servers.get_mut(server).unwrap().weight = *weight
                    }
                    Edit::SetDisabled { server, disabled } => {
                        servers.get_mut(server).unwrap().disabled = *disabled
                    }
                }
            }
        }
        backends
    }

    /// A server as the runtime sees it: address, id, weight, disabled, the other options.
    type View = (String, Option<u32>, u32, bool, Vec<String>);

    /// What the runtime can see of each server: everything but how the options are spelled.
    fn running_view(
        backends: BTreeMap<String, BTreeMap<String, Server>>,
    ) -> BTreeMap<String, BTreeMap<String, View>> {
        backends
            .into_iter()
            .map(|(b, servers)| {
                let servers = servers
                    .into_values()
                    .map(|s| {
                        let rest = s.rest().into_iter().map(String::from).collect();
                        (
                            s.name.clone(),
                            (s.address.clone(), s.id, s.weight, s.disabled, rest),
                        )
                    })
                    .collect();
                (b, servers)
            })
            .collect()
    }

    #[test]
    fn plans_turn_the_live_servers_into_the_candidates() {
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let before = random_backends(&mut rng);
            let after = mutate_servers(&mut rng, &before);
            let (live, candidate) = (render(&before), render(&after));
            match classify(&live, &candidate) {
                Change::NoOp => assert_eq!(live, candidate, "seed {seed}"),
                Change::RuntimeOnly(plan) => assert_eq!(
                    running_view(applied(&live, &plan)),
                    running_view(servers_by_backend(&candidate)),
                    "seed {seed}:\n{live}\n---\n{candidate}"
                ),
                // Only a reorder of unchanged servers may reload here.
                Change::ReloadRequired(reason) => {
                    assert!(reason.0.contains("only in layout"), "seed {seed}: {reason}");
                    assert_eq!(
                        running_view(servers_by_backend(&live)),
                        running_view(servers_by_backend(&candidate)),
                        "seed {seed}"
                    );
                }
            }
        }
    }

    /// `text` with `edit` applied to its first server line.
    fn edit_first_server(text: &str, edit: impl Fn(&str) -> String) -> String {
        let mut done = false;
        let mut out = String::new();
        for line in text.lines() {
            if !done && line.trim_start().starts_with("server ") {
                out.push_str(&edit(line));
                done = true;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn any_change_outside_server_lines_reloads() {
        let structural: &[fn(&str) -> String] = &[
            |t| t.replacen("balance roundrobin", "balance static-rr", 1),
            |t| {
                t.replacen(
                    "mode http\n  server",
                    "mode http\n  option forwardfor\n  server",
                    1,
                )
            },
            |t| t.replace("bind *:80", "bind *:81"),
            |t| format!("{t}\nbackend extra_1\n  balance roundrobin\n"),
            |t| edit_first_server(t, |l| l.replacen(" id ", " id 9", 1)),
            |t| edit_first_server(t, |l| format!("{l} maxconn 5")),
        ];
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
            let before = random_backends(&mut rng);
            let mut after = mutate_servers(&mut rng, &before);
            // The first server stays, so a mutation of the first server line changes a server
            // both sides have.
            if let Some(first) = before[0].first() {
                after[0].retain(|s| s.0 != first.0);
                after[0].insert(0, *first);
            }
            let live = render(&before);
            let mutation = structural[rng.below(structural.len() as u64) as usize];
            let candidate = mutation(&render(&after));
            if candidate == render(&after) {
                continue; // the mutation found nothing to change
            }
            assert!(
                matches!(classify(&live, &candidate), Change::ReloadRequired(_)),
                "seed {seed}:\n{live}\n---\n{candidate}"
            );
        }
    }
}
