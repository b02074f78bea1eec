//! What an apply tells people: the one summary line (backends and servers added and removed,
//! read from the config text alone), one line per changed backend (named with its app id when
//! the caller hands in which app each backend serves), and unified diffs. Knows HAProxy's
//! section syntax, not the model.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use similar::TextDiff;

/// Keywords that open a section in an HAProxy 2.6 configuration: a line whose first word is one
/// of these opens a section (read by the summary and the runtime-update classifier alike).
pub(super) const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
];

/// Backends (`backend NAME` sections) and their servers (`server NAME ...` lines) of a config,
/// borrowed from its text: read once per config and handed to the guard, the summary and the
/// run record, since the candidate of a large cluster is megabytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory<'a> {
    pub backends: SortedSet<&'a str>,
    pub servers: Servers<'a>,
    /// Beside each of `backends`: where its server names end in `servers` and its server
    /// lines in `lines` (each starts where the backend before it ends).
    ends: Vec<(usize, usize)>,
    /// Each backend's server lines in turn, in the config's order: where the text after each
    /// `server` keyword starts (in the text `servers` keeps). Their addresses are read from them
    /// only for a backend whose lines changed (issue 14: a list of every address cost 16 bytes
    /// a server, 4 here).
    lines: LineStarts,
}

/// Places in an inventory's text: `u32` for a text under 4 GiB, `usize` beyond (equal when
/// they hold the same places, however kept).
#[derive(Debug, Eq)]
enum LineStarts {
    Narrow(Vec<u32>),
    Wide(Vec<usize>),
}

impl Default for LineStarts {
    fn default() -> LineStarts {
        LineStarts::Narrow(Vec::new())
    }
}

impl PartialEq for LineStarts {
    fn eq(&self, other: &LineStarts) -> bool {
        self.len() == other.len() && self.at(0..self.len()).eq(other.at(0..other.len()))
    }
}

impl LineStarts {
    fn len(&self) -> usize {
        match self {
            LineStarts::Narrow(starts) => starts.len(),
            LineStarts::Wide(starts) => starts.len(),
        }
    }

    fn of<I: ScanIndex>(starts: Vec<I>) -> LineStarts {
        I::line_starts(starts)
    }

    /// The places at `range`.
    fn at(&self, range: Range<usize>) -> impl Iterator<Item = usize> + '_ {
        let (narrow, wide) = match self {
            LineStarts::Narrow(starts) => (&starts[range], &[][..]),
            LineStarts::Wide(starts) => (&[][..], &starts[range]),
        };
        narrow
            .iter()
            .map(|&at| at as usize)
            .chain(wide.iter().copied())
    }
}

/// Each backend's server names in turn (the backends in [`Inventory::backends`]' order), sorted
/// and each once per backend: a name per server, not a (backend, server) pair, since a config
/// of 10,000 apps has 40,000 of them. In a text under 4 GiB each is kept as its place and
/// length there, 8 bytes where a `&str` takes 16 (issue 14: both configs' lists are held at a
/// dry run's peak). Equal when they hold the same names, however kept.
#[derive(Debug, Default, Eq)]
pub struct Servers<'a> {
    /// The config's text, which the inventory's other places point into too.
    text: &'a str,
    names: Names<'a>,
}

#[derive(Debug, Eq, PartialEq)]
enum Names<'a> {
    Narrow(Vec<[u32; 2]>),
    Wide(Vec<&'a str>),
}

impl Default for Names<'_> {
    fn default() -> Self {
        Names::Narrow(Vec::new())
    }
}

impl<'a> Servers<'a> {
    /// Room for `capacity` names of `text`, kept as places in it unless `wide` (the text may
    /// be 4 GiB or more).
    fn of_text(text: &'a str, capacity: usize, wide: bool) -> Servers<'a> {
        let names = match wide {
            false => Names::Narrow(Vec::with_capacity(capacity)),
            true => Names::Wide(Vec::with_capacity(capacity)),
        };
        Servers { text, names }
    }

    /// `name`, a part of the text.
    fn push(&mut self, name: &'a str) {
        match &mut self.names {
            Names::Narrow(names) => {
                let at = name.as_ptr() as usize - self.text.as_ptr() as usize;
                debug_assert!(at + name.len() <= self.text.len());
                names.push([at as u32, name.len() as u32]);
            }
            Names::Wide(names) => names.push(name),
        }
    }

    pub fn len(&self) -> usize {
        match &self.names {
            Names::Narrow(names) => names.len(),
            Names::Wide(names) => names.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name at `index`.
    fn get(&self, index: usize) -> &'a str {
        match &self.names {
            Names::Narrow(names) => {
                let [at, length] = names[index];
                &self.text[at as usize..][..length as usize]
            }
            Names::Wide(names) => names[index],
        }
    }

    /// The names at `range`, in order.
    fn at(&self, range: Range<usize>) -> impl Iterator<Item = &'a str> + '_ {
        range.map(|index| self.get(index))
    }
}

impl PartialEq for Servers<'_> {
    fn eq(&self, other: &Servers<'_>) -> bool {
        self.len() == other.len() && self.at(0..self.len()).eq(other.at(0..other.len()))
    }
}

/// A set kept as a sorted list, each entry once. The inventory's sets come out of the scan in
/// order, so they are built in one pass, where a `BTreeSet` allocates and links a node per few
/// entries and compares each entry again as it goes in (issue 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedSet<T>(Vec<T>);

impl<T: Ord> SortedSet<T> {
    /// From a list already sorted and without duplicates.
    fn from_sorted(items: Vec<T>) -> SortedSet<T> {
        debug_assert!(items.windows(2).all(|pair| pair[0] < pair[1]));
        SortedSet(items)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> Default for SortedSet<T> {
    fn default() -> SortedSet<T> {
        SortedSet(Vec::new())
    }
}

impl<'s, T> IntoIterator for &'s SortedSet<T> {
    type Item = &'s T;
    type IntoIter = std::slice::Iter<'s, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The entries of sorted `items` not in sorted `others`, in order: one walk along both.
pub(super) fn sorted_difference<'s, T: Ord>(
    items: &'s [T],
    others: &'s [T],
) -> impl Iterator<Item = &'s T> {
    let mut others = others.iter().peekable();
    items.iter().filter(move |item| {
        while others.next_if(|other| other < item).is_some() {}
        others.peek() != Some(item)
    })
}

/// What the caller knows of the apps behind backends. Plain data: `apply` knows no model types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendApps {
    /// Backend name → Marathon app id: the candidate's backends, and those it lacks whose app
    /// the caller can name (one Marathon still has, or a deleted one's last good definition).
    pub names: BTreeMap<String, String>,
    /// Backends the candidate lacks although their app is still in Marathon, selected, and
    /// meant to run (instances not 0): none of its tasks can be served. The summary says so,
    /// so that an app restarting or failing its health checks is not mistaken for a deletion.
    pub unserved: BTreeSet<String>,
}

/// Most changed backends [`backend_changes`] lists; the rest are counted. They share one log
/// line with the summary, so it stays readable: at most a few hundred characters.
const LISTED_BACKENDS: usize = 5;
/// Most servers listed per sign (`+`/`-`) for one backend; the rest are counted.
const LISTED_SERVERS: usize = 3;

impl<'a> Inventory<'a> {
    /// Read in two steps, so that no list of every server's words is held beside the
    /// inventory: where the backends and their server lines are, then, in name order, each
    /// backend's servers (issue 14: a run's peak RSS is reached here).
    pub fn of(config: &'a str) -> Inventory<'a> {
        match u32::try_from(config.len()) {
            Ok(_) => Inventory::of_indexed::<u32>(config),
            Err(_) => Inventory::of_indexed::<usize>(config),
        }
    }

    /// [`Inventory::of`], the scan's lists indexed with `I`.
    fn of_indexed<I: ScanIndex>(config: &'a str) -> Inventory<'a> {
        let (mut sections, server_lines) = scan::<I>(config);
        // Stable: the sections of one name (a config may repeat one) keep their order.
        sections.sort_by_key(|(name, _, _)| *name);
        let mut backends = Vec::with_capacity(sections.len());
        let mut ends = Vec::with_capacity(sections.len());
        let mut names = Servers::of_text(config, server_lines.len(), I::WIDE);
        let mut lines = Vec::with_capacity(server_lines.len());
        let mut of_backend = Vec::new();
        for sections_of_name in sections.chunk_by(|a, b| a.0 == b.0) {
            of_backend.clear();
            for (_, first, end) in sections_of_name {
                let lines_of_section = &server_lines[first.at()..end.at()];
                lines.extend_from_slice(lines_of_section);
                of_backend.extend(lines_of_section.iter().filter_map(|start| {
                    // Its end found again, not kept: 4 bytes less per server line (the
                    // search is ~5 M instructions per 10,000 apps).
                    Server::at(config, start.at()).map(|server| server.name)
                }));
            }
            // In name order: a server named twice is next to itself.
            of_backend.sort_unstable();
            of_backend.dedup();
            for &name in &of_backend {
                names.push(name);
            }
            backends.push(sections_of_name[0].0);
            ends.push((names.len(), lines.len()));
        }
        Inventory {
            backends: SortedSet::from_sorted(backends),
            servers: names,
            ends,
            lines: LineStarts::of(lines),
        }
    }

    /// Where the server names and the addresses of the backend at `index` are.
    fn ranges_at(&self, index: usize) -> (Range<usize>, Range<usize>) {
        let (names_start, addresses_start) = match index {
            0 => (0, 0),
            _ => self.ends[index - 1],
        };
        let (names_end, addresses_end) = self.ends[index];
        (names_start..names_end, addresses_start..addresses_end)
    }

    /// Where the server names of the backend at `index` in `backends` are in `servers` (none
    /// for `None`).
    fn server_range(&self, index: Option<usize>) -> Range<usize> {
        index.map_or(0..0, |index| self.ranges_at(index).0)
    }

    /// The server names of the backend at `index` in `backends`, sorted (none for `None`).
    fn servers_at(&self, index: Option<usize>) -> impl Iterator<Item = &'a str> + '_ {
        self.servers.at(self.server_range(index))
    }

    /// Where backend `name` is in `backends`.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.0.binary_search(&name).ok()
    }

    /// Whether the backend `backend` has a server `server`.
    pub fn has_server(&self, backend: &str, server: &str) -> bool {
        let Range { mut start, mut end } = self.server_range(self.index_of(backend));
        while start < end {
            let middle = start + (end - start) / 2;
            match self.servers.get(middle).cmp(server) {
                Ordering::Less => start = middle + 1,
                Ordering::Greater => end = middle,
                Ordering::Equal => return true,
            }
        }
        false
    }

    /// Every (backend, server) pair, in order.
    #[cfg(test)]
    fn server_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        (0..self.backends.len()).flat_map(move |index| {
            let backend = self.backends.0[index];
            self.servers_at(Some(index))
                .map(move |server| (backend, server))
        })
    }

    /// The server addresses of the backend `name`, sorted (none when it has no such backend).
    #[cfg(test)]
    fn addresses_of(&self, name: &str) -> Vec<&'a str> {
        self.addresses_at(self.index_of(name))
    }

    /// The servers of the backend at `index` in `backends`, in the config's order (none for
    /// `None`), with the lines that have no name.
    fn server_lines_at(&self, index: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        let range = index.map_or(0..0, |index| self.ranges_at(index).1);
        self.lines.at(range)
    }

    /// The server addresses of the backend at `index` in `backends`, sorted and each once
    /// (none for `None`).
    fn addresses_at(&self, index: Option<usize>) -> Vec<&'a str> {
        let mut addresses: Vec<&str> = self
            .server_lines_at(index)
            .filter_map(|start| Server::at(self.servers.text, start)?.address)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }

    /// Whether the backend at `index` has the same server lines, in the same order, as the one
    /// at `other_index` in `other`: then their addresses are the same too.
    fn same_server_lines(
        &self,
        index: Option<usize>,
        other: &Inventory<'_>,
        other_index: Option<usize>,
    ) -> bool {
        let (here, there) = (self.servers.text.as_bytes(), other.servers.text.as_bytes());
        let mut others = other.server_lines_at(other_index);
        self.server_lines_at(index).all(|start| {
            let Some(other_start) = others.next() else {
                return false;
            };
            let line = &here[start..line_end(here, start)];
            there[other_start..].starts_with(line)
                && matches!(there.get(other_start + line.len()), None | Some(b'\n'))
        }) && others.next().is_none()
    }

    /// Each backend of `self` with how many servers it has (0 for one without) and how many
    /// `other` gives it (`None`: no such backend there), in order: one walk along both lists.
    pub fn server_counts_against<'s>(
        &'s self,
        other: &'s Inventory<'a>,
    ) -> impl Iterator<Item = (&'a str, usize, Option<usize>)> + 's {
        names_of_both(self, other).filter_map(|(name, here, there)| {
            let count = self.ranges_at(here?).0.len();
            Some((
                name,
                count,
                there.map(|there| other.ranges_at(there).0.len()),
            ))
        })
    }

    /// Each backend with how many servers it has (0 for one without), in order.
    pub fn servers_per_backend(&self) -> impl Iterator<Item = (&'a str, usize)> + '_ {
        self.backends
            .iter()
            .enumerate()
            .map(|(index, name)| (*name, self.ranges_at(index).0.len()))
    }
}

/// What the run record says a config serves: its backends, their servers (each name once per
/// backend) and the apps behind those backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub backends: usize,
    pub servers: usize,
    pub apps: usize,
}

impl Served {
    /// From the inventory an apply made of the candidate already (issue 14: a third scan of an
    /// 8 MB config otherwise).
    pub fn of_inventory(inventory: &Inventory<'_>, apps: &BackendApps) -> Served {
        // The map also names backends the candidate lacks: only its own count. Both are in
        // name order, so one walk along them finds the candidate's, with no lookup per name.
        let mut backends = inventory.backends.iter().peekable();
        let mut served_apps: Vec<&str> = apps
            .names
            .iter()
            .filter(|(backend, _)| {
                while backends.next_if(|name| **name < backend.as_str()).is_some() {}
                backends
                    .peek()
                    .is_some_and(|name| **name == backend.as_str())
            })
            .map(|(_, app)| app.as_str())
            .collect();
        // An app's backends are mostly neighbours in name order, and its apps mostly in order:
        // its neighbours dropped first, the rest is sorted as the runs it mostly is.
        served_apps.dedup();
        served_apps.sort();
        served_apps.dedup();
        Served {
            backends: inventory.backends.len(),
            servers: inventory.servers.len(),
            apps: served_apps.len(),
        }
    }

    /// From the config's text, for a run whose apply made no inventory (unchanged, or stopped
    /// before counting).
    pub fn of_config(config: &str, apps: &BackendApps) -> Served {
        Served::of_inventory(&Inventory::of(config), apps)
    }
}

/// A `server NAME ADDRESS ...` line of a backend.
#[derive(Debug, Clone, Copy)]
struct Server<'a> {
    name: &'a str,
    /// The word after the name (`ADDR:PORT`), when there is one.
    address: Option<&'a str>,
}

impl<'a> Server<'a> {
    /// The server whose line's text after `server` starts at `start` in `config`; `None` for a
    /// line without a name.
    fn at(config: &'a str, start: usize) -> Option<Server<'a>> {
        let mut words = Words(&config[start..line_end(config.as_bytes(), start)]);
        let name = words.next()?;
        Some(Server {
            name,
            address: words.next(),
        })
    }
}

/// A backend section: its name, and where its server lines are in [`scan`]'s list of them
/// (from the first, up to the second).
type Section<'a, I> = (&'a str, I, I);

/// How [`scan`] keeps a place in the config's text or in its list of server lines: `u32` for a
/// config under 4 GiB, which halves its lists against `usize` (issue 14: they are held while
/// the inventory is built, where a run's peak RSS is reached), `usize` beyond.
trait ScanIndex: Copy {
    /// Whether the text may be 4 GiB or more.
    const WIDE: bool;
    /// `at`, which the caller knows fits.
    fn of(at: usize) -> Self;
    fn at(self) -> usize;
    /// A list of such places, kept.
    fn line_starts(starts: Vec<Self>) -> LineStarts;
}

impl ScanIndex for u32 {
    const WIDE: bool = false;

    fn of(at: usize) -> u32 {
        debug_assert!(u32::try_from(at).is_ok());
        at as u32
    }

    fn at(self) -> usize {
        self as usize
    }

    fn line_starts(starts: Vec<u32>) -> LineStarts {
        LineStarts::Narrow(starts)
    }
}

impl ScanIndex for usize {
    const WIDE: bool = true;

    fn of(at: usize) -> usize {
        at
    }

    fn at(self) -> usize {
        self
    }

    fn line_starts(starts: Vec<usize>) -> LineStarts {
        LineStarts::Wide(starts)
    }
}

/// Each `backend NAME` section of `config`, in the config's order, with where its server lines
/// are in the second list: where the text after each `server` keyword starts (it ends with its
/// line), in the config's order. A line's words are split as `str::split_whitespace` splits
/// them, but only the first ones are read, byte by byte while they are ASCII. Every index fits
/// an `I` when the config's length does (a server line is longer than one byte).
fn scan<I: ScanIndex>(config: &str) -> (Vec<Section<'_, I>>, Vec<I>) {
    let mut sections: Vec<Section<I>> = Vec::new();
    let mut server_lines = Vec::new();
    let mut in_backend = false;
    let mut start = 0;
    while start < config.len() {
        let end = line_end(config.as_bytes(), start);
        let line = trim_start(&config[start..end]);
        start = end + 1;
        match keyword_of(line) {
            Some(Keyword::Server) if in_backend => {
                if let Some(section) = sections.last_mut() {
                    server_lines.push(I::of(end - line.len() + "server".len()));
                    section.2 = I::of(server_lines.len());
                }
            }
            Some(Keyword::Backend) => {
                let name = Words(&line["backend".len()..]).next();
                in_backend = name.is_some();
                let at = I::of(server_lines.len());
                sections.extend(name.map(|name| (name, at, at)));
            }
            Some(Keyword::OtherSection) => in_backend = false,
            Some(Keyword::Server) | None => {}
        }
    }
    (sections, server_lines)
}

/// The first word of a line, when the scan cares about it.
enum Keyword {
    Server,
    Backend,
    /// Any other word of [`SECTION_KEYWORDS`]: it ends a backend section.
    OtherSection,
}

/// What `line` (white space trimmed at its start) opens with. Most lines differ from every
/// keyword in their first byte, which is checked before any word is compared.
fn keyword_of(line: &str) -> Option<Keyword> {
    let first = *line.as_bytes().first()?;
    if first == b's' && starts_with_word(line, "server") {
        return Some(Keyword::Server);
    }
    let keyword = SECTION_KEYWORDS
        .iter()
        .filter(|keyword| keyword.as_bytes()[0] == first)
        .find(|keyword| starts_with_word(line, keyword))?;
    Some(match *keyword {
        "backend" => Keyword::Backend,
        _ => Keyword::OtherSection,
    })
}

/// Whether `line`'s first word is `word`: it starts with it, followed by white space or the end.
fn starts_with_word(line: &str, word: &str) -> bool {
    let (line_bytes, word_bytes) = (line.as_bytes(), word.as_bytes());
    // A byte loop, not `starts_with`: most lines differ within a byte or two, sooner than a
    // call to memcmp returns.
    line_bytes.len() >= word_bytes.len()
        && line_bytes.iter().zip(word_bytes).all(|(a, b)| a == b)
        && match line_bytes.get(word_bytes.len()) {
            None => true,
            Some(&byte) => match class(byte) {
                ByteClass::Space => true,
                ByteClass::Word => false,
                ByteClass::NonAscii => line[word.len()..].starts_with(char::is_whitespace),
            },
        }
}

/// Where the line starting at `start` ends: the index of its `\n`, or the end of the text.
/// Eight bytes at a time: for lines this short (40 bytes), faster than `memchr`, whose setup
/// cost as much as the search.
fn line_end(bytes: &[u8], start: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let chunk = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A newline is a zero byte of `chunk ^ NEWLINES`; the classic zero-byte test sets the
        // high bit of the first one (and maybe of later bytes, which the lowest bit ignores).
        let zeros = chunk ^ NEWLINES;
        let found = zeros.wrapping_sub(ONES) & !zeros & HIGH_BITS;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(bytes.len(), |offset| at + offset)
}

/// The first byte at or after `at` that may end a word (below `!`: ASCII white space or a
/// control byte; or non-ASCII), or the end. Eight bytes at a time, as [`line_end`]: the scan
/// reads every server's name and address.
fn word_end_candidate(bytes: &[u8], start: usize) -> usize {
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    const BELOW: u64 = u64::from_ne_bytes([b'!'; 8]);
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let chunk = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // The classic test for a byte below `!` (exact for the first one, as the lowest set
        // bit is all that is read), or'ed with the high bit of the non-ASCII bytes.
        let found = (chunk.wrapping_sub(BELOW) & !chunk | chunk) & HIGH_BITS;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&byte| byte < b'!' || !byte.is_ascii())
        .map_or(bytes.len(), |offset| at + offset)
}

/// What a byte is to the word splitter: part of a word, ASCII white space (as
/// `char::is_whitespace` has it: `\t`, `\n`, vertical tab, form feed, `\r`, space), or part of
/// a non-ASCII character, which may be white space (U+00A0, U+3000, ...).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteClass {
    Word,
    Space,
    NonAscii,
}

const BYTE_CLASSES: [ByteClass; 256] = {
    let mut classes = [ByteClass::Word; 256];
    let mut byte = 0;
    while byte < 256 {
        classes[byte] = match byte as u8 {
            b' ' | b'\t'..=b'\r' => ByteClass::Space,
            0x80..=0xff => ByteClass::NonAscii,
            _ => ByteClass::Word,
        };
        byte += 1;
    }
    classes
};

fn class(byte: u8) -> ByteClass {
    BYTE_CLASSES[usize::from(byte)]
}

/// `text` without its leading white space, as `str::trim_start`.
fn trim_start(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() && class(bytes[start]) == ByteClass::Space {
        start += 1;
    }
    match bytes.get(start) {
        Some(&byte) if class(byte) == ByteClass::NonAscii => text[start..].trim_start(),
        _ => &text[start..],
    }
}

/// The words of a text, as `str::split_whitespace` gives them.
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = trim_start(self.0);
        if rest.is_empty() {
            self.0 = rest;
            return None;
        }
        let bytes = rest.as_bytes();
        let mut end = word_end_candidate(bytes, 0);
        // A control byte is part of a word: look further.
        while bytes
            .get(end)
            .is_some_and(|&byte| class(byte) == ByteClass::Word)
        {
            end = word_end_candidate(bytes, end + 1);
        }
        if bytes
            .get(end)
            .is_some_and(|&byte| class(byte) == ByteClass::NonAscii)
        {
            end += rest[end..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - end);
        }
        let (word, rest) = rest.split_at(end);
        self.0 = rest;
        Some(word)
    }
}

/// `applied PATH: backends +1 -0, servers +3 -2 (reloaded)`; `companions` counts the other
/// files (maps) that changed and is mentioned only when non-zero.
/// `how` (`reloaded`, `reloaded: <why>`, `runtime, no reload`) closes the line in parentheses.
#[cfg(test)]
pub fn applied_line(path: &Path, old: &str, new: &str, companions: usize, how: &str) -> String {
    let (before, after) = (Inventory::of(old), Inventory::of(new));
    applied_line_of(path, &before, &after, companions, how)
}

/// [`applied_line`] from the inventories of the old and new config.
pub fn applied_line_of(
    path: &Path,
    before: &Inventory,
    after: &Inventory,
    companions: usize,
    how: &str,
) -> String {
    let mut line = format!("applied {}: {}", path.display(), counts_of(before, after));
    if companions > 0 {
        let noun = if companions == 1 { "file" } else { "files" };
        line.push_str(&format!(", {companions} companion {noun} updated"));
    }
    line.push_str(&format!(" ({how})"));
    line
}

/// `backends +1 -0, servers +3 -2`.
pub fn counts_of(before: &Inventory, after: &Inventory) -> String {
    // Each side's sets are sorted and hold each entry once, so what only one side has is its
    // count less what both have: one walk along both counts both directions.
    let (mut backends_in_both, mut servers_in_both) = (0, 0);
    for (_, in_before, in_after) in names_of_both(before, after) {
        if let (Some(_), Some(_)) = (in_before, in_after) {
            backends_in_both += 1;
            servers_in_both +=
                sorted_common(before.servers_at(in_before), after.servers_at(in_after));
        }
    }
    format!(
        "backends +{} -{}, servers +{} -{}",
        after.backends.len() - backends_in_both,
        before.backends.len() - backends_in_both,
        after.servers.len() - servers_in_both,
        before.servers.len() - servers_in_both,
    )
}

/// One entry per backend whose servers changed, `/shop (shop_10001): +10.0.2.5:31005
/// -10.0.1.7:31002`, at most [`LISTED_BACKENDS`] of them and a last one counting the rest. A
/// backend is named by its app id when `apps` knows it; a new or removed backend says so.
#[cfg(test)]
pub fn backend_changes(old: &str, new: &str, apps: &BackendApps) -> Vec<String> {
    backend_changes_of(&Inventory::of(old), &Inventory::of(new), apps)
}

/// [`backend_changes`] from the inventories of the old and new config.
pub fn backend_changes_of(
    before: &Inventory,
    after: &Inventory,
    apps: &BackendApps,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut unlisted = 0;
    for (name, old, current) in names_of_both(before, after) {
        let (is_new, is_gone) = (old.is_none(), current.is_none());
        let mut servers = None;
        if !is_new && !is_gone {
            // Most backends of a steady cluster have the very same lines: nothing to read.
            if before.same_server_lines(old, after, current) {
                continue;
            }
            let both = (before.addresses_at(old), after.addresses_at(current));
            if both.0 == both.1 {
                continue;
            }
            servers = Some(both);
        }
        if lines.len() == LISTED_BACKENDS {
            unlisted += 1;
            continue;
        }
        let (old_servers, new_servers) =
            servers.unwrap_or_else(|| (before.addresses_at(old), after.addresses_at(current)));
        let mut line = match apps.names.get(name) {
            Some(app) => format!("{app} ({name}):"),
            None => format!("{name}:"),
        };
        if is_new {
            line.push_str(" new backend");
        } else if is_gone && apps.unserved.contains(name) {
            line.push_str(" backend removed (no task of the app can be served)");
        } else if is_gone {
            line.push_str(" backend removed");
        }
        listed_servers(
            &mut line,
            '+',
            sorted_difference(&new_servers, &old_servers),
        );
        listed_servers(
            &mut line,
            '-',
            sorted_difference(&old_servers, &new_servers),
        );
        lines.push(line);
    }
    if unlisted > 0 {
        let noun = if unlisted == 1 { "backend" } else { "backends" };
        lines.push(format!("and {unlisted} more {noun} changed"));
    }
    lines
}

/// Every backend name of `before` or `after`, in order, with where each has it in its
/// `backends`: one walk along both sorted lists, no name looked up.
fn names_of_both<'s, 'a>(
    before: &'s Inventory<'a>,
    after: &'s Inventory<'a>,
) -> impl Iterator<Item = (&'a str, Option<usize>, Option<usize>)> + 's {
    let (old, new) = (&before.backends.0, &after.backends.0);
    let (mut at_old, mut at_new) = (0, 0);
    std::iter::from_fn(move || {
        let order = match (old.get(at_old), new.get(at_new)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => return None,
        };
        let (name, in_old, in_new) = match order {
            Ordering::Less => (old[at_old], Some(at_old), None),
            Ordering::Greater => (new[at_new], None, Some(at_new)),
            Ordering::Equal => (old[at_old], Some(at_old), Some(at_new)),
        };
        at_old += usize::from(in_old.is_some());
        at_new += usize::from(in_new.is_some());
        Some((name, in_old, in_new))
    })
}

/// ` +a +b +c and 4 more` onto `line`.
fn listed_servers<'a>(line: &mut String, sign: char, servers: impl Iterator<Item = &'a &'a str>) {
    let servers: Vec<&str> = servers.copied().collect();
    for server in servers.iter().take(LISTED_SERVERS) {
        let _ = write!(line, " {sign}{server}");
    }
    if servers.len() > LISTED_SERVERS {
        let _ = write!(line, " {sign}{} more", servers.len() - LISTED_SERVERS);
    }
}

/// How many entries sorted `a` and sorted `b` (each entry once) both have: one walk along both.
fn sorted_common<T: Ord>(a: impl Iterator<Item = T>, b: impl Iterator<Item = T>) -> usize {
    let (mut a, mut b, mut common) = (a.peekable(), b.peekable(), 0);
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        match x.cmp(y) {
            Ordering::Less => {
                a.next();
            }
            Ordering::Greater => {
                b.next();
            }
            Ordering::Equal => {
                a.next();
                b.next();
                common += 1;
            }
        }
    }
    common
}

/// Writes a unified diff `old` → `new` with the given header names; nothing when they are equal.
pub fn write_diff(
    out: &mut dyn Write,
    old: &str,
    new: &str,
    old_name: &str,
    new_name: &str,
) -> io::Result<()> {
    if old == new {
        return Ok(());
    }
    let diff = TextDiff::from_lines(old, new);
    write!(
        out,
        "{}",
        diff.unified_diff()
            .context_radius(3)
            .header(old_name, new_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_record_counts_what_the_inventory_holds() {
        let duplicated = format!("{OLD}backend web_10000\n  server web1 9.9.9.9:1\n");
        for config in [
            OLD,
            duplicated.as_str(),
            "",
            "listen stats\n  server s 1.1.1.1:1\n",
        ] {
            let inventory = Inventory::of(config);
            let expected = inventory_by_words(config);
            let backends = expected.backends;
            assert!(backends.iter().eq(&inventory.backends), "{config}");
            assert_eq!(expected.servers.len(), inventory.servers.len(), "{config}");
            // Two backends of one app, and one the config lacks: only its own are counted.
            let mut apps = BackendApps::default();
            for backend in &backends {
                apps.names.insert(backend.to_string(), "/one".to_string());
            }
            apps.names.insert("gone_1".to_string(), "/gone".to_string());
            let served = Served::of_config(config, &apps);
            assert_eq!(served, Served::of_inventory(&inventory, &apps), "{config}");
            assert_eq!(served.backends, backends.len(), "{config}");
            assert_eq!(served.apps, usize::from(!backends.is_empty()), "{config}");
        }
    }

    /// An inventory as it was first kept: backends, servers, and each backend's addresses
    /// (only those with some) in trees.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Trees<'a> {
        backends: BTreeSet<&'a str>,
        servers: BTreeSet<(&'a str, &'a str)>,
        addresses: BTreeMap<&'a str, BTreeSet<&'a str>>,
    }

    fn as_trees<'a>(inventory: &Inventory<'a>) -> Trees<'a> {
        let addresses = inventory
            .backends
            .iter()
            .map(|name| (*name, inventory.addresses_of(name)))
            .filter(|(_, addresses)| !addresses.is_empty())
            .map(|(name, addresses)| (name, addresses.iter().copied().collect()))
            .collect();
        let trees = Trees {
            backends: inventory.backends.iter().copied().collect(),
            servers: inventory.server_pairs().collect(),
            addresses,
        };
        // The sorted lists hold what the trees hold, in the same order.
        assert!(trees.backends.iter().eq(&inventory.backends));
        assert!(trees.servers.iter().copied().eq(inventory.server_pairs()));
        for (backend, server) in &trees.servers {
            assert!(inventory.has_server(backend, server), "{backend}/{server}");
        }
        let counted: BTreeMap<&str, usize> = inventory.servers_per_backend().collect();
        for name in &trees.backends {
            let servers = trees.servers.iter().filter(|(b, _)| b == name).count();
            assert_eq!(counted[name], servers, "{name}");
        }
        trees
    }

    /// The inventory as it was first written, line by line with `split_whitespace`: the
    /// reading the byte scan must give on any text.
    fn inventory_by_words(config: &str) -> Trees<'_> {
        let mut inventory = Trees::default();
        let mut backend: Option<&str> = None;
        for line in config.lines() {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            if SECTION_KEYWORDS.contains(&keyword) {
                backend = match (keyword, words.next()) {
                    ("backend", Some(name)) => Some(name),
                    _ => None,
                };
                inventory.backends.extend(backend);
            } else if let (Some(backend), "server", Some(name)) = (backend, keyword, words.next()) {
                inventory.servers.insert((backend, name));
                if let Some(address) = words.next() {
                    let addresses = inventory.addresses.entry(backend).or_default();
                    addresses.insert(address);
                }
            }
        }
        inventory
    }

    #[test]
    fn the_byte_scan_reads_as_split_whitespace_does() {
        let configs = [
            OLD.to_string(),
            OLD.replace('\n', "\r\n"),
            OLD.replace("  server", "\t\x0b\x0c server")
                .replace(' ', "\t"),
            // Unicode white space splits words; other non-ASCII characters are part of them.
            OLD.replace("  server 10_0_0_1", "\u{3000}server\u{a0}10_0_0_1")
                .replace("backend db", "backend\u{2003}dbé")
                .replace(" 10.0.0.3", "\u{85}10.0.0.3é\u{2028}x"),
            "serverä x 1.1.1.1\nbackend b\nserverä x 1.1.1.1\nserver\u{a0}y\n".to_string(),
            "backend\nserver a 1.1.1.1:1\nbackend b\nserver\nserver a\n server c 2:2 3\n"
                .to_string(),
            "backend b\nserver a 1:1\nlisten l\nserver z 2:2\nbackend c\nserver a 3:3".to_string(),
            "backend b\nserver a 1:1\nbackend c\nserver a 2:2\nbackend b\nserver a 3:3\n\
             server 0 4:4\nserver a 1:1\nbackends x\nserver y 5:5\nbackend\tb\nserver-x 6:6"
                .to_string(),
            "frontend f\n  server s 1:1\nbackendbackend x\n backend  y  \n server  s  \u{a0} "
                .to_string(),
            // Control bytes are part of words; long words cross the eight-byte steps.
            "backend abcdefghij\u{1}klmnopqrstu\n server n\u{1f}ame123456789 1.2.3.4:5678\u{7f}9\n\
             server 0123456789abcdefé\u{a0}x\tserver 7 8\n  server abcdefgh\n"
                .to_string(),
            String::new(),
            "\n\n   \n\u{3000}".to_string(),
        ];
        for config in &configs {
            let expected = inventory_by_words(config);
            assert_eq!(as_trees(&Inventory::of(config)), expected, "{config:?}");
            // The scan of a config over 4 GiB keeps its places as `usize`: the same reading.
            let wide = Inventory::of_indexed::<usize>(config);
            assert_eq!(wide, Inventory::of(config), "{config:?}");
        }
        // Servers are counted per (backend, server) pair, as the sets of pairs differ.
        for old in &configs {
            for new in &configs {
                let (before, after) = (inventory_by_words(old), inventory_by_words(new));
                let expected = format!(
                    "backends +{} -{}, servers +{} -{}",
                    after.backends.difference(&before.backends).count(),
                    before.backends.difference(&after.backends).count(),
                    after.servers.difference(&before.servers).count(),
                    before.servers.difference(&after.servers).count(),
                );
                let counted = counts_of(&Inventory::of(old), &Inventory::of(new));
                assert_eq!(counted, expected, "{old:?} → {new:?}");
            }
        }
    }

    #[test]
    fn both_sides_backends_are_walked_together_in_order() {
        let before = Inventory::of("backend a\nbackend c\nbackend d\n");
        let after = Inventory::of("backend e\nbackend c\nbackend b\n");
        let walked: Vec<_> = names_of_both(&before, &after).collect();
        assert_eq!(
            walked,
            [
                ("a", Some(0), None),
                ("b", None, Some(0)),
                ("c", Some(1), Some(1)),
                ("d", Some(2), None),
                ("e", None, Some(2)),
            ]
        );
        assert_eq!(names_of_both(&after, &Inventory::default()).count(), 3);
    }

    #[test]
    fn words_end_where_a_byte_below_the_bang_or_a_non_ascii_one_is_whatever_the_alignment() {
        let text = "abcdefghijk lmnop\tq\u{1}rstuvwxyz!~\u{7f}0123é456 \u{0}789";
        for start in 0..text.len() {
            let expected = text.as_bytes()[start..]
                .iter()
                .position(|byte| !(b'!'..0x80).contains(byte))
                .map_or(text.len(), |at| start + at);
            assert_eq!(
                word_end_candidate(text.as_bytes(), start),
                expected,
                "from {start}"
            );
        }
    }

    #[test]
    fn lines_end_at_each_newline_whatever_the_alignment() {
        let text = "a\nbcdefghijklmnopq\n\nrstuvwxyz0123456789";
        for start in 0..text.len() {
            let expected = text[start..].find('\n').map_or(text.len(), |at| start + at);
            assert_eq!(line_end(text.as_bytes(), start), expected, "from {start}");
        }
    }

    const OLD: &str = "\
global
  daemon
frontend marathon_http_in
  bind *:80
  use_backend web_10000 if host_web
backend web_10000
  balance roundrobin
  server 10_0_0_1_31000 10.0.0.1:31000
  server 10_0_0_2_31001 10.0.0.2:31001
backend db_10001
  server 10_0_0_3_31002 10.0.0.3:31002
";

    #[test]
    fn inventory_reads_backends_and_their_servers_only() {
        let inventory = Inventory::of("listen stats\n  server s 1.1.1.1:1\n");
        assert!(inventory.backends.is_empty());
        assert!(inventory.servers.is_empty());
        let inventory = Inventory::of(OLD);
        assert_eq!(inventory.backends.len(), 2);
        assert_eq!(inventory.servers.len(), 3);
        assert!(inventory.has_server("db_10001", "10_0_0_3_31002"));
        assert!(!inventory.has_server("db_10001", "10_0_0_1_31000"));
        assert!(!inventory.has_server("db", "10_0_0_3_31002"));
    }

    #[test]
    fn summary_counts_additions_and_removals() {
        let new = OLD
            .replace(
                "backend db_10001\n  server 10_0_0_3_31002 10.0.0.3:31002\n",
                "",
            )
            .replace("  server 10_0_0_2_31001 10.0.0.2:31001\n", "")
            + "backend api_10002\n  server a 10.0.0.4:1\n  server b 10.0.0.5:1\n";
        let line = applied_line(
            Path::new("/etc/haproxy/haproxy.cfg"),
            OLD,
            &new,
            0,
            "reloaded",
        );
        assert_eq!(
            line,
            "applied /etc/haproxy/haproxy.cfg: backends +1 -1, servers +2 -2 (reloaded)"
        );
        let line = applied_line(Path::new("h.cfg"), OLD, OLD, 2, "reloaded");
        assert_eq!(
            line,
            "applied h.cfg: backends +0 -0, servers +0 -0, 2 companion files updated (reloaded)"
        );
    }

    #[test]
    fn a_server_moving_between_backends_counts_both_ways() {
        let new = OLD.replace("backend db_10001", "backend db_10009");
        let line = applied_line(Path::new("c"), OLD, &new, 0, "reloaded");
        assert_eq!(line, "applied c: backends +1 -1, servers +1 -1 (reloaded)");
    }

    #[test]
    fn each_changed_backend_is_named_with_its_app_and_servers() {
        let new = OLD.replace("10.0.0.2:31001", "10.0.2.5:31005").replace(
            "backend db_10001\n  server 10_0_0_3_31002 10.0.0.3:31002\n",
            "",
        ) + "backend api_10002\n  server a 10.0.0.4:1\n";
        let apps = BackendApps {
            names: BTreeMap::from([
                ("web_10000".to_string(), "/web".to_string()),
                ("api_10002".to_string(), "/api".to_string()),
                ("db_10001".to_string(), "/db".to_string()),
            ]),
            ..BackendApps::default()
        };
        assert_eq!(
            backend_changes(OLD, &new, &apps),
            [
                "/api (api_10002): new backend +10.0.0.4:1",
                "/db (db_10001): backend removed -10.0.0.3:31002",
                "/web (web_10000): +10.0.2.5:31005 -10.0.0.2:31001",
            ]
        );
        assert!(backend_changes(OLD, OLD, &apps).is_empty());
        let restarting = BackendApps {
            unserved: BTreeSet::from(["db_10001".to_string()]),
            ..apps
        };
        assert_eq!(
            backend_changes(OLD, &new, &restarting)[1],
            "/db (db_10001): backend removed (no task of the app can be served) -10.0.0.3:31002"
        );
    }

    #[test]
    fn a_backend_is_changed_when_its_addresses_are_not_when_only_its_lines_are() {
        let apps = BackendApps::default();
        // Other options on the same servers, the servers reordered, a server line repeated,
        // the last line without its newline, CRLF line ends: the same addresses, not listed.
        let same_addresses = [
            OLD.replace("10.0.0.1:31000", "10.0.0.1:31000 weight 5"),
            OLD.replace(
                "  server 10_0_0_1_31000 10.0.0.1:31000\n  server 10_0_0_2_31001 10.0.0.2:31001\n",
                "  server 10_0_0_2_31001 10.0.0.2:31001\n  server 10_0_0_1_31000 10.0.0.1:31000\n",
            ),
            OLD.replace(
                "  server 10_0_0_1_31000 10.0.0.1:31000\n",
                "  server 10_0_0_1_31000 10.0.0.1:31000\n  server again 10.0.0.1:31000\n",
            ),
            OLD.trim_end().to_string(),
            OLD.replace('\n', "\r\n"),
        ];
        for new in &same_addresses {
            assert!(backend_changes(OLD, new, &apps).is_empty(), "{new}");
            assert!(backend_changes(new, OLD, &apps).is_empty(), "{new}");
        }
        // A line that only begins like the old one is another line; one server less or more
        // at the end of a backend's lines.
        let longer = OLD.replace("10.0.0.3:31002", "10.0.0.3:310021");
        let fewer = OLD.replace("  server 10_0_0_2_31001 10.0.0.2:31001\n", "");
        for (old, new, change) in [
            (OLD, &*longer, "db_10001: +10.0.0.3:310021 -10.0.0.3:31002"),
            (&longer, OLD, "db_10001: +10.0.0.3:31002 -10.0.0.3:310021"),
            (OLD, &fewer, "web_10000: -10.0.0.2:31001"),
            (&fewer, OLD, "web_10000: +10.0.0.2:31001"),
        ] {
            assert_eq!(backend_changes(old, new, &apps), [change], "{old} -> {new}");
        }
    }

    #[test]
    fn long_change_lists_are_cut_with_a_count_of_the_rest() {
        let backend = |name: usize, servers: std::ops::Range<usize>| {
            let mut text = format!("backend b{name:02}\n");
            for s in servers {
                text.push_str(&format!("  server s{s} 10.0.0.{s}:80\n"));
            }
            text
        };
        let old: String = (0..12).map(|b| backend(b, 0..1)).collect();
        let new: String = (0..12).map(|b| backend(b, 1..9)).collect();
        let lines = backend_changes(&old, &new, &BackendApps::default());
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "b00: +10.0.0.1:80 +10.0.0.2:80 +10.0.0.3:80 +5 more -10.0.0.0:80"
        );
        assert_eq!(lines[5], "and 7 more backends changed");
    }

    #[test]
    fn diff_is_empty_when_equal_and_names_both_sides() {
        let mut out = Vec::new();
        write_diff(&mut out, OLD, OLD, "a", "b").unwrap();
        assert!(out.is_empty());
        write_diff(
            &mut out,
            OLD,
            &OLD.replace("roundrobin", "leastconn"),
            "live",
            "cand",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("--- live\n+++ cand\n@@"), "{text}");
        assert!(
            text.contains("\n-  balance roundrobin\n+  balance leastconn\n"),
            "{text}"
        );
    }
}
